// Drives a real SMART app — SMART's fhirclient in app/launch.html and app/index.html — through a
// standalone launch and an EHR launch in headless Chromium (Debian's, through playwright-core),
// against a FHIR server whose authorization server has a sign-in form (#login, #passwd) and a
// "Choose a patient" picker. Run by crates/fhirside/tests/blackbox/smart_app.rs; by hand:
//
//   node run.mjs --iss https://127.0.0.1:8443 --client-id ID --login u@x --password P \
//     --patient ID [--ehr-patient ID | --launch VALUE] [--port 8765] [--flows standalone,ehr]
//
// (each option also from the environment: SMART_ISS, SMART_CLIENT_ID, SMART_LOGIN, SMART_PASSWORD,
// SMART_PATIENT, SMART_EHR_PATIENT, SMART_LAUNCH, SMART_APP_PORT, SMART_FLOWS, SMART_TIMEOUT_MS;
// CHROMIUM names the browser, default /usr/bin/chromium). `--serve` only serves the app.
// `--pkce-mode` overrides fhirclient's pkceMode (default `required`: the server must advertise
// S256), e.g. `unsafeV1` to debug against a server that does not advertise it.
//
// The app is served on http://127.0.0.1:PORT/ (port 0: any free one), printed to stderr as
// "app origin: …"; its redirect URI is {origin}/index.html. Each flow prints one JSON line to
// stdout: {"flow", "ok", "result" (what the app read), "picker" (the patients offered), …}. Any
// failure or timeout prints the page's URL and text and the browser's log to stderr and makes the
// exit status 1.

import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));

function options() {
  const env = {
    iss: "SMART_ISS",
    "client-id": "SMART_CLIENT_ID",
    login: "SMART_LOGIN",
    password: "SMART_PASSWORD",
    patient: "SMART_PATIENT",
    "ehr-patient": "SMART_EHR_PATIENT",
    launch: "SMART_LAUNCH",
    port: "SMART_APP_PORT",
    flows: "SMART_FLOWS",
    "timeout-ms": "SMART_TIMEOUT_MS",
    "pkce-mode": "SMART_PKCE_MODE",
  };
  const out = { serve: false };
  for (const [name, variable] of Object.entries(env)) {
    if (process.env[variable] !== undefined) out[name] = process.env[variable];
  }
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--serve") {
      out.serve = true;
    } else if (arg.startsWith("--") && Object.hasOwn(env, arg.slice(2)) && i + 1 < argv.length) {
      out[arg.slice(2)] = argv[++i];
    } else {
      throw new Error(`unknown argument ${JSON.stringify(arg)} (see the comment at the top of run.mjs)`);
    }
  }
  out.port = Number(out.port ?? 0);
  out.flows = String(out.flows ?? "standalone,ehr").split(",").map(s => s.trim()).filter(Boolean);
  out["timeout-ms"] = Number(out["timeout-ms"] ?? 60000);
  return out;
}

// ---------------------------------------------------------------------------------------------
// The app's static files: app/*.html and fhirclient's browser build.

const FILES = {
  "/launch.html": path.join(here, "app", "launch.html"),
  "/index.html": path.join(here, "app", "index.html"),
  "/fhir-client.js": path.join(here, "node_modules", "fhirclient", "build", "fhir-client.js"),
};
const TYPES = { ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8" };

function serve(port) {
  const missing = Object.values(FILES).filter(f => !existsSync(f));
  if (missing.length) {
    throw new Error(`missing ${missing.join(", ")}: run \`npm ci\` in ${here} (scripts/test.sh does)`);
  }
  const server = http.createServer(async (request, response) => {
    const pathname = new URL(request.url, "http://x").pathname;
    if (pathname === "/favicon.ico") {
      response.writeHead(204).end();
      return;
    }
    const file = FILES[pathname];
    if (request.method !== "GET" || !file) {
      response.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
      return;
    }
    const body = await readFile(file);
    response
      .writeHead(200, { "content-type": TYPES[path.extname(file)], "cache-control": "no-store" })
      .end(body);
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => resolve(server));
  });
}

// ---------------------------------------------------------------------------------------------
// The flows.

class FlowError extends Error {}

/** What the page shows now, or null while it is between documents. */
async function look(page) {
  try {
    return await page.evaluate(() => ({
      url: location.href,
      origin: location.origin,
      title: document.title,
      ready: document.readyState,
      handled: Boolean(window.__smartTestHandled),
      signIn: Boolean(document.querySelector("#login") && document.querySelector("#passwd")),
      picker: [...document.querySelectorAll('input[type="radio"][name="patient"]')].map(i => ({
        id: i.value,
        checked: i.checked,
        label: (document.querySelector(`label[for="${CSS.escape(i.id)}"]`) || {}).textContent || "",
      })),
      status: (document.querySelector("#result") || { dataset: {} }).dataset.status || null,
      result: (document.querySelector("#result") || {}).textContent || "",
    }));
  } catch {
    return null; // navigating: the old document's context is gone
  }
}

async function bodyText(page) {
  try {
    return (await page.evaluate(() => document.body ? document.body.innerText : document.documentElement.outerHTML))
      .slice(0, 4000);
  } catch (e) {
    return `(no page text: ${e.message})`;
  }
}

const sleep = ms => new Promise(r => setTimeout(r, ms));

async function runFlow(browser, appOrigin, opts, flow) {
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  const log = [];
  page.on("console", m => log.push(`console.${m.type()}: ${m.text()}`));
  page.on("pageerror", e => log.push(`page error: ${e.message}`));
  page.on("requestfailed", r => log.push(`request failed: ${r.method()} ${r.url()}: ${r.failure()?.errorText}`));
  page.on("response", r => {
    if (r.status() >= 400) log.push(`HTTP ${r.status()}: ${r.request().method()} ${r.url()}`);
  });
  page.on("framenavigated", f => {
    if (f === page.mainFrame()) log.push(`navigated: ${f.url()}`);
  });

  const query = new URLSearchParams({ iss: opts.iss });
  if (opts["client-id"]) query.set("clientId", opts["client-id"]);
  if (opts["pkce-mode"]) query.set("pkceMode", opts["pkce-mode"]);
  let launch = null;
  if (flow === "ehr") {
    launch = opts.launch;
    if (!launch) {
      if (!opts["ehr-patient"]) throw new FlowError("the EHR flow needs --launch or --ehr-patient");
      const context = { patient: opts["ehr-patient"], need_patient_banner: false };
      launch = Buffer.from(JSON.stringify(context)).toString("base64");
    }
    query.set("launch", launch);
  } else if (flow !== "standalone") {
    throw new FlowError(`unknown flow ${JSON.stringify(flow)}: use standalone or ehr`);
  }
  const launchUrl = `${appOrigin}/launch.html?${query}`;
  const report = { flow, ok: false, launchUrl, launch, picker: null, result: null };
  const deadline = Date.now() + opts["timeout-ms"];
  let signedIn = false;
  let picked = false;
  let last = null;
  let quietSince = Date.now();
  try {
    await page.goto(launchUrl);
    for (;;) {
      if (Date.now() > deadline) {
        throw new FlowError(`timed out after ${opts["timeout-ms"]} ms`);
      }
      const now = await look(page);
      if (!now || now.handled || now.ready === "loading") {
        await sleep(100);
        continue;
      }
      if (!last || now.url !== last.url || now.ready !== last.ready) quietSince = Date.now();
      last = now;
      if (now.origin === appOrigin) {
        // launch.html (until fhirclient redirects) or index.html (until the app is done).
        if (now.status === "ok" || now.status === "error") {
          try {
            report.result = JSON.parse(now.result);
          } catch {
            report.result = { error: `#result is not JSON: ${now.result}` };
          }
          if (now.status === "error" || report.result.error) {
            throw new FlowError(`the app failed on ${now.url}: ${report.result.error}`);
          }
          if (!now.url.startsWith(`${appOrigin}/index.html`)) {
            throw new FlowError(`the app reported a result on ${now.url}, not on its redirect URI`);
          }
          break;
        }
      } else if (now.signIn) {
        if (signedIn) throw new FlowError("the sign-in page came back after signing in");
        await page.fill("#login", opts.login);
        await page.fill("#passwd", opts.password);
        await page.evaluate(() => { window.__smartTestHandled = true; });
        await page.click('button[type="submit"]');
        signedIn = true;
      } else if (now.picker.length) {
        if (!signedIn) throw new FlowError("the patient picker came before the sign-in page");
        if (picked) throw new FlowError("the patient picker came back after choosing a patient");
        if (flow === "ehr") throw new FlowError("the EHR launch named its patient, yet the patient picker appeared");
        report.picker = now.picker;
        if (now.title !== "Choose a patient") {
          throw new FlowError(`the patient picker's title is ${JSON.stringify(now.title)}, not "Choose a patient"`);
        }
        const want = opts.patient;
        if (!now.picker.some(p => p.id === want)) {
          throw new FlowError(`patient ${want} is not among those offered: ${JSON.stringify(now.picker)}`);
        }
        await page.check(`input[type="radio"][name="patient"][value="${want.replace(/["\\]/g, "\\$&")}"]`);
        await page.evaluate(() => { window.__smartTestHandled = true; });
        await page.getByRole("button", { name: "Continue" }).click();
        picked = true;
      } else if (now.ready === "complete" && Date.now() - quietSince > 3000) {
        // An error page of the authorization server, or anything else unexpected.
        throw new FlowError(`stuck on an unexpected page (title ${JSON.stringify(now.title)})`);
      }
      await sleep(100);
    }
    if (flow === "standalone" && !picked) {
      throw new FlowError("the standalone launch (scope launch/patient) never showed the patient picker");
    }
    report.ok = true;
    await context.close();
    return report;
  } catch (error) {
    report.error = error instanceof FlowError ? error.message : String(error && error.stack || error);
    report.url = page.url();
    report.body = await bodyText(page);
    report.log = log;
    await context.close().catch(() => {});
    return report;
  }
}

async function main() {
  const opts = options();
  const server = await serve(opts.port);
  const appOrigin = `http://127.0.0.1:${server.address().port}`;
  process.stderr.write(`app origin: ${appOrigin}\nredirect URI: ${appOrigin}/index.html\n`);
  if (opts.serve) return; // keeps serving until killed

  for (const name of ["iss", "login", "password"]) {
    if (!opts[name]) throw new Error(`--${name} is required (see the comment at the top of run.mjs)`);
  }
  if (opts.flows.includes("standalone") && !opts.patient) {
    throw new Error("the standalone flow needs --patient, the patient to choose in the picker");
  }
  const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
  if (!existsSync(executablePath)) {
    throw new Error(`no Chromium at ${executablePath}: install Debian's (apt-get install chromium; scripts/test.sh does) or set CHROMIUM`);
  }
  let chromium;
  try {
    ({ chromium } = await import("playwright-core"));
  } catch (e) {
    throw new Error(`cannot load playwright-core (${e.message}): run \`npm ci\` in ${here} (scripts/test.sh does)`);
  }
  const browser = await chromium.launch({ executablePath, headless: true, args: ["--no-sandbox", "--no-proxy-server"] });
  let failed = false;
  try {
    for (const flow of opts.flows) {
      const { body, log, ...report } = await runFlow(browser, appOrigin, opts, flow);
      process.stdout.write(JSON.stringify(report) + "\n");
      if (!report.ok) {
        failed = true;
        process.stderr.write(
          `FAILED: ${flow} flow: ${report.error}\n--- page URL\n${report.url}\n--- page text\n${body}\n` +
            `--- browser log\n${log.join("\n")}\n`,
        );
      }
    }
  } finally {
    await browser.close();
    server.close();
  }
  process.exit(failed ? 1 : 0);
}

main().catch(error => {
  process.stderr.write(`FAILED: ${error instanceof Error ? error.message : error}\n`);
  process.exit(1);
});

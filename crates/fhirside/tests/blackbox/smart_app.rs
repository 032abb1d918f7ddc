//! A real SMART on FHIR app against the built-in authority: SMART's `fhirclient` JavaScript
//! library, in a page served locally, in headless Chromium driven by Playwright
//! (`tests/smart-app/run.mjs`, with `playwright-core` and Debian's `chromium`).
//!
//! One server (HTTPS, CORS open to the app's origin), a public app whose redirect URI is the page,
//! a clinician with the FHIR SMART User role, and two patients with Observations. The app makes
//! a standalone launch (PKCE, `launch/patient`: the clinician signs in and chooses a patient in the
//! authority's picker) and an EHR launch (a `launch` value naming the patient, as Azure's SMART
//! launcher makes it); each time it reads its patient and that patient's Observations.
//!
//! Node, the npm packages (pinned in `tests/smart-app/package-lock.json`) and Chromium are
//! installed by `scripts/test.sh`; without them the test fails, it never skips.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::Server;

const LOGIN: &str = "clinician@smart.example";
const PASSWORD: &str = "Smart-Launch-42";

fn app_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/smart-app")
}

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// Fails (never skips) when node, the npm packages or Chromium are missing.
fn check_prerequisites() {
    let hint = "scripts/test.sh installs it";
    match Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!("`node --version` failed ({}); {hint}", out.status),
        Err(e) => panic!("cannot run node ({e}): Node.js is needed for the SMART app test; {hint}"),
    }
    let dir = app_dir();
    for needed in ["node_modules/fhirclient/build/fhir-client.js", "node_modules/playwright-core/package.json"] {
        assert!(
            dir.join(needed).is_file(),
            "{} is missing: run `npm ci` in tests/smart-app (scripts/test.sh does)",
            dir.join(needed).display()
        );
    }
    assert!(
        chromium().is_file(),
        "no Chromium at {} (set CHROMIUM to use another): `apt-get install chromium`; {hint}",
        chromium().display()
    );
}

/// A free loopback port for the app's static server, chosen here so that the redirect URI and the
/// CORS origin can be registered before the app runs.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Standard base64 with padding, as Azure's SMART launcher encodes the launch context.
fn base64_standard(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

struct Patient {
    id: String,
    family: String,
    observations: Vec<String>,
}

/// Creates a patient named `family` with `count` Observations, as `token`.
fn patient_with_observations(server: &Server, token: &str, family: &str, count: usize) -> Patient {
    let patient = json!({"resourceType": "Patient", "name": [{"family": family, "given": ["Test"]}]});
    let created = server.request_as(token, "POST", "/Patient", Some(("application/fhir+json", &patient))).expect(201);
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let mut observations: Vec<String> = (0..count)
        .map(|i| {
            let observation = json!({
                "resourceType": "Observation",
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
                "subject": {"reference": format!("Patient/{id}")},
                "valueQuantity": {"value": 60 + i, "unit": "beats/minute", "system": "http://unitsofmeasure.org", "code": "/min"},
            });
            let created =
                server.request_as(token, "POST", "/Observation", Some(("application/fhir+json", &observation))).expect(201);
            created.json()["id"].as_str().unwrap().to_owned()
        })
        .collect();
    observations.sort();
    Patient { id, family: family.to_owned(), observations }
}

/// Runs `node tests/smart-app/run.mjs <args>`; panics with its output unless it exits 0 within
/// four minutes. Returns the JSON line each flow printed, by flow name.
fn run_app(args: &[&str]) -> Vec<Value> {
    let mut child = Command::new("node")
        .arg(app_dir().join("run.mjs"))
        .args(args)
        .current_dir(app_dir())
        .env("CHROMIUM", chromium())
        // Loopback only, whatever proxy the machine has.
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run node (scripts/test.sh installs it): {e}"));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + Duration::from_secs(240);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    match status {
        Some(status) if status.success() => eprintln!("run.mjs stderr:\n{stderr}"),
        Some(status) => panic!("the SMART app failed ({status})\n--- stdout\n{stdout}\n--- stderr\n{stderr}"),
        None => panic!("the SMART app did not finish in 240 s\n--- stdout\n{stdout}\n--- stderr\n{stderr}"),
    }
    stdout
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("run.mjs printed bad JSON ({e}): {line}")))
        .collect()
}

/// Asserts what the app read in one flow: `patient`, exactly its Observations, and the launch
/// context in the token response and the access token.
#[track_caller]
fn assert_read(report: &Value, patient: &Patient, practitioner: &str) {
    assert_eq!(report["ok"], true, "{report:#}");
    let result = &report["result"];
    assert!(result["error"].is_null(), "{result:#}");
    assert_eq!(result["tokenResponse"]["patient"], patient.id.as_str(), "the token response's patient: {result:#}");
    assert_eq!(result["contextPatientId"], patient.id.as_str(), "{result:#}");
    assert_eq!(result["patient"]["resourceType"], "Patient", "{result:#}");
    assert_eq!(result["patient"]["id"], patient.id.as_str(), "{result:#}");
    assert_eq!(result["patient"]["family"], patient.family.as_str(), "{result:#}");
    assert_eq!(
        result["observations"]["ids"],
        json!(patient.observations),
        "exactly the patient's Observations: {result:#}"
    );
    assert_eq!(result["observations"]["count"], patient.observations.len(), "{result:#}");
    assert_eq!(result["observations"]["subjects"], json!([format!("Patient/{}", patient.id)]), "{result:#}");
    // The access token carries the context and the signed-in user.
    assert_eq!(result["accessToken"]["patient"], patient.id.as_str(), "the access token's patient claim: {result:#}");
    let fhir_user = result["accessToken"]["fhirUser"].as_str().unwrap_or_default();
    assert!(fhir_user.ends_with(&format!("/Practitioner/{practitioner}")), "the fhirUser claim: {result:#}");
}

#[test]
fn fhirclient_standalone_and_ehr_launches_in_chromium() {
    check_prerequisites();
    let port = free_port();
    let origin = format!("http://127.0.0.1:{port}");
    let server = Server::start_secure(&["--cors-origin", &origin]);

    // The data, written with a full-access app's token.
    let (loader, secret, _) = server.create_app("smart test loader", &["FHIR Data Contributor"]);
    let token = server.token(&loader, &secret);
    let practitioner = json!({"resourceType": "Practitioner", "name": [{"family": "Clinician", "given": ["Casey"]}]});
    let practitioner = server
        .request_as(&token, "POST", "/Practitioner", Some(("application/fhir+json", &practitioner)))
        .expect(201)
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ehr_patient = patient_with_observations(&server, &token, "Ehrlaunch", 2);
    let chosen_patient = patient_with_observations(&server, &token, "Standalone", 3);

    // The SMART app (public: PKCE, no secret) and the clinician who signs in to it.
    let app = server.admin(&[
        "app",
        "create",
        "--name",
        "fhirclient SMART app",
        "--public",
        "--redirect-uri",
        &format!("{origin}/index.html"),
    ]);
    let client_id = app["clientId"].as_str().unwrap_or_else(|| panic!("no clientId in {app}"));
    let fhir_user = format!("Practitioner/{practitioner}");
    server.admin(&[
        "user",
        "create",
        "--name",
        LOGIN,
        "--password",
        PASSWORD,
        "--fhir-user",
        &fhir_user,
        "--role",
        "FHIR SMART User",
    ]);

    // The EHR's launch context, as Azure's SMART launcher sends it: base64 of JSON.
    let launch =
        base64_standard(json!({"patient": ehr_patient.id, "need_patient_banner": false}).to_string().as_bytes());
    let reports = run_app(&[
        "--port",
        &port.to_string(),
        "--iss",
        &server.base,
        "--client-id",
        client_id,
        "--login",
        LOGIN,
        "--password",
        PASSWORD,
        "--patient",
        &chosen_patient.id,
        "--launch",
        &launch,
        "--flows",
        "standalone,ehr",
    ]);
    let flow = |name: &str| {
        reports.iter().find(|r| r["flow"] == name).unwrap_or_else(|| panic!("no {name} report in {reports:#?}"))
    };

    // Standalone: the clinician chose the patient in the picker, which offered both.
    let standalone = flow("standalone");
    let offered: Vec<&str> = standalone["picker"]
        .as_array()
        .map(|p| p.iter().filter_map(|p| p["id"].as_str()).collect())
        .unwrap_or_default();
    for patient in [&ehr_patient, &chosen_patient] {
        assert!(
            offered.contains(&patient.id.as_str()),
            "the picker did not offer Patient/{}: {standalone:#}",
            patient.id
        );
    }
    assert_read(standalone, &chosen_patient, &practitioner);
    let scope = standalone["result"]["tokenResponse"]["scope"].as_str().unwrap_or_default();
    for wanted in ["launch/patient", "patient/*.read"] {
        assert!(scope.split(' ').any(|s| s == wanted), "the granted scope lacks {wanted}: {scope}");
    }
    assert_eq!(standalone["result"]["tokenResponse"]["has_refresh_token"], true, "offline_access: {standalone:#}");

    // EHR launch: the launch named the patient; no picker.
    let ehr = flow("ehr");
    assert!(ehr["picker"].is_null(), "{ehr:#}");
    assert_read(ehr, &ehr_patient, &practitioner);
    assert_eq!(ehr["result"]["tokenResponse"]["need_patient_banner"], false, "{ehr:#}");
    let scope = ehr["result"]["tokenResponse"]["scope"].as_str().unwrap_or_default();
    assert!(scope.split(' ').any(|s| s == "launch"), "the granted scope lacks launch: {scope}");
}

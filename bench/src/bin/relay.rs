//! `relay`: posts messages to a running Fhirside's relay and measures how fast they are delivered to
//! a second Fhirside, and the latency the relay adds.
//!
//! ```text
//! relay --relay http://127.0.0.1:PORT --target http://127.0.0.1:PORT --tenant T --client-id C
//!       --client-secret S [--messages N] [--concurrency K]
//! ```
//!
//! The relay must run with `--auth none` (the Platform API is then open to the client) and the
//! target with its built-in authority, where `C` holds FHIR Data Contributor. The client sets up a
//! credential and a FHIR destination as the README documents, verifies it, creates a source, then
//! posts N messages from K threads: each a transaction Bundle with a new Patient (its own
//! identifier) and an Encounter, as an admission event carries. The clock starts before the first
//! post and stops when the relay's logs show no pending message. The added latency of a message is
//! the time from the relay's answer (accepted, on disk) to the Patient's `meta.lastUpdated` on the
//! target: both clocks are this machine's.
//!
//! It prints a summary and, last, one machine-readable line for `bench/relay.sh`:
//!
//! ```text
//! RESULT messages=… concurrency=… wall_s=… delivered_per_s=… accept_p50_ms=… latency_p50_ms=… latency_p95_ms=… latency_p99_ms=…
//! ```

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fhirside_bench::http;
use serde_json::{json, Value};

struct Args {
    relay: String,
    target: String,
    tenant: String,
    client_id: String,
    client_secret: String,
    messages: usize,
    concurrency: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        relay: String::new(),
        target: String::new(),
        tenant: String::new(),
        client_id: String::new(),
        client_secret: String::new(),
        messages: 2000,
        concurrency: 8,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--relay" => args.relay = value()?,
            "--target" => args.target = value()?,
            "--tenant" => args.tenant = value()?,
            "--client-id" => args.client_id = value()?,
            "--client-secret" => args.client_secret = value()?,
            "--messages" => args.messages = value()?.parse().map_err(|e| format!("--messages: {e}"))?,
            "--concurrency" => args.concurrency = value()?.parse().map_err(|e| format!("--concurrency: {e}"))?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if [&args.relay, &args.target, &args.tenant, &args.client_id, &args.client_secret].iter().any(|a| a.is_empty()) {
        return Err("--relay, --target, --tenant, --client-id and --client-secret are required".into());
    }
    if args.messages == 0 || args.concurrency == 0 {
        return Err("--messages and --concurrency must be at least 1".into());
    }
    Ok(args)
}

fn host_port(url: &str) -> String {
    url.trim_start_matches("http://").trim_end_matches('/').to_owned()
}

fn call(client: &mut http::Client<'_>, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
    let response = match method {
        "GET" => client.get(path),
        _ => client.post(path, body.map(|b| b.to_string()).unwrap_or_default().as_bytes()),
    }
    .map_err(|e| format!("{method} {path}: {e}"))?;
    if response.status != 200 {
        return Err(format!(
            "{method} {path} answered {}: {}",
            response.status,
            String::from_utf8_lossy(&response.body)
        ));
    }
    serde_json::from_slice(&response.body).map_err(|e| format!("{method} {path}: {e}"))
}

fn now_micros() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

/// Microseconds since the epoch of an instant as Fhirside writes `lastUpdated`
/// (`2026-12-05T01:09:29.496017Z`).
fn parse_instant(text: &str) -> Option<i64> {
    let (date, time) = text.strip_suffix('Z')?.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, fraction) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|p| p.parse::<i64>());
    let (h, min, s) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    let micros: i64 = format!("{fraction:0<6}")[..6].parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + h * 3600 + min * 60 + s) * 1_000_000) + micros)
}

/// Percent-encoding for a form value: everything but RFC 3986's unreserved characters.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn message(k: usize) -> Vec<u8> {
    let patient = format!("urn:uuid:00000000-0000-4000-8000-{k:012}");
    json!({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            {"fullUrl": patient, "resource": {"resourceType": "Patient",
                "identifier": [{"system": "urn:bench:patient", "value": format!("p{k}")}],
                "name": [{"family": "Bench", "given": [format!("P{k}")]}], "gender": "unknown"},
             "request": {"method": "POST", "url": "Patient"}},
            {"resource": {"resourceType": "Encounter", "status": "in-progress",
                "identifier": [{"system": "urn:bench:encounter", "value": format!("e{k}")}],
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
                "subject": {"reference": patient}},
             "request": {"method": "POST", "url": "Encounter"}}
        ]
    })
    .to_string()
    .into_bytes()
}

fn main() {
    if let Err(error) = run() {
        eprintln!("relay: {error}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    let (relay_hp, target_hp) = (host_port(&args.relay), host_port(&args.target));
    let timeout = Duration::from_secs(60);
    let mut relay = http::Client::new(&relay_hp, "return=minimal", timeout);

    // Set up as the README documents.
    let environments = call(&mut relay, "GET", "/relay/v1/organizations/1/environments", None)?;
    // Development: the only environment that may deliver over plain HTTP (to loopback).
    let environment = environments["payload"]["environments"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["environmentFlag"] == "Development")
        .and_then(|e| e["id"].as_str())
        .ok_or("no development environment")?
        .to_owned();
    let base = args.target.trim_end_matches('/');
    let credential = call(
        &mut relay,
        "POST",
        "/relay/v1/authcredentials",
        Some(&json!({
            "organization": 1, "name": "bench target", "environmentId": environment,
            "authStrategy": "OAuth_2.0_2-legged", "grantType": "client_credentials",
            "url": format!("{base}/{}/oauth2/v2.0/token", args.tenant),
            "clientId": args.client_id, "clientSecret": args.client_secret,
            "scope": format!("{base}/.default"), "audience": format!("{base}/Bundle"),
        })),
    )?;
    let credential = credential["payload"]["credential"]["id"].as_str().ok_or("no credential id")?.to_owned();
    let destination = call(
        &mut relay,
        "POST",
        &format!("/relay/v1/environments/{environment}/destinations"),
        Some(&json!({"name": "bench target", "authCredential": credential, "cloudProviderSettings":
            {"typeId": "azure", "productId": "health-data-services", "settings": {"fhirBaseUrl": base}}})),
    )?;
    let destination = destination["payload"]["destination"]["id"].as_str().ok_or("no destination id")?.to_owned();
    let verified = call(&mut relay, "POST", &format!("/relay/v1/destinations/{destination}/verify"), None)?;
    if verified["payload"]["destination"]["verified"] != true {
        return Err(format!("verification failed: {}", verified["payload"]["destination"]["verification"]));
    }
    let source = call(
        &mut relay,
        "POST",
        &format!("/relay/v1/environments/{environment}/sources"),
        Some(&json!({"name": "bench"})),
    )?;
    let key = source["payload"]["source"]["secret"].as_str().ok_or("no source key")?.to_owned();

    // Post from K threads; each records when its messages were accepted.
    let payloads: Vec<Vec<u8>> = (0..args.messages).map(message).collect();
    let accepted: Mutex<HashMap<usize, i64>> = Mutex::new(HashMap::new());
    let accept_ms: Mutex<Vec<f64>> = Mutex::new(Vec::new());
    let path = format!("/relay/v1/environments/{environment}/messages");
    let started = Instant::now();
    let failures: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..args.concurrency)
            .map(|w| {
                let (payloads, accepted, accept_ms, path, key, relay_hp) =
                    (&payloads, &accepted, &accept_ms, &path, &key, &relay_hp);
                scope.spawn(move || -> Result<(), String> {
                    let mut client = http::Client::new(relay_hp, "return=minimal", timeout)
                        .with_authorization(format!("Bearer {key}"));
                    for k in (w..payloads.len()).step_by(args.concurrency) {
                        let sent = Instant::now();
                        let response = client.post(path, &payloads[k]).map_err(|e| format!("post {k}: {e}"))?;
                        if response.status != 200 {
                            return Err(format!("post {k}: {}", response.status));
                        }
                        accept_ms.lock().unwrap().push(sent.elapsed().as_secs_f64() * 1000.0);
                        accepted.lock().unwrap().insert(k, now_micros());
                    }
                    Ok(())
                })
            })
            .collect();
        workers.into_iter().filter_map(|w| w.join().unwrap().err()).collect()
    });
    if let Some(failure) = failures.first() {
        return Err(failure.clone());
    }
    let posted = started.elapsed();
    let logs = format!("/relay/v1/environments/{environment}/logs?status=pending&_count=1");
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        let pending = call(&mut relay, "GET", &logs, None)?;
        if pending["payload"]["logs"].as_array().is_some_and(Vec::is_empty) {
            break;
        }
        if Instant::now() > deadline {
            return Err("messages still pending after 30 minutes".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let wall = started.elapsed();
    let failed =
        call(&mut relay, "GET", &format!("/relay/v1/environments/{environment}/logs?status=failed&_count=1"), None)?;
    if failed["payload"]["logs"].as_array().is_some_and(|l| !l.is_empty()) {
        return Err(format!("a message failed: {}", failed["payload"]["logs"][0]));
    }

    // The added latency: accepted → stored on the target.
    let form = format!(
        "grant_type=client_credentials&client_id={}&client_secret={}&scope={}",
        encode(&args.client_id),
        encode(&args.client_secret),
        encode(&format!("{base}/.default"))
    );
    let mut target = http::Client::new(&target_hp, "return=minimal", timeout);
    let token = target
        .post_form(&format!("/{}/oauth2/v2.0/token", args.tenant), form.as_bytes())
        .map_err(|e| format!("token: {e}"))?;
    let token: Value = serde_json::from_slice(&token.body).map_err(|e| format!("token: {e}"))?;
    let token = token["access_token"].as_str().ok_or("no access token from the target")?.to_owned();
    let mut target = target.with_authorization(format!("Bearer {token}"));
    let accepted = accepted.into_inner().unwrap();
    let mut latencies = Vec::with_capacity(args.messages);
    let mut next = Some("/Patient?identifier=urn:bench:patient|&_elements=identifier,meta&_count=1000".to_owned());
    while let Some(page) = next.take() {
        let bundle = call(&mut target, "GET", &page, None)?;
        for entry in bundle["entry"].as_array().into_iter().flatten() {
            let resource = &entry["resource"];
            let k: usize =
                resource["identifier"][0]["value"].as_str().and_then(|v| v[1..].parse().ok()).ok_or("identifier")?;
            let stored = resource["meta"]["lastUpdated"].as_str().and_then(parse_instant).ok_or("lastUpdated")?;
            if let Some(at) = accepted.get(&k) {
                latencies.push((stored - at) as f64 / 1000.0);
            }
        }
        next = bundle["link"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["relation"] == "next")
            .and_then(|l| l["url"].as_str())
            .map(|u| u.trim_start_matches(base).to_owned());
    }
    if latencies.len() != args.messages {
        return Err(format!("{} of {} patients found on the target", latencies.len(), args.messages));
    }
    latencies.sort_by(f64::total_cmp);
    let mut accept = accept_ms.into_inner().unwrap();
    accept.sort_by(f64::total_cmp);
    let rate = args.messages as f64 / wall.as_secs_f64();
    println!(
        "{} messages from {} threads: accepted in {:.2} s ({:.0}/s), all delivered after {:.2} s: {rate:.0} delivered/s; \
         accept p50 {:.1} ms; added latency p50 {:.0} ms, p95 {:.0} ms, p99 {:.0} ms",
        args.messages,
        args.concurrency,
        posted.as_secs_f64(),
        args.messages as f64 / posted.as_secs_f64(),
        wall.as_secs_f64(),
        percentile(&accept, 0.5),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.95),
        percentile(&latencies, 0.99)
    );
    println!(
        "RESULT messages={} concurrency={} wall_s={:.3} delivered_per_s={rate:.0} accept_p50_ms={:.1} \
         latency_p50_ms={:.0} latency_p95_ms={:.0} latency_p99_ms={:.0}",
        args.messages,
        args.concurrency,
        wall.as_secs_f64(),
        percentile(&accept, 0.5),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.95),
        percentile(&latencies, 0.99)
    );
    Ok(())
}

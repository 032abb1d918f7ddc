//! The relay end to end: Redox-style credentials and destinations created over the Platform API
//! (and the CLI), verified against a real second Fhirside (its built-in identity service issuing
//! the token, exactly as the README documents) and a real HTTPS receiver that checks the
//! `verification-token` header; Synthea bundles delivered and found exactly once on the target,
//! even when the relay is killed mid-delivery; and the faults: a receiver down then up, answering
//! 503/500/429 (backoff, the circuit opening and closing), a token endpoint refusing the secret,
//! a bundle the FHIR service rejects.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use serde_json::{json, Value};

use crate::harness::{temp_dir, Response, Server};

/// Fast retries, so that the fault tests take seconds.
const RETRIES: [&str; 8] = [
    "--relay-retry-base-ms",
    "100",
    "--relay-retry-max-ms",
    "800",
    "--relay-breaker-threshold",
    "3",
    "--relay-breaker-open-ms",
    "400",
];

/// A relay (plain HTTP on loopback, no authentication, so every caller is an administrator) that
/// trusts `ca` for its outbound HTTPS.
fn start_relay(data_dir: &Path, ca: &Path, extra: &[&str]) -> Server {
    let mut args = vec!["--auth", "none", "--http", "--authority-ca", ca.to_str().unwrap()];
    args.extend_from_slice(&RETRIES);
    args.extend_from_slice(extra);
    Server::launch(data_dir, &args, None)
}

fn api(relay: &Server, method: &str, path: &str, body: Option<&Value>) -> Response {
    let bytes = body.map(|b| b.to_string().into_bytes());
    relay.request(method, &format!("/relay/v1{path}"), &[("content-type", "application/json")], bytes.as_deref())
}

/// The payload of a Redox-shaped `200`.
fn payload(response: Response) -> Value {
    let response = response.expect(200);
    let json = response.json();
    assert_eq!(json["meta"]["version"], "1.0.0", "{json}");
    json["payload"].clone()
}

/// The diagnostics of an error answer with `status`.
fn refused(response: Response, status: u16) -> String {
    assert_eq!(response.status, status, "{}", String::from_utf8_lossy(&response.body));
    response.diagnostics()
}

fn environment(relay: &Server, organization: i64, flag: &str) -> String {
    let environments = payload(api(relay, "GET", &format!("/organizations/{organization}/environments"), None));
    let list = environments["environments"].as_array().unwrap();
    assert_eq!(list.len(), 3, "{environments}");
    let found = list.iter().find(|e| e["environmentFlag"] == flag).unwrap();
    assert_eq!(found["organization"]["id"], organization);
    found["id"].as_str().unwrap().to_owned()
}

/// Polls `ready` every 100 ms until it is true; panics with `what` after `limit`.
fn wait_until(limit: Duration, what: &str, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn message(relay: &Server, environment: &str, id: &str) -> Value {
    payload(api(relay, "GET", &format!("/environments/{environment}/messages/{id}"), None))["message"].clone()
}

fn wait_status(relay: &Server, environment: &str, id: &str, status: &str, limit: Duration) -> Value {
    let mut last = Value::Null;
    let start = Instant::now();
    while start.elapsed() < limit {
        last = message(relay, environment, id);
        if last["status"] == status {
            return last;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("message {id} did not become {status}: {last:#}");
}

fn post_message(relay: &Server, environment: &str, key: &str, body: &[u8]) -> Response {
    let bearer = format!("Bearer {key}");
    relay.request(
        "POST",
        &format!("/relay/v1/environments/{environment}/messages"),
        &[("authorization", &bearer), ("content-type", "application/fhir+json")],
        Some(body),
    )
}

fn accepted(relay: &Server, environment: &str, key: &str, body: &[u8]) -> String {
    let message = payload(post_message(relay, environment, key, body))["message"].clone();
    assert_eq!(message["status"], "pending", "{message}");
    message["id"].as_str().unwrap().to_owned()
}

fn source_key(relay: &Server, environment: &str) -> String {
    let source =
        payload(api(relay, "POST", &format!("/environments/{environment}/sources"), Some(&json!({"name": "EHR"}))));
    source["source"]["secret"].as_str().unwrap().to_owned()
}

// --- a second Fhirside as the destination ---

struct Target {
    server: Server,
    client_id: String,
    secret: String,
    token: String,
}

/// A Fhirside with its built-in identity service and an app registration allowed to write.
fn start_target() -> Target {
    let server = Server::start_secure(&[]);
    let (client_id, secret, _) = server.create_app("Relay delivery", &["FHIR Data Contributor"]);
    let token = server.token(&client_id, &secret);
    Target { server, client_id, secret, token }
}

impl Target {
    /// The credential body as the README documents it for a Fhirside destination.
    fn credential(&self, environment: &str, organization: i64, secret: &str) -> Value {
        let base = &self.server.base;
        let tenant = self.server.tenant.as_deref().unwrap();
        let audience = format!("{base}/metadata").replace("metadata", "Bundle");
        json!({
            "organization": organization,
            "name": "Fhirside FHIR service",
            "environmentId": environment,
            "authStrategy": "OAuth_2.0_2-legged",
            "grantType": "client_credentials",
            "url": format!("{base}/{tenant}/oauth2/v2.0/token"),
            "clientId": self.client_id,
            "clientSecret": secret,
            "scope": format!("{base}/.default"),
            "audience": audience,
            "resourceURI": audience,
        })
    }

    fn destination(&self, credential: &str) -> Value {
        json!({
            "name": "Fhirside",
            "authCredential": credential,
            "cloudProviderSettings": {
                "typeId": "azure",
                "productId": "health-data-services",
                "settings": { "fhirBaseUrl": self.server.base },
            },
        })
    }

    fn count(&self, query: &str) -> u64 {
        let response = self.server.request_as(&self.token, "GET", &format!("/{query}"), None).expect(200);
        response.json()["total"].as_u64().unwrap()
    }
}

/// A relay environment with a verified destination at `target`; returns (relay, environment,
/// credential id, destination id, source key).
fn relay_to(target: &Target, ca: &Path, extra: &[&str]) -> (Server, String, String, String, String) {
    let relay = start_relay(&temp_dir("relay"), ca, extra);
    let environment = environment(&relay, 118, "Staging");
    let credential =
        payload(api(&relay, "POST", "/authcredentials", Some(&target.credential(&environment, 118, &target.secret))));
    let credential_id = credential["credential"]["id"].as_str().unwrap().to_owned();
    let destination = payload(api(
        &relay,
        "POST",
        &format!("/environments/{environment}/destinations"),
        Some(&target.destination(&credential_id)),
    ));
    let destination_id = destination["destination"]["id"].as_str().unwrap().to_owned();
    let verified = payload(api(&relay, "POST", &format!("/destinations/{destination_id}/verify"), None));
    assert_eq!(verified["destination"]["verified"], true, "{verified:#}");
    let key = source_key(&relay, &environment);
    (relay, environment, credential_id, destination_id, key)
}

/// One PEM file with every CA the relay must trust.
fn trust(cas: &[&str]) -> PathBuf {
    let path = temp_dir("relay-ca").join("trust.pem");
    std::fs::write(&path, cas.concat()).unwrap();
    path
}

fn read_ca(server: &Server) -> String {
    std::fs::read_to_string(server.ca.as_ref().unwrap()).unwrap()
}

fn synthea(count: usize) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/datasets/synthea-120");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let bzcat = |path: &Path| {
        let output = Command::new("bzcat").arg(path).output().expect("bzcat (Debian package bzip2)");
        assert!(output.status.success());
        output.stdout
    };
    let (reference, mut patients): (Vec<PathBuf>, Vec<PathBuf>) =
        files.into_iter().partition(|p| p.file_name().unwrap().to_string_lossy().starts_with("0-"));
    // The smallest patients, to keep the test short.
    patients.sort_by_key(|p| std::fs::metadata(p).unwrap().len());
    (reference.iter().map(|p| bzcat(p)).collect(), patients.iter().take(count).map(|p| bzcat(p)).collect())
}

fn counts(bundles: &[Vec<u8>]) -> HashMap<String, u64> {
    let mut counts = HashMap::new();
    for bytes in bundles {
        let bundle: Value = serde_json::from_slice(bytes).unwrap();
        for entry in bundle["entry"].as_array().unwrap() {
            *counts.entry(entry["resource"]["resourceType"].as_str().unwrap().to_owned()).or_default() += 1;
        }
    }
    counts
}

#[test]
fn synthea_reaches_a_second_fhirside_exactly_once_even_when_the_relay_is_killed_mid_delivery() {
    let target = start_target();
    let ca = trust(&[&read_ca(&target.server)]);
    let (mut relay, environment, _, destination, key) = relay_to(&target, &ca, &[]);
    // The verification sample: a Patient and an Encounter, stored once however often it is sent.
    payload(api(&relay, "POST", &format!("/destinations/{destination}/verify"), None));
    let sample = format!("Patient?identifier=urn:fhirside:relay:verification|{destination}&_summary=count");
    assert_eq!(target.count(&sample), 1);

    let (reference, patients) = synthea(3);
    // Organizations and practitioners first: the patients' bundles refer to them conditionally.
    for bundle in &reference {
        let id = accepted(&relay, &environment, &key, bundle);
        wait_status(&relay, &environment, &id, "succeeded", Duration::from_secs(120));
    }
    let mut ids: Vec<String> = patients.iter().map(|b| accepted(&relay, &environment, &key, b)).collect();
    // A source that did not get our answer sends the same bundle again.
    ids.push(accepted(&relay, &environment, &key, &patients[0]));
    // Killed as soon as the first bundle is through, while the others are on their way: what was
    // queued survives; what was sent but not recorded goes again, and the rewritten bundle makes
    // that harmless.
    let mut statuses = Vec::new();
    wait_until(Duration::from_secs(120), "a first delivered bundle", || {
        statuses = ids.iter().map(|id| message(&relay, &environment, id)["status"].clone()).collect();
        statuses.contains(&json!("succeeded"))
    });
    relay.restart();
    assert!(statuses.contains(&json!("pending")), "killed before everything was delivered: {statuses:?}");
    for id in &ids {
        let done = wait_status(&relay, &environment, id, "succeeded", Duration::from_secs(300));
        assert_eq!(done["logs"][0]["destination"]["id"], destination.as_str());
        assert_eq!(done["logs"][0]["attempts"]["latest"]["status"], "succeeded", "{done:#}");
    }

    let mut expected = counts(&patients);
    for (kind, n) in counts(&reference) {
        *expected.entry(kind).or_default() += n;
    }
    // The verification sample's Patient and Encounter.
    *expected.get_mut("Patient").unwrap() += 1;
    *expected.get_mut("Encounter").unwrap() += 1;
    for (kind, n) in &expected {
        assert_eq!(target.count(&format!("{kind}?_summary=count")), *n, "{kind} on the target");
    }
}

#[test]
fn fhir_destination_faults_a_refused_secret_and_a_rejected_bundle_are_reported() {
    let target = start_target();
    let ca = trust(&[&read_ca(&target.server)]);
    let (relay, environment, credential, _, key) = relay_to(&target, &ca, &["--relay-max-attempts", "3"]);

    // The FHIR service validates the bundle: a rejection is final, with its OperationOutcome.
    let invalid = json!({"resourceType": "Patient", "gender": "banana",
                         "identifier": [{"system": "urn:test", "value": "invalid-1"}]});
    let id = accepted(&relay, &environment, &key, invalid.to_string().as_bytes());
    let failed = wait_status(&relay, &environment, &id, "failed", Duration::from_secs(30));
    let log = &failed["logs"][0];
    assert_eq!(log["attempts"]["total"], 1, "not retried: {failed:#}");
    assert_eq!(log["deadLetter"], false);
    assert_eq!(log["outcome"]["resourceType"], "OperationOutcome", "{failed:#}");
    assert!(log["error"].as_str().unwrap().contains("rejected by the destination: HTTP 400"), "{failed:#}");

    // The token endpoint refuses a wrong secret: each attempt says so, then the message is
    // dead-lettered; with the secret corrected, replay delivers it.
    let wrong = payload(api(
        &relay,
        "PATCH",
        &format!("/authcredentials/{credential}"),
        Some(&json!({"clientSecret": "wrong"})),
    ));
    assert_eq!(wrong["credential"]["hasClientSecret"], true);
    assert!(!wrong.to_string().contains("wrong"), "the secret is never shown: {wrong}");
    let patient = json!({"resourceType": "Patient", "identifier": [{"system": "urn:test", "value": "token-1"}]});
    let id = accepted(&relay, &environment, &key, patient.to_string().as_bytes());
    let dead = wait_status(&relay, &environment, &id, "failed", Duration::from_secs(30));
    let log = &dead["logs"][0];
    assert_eq!(log["deadLetter"], true, "{dead:#}");
    assert_eq!(log["attempts"]["total"], 3);
    let error = log["error"].as_str().unwrap();
    assert!(error.contains("refused the auth credential 'Fhirside FHIR service' (HTTP 401)"), "{error}");
    assert!(error.contains("invalid_client"), "{error}");
    assert!(!error.contains("wrong"), "{error}");
    assert_eq!(target.count("Patient?identifier=urn:test|token-1&_summary=count"), 0);
    let dead_letters =
        payload(api(&relay, "GET", &format!("/environments/{environment}/logs?status=dead-letter"), None));
    let listed: Vec<&Value> = dead_letters["logs"].as_array().unwrap().iter().map(|m| &m["id"]).collect();
    assert_eq!(listed, [&json!(id)], "only the dead-lettered message, not the rejected one");
    let failed = payload(api(&relay, "GET", &format!("/environments/{environment}/logs?status=failed"), None));
    assert_eq!(failed["logs"].as_array().unwrap().len(), 2);
    refused(api(&relay, "GET", &format!("/environments/{environment}/logs?status=lost"), None), 400);
    payload(api(
        &relay,
        "PATCH",
        &format!("/authcredentials/{credential}"),
        Some(&json!({"clientSecret": target.secret})),
    ));
    let replayed = payload(api(&relay, "POST", &format!("/environments/{environment}/messages/{id}/replay"), None));
    assert_eq!(replayed["message"]["status"], "pending");
    let done = wait_status(&relay, &environment, &id, "succeeded", Duration::from_secs(30));
    assert_eq!(done["logs"][0]["attempts"]["total"], 4, "three failed, then one that succeeded");
    assert_eq!(target.count("Patient?identifier=urn:test|token-1&_summary=count"), 1);

    // A credential that cannot get a token fails verification with the reason.
    let bad = target.credential(&environment, 118, "also wrong");
    let bad =
        payload(api(&relay, "POST", "/authcredentials", Some(&bad)))["credential"]["id"].as_str().unwrap().to_owned();
    let second = payload(api(
        &relay,
        "POST",
        &format!("/environments/{environment}/destinations"),
        Some(&target.destination(&bad)),
    ));
    let second = second["destination"]["id"].as_str().unwrap().to_owned();
    let verified = payload(api(&relay, "POST", &format!("/destinations/{second}/verify"), None));
    assert_eq!(verified["destination"]["verified"], false);
    let reason = verified["destination"]["verification"]["error"].as_str().unwrap();
    assert!(reason.contains("refused the auth credential"), "{reason}");
}

/// Unpadded base64url, for a JWK.
fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[test]
fn a_private_key_credential_signs_client_assertions_for_a_backend_service_app() {
    let target = start_target();
    // A backend service registered with its public key, as `private_key_jwt` clients are.
    let key = KeyPair::generate().unwrap();
    let point = key.public_key_raw();
    assert_eq!((point.len(), point[0]), (65, 4), "an uncompressed P-256 point");
    let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "relay-1", "use": "sig", "alg": "ES256",
                                "x": b64url(&point[1..33]), "y": b64url(&point[33..])}]});
    let jwks_path = temp_dir("jwks").join("jwks.json");
    std::fs::write(&jwks_path, jwks.to_string()).unwrap();
    let app = target.server.admin(&[
        "app",
        "create",
        "--name",
        "Relay (key)",
        "--jwks",
        jwks_path.to_str().unwrap(),
        "--role",
        "FHIR Data Contributor",
    ]);
    let client_id = app["clientId"].as_str().unwrap();

    let relay = start_relay(&temp_dir("relay"), &trust(&[&read_ca(&target.server)]), &[]);
    let environment = environment(&relay, 118, "Staging");
    let mut body = target.credential(&environment, 118, "unused");
    let body = body.as_object_mut().unwrap();
    body.remove("clientSecret");
    body.insert("authStrategy".into(), json!("OAuth_2.0_2-legged_JWT"));
    body.insert("clientId".into(), json!(client_id));
    body.insert("kid".into(), json!("relay-1"));
    body.insert("privateKey".into(), json!("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"));
    let bad = api(&relay, "POST", "/authcredentials", Some(&Value::Object(body.clone())));
    assert!(refused(bad, 400).contains("privateKey"));
    body.insert("privateKey".into(), json!(key.serialize_pem()));
    let credential = payload(api(&relay, "POST", "/authcredentials", Some(&Value::Object(body.clone()))));
    assert_eq!(credential["credential"]["hasPrivateKey"], true);
    assert!(!credential.to_string().contains("PRIVATE KEY"), "{credential}");
    let credential = credential["credential"]["id"].as_str().unwrap();
    let destination = payload(api(
        &relay,
        "POST",
        &format!("/environments/{environment}/destinations"),
        Some(&target.destination(credential)),
    ));
    let destination = destination["destination"]["id"].as_str().unwrap();
    let verified = payload(api(&relay, "POST", &format!("/destinations/{destination}/verify"), None));
    assert_eq!(verified["destination"]["verified"], true, "{verified:#}");
    let key = source_key(&relay, &environment);
    let patient = json!({"resourceType": "Patient", "identifier": [{"system": "urn:test", "value": "jwt-1"}]});
    let id = accepted(&relay, &environment, &key, patient.to_string().as_bytes());
    wait_status(&relay, &environment, &id, "succeeded", Duration::from_secs(30));
    assert_eq!(target.count("Patient?identifier=urn:test|jwt-1&_summary=count"), 1);
}

// --- a real HTTPS receiver ---

/// A certificate authority and a loopback server certificate made for one test.
struct Tls {
    ca_pem: String,
    config: Arc<rustls::ServerConfig>,
}

fn receiver_tls() -> Tls {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, "relay test CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = params.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(params, ca_key);
    let leaf = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    let certs = vec![rustls::pki_types::CertificateDer::from(cert.der().to_vec())];
    let key = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    Tls { ca_pem, config: Arc::new(config) }
}

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Seen {
    token: Option<String>,
    body: Vec<u8>,
    /// A verification request (the challenge), not a message.
    verification: bool,
}

/// What the receiver shares with the test: what it saw, and the statuses to answer next.
#[derive(Default)]
struct Shared {
    seen: Mutex<Vec<Seen>>,
    /// (status, Retry-After) for the next data requests; 200 when empty.
    script: Mutex<VecDeque<(u16, Option<u32>)>>,
    /// Requests whose body holds this text get `503`, this many times.
    refuse: Mutex<Option<(String, u32)>>,
}

/// An HTTPS endpoint as a vendor writes one from Redox's guide: it answers the verification
/// challenge and refuses (400) any request without the right `verification-token` header.
struct Receiver {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    fn start(tls: &Tls, port: u16, token: &str, shared: Arc<Shared>) -> Receiver {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let (config, token, flag) = (tls.config.clone(), token.to_owned(), stop.clone());
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    let _ = serve(stream, config.clone(), &token, &shared);
                }
            }
        });
        Receiver { port, stop, thread: Some(thread) }
    }

    fn stop(&mut self) {
        if self.thread.is_none() {
            return;
        }
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve(tcp: TcpStream, config: Arc<rustls::ServerConfig>, token: &str, shared: &Shared) -> std::io::Result<()> {
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let connection = rustls::ServerConnection::new(config).map_err(std::io::Error::other)?;
    let mut stream = BufReader::new(rustls::StreamOwned::new(connection, tcp));
    let mut request_line = String::new();
    stream.read_line(&mut request_line)?;
    let (mut length, mut seen_token) = (0usize, None);
    loop {
        let mut line = String::new();
        stream.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().unwrap_or(0),
            "verification-token" => seen_token = Some(value.trim().to_owned()),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body)?;
    // POST {"challenge": …}, or GET ?challenge=…&verification-token=…
    let query = request_line.split(' ').nth(1).and_then(|target| target.split_once('?')).map(|(_, q)| q.to_owned());
    let from_query = |name: &str| {
        query.as_deref()?.split('&').find_map(|pair| pair.strip_prefix(&format!("{name}=")).map(str::to_owned))
    };
    let challenge = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|b| b["challenge"].as_str().map(str::to_owned))
        .or_else(|| from_query("challenge").filter(|_| from_query("verification-token").as_deref() == Some(token)));
    let verification = challenge.is_some() || request_line.contains("challenge=");
    shared.seen.lock().unwrap().push(Seen { token: seen_token.clone(), body: body.clone(), verification });
    let (status, retry_after, answer) = if seen_token.as_deref() != Some(token) {
        (400, None, "{\"error\": \"verification-token mismatch\"}".to_owned())
    } else if let Some(challenge) = challenge {
        (200, None, json!({ "challenge": challenge }).to_string())
    } else if refuse(shared, &body) {
        (503, None, "{}".to_owned())
    } else {
        let (status, retry_after) = shared.script.lock().unwrap().pop_front().unwrap_or((200, None));
        (status, retry_after, "{}".to_owned())
    };
    let mut head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        answer.len()
    );
    if let Some(seconds) = retry_after {
        head.push_str(&format!("Retry-After: {seconds}\r\n"));
    }
    let stream = stream.get_mut();
    stream.write_all(format!("{head}\r\n{answer}").as_bytes())?;
    stream.conn.send_close_notify();
    stream.flush()
}

fn refuse(shared: &Shared, body: &[u8]) -> bool {
    let mut refuse = shared.refuse.lock().unwrap();
    match refuse.as_mut() {
        Some((marker, left)) if *left > 0 && String::from_utf8_lossy(body).contains(marker.as_str()) => {
            *left -= 1;
            true
        }
        _ => false,
    }
}

fn data_requests(shared: &Shared) -> Vec<Seen> {
    shared.seen.lock().unwrap().iter().filter(|s| !s.verification).cloned().collect()
}

#[test]
fn https_endpoint_checks_the_token_and_deliveries_survive_downtime_and_errors() {
    let tls = receiver_tls();
    let shared = Arc::new(Shared::default());
    let mut receiver = Receiver::start(&tls, 0, "s3cret-token", shared.clone());
    let port = receiver.port;
    let relay = start_relay(&temp_dir("relay"), &trust(&[&tls.ca_pem]), &["--relay-max-attempts", "50"]);
    let environment = environment(&relay, 7, "Production");
    let endpoint = format!("https://127.0.0.1:{port}/redox");

    // A wrong token: the receiver refuses the challenge, and the destination stays unverified.
    let wrong = json!({"name": "Vendor (wrong token)", "endpoint": endpoint, "verificationToken": "nope"});
    let wrong = payload(api(&relay, "POST", &format!("/environments/{environment}/destinations"), Some(&wrong)));
    let wrong = wrong["destination"]["id"].as_str().unwrap().to_owned();
    let verified = payload(api(&relay, "POST", &format!("/destinations/{wrong}/verify"), None));
    assert_eq!(verified["destination"]["verified"], false);
    assert!(verified["destination"]["verification"]["error"].as_str().unwrap().contains("HTTP 400"), "{verified}");

    let body = json!({"name": "Vendor", "endpoint": endpoint, "verificationToken": "s3cret-token"});
    let created = payload(api(&relay, "POST", &format!("/environments/{environment}/destinations"), Some(&body)));
    let destination = created["destination"]["id"].as_str().unwrap().to_owned();
    assert_eq!(created["destination"]["verified"], false);
    assert_eq!(created["destination"]["hasVerificationToken"], true);
    assert!(!created.to_string().contains("s3cret-token"), "{created}");
    let verified = payload(api(
        &relay,
        "POST",
        &format!("/destinations/{destination}/verify"),
        Some(&json!({"verificationMethod": "POST"})),
    ));
    assert_eq!(verified["destination"]["verified"], true, "{verified:#}");
    assert_eq!(verified["destination"]["verification"]["status"], "verified");
    let by_get = json!({"verificationMethod": "GET"});
    let verified = payload(api(&relay, "POST", &format!("/destinations/{destination}/verify"), Some(&by_get)));
    assert_eq!(verified["destination"]["verified"], true, "the GET form too: {verified:#}");
    let key = source_key(&relay, &environment);

    // 503, 500, then 429 with Retry-After: retried with backoff; three failures in a row open the
    // circuit, whose trial then succeeds and closes it.
    shared.script.lock().unwrap().extend([(503, None), (500, None), (429, Some(1))]);
    let first = json!({"resourceType": "Patient", "identifier": [{"system": "urn:test", "value": "1"}]});
    let id = accepted(&relay, &environment, &key, first.to_string().as_bytes());
    let done = wait_status(&relay, &environment, &id, "succeeded", Duration::from_secs(30));
    let statuses: Vec<&Value> =
        done["logs"][0]["history"].as_array().unwrap().iter().map(|a| &a["httpStatus"]).collect();
    assert_eq!(statuses, [&json!(503), &json!(500), &json!(429), &json!(200)], "{done:#}");
    let shown = payload(api(&relay, "GET", &format!("/destinations/{destination}"), None));
    assert_eq!(shown["destination"]["circuit"]["timesOpened"], 1, "{shown}");
    assert_eq!(shown["destination"]["circuit"]["state"], "closed");

    // Down: messages wait (and say why); up again on the same port: they arrive.
    receiver.stop();
    let second = json!({"resourceType": "Patient", "identifier": [{"system": "urn:test", "value": "2"}]});
    let id = accepted(&relay, &environment, &key, second.to_string().as_bytes());
    wait_until(Duration::from_secs(30), "failed attempts while the receiver is down", || {
        let m = message(&relay, &environment, &id);
        m["status"] == "pending" && m["logs"][0]["attempts"]["total"].as_u64().unwrap() >= 2
    });
    let waiting = message(&relay, &environment, &id);
    assert!(waiting["logs"][0]["error"].as_str().unwrap().contains("127.0.0.1"), "{waiting:#}");
    assert!(waiting["logs"][0]["nextAttemptAt"].is_string());
    let _receiver = Receiver::start(&tls, port, "s3cret-token", shared.clone());
    wait_status(&relay, &environment, &id, "succeeded", Duration::from_secs(30));

    // Every data request carried the token, and each message arrived as it was sent.
    let data = data_requests(&shared);
    assert!(data.iter().all(|s| s.token.as_deref() == Some("s3cret-token")), "{data:?}");
    let bodies: Vec<Value> = data.iter().map(|s| serde_json::from_slice(&s.body).unwrap()).collect();
    assert_eq!(bodies.iter().filter(|b| **b == first).count(), 4, "four attempts of the first");
    assert_eq!(bodies.iter().filter(|b| **b == second).count(), 1, "the second once, when the receiver came back");
}

#[test]
fn a_patients_messages_arrive_in_order_while_other_patients_pass() {
    let tls = receiver_tls();
    let shared = Arc::new(Shared::default());
    let receiver = Receiver::start(&tls, 0, "t", shared.clone());
    let relay = start_relay(&temp_dir("relay"), &trust(&[&tls.ca_pem]), &[]);
    let environment = environment(&relay, 3, "Development");
    let body = json!({"name": "Vendor", "endpoint": format!("https://127.0.0.1:{}/in", receiver.port), "verificationToken": "t"});
    let created = payload(api(&relay, "POST", &format!("/environments/{environment}/destinations"), Some(&body)));
    let destination = created["destination"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        payload(api(&relay, "POST", &format!("/destinations/{destination}/verify"), None))["destination"]["verified"],
        true
    );
    let key = source_key(&relay, &environment);
    // The first message of patient A is refused three times.
    *shared.refuse.lock().unwrap() = Some(("a-first".into(), 3));
    let message = |patient: &str, note: &str| {
        json!({"resourceType": "Bundle", "type": "message", "entry": [
            {"resource": {"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": patient}]}},
            {"resource": {"resourceType": "Communication", "status": "completed", "note": [{"text": note}]}}]})
        .to_string()
    };
    let a1 = accepted(&relay, &environment, &key, message("A", "a-first").as_bytes());
    let a2 = accepted(&relay, &environment, &key, message("A", "a-second").as_bytes());
    let b1 = accepted(&relay, &environment, &key, message("B", "b-first").as_bytes());
    for id in [&a1, &a2, &b1] {
        wait_status(&relay, &environment, id, "succeeded", Duration::from_secs(30));
    }
    let order: Vec<&str> = data_requests(&shared)
        .iter()
        .map(|s| {
            let text = String::from_utf8_lossy(&s.body).into_owned();
            ["a-first", "a-second", "b-first"].into_iter().find(|m| text.contains(m)).unwrap()
        })
        .collect();
    // B went at once; A's second waited for A's first, which took four attempts.
    assert_eq!(order.iter().filter(|m| **m == "a-first").count(), 4, "{order:?}");
    assert_eq!(order.iter().filter(|m| **m == "a-second").count(), 1, "{order:?}");
    let position = |m: &str| order.iter().rposition(|o| *o == m).unwrap();
    assert!(position("b-first") < position("a-first"), "{order:?}");
    assert!(position("a-first") < position("a-second"), "{order:?}");
}

#[test]
fn queued_messages_move_to_postgres_with_migrate_store() {
    let tls = receiver_tls();
    let shared = Arc::new(Shared::default());
    let mut receiver = Receiver::start(&tls, 0, "t", shared.clone());
    let port = receiver.port;
    let ca = trust(&[&tls.ca_pem]);
    // Embedded, whatever backend the suite runs on.
    let mut relay = start_relay(&temp_dir("relay"), &ca, &["--database", ""]);
    let environment = environment(&relay, 5, "Development");
    let body = json!({"name": "Vendor", "endpoint": format!("https://127.0.0.1:{port}/in"), "verificationToken": "t"});
    let created = payload(api(&relay, "POST", &format!("/environments/{environment}/destinations"), Some(&body)));
    let destination = created["destination"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        payload(api(&relay, "POST", &format!("/destinations/{destination}/verify"), None))["destination"]["verified"],
        true
    );
    let key = source_key(&relay, &environment);
    receiver.stop();
    let ids: Vec<String> = (0..2)
        .map(|i| {
            accepted(
                &relay,
                &environment,
                &key,
                json!({"resourceType": "Patient", "id": format!("m{i}")}).to_string().as_bytes(),
            )
        })
        .collect();
    wait_until(Duration::from_secs(30), "a failed attempt of each", || {
        ids.iter().all(|id| message(&relay, &environment, id)["logs"][0]["attempts"]["total"] != 0)
    });
    relay.kill();

    let base = std::env::var("FHIRSIDE_TEST_POSTGRES").unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".into());
    let served_dir = temp_dir("relay-served");
    let url = crate::harness::database_for(&base, &served_dir);
    let moved = Command::new(env!("CARGO_BIN_EXE_fhirside"))
        .args(["migrate-store", "--from"])
        .arg(&relay.data_dir)
        .args(["--to", &url])
        .output()
        .unwrap();
    let summary = String::from_utf8_lossy(&moved.stdout);
    assert!(moved.status.success(), "{}", String::from_utf8_lossy(&moved.stderr));
    assert!(summary.contains("relay moved: 1 destinations, 2 messages (2 to deliver)"), "{summary}");

    let _receiver = Receiver::start(&tls, port, "t", shared.clone());
    let relay = start_relay(&served_dir, &ca, &["--database", &url]);
    for id in &ids {
        let done = wait_status(&relay, &environment, id, "succeeded", Duration::from_secs(30));
        assert!(done["logs"][0]["attempts"]["total"].as_u64().unwrap() >= 2, "{done:#}");
    }
    let delivered: Vec<Value> =
        data_requests(&shared).iter().map(|s| serde_json::from_slice(&s.body).unwrap()).collect();
    for i in 0..2 {
        assert!(delivered.contains(&json!({"resourceType": "Patient", "id": format!("m{i}")})), "{delivered:?}");
    }
}

#[test]
fn replicas_on_postgresql_share_the_queue_and_send_each_message_once() {
    let tls = receiver_tls();
    let shared = Arc::new(Shared::default());
    let receiver = Receiver::start(&tls, 0, "t", shared.clone());
    let ca = trust(&[&tls.ca_pem]);
    let base = std::env::var("FHIRSIDE_TEST_POSTGRES").unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".into());
    let first_dir = temp_dir("relay-replica-1");
    let url = crate::harness::database_for(&base, &first_dir);
    let first = start_relay(&first_dir, &ca, &["--database", &url]);
    let second = start_relay(&temp_dir("relay-replica-2"), &ca, &["--database", &url]);
    // Configured through one replica, seen by the other.
    let environment = environment(&first, 9, "Development");
    assert_eq!(environment, self::environment(&second, 9, "Development"));
    let body = json!({"name": "Vendor", "endpoint": format!("https://127.0.0.1:{}/in", receiver.port), "verificationToken": "t"});
    let created = payload(api(&first, "POST", &format!("/environments/{environment}/destinations"), Some(&body)));
    let destination = created["destination"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        payload(api(&second, "POST", &format!("/destinations/{destination}/verify"), None))["destination"]["verified"],
        true
    );
    let key = source_key(&second, &environment);
    let ids: Vec<String> = (0..40)
        .map(|i| {
            let relay = if i % 2 == 0 { &first } else { &second };
            let message = json!({"resourceType": "Patient", "id": format!("r{i}")});
            accepted(relay, &environment, &key, message.to_string().as_bytes())
        })
        .collect();
    for id in &ids {
        let done = wait_status(&first, &environment, id, "succeeded", Duration::from_secs(60));
        assert_eq!(done["logs"][0]["attempts"]["total"], 1, "{done:#}");
    }
    let delivered: Vec<Value> =
        data_requests(&shared).iter().map(|s| serde_json::from_slice(&s.body).unwrap()).collect();
    assert_eq!(delivered.len(), 40, "each message sent once by one of the two workers");
    for i in 0..40 {
        assert!(delivered.contains(&json!({"resourceType": "Patient", "id": format!("r{i}")})), "r{i}");
    }
}

#[test]
fn the_wizards_rules_and_every_mistake_get_a_clear_4xx() {
    let relay = start_relay(&temp_dir("relay"), &trust(&[&receiver_tls().ca_pem]), &[]);
    let production = environment(&relay, 118, "Production");
    let staging = environment(&relay, 118, "Staging");
    assert!(refused(api(&relay, "GET", "/organizations/acme/environments", None), 400).contains("number"));

    // Credentials: both spellings, no secret shown, unknown fields and strategies named.
    let credential = json!({
        "organization": 118, "name": "Azure", "environmentId": production, "authStrategy": "OAuth_2.0_2-legged",
        "grantType": "client_credentials", "url": "https://login.example/tenant/oauth2/v2.0/token",
        "clientId": "app", "clientSecret": "hush", "scope": "https://fhir.example/.default",
        "resourceURI": "https://fhir.example/Bundle", "audience": "https://fhir.example/Bundle"
    });
    let created = payload(api(&relay, "POST", "/authcredentials", Some(&credential)))["credential"].clone();
    assert_eq!(created["scopes"], "https://fhir.example/.default");
    assert_eq!(created["resource"], "https://fhir.example/Bundle");
    assert_eq!(created["hasClientSecret"], true);
    assert!(!created.to_string().contains("hush"));
    let credential_id = created["id"].as_str().unwrap().to_owned();
    let listed = payload(api(&relay, "GET", &format!("/environments/{production}/authcredentials"), None));
    assert_eq!(listed["credentials"][0]["id"], credential_id.as_str());
    let mut unknown = credential.clone();
    unknown["colour"] = json!("red");
    assert!(refused(api(&relay, "POST", "/authcredentials", Some(&unknown)), 400).contains("'colour'"));
    let mut aws = credential.clone();
    aws["authStrategy"] = json!("AwsSigv4");
    assert!(refused(api(&relay, "POST", "/authcredentials", Some(&aws)), 400).contains("not supported"));
    let mut elsewhere = credential.clone();
    elsewhere["organization"] = json!(9);
    assert!(refused(api(&relay, "POST", "/authcredentials", Some(&elsewhere)), 400).contains("organization 118"));
    assert!(refused(api(&relay, "POST", "/authcredentials", None), 400).contains("JSON object"));
    relay
        .request("POST", "/relay/v1/authcredentials", &[("content-type", "application/json")], Some(b"{oops"))
        .expect(400);
    refused(api(&relay, "GET", "/authcredentials/nope", None), 404);

    // A draft is saved in progress and completed later.
    let draft = payload(api(
        &relay,
        "POST",
        &format!("/environments/{production}/destinations"),
        Some(&json!({"name": "Azure FHIR", "setupState": {"step": "authenticate"},
                     "cloudProviderSettings": {"typeId": "azure", "productId": "health-data-services"}})),
    ));
    assert_eq!(draft["destination"]["status"], "in progress");
    let draft_id = draft["destination"]["id"].as_str().unwrap().to_owned();
    let not_ready = payload(api(&relay, "POST", &format!("/destinations/{draft_id}/verify"), None));
    assert!(not_ready["destination"]["verification"]["error"].as_str().unwrap().contains("in progress"));
    let incomplete = api(&relay, "PATCH", &format!("/destinations/{draft_id}"), Some(&json!({"setupState": null})));
    assert!(refused(incomplete, 400).contains("fhirBaseUrl"));
    let complete = payload(api(
        &relay,
        "PATCH",
        &format!("/destinations/{draft_id}"),
        Some(&json!({
        "setupState": null, "authCredential": credential_id,
        "cloudProviderSettings": {"typeId": "azure", "productId": "health-data-services",
                                  "settings": {"fhirBaseUrl": "https://fhir.example"}}})),
    ));
    assert_eq!(complete["destination"]["status"], "complete");

    // The type is fixed; production stays; a credential in use stays.
    let change =
        api(&relay, "PATCH", &format!("/destinations/{draft_id}"), Some(&json!({"endpoint": "https://x.example"})));
    assert!(refused(change, 409).contains("type cannot change"));
    assert!(refused(api(&relay, "DELETE", &format!("/destinations/{draft_id}"), None), 409).contains("production"));
    assert!(refused(api(&relay, "DELETE", &format!("/authcredentials/{credential_id}"), None), 409)
        .contains("'Azure FHIR'"));
    let http = json!({"name": "Plain", "endpoint": "http://127.0.0.1:9/x", "verificationToken": "t"});
    assert!(refused(api(&relay, "POST", &format!("/environments/{production}/destinations"), Some(&http)), 400)
        .contains("https"));
    let other = json!({"name": "Other env", "authCredential": credential_id, "cloudProviderSettings":
        {"typeId": "azure", "productId": "health-data-services", "settings": {"fhirBaseUrl": "https://fhir.example"}}});
    assert!(refused(api(&relay, "POST", &format!("/environments/{staging}/destinations"), Some(&other)), 400)
        .contains("another environment"));
    let standard = json!({"name": "Hook", "endpoint": "https://127.0.0.1:9/x", "verificationToken": "t"});
    let standard = payload(api(&relay, "POST", &format!("/environments/{staging}/destinations"), Some(&standard)));
    let standard = standard["destination"]["id"].as_str().unwrap().to_owned();
    let to_cloud = api(
        &relay,
        "PATCH",
        &format!("/destinations/{standard}"),
        Some(&json!({"cloudProviderSettings": {"typeId": "azure", "productId": "health-data-services"}})),
    );
    assert!(refused(to_cloud, 409).contains("type cannot change"));
    let method =
        api(&relay, "POST", &format!("/destinations/{standard}/verify"), Some(&json!({"verificationMethod": "PUT"})));
    assert!(refused(method, 400).contains("verificationMethod"));
    assert!(payload(api(&relay, "DELETE", &format!("/destinations/{standard}"), None))["message"].is_string());

    // Sources: renamed, never shown their key again.
    let source =
        payload(api(&relay, "POST", &format!("/environments/{staging}/sources"), Some(&json!({"name": "EHR"}))));
    let source_id = source["source"]["id"].as_str().unwrap().to_owned();
    let renamed = payload(api(&relay, "PATCH", &format!("/sources/{source_id}"), Some(&json!({"name": "Epic"}))));
    assert_eq!(renamed["source"]["name"], "Epic");
    assert_eq!(renamed["source"]["hasSecret"], true);
    assert!(renamed["source"].get("secret").is_none());
    let region =
        api(&relay, "PATCH", &format!("/sources/{source_id}"), Some(&json!({"serviceRegion": "GCP_USA_CENTRAL_1"})));
    assert!(refused(region, 400).contains("only its name"));
    assert_eq!(payload(api(&relay, "GET", &format!("/sources/{source_id}"), None))["source"]["name"], "Epic");

    // Messages: the source's own key, and somewhere to deliver to.
    let key = source_key(&relay, &staging);
    let patient = br#"{"resourceType": "Patient"}"#;
    assert_eq!(post_message(&relay, &staging, "rsk_wrong", patient).status, 401);
    assert_eq!(post_message(&relay, &production, &key, patient).status, 401, "a key of another environment");
    assert!(refused(post_message(&relay, &staging, &key, patient), 409).contains("no verified destination"));
    assert!(refused(post_message(&relay, &staging, &key, b"[1, 2]"), 400).contains("JSON object"));
    assert!(refused(post_message(&relay, &staging, &key, br#"{"resourceType": "Bundle", "entry": []}"#), 400)
        .contains("no entries"));
    refused(api(&relay, "GET", &format!("/environments/{staging}/messages/nope"), None), 404);
}

#[test]
fn the_relay_api_needs_the_administrator_role() {
    let server = Server::start_secure(&[]);
    let (client_id, secret, _) = server.create_app("Writer", &["FHIR Data Contributor"]);
    let token = server.token(&client_id, &secret);
    let forbidden = server.request_as(&token, "GET", "/relay/v1/organizations/1/environments", None);
    assert_eq!(forbidden.status, 403);
    assert_eq!(server.get("/relay/v1/organizations/1/environments").status, 401);
    let (admin_id, admin_secret, _) = server.create_app("Admin", &["Fhirside Administrator"]);
    let admin = server.token(&admin_id, &admin_secret);
    let environments = server.request_as(&admin, "GET", "/relay/v1/organizations/1/environments", None).expect(200);
    assert_eq!(environments.json()["payload"]["environments"].as_array().unwrap().len(), 3);
}

#[test]
fn the_cli_manages_credentials_destinations_and_shows_messages() {
    let target = start_target();
    let ca_path = target.server.ca.clone().unwrap();
    let data_dir = temp_dir("relay-cli");
    std::fs::create_dir_all(&data_dir).unwrap();
    // On the PostgreSQL backend, the relay's tables are in the database the server will use.
    let database = crate::harness::postgres_backend().map(|url| crate::harness::database_for(&url, &data_dir));
    let command = |args: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_fhirside"));
        command.arg("relay").args(args).arg("--data-dir").arg(&data_dir);
        if let Some(url) = &database {
            command.env("FHIRSIDE_DATABASE_URL", url);
        }
        command
    };
    let cli = |args: &[&str], env: &[(&str, &str)]| -> Value {
        let output = command(args).args(["--output", "json"]).envs(env.iter().copied()).output().unwrap();
        assert!(output.status.success(), "relay {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_slice(&output.stdout).unwrap()
    };
    let environments = cli(&["environments", "--organization", "118"], &[]);
    let environment = environments[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(environments[0]["environmentFlag"], "Development");
    let base = &target.server.base;
    let tenant = target.server.tenant.as_deref().unwrap();
    let credential = cli(
        &[
            "credential",
            "create",
            "--organization",
            "118",
            "--environment",
            &environment,
            "--name",
            "Fhirside",
            "--url",
            &format!("{base}/{tenant}/oauth2/v2.0/token"),
            "--client-id",
            &target.client_id,
            "--scope",
            &format!("{base}/.default"),
            "--audience",
            &format!("{base}/Bundle"),
        ],
        &[("FHIRSIDE_RELAY_CLIENT_SECRET", &target.secret)],
    );
    assert_eq!(credential["hasClientSecret"], true);
    let credential = credential["id"].as_str().unwrap().to_owned();
    let destination = cli(
        &[
            "destination",
            "create",
            "--environment",
            &environment,
            "--name",
            "Fhirside",
            "--fhir-base-url",
            base,
            "--credential",
            &credential,
        ],
        &[],
    );
    let destination = destination["id"].as_str().unwrap().to_owned();
    let verified = cli(&["destination", "verify", &destination, "--ca-file", ca_path.to_str().unwrap()], &[]);
    assert_eq!(verified["verified"], true, "{verified:#}");
    let source = cli(&["source", "create", "--environment", &environment, "--name", "EHR"], &[]);
    let key = source["secret"].as_str().unwrap().to_owned();

    // A server on the same data directory delivers what the CLI configured.
    let relay = start_relay(&data_dir, &ca_path, &[]);
    let patient = json!({"resourceType": "Patient", "identifier": [{"system": "urn:test", "value": "cli-1"}]});
    let id = accepted(&relay, &environment, &key, patient.to_string().as_bytes());
    wait_status(&relay, &environment, &id, "succeeded", Duration::from_secs(30));
    let listed = cli(&["message", "list", "--environment", &environment, "--status", "succeeded"], &[]);
    assert_eq!(listed[0]["id"], id.as_str());
    let shown = cli(&["message", "show", &id], &[]);
    assert_eq!(shown["status"], "succeeded");
    assert_eq!(shown["logs"][0]["attempts"]["total"], 1);
    assert_eq!(target.count("Patient?identifier=urn:test|cli-1&_summary=count"), 1);
    let listed = cli(&["destination", "list", "--environment", &environment], &[]);
    assert_eq!(listed[0]["verified"], true);
    let output = command(&["credential", "delete", &credential]).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("in use"));
}

/// Every byte the relay keeps: `relay.db` and its WAL, or the text of the `relay_*` tables.
fn relay_bytes(relay: &Server) -> Vec<u8> {
    match &relay.database {
        None => {
            let mut bytes = Vec::new();
            for entry in std::fs::read_dir(&relay.data_dir).unwrap() {
                let path = entry.unwrap().path();
                if path.file_name().unwrap().to_string_lossy().starts_with("relay.db") {
                    bytes.extend(std::fs::read(&path).unwrap());
                }
            }
            bytes
        }
        Some(url) => {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
                tokio::spawn(connection);
                let mut text = String::new();
                for table in ["relay_credentials", "relay_destinations", "relay_messages", "relay_deliveries"] {
                    let sql = format!("SELECT coalesce(string_agg(t::text, ' '), '') FROM {table} t");
                    text.push_str(&client.query_one(&sql, &[]).await.unwrap().get::<_, String>(0));
                }
                text.into_bytes()
            })
        }
    }
}

#[test]
fn an_encrypted_installation_seals_the_relays_secrets_and_messages() {
    let target = start_target();
    let ca = trust(&[&read_ca(&target.server)]);
    let kek = temp_dir("relay-kek").join("kek");
    std::fs::write(&kek, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&kek, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let setting = format!("file:{}", kek.display());
    let (relay, environment, credential, _, key) = relay_to(&target, &ca, &["--encryption-key", &setting]);
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [{
        "fullUrl": "urn:uuid:7d3c1f52-55a6-4f0e-9d55-3f1c2b8a9e01",
        "resource": {"resourceType": "Patient", "name": [{"family": "Sealingworth"}],
                     "identifier": [{"system": "http://hospital.example.org/mrn", "value": "MRN-SEAL-1"}]},
        "request": {"method": "POST", "url": "Patient"}}]});
    let id = accepted(&relay, &environment, &key, bundle.to_string().as_bytes());
    wait_status(&relay, &environment, &id, "succeeded", Duration::from_secs(60));
    assert_eq!(target.count("Patient?identifier=MRN-SEAL-1&_summary=count"), 1);

    let stored = relay_bytes(&relay);
    assert!(stored.len() > 1000, "the relay's store was not found");
    for secret in [target.secret.as_str(), "Sealingworth", "MRN-SEAL-1"] {
        assert!(!stored.windows(secret.len()).any(|w| w == secret.as_bytes()), "'{secret}' is stored in plaintext");
    }

    // The CLI opens them with the servers' key, and says so without it.
    let cli = |extra: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_fhirside"));
        command.args(["relay", "credential", "show", &credential, "--data-dir"]).arg(&relay.data_dir).args(extra);
        if let Some(url) = &relay.database {
            command.args(["--database", url]);
        }
        command.output().unwrap()
    };
    let shown = cli(&["--encryption-key", &setting]);
    assert!(shown.status.success(), "{}", String::from_utf8_lossy(&shown.stderr));
    assert!(String::from_utf8_lossy(&shown.stdout).contains("\"hasClientSecret\": true"));
    let refused = cli(&[]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("encrypted at rest"));
}

//! Bulk data on object storage: `$export` to Azure Blob Storage (Azurite) and to S3 (moto), and
//! `$import` back from there (by the blob's URL, by `s3://`) into another server, and from a plain
//! HTTP URL; and both on Azurite over https with OAuth, authorized by a managed identity whose
//! tokens a stand-in identity endpoint hands out. The storage servers are real, started here (see
//! `fhirside_objects::testing`).

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fhirside_objects::testing::{
    azurite, azurite_oauth, entra_token, moto_server, AZURITE_ACCOUNT, AZURITE_KEY, ENTRA_ISSUER, STORAGE_AUDIENCE,
};
use serde_json::{json, Value};

use crate::harness::{match_ids, temp_dir, Server};

const EXPORT: [(&str, &str); 2] = [("prefer", "respond-async"), ("accept", "application/fhir+json")];
const IMPORT: [(&str, &str); 2] = [("prefer", "respond-async"), ("content-type", "application/fhir+json")];

fn start(storage: &str, env: &[(&str, &str)]) -> Server {
    Server::launch_with_env(&temp_dir("data"), &["--http", "--auth", "none", "--bulk-storage", storage], env, None)
}

/// Polls a status URL (a path) until it answers `200`.
fn wait(server: &Server, status: &str) -> Value {
    let started = Instant::now();
    loop {
        let response = server.get(status);
        match response.status {
            200 => return response.json(),
            202 => {}
            other => panic!("status {other}: {}", String::from_utf8_lossy(&response.body)),
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the job did not finish in 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Loads the test data into `server`, exports it with `path` and waits: the manifest and the URLs
/// of its files.
fn load_and_export(server: &Server, path: &str) -> (Value, Vec<String>) {
    load(server);
    let status = location(server, server.request("GET", path, &EXPORT, None));
    let manifest = wait(server, &status);
    let urls = manifest["output"].as_array().unwrap().iter().map(|o| o["url"].as_str().unwrap().to_owned()).collect();
    (manifest, urls)
}

fn location(server: &Server, response: crate::harness::Response) -> String {
    response.expect(202).header("content-location").unwrap()[server.base.len()..].to_owned()
}

fn load(server: &Server) {
    for i in 0..5 {
        let patient =
            json!({"resourceType": "Patient", "id": format!("bs{i}"), "name": [{"family": format!("Stored{i}")}]});
        server.put_json(&format!("/Patient/bs{i}"), &patient).expect(201);
        let observation = json!({"resourceType": "Observation", "status": "final", "code": {"text": "stored"},
            "subject": {"reference": format!("Patient/bs{i}")}});
        server.post_json("/Observation", &observation).expect(201);
    }
}

/// The status of a GET of `url` (http, loopback) without credentials.
fn anonymous_get(url: &str) -> u16 {
    use std::io::{Read, Write};
    let (host, path) = url.strip_prefix("http://").and_then(|rest| rest.split_once('/')).unwrap();
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    write!(stream, "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0)
}

fn import_body(urls: &[String]) -> Value {
    let mut parameter = vec![
        json!({"name": "inputFormat", "valueString": "application/fhir+ndjson"}),
        json!({"name": "mode", "valueString": "IncrementalLoad"}),
    ];
    for url in urls {
        parameter.push(json!({"name": "input", "part": [{"name": "url", "valueUri": url}]}));
    }
    json!({"resourceType": "Parameters", "parameter": parameter})
}

/// Imports `urls` into `server` and checks that everything `load` wrote arrived.
fn import_and_check(server: &Server, urls: &[String]) {
    let kicked = server.request("POST", "/$import", &IMPORT, Some(import_body(urls).to_string().as_bytes()));
    let result = wait(server, &location(server, kicked));
    assert_eq!(result["error"], json!([]), "{result}");
    let total: u64 = result["output"].as_array().unwrap().iter().map(|o| o["count"].as_u64().unwrap()).sum();
    assert_eq!(total, 10, "{result}");
    assert_eq!(match_ids(&server.get("/Patient?family=Stored3").expect(200).json()), ["bs3"]);
    let observations = server.get("/Observation?subject=Patient/bs1").expect(200).json();
    assert_eq!(match_ids(&observations).len(), 1);
}

#[test]
fn export_to_azure_blob_storage_and_import_back() {
    let blob = azurite();
    let account_url = format!("http://127.0.0.1:{}/{AZURITE_ACCOUNT}", blob.port);
    let setting = format!("azure-blob:{account_url}");
    let env = [("FHIRSIDE_BLOB_ACCOUNT_KEY", AZURITE_KEY)];
    let source = start(&setting, &env);
    load(&source);
    let status = location(&source, source.request("GET", "/$export?_container=exports", &EXPORT, None));
    let manifest = wait(&source, &status);
    assert_eq!(manifest["requiresAccessToken"], false, "the storage's own URLs, authorized by it");
    let urls: Vec<String> =
        manifest["output"].as_array().unwrap().iter().map(|o| o["url"].as_str().unwrap().to_owned()).collect();
    assert_eq!(urls.len(), 2, "{manifest}");
    for url in &urls {
        assert!(url.starts_with(&format!("{account_url}/exports/")) && url.ends_with(".ndjson"), "{url}");
    }
    // Without the account's key the blobs cannot be read: the container is private.
    let anonymous = anonymous_get(&urls[0]);
    assert!(matches!(anonymous, 401 | 403 | 404), "an anonymous read answered {anonymous}");

    // Another server on the same account imports them by their URLs.
    let target = start(&setting, &env);
    import_and_check(&target, &urls);

    // Cancelling (discarding) the export removes its blobs: the import now fails to read them.
    source.request("DELETE", &status, &[], None).expect(202);
    let fresh = start(&setting, &env);
    let kicked = fresh.request("POST", "/$import", &IMPORT, Some(import_body(&urls[..1]).to_string().as_bytes()));
    let status = location(&fresh, kicked);
    let started = Instant::now();
    loop {
        let response = fresh.get(&status);
        if response.status == 500 {
            assert!(response.diagnostics().contains("import failed"), "{}", response.diagnostics());
            break;
        }
        assert_eq!(response.status, 202, "{}", String::from_utf8_lossy(&response.body));
        assert!(started.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn export_to_s3_and_import_back_by_s3_urls() {
    let s3 = moto_server(false);
    let setting = format!("s3:http://127.0.0.1:{}?region=us-east-1&path_style=true", s3.port);
    let env = [("AWS_ACCESS_KEY_ID", "AKIDFHIRSIDETEST"), ("AWS_SECRET_ACCESS_KEY", "not-a-real-secret")];
    let source = start(&setting, &env);
    let (manifest, urls) = load_and_export(&source, "/$export?_container=fhir-bulk");
    assert_eq!(urls.len(), 2, "{manifest}");
    let prefix = format!("http://127.0.0.1:{}/fhir-bulk/", s3.port);
    assert!(urls.iter().all(|u| u.starts_with(&prefix)), "{urls:?}");
    // s3://bucket/key names the same objects.
    let s3_urls: Vec<String> = urls.iter().map(|u| format!("s3://fhir-bulk/{}", &u[prefix.len()..])).collect();
    let target = start(&setting, &env);
    import_and_check(&target, &s3_urls);
}

#[test]
fn import_from_a_plain_http_url() {
    // Another Fhirside's export files are plain HTTP URLs on the loopback interface.
    let exporter = Server::start_http();
    let (_, urls) = load_and_export(&exporter, "/$export");
    let target = Server::start_http();
    import_and_check(&target, &urls);
}

/// A stand-in for the platform's managed identity endpoint: the metadata service's path (with
/// `Metadata: true`), App Service's (with `X-IDENTITY-HEADER`) and Entra's token endpoint for AKS
/// workload identity (a client credentials grant asserted by the service account token), each
/// answering a token Azurite takes for an hour. Each request is recorded as what it asked for
/// (`imds system`, `app-service user-assigned`, `workload`), or as `wrong: {target}` (and answered
/// 400) when it lacks what Azure's endpoints insist on: path, `api-version`, `resource`,
/// `client_id` and the header, or the grant's form.
struct IdentityEndpoint {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
}

const IDENTITY_HEADER: &str = "platform-identity-header";
const CLIENT_ID: &str = "5c4e9d1a-7b3f-4c2e-9a8d-1e2f3a4b5c6d";
const TENANT: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";
const SERVICE_ACCOUNT_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.service-account.signature";

impl IdentityEndpoint {
    fn start() -> IdentityEndpoint {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let log = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                let target = head.split(' ').nth(1).unwrap_or("").to_owned();
                let header = |name: &str| {
                    head.lines().find_map(|l| l.strip_prefix(&format!("{name}: ")).map(|v| v.trim().to_owned()))
                };
                let mut body = vec![0u8; header("content-length").and_then(|n| n.parse().ok()).unwrap_or(0)];
                if stream.read_exact(&mut body).is_err() {
                    continue;
                }
                let form: Vec<String> = String::from_utf8_lossy(&body).split('&').map(str::to_owned).collect();
                let storage = "resource=https%3a%2f%2fstorage.azure.com%2f";
                let workload = [
                    "grant_type=client_credentials".to_owned(),
                    format!("client_id={CLIENT_ID}"),
                    "scope=https%3A%2F%2Fstorage.azure.com%2F.default".to_owned(),
                    "client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer".to_owned(),
                    format!("client_assertion={SERVICE_ACCOUNT_TOKEN}"),
                ];
                let seen = if head.starts_with("post ") && target == format!("/{TENANT}/oauth2/v2.0/token") {
                    match form == workload {
                        true => "workload".to_owned(),
                        false => format!("wrong: {target} {form:?}"),
                    }
                } else if target.starts_with("/metadata/identity/oauth2/token?api-version=2018-02-01&")
                    && target.ends_with(storage)
                    && header("metadata").as_deref() == Some("true")
                {
                    "imds system".to_owned()
                } else if target.starts_with("/msi/token?api-version=2019-08-01&")
                    && target.contains(storage)
                    && target.ends_with(&format!("client_id={CLIENT_ID}"))
                    && header("x-identity-header").as_deref() == Some(IDENTITY_HEADER)
                {
                    "app-service user-assigned".to_owned()
                } else {
                    format!("wrong: {target}")
                };
                let ok = !seen.starts_with("wrong");
                log.lock().unwrap().push(seen.clone());
                let expires_on =
                    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600;
                let body = match ok {
                    true if seen == "workload" => {
                        json!({"access_token": entra_token(ENTRA_ISSUER, STORAGE_AUDIENCE, 3600),
                        "expires_in": 3599, "ext_expires_in": 3599, "token_type": "Bearer"})
                    }
                    true => json!({"access_token": entra_token(ENTRA_ISSUER, STORAGE_AUDIENCE, 3600),
                        "expires_on": expires_on.to_string(), "resource": "https://storage.azure.com/",
                        "token_type": "Bearer"}),
                    false => json!({"error": "invalid_request", "error_description": "unexpected request"}),
                };
                let status = if ok { "200 OK" } else { "400 Bad Request" };
                let body = body.to_string();
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        IdentityEndpoint { port, requests }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

/// The status and body of a GET of `url` over https, trusting `ca`, with `token` as a bearer
/// token or without credentials.
fn https_get(url: &str, ca: &std::path::Path, token: Option<&str>) -> (u16, Vec<u8>) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = fhirside_fetch::Client::new(Some(ca)).unwrap();
    let authorization = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("x-ms-version", "2021-08-06")];
    if let Some(value) = &authorization {
        headers.push(("authorization", value.as_str()));
    }
    let response = runtime.block_on(client.get(url, &headers)).unwrap();
    (response.status, response.body)
}

#[test]
fn export_and_import_on_blob_storage_with_a_managed_identity() {
    // Azurite over https takes bearer tokens and checks their issuer, audience and lifetime; its
    // CA is trusted through --authority-ca (here FHIRSIDE_AUTHORITY_CA).
    let blob = azurite_oauth();
    let ca = blob.ca_file.clone().unwrap();
    let ca_path = ca.to_str().unwrap();
    let account_url = format!("https://127.0.0.1:{}/{AZURITE_ACCOUNT}", blob.port);
    let setting = format!("azure-blob:{account_url}");
    let identity = IdentityEndpoint::start();

    // On a VM or AKS node: the system-assigned identity, from the metadata service.
    let authority = format!("http://127.0.0.1:{}", identity.port);
    let source = start(
        &setting,
        &[
            ("FHIRSIDE_BLOB_MANAGED_IDENTITY", "system"),
            ("AZURE_POD_IDENTITY_AUTHORITY_HOST", &authority),
            ("FHIRSIDE_AUTHORITY_CA", ca_path),
        ],
    );
    let (manifest, urls) = load_and_export(&source, "/$export?_container=exports");
    assert_eq!(urls.len(), 2, "{manifest}");
    // One token for the container, the files and their records.
    assert_eq!(identity.requests(), ["imds system"]);

    // The files landed: a valid token reads them, no token or one for another audience does not.
    let good = entra_token(ENTRA_ISSUER, STORAGE_AUDIENCE, 600);
    let other_audience = entra_token(ENTRA_ISSUER, "https://management.azure.com", 600);
    for url in &urls {
        assert!(url.starts_with(&format!("{account_url}/exports/")) && url.ends_with(".ndjson"), "{url}");
        let (status, body) = https_get(url, &ca, Some(&good));
        assert_eq!(status, 200, "{url}: {}", String::from_utf8_lossy(&body));
        let lines: Vec<Value> =
            body.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(|l| serde_json::from_slice(l).unwrap()).collect();
        assert_eq!(lines.len(), 5, "{url}");
        let anonymous = https_get(url, &ca, None).0;
        assert!(matches!(anonymous, 401 | 403 | 404), "an anonymous read answered {anonymous}");
        assert_eq!(https_get(url, &ca, Some(&other_audience)).0, 403, "a token for another audience");
    }

    // On App Service: a user-assigned identity, from the endpoint the platform names.
    let target = start(
        &setting,
        &[
            ("FHIRSIDE_BLOB_MANAGED_IDENTITY", CLIENT_ID),
            ("IDENTITY_ENDPOINT", &format!("http://127.0.0.1:{}/msi/token", identity.port)),
            ("IDENTITY_HEADER", IDENTITY_HEADER),
            ("FHIRSIDE_AUTHORITY_CA", ca_path),
        ],
    );
    import_and_check(&target, &urls);
    assert_eq!(identity.requests(), ["imds system", "app-service user-assigned"]);

    // On AKS with workload identity: the service account token Kubernetes keeps in a file,
    // exchanged at Entra's token endpoint for the identity the pod's service account names.
    let token_file = temp_dir("service-account").join("azure-identity-token");
    std::fs::write(&token_file, SERVICE_ACCOUNT_TOKEN).unwrap();
    let target = start(
        &setting,
        &[
            ("FHIRSIDE_BLOB_MANAGED_IDENTITY", "system"),
            ("AZURE_FEDERATED_TOKEN_FILE", token_file.to_str().unwrap()),
            ("AZURE_CLIENT_ID", CLIENT_ID),
            ("AZURE_TENANT_ID", TENANT),
            ("AZURE_AUTHORITY_HOST", &authority),
            ("FHIRSIDE_AUTHORITY_CA", ca_path),
        ],
    );
    import_and_check(&target, &urls);
    assert_eq!(identity.requests(), ["imds system", "app-service user-assigned", "workload"]);
}

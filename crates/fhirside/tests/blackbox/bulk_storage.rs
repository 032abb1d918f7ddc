//! Bulk data on object storage: `$export` to Azure Blob Storage (Azurite) and to S3 (moto), and
//! `$import` back from there (by the blob's URL, by `s3://`) into another server, and from a plain
//! HTTP URL. The storage servers are real, started here (see `fhirside_objects::testing`).

use std::time::{Duration, Instant};

use fhirside_objects::testing::{azurite, moto_server, AZURITE_ACCOUNT, AZURITE_KEY};
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
    load(&source);
    let status = location(&source, source.request("GET", "/$export?_container=fhir-bulk", &EXPORT, None));
    let manifest = wait(&source, &status);
    let urls: Vec<String> =
        manifest["output"].as_array().unwrap().iter().map(|o| o["url"].as_str().unwrap().to_owned()).collect();
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
    load(&exporter);
    let status = location(&exporter, exporter.request("GET", "/$export", &EXPORT, None));
    let manifest = wait(&exporter, &status);
    let urls: Vec<String> =
        manifest["output"].as_array().unwrap().iter().map(|o| o["url"].as_str().unwrap().to_owned()).collect();
    let target = Server::start_http();
    import_and_check(&target, &urls);
}

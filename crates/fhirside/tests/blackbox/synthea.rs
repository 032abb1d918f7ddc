//! The whole Synthea-120 dataset through `POST /`: the two batch bundles of organizations and
//! practitioners, then 120 patient transactions with `urn:uuid:` and conditional references.
//! Every resource must be stored once and every reference must resolve to a stored resource. Then
//! the bulk round trip: export everything, import it into an empty server, export again.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::harness::Server;

fn dataset() -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/datasets/synthea-120");
    let mut first = Vec::new();
    let mut patients = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    names.sort();
    for path in names {
        let output = Command::new("bzcat").arg(&path).output().expect("bzcat (Debian package bzip2)");
        assert!(output.status.success());
        if path.file_name().unwrap().to_string_lossy().starts_with("0-") {
            first.push(output.stdout);
        } else {
            patients.push(output.stdout);
        }
    }
    (first, patients)
}

/// Resources per type in the files, counted without the server.
fn expected_counts(bundles: &[Vec<u8>]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for bytes in bundles {
        let bundle: Value = serde_json::from_slice(bytes).unwrap();
        for entry in bundle["entry"].as_array().unwrap() {
            *counts.entry(entry["resource"]["resourceType"].as_str().unwrap().to_owned()).or_default() += 1;
        }
    }
    counts
}

fn post_bundle(client: &mut crate::harness::Client, bytes: &[u8]) {
    let response = client.request(
        "POST",
        "/",
        &[("content-type", "application/fhir+json"), ("prefer", "return=minimal")],
        Some(bytes),
    );
    assert_eq!(response.status, 200, "{}", String::from_utf8_lossy(&response.body[..response.body.len().min(2000)]));
    for entry in response.json()["entry"].as_array().unwrap() {
        let status = entry["response"]["status"].as_str().unwrap();
        assert!(status.starts_with("201") || status.starts_with("200"), "{entry}");
    }
}

/// Collects every `reference` string in a resource.
fn references<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("reference", Value::String(s)) => out.push(s),
                    _ => references(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| references(i, out)),
        _ => {}
    }
}

#[test]
fn synthea_120_loads_completely_with_resolved_references() {
    let (first, patients) = dataset();
    assert_eq!(first.len(), 2);
    assert_eq!(patients.len(), 120);
    let mut expected = expected_counts(&first);
    for (t, n) in expected_counts(&patients) {
        *expected.entry(t).or_default() += n;
    }
    assert_eq!(expected.values().sum::<usize>(), 92_114);

    let data = crate::harness::temp_dir("synthea");
    let server = Server::start_in(&data, &["--http", "--max-bundle-entries", "10000", "--max-body-bytes", "67108864"]);
    let mut client = server.client();
    for bundle in &first {
        post_bundle(&mut client, bundle);
    }
    let chunks: Vec<&[Vec<u8>]> = patients.chunks(30).collect();
    std::thread::scope(|scope| {
        for chunk in chunks {
            let mut client = server.client();
            scope.spawn(move || chunk.iter().for_each(|bundle| post_bundle(&mut client, bundle)));
        }
    });

    // Read everything back, type by type, page by page.
    let mut stored: HashSet<String> = HashSet::new();
    let mut all_references = Vec::new();
    let mut bodies = Vec::new();
    for (resource_type, count) in &expected {
        let mut path = format!("/{resource_type}?_count=1000");
        let mut found = 0;
        loop {
            let page = client.request("GET", &path, &[], None).expect(200).json();
            for entry in page["entry"].as_array().into_iter().flatten() {
                let resource = &entry["resource"];
                stored.insert(format!("{resource_type}/{}", resource["id"].as_str().unwrap()));
                found += 1;
            }
            let next = page["link"].as_array().unwrap().iter().find(|l| l["relation"] == "next").cloned();
            bodies.push(page);
            match next {
                Some(next) => path = next["url"].as_str().unwrap().strip_prefix(&server.base).unwrap().to_owned(),
                None => break,
            }
        }
        assert_eq!(found, *count, "{resource_type}: stored once each");
    }
    let mut unresolved_local = Vec::new();
    for page in &bodies {
        for entry in page["entry"].as_array().into_iter().flatten() {
            let resource = &entry["resource"];
            let mut refs = Vec::new();
            references(resource, &mut refs);
            // `#id` points into the resource's own `contained`.
            let contained: HashSet<&str> =
                resource["contained"].as_array().into_iter().flatten().filter_map(|c| c["id"].as_str()).collect();
            for r in refs {
                match r.strip_prefix('#') {
                    Some(local) if !contained.contains(local) => unresolved_local.push(r.to_owned()),
                    Some(_) => {}
                    None => all_references.push(r),
                }
            }
        }
    }
    assert!(unresolved_local.is_empty(), "local references without a contained resource: {unresolved_local:?}");
    assert!(all_references.len() > 100_000, "{} references", all_references.len());
    let unresolved: Vec<&&str> = all_references.iter().filter(|r| !stored.contains(**r)).take(10).collect();
    assert!(unresolved.is_empty(), "references that resolve to nothing: {unresolved:?}");

    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/datasets/synthea-120");
    crate::synthea_search::check_searches(&mut client, &dir);

    // Bulk round trip: export everything, import it into an empty server (IncrementalLoad keeps
    // versions and times), export that: the same resources, byte for byte, and the same searches.
    let (urls, first_export) = export_all(&server);
    assert_eq!(first_export.values().map(Vec::len).sum::<usize>(), 92_114);
    let copy = Server::start_http();
    let mut parameter = vec![
        serde_json::json!({"name": "inputFormat", "valueString": "application/fhir+ndjson"}),
        serde_json::json!({"name": "mode", "valueString": "IncrementalLoad"}),
    ];
    for url in &urls {
        parameter.push(serde_json::json!({"name": "input", "part": [{"name": "url", "valueUri": url}]}));
    }
    let body = serde_json::json!({"resourceType": "Parameters", "parameter": parameter});
    let headers = [("prefer", "respond-async"), ("content-type", "application/fhir+json")];
    let kicked = copy.request("POST", "/$import", &headers, Some(body.to_string().as_bytes())).expect(202);
    let result = wait(&copy, &kicked.header("content-location").unwrap()[copy.base.len()..]);
    assert_eq!(result["error"], serde_json::json!([]), "{result}");
    let (_, second_export) = export_all(&copy);
    for (resource_type, lines) in &first_export {
        assert!(second_export.get(resource_type) == Some(lines), "{resource_type}: the round trip changed it");
    }
    assert_eq!(first_export.len(), second_export.len());
    crate::synthea_search::check_searches(&mut copy.client(), &dir);
}

/// Polls a bulk status URL (a path) until its `200`.
fn wait(server: &Server, status: &str) -> Value {
    let started = std::time::Instant::now();
    loop {
        let response = server.get(status);
        if response.status == 200 {
            return response.json();
        }
        assert_eq!(response.status, 202, "{}", String::from_utf8_lossy(&response.body));
        assert!(started.elapsed() < std::time::Duration::from_secs(900), "the bulk job did not finish");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A system-level export: its files' URLs, and its resources per type (the NDJSON lines, sorted).
fn export_all(server: &Server) -> (Vec<String>, HashMap<String, Vec<String>>) {
    let headers = [("prefer", "respond-async"), ("accept", "application/fhir+json")];
    let kicked = server.request("GET", "/$export", &headers, None).expect(202);
    let manifest = wait(server, &kicked.header("content-location").unwrap()[server.base.len()..]);
    let mut lines: HashMap<String, Vec<String>> = HashMap::new();
    let mut urls = Vec::new();
    for output in manifest["output"].as_array().unwrap() {
        urls.push(output["url"].as_str().unwrap().to_owned());
        let path = &output["url"].as_str().unwrap()[server.base.len()..];
        let body = String::from_utf8(server.get(path).expect(200).body).unwrap();
        let resource_type = output["type"].as_str().unwrap().to_owned();
        lines.entry(resource_type).or_default().extend(body.lines().map(str::to_owned));
    }
    for sorted in lines.values_mut() {
        sorted.sort();
    }
    (urls, lines)
}

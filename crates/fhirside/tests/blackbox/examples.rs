//! Every example resource of the R4 specification through the whole lifecycle, and broken variants
//! of each rejected.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{json, Value};

use crate::harness::{temp_dir, without_server_meta, Client, Server};

/// The spec's examples, unpacked from `../shared/fhir-r4/examples.tar.gz`.
fn examples() -> Vec<(String, Value)> {
    let archive = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fhir-r4/examples.tar.gz");
    assert!(archive.exists(), "{} is missing: these tests need ../shared beside the repository", archive.display());
    let dir = temp_dir("examples");
    let status = Command::new("tar").arg("xzf").arg(&archive).arg("-C").arg(&dir).status().unwrap();
    assert!(status.success());
    let mut files = Vec::new();
    let mut stack = vec![dir.clone()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "json") {
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                let text = std::fs::read(&path).unwrap();
                if let Ok(value) = serde_json::from_slice::<Value>(&text) {
                    if value.get("resourceType").is_some() {
                        files.push((name, value));
                    }
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    files.sort_by(|a, b| a.0.cmp(&b.0));
    files
}

/// Spec examples that break the R4 definitions themselves (the `fhir` crate's tests explain each):
/// they must be refused, pointing at what is wrong, rather than stored.
const KNOWN_INVALID: &[(&str, &str)] =
    &[("Questionnaire-qs1.json", "Questionnaire.item[0].item[0].linkId"), ("ig-r4.json", "ImplementationGuide.status")];

/// The example as it should read back: the server's id and no server-managed meta.
fn expected(example: &Value, id: &str) -> Value {
    let mut e = without_server_meta(example.clone());
    e["id"] = json!(id);
    e
}

fn lifecycle(client: &mut Client, name: &str, example: &Value) -> Result<(), String> {
    let t = example["resourceType"].as_str().unwrap();
    let ct = [("content-type", "application/fhir+json")];
    let body = example.to_string();
    let created = client.request("POST", &format!("/{t}"), &ct, Some(body.as_bytes()));
    if let Some((_, expression)) = KNOWN_INVALID.iter().find(|(file, _)| *file == name) {
        let pointed = created.status == 400 && created.diagnostics().contains(&format!("\"{expression}\""));
        return if pointed { Ok(()) } else { Err(format!("{name}: known invalid, but answered {}", created.status)) };
    }
    if created.status != 201 {
        return Err(format!("{name}: create answered {}: {}", created.status, String::from_utf8_lossy(&created.body)));
    }
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let read = client.request("GET", &format!("/{t}/{id}"), &[], None);
    if read.status != 200 || without_server_meta(read.json()) != expected(example, &id) {
        return Err(format!("{name}: read back differs"));
    }
    let mut update = example.clone();
    update["id"] = json!(id);
    let updated = client.request("PUT", &format!("/{t}/{id}"), &ct, Some(update.to_string().as_bytes()));
    if updated.status != 200 || updated.header("etag") != Some("W/\"2\"") {
        return Err(format!("{name}: update answered {}", updated.status));
    }
    if client.request("DELETE", &format!("/{t}/{id}"), &[], None).status != 204 {
        return Err(format!("{name}: delete failed"));
    }
    if client.request("GET", &format!("/{t}/{id}"), &[], None).status != 410 {
        return Err(format!("{name}: read after delete is not 410"));
    }
    let history = client.request("GET", &format!("/{t}/{id}/_history"), &[], None).json();
    let entries = history["entry"].as_array().map_or(0, Vec::len);
    let v1 = client.request("GET", &format!("/{t}/{id}/_history/1"), &[], None);
    if entries != 3 || v1.status != 200 || without_server_meta(v1.json()) != expected(example, &id) {
        return Err(format!("{name}: history has {entries} entries or version 1 differs"));
    }
    Ok(())
}

/// Broken variants: each must be refused with a 400 whose OperationOutcome points at the problem.
fn broken_variants(client: &mut Client, name: &str, example: &Value) -> Result<(), String> {
    let t = example["resourceType"].as_str().unwrap();
    let ct = [("content-type", "application/fhir+json")];
    let mut variants: Vec<(&str, Value, String)> = Vec::new();

    let mut unknown = example.clone();
    unknown["fhirsideUnknownElement"] = json!(true);
    variants.push(("unknown element", unknown, format!("{t}.fhirsideUnknownElement")));

    let mut empty = example.clone();
    empty["language"] = json!("");
    variants.push(("empty string", empty, format!("{t}.language")));

    let mut bad_meta = example.clone();
    bad_meta["meta"] = json!({"lastUpdated": "yesterday"});
    variants.push(("bad instant", bad_meta, format!("{t}.meta.lastUpdated")));

    let mut wrong_type = example.clone();
    wrong_type["implicitRules"] = json!(42);
    variants.push(("number for a uri", wrong_type, format!("{t}.implicitRules")));

    for (what, variant, expression) in variants {
        let response = client.request("POST", &format!("/{t}"), &ct, Some(variant.to_string().as_bytes()));
        if response.status != 400 {
            return Err(format!("{name} with {what}: answered {}", response.status));
        }
        let outcome = response.json();
        let pointed = outcome["issue"].as_array().is_some_and(|issues| {
            issues
                .iter()
                .any(|i| i["expression"].as_array().is_some_and(|e| e.iter().any(|e| e == expression.as_str())))
        });
        if !pointed {
            return Err(format!("{name} with {what}: no issue at {expression}: {outcome}"));
        }
    }
    Ok(())
}

#[test]
fn every_spec_example_lives_and_dies() {
    let examples = examples();
    assert!(examples.len() >= 700, "found {} examples", examples.len());
    let server = Server::start();
    let chunks: Vec<Vec<(String, Value)>> = examples.chunks(examples.len().div_ceil(4)).map(<[_]>::to_vec).collect();
    let failures: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .iter()
            .map(|chunk| {
                let mut client = server.client();
                scope.spawn(move || {
                    let mut failures = Vec::new();
                    for (name, example) in chunk {
                        if let Err(e) = lifecycle(&mut client, name, example) {
                            failures.push(e);
                        }
                        if let Err(e) = broken_variants(&mut client, name, example) {
                            failures.push(e);
                        }
                    }
                    failures
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert!(failures.is_empty(), "{} of {} examples failed:\n{}", failures.len(), examples.len(), failures.join("\n"));
    // Rejected variants stored nothing: exactly the lifecycle's three versions per example exist.
    let mut path = "/_history?_count=1000".to_owned();
    let mut versions = 0;
    loop {
        let page = server.get(&path).expect(200).json();
        versions += page["entry"].as_array().map_or(0, Vec::len);
        match page["link"].as_array().unwrap().iter().find(|l| l["relation"] == "next") {
            Some(next) => path = next["url"].as_str().unwrap().strip_prefix(&server.base).unwrap().to_owned(),
            None => break,
        }
    }
    assert_eq!(versions, 3 * (examples.len() - KNOWN_INVALID.len()));
}

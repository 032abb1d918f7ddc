//! `$import` (Azure's operation): inputs from local files and from this server's exports,
//! `InitialLoad` and `IncrementalLoad`, bad lines reported without stopping the good ones, the
//! status protocol, roles, and a crash mid-way.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{match_ids, temp_dir, Response, Server};

fn parameters(mode: &str, inputs: &[(Option<&str>, String)]) -> Value {
    let mut parameter = vec![
        json!({"name": "inputFormat", "valueString": "application/fhir+ndjson"}),
        json!({"name": "mode", "valueString": mode}),
    ];
    for (resource_type, url) in inputs {
        let mut part = vec![json!({"name": "url", "valueUri": url})];
        if let Some(t) = resource_type {
            part.push(json!({"name": "type", "valueString": t}));
        }
        parameter.push(json!({"name": "input", "part": part}));
    }
    json!({"resourceType": "Parameters", "parameter": parameter})
}

fn kick_off(server: &Server, body: &Value, token: Option<&str>) -> Response {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("prefer", "respond-async"), ("content-type", "application/fhir+json")];
    if let Some(bearer) = &bearer {
        headers.push(("authorization", bearer));
    }
    server.request("POST", "/$import", &headers, Some(body.to_string().as_bytes()))
}

fn status_path(server: &Server, response: Response) -> String {
    let response = response.expect(202);
    response.header("content-location").expect("a Content-Location")[server.base.len()..].to_owned()
}

/// Polls until the import's result comes.
fn outcome_of(server: &Server, status: &str) -> Value {
    let started = Instant::now();
    loop {
        let response = server.get(status);
        match response.status {
            200 => return response.json(),
            202 => assert!(response.header("x-progress").is_some()),
            other => panic!("status {other}: {}", String::from_utf8_lossy(&response.body)),
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the import did not finish in 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn counts(result: &Value) -> Vec<(String, u64)> {
    let mut counts: Vec<(String, u64)> = result["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["type"].as_str().unwrap().to_owned(), o["count"].as_u64().unwrap()))
        .collect();
    counts.sort();
    counts
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

fn server_with_root(root: &Path) -> Server {
    Server::start_in(&temp_dir("data"), &["--http", "--import-root", root.to_str().unwrap()])
}

#[test]
fn an_initial_load_imports_the_good_lines_and_reports_the_bad_ones() {
    let root = temp_dir("import-root");
    let patients = root.join("patients.ndjson");
    write_lines(
        &patients,
        &[
            json!({"resourceType": "Patient", "id": "p1", "name": [{"family": "Importa"}]}).to_string(),
            json!({"resourceType": "Patient", "id": "p2", "name": [{"family": "Importb"}], "meta": {"versionId": "7"}})
                .to_string(),
            json!({"resourceType": "Patient", "name": [{"family": "Noid"}]}).to_string(),
            json!({"resourceType": "Patient", "id": "bad", "birthDate": "not-a-date"}).to_string(),
            "{ this is not json".to_owned(),
            String::new(),
            json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}}).to_string(),
        ],
    );
    let observations = root.join("observations.ndjson");
    let observation = |i: usize, patient: &str| {
        json!({"resourceType": "Observation", "id": format!("o{i}"), "status": "final",
               "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
               "subject": {"reference": format!("Patient/{patient}")}})
        .to_string()
    };
    write_lines(&observations, &(0..5).map(|i| observation(i, if i < 3 { "p1" } else { "p2" })).collect::<Vec<_>>());

    let server = server_with_root(&root);
    let body = parameters(
        "InitialLoad",
        &[(Some("Patient"), format!("file://{}", patients.display())), (None, observations.display().to_string())],
    );
    let status = status_path(&server, kick_off(&server, &body, None));
    let result = outcome_of(&server, &status);
    assert_eq!(counts(&result), [("Observation".to_owned(), 5), ("Patient".to_owned(), 3)]);
    assert!(result["transactionTime"].is_string() && result["request"].is_string());
    // The three bad lines (an invalid Patient, broken JSON, an Observation in a Patient input)
    // are reported with their line numbers, in the first input's error file.
    let errors = result["error"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{result}");
    assert_eq!(errors[0]["count"], 3);
    assert_eq!(errors[0]["inputUrl"], format!("file://{}", patients.display()));
    let file = server.get(&errors[0]["url"].as_str().unwrap()[server.base.len()..]).expect(200);
    let lines: Vec<Value> =
        String::from_utf8(file.body).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let diagnostics: Vec<&str> = lines.iter().map(|o| o["issue"][0]["diagnostics"].as_str().unwrap()).collect();
    assert!(diagnostics[0].starts_with("Line 4: ") && diagnostics[0].contains("birthDate"), "{diagnostics:?}");
    assert!(diagnostics[1].starts_with("Line 5: ") && diagnostics[1].contains("JSON"), "{diagnostics:?}");
    assert!(diagnostics[2].starts_with("Line 7: ") && diagnostics[2].contains("Observation"), "{diagnostics:?}");

    // Imported as writes are: versions from 1 (InitialLoad ignores versionId), searchable at once.
    let p2 = server.get("/Patient/p2").expect(200).json();
    assert_eq!(p2["meta"]["versionId"], "1");
    server.get("/Patient/bad").expect(404);
    let found = server.get("/Observation?subject=Patient/p1&code=8867-4").expect(200).json();
    assert_eq!(match_ids(&found).len(), 3);
    assert_eq!(match_ids(&server.get("/Patient?family=Noid").expect(200).json()).len(), 1);

    // The same import again changes nothing: every resource with an id is already there as it is
    // (a line without one is a new resource each time it is imported, as a create would be).
    let status = status_path(&server, kick_off(&server, &body, None));
    let again = outcome_of(&server, &status);
    assert_eq!(counts(&again), counts(&result));
    let history = server.get("/Patient/p1/_history").expect(200).json();
    assert_eq!(history["entry"].as_array().unwrap().len(), 1, "no second version: {history}");
    assert_eq!(match_ids(&server.get("/Patient?family=Noid").expect(200).json()).len(), 2);

    // Discarding the finished import removes its status and error files.
    server.delete(&status).expect(202);
    server.get(&status).expect(404);
}

#[test]
fn an_incremental_load_keeps_versions_and_times() {
    let root = temp_dir("import-root");
    let file = root.join("history.ndjson");
    let version = |v: u32, at: &str, family: &str| {
        json!({"resourceType": "Patient", "id": "h1", "meta": {"versionId": v.to_string(), "lastUpdated": at},
               "name": [{"family": family}]})
        .to_string()
    };
    write_lines(
        &file,
        &[
            version(1, "2020-01-01T00:00:00Z", "First"),
            version(2, "2021-06-01T12:00:00Z", "Second"),
            // Older than the current version with other content: refused, not rewritten.
            version(1, "2019-01-01T00:00:00Z", "Rewritten"),
        ],
    );
    let server = server_with_root(&root);
    let body = parameters("IncrementalLoad", &[(Some("Patient"), file.display().to_string())]);
    let result = outcome_of(&server, &status_path(&server, kick_off(&server, &body, None)));
    assert_eq!(counts(&result), [("Patient".to_owned(), 2)]);
    assert_eq!(result["error"][0]["count"], 1);
    let current = server.get("/Patient/h1").expect(200).json();
    assert_eq!(current["meta"]["versionId"], "2");
    assert!(current["meta"]["lastUpdated"].as_str().unwrap().starts_with("2021-06-01T12:00:00"), "{current}");
    assert_eq!(current["name"][0]["family"], "Second");
    let first = server.get("/Patient/h1/_history/1").expect(200).json();
    assert_eq!(first["name"][0]["family"], "First");
    assert!(first["meta"]["lastUpdated"].as_str().unwrap().starts_with("2020-01-01T00:00:00"));
    // Searchable as of its current version.
    assert_eq!(match_ids(&server.get("/Patient?family=Second").expect(200).json()), ["h1"]);
    assert!(match_ids(&server.get("/Patient?family=First").expect(200).json()).is_empty());
}

#[test]
fn an_export_imports_back_unchanged() {
    let server = Server::start_http();
    for i in 0..3 {
        server
            .post_json("/Patient", &json!({"resourceType": "Patient", "name": [{"family": format!("Round{i}")}]}))
            .expect(201);
    }
    let kicked = server.request(
        "GET",
        "/$export?_type=Patient",
        &[("prefer", "respond-async"), ("accept", "application/fhir+json")],
        None,
    );
    let export_status = kicked.expect(202).header("content-location").unwrap()[server.base.len()..].to_owned();
    let manifest = loop {
        let response = server.get(&export_status);
        if response.status == 200 {
            break response.json();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let inputs: Vec<(Option<&str>, String)> = manifest["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (Some("Patient"), o["url"].as_str().unwrap().to_owned()))
        .collect();
    let result =
        outcome_of(&server, &status_path(&server, kick_off(&server, &parameters("IncrementalLoad", &inputs), None)));
    assert_eq!(counts(&result), [("Patient".to_owned(), 3)]);
    assert_eq!(result["error"], json!([]));
    let all = server.get("/Patient/_history").expect(200).json();
    assert_eq!(all["entry"].as_array().unwrap().len(), 3, "each patient still has one version");
}

#[test]
fn every_invalid_kick_off_is_a_400_and_importing_needs_the_importer_role() {
    let root = temp_dir("import-root");
    write_lines(&root.join("in.ndjson"), &[json!({"resourceType": "Patient"}).to_string()]);
    let server = server_with_root(&root);
    let good = parameters("InitialLoad", &[(None, root.join("in.ndjson").display().to_string())]);
    let bad = |body: &Value, headers: &[(&str, &str)], needle: &str| {
        let response = server.request("POST", "/$import", headers, Some(body.to_string().as_bytes()));
        assert_eq!(response.status, 400, "{needle}: {}", String::from_utf8_lossy(&response.body));
        let diagnostics = response.json()["issue"][0]["diagnostics"].as_str().unwrap().to_owned();
        assert!(diagnostics.contains(needle), "{needle}: {diagnostics}");
    };
    let json_async = [("prefer", "respond-async"), ("content-type", "application/fhir+json")];
    bad(&good, &[("content-type", "application/fhir+json")], "respond-async");
    let mut format = good.clone();
    format["parameter"][0]["valueString"] = json!("text/csv");
    bad(&format, &json_async, "inputFormat");
    let mut mode = good.clone();
    mode["parameter"][1]["valueString"] = json!("Sometimes");
    bad(&mode, &json_async, "mode");
    bad(&parameters("InitialLoad", &[]), &json_async, "at least one input");
    bad(&parameters("InitialLoad", &[(None, "/etc/passwd".into())]), &json_async, "--import-root");
    bad(&parameters("InitialLoad", &[(None, "ftp://elsewhere.example/x.ndjson".into())]), &json_async, "input[0]");
    bad(&parameters("InitialLoad", &[(None, "relative/x.ndjson".into())]), &json_async, "https URL");
    bad(&parameters("InitialLoad", &[(Some("Unicorn"), "/x".into())]), &json_async, "Unicorn");
    bad(&json!({"resourceType": "Patient"}), &json_async, "Parameters");
    server.get("/_operations/import/no-such-job").expect(404);

    let secure = Server::start_secure(&["--import-root", root.to_str().unwrap()]);
    let (reader, secret, _) = secure.create_app("Reader", &["FHIR Data Reader"]);
    let reader = secure.token(&reader, &secret);
    let (importer, secret, _) = secure.create_app("Importer", &["FHIR Data Importer"]);
    let importer = secure.token(&importer, &secret);
    kick_off(&secure, &good, Some(&reader)).expect(403);
    kick_off(&secure, &good, None).expect(401);
    kick_off(&secure, &good, Some(&importer)).expect(202);
}

#[test]
fn an_import_interrupted_by_a_crash_resumes_without_duplicates() {
    let root = temp_dir("import-root");
    let file = root.join("many.ndjson");
    let lines: Vec<String> = (0..6000)
        .map(|i| {
            json!({"resourceType": "Patient", "name": [{"family": format!("Many{i}")}], "active": true}).to_string()
        })
        .collect();
    write_lines(&file, &lines);
    let mut server = Server::start_in(
        &temp_dir("data"),
        &["--http", "--import-root", root.to_str().unwrap(), "--job-lease-seconds", "2"],
    );
    let status = status_path(
        &server,
        kick_off(&server, &parameters("InitialLoad", &[(None, file.display().to_string())]), None),
    );
    let started = Instant::now();
    loop {
        let response = server.get(&status);
        assert_ne!(response.status, 200, "the import finished before it could be interrupted; make it larger");
        let progress = response.header("x-progress").unwrap_or("").to_owned();
        if progress.starts_with("imported") && !progress.starts_with("imported 0 ") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no progress: {progress}");
        std::thread::sleep(Duration::from_millis(5));
    }
    server.restart();
    let result = outcome_of(&server, &status);
    assert_eq!(counts(&result), [("Patient".to_owned(), 6000)]);
    let total = server.get("/Patient?_summary=count").expect(200).json();
    assert_eq!(total["total"], 6000, "no resource twice");
    // The search indexes the load deferred were built when the store reopened, or when it ended.
    let found = server.get("/Patient?family=Many5999&active=true").expect(200).json();
    assert_eq!(match_ids(&found).len(), 1, "{found}");
    // Every version in the history is a first one: no line was written twice.
    let mut page = Some("/Patient/_history?_count=1000".to_owned());
    let mut versions = 0;
    while let Some(path) = page {
        let bundle = server.get(&path).expect(200).json();
        for entry in bundle["entry"].as_array().unwrap() {
            assert_eq!(entry["resource"]["meta"]["versionId"], "1", "{entry}");
            versions += 1;
        }
        page = bundle["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
            .map(|l| l["url"].as_str().unwrap()[server.base.len()..].to_owned());
    }
    assert_eq!(versions, 6000);
}

/// `includeAssociatedData=_deleted` exports a deleted resource's last version with Azure's
/// soft-deleted mark; an import of it stores that version and deletes the resource after it, and
/// importing the same file again changes nothing.
#[test]
fn deleted_resources_go_through_export_and_import_as_soft_deleted() {
    let source = Server::start_http();
    let kept = source.post_json("/Patient", &json!({"resourceType": "Patient", "name": [{"family": "Kept"}]}));
    let kept = kept.expect(201).json()["id"].as_str().unwrap().to_owned();
    let gone = source.post_json("/Patient", &json!({"resourceType": "Patient", "name": [{"family": "Gone"}]}));
    let gone = gone.expect(201).json()["id"].as_str().unwrap().to_owned();
    let renamed = json!({"resourceType": "Patient", "id": gone, "name": [{"family": "Renamed"}]});
    source.put_json(&format!("/Patient/{gone}"), &renamed).expect(200);
    source.request("DELETE", &format!("/Patient/{gone}"), &[], None).expect(204);

    let async_headers = [("prefer", "respond-async"), ("accept", "application/fhir+json")];
    let export = |query: &str| -> Vec<Value> {
        let kicked = source.request("GET", &format!("/$export?{query}"), &async_headers, None);
        let status = kicked.expect(202).header("content-location").unwrap()[source.base.len()..].to_owned();
        let manifest = loop {
            let response = source.get(&status);
            if response.status == 200 {
                break response.json();
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut lines = Vec::new();
        for output in manifest["output"].as_array().unwrap() {
            let body = source.get(&output["url"].as_str().unwrap()[source.base.len()..]).expect(200).body;
            lines.extend(String::from_utf8(body).unwrap().lines().map(|l| serde_json::from_str::<Value>(l).unwrap()));
        }
        lines
    };
    let mark =
        json!({"url": "http://azurehealthcareapis.com/data-extensions/deleted-state", "valueString": "soft-deleted"});
    assert_eq!(export("_type=Patient").len(), 1, "without _deleted, only what exists");
    let lines = export("_type=Patient&includeAssociatedData=_deleted");
    assert_eq!(lines.len(), 2);
    let exported_gone = lines.iter().find(|l| l["id"] == gone.as_str()).unwrap();
    assert_eq!(exported_gone["meta"]["versionId"], "2");
    assert_eq!(exported_gone["name"][0]["family"], "Renamed");
    assert_eq!(exported_gone["meta"]["extension"], json!([mark]));
    let exported_kept = lines.iter().find(|l| l["id"] == kept.as_str()).unwrap();
    assert!(exported_kept["meta"].get("extension").is_none());
    // As Azure's service: a filter judges current versions, which these are not.
    let refused = source.request(
        "GET",
        "/$export?_type=Patient&_typeFilter=Patient%3Fname%3DKept&includeAssociatedData=_deleted",
        &async_headers,
        None,
    );
    assert_eq!(refused.status, 400);

    let root = temp_dir("import-root");
    let file = root.join("Patient.ndjson");
    write_lines(&file, &lines.iter().map(Value::to_string).collect::<Vec<_>>());
    let target = server_with_root(&root);
    let url = format!("file://{}", file.display());
    for _ in 0..2 {
        let status =
            status_path(&target, kick_off(&target, &parameters("IncrementalLoad", &[(None, url.clone())]), None));
        let result = outcome_of(&target, &status);
        assert_eq!(counts(&result), [("Patient".to_owned(), 2)]);
        assert_eq!(result["error"], json!([]));
        // Each time: the kept patient as it was, the other deleted after its version 2.
        target.get(&format!("/Patient/{kept}")).expect(200);
        assert_eq!(target.get(&format!("/Patient/{gone}")).status, 410);
        let version = target.get(&format!("/Patient/{gone}/_history/2")).expect(200).json();
        assert_eq!(version["name"][0]["family"], "Renamed");
        assert!(version["meta"].get("extension").is_none(), "the mark is not content: {version}");
        let history = target.get(&format!("/Patient/{gone}/_history")).expect(200).json();
        assert_eq!(history["entry"].as_array().unwrap().len(), 2, "{history}");
    }
}

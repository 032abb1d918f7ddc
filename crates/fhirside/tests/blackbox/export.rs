//! Bulk `$export` (Bulk Data Access IG 2.0, Azure's additions): the kick-off, the status protocol,
//! the manifest and its NDJSON files, levels and filters, cancellation, roles, and a crash mid-way.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{Response, Server};

const ASYNC: [(&str, &str); 2] = [("prefer", "respond-async"), ("accept", "application/fhir+json")];

/// Kicks off `path` (GET) and returns the status URL's path.
fn kick_off(server: &Server, path: &str, token: Option<&str>) -> String {
    let response = request(server, "GET", path, token, None).expect(202);
    let location = response.header("content-location").expect("a Content-Location").to_owned();
    assert!(location.starts_with(&format!("{}/_operations/export/", server.base)), "{location}");
    location[server.base.len()..].to_owned()
}

fn request(server: &Server, method: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> Response {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers: Vec<(&str, &str)> = ASYNC.to_vec();
    if let Some(bearer) = &bearer {
        headers.push(("authorization", bearer));
    }
    if body.is_some() {
        headers.push(("content-type", "application/fhir+json"));
    }
    let body = body.map(|b| b.to_string().into_bytes());
    server.request(method, path, &headers, body.as_deref())
}

/// Polls the status URL until the manifest comes; checks the `202`s on the way.
fn manifest_of(server: &Server, status: &str, token: Option<&str>) -> Value {
    let started = Instant::now();
    loop {
        let response = request(server, "GET", status, token, None);
        match response.status {
            200 => return response.json(),
            202 => {
                assert!(response.header("x-progress").is_some(), "a 202 carries X-Progress");
                assert!(response.header("retry-after").is_some(), "a 202 carries Retry-After");
            }
            other => panic!("status {other}: {}", String::from_utf8_lossy(&response.body)),
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the export did not finish in 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every output file's resources, by type, fetched from the manifest's URLs.
fn files(server: &Server, manifest: &Value, token: Option<&str>) -> BTreeMap<String, Vec<Value>> {
    let mut by_type: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for output in manifest["output"].as_array().unwrap() {
        let url = output["url"].as_str().unwrap();
        let path = url.strip_prefix(&server.base).unwrap_or_else(|| panic!("served here: {url}"));
        let response = request(server, "GET", path, token, None).expect(200);
        assert_eq!(response.header("content-type"), Some("application/fhir+ndjson"));
        let text = String::from_utf8(response.body).unwrap();
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).expect("one resource per line")).collect();
        assert_eq!(lines.len() as u64, output["count"].as_u64().unwrap(), "{url}: count");
        let resource_type = output["type"].as_str().unwrap();
        assert!(lines.iter().all(|r| r["resourceType"] == resource_type), "{url} holds {resource_type} only");
        by_type.entry(resource_type.to_owned()).or_default().extend(lines);
    }
    by_type
}

fn ids(resources: &[Value]) -> BTreeSet<String> {
    resources.iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect()
}

/// Writes `patients` patients with `per_patient` Observations each (code `probe-{i % 2}`) in one
/// transaction; returns the patient ids.
fn load(server: &Server, patients: usize, per_patient: usize) -> Vec<String> {
    let mut entries = Vec::new();
    for p in 0..patients {
        let full_url = format!("urn:uuid:00000000-0000-4000-8000-{p:012}");
        entries.push(json!({"fullUrl": full_url, "request": {"method": "POST", "url": "Patient"},
            "resource": {"resourceType": "Patient", "name": [{"family": format!("Export{p}")}]}}));
        for o in 0..per_patient {
            entries.push(json!({"request": {"method": "POST", "url": "Observation"}, "resource": {
                "resourceType": "Observation", "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": format!("probe-{}", o % 2)}]},
                "subject": {"reference": full_url}}}));
        }
    }
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
    let response = server.post_json("/", &bundle).expect(200).json();
    response["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["response"]["location"].as_str())
        .filter_map(|l| l.split_once("Patient/"))
        .map(|(_, rest)| rest.split('/').next().unwrap().to_owned())
        .collect()
}

#[test]
fn a_system_export_writes_each_type_as_it_was_at_the_transaction_time() {
    let server = Server::start_in(&crate::harness::temp_dir("data"), &["--http", "--export-file-bytes", "4096"]);
    let patients = load(&server, 12, 5);
    let before = server.get("/Observation?_count=1").expect(200).json();
    let changed = before["entry"][0]["resource"].clone();

    let status = kick_off(&server, "/$export", None);
    // Written after the kick-off: neither may appear in the export.
    let mut updated = changed.clone();
    updated["status"] = json!("amended");
    server.put_json(&format!("/Observation/{}", changed["id"].as_str().unwrap()), &updated).expect(200);
    let late = server.post_json("/Patient", &json!({"resourceType": "Patient", "active": true})).expect(201).json();

    let manifest = manifest_of(&server, &status, None);
    assert!(manifest["transactionTime"].as_str().unwrap().ends_with('Z'), "{manifest}");
    assert_eq!(manifest["request"], format!("{}/$export", server.base));
    assert_eq!(manifest["requiresAccessToken"], false, "no authentication, no token");
    assert_eq!(manifest["error"], json!([]));
    let exported = files(&server, &manifest, None);
    assert_eq!(exported.keys().collect::<Vec<_>>(), ["Observation", "Patient"], "no files for empty types");
    assert_eq!(ids(&exported["Patient"]), patients.iter().cloned().collect());
    assert!(!ids(&exported["Patient"]).contains(late["id"].as_str().unwrap()));
    assert_eq!(exported["Observation"].len(), 60);
    assert_eq!(ids(&exported["Observation"]).len(), 60, "each resource once");
    let as_exported = exported["Observation"].iter().find(|o| o["id"] == changed["id"]).unwrap();
    assert_eq!(as_exported["meta"]["versionId"], "1", "the version current at the transaction time");
    assert_eq!(as_exported["status"], "final");
    // 4 KiB files: the Observations took several, numbered in order.
    let observation_files: Vec<&str> = manifest["output"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["type"] == "Observation")
        .map(|o| o["url"].as_str().unwrap())
        .collect();
    assert!(observation_files.len() > 2, "{observation_files:?}");
    assert!(
        observation_files[0].ends_with("/Observation-1.ndjson")
            && observation_files[1].ends_with("/Observation-2.ndjson")
    );

    // A second export starts from the new state.
    let second = manifest_of(&server, &kick_off(&server, "/$export?_type=Patient", None), None);
    let exported = files(&server, &second, None);
    assert!(ids(&exported["Patient"]).contains(late["id"].as_str().unwrap()));
}

#[test]
fn levels_filters_and_elements() {
    let server = Server::start_http();
    let patients = load(&server, 3, 4);
    server.post_json("/Practitioner", &json!({"resourceType": "Practitioner", "active": true})).expect(201);
    let group = json!({"resourceType": "Group", "type": "person", "actual": true,
        "member": [{"entity": {"reference": format!("Patient/{}", patients[0])}}]});
    let group = server.post_json("/Group", &group).expect(201).json();

    // Group level: the member's compartment only (the Group is in it: it names the patient), and
    // never Practitioners.
    let status = kick_off(&server, &format!("/Group/{}/$export", group["id"].as_str().unwrap()), None);
    let exported = files(&server, &manifest_of(&server, &status, None), None);
    assert_eq!(ids(&exported["Patient"]), [patients[0].clone()].into());
    assert_eq!(exported["Observation"].len(), 4);
    assert!(!exported.contains_key("Practitioner"));
    assert_eq!(ids(&exported["Group"]), [group["id"].as_str().unwrap().to_owned()].into());

    // Patient level with _typeFilter: every patient's, matching one of the queries.
    let status = kick_off(&server, "/Patient/$export?_type=Observation&_typeFilter=Observation%3Fcode%3Dprobe-1", None);
    let exported = files(&server, &manifest_of(&server, &status, None), None);
    assert_eq!(exported["Observation"].len(), 6);
    assert!(exported["Observation"].iter().all(|o| o["code"]["coding"][0]["code"] == "probe-1"));

    // POST with Parameters: the patient parameter picks patients; _elements trims.
    let parameters = json!({"resourceType": "Parameters", "parameter": [
        {"name": "_type", "valueString": "Patient,Observation"},
        {"name": "patient", "valueReference": {"reference": format!("Patient/{}", patients[1])}},
        {"name": "_elements", "valueString": "Observation.status,name"},
    ]});
    let response = request(&server, "POST", "/Patient/$export", None, Some(&parameters)).expect(202);
    let status = response.header("content-location").unwrap()[server.base.len()..].to_owned();
    let exported = files(&server, &manifest_of(&server, &status, None), None);
    assert_eq!(ids(&exported["Patient"]), [patients[1].clone()].into());
    let observation = &exported["Observation"][0];
    assert_eq!(observation["status"], "final");
    assert!(observation.get("code").is_none() && observation.get("subject").is_none(), "{observation}");
    assert!(observation["meta"]["tag"].as_array().unwrap().iter().any(|t| t["code"] == "SUBSETTED"));
    assert!(exported["Patient"][0].get("name").is_some());

    // _since: only what changed since.
    // The server's clock marks the instant: a Patient written now (the export is of Observations).
    let marker = server.post_json("/Patient", &json!({"resourceType": "Patient"})).expect(201).json();
    let mark = marker["meta"]["lastUpdated"].as_str().unwrap().replace('+', "%2B");
    std::thread::sleep(Duration::from_millis(20));
    let fresh = server
        .post_json(
            "/Observation",
            &json!({"resourceType": "Observation", "status": "final",
        "code": {"text": "fresh"}, "subject": {"reference": format!("Patient/{}", patients[2])}}),
        )
        .expect(201)
        .json();
    let status = kick_off(&server, &format!("/$export?_type=Observation&_since={mark}"), None);
    let exported = files(&server, &manifest_of(&server, &status, None), None);
    assert_eq!(ids(&exported["Observation"]), [fresh["id"].as_str().unwrap().to_owned()].into());

    // includeAssociatedData=_history: every version.
    let mut updated = fresh.clone();
    updated["status"] = json!("amended");
    server.put_json(&format!("/Observation/{}", fresh["id"].as_str().unwrap()), &updated).expect(200);
    let status =
        kick_off(&server, &format!("/$export?_type=Observation&_since={mark}&includeAssociatedData=_history"), None);
    let exported = files(&server, &manifest_of(&server, &status, None), None);
    let versions: BTreeSet<&str> =
        exported["Observation"].iter().map(|o| o["meta"]["versionId"].as_str().unwrap()).collect();
    assert_eq!(versions, ["1", "2"].into());
}

#[test]
fn every_invalid_kick_off_is_a_400_with_an_operation_outcome() {
    let server = Server::start_http();
    let bad = |path: &str, headers: &[(&str, &str)], needle: &str| {
        let response = server.request("GET", path, headers, None);
        assert_eq!(response.status, 400, "{path}: {}", String::from_utf8_lossy(&response.body));
        let outcome = response.json();
        assert_eq!(outcome["resourceType"], "OperationOutcome");
        let diagnostics = outcome["issue"][0]["diagnostics"].as_str().unwrap();
        assert!(diagnostics.contains(needle), "{path}: {diagnostics}");
    };
    bad("/$export", &[("accept", "application/fhir+json")], "respond-async");
    bad("/$export", &[("prefer", "respond-async")], "application/fhir+json");
    bad("/$export", &[("prefer", "respond-async"), ("accept", "text/html")], "application/fhir+json");
    bad("/$export?_type=Patient,Unicorn", &ASYNC, "Unicorn");
    bad("/$export?_since=yesterday", &ASYNC, "_since");
    bad("/$export?_outputFormat=text/csv", &ASYNC, "_outputFormat");
    bad("/$export?_typeFilter=Observation%3Fnot-a-param%3Dx", &ASYNC, "not-a-param");
    bad("/$export?_type=Patient&_typeFilter=Observation%3Fcode%3Dx", &ASYNC, "_type");
    bad("/$export?includeAssociatedData=_everything", &ASYNC, "_everything");
    bad("/$export?_container=Not_A_Container", &ASYNC, "_container");
    bad("/$export?unknown=1", &ASYNC, "unknown");
    bad("/Patient/$export?_type=Practitioner", &ASYNC, "Practitioner");
    bad("/$export?patient=Patient/1", &ASYNC, "patient");
    // The formats the IG names are all accepted.
    for format in ["application/fhir%2Bndjson", "application/ndjson", "ndjson"] {
        server.request("GET", &format!("/$export?_type=Patient&_outputFormat={format}"), &ASYNC, None).expect(202);
    }
    // Unknown jobs and groups.
    server.request("GET", "/_operations/export/no-such-job", &ASYNC, None).expect(404);
    server.request("GET", "/Group/no-such-group/$export", &ASYNC, None).expect(404);
}

#[test]
fn a_cancelled_export_is_gone_with_its_files() {
    let server = Server::start_http();
    load(&server, 2, 2);
    let status = kick_off(&server, "/$export?_container=mine", None);
    let manifest = manifest_of(&server, &status, None);
    let file = manifest["output"][0]["url"].as_str().unwrap()[server.base.len()..].to_owned();
    server.request("GET", &file, &[], None).expect(200);
    let container = server.data_dir.join("bulk/mine");
    assert!(container.is_dir());
    server.request("DELETE", &status, &[], None).expect(202);
    server.request("GET", &status, &[], None).expect(404);
    server.request("GET", &file, &[], None).expect(404);
    assert_eq!(std::fs::read_dir(&container).unwrap().count(), 0, "the job's folder is removed");
    server.request("DELETE", &status, &[], None).expect(404);
}

#[test]
fn exporting_needs_the_exporter_role_and_the_files_a_token() {
    let server = Server::start_secure(&[]);
    let (loader, secret, _) = server.create_app("Loader", &["FHIR Data Contributor"]);
    let loader = server.token(&loader, &secret);
    let patient = json!({"resourceType": "Patient", "active": true});
    server.request_as(&loader, "POST", "/Patient", Some(("application/fhir+json", &patient))).expect(201);
    let (reader, secret, _) = server.create_app("Reader", &["FHIR Data Reader"]);
    let reader = server.token(&reader, &secret);
    let (exporter, secret, _) = server.create_app("Exporter", &["FHIR Data Exporter"]);
    let exporter = server.token(&exporter, &secret);

    request(&server, "GET", "/$export", Some(&reader), None).expect(403);
    request(&server, "GET", "/$export", None, None).expect(401);
    let status = kick_off(&server, "/$export?_type=Patient", Some(&exporter));
    request(&server, "GET", &status, Some(&reader), None).expect(403);
    let manifest = manifest_of(&server, &status, Some(&exporter));
    assert_eq!(manifest["requiresAccessToken"], true);
    let file = manifest["output"][0]["url"].as_str().unwrap()[server.base.len()..].to_owned();
    request(&server, "GET", &file, None, None).expect(401);
    request(&server, "GET", &file, Some(&reader), None).expect(403);
    assert_eq!(files(&server, &manifest, Some(&exporter))["Patient"].len(), 1);
}

#[test]
fn an_export_interrupted_by_a_crash_resumes_without_losing_or_repeating() {
    let mut server = Server::start_in(
        &crate::harness::temp_dir("data"),
        &["--http", "--export-file-bytes", "2048", "--job-lease-seconds", "2"],
    );
    for _ in 0..4 {
        load(&server, 10, 25);
    }
    let status = kick_off(&server, "/$export?_type=Observation", None);
    // Kill it once some files are written, before it is done.
    let started = Instant::now();
    loop {
        let response = server.request("GET", &status, &ASYNC, None);
        let progress = response.header("x-progress").unwrap_or("").to_owned();
        if response.status == 200 {
            panic!("the export finished before it could be interrupted; make it larger");
        }
        if progress.starts_with("exported") && !progress.starts_with("exported 0 ") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no progress: {progress}");
        std::thread::sleep(Duration::from_millis(2));
    }
    server.restart();
    let manifest = manifest_of(&server, &status, None);
    let exported = files(&server, &manifest, None);
    assert_eq!(exported["Observation"].len(), 1000);
    assert_eq!(ids(&exported["Observation"]).len(), 1000, "each resource once");
    let total: u64 = manifest["output"].as_array().unwrap().iter().map(|o| o["count"].as_u64().unwrap()).sum();
    assert_eq!(total, 1000);
}

#[test]
fn more_exports_than_the_limit_wait_their_turn_with_a_429() {
    // A long import keeps the job worker busy, so the first export stays queued meanwhile.
    let root = crate::harness::temp_dir("import-root");
    let lines: Vec<String> = (0..5000)
        .map(|i| json!({"resourceType": "Patient", "name": [{"family": format!("Busy{i}")}]}).to_string())
        .collect();
    std::fs::write(root.join("busy.ndjson"), lines.join("\n")).unwrap();
    let server = Server::start_in(
        &crate::harness::temp_dir("data"),
        &["--http", "--export-max-concurrent", "1", "--import-root", root.to_str().unwrap()],
    );
    let import = json!({"resourceType": "Parameters", "parameter": [
        {"name": "inputFormat", "valueString": "application/fhir+ndjson"},
        {"name": "input", "part": [{"name": "url", "valueUri": root.join("busy.ndjson").display().to_string()}]},
    ]});
    let headers = [("prefer", "respond-async"), ("content-type", "application/fhir+json")];
    server.request("POST", "/$import", &headers, Some(import.to_string().as_bytes())).expect(202);
    let first = kick_off(&server, "/$export?_type=Patient", None);
    let refused = request(&server, "GET", "/$export?_type=Patient", None, None).expect(429);
    assert!(refused.header("retry-after").is_some_and(|s| s.parse::<u32>().is_ok()));
    let outcome = refused.json();
    assert_eq!(outcome["issue"][0]["code"], "throttled");
    // Once the first is done, another may start.
    manifest_of(&server, &first, None);
    kick_off(&server, "/$export?_type=Patient", None);
}

#[test]
fn a_finished_export_expires_with_its_files() {
    // Kept about a second.
    let server = Server::start_in(&crate::harness::temp_dir("data"), &["--http", "--bulk-retention-hours", "0.0003"]);
    load(&server, 1, 1);
    let status = kick_off(&server, "/$export?_container=short", None);
    let manifest = manifest_of(&server, &status, None);
    let file = manifest["output"][0]["url"].as_str().unwrap()[server.base.len()..].to_owned();
    let container = server.data_dir.join("bulk/short");
    assert!(std::fs::read_dir(&container).unwrap().count() > 0);
    std::thread::sleep(Duration::from_millis(1500));
    server.request("GET", &file, &[], None).expect(404);
    server.request("GET", &status, &[], None).expect(404);
    assert_eq!(std::fs::read_dir(&container).unwrap().count(), 0, "the expired export's files are gone");
}

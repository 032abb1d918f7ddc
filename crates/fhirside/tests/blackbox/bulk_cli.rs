//! `fhirside export --to DIR` and `fhirside import DIR`: the bulk jobs run from the command line
//! against running servers — files and counts, a round trip between two servers, refused lines,
//! an unreachable server, a non-empty directory, and an authenticated export over HTTPS that finds
//! the server's URL, certificate and token from its data directory.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::{json, Value};

use crate::harness::{match_ids, temp_dir, Server};

/// Runs `fhirside <args>` in an empty directory, with none of the CLI's environment variables.
fn fhirside(args: &[&str], env: &[(&str, &str)]) -> Output {
    let cwd = temp_dir("cli-cwd");
    let mut command = Command::new(env!("CARGO_BIN_EXE_fhirside"));
    command.args(args).current_dir(&cwd);
    for name in [
        "FHIRSIDE_URL",
        "FHIRSIDE_TOKEN",
        "FHIRSIDE_CLIENT_ID",
        "FHIRSIDE_CLIENT_SECRET",
        "FHIRSIDE_CONFIG",
        "FHIRSIDE_DATA_DIR",
        "FHIRSIDE_DATABASE_URL",
    ] {
        command.env_remove(name);
    }
    command.envs(env.iter().copied());
    let output = command.output().expect("run fhirside");
    let _ = std::fs::remove_dir_all(&cwd);
    output
}

fn text(output: &Output) -> (String, String) {
    (String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// `patients` Patients (family `Cli{p}`) with `per_patient` Observations each, in one transaction.
fn load(server: &Server, token: Option<&str>, patients: usize, per_patient: usize) {
    let mut entries = Vec::new();
    for p in 0..patients {
        let full_url = format!("urn:uuid:00000000-0000-4000-8000-{p:012}");
        entries.push(json!({"fullUrl": full_url, "request": {"method": "POST", "url": "Patient"},
            "resource": {"resourceType": "Patient", "name": [{"family": format!("Cli{p}")}]}}));
        for o in 0..per_patient {
            entries.push(json!({"request": {"method": "POST", "url": "Observation"}, "resource": {
                "resourceType": "Observation", "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": format!("probe-{}", o % 2)}]},
                "subject": {"reference": full_url}}}));
        }
    }
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries}).to_string();
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/fhir+json")];
    if let Some(bearer) = &bearer {
        headers.push(("authorization", bearer));
    }
    server.request("POST", "/", &headers, Some(bundle.as_bytes())).expect(200);
}

/// The NDJSON files of `dir`: name → resources; checks there is nothing else in it.
fn files_in(dir: &Path) -> BTreeMap<String, Vec<Value>> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.ends_with(".ndjson"), "only NDJSON files in {}: {name}", dir.display());
        let text = std::fs::read_to_string(&path).unwrap();
        files.insert(name, text.lines().map(|l| serde_json::from_str(l).expect("a resource per line")).collect());
    }
    files
}

fn by_type(files: &BTreeMap<String, Vec<Value>>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for (name, resources) in files {
        for resource in resources {
            let resource_type = resource["resourceType"].as_str().unwrap();
            assert!(name.starts_with(&format!("{resource_type}-")), "{name} holds {resource_type}");
            *counts.entry(resource_type.to_owned()).or_default() += 1;
        }
    }
    counts
}

fn total(server: &Server, query: &str, token: Option<&str>) -> u64 {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer.iter().map(|b| ("authorization", b.as_str())).collect();
    let response = server.request("GET", &format!("{query}&_summary=count"), &headers, None).expect(200);
    response.json()["total"].as_u64().unwrap()
}

/// No `.ndjson` file left in the server's bulk directory (the export was discarded).
fn exports_left(server: &Server) -> Vec<String> {
    fn walk(dir: &Path, found: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, found);
            } else if path.extension().is_some_and(|e| e == "ndjson") {
                found.push(path.display().to_string());
            }
        }
    }
    let mut found = Vec::new();
    walk(&server.data_dir.join("bulk"), &mut found);
    found
}

#[test]
fn an_export_to_a_directory_imports_into_another_server() {
    let source = Server::start_in(&temp_dir("data"), &["--http", "--export-file-bytes", "4096"]);
    load(&source, None, 8, 5);
    let dir = temp_dir("cli-export").join("out");

    let output = fhirside(&["export", "--to", dir.to_str().unwrap(), "--url", &source.base], &[]);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "stdout: {stdout}\nstderr: {stderr}");
    let files = files_in(&dir);
    assert!(files.len() >= 3, "Observations split by --export-file-bytes: {:?}", files.keys());
    assert_eq!(by_type(&files), BTreeMap::from([("Observation".to_owned(), 40), ("Patient".to_owned(), 8)]));
    assert!(stdout.contains("Patient: 8 resources in 1 file"), "{stdout}");
    let bytes: u64 = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
    let summary = stdout.lines().last().unwrap();
    assert!(
        summary.starts_with(&format!("export: 48 resources, {} files, {bytes} bytes, ", files.len()))
            && summary.ends_with(" resources/s"),
        "{summary}"
    );
    // Progress on stderr (plain lines: it is not a terminal), and the export discarded on the
    // server once downloaded.
    assert!(stderr.contains("downloading: "), "{stderr}");
    assert_eq!(exports_left(&source), Vec::<String>::new());

    let target = Server::start_in(&temp_dir("data"), &["--http", "--import-root", dir.to_str().unwrap()]);
    let output = fhirside(&["import", dir.to_str().unwrap(), "--url", &target.base], &[]);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("  Observation: 40 resources\n  Patient: 8 resources\n"), "{stdout}");
    let summary = stdout.lines().last().unwrap();
    assert!(summary.starts_with(&format!("import: 48 resources, {} files, {bytes} bytes, ", files.len())), "{summary}");

    // Everything arrived, with its ids, and searches find it.
    for query in ["/Patient?", "/Observation?", "/Observation?code=probe-0", "/Patient?family=Cli3"] {
        assert_eq!(total(&target, query, None), total(&source, query, None), "{query}");
    }
    let ids = |server: &Server| {
        let mut ids = match_ids(&server.get("/Patient?_count=100").expect(200).json());
        ids.sort();
        ids
    };
    assert_eq!(ids(&target), ids(&source));
    let patient = &ids(&source)[0];
    assert_eq!(total(&target, &format!("/Observation?subject=Patient/{patient}"), None), 5);
}

#[test]
fn a_refused_line_exits_2_and_names_the_error_file() {
    let dir = temp_dir("cli-import-bad");
    let lines = [
        json!({"resourceType": "Patient", "id": "good1", "name": [{"family": "Fine"}]}),
        json!({"resourceType": "Patient", "id": "bad", "birthDate": "not-a-date"}),
        json!({"resourceType": "Patient", "id": "good2", "name": [{"family": "Fine"}]}),
        // Patient-1.ndjson holds Patients: this line is refused too.
        json!({"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "x"}}),
    ];
    let text_lines: Vec<String> = lines.iter().map(Value::to_string).collect();
    std::fs::write(dir.join("Patient-1.ndjson"), text_lines.join("\n") + "\n").unwrap();
    let server = Server::start_in(&temp_dir("data"), &["--http", "--import-root", dir.to_str().unwrap()]);

    let output = fhirside(&["import", dir.to_str().unwrap(), "--url", &server.base], &[]);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(2), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("  Patient: 2 resources\n"), "{stdout}");
    assert!(stdout.contains("Refused 2 lines:"), "{stdout}");
    let error_file = stdout
        .split_whitespace()
        .find(|w| w.starts_with(&format!("{}/_operations/import/", server.base)))
        .unwrap_or_else(|| panic!("an error file URL in {stdout}"));
    let errors = server.get(&error_file[server.base.len()..]).expect(200);
    assert_eq!(String::from_utf8(errors.body).unwrap().lines().count(), 2);
    assert!(stdout.contains("Line 2: ") && stdout.contains("Line 4: "), "the diagnostics are shown: {stdout}");
    assert!(stderr.contains("2 lines were refused"), "{stderr}");
    assert!(stdout.lines().last().unwrap().starts_with("import: 2 resources, 1 files, "), "{stdout}");
    server.get("/Patient/good2").expect(200);
    server.get("/Patient/bad").expect(404);
}

#[test]
fn an_unreachable_server_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let dir = temp_dir("cli-unreachable").join("out");
    let output = fhirside(&["export", "--to", dir.to_str().unwrap(), "--url", &url], &[]);
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with(&format!("fhirside: the FHIR server at {url} is not reachable: "))
            && stderr.contains("refused"),
        "{stderr}"
    );
    assert!(!dir.exists(), "the directory it created is removed again");

    let input = temp_dir("cli-unreachable-in");
    std::fs::write(input.join("Patient.ndjson"), "{\"resourceType\":\"Patient\"}\n").unwrap();
    let output = fhirside(&["import", input.to_str().unwrap()], &[("FHIRSIDE_URL", &url)]);
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("the FHIR server at {url} is not reachable")), "{stderr}");
}

#[test]
fn a_non_empty_directory_is_refused_and_local_files_need_an_import_root() {
    let server = Server::start_http();
    load(&server, None, 2, 1);
    let dir = temp_dir("cli-nonempty");
    std::fs::write(dir.join("notes.txt"), "mine").unwrap();
    let output = fhirside(&["export", "--to", dir.to_str().unwrap(), "--url", &server.base], &[]);
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is not empty") && stderr.contains("--force"), "{stderr}");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);

    // With --force it writes beside what is there, and --type limits the export.
    let args = ["export", "--to", dir.to_str().unwrap(), "--url", &server.base, "--force", "--type", "Patient"];
    let output = fhirside(&args, &[]);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(std::fs::read_to_string(dir.join("notes.txt")).unwrap(), "mine");
    assert_eq!(std::fs::read_to_string(dir.join("Patient-1.ndjson")).unwrap().lines().count(), 2);
    assert!(stdout.lines().last().unwrap().starts_with("export: 2 resources, 1 files, "), "{stdout}");

    // This server was not given --import-root: the message says what it needs.
    let output = fhirside(&["import", dir.join("Patient-1.ndjson").to_str().unwrap(), "--url", &server.base], &[]);
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let root = dir.canonicalize().unwrap();
    assert!(stderr.contains(&format!("--import-root {}", root.display())), "{stderr}");
}

#[test]
fn an_authenticated_export_finds_the_server_from_its_data_directory() {
    let dir = temp_dir("cli-secure");
    let server = Server::start_secure(&["--import-root", dir.to_str().unwrap()]);
    let (client_id, client_secret, _) = server.create_app("bulk-cli", &["FHIR Data Contributor"]);
    let token = server.token(&client_id, &client_secret);
    load(&server, Some(&token), 3, 2);

    // No --url: the URL the server recorded, its tls/ca.pem, and a token from `fhirside token`.
    let data_dir = server.data_dir.to_str().unwrap();
    let mut args = vec!["export", "--to", dir.to_str().unwrap(), "--data-dir", data_dir, "--client-id", &client_id];
    args.extend(["--client-secret", &client_secret]);
    let mut env = vec![];
    if let Some(database) = &server.database {
        env.push(("FHIRSIDE_DATABASE_URL", database.as_str()));
    }
    let output = fhirside(&args, &env);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(by_type(&files_in(&dir)), BTreeMap::from([("Observation".to_owned(), 6), ("Patient".to_owned(), 3)]));
    assert!(stdout.lines().last().unwrap().starts_with("export: 9 resources, 2 files, "), "{stdout}");
    assert_eq!(exports_left(&server), Vec::<String>::new());

    // Without a token the server's refusal is shown as it is, with what to do.
    let output = fhirside(&["import", dir.to_str().unwrap(), "--url", &server.base, "--data-dir", data_dir], &[]);
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("(401): Authentication failed.") && stderr.contains("--token"), "{stderr}");

    // With a token, importing the same files again changes nothing and counts them all.
    let ca = server.ca.as_ref().unwrap().to_str().unwrap();
    let args = ["import", dir.to_str().unwrap(), "--url", &server.base, "--ca-file", ca, "--mode", "IncrementalLoad"];
    let output = fhirside(&args, &[("FHIRSIDE_TOKEN", &token)]);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.lines().last().unwrap().starts_with("import: 9 resources, 2 files, "), "{stdout}");
    assert_eq!(total(&server, "/Patient?", Some(&token)), 3);
}

//! The identity admin CLI (`fhirside app|user|role|tenant|authority …`) run as a user would, on a
//! data directory of its own and on one a running server uses.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::harness::{database_for, postgres_backend, temp_dir, Server};

/// `fhirside` on the data directory `dir`, and on the database a server on `dir` would use
/// (`FHIRSIDE_TEST_BACKEND=postgres`), as an operator runs it.
fn command(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fhirside"));
    command.env_remove("FHIRSIDE_DATA_DIR").env_remove("FHIRSIDE_CONFIG");
    match postgres_backend() {
        Some(url) => command.env("FHIRSIDE_DATABASE_URL", database_for(&url, dir)),
        None => command.env_remove("FHIRSIDE_DATABASE_URL"),
    };
    command
}

fn fhirside(dir: &Path, args: &[&str]) -> Output {
    command(dir).args(args).arg("--data-dir").arg(dir).output().expect("run fhirside")
}

/// Runs a command that must succeed and returns its standard output.
#[track_caller]
fn ok(dir: &Path, args: &[&str]) -> String {
    let out = fhirside(dir, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{args:?} failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    stdout
}

#[track_caller]
fn json(dir: &Path, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.extend(["--output", "json"]);
    let stdout = ok(dir, &args);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {stdout}"))
}

#[test]
fn apps_secrets_roles_and_users() {
    let dir = temp_dir("admin-cli");
    let created = json(
        &dir,
        &[
            "app",
            "create",
            "--name",
            "Nightly export",
            "--role",
            "fhir data reader",
            "--role",
            "FHIR Data Exporter",
            "--redirect-uri",
            "http://localhost:8080/callback",
        ],
    );
    for field in ["displayName", "clientId", "objectId", "tenantId", "kind", "redirectUris", "roles"] {
        assert!(!created[field].is_null(), "{field} missing: {created}");
    }
    for field in ["clientSecretKeyId", "clientSecretExpires"] {
        assert!(created[field].is_string(), "{field} missing: {created}");
    }
    assert_eq!(created["displayName"], "Nightly export");
    assert_eq!(created["kind"], "confidential");
    assert_eq!(created["roles"], serde_json::json!(["FHIR Data Reader", "FHIR Data Exporter"]));
    let secret = created["clientSecret"].as_str().unwrap().to_owned();
    assert_eq!(secret.len(), 40, "{secret}");
    let client_id = created["clientId"].as_str().unwrap().to_owned();
    let object_id = created["objectId"].as_str().unwrap().to_owned();

    // Listed (in text and JSON) without the secret; the tenant is the one the app was created in.
    let listed = ok(&dir, &["app", "list"]);
    assert!(listed.contains(&client_id) && listed.contains("Nightly export"), "{listed}");
    let listed_json = json(&dir, &["app", "list"]);
    assert_eq!(listed_json[0]["clientId"], client_id.as_str());
    let shown = ok(&dir, &["app", "show", &client_id, "--output", "json"]);
    for text in [&listed, &listed_json.to_string(), &shown] {
        assert!(!text.contains(&secret), "a listing shows the secret: {text}");
        assert!(!text.contains("pbkdf2"), "a listing shows a hash: {text}");
    }
    assert_eq!(json(&dir, &["tenant", "show"])["tenantId"], created["tenantId"]);

    // A second secret, shown once; both listed by key id.
    let added = json(&dir, &["app", "secret", "add", "--app", &object_id, "--name", "rotation"]);
    let second = added["clientSecret"].as_str().unwrap();
    assert_eq!(second.len(), 40);
    assert_ne!(second, secret);
    let secrets = json(&dir, &["app", "secret", "list", "--app", &client_id]);
    let key_ids: Vec<&str> = secrets.as_array().unwrap().iter().map(|s| s["keyId"].as_str().unwrap()).collect();
    assert_eq!(key_ids, [created["clientSecretKeyId"].as_str().unwrap(), added["keyId"].as_str().unwrap()]);
    assert!(!secrets.to_string().contains(second));
    ok(&dir, &["app", "secret", "remove", "--app", &client_id, "--key-id", key_ids[0]]);
    assert_eq!(json(&dir, &["app", "secret", "list", "--app", &client_id]).as_array().unwrap().len(), 1);

    // A public client gets no secret.
    let spa =
        json(&dir, &["app", "create", "--name", "Portal", "--public", "--redirect-uri", "https://app.example/cb"]);
    assert_eq!(spa["kind"], "public");
    assert!(spa["clientSecret"].is_null(), "{spa}");

    // Role assignments, by object id; an assignee given as a client id resolves to the object id.
    let assignments = json(&dir, &["role", "list", "--assignee", &client_id]);
    let roles: Vec<&str> = assignments.as_array().unwrap().iter().map(|a| a["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["FHIR Data Reader", "FHIR Data Exporter"]);
    assert!(assignments.as_array().unwrap().iter().all(|a| a["principalId"] == object_id.as_str()));
    let assigned =
        json(&dir, &["role", "assign", "--role", "globalAdmin", "--assignee", spa["clientId"].as_str().unwrap()]);
    assert_eq!(assigned["principalId"], spa["objectId"]);
    assert_eq!(json(&dir, &["role", "list"]).as_array().unwrap().len(), 3);
    let definitions = json(&dir, &["role", "definitions"]);
    assert!(definitions.as_array().unwrap().iter().any(|d| d["name"] == "FHIR Data Contributor"));

    // Users: created with a password from standard input, then given a role by name.
    let mut child = command(&dir)
        .args(["user", "create", "--name", "alice@example.org", "--fhir-user", "Practitioner/123"])
        .args(["--password-stdin", "--role", "FHIR SMART User", "--output", "json", "--data-dir"])
        .arg(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"correct horse battery\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let user: Value = serde_json::from_slice(&out.stdout).unwrap();
    let user_id = user["objectId"].as_str().unwrap();
    assert_eq!(user_id.len(), 36);
    assert_eq!(user["roles"], serde_json::json!(["FHIR SMART User"]));
    let users = ok(&dir, &["user", "list"]);
    assert!(users.contains("alice@example.org") && !users.contains("correct horse"), "{users}");
    let by_upn = json(&dir, &["role", "list", "--assignee", "ALICE@example.org"]);
    assert_eq!(by_upn[0]["principalId"], user_id);
    let dup = fhirside(&dir, &["user", "create", "--name", "alice@example.org", "--password", "long enough"]);
    assert!(!dup.status.success());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already exists"));
    let short = fhirside(&dir, &["user", "create", "--name", "bob@example.org", "--password", "1234567"]);
    assert!(!short.status.success());
    assert!(String::from_utf8_lossy(&short.stderr).contains("at least 8 characters"));

    // An assignee that is no app or user must be a GUID: an external issuer's object id.
    let external = json(&dir, &["role", "assign", "--role", "FHIR Data Reader", "--assignee", &user_id.to_uppercase()]);
    assert_eq!(external["principalType"], "user", "object ids match whatever their case: {external}");
    let guid = "0fc44dc2-9aa1-4e1b-924e-ea4e0b5717f0";
    let external = json(&dir, &["role", "assign", "--role", "FHIR Data Reader", "--assignee", guid]);
    assert_eq!(
        (&external["principalId"], &external["principalType"]),
        (&serde_json::json!(guid), &serde_json::json!("external"))
    );
    let out = fhirside(&dir, &["role", "assign", "--role", "FHIR Data Reader", "--assignee", "bob@example.org"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nor a GUID"), "{}", String::from_utf8_lossy(&out.stderr));

    // An unknown role is refused with the valid names, and nothing is created.
    let out = fhirside(&dir, &["app", "create", "--name", "Typo", "--role", "FHIR Data Raeder"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("fhirside: "), "{stderr}");
    assert!(stderr.contains("unknown role 'FHIR Data Raeder'") && stderr.contains("FHIR Data Reader"), "{stderr}");
    assert!(!ok(&dir, &["app", "list"]).contains("Typo"));
    let out = fhirside(&dir, &["app", "show", "no-such-app"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no app"));

    // Deleting the app takes its assignments with it.
    ok(&dir, &["app", "delete", &client_id]);
    assert!(json(&dir, &["role", "list", "--assignee", &object_id]).as_array().unwrap().is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn works_while_the_server_runs_on_the_same_directory() {
    let dir = temp_dir("admin-cli-serve");
    let server = Server::start_in(&dir, &["--http"]);
    let created = json(&dir, &["app", "create", "--name", "Live", "--role", "FHIR Data Contributor"]);
    assert_eq!(created["clientSecret"].as_str().unwrap().len(), 40);
    let rotated = json(&dir, &["authority", "rotate-key"]);
    assert!(rotated["kid"].is_string());
    assert!(ok(&dir, &["app", "list"]).contains(created["clientId"].as_str().unwrap()));
    server.get("/metadata").expect(200);
    drop(server);
}

#[test]
fn the_running_authority_sees_what_the_cli_writes() {
    // Authentication on: the server holds identity.db open while the CLI writes to it.
    let server = Server::start_secure(&[]);
    let dir = server.data_dir.clone();
    let tenant = json(&dir, &["tenant", "show"]);
    assert_eq!(tenant["tenantId"].as_str(), server.tenant.as_deref());
    let authority_base = tenant["authorityBase"].as_str().expect("the server records its authority");
    assert!(server.authority.as_deref().unwrap().starts_with(authority_base), "{tenant}");

    let app = json(&dir, &["app", "create", "--name", "Reader", "--role", "FHIR Data Reader"]);
    let (client_id, secret) = (app["clientId"].as_str().unwrap(), app["clientSecret"].as_str().unwrap());
    let token = server.token(client_id, secret);
    let bearer = format!("Bearer {token}");
    server.request("GET", "/Patient", &[("authorization", &bearer)], None).expect(200);

    // A key rotated by the CLI signs the server's next tokens, which the service accepts.
    let rotated = json(&dir, &["authority", "rotate-key"]);
    let token = server.token(client_id, secret);
    let header: Value = {
        let mut part = token.split('.').next().unwrap().replace('-', "+").replace('_', "/");
        part.push_str(&"=".repeat((4 - part.len() % 4) % 4));
        serde_json::from_slice(&base64_decode(&part)).unwrap()
    };
    assert_eq!(header["kid"], rotated["kid"]);
    let bearer = format!("Bearer {token}");
    server.request("GET", "/Patient", &[("authorization", &bearer)], None).expect(200);
}

/// Standard base64 with padding (no dependency for one JWT header).
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => 0,
        }
    };
    let mut out = Vec::new();
    for chunk in text.as_bytes().chunks(4) {
        let n = chunk.iter().fold(0u32, |n, c| (n << 6) | value(*c));
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        let pad = chunk.iter().filter(|c| **c == b'=').count();
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    out
}

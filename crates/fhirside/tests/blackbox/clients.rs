//! Microsoft's own client libraries against the built-in authority, with only the authority URL
//! changed: MSAL Python and azure-identity (and plain `requests` on the v1 endpoint) get tokens and
//! read and write FHIR data with them over HTTPS.
//!
//! Each test starts a server with authentication on, registers what its script needs with the
//! admin CLI, and runs one script of `tests/clients/` (their docstrings say what each proves) with
//! the connection facts in `FHIRSIDE_*` variables and the server's CA in `REQUESTS_CA_BUNDLE` and
//! `SSL_CERT_FILE`. The Python packages, pinned in `tests/clients/requirements.txt`, are installed by
//! `scripts/test.sh`; a missing one fails the test rather than skipping it.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::{temp_dir, Server};

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/clients")
}

/// Runs `python3 tests/clients/<script> <args>` against `server` with `env` added; panics with the
/// script's output unless it exits 0. Returns its standard output.
#[track_caller]
fn python(server: &Server, script: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let ca = server.ca.as_ref().expect("the server speaks HTTPS");
    let output = Command::new("python3")
        .arg(scripts().join(script))
        .args(args)
        .env("FHIRSIDE_BASE", &server.base)
        .env("FHIRSIDE_AUTHORITY", server.authority.as_deref().expect("authentication is on"))
        .env("FHIRSIDE_TENANT", server.tenant.as_deref().expect("authentication is on"))
        .env("REQUESTS_CA_BUNDLE", ca)
        .env("SSL_CERT_FILE", ca)
        // Loopback only, whatever proxy the machine has; and no __pycache__ in the source tree.
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 (scripts/test.sh installs it): {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "python3 tests/clients/{script} {args:?} failed ({}); its packages are pinned in \
         tests/clients/requirements.txt (scripts/test.sh installs them)\n--- stdout\n{stdout}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{script}: {}", stdout.trim());
    stdout
}

/// A confidential app with a secret and the FHIR Data Contributor role, as a daemon would have.
fn daemon_app(server: &Server, name: &str) -> (String, String) {
    let (client_id, secret, _) = server.create_app(name, &["FHIR Data Contributor"]);
    (client_id, secret)
}

#[test]
fn msal_client_credentials() {
    let server = Server::start_secure(&[]);
    let (client_id, secret) = daemon_app(&server, "msal daemon");
    let out = python(
        &server,
        "msal_client_credentials.py",
        &[],
        &[("FHIRSIDE_CLIENT_ID", &client_id), ("FHIRSIDE_CLIENT_SECRET", &secret)],
    );
    assert!(out.starts_with("ok: msal"), "{out}");
}

#[test]
fn azure_identity_client_secret_credential() {
    let server = Server::start_secure(&[]);
    let (client_id, secret) = daemon_app(&server, "azure-identity daemon");
    let out = python(
        &server,
        "azure_identity_client_secret.py",
        &[],
        &[("FHIRSIDE_CLIENT_ID", &client_id), ("FHIRSIDE_CLIENT_SECRET", &secret)],
    );
    assert!(out.starts_with("ok: azure-identity"), "{out}");
}

#[test]
fn v1_token_endpoint_with_requests() {
    let server = Server::start_secure(&[]);
    let (client_id, secret) = daemon_app(&server, "v1 caller");
    let out = python(
        &server,
        "v1_endpoint.py",
        &[],
        &[("FHIRSIDE_CLIENT_ID", &client_id), ("FHIRSIDE_CLIENT_SECRET", &secret)],
    );
    assert!(out.starts_with("ok: v1"), "{out}");
}

#[test]
fn msal_authorization_code_with_pkce_and_refresh() {
    let server = Server::start_secure(&[]);
    // Nothing listens there: the script takes the code from the redirect without following it.
    let redirect_uri = "http://localhost:8400/callback";
    let app = server.admin(&["app", "create", "--name", "msal web app", "--redirect-uri", redirect_uri]);
    let (username, password) = ("alice@contoso.example", "Correct-Horse-7");
    let user =
        server.admin(&["user", "create", "--name", username, "--password", password, "--role", "FHIR Data Reader"]);
    assert_eq!(user["userPrincipalName"], username, "{user}");
    let out = python(
        &server,
        "msal_auth_code_refresh.py",
        &[],
        &[
            ("FHIRSIDE_CLIENT_ID", app["clientId"].as_str().unwrap()),
            ("FHIRSIDE_CLIENT_SECRET", app["clientSecret"].as_str().unwrap()),
            ("FHIRSIDE_REDIRECT_URI", redirect_uri),
            ("FHIRSIDE_USERNAME", username),
            ("FHIRSIDE_PASSWORD", password),
        ],
    );
    assert!(out.starts_with("ok: msal"), "{out}");
}

#[test]
fn msal_and_azure_identity_certificate_credentials() {
    let server = Server::start_secure(&[]);
    let keys = temp_dir("client-keys");
    let keys_str = keys.to_str().unwrap();
    python(&server, "certificate_credentials.py", &["generate", keys_str], &[]);
    let jwks = keys.join("jwks.json");
    let app = server.admin(&[
        "app",
        "create",
        "--name",
        "certificate daemon",
        "--role",
        "FHIR Data Contributor",
        "--jwks",
        jwks.to_str().unwrap(),
    ]);
    let out = python(
        &server,
        "certificate_credentials.py",
        &[],
        &[("FHIRSIDE_CLIENT_ID", app["clientId"].as_str().unwrap()), ("FHIRSIDE_KEY_DIR", keys_str)],
    );
    assert!(out.starts_with("ok: msal"), "{out}");
    let _ = std::fs::remove_dir_all(&keys);
}

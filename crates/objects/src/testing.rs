//! Storage servers for tests (this crate's and the black-box tests of the server), each started on
//! a free loopback port with its data in a temporary directory, and stopped when dropped: Azurite
//! (the Azure Storage emulator, npm, pinned in tests/objects/package-lock.json) and moto's server
//! (S3, PyPI, pinned in tests/objects/requirements.txt). scripts/test.sh installs both. A missing
//! one fails the test with a message that says how to install it; nothing is skipped.
//!
//! Azurite also runs over https with `--oauth basic` ([`azurite_oauth`]), where it takes bearer
//! tokens: it checks their issuer (an Entra ID issuer), audience (Azure Storage) and lifetime,
//! but not their signature, so [`entra_token`] makes them.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;

/// Azurite's well-known development account and key (published in Azure's documentation).
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// An Entra ID issuer, as in the tokens of tenant `{tenant}`: `https://sts.windows.net/{tenant}/`.
pub const ENTRA_ISSUER: &str = "https://sts.windows.net/72f988bf-0000-4000-8000-00000000c0de/";
/// The audience of tokens for Azure Storage.
pub const STORAGE_AUDIENCE: &str = "https://storage.azure.com";

/// A running storage server.
pub struct Server {
    child: Child,
    dir: PathBuf,
    pub port: u16,
    /// For a server over https: the PEM file of the CA that signed its certificate.
    pub ca_file: Option<PathBuf>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn temp_dir(what: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let dir = std::env::temp_dir().join(format!("fhirside-objects-{what}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts `command` (its output to `{dir}/server.log`) and waits until it accepts connections.
pub fn start(mut command: Command, dir: PathBuf, port: u16, name: &str, install_hint: &str) -> Server {
    let log = std::fs::File::create(dir.join("server.log")).unwrap();
    command.stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log);
    let child = command.spawn().unwrap_or_else(|e| panic!("cannot start {name} ({e}); {install_hint}"));
    let mut server = Server { child, dir, port, ca_file: None };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return server;
        }
        let log = || std::fs::read_to_string(server.dir.join("server.log")).unwrap_or_default();
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!("{name} exited ({status}) before listening; {install_hint}\n--- its output:\n{}", log());
        }
        if Instant::now() > deadline {
            panic!("{name} did not listen on port {port} within 60 s\n--- its output:\n{}", log());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Azurite's Blob service on `http://127.0.0.1:{port}/devstoreaccount1`.
pub fn azurite() -> Server {
    let dir = temp_dir("azurite");
    let port = free_port();
    let (command, hint) = azurite_command(&dir, port);
    start(command, dir, port, "Azurite", hint)
}

/// Azurite's Blob service on `https://127.0.0.1:{port}/devstoreaccount1`, with a certificate
/// signed by a new test CA (in [`Server::ca_file`]), taking bearer tokens (`--oauth basic`) as
/// well as Shared Key and SAS.
pub fn azurite_oauth() -> Server {
    let dir = temp_dir("azurite-oauth");
    let port = free_port();
    let certificates = fhirside_fetch::testing::TestCertificates::generate();
    let (ca, cert, key) = (dir.join("ca.pem"), dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&ca, &certificates.ca_pem).unwrap();
    std::fs::write(&cert, &certificates.cert_pem).unwrap();
    std::fs::write(&key, &certificates.key_pem).unwrap();
    let (mut command, hint) = azurite_command(&dir, port);
    command.arg("--cert").arg(&cert).arg("--key").arg(&key).args(["--oauth", "basic"]);
    let mut server = start(command, dir, port, "Azurite", hint);
    server.ca_file = Some(ca);
    server
}

fn azurite_command(dir: &Path, port: u16) -> (Command, &'static str) {
    let script = repo_root().join("tests/objects/node_modules/azurite/dist/src/blob/main.js");
    let hint = "Azurite runs from tests/objects/node_modules: run `npm ci` in tests/objects (scripts/test.sh does)";
    assert!(script.is_file(), "{} is missing. {hint}", script.display());
    let mut command = Command::new("node");
    command
        .arg(&script)
        .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string(), "--location"])
        .arg(dir)
        // No telemetry: the tests reach nothing beyond the loopback interface.
        .args(["--silent", "--skipApiVersionCheck", "--disableTelemetry"]);
    (command, hint)
}

/// An access token shaped like Entra ID's (a JWT with `iss`, `aud`, `iat`, `nbf`, `exp` and an
/// object id), valid from a minute ago for `lifetime_secs` more seconds (negative: expired), and
/// not signed: what Azurite's `--oauth basic` accepts when `issuer` and `audience` are
/// [`ENTRA_ISSUER`] and [`STORAGE_AUDIENCE`].
pub fn entra_token(issuer: &str, audience: &str, lifetime_secs: i64) -> String {
    let encode = |json: String| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let header = encode(r#"{"typ":"JWT","alg":"RS256"}"#.to_owned());
    let claims = encode(format!(
        r#"{{"aud":"{audience}","iss":"{issuer}","iat":{},"nbf":{},"exp":{},"oid":"b0c5c2a4-0000-4000-8000-0000000000d1","ver":"1.0"}}"#,
        now - 60,
        now - 60,
        now + lifetime_secs
    ));
    format!("{header}.{claims}.{}", encode("not signed".to_owned()))
}

/// moto's S3 server on `http://127.0.0.1:{port}`. With `authenticated`, its first three requests
/// are free (to create an IAM user and its access key) and every later one has its Signature V4
/// checked; without, any credentials are accepted.
pub fn moto_server(authenticated: bool) -> Server {
    let hint = "moto's server is a Python package: `python3 -m pip install -r tests/objects/requirements.txt` (scripts/test.sh does)";
    let dir = temp_dir("moto");
    let port = free_port();
    let mut command = Command::new("python3");
    command.args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()]).current_dir(&dir);
    if authenticated {
        command.env("INITIAL_NO_AUTH_ACTION_COUNT", "3");
    }
    start(command, dir, port, "moto", hint)
}

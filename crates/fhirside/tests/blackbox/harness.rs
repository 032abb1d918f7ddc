//! Starting `fhirside serve` and talking to it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

/// A running server with its own data directory, stopped (SIGKILL) when dropped.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub data_dir: PathBuf,
    pub ca: Option<PathBuf>,
    /// The built-in authority's tenant and URL (`{base}/{tenant}`), when authentication is on.
    pub tenant: Option<String>,
    pub authority: Option<String>,
    host_port: String,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Every argument after `serve --listen … --data-dir …`.
    args: Vec<String>,
    /// The PostgreSQL URL it stores resources and identity in; `None` for the embedded stores.
    pub database: Option<String>,
    log: Option<PathBuf>,
}

/// The PostgreSQL URL the black-box suite runs on, when `FHIRSIDE_TEST_BACKEND=postgres`.
pub fn postgres_backend() -> Option<String> {
    match std::env::var("FHIRSIDE_TEST_BACKEND").as_deref() {
        Ok("postgres") => Some(
            std::env::var("FHIRSIDE_TEST_POSTGRES").unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".into()),
        ),
        Ok("sqlite") | Ok("") | Err(_) => None,
        Ok(other) => panic!("FHIRSIDE_TEST_BACKEND={other}: expected sqlite or postgres"),
    }
}

/// A URL for `base` whose search path is a schema named after `data_dir`, created if missing.
/// Schemas are named `fhirside_bb_…`; `scripts/test.sh` drops them after the run.
pub fn database_for(base: &str, data_dir: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    data_dir.hash(&mut hasher);
    let schema = format!("fhirside_bb_{:016x}", hasher.finish());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(base, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {base} (FHIRSIDE_TEST_POSTGRES): {e}"));
        tokio::spawn(connection);
        client.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}")).await.unwrap();
    });
    let separator = if base.contains('?') { '&' } else { '?' };
    format!("{base}{separator}options=-csearch_path%3D{schema}")
}

/// Runs `fhirside serve --data-dir <new dir> ARGS` with `env`, which must refuse to start (exit
/// code 2); returns what it wrote to stderr.
pub fn serve_refused(args: &[&str], env: &[(&str, &str)]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_fhirside"))
        .args(["serve", "--data-dir"])
        .arg(temp_dir("refused"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{args:?} {env:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn temp_dir(name: &str) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "fhirside-test-{}-{}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Server {
    /// HTTPS on a free loopback port, no authentication, a fresh data directory.
    pub fn start() -> Server {
        Server::start_in(&temp_dir("data"), &[])
    }

    /// Plain HTTP (for tests that are not about TLS and want speed).
    pub fn start_http() -> Server {
        Server::start_in(&temp_dir("data"), &["--http"])
    }

    /// No authentication (`--auth none`) on `data_dir`, with `extra` arguments.
    pub fn start_in(data_dir: &Path, extra: &[&str]) -> Server {
        let mut args = vec!["--auth", "none"];
        args.extend_from_slice(extra);
        Server::launch(data_dir, &args, None)
    }

    /// Authentication on (the default: the built-in authority), HTTPS, a fresh data directory.
    pub fn start_secure(extra: &[&str]) -> Server {
        Server::launch(&temp_dir("data"), extra, None)
    }

    /// Starts `fhirside serve --listen 127.0.0.1:0 --data-dir <data_dir> <args>`. With `log`, the
    /// server's whole output (stdout and stderr) is also appended to that file.
    ///
    /// With `FHIRSIDE_TEST_BACKEND=postgres`, the server stores resources in PostgreSQL
    /// (`FHIRSIDE_TEST_POSTGRES`, default `postgres://root@127.0.0.1:5432/test`), in a schema of
    /// its own named after the data directory, so that a restart finds its data again.
    pub fn launch(data_dir: &Path, args: &[&str], log: Option<&Path>) -> Server {
        Server::launch_with_env(data_dir, args, &[], log)
    }

    /// [`Server::launch`] with extra environment variables for the server process.
    pub fn launch_with_env(data_dir: &Path, args: &[&str], env: &[(&str, &str)], log: Option<&Path>) -> Server {
        let database =
            postgres_backend().filter(|_| !args.contains(&"--database")).map(|url| database_for(&url, data_dir));
        let explicit = args.iter().position(|a| *a == "--database").and_then(|i| args.get(i + 1));
        let in_use = explicit.map(|url| url.to_string()).or(database.clone()).filter(|url| !url.is_empty());
        let stderr = match log {
            Some(path) => Stdio::from(
                std::fs::OpenOptions::new().create(true).append(true).open(path).expect("open the log file"),
            ),
            None => Stdio::inherit(),
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_fhirside"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(args)
            .args(database.iter().flat_map(|url| ["--database", url.as_str()]))
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start fhirside");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let mut log_file = log.map(|path| std::fs::OpenOptions::new().append(true).open(path).unwrap());
        let (mut ca, mut tenant, mut authority, mut listening) = (None, None, None, None);
        let base = loop {
            let line = match lines.next() {
                Some(Ok(line)) => line,
                _ => panic!("fhirside exited before printing its base URL: {:?}", child.wait()),
            };
            if let Some(file) = &mut log_file {
                let _ = writeln!(file, "{line}");
            }
            if let Some(rest) = line.strip_prefix("TLS certificate authority: ") {
                ca = Some(PathBuf::from(rest.split(' ').next().unwrap()));
            }
            if let Some(rest) = line.strip_prefix("authentication: built-in authority, tenant ") {
                tenant = Some(rest.trim().to_owned());
            }
            if let Some(rest) = line.strip_prefix("authority: ") {
                authority = Some(rest.trim().to_owned());
            }
            if let Some(rest) = line.strip_prefix("listening on: ") {
                listening = Some(rest.trim().to_owned());
            }
            if let Some(base) = line.strip_prefix("FHIR base URL: ") {
                break base.to_owned();
            }
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if let Some(file) = &mut log_file {
                    let _ = writeln!(file, "{line}");
                }
            }
        });
        // Where it listens, which the base URL does not say when --base-url names a proxy.
        let host_port = listening.unwrap_or_else(|| base.split("://").nth(1).unwrap().to_owned());
        let tls = ca.as_ref().map(|ca| client_config(ca));
        let args = args.iter().map(|s| s.to_string()).collect();
        Server {
            child,
            base,
            data_dir: data_dir.to_owned(),
            ca,
            tenant,
            authority,
            host_port,
            tls,
            args,
            database: in_use,
            log: log.map(Path::to_owned),
        }
    }

    /// Kills the server with SIGKILL and starts it again on the same data directory.
    pub fn restart(&mut self) {
        self.kill();
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let mut fresh = Server::launch(&self.data_dir, &args, self.log.as_deref());
        std::mem::swap(self, &mut fresh);
        // `fresh` now holds the dead process; don't let its Drop delete the shared directory.
        fresh.data_dir = PathBuf::new();
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn client(&self) -> Client {
        Client { host_port: self.host_port.clone(), tls: self.tls.clone(), conn: None }
    }

    /// A client with TLS settings of its own (other roots, a client certificate), for servers
    /// started with `--tls-cert`.
    pub fn client_with_tls(&self, tls: Arc<rustls::ClientConfig>) -> Client {
        Client { host_port: self.host_port.clone(), tls: Some(tls), conn: None }
    }

    /// `host:port` of the listener.
    pub fn host_port(&self) -> &str {
        &self.host_port
    }

    /// One request on a fresh connection.
    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Response {
        self.client().request(method, path, headers, body)
    }

    pub fn get(&self, path: &str) -> Response {
        self.request("GET", path, &[], None)
    }

    pub fn post_json(&self, path: &str, body: &Value) -> Response {
        self.request("POST", path, &[("content-type", "application/fhir+json")], Some(body.to_string().as_bytes()))
    }

    pub fn put_json(&self, path: &str, body: &Value) -> Response {
        self.request("PUT", path, &[("content-type", "application/fhir+json")], Some(body.to_string().as_bytes()))
    }

    pub fn delete(&self, path: &str) -> Response {
        self.request("DELETE", path, &[], None)
    }

    /// Runs an admin command (`fhirside app create …`) on this server's data directory (and
    /// database, if it has one) with `--output json`, and returns its JSON; panics with stderr
    /// when it fails.
    pub fn admin(&self, args: &[&str]) -> Value {
        let output = admin_command_on(&self.data_dir, self.database.as_deref(), args);
        assert!(output.status.success(), "fhirside {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!("fhirside {args:?}: not JSON ({e}): {}", String::from_utf8_lossy(&output.stdout))
        })
    }

    /// Registers a confidential app with `roles`; returns (client id, client secret, object id).
    pub fn create_app(&self, name: &str, roles: &[&str]) -> (String, String, String) {
        let mut args = vec!["app", "create", "--name", name];
        for role in roles {
            args.extend(["--role", role]);
        }
        let app = self.admin(&args);
        let field = |k: &str| app[k].as_str().unwrap_or_else(|| panic!("no {k} in {app}")).to_owned();
        (field("clientId"), field("clientSecret"), field("objectId"))
    }

    /// A token for the FHIR service from the built-in authority's v2 token endpoint.
    pub fn token(&self, client_id: &str, client_secret: &str) -> String {
        let form = format!(
            "grant_type=client_credentials&client_id={client_id}&client_secret={}&scope={}/.default",
            form_encode(client_secret),
            form_encode(&self.base)
        );
        let response = self.request(
            "POST",
            &format!("/{}/oauth2/v2.0/token", self.tenant.as_deref().expect("authentication is on")),
            &[("content-type", "application/x-www-form-urlencoded")],
            Some(form.as_bytes()),
        );
        assert_eq!(response.status, 200, "token request failed: {}", String::from_utf8_lossy(&response.body));
        response.json()["access_token"].as_str().unwrap().to_owned()
    }
}

/// Runs `fhirside <args> --data-dir <dir> --output json`.
pub fn admin_command(data_dir: &Path, args: &[&str]) -> std::process::Output {
    let database = postgres_backend().map(|url| database_for(&url, data_dir));
    admin_command_on(data_dir, database.as_deref(), args)
}

/// [`admin_command`] on the identity store in `database` (given as `FHIRSIDE_DATABASE_URL`, which
/// commands that take no database ignore), or the data directory's without one.
pub fn admin_command_on(data_dir: &Path, database: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fhirside"));
    command.args(args).arg("--data-dir").arg(data_dir).args(["--output", "json"]);
    match database {
        Some(url) => command.env("FHIRSIDE_DATABASE_URL", url),
        None => command.env_remove("FHIRSIDE_DATABASE_URL"),
    };
    command.output().expect("run fhirside")
}

/// `application/x-www-form-urlencoded` encoding of one value.
pub fn form_encode(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        if !self.data_dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

fn client_config(ca: &Path) -> Arc<rustls::ClientConfig> {
    let pem = std::fs::read(ca).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// A keep-alive HTTP/1.1 client for one server.
pub struct Client {
    host_port: String,
    tls: Option<Arc<rustls::ClientConfig>>,
    conn: Option<BufReader<Box<dyn Stream>>>,
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The diagnostics of an OperationOutcome body, joined, for assertions and failure messages.
    pub fn diagnostics(&self) -> String {
        let json = self.json();
        assert_eq!(json["resourceType"], "OperationOutcome", "expected an OperationOutcome: {json}");
        json["issue"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| format!("{} [{}] {}", i["code"], i["expression"], i["diagnostics"]))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Asserts the status, showing the body when it differs.
    #[track_caller]
    pub fn expect(self, status: u16) -> Response {
        assert_eq!(self.status, status, "unexpected status; body: {}", String::from_utf8_lossy(&self.body));
        self
    }
}

impl Client {
    fn connect(&self) -> std::io::Result<BufReader<Box<dyn Stream>>> {
        let tcp = TcpStream::connect(&self.host_port)?;
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(Duration::from_secs(60)))?;
        let stream: Box<dyn Stream> = match &self.tls {
            None => Box::new(tcp),
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
                let conn = rustls::ClientConnection::new(config.clone(), name).unwrap();
                Box::new(rustls::StreamOwned::new(conn, tcp))
            }
        };
        Ok(BufReader::new(stream))
    }

    pub fn request(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Response {
        self.try_request(method, path, headers, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// Sends one request; a kept-alive connection that turns out closed is replaced once.
    pub fn try_request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> std::io::Result<Response> {
        let reused = self.conn.is_some();
        match self.exchange(method, path, headers, body) {
            Ok(r) => Ok(r),
            Err(_) if reused => {
                self.conn = None;
                self.exchange(method, path, headers, body)
            }
            Err(e) => Err(e),
        }
    }

    fn exchange(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> std::io::Result<Response> {
        if self.conn.is_none() {
            self.conn = Some(self.connect()?);
        }
        let conn = self.conn.as_mut().unwrap();
        let mut head = format!("{method} {path} HTTP/1.1\r\nhost: {}\r\n", self.host_port);
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(body) = body {
            head.push_str(&format!("content-length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(body.unwrap_or_default());
        conn.get_mut().write_all(&out)?;
        conn.get_mut().flush()?;
        let response = read_response(conn, method == "HEAD")?;
        if response.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) {
            self.conn = None;
        }
        Ok(response)
    }
}

fn read_response(conn: &mut BufReader<Box<dyn Stream>>, head_only: bool) -> std::io::Result<Response> {
    let mut line = String::new();
    if conn.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"));
    }
    let status: u16 = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        conn.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').ok_or_else(|| std::io::Error::other("bad header"))?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    let mut body = Vec::new();
    let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    if head_only || status == 204 || status == 304 {
    } else if let Some(len) = header("content-length") {
        body.resize(len.parse().unwrap(), 0);
        conn.read_exact(&mut body)?;
    } else if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            line.clear();
            conn.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim(), 16).map_err(std::io::Error::other)?;
            let mut chunk = vec![0; size + 2];
            conn.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }
    Ok(Response { status, headers, body })
}

/// A resource without the server's `meta.versionId`/`meta.lastUpdated` (and an emptied `meta`
/// removed), for comparing what was sent with what is read back.
pub fn without_server_meta(mut resource: Value) -> Value {
    if let Some(meta) = resource.get_mut("meta").and_then(Value::as_object_mut) {
        meta.remove("versionId");
        meta.remove("lastUpdated");
        if meta.is_empty() {
            resource.as_object_mut().unwrap().remove("meta");
        }
    }
    resource
}

/// The ids of a searchset's `match` entries, in order.
pub fn match_ids(bundle: &Value) -> Vec<String> {
    bundle
        .get("entry")
        .and_then(Value::as_array)
        .map(|e| {
            e.iter()
                .filter(|e| e["search"]["mode"] == "match")
                .map(|e| e["resource"]["id"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The claims of a JWT, decoded without verifying its signature.
pub fn jwt_claims(token: &str) -> Value {
    let part = token.split('.').nth(1).unwrap_or_else(|| panic!("not a JWT: {token}"));
    let bytes = fhirside_identity::b64::decode(part).unwrap_or_else(|| panic!("not base64url: {part}"));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("JWT claims are not JSON ({e})"))
}

impl Server {
    /// The server's identity store, opened as the admin CLI opens it: in its database, if it has
    /// one, else in its data directory.
    pub fn identity_store(&self) -> fhirside_identity::store::IdentityStore {
        let store = match &self.database {
            Some(url) => fhirside_identity::store::IdentityStore::open_postgres(url),
            None => fhirside_identity::store::IdentityStore::open(&self.data_dir),
        };
        store.expect("open the identity store")
    }

    /// Signs `claims` with the built-in authority's current signing key, read from the identity
    /// store, for tokens the authority would never issue (expired, for another audience, …).
    pub fn sign_token(&self, claims: &Value) -> String {
        let store = self.identity_store();
        let keys = store.signing_keys(0).expect("read the signing keys");
        keys.first().expect("the authority has a signing key").sign(claims)
    }

    /// One request with `Authorization: Bearer <token>` and a JSON body of `content_type`.
    pub fn request_as(&self, token: &str, method: &str, path: &str, body: Option<(&str, &Value)>) -> Response {
        let bearer = format!("Bearer {token}");
        let mut headers = vec![("authorization", bearer.as_str())];
        let body = body.map(|(content_type, body)| {
            headers.push(("content-type", content_type));
            body.to_string().into_bytes()
        });
        self.request(method, path, &headers, body.as_deref())
    }
}

//! `fhirside export` and `fhirside import`: bulk `$export` and `$import` run from the command line
//! as clients of a running server, so that they are the very jobs the API runs (resumable, in the
//! job table, visible at their status URLs).
//!
//! Each kicks off its operation, polls the status URL (every second at most, sooner when
//! `Retry-After` asks), shows a progress bar on stderr (resources done, resources/s, ETA when the
//! total is known) and prints a summary on stdout. Ctrl-C cancels the job (`DELETE` on its status
//! URL).
//!
//! The server is `--url`, `FHIRSIDE_URL`, or the URL a local `fhirside serve` recorded in its
//! identity store (as `fhirside token` finds it); the caller authenticates with `--token`, with an
//! app's `--client-id` and `--client-secret` (a token issued by `fhirside token`), or not at all
//! (`--auth none`). The data directory's `tls/ca.pem` is trusted when present.

mod export;
mod import;
mod progress;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

use clap::Args;
use fhirside_fetch::{Client, FetchError, Request, Response, StreamingResponse};
use serde_json::Value;

use progress::Progress;

pub use export::ExportArgs;
pub use import::ImportArgs;

/// Where `fhirside serve` listens by default, when nothing else names the server.
const DEFAULT_URL: &str = "https://127.0.0.1:8443";

/// The longest wait between two status requests.
const MAX_POLL: Duration = Duration::from_secs(1);
/// How long the server may stay unreachable while a job runs before the command gives up.
const UNREACHABLE_GRACE: Duration = Duration::from_secs(30);

/// How to reach and authenticate to the server (shared by `export` and `import`).
#[derive(Args, Debug)]
pub struct ConnectArgs {
    /// The FHIR base URL [default: the URL the local `fhirside serve` recorded, else
    /// https://127.0.0.1:8443].
    #[arg(long, env = "FHIRSIDE_URL")]
    url: Option<String>,
    /// A bearer token for the server.
    #[arg(long, env = "FHIRSIDE_TOKEN", hide_env_values = true, allow_hyphen_values = true)]
    token: Option<String>,
    /// An app's client id: get a token for it from the built-in authority, as `fhirside token`.
    #[arg(long, env = "FHIRSIDE_CLIENT_ID")]
    client_id: Option<String>,
    /// One of the app's client secrets (with --client-id).
    #[arg(long, env = "FHIRSIDE_CLIENT_SECRET", hide_env_values = true, allow_hyphen_values = true)]
    client_secret: Option<String>,
    /// A CA certificate (PEM) to trust [default: the data directory's tls/ca.pem when present].
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// TOML configuration file of the server (its `data_dir` and `database`).
    #[arg(long, env = "FHIRSIDE_CONFIG")]
    config: Option<PathBuf>,
    /// The data directory of the local server [default: ./fhirside-data]: its recorded URL, its
    /// tls/ca.pem, and its identity store for --client-id.
    #[arg(long, env = "FHIRSIDE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The PostgreSQL database of the servers, whose identity store holds the recorded URL and
    /// issues tokens for --client-id.
    #[arg(long, env = "FHIRSIDE_DATABASE_URL")]
    database: Option<String>,
}

/// A command's failure: the message, and the exit code (1, or 2 for refused lines).
pub struct Failure {
    pub message: String,
    pub code: u8,
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure { message, code: 1 }
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Failure {
        Failure { message: message.to_owned(), code: 1 }
    }
}

pub fn run_export(args: ExportArgs) -> ExitCode {
    finish(run_with_interrupt(|job| export::run(args, job)))
}

pub fn run_import(args: ImportArgs) -> ExitCode {
    finish(run_with_interrupt(|job| import::run(args, job)))
}

fn finish(result: Result<(), Failure>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("fhirside: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

/// The job a command started, so that Ctrl-C can cancel it.
#[derive(Default)]
pub struct RunningJob {
    /// The API (for its token) and the status URL, once the job is queued.
    inner: RefCell<Option<(Api, String)>>,
    /// Leave the job alone on Ctrl-C (`export --keep`).
    keep: std::cell::Cell<bool>,
}

impl RunningJob {
    fn started(&self, api: &Api, status: &str) {
        *self.inner.borrow_mut() = Some((api.clone(), status.to_owned()));
    }

    fn finished(&self) {
        *self.inner.borrow_mut() = None;
    }
}

/// Runs a command on a single-threaded runtime; on Ctrl-C, cancels the job it started.
fn run_with_interrupt<F, Fut>(command: F) -> Result<(), Failure>
where
    F: FnOnce(Rc<RunningJob>) -> Fut,
    Fut: std::future::Future<Output = Result<(), Failure>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let job = Rc::new(RunningJob::default());
    runtime.block_on(async move {
        tokio::select! {
            result = command(job.clone()) => result,
            _ = tokio::signal::ctrl_c() => {
                progress::clear_line();
                let running = job.inner.borrow_mut().take();
                let message = match running {
                    Some((_, status)) if job.keep.get() => {
                        format!("interrupted; the job goes on at {status} (DELETE it to cancel)")
                    }
                    Some((api, status)) => match api.send(Request::new("DELETE", &status), true).await {
                        Ok(r) if r.is_success() => "interrupted; the job was cancelled".to_owned(),
                        _ => format!("interrupted; cancelling the job failed: DELETE {status} to cancel it"),
                    },
                    None => "interrupted".to_owned(),
                };
                Err(Failure { message, code: 130 })
            }
        }
    })
}

/// The server: its base URL, a client that trusts its certificate, and the caller's token.
#[derive(Clone)]
pub struct Api {
    client: Client,
    base: String,
    /// Where the base URL came from, for the message when the server does not answer.
    base_source: String,
    auth: Auth,
    token: Rc<RefCell<Option<String>>>,
}

#[derive(Clone)]
enum Auth {
    None,
    Token,
    /// An app of the built-in authority: tokens issued as `fhirside token` issues them, renewed
    /// on a 401.
    App {
        client_id: String,
        client_secret: String,
        target: crate::config::AdminTarget,
    },
}

impl Api {
    pub fn connect(args: ConnectArgs) -> Result<Api, String> {
        let target = crate::config::admin_target(args.data_dir.clone(), args.database.clone(), args.config.as_deref())?;
        let (base, base_source) = match args.url.filter(|u| !u.trim().is_empty()) {
            Some(url) => (url, "from --url or FHIRSIDE_URL".to_owned()),
            None => match recorded_url(&target)? {
                Some(url) => {
                    (url, format!("recorded by `fhirside serve` on {}; or give --url", target.data_dir.display()))
                }
                None => (DEFAULT_URL.to_owned(), "the default; give --url or FHIRSIDE_URL".to_owned()),
            },
        };
        let base = base.trim().trim_end_matches('/').to_owned();
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(format!("the server URL '{base}' is not an http(s) URL"));
        }
        let local_ca = target.data_dir.join("tls").join("ca.pem");
        let ca = args.ca_file.or_else(|| local_ca.is_file().then_some(local_ca));
        let mut client = Client::new(ca.as_deref())?;
        client.set_timeouts(Duration::from_secs(10), Duration::from_secs(60));
        let (auth, token) = match (args.token.filter(|t| !t.is_empty()), args.client_id, args.client_secret) {
            (Some(token), _, _) => (Auth::Token, Some(token)),
            (None, Some(client_id), Some(client_secret)) => {
                (Auth::App { client_id, client_secret, target: target.clone() }, None)
            }
            (None, Some(_), None) => return Err("--client-id needs --client-secret".into()),
            (None, None, Some(_)) => return Err("--client-secret needs --client-id".into()),
            (None, None, None) => (Auth::None, None),
        };
        let api = Api { client, base, base_source, auth, token: Rc::new(RefCell::new(token)) };
        if matches!(api.auth, Auth::App { .. }) {
            api.renew_token()?;
        }
        Ok(api)
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Gets a token for the app as `fhirside token` does: the same identity store, recorded
    /// settings and secret checks.
    fn renew_token(&self) -> Result<(), String> {
        let Auth::App { client_id, client_secret, target } = &self.auth else { return Ok(()) };
        let issued = crate::token::issue(target, client_id, client_secret, None)
            .map_err(|why| format!("cannot get a token for app {client_id}: {why}"))?;
        *self.token.borrow_mut() = Some(issued.access_token);
        Ok(())
    }

    fn with_token(&self, mut request: Request) -> Request {
        if let Some(token) = self.token.borrow().as_deref() {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        request
    }

    /// Sends a request to the server (with the token when `authorize`), reading the whole answer;
    /// on a 401 an app's token is renewed once.
    pub async fn send(&self, request: Request, authorize: bool) -> Result<Response, String> {
        let attempt = move |request: Request| async move {
            let request = if authorize { self.with_token(request) } else { request };
            self.client.send(request).await.map_err(|e| self.unreachable(&e))
        };
        let response = attempt(request.clone()).await?;
        if response.status == 401 && authorize && matches!(self.auth, Auth::App { .. }) {
            self.renew_token()?;
            return attempt(request).await;
        }
        Ok(response)
    }

    /// Like [`send`](Self::send), for a body to stream (downloads).
    pub async fn send_streaming(&self, request: Request, authorize: bool) -> Result<StreamingResponse, String> {
        let attempt = move |request: Request| async move {
            let request = if authorize { self.with_token(request) } else { request };
            self.client.send_streaming(request).await.map_err(|e| self.unreachable(&e))
        };
        let response = attempt(request.clone()).await?;
        if response.status == 401 && authorize && matches!(self.auth, Auth::App { .. }) {
            drop(response);
            self.renew_token()?;
            return attempt(request).await;
        }
        Ok(response)
    }

    /// `GET` of a status URL, read whole (a manifest may be large).
    pub async fn status(&self, url: &str) -> Result<Response, String> {
        let request = Request::new("GET", url).header("accept", "application/json").max_response_bytes(256 << 20);
        self.send(request, true).await
    }

    /// Whether a URL is the server's own (files it serves need the token; others never get it).
    pub fn is_own(&self, url: &str) -> bool {
        origin(url) == origin(&self.base)
    }

    /// A failed request, in words: for the server itself, that it is not reachable and where its
    /// URL came from.
    fn unreachable(&self, error: &FetchError) -> String {
        if !self.is_own(error.url()) {
            return error.to_string();
        }
        let hint = match error {
            FetchError::Tls { .. } => {
                " (a server with its own certificate authority: give --ca-file, or --data-dir for its tls/ca.pem)"
            }
            _ => "",
        };
        match error {
            FetchError::Resolve { .. }
            | FetchError::Connect { .. }
            | FetchError::Tls { .. }
            | FetchError::InsecureUrl { .. }
            | FetchError::InvalidUrl { .. }
            | FetchError::Timeout { phase: fhirside_fetch::TimeoutPhase::Connect, .. } => format!(
                "the FHIR server at {} is not reachable: {error}{hint}. Is `fhirside serve` running there? (URL {})",
                self.base, self.base_source
            ),
            _ => format!("the FHIR server at {}: {error}", self.base),
        }
    }
}

/// The base URL the built-in authority recorded when `fhirside serve` last started on this
/// installation (what `fhirside token` reads), without creating an identity store where none is.
fn recorded_url(target: &crate::config::AdminTarget) -> Result<Option<String>, String> {
    let exists = target.database.is_some() || target.data_dir.join(fhirside_identity::store::FILE_NAME).is_file();
    if !exists {
        return Ok(None);
    }
    let store = crate::identity::open_store(target.database.as_deref(), &target.data_dir)?;
    store.setting(crate::identity::AUTHORITY_BASE).map_err(|e| e.to_string())
}

/// `scheme://host:port` of a URL, lower-cased.
fn origin(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    format!("{}://{}", scheme.to_ascii_lowercase(), authority.to_ascii_lowercase())
}

/// The OperationOutcome's diagnostics of an error answer, or the body's start.
pub fn diagnostics(response: &Response) -> String {
    let parsed: Option<Value> = serde_json::from_slice(&response.body).ok();
    let issues: Vec<String> = parsed
        .as_ref()
        .and_then(|v| v.get("issue"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|issue| {
            issue
                .get("diagnostics")
                .or_else(|| issue.get("details").and_then(|d| d.get("text")))
                .or_else(|| issue.get("code"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect();
    if !issues.is_empty() {
        return issues.join("; ");
    }
    let text = String::from_utf8_lossy(&response.body);
    let text = text.trim();
    if text.is_empty() {
        format!("HTTP {}", response.status)
    } else {
        text.chars().take(500).collect()
    }
}

/// A failed answer of the server, with what it means for the caller.
pub fn refused(what: &str, response: &Response, action: &str) -> String {
    let detail = diagnostics(response);
    let hint = match response.status {
        401 => " Give a token (--token or FHIRSIDE_TOKEN) or an app (--client-id and --client-secret).".to_owned(),
        403 => format!(" The caller needs the '{action}' data action (e.g. the FHIR Data Contributor role)."),
        _ => String::new(),
    };
    format!("{what} ({}): {detail}{hint}", response.status)
}

/// `Retry-After` in seconds, if the answer has one.
pub fn retry_after(response: &Response) -> Option<Duration> {
    response.header("retry-after").and_then(|v| v.trim().parse::<u64>().ok()).map(Duration::from_secs)
}

/// How long to wait before the next status request: as `Retry-After` says, but at most a second.
pub fn poll_interval(response: &Response) -> Duration {
    retry_after(response).unwrap_or(MAX_POLL).clamp(Duration::from_millis(100), MAX_POLL)
}

/// Polls a job's status URL until it answers with something else than `202` (or the server has
/// been unreachable for too long); `progress` gets each `202`'s `X-Progress`.
pub async fn poll(api: &Api, status: &str, mut progress: impl FnMut(&str)) -> Result<Response, String> {
    let mut unreachable_since: Option<std::time::Instant> = None;
    // Small jobs finish in a moment: the first polls come sooner, then every second at most.
    let mut first_polls = Duration::from_millis(100);
    loop {
        match api.status(status).await {
            Ok(response) if response.status == 202 => {
                unreachable_since = None;
                progress(response.header("x-progress").unwrap_or(""));
                tokio::time::sleep(poll_interval(&response).min(first_polls)).await;
                first_polls = (first_polls * 2).min(MAX_POLL);
            }
            Ok(response) => return Ok(response),
            Err(error) => {
                // A job outlives a restart of its server: wait a while for it to come back.
                let since = *unreachable_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() > UNREACHABLE_GRACE {
                    return Err(format!("{error} (the job may go on: its status is at {status})"));
                }
                progress("server not answering; retrying");
                tokio::time::sleep(MAX_POLL).await;
            }
        }
    }
}

/// Polls a running job until it ends, showing its `X-Progress` ("exported 1200 resources; now
/// Patient") as `phase` ("exporting") with the count for `past` ("exported ") and what follows
/// the `; ` as the detail.
pub async fn follow(
    api: &Api,
    status: &str,
    progress: &mut Progress,
    total: Option<u64>,
    (past, phase): (&str, &str),
) -> Result<Response, String> {
    let started = std::time::Instant::now();
    let mut done = 0;
    poll(api, status, |text| {
        if let Some(n) = progress_count(text) {
            done = n;
        }
        let (phase, detail) = match text {
            "queued" => ("queued", ""),
            t if t.starts_with(past) => (phase, t.split_once("; ").map_or("", |(_, d)| d)),
            t => (phase, t),
        };
        progress.show(phase, done, total, started, detail);
    })
    .await
}

/// The number at the start of an `X-Progress` such as "exported 1200 resources; now Patient".
pub fn progress_count(text: &str) -> Option<u64> {
    text.split_whitespace().nth(1)?.parse().ok()
}

/// Counts the lines of NDJSON that hold something (blank lines are skipped by the server, too).
#[derive(Default)]
pub struct LineCounter {
    lines: u64,
    in_line: bool,
}

impl LineCounter {
    pub fn feed(&mut self, data: &[u8]) {
        for &byte in data {
            if byte == b'\n' {
                if self.in_line {
                    self.lines += 1;
                }
                self.in_line = false;
            } else if !byte.is_ascii_whitespace() {
                self.in_line = true;
            }
        }
    }

    /// Lines so far, a last one without its newline included.
    pub fn lines(&self) -> u64 {
        self.lines + u64::from(self.in_line)
    }
}

/// Lines and bytes of a local file.
pub fn count_file(path: &Path) -> Result<(u64, u64), String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut counter = LineCounter::default();
    let mut buffer = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buffer).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if n == 0 {
            return Ok((counter.lines(), bytes));
        }
        bytes += n as u64;
        counter.feed(&buffer[..n]);
    }
}

/// Percent-encodes all but the unreserved characters (and `/` when `keep_slash`).
pub fn percent_encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') || (keep_slash && byte == b'/') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Decodes `%XX` escapes (left as they are when malformed).
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The last segment of a URL's path, decoded: a file's name.
pub fn file_name_of(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    percent_decode(path.rsplit('/').next().unwrap_or(path))
}

/// The summary's last line, the same for both commands.
pub fn summary_line(what: &str, resources: u64, files: usize, bytes: u64, elapsed: Duration) -> String {
    let seconds = elapsed.as_secs_f64();
    let rate = if seconds > 0.0 { resources as f64 / seconds } else { 0.0 };
    format!("{what}: {resources} resources, {files} files, {bytes} bytes, {seconds:.1} s, {rate:.0} resources/s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_lines_with_content() {
        let mut counter = LineCounter::default();
        counter.feed(b"{\"a\":1}\n\n  \n{\"b\"");
        counter.feed(b":2}\n{\"c\":3}");
        assert_eq!(counter.lines(), 3);
    }

    #[test]
    fn urls() {
        assert_eq!(origin("HTTPS://Host:1/x?y"), "https://host:1");
        assert_eq!(file_name_of("https://h/c/job/Patient%2D1.ndjson?sig=x"), "Patient-1.ndjson");
        assert_eq!(percent_encode("/a b/c", true), "/a%20b/c");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(progress_count("exported 1200 resources; now Patient"), Some(1200));
        assert_eq!(progress_count("queued"), None);
    }
}

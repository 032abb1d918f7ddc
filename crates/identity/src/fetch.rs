//! A small outbound HTTP/1.1 client: OpenID Connect discovery and JWKS of external issuers now,
//! and later exports to blob storage and notifications to other services.
//!
//! One connection per request (hyper's `client::conn::http1` over TCP, with rustls for https), no
//! pool, no redirects, no proxy. What it insists on:
//! - **https**, except to the loopback interface (`127.0.0.0/8`, `::1`, `localhost`), because
//!   tokens and keys must not travel in clear;
//! - **trust roots** from the system store (`rustls-native-certs`, which honours `SSL_CERT_FILE`
//!   and `SSL_CERT_DIR`) plus an optional CA file (PEM) from the configuration, e.g. the `ca.pem`
//!   of another Fhirside;
//! - **bounds**: a connect timeout (5 s), a timeout for the whole request (15 s) and a response size
//!   limit (4 MiB), so a slow or hostile peer cannot hold a request or memory;
//! - **errors for logs**: a [`FetchError`] names the URL without its query (which may carry a SAS
//!   token) or user info, and never a request body or a header value.
//!
//! Loading the system store takes a few milliseconds: make one client and clone it.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// How long resolving, connecting and the TLS handshake may take together.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a whole request may take, connection included.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// The largest response body accepted.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 4 << 20;

const USER_AGENT: &str = concat!("fhirside/", env!("CARGO_PKG_VERSION"));

/// An outbound HTTP/1.1 client. Cloning is cheap (the TLS configuration is shared).
#[derive(Clone)]
pub struct HttpClient {
    tls: TlsConnector,
    connect_timeout: Duration,
    request_timeout: Duration,
    max_response_bytes: usize,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("max_response_bytes", &self.max_response_bytes)
            .finish_non_exhaustive()
    }
}

/// A response, read whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    /// Names in lower case, in the order received; values that are not UTF-8 are decoded lossily.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first value of a header (the name is matched case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// A 2xx status.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Which part of a request ran out of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutPhase {
    /// Resolving the host, connecting and the TLS handshake.
    Connect,
    /// The whole request.
    Request,
}

/// Why a request failed. `url` is always the target without its query, fragment or user info.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// Not an absolute `http`/`https` URL this client can use.
    InvalidUrl {
        url: String,
        reason: String,
    },
    /// Plain `http` to a host that is not on the loopback interface.
    InsecureUrl {
        url: String,
    },
    /// A method or header the request cannot carry (the reason names the header, not its value).
    InvalidRequest {
        url: String,
        reason: String,
    },
    /// The host name did not resolve.
    Resolve {
        url: String,
        reason: String,
    },
    /// No address of the host accepted a connection.
    Connect {
        url: String,
        reason: String,
    },
    /// The TLS handshake failed (an untrusted certificate, a name mismatch…).
    Tls {
        url: String,
        reason: String,
    },
    Timeout {
        url: String,
        phase: TimeoutPhase,
        after: Duration,
    },
    /// The peer broke HTTP/1.1 or closed the connection early.
    Protocol {
        url: String,
        reason: String,
    },
    /// The response body is larger than the client's limit.
    TooLarge {
        url: String,
        limit: usize,
    },
}

impl FetchError {
    /// The (redacted) URL of the failed request.
    pub fn url(&self) -> &str {
        match self {
            FetchError::InvalidUrl { url, .. }
            | FetchError::InsecureUrl { url }
            | FetchError::InvalidRequest { url, .. }
            | FetchError::Resolve { url, .. }
            | FetchError::Connect { url, .. }
            | FetchError::Tls { url, .. }
            | FetchError::Timeout { url, .. }
            | FetchError::Protocol { url, .. }
            | FetchError::TooLarge { url, .. } => url,
        }
    }
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::InvalidUrl { url, reason } => write!(f, "invalid URL '{url}': {reason}"),
            FetchError::InsecureUrl { url } => {
                write!(f, "refusing plain http to {url}: only https is allowed beyond the loopback interface")
            }
            FetchError::InvalidRequest { url, reason } => write!(f, "cannot send the request to {url}: {reason}"),
            FetchError::Resolve { url, reason } => write!(f, "cannot resolve the host of {url}: {reason}"),
            FetchError::Connect { url, reason } => write!(f, "cannot connect to {url}: {reason}"),
            FetchError::Tls { url, reason } => write!(f, "TLS handshake with {url} failed: {reason}"),
            FetchError::Timeout { url, phase: TimeoutPhase::Connect, after } => {
                write!(f, "timed out connecting to {url} after {after:?}")
            }
            FetchError::Timeout { url, phase: TimeoutPhase::Request, after } => {
                write!(f, "timed out waiting for {url} after {after:?}")
            }
            FetchError::Protocol { url, reason } => write!(f, "HTTP exchange with {url} failed: {reason}"),
            FetchError::TooLarge { url, limit } => write!(f, "the response from {url} exceeds {limit} bytes"),
        }
    }
}

impl std::error::Error for FetchError {}

impl HttpClient {
    /// A client trusting the system's root certificates and, when given, the certificates of a PEM
    /// file (a private CA). Fails when the file cannot be read or holds no certificate, or when no
    /// root at all is trusted.
    pub fn new(extra_ca_pem: Option<&Path>) -> Result<HttpClient, String> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
        if let Some(path) = extra_ca_pem {
            let shown = path.display();
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("cannot read the CA file {shown}: {e}"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("the CA file {shown}: {e}"))?;
            if certs.is_empty() {
                return Err(format!("the CA file {shown} holds no certificate"));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| format!("the CA file {shown}: {e}"))?;
            }
        }
        if roots.is_empty() {
            let why = native.errors.first().map(|e| format!(" ({e})")).unwrap_or_default();
            return Err(format!(
                "no trusted root certificates: the system store is empty{why} and no CA file is configured"
            ));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(HttpClient {
            tls: TlsConnector::from(Arc::new(config)),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        })
    }

    /// Sets the connect timeout (resolution, TCP and TLS) and the timeout of a whole request.
    pub fn set_timeouts(&mut self, connect: Duration, request: Duration) {
        self.connect_timeout = connect;
        self.request_timeout = request;
    }

    /// Sets the largest response body accepted.
    pub fn set_max_response_bytes(&mut self, limit: usize) {
        self.max_response_bytes = limit;
    }

    pub async fn get(&self, url: &str, headers: &[(&str, &str)]) -> Result<HttpResponse, FetchError> {
        self.request("GET", url, headers, Vec::new()).await
    }

    pub async fn post(&self, url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Result<HttpResponse, FetchError> {
        self.request("POST", url, headers, body).await
    }

    /// Sends one request on a new connection and reads the whole response. Redirects are returned
    /// as they are, not followed. `Host`, `User-Agent` (unless given) and `Connection: close` are
    /// added; `Content-Length` is set for a body.
    pub async fn request(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<HttpResponse, FetchError> {
        let target = parse_url(url)?;
        let shown = target.redacted();
        if !target.tls && !target.may_be_loopback() {
            return Err(FetchError::InsecureUrl { url: shown });
        }
        let request = build_request(&target, &shown, method, headers, body)?;
        match tokio::time::timeout(self.request_timeout, self.exchange(&target, &shown, request)).await {
            Ok(result) => result,
            Err(_) => {
                Err(FetchError::Timeout { url: shown, phase: TimeoutPhase::Request, after: self.request_timeout })
            }
        }
    }

    async fn exchange(
        &self,
        target: &Target,
        shown: &str,
        request: Request<Full<Bytes>>,
    ) -> Result<HttpResponse, FetchError> {
        let connect = async {
            let tcp = connect(target, shown).await?;
            if !target.tls {
                return Ok(Stream::Plain(tcp));
            }
            let name = match target.ip {
                Some(ip) => ServerName::IpAddress(ip.into()),
                None => ServerName::try_from(target.host.clone()).map_err(|e| FetchError::InvalidUrl {
                    url: shown.to_owned(),
                    reason: format!("not a valid TLS server name: {e}"),
                })?,
            };
            let tls = self
                .tls
                .connect(name, tcp)
                .await
                .map_err(|e| FetchError::Tls { url: shown.to_owned(), reason: error_chain(&e) })?;
            Ok(Stream::Tls(Box::new(tls)))
        };
        let stream = tokio::time::timeout(self.connect_timeout, connect).await.map_err(|_| FetchError::Timeout {
            url: shown.to_owned(),
            phase: TimeoutPhase::Connect,
            after: self.connect_timeout,
        })??;
        match stream {
            Stream::Plain(tcp) => send(tcp, request, shown, self.max_response_bytes).await,
            Stream::Tls(tls) => send(*tls, request, shown, self.max_response_bytes).await,
        }
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// Resolves the host and connects to the first address that accepts; over plain http, only to
/// loopback addresses (so `localhost` cannot be pointed elsewhere by a resolver).
async fn connect(target: &Target, shown: &str) -> Result<TcpStream, FetchError> {
    let mut addresses: Vec<SocketAddr> = match target.ip {
        Some(ip) => vec![SocketAddr::new(ip, target.port)],
        None => tokio::net::lookup_host((target.host.as_str(), target.port))
            .await
            .map_err(|e| FetchError::Resolve { url: shown.to_owned(), reason: e.to_string() })?
            .collect(),
    };
    if !target.tls {
        addresses.retain(|a| is_loopback(a.ip()));
        if addresses.is_empty() {
            return Err(FetchError::InsecureUrl { url: shown.to_owned() });
        }
    }
    if addresses.is_empty() {
        return Err(FetchError::Resolve { url: shown.to_owned(), reason: "no address".into() });
    }
    let mut last_error = None;
    for address in addresses {
        match TcpStream::connect(address).await {
            Ok(tcp) => {
                let _ = tcp.set_nodelay(true);
                return Ok(tcp);
            }
            Err(e) => last_error = Some(format!("{address}: {e}")),
        }
    }
    Err(FetchError::Connect { url: shown.to_owned(), reason: last_error.unwrap_or_default() })
}

/// Runs the HTTP/1.1 exchange on `io`, driving the connection in this task (no spawn), so that
/// dropping the future (a timeout) closes the connection.
async fn send<T>(io: T, request: Request<Full<Bytes>>, shown: &str, limit: usize) -> Result<HttpResponse, FetchError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let protocol = |e: &hyper::Error| FetchError::Protocol { url: shown.to_owned(), reason: error_chain(e) };
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(|e| protocol(&e))?;
    let exchange = async {
        let response = sender.send_request(request).await.map_err(|e| protocol(&e))?;
        let (parts, mut body) = response.into_parts();
        let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|length| length > limit as u64) {
            return Err(FetchError::TooLarge { url: shown.to_owned(), limit });
        }
        let mut data = Vec::with_capacity(declared.unwrap_or(0) as usize);
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| protocol(&e))?;
            if let Ok(chunk) = frame.into_data() {
                if data.len() + chunk.len() > limit {
                    return Err(FetchError::TooLarge { url: shown.to_owned(), limit });
                }
                data.extend_from_slice(&chunk);
            }
        }
        let headers = parts
            .headers
            .iter()
            .map(|(name, value)| (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
            .collect();
        Ok(HttpResponse { status: parts.status.as_u16(), headers, body: data })
    };
    let mut exchange = pin!(exchange);
    let mut connection = pin!(connection);
    let mut connection_error = None;
    let mut connection_open = true;
    std::future::poll_fn(|cx| {
        // The connection does the I/O; the exchange reads what it delivers. A connection that
        // fails after delivering the whole response does not fail the request.
        if connection_open {
            if let Poll::Ready(result) = connection.as_mut().poll(cx) {
                connection_open = false;
                connection_error = result.err();
            }
        }
        match exchange.as_mut().poll(cx) {
            Poll::Ready(result) => Poll::Ready(result),
            Poll::Pending => match connection_error.take() {
                Some(e) => Poll::Ready(Err(protocol(&e))),
                None => Poll::Pending,
            },
        }
    })
    .await
}

fn build_request(
    target: &Target,
    shown: &str,
    method: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<Request<Full<Bytes>>, FetchError> {
    let invalid = |reason: String| FetchError::InvalidRequest { url: shown.to_owned(), reason };
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| invalid("invalid method".into()))?;
    let mut request = Request::new(Full::new(Bytes::from(body)));
    *request.method_mut() = method;
    *request.uri_mut() = target
        .path
        .parse()
        .map_err(|e| FetchError::InvalidUrl { url: shown.to_owned(), reason: format!("invalid path: {e}") })?;
    let map = request.headers_mut();
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| invalid(format!("invalid header name '{}'", printable(name, 64))))?;
        let mut value =
            HeaderValue::from_str(value).map_err(|_| invalid(format!("invalid value of header '{name}'")))?;
        if name == header::AUTHORIZATION || name == header::PROXY_AUTHORIZATION || name == header::COOKIE {
            value.set_sensitive(true);
        }
        if name == header::HOST || name == header::CONNECTION || name == header::CONTENT_LENGTH {
            return Err(invalid(format!("the header '{name}' is set by the client")));
        }
        map.append(name, value);
    }
    let host = HeaderValue::from_str(&target.host_header()).map_err(|_| invalid("invalid host".into()))?;
    map.insert(header::HOST, host);
    map.entry(header::USER_AGENT).or_insert(HeaderValue::from_static(USER_AGENT));
    map.insert(header::CONNECTION, HeaderValue::from_static("close"));
    Ok(request)
}

/// An error and its sources, `a: b: c`, for logs.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// At most `max` characters of `text`, control characters replaced, for error messages.
fn printable(text: &str, max: usize) -> String {
    let mut out: String = text.chars().take(max).map(|c| if c.is_control() { '\u{FFFD}' } else { c }).collect();
    if text.chars().count() > max {
        out.push('…');
    }
    out
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    }
}

/// A parsed absolute URL.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    tls: bool,
    /// Lower case, without brackets for IPv6.
    host: String,
    /// The host when it is an IP literal.
    ip: Option<IpAddr>,
    port: u16,
    /// Path and query in origin form (`/a/b?c=d`), percent-encoded where needed.
    path: String,
}

impl Target {
    fn default_port(&self) -> u16 {
        if self.tls {
            443
        } else {
            80
        }
    }

    /// `host[:port]`, with brackets for IPv6 and without a default port.
    fn authority(&self) -> String {
        let host = match self.ip {
            Some(IpAddr::V6(_)) => format!("[{}]", self.host),
            _ => self.host.clone(),
        };
        if self.port == self.default_port() {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    fn host_header(&self) -> String {
        self.authority()
    }

    /// The URL without its query, for messages.
    fn redacted(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        let path = self.path.split('?').next().unwrap_or("/");
        format!("{scheme}://{}{path}", self.authority())
    }

    /// Whether plain http could be allowed: a loopback IP, or `localhost` (whose addresses are
    /// checked again after resolution).
    fn may_be_loopback(&self) -> bool {
        match self.ip {
            Some(ip) => is_loopback(ip),
            None => self.host == "localhost",
        }
    }
}

/// A URL as given, cut before its query and fragment and without user info, for messages about
/// URLs that did not parse.
fn redact_raw(url: &str) -> String {
    let base = url.split(['?', '#']).next().unwrap_or("");
    let shown = match base.split_once("://") {
        Some((scheme, rest)) => {
            let end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(end);
            let authority = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
            format!("{scheme}://{authority}{path}")
        }
        None => base.to_owned(),
    };
    printable(&shown, 200)
}

/// Parses an absolute `http`/`https` URL: scheme, host (a name, an IPv4 address or an IPv6
/// address in brackets), optional port, and path with query. User info is refused; a fragment is
/// dropped; spaces and non-ASCII characters in the path are percent-encoded.
fn parse_url(url: &str) -> Result<Target, FetchError> {
    let invalid = |reason: &str| FetchError::InvalidUrl { url: redact_raw(url), reason: reason.to_owned() };
    let url = url.trim();
    let (scheme, rest) = url.split_once("://").ok_or_else(|| invalid("not an absolute URL"))?;
    let tls = if scheme.eq_ignore_ascii_case("https") {
        true
    } else if scheme.eq_ignore_ascii_case("http") {
        false
    } else {
        return Err(invalid("the scheme must be http or https"));
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.contains('@') {
        return Err(invalid("user info in URLs is not supported"));
    }
    let (host, ip, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (literal, after) = bracketed.split_once(']').ok_or_else(|| invalid("unclosed '[' in the host"))?;
        let ip: Ipv6Addr = literal.parse().map_err(|_| invalid("invalid IPv6 address"))?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or_else(|| invalid("unexpected characters after ']'"))?),
        };
        (ip.to_string(), Some(IpAddr::V6(ip)), port)
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((host, port)) => (host.to_ascii_lowercase(), Some(port)),
            None => (authority.to_ascii_lowercase(), None),
        };
        if host.is_empty() {
            return Err(invalid("no host"));
        }
        if !host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_') {
            return Err(invalid("invalid characters in the host (international names must be given in punycode)"));
        }
        let ip = host.parse::<Ipv4Addr>().ok().map(IpAddr::V4);
        (host, ip, port)
    };
    let port = match port {
        None | Some("") => {
            if tls {
                443
            } else {
                80
            }
        }
        Some(digits) => {
            if !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid("invalid port"));
            }
            match digits.parse::<u16>() {
                Ok(port) if port > 0 => port,
                _ => return Err(invalid("invalid port")),
            }
        }
    };
    let path = path.split('#').next().unwrap_or("");
    let mut encoded = String::with_capacity(path.len() + 1);
    if !path.starts_with('/') {
        encoded.push('/');
    }
    for byte in path.bytes() {
        match byte {
            0..=0x1f | 0x7f => return Err(invalid("control characters in the path")),
            b' ' | b'"' | b'<' | b'>' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}' | 0x80.. => {
                encoded.push_str(&format!("%{byte:02X}"))
            }
            _ => encoded.push(byte as char),
        }
    }
    Ok(Target { tls, host, ip, port, path: encoded })
}

/// A minimal HTTP/1.1 server for tests: one request per connection, answered by a closure.
#[cfg(test)]
pub(crate) mod testing {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[derive(Debug, Clone)]
    pub struct TestRequest {
        pub method: String,
        pub path: String,
        pub headers: Vec<(String, String)>,
        pub body: Vec<u8>,
    }

    impl TestRequest {
        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
        }
    }

    #[derive(Debug, Clone)]
    pub struct TestResponse {
        pub status: u16,
        pub headers: Vec<(String, String)>,
        pub body: Vec<u8>,
        /// Send `Content-Length`; without it the body ends when the connection closes.
        pub content_length: bool,
    }

    impl TestResponse {
        pub fn new(status: u16, body: impl Into<Vec<u8>>) -> TestResponse {
            TestResponse { status, headers: Vec::new(), body: body.into(), content_length: true }
        }

        pub fn json(value: &serde_json::Value) -> TestResponse {
            let mut response = TestResponse::new(200, value.to_string());
            response.headers.push(("Content-Type".into(), "application/json".into()));
            response
        }
    }

    /// Answers a request, or `None` to never answer.
    pub type Handler = Arc<dyn Fn(TestRequest) -> Option<TestResponse> + Send + Sync>;

    /// Serves on `127.0.0.1:0` (over TLS when a configuration is given) until the runtime ends.
    pub async fn serve(handler: Handler, tls: Option<Arc<rustls::ServerConfig>>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let handler = handler.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(tcp).await {
                                answer(tls, handler).await;
                            }
                        }
                        None => answer(tcp, handler).await,
                    }
                });
            }
        });
        address
    }

    async fn answer<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, handler: Handler) {
        let mut buffer = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break at;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let mut request_line = lines.next().unwrap_or("").split(' ');
        let method = request_line.next().unwrap_or("").to_owned();
        let path = request_line.next().unwrap_or("").to_owned();
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let length = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .unwrap_or(0);
        let mut body = buffer[head_end + 4..].to_vec();
        while body.len() < length {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => body.extend_from_slice(&chunk[..n]),
            }
        }
        let Some(response) = handler(TestRequest { method, path, headers, body }) else {
            tokio::time::sleep(std::time::Duration::from_secs(60)).await;
            return;
        };
        let mut out = format!("HTTP/1.1 {} Test\r\n", response.status);
        for (name, value) in &response.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        if response.content_length {
            out.push_str(&format!("Content-Length: {}\r\n", response.body.len()));
        }
        out.push_str("Connection: close\r\n\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&response.body);
        let _ = stream.write_all(&bytes).await;
        let _ = stream.shutdown().await;
    }

    /// A CA (PEM, to trust) and a server configuration whose certificate it signed for
    /// `localhost`, `127.0.0.1` and `::1`.
    pub fn tls_fixture() -> (String, Arc<rustls::ServerConfig>) {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::default();
        ca_params.distinguished_name.push(DnType::CommonName, "Fetch test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]).unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        let private = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], private)
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        (ca_cert.pem(), Arc::new(config))
    }

    /// Writes `contents` to a new file in the temporary directory.
    pub fn temp_file(contents: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("fhirside-test-{}.pem", uuid::Uuid::new_v4()));
        std::fs::write(&path, contents).unwrap();
        path
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::testing::{serve, temp_file, tls_fixture, TestRequest, TestResponse};
    use super::*;

    /// A client that needs no system roots: the test CA is enough.
    fn client_trusting(ca_pem: &str) -> HttpClient {
        let path = temp_file(ca_pem);
        let client = HttpClient::new(Some(&path)).unwrap();
        let _ = std::fs::remove_file(path);
        client
    }

    fn plain_client() -> HttpClient {
        client_trusting(&tls_fixture().0)
    }

    #[test]
    fn parses_urls() {
        let t = parse_url("https://Example.org/a/b?c=d#frag").unwrap();
        assert_eq!(
            (t.tls, t.host.as_str(), t.ip, t.port, t.path.as_str()),
            (true, "example.org", None, 443, "/a/b?c=d")
        );
        assert_eq!(t.host_header(), "example.org");
        assert_eq!(t.redacted(), "https://example.org/a/b");

        let t = parse_url("http://127.0.0.1:8080").unwrap();
        assert_eq!((t.tls, t.port, t.path.as_str()), (false, 8080, "/"));
        assert_eq!(t.ip, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert_eq!(t.host_header(), "127.0.0.1:8080");

        let t = parse_url("https://[::1]:8443?x=1").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.path.as_str()), ("::1", 8443, "/?x=1"));
        assert_eq!(t.ip, Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        assert_eq!(t.host_header(), "[::1]:8443");
        assert_eq!(parse_url("https://[2001:db8::1]/").unwrap().host_header(), "[2001:db8::1]");
        assert_eq!(parse_url("https://h:443/").unwrap().host_header(), "h");
        assert_eq!(parse_url("https://h:/").unwrap().port, 443);
        assert_eq!(parse_url("https://h/a b/é").unwrap().path, "/a%20b/%C3%A9");

        for bad in [
            "ftp://h/",
            "h/path",
            "https:///path",
            "https://user:pw@h/",
            "https://h:0/",
            "https://h:65536/",
            "https://h:8x/",
            "https://[::1/",
            "https://[::1]x/",
            "https://[nothex]/",
            "https://a:1:2/",
            "https://bad host/",
            "https://h/a\r\nInjected: yes",
        ] {
            assert!(matches!(parse_url(bad), Err(FetchError::InvalidUrl { .. })), "{bad}");
        }
        // Credentials in a refused URL are not echoed.
        let error = parse_url("https://user:secret@h/p?sig=topsecret").unwrap_err().to_string();
        assert!(!error.contains("secret"), "{error}");
    }

    #[tokio::test]
    async fn gets_and_posts_over_plain_http_on_loopback() {
        let seen: Arc<Mutex<Vec<TestRequest>>> = Arc::default();
        let log = seen.clone();
        let address = serve(
            Arc::new(move |request: TestRequest| {
                log.lock().unwrap().push(request.clone());
                let mut response = TestResponse::new(201, request.body.clone());
                response.headers.push(("X-Echo-Path".into(), request.path.clone()));
                Some(response)
            }),
            None,
        )
        .await;
        let client = plain_client();

        let url = format!("http://127.0.0.1:{}/a/b?c=d", address.port());
        let response =
            client.get(&url, &[("Accept", "application/json"), ("Authorization", "Bearer t")]).await.unwrap();
        assert_eq!(response.status, 201);
        assert_eq!(response.header("x-echo-path"), Some("/a/b?c=d"));
        assert!(response.body.is_empty());

        let url = format!("http://localhost:{}/post", address.port());
        let response = client.post(&url, &[("Content-Type", "text/plain")], b"hello".to_vec()).await.unwrap();
        assert_eq!(response.body, b"hello");
        assert!(response.is_success());

        let seen = seen.lock().unwrap();
        assert_eq!(seen[0].method, "GET");
        assert_eq!(seen[0].header("host"), Some(format!("127.0.0.1:{}", address.port()).as_str()));
        assert_eq!(seen[0].header("authorization"), Some("Bearer t"));
        assert_eq!(seen[0].header("accept"), Some("application/json"));
        assert!(seen[0].header("user-agent").is_some_and(|ua| ua.starts_with("fhirside/")));
        assert_eq!(seen[1].method, "POST");
        assert_eq!(seen[1].header("host"), Some(format!("localhost:{}", address.port()).as_str()));
        assert_eq!(seen[1].header("content-length"), Some("5"));
    }

    #[tokio::test]
    async fn refuses_plain_http_beyond_loopback_without_connecting() {
        let client = plain_client();
        for url in ["http://example.org/", "http://10.0.0.1/", "http://[2001:db8::1]/", "http://localhost.example/"] {
            let error = client.get(url, &[]).await.unwrap_err();
            assert!(matches!(error, FetchError::InsecureUrl { .. }), "{url}: {error}");
        }
        assert!(client.get("http://127.0.0.2:1/", &[]).await.is_err_and(|e| matches!(e, FetchError::Connect { .. })));
    }

    #[tokio::test]
    async fn https_with_a_configured_ca() {
        let (ca, config) = tls_fixture();
        let address =
            serve(Arc::new(|request: TestRequest| Some(TestResponse::new(200, request.path))), Some(config)).await;
        let client = client_trusting(&ca);
        for host in ["127.0.0.1", "localhost"] {
            let response = client.get(&format!("https://{host}:{}/secure?q=1", address.port()), &[]).await.unwrap();
            assert_eq!((response.status, response.body.as_slice()), (200, b"/secure?q=1".as_slice()));
        }

        // Another CA does not do.
        let (other_ca, _) = tls_fixture();
        let error = client_trusting(&other_ca).get(&format!("https://127.0.0.1:{}/", address.port()), &[]).await;
        assert!(matches!(error, Err(FetchError::Tls { .. })), "{error:?}");
        // Nor does the system store (when this machine has one).
        if let Ok(system) = HttpClient::new(None) {
            let error = system.get(&format!("https://localhost:{}/", address.port()), &[]).await;
            assert!(matches!(error, Err(FetchError::Tls { .. })), "{error:?}");
        }
    }

    #[test]
    fn refuses_a_ca_file_without_certificates() {
        let path = temp_file("not a certificate\n");
        assert!(HttpClient::new(Some(&path)).unwrap_err().contains("holds no certificate"));
        let _ = std::fs::remove_file(path);
        assert!(HttpClient::new(Some(Path::new("/nonexistent/ca.pem"))).unwrap_err().contains("cannot read"));
    }

    #[tokio::test]
    async fn limits_the_response_size() {
        let address = serve(
            Arc::new(|request: TestRequest| {
                let size = if request.path.starts_with("/big") { DEFAULT_MAX_RESPONSE_BYTES + 1 } else { 1000 };
                let mut response = TestResponse::new(200, vec![b'x'; size]);
                response.content_length = !request.path.ends_with("unsized");
                Some(response)
            }),
            None,
        )
        .await;
        let mut client = plain_client();
        let base = format!("http://127.0.0.1:{}", address.port());
        for path in ["/big", "/big-unsized"] {
            let error = client.get(&format!("{base}{path}"), &[]).await.unwrap_err();
            assert!(matches!(error, FetchError::TooLarge { limit: DEFAULT_MAX_RESPONSE_BYTES, .. }), "{error}");
        }
        assert_eq!(client.get(&format!("{base}/small-unsized"), &[]).await.unwrap().body.len(), 1000);
        client.set_max_response_bytes(999);
        for path in ["/small", "/small-unsized"] {
            let error = client.get(&format!("{base}{path}"), &[]).await.unwrap_err();
            assert!(matches!(error, FetchError::TooLarge { limit: 999, .. }), "{error}");
        }
    }

    #[tokio::test]
    async fn follows_no_redirects() {
        let address = serve(
            Arc::new(|_| {
                let mut response = TestResponse::new(302, "");
                response.headers.push(("Location".into(), "https://elsewhere.example/".into()));
                Some(response)
            }),
            None,
        )
        .await;
        let response = plain_client().get(&format!("http://127.0.0.1:{}/", address.port()), &[]).await.unwrap();
        assert_eq!(response.status, 302);
        assert_eq!(response.header("location"), Some("https://elsewhere.example/"));
    }

    #[tokio::test]
    async fn times_out_and_errors_keep_secrets_out() {
        let address = serve(Arc::new(|_| None), None).await;
        let mut client = plain_client();
        client.set_timeouts(Duration::from_secs(5), Duration::from_millis(200));
        let url = format!("http://127.0.0.1:{}/slow?sig=secret-sas", address.port());
        let error = client.post(&url, &[("Authorization", "Bearer secret-token")], b"secret-body".to_vec()).await;
        let error = error.unwrap_err();
        assert!(matches!(error, FetchError::Timeout { phase: TimeoutPhase::Request, .. }), "{error}");
        let text = error.to_string();
        assert!(text.contains(&format!("127.0.0.1:{}/slow", address.port())), "{text}");
        assert!(!text.contains("secret"), "{text}");

        let error = client.get(&url, &[("Authorization", "Bearer secret\r\nX: y")]).await.unwrap_err();
        assert!(matches!(error, FetchError::InvalidRequest { .. }), "{error}");
        assert!(!error.to_string().contains("secret"), "{error}");
        let error = client.get(&url, &[("Host", "elsewhere")]).await.unwrap_err();
        assert!(matches!(error, FetchError::InvalidRequest { .. }), "{error}");
    }
}

//! Fhirside's outbound HTTP/1.1 client: OpenID Connect discovery and JWKS of external issuers,
//! bulk data in blob storage (Azure Blob Storage, S3), and later notifications to other services.
//!
//! One connection per request (hyper's `client::conn::http1` over TCP, with rustls for https), no
//! pool, no redirects, no proxy. What it insists on:
//! - **https**, except to the loopback interface (`127.0.0.0/8`, `::1`, `localhost`), because
//!   tokens and keys must not travel in clear (emulators such as Azurite and moto listen on
//!   `http://127.0.0.1`), and to the instance metadata address `169.254.169.254` for a request
//!   that asks for it ([`Request::instance_metadata`]: cloud platforms hand out identity tokens
//!   there over http only). Other requests, such as those to URLs a client supplied, cannot reach
//!   it;
//! - **trust roots** from the system store (`rustls-native-certs`, which honours `SSL_CERT_FILE`
//!   and `SSL_CERT_DIR`) plus an optional CA file (PEM) from the configuration, e.g. the `ca.pem`
//!   of another Fhirside;
//! - **bounds**: a connect timeout (5 s), a timeout for the whole request (15 s) and a response size
//!   limit (4 MiB) by default, each of which a [`Request`] may change, so that a slow or hostile
//!   peer cannot hold a request or memory. A streamed response ([`Client::send_streaming`], for
//!   multi-GB downloads) is bounded by a timeout until its head and then by an idle timeout between
//!   parts of its body;
//! - **errors for logs**: a [`FetchError`] names the URL without its query (which may carry a SAS
//!   token) or user info, and never a request body or a header value.
//!
//! Loading the system store takes a few milliseconds: make one client and clone it.

mod error;
mod exchange;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod url;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio_rustls::TlsConnector;

pub use error::{FetchError, TimeoutPhase};
pub use exchange::StreamingResponse;
pub use url::{host_header, redact};

/// How long resolving, connecting and the TLS handshake may take together.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a whole request may take, connection included.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// The largest response body accepted.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 4 << 20;

/// An outbound HTTP/1.1 client. Cloning is cheap (the TLS configuration is shared).
#[derive(Clone)]
pub struct Client {
    tls: TlsConnector,
    connect_timeout: Duration,
    request_timeout: Duration,
    max_response_bytes: usize,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("max_response_bytes", &self.max_response_bytes)
            .finish_non_exhaustive()
    }
}

/// A response, read whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Names in lower case, in the order received; values that are not UTF-8 are decoded lossily.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of a header (the name is matched case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// A 2xx status.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

pub(crate) fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// A request to send: method, URL, headers and body, and bounds that override the client's.
///
/// `Host`, `User-Agent` (unless given) and `Connection: close` are added when it is sent, and
/// `Content-Length` for a body (and for an empty `PUT`, `POST` or `PATCH`, which servers such as
/// Azure's insist on); the caller may set none of `Host`, `Connection` or `Content-Length`.
#[derive(Clone)]
pub struct Request {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Bytes,
    timeout: Option<Duration>,
    idle_timeout: Option<Duration>,
    max_response_bytes: Option<usize>,
    instance_metadata: bool,
}

impl std::fmt::Debug for Request {
    // Header values and the query may hold secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("url", &redact(&self.url))
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

impl Request {
    pub fn new(method: &str, url: &str) -> Request {
        Request {
            method: method.to_owned(),
            url: url.to_owned(),
            headers: Vec::new(),
            body: Bytes::new(),
            timeout: None,
            idle_timeout: None,
            max_response_bytes: None,
            instance_metadata: false,
        }
    }

    /// Adds a header (repeated names are sent as repeated headers).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Request {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Request {
        self.body = body.into();
        self
    }

    /// How long the request may take: the whole exchange for [`Client::send`], the exchange up to
    /// the response's head for [`Client::send_streaming`]. Defaults to the client's.
    pub fn timeout(mut self, timeout: Duration) -> Request {
        self.timeout = Some(timeout);
        self
    }

    /// For a streamed response, the longest wait for the next part of the body. Defaults to the
    /// request's timeout.
    pub fn idle_timeout(mut self, timeout: Duration) -> Request {
        self.idle_timeout = Some(timeout);
        self
    }

    /// The largest response body accepted. Defaults to the client's for [`Client::send`], and to
    /// no limit for [`Client::send_streaming`] (whose reader decides what it keeps).
    pub fn max_response_bytes(mut self, limit: usize) -> Request {
        self.max_response_bytes = Some(limit);
        self
    }

    /// Allows plain http to the instance metadata address, `http://169.254.169.254` (the IPv4
    /// literal only), for this request. It is opt-in so that a URL from elsewhere (an `$import`
    /// input, a webhook) cannot make the server read the platform's metadata or identity tokens.
    pub fn instance_metadata(mut self) -> Request {
        self.instance_metadata = true;
        self
    }
}

impl Client {
    /// A client trusting the system's root certificates and, when given, the certificates of a PEM
    /// file (a private CA). Fails when the file cannot be read or holds no certificate, or when no
    /// root at all is trusted.
    pub fn new(extra_ca_pem: Option<&Path>) -> Result<Client, String> {
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
        Ok(Client {
            tls: TlsConnector::from(Arc::new(config)),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        })
    }

    /// Sets the connect timeout (resolution, TCP and TLS) and the default timeout of a request.
    pub fn set_timeouts(&mut self, connect: Duration, request: Duration) {
        self.connect_timeout = connect;
        self.request_timeout = request;
    }

    /// Sets the default largest response body accepted by [`send`](Self::send).
    pub fn set_max_response_bytes(&mut self, limit: usize) {
        self.max_response_bytes = limit;
    }

    pub async fn get(&self, url: &str, headers: &[(&str, &str)]) -> Result<Response, FetchError> {
        self.request("GET", url, headers, Bytes::new()).await
    }

    pub async fn post(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Response, FetchError> {
        self.request("POST", url, headers, body).await
    }

    /// Sends one request with the client's bounds and reads the whole response. Redirects are
    /// returned as they are, not followed.
    pub async fn request(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Response, FetchError> {
        let mut request = Request::new(method, url).body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request).await
    }

    /// Sends one request on a new connection and reads the whole response (within the request's
    /// timeout and size limit, or the client's).
    pub async fn send(&self, request: Request) -> Result<Response, FetchError> {
        let timeout = request.timeout.unwrap_or(self.request_timeout);
        let limit = request.max_response_bytes.unwrap_or(self.max_response_bytes);
        let shown = redact(&request.url);
        let exchange = async {
            let mut response = self.open(request, None, None).await?;
            let body = response.read_to_end(limit).await?;
            Ok(Response { status: response.status, headers: std::mem::take(&mut response.headers), body })
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(FetchError::Timeout { url: shown, phase: TimeoutPhase::Request, after: timeout }),
        }
    }

    /// Sends one request on a new connection and returns the response once its head has arrived;
    /// the body is then read part by part with [`StreamingResponse::chunk`]. Dropping the response
    /// closes the connection.
    pub async fn send_streaming(&self, request: Request) -> Result<StreamingResponse, FetchError> {
        let timeout = request.timeout.unwrap_or(self.request_timeout);
        let idle = request.idle_timeout.unwrap_or(timeout);
        let limit = request.max_response_bytes;
        let shown = redact(&request.url);
        match tokio::time::timeout(timeout, self.open(request, Some(idle), limit)).await {
            Ok(result) => result,
            Err(_) => Err(FetchError::Timeout { url: shown, phase: TimeoutPhase::Request, after: timeout }),
        }
    }
}

#[cfg(test)]
mod tests;

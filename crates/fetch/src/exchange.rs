//! One HTTP/1.1 exchange on a connection of its own, its response body read part by part.
//!
//! hyper's connection future does the I/O; it is driven by whoever awaits the response (no
//! spawned task), so that dropping the response, or a timeout dropping the future, closes the
//! connection at once.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::Method;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::url::{error_chain, is_loopback, parse_url, printable, Target};
use crate::{Client, FetchError, Request, TimeoutPhase};

const USER_AGENT: &str = concat!("fhirside/", env!("CARGO_PKG_VERSION"));

type Connection = Pin<Box<dyn Future<Output = Result<(), hyper::Error>> + Send>>;

/// A response whose body is read part by part, for bodies too large to hold (multi-GB exports).
/// Dropping it closes the connection.
pub struct StreamingResponse {
    pub status: u16,
    /// Names in lower case, in the order received; values that are not UTF-8 are decoded lossily.
    pub headers: Vec<(String, String)>,
    body: Incoming,
    /// `None` once the connection has finished (and been dropped, which ends the body).
    connection: Option<Connection>,
    connection_error: Option<hyper::Error>,
    /// Kept so that hyper does not wind the connection down before the body is read.
    _sender: SendRequest<Full<Bytes>>,
    url: String,
    /// `None` when read whole by [`Client::send`], whose timeout covers everything.
    idle_timeout: Option<Duration>,
    limit: Option<usize>,
    received: usize,
    finished: bool,
}

impl std::fmt::Debug for StreamingResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamingResponse")
            .field("status", &self.status)
            .field("url", &self.url)
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

impl StreamingResponse {
    /// The first value of a header (the name is matched case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::header(&self.headers, name)
    }

    /// A 2xx status.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The `Content-Length` the server declared, if any.
    pub fn content_length(&self) -> Option<u64> {
        self.header("content-length")?.trim().parse().ok()
    }

    /// The URL of the request, redacted, for messages.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The next part of the body, or `None` at its end. Fails when the peer stalls longer than
    /// the idle timeout, breaks the exchange, or sends more than the request's size limit.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, FetchError> {
        let Some(idle) = self.idle_timeout else {
            return self.next_data().await;
        };
        match tokio::time::timeout(idle, self.next_data()).await {
            Ok(result) => result,
            Err(_) => Err(FetchError::Timeout { url: self.url.clone(), phase: TimeoutPhase::Body, after: idle }),
        }
    }

    /// Reads the rest of the body into memory, refusing more than `limit` bytes (checked against
    /// `Content-Length` first, so that an announced large body is refused without reading it).
    pub async fn read_to_end(&mut self, limit: usize) -> Result<Vec<u8>, FetchError> {
        let declared = self.content_length();
        if declared.is_some_and(|length| length > limit as u64) {
            return Err(FetchError::TooLarge { url: self.url.clone(), limit });
        }
        let mut data = Vec::with_capacity(declared.unwrap_or(0) as usize);
        while let Some(chunk) = self.chunk().await? {
            if data.len() + chunk.len() > limit {
                return Err(FetchError::TooLarge { url: self.url.clone(), limit });
            }
            data.extend_from_slice(&chunk);
        }
        Ok(data)
    }

    async fn next_data(&mut self) -> Result<Option<Bytes>, FetchError> {
        while !self.finished {
            let frame = std::future::poll_fn(|cx| self.poll_frame(cx)).await;
            match frame {
                None => self.finished = true,
                Some(Err(e)) => return Err(protocol(&self.url, &e)),
                // Trailers and empty frames carry nothing for the reader.
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => {
                        self.received += data.len();
                        if let Some(limit) = self.limit.filter(|limit| self.received > *limit) {
                            return Err(FetchError::TooLarge { url: self.url.clone(), limit });
                        }
                        return Ok(Some(data));
                    }
                    _ => {}
                },
            }
        }
        Ok(None)
    }

    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        // A connection that fails after delivering the whole body does not fail the read.
        if let Some(connection) = self.connection.as_mut() {
            if let Poll::Ready(result) = connection.as_mut().poll(cx) {
                self.connection = None;
                self.connection_error = result.err();
            }
        }
        match Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Pending => match self.connection_error.take() {
                Some(e) => Poll::Ready(Some(Err(e))),
                None => Poll::Pending,
            },
            ready => ready,
        }
    }
}

fn protocol(url: &str, error: &hyper::Error) -> FetchError {
    FetchError::Protocol { url: url.to_owned(), reason: error_chain(error) }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Client {
    /// Connects, sends `request` and waits for the response's head. No overall timeout here: the
    /// callers wrap this in theirs.
    pub(crate) async fn open(
        &self,
        request: Request,
        idle_timeout: Option<Duration>,
        limit: Option<usize>,
    ) -> Result<StreamingResponse, FetchError> {
        let target = parse_url(&request.url)?;
        let shown = target.redacted();
        if !target.tls && !target.may_use_plain_http(request.instance_metadata) {
            return Err(FetchError::InsecureUrl { url: shown });
        }
        let http_request = build_request(&target, &shown, request)?;
        let stream =
            tokio::time::timeout(self.connect_timeout, self.connect(&target, &shown)).await.map_err(|_| {
                FetchError::Timeout { url: shown.clone(), phase: TimeoutPhase::Connect, after: self.connect_timeout }
            })??;
        let (mut sender, mut connection) = match stream {
            Stream::Plain(tcp) => handshake(tcp, &shown).await?,
            Stream::Tls(tls) => handshake(*tls, &shown).await?,
        };
        let mut send = std::pin::pin!(sender.send_request(http_request));
        let mut connection_open = true;
        let mut connection_error = None;
        let response = std::future::poll_fn(|cx| {
            if connection_open {
                if let Poll::Ready(result) = connection.as_mut().poll(cx) {
                    connection_open = false;
                    connection_error = result.err();
                }
            }
            match send.as_mut().poll(cx) {
                Poll::Pending => match connection_error.take() {
                    Some(e) => Poll::Ready(Err(e)),
                    None => Poll::Pending,
                },
                ready => ready,
            }
        })
        .await
        .map_err(|e| protocol(&shown, &e))?;
        let (parts, body) = response.into_parts();
        let headers = parts
            .headers
            .iter()
            .map(|(name, value)| (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
            .collect();
        Ok(StreamingResponse {
            status: parts.status.as_u16(),
            headers,
            body,
            connection: connection_open.then_some(connection),
            connection_error: None,
            _sender: sender,
            url: shown,
            idle_timeout,
            limit,
            received: 0,
            finished: false,
        })
    }

    async fn connect(&self, target: &Target, shown: &str) -> Result<Stream, FetchError> {
        let tcp = connect_tcp(target, shown).await?;
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
    }
}

async fn handshake<T>(io: T, shown: &str) -> Result<(SendRequest<Full<Bytes>>, Connection), FetchError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(|e| protocol(shown, &e))?;
    Ok((sender, Box::pin(connection)))
}

/// Resolves the host and connects to the first address that accepts; over plain http, a name
/// (`localhost`) only to loopback addresses, so that a resolver cannot point it elsewhere. An IP
/// literal has been checked already.
async fn connect_tcp(target: &Target, shown: &str) -> Result<TcpStream, FetchError> {
    let mut addresses: Vec<SocketAddr> = match target.ip {
        Some(ip) => vec![SocketAddr::new(ip, target.port)],
        None => tokio::net::lookup_host((target.host.as_str(), target.port))
            .await
            .map_err(|e| FetchError::Resolve { url: shown.to_owned(), reason: e.to_string() })?
            .collect(),
    };
    if !target.tls && target.ip.is_none() {
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

fn build_request(target: &Target, shown: &str, request: Request) -> Result<hyper::Request<Full<Bytes>>, FetchError> {
    let invalid = |reason: String| FetchError::InvalidRequest { url: shown.to_owned(), reason };
    let method = Method::from_bytes(request.method.as_bytes()).map_err(|_| invalid("invalid method".into()))?;
    let empty_upload = request.body.is_empty() && [Method::PUT, Method::POST, Method::PATCH].contains(&method);
    let mut http_request = hyper::Request::new(Full::new(request.body));
    *http_request.method_mut() = method;
    *http_request.uri_mut() = target
        .path
        .parse()
        .map_err(|e| FetchError::InvalidUrl { url: shown.to_owned(), reason: format!("invalid path: {e}") })?;
    let map = http_request.headers_mut();
    for (name, value) in &request.headers {
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
    // hyper sends no length for an empty body, and some servers answer an upload without one
    // with 411 Length Required.
    if empty_upload {
        map.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    }
    Ok(http_request)
}

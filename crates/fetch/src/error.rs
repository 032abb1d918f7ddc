//! Why a request failed, in words fit for logs.

use std::time::Duration;

/// Which part of a request ran out of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutPhase {
    /// Resolving the host, connecting and the TLS handshake.
    Connect,
    /// The whole request (for a streamed response: until its status and headers arrived).
    Request,
    /// Waiting for the next part of a streamed response body.
    Body,
}

/// Why a request failed. `url` is always the target without its query, fragment or user info.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// Not an absolute `http`/`https` URL this client can use.
    InvalidUrl {
        url: String,
        reason: String,
    },
    /// Plain `http` to a host that is not on the loopback interface (nor the instance metadata
    /// address, for a request allowed to reach it).
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
            FetchError::Timeout { url, phase: TimeoutPhase::Body, after } => {
                write!(f, "the response body from {url} stalled for {after:?}")
            }
            FetchError::Protocol { url, reason } => write!(f, "HTTP exchange with {url} failed: {reason}"),
            FetchError::TooLarge { url, limit } => write!(f, "the response from {url} exceeds {limit} bytes"),
        }
    }
}

impl std::error::Error for FetchError {}

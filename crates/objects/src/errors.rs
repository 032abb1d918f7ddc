//! What can go wrong with stored objects, typed so that callers can tell "missing" from "denied"
//! from "try again later". Messages name the backend, the operation, the container and what the
//! service answered (HTTP status and error code); never credentials, SAS tokens or signatures.

use fhirside_fetch::FetchError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectError {
    /// The container or the object does not exist.
    NotFound(String),
    /// Credentials are missing, wrong or lack a permission (HTTP 401/403), or a local path lies
    /// outside the allowed directories.
    Denied(String),
    /// A container name, key, URL or setting that cannot be used; found before anything was sent.
    Invalid(String),
    /// The service could not be reached, timed out or failed (HTTP 5xx, throttling): worth trying
    /// again later.
    Unavailable(String),
    /// The service refused the request or answered something unexpected (another 4xx, a malformed
    /// body).
    Rejected(String),
    /// Reading or writing the local filesystem failed.
    Io(String),
}

impl ObjectError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, ObjectError::Unavailable(_))
    }

    pub fn message(&self) -> &str {
        match self {
            ObjectError::NotFound(m)
            | ObjectError::Denied(m)
            | ObjectError::Invalid(m)
            | ObjectError::Unavailable(m)
            | ObjectError::Rejected(m)
            | ObjectError::Io(m) => m,
        }
    }
}

impl std::fmt::Display for ObjectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for ObjectError {}

/// A failed exchange with a storage service. `what` says which service and operation
/// ("Azure Blob put"). The fetch error's URL is already without its query (where a SAS lives).
pub(crate) fn from_fetch(what: &str, error: FetchError) -> ObjectError {
    let message = format!("{what}: {error}");
    match error {
        FetchError::InvalidUrl { .. } | FetchError::InsecureUrl { .. } | FetchError::InvalidRequest { .. } => {
            ObjectError::Invalid(message)
        }
        FetchError::TooLarge { .. } => ObjectError::Rejected(message),
        FetchError::Resolve { .. }
        | FetchError::Connect { .. }
        | FetchError::Tls { .. }
        | FetchError::Timeout { .. }
        | FetchError::Protocol { .. } => ObjectError::Unavailable(message),
    }
}

/// An HTTP answer that is not the expected success. `code` is the service's error code
/// (`x-ms-error-code`, S3's `<Code>`), which names the problem without echoing the request.
pub(crate) fn from_status(what: &str, status: u16, code: Option<&str>) -> ObjectError {
    let message = match code {
        Some(code) if !code.is_empty() => format!("{what}: HTTP {status} {}", printable(code)),
        _ => format!("{what}: HTTP {status}"),
    };
    match status {
        404 => ObjectError::NotFound(message),
        401 | 403 => ObjectError::Denied(message),
        408 | 429 | 500.. => ObjectError::Unavailable(message),
        _ => ObjectError::Rejected(message),
    }
}

/// A local filesystem error; `what` names the operation and the container, not the path of the
/// object (which the caller knows).
pub(crate) fn from_io(what: &str, error: &std::io::Error) -> ObjectError {
    let message = format!("{what}: {error}");
    match error.kind() {
        std::io::ErrorKind::NotFound => ObjectError::NotFound(message),
        std::io::ErrorKind::PermissionDenied => ObjectError::Denied(message),
        _ => ObjectError::Io(message),
    }
}

/// At most 100 characters, without control characters: error codes come from the peer.
fn printable(text: &str) -> String {
    text.chars().take(100).map(|c| if c.is_control() { '\u{FFFD}' } else { c }).collect()
}

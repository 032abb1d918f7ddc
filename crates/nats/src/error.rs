//! Why an operation failed, in words fit for logs: an [`Error`] never carries the password or the
//! token of a [`crate::Config`] (they are only ever written into the CONNECT line).

use std::fmt;

/// What kind of failure an [`Error`] is, so that a caller can tell a configuration to fix from a
/// server to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The URL or a name in the configuration cannot be used; retrying will not help.
    Config,
    /// The TCP connection failed, broke or was closed.
    Io,
    /// The server said something this client does not understand (or is not NATS).
    Protocol,
    /// The server refused the connection or an operation with `-ERR` (authorization, permissions…).
    Server,
    /// The JetStream API answered with an error (`{"error": {"code", "err_code", "description"}}`),
    /// or JetStream is not available.
    Api,
    /// The server did not answer in time.
    Timeout,
    /// The caller broke the contract of the API (e.g. asked for a batch before acknowledging the last).
    Usage,
}

/// A failed NATS operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    /// The JetStream API's `err_code` (e.g. 10059 "stream not found"), when the server gave one.
    api_code: Option<u64>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error { kind, message: message.into(), api_code: None }
    }

    pub(crate) fn config(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Config, message)
    }

    pub(crate) fn protocol(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Protocol, message)
    }

    pub(crate) fn api(message: impl Into<String>, api_code: Option<u64>) -> Error {
        Error { kind: ErrorKind::Api, message: message.into(), api_code }
    }

    pub(crate) fn io(context: &str, error: &std::io::Error) -> Error {
        Error::new(ErrorKind::Io, format!("{context}: {error}"))
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The JetStream API's `err_code`, for errors of kind [`ErrorKind::Api`] that carry one.
    pub fn api_code(&self) -> Option<u64> {
        self.api_code
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NATS: ")?;
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

//! Why a connection, subscription or publication failed, in words fit for logs.
//!
//! An error names the broker (`host:port`) but never a password: neither the configuration nor
//! a URL is ever formatted into one.

use std::fmt;

/// What kind of failure, for a caller that decides whether reconnecting can help: the refusals
/// (`BadCredentials`, `NotAuthorized`, `SubscriptionRefused`, `InvalidConfig`) are configuration
/// faults that a reconnection will repeat; the others are worth a reconnection after a pause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The URL or another setting cannot be used (a wrong scheme, a port out of range…).
    InvalidConfig,
    /// The call itself was wrong: `next_batch` before `ack`, a wildcard in a topic to publish to…
    Usage,
    /// No TCP connection to the broker (refused, unreachable, the name did not resolve).
    Connect,
    /// CONNACK return code 4: the user name or password is wrong.
    BadCredentials,
    /// CONNACK return code 5: the client may not connect (e.g. anonymous where the broker requires a user).
    NotAuthorized,
    /// Another CONNACK return code: unacceptable protocol version (1), client identifier rejected (2),
    /// server unavailable (3), or an unknown code.
    Refused,
    /// SUBACK returned 0x80: the broker refused the topic filter (often an ACL).
    SubscriptionRefused,
    /// The broker did not answer in time (CONNACK, SUBACK, PUBACK, PINGRESP) or a write stalled.
    Timeout,
    /// The broker closed the connection.
    Closed,
    /// Reading or writing the socket failed.
    Io,
    /// The broker sent something that is not MQTT 3.1.1 or not expected at that point.
    Protocol,
    /// A packet (received or to send) exceeds the client's size limit ([`crate::MAX_PACKET_SIZE`]).
    TooLarge,
}

/// A failure, with the broker it concerns when there was one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    broker: Option<String>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error { kind, message: message.into(), broker: None }
    }

    /// Names the broker (`host:port`) in the message, once.
    pub(crate) fn at(mut self, broker: &str) -> Error {
        if self.broker.is_none() {
            self.broker = Some(broker.to_owned());
        }
        self
    }

    pub(crate) fn protocol(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Protocol, message)
    }

    pub(crate) fn io(kind: ErrorKind, what: &str, e: std::io::Error) -> Error {
        Error::new(kind, format!("{what}: {e}"))
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.broker {
            Some(broker) => write!(f, "MQTT broker {broker}: {}", self.message),
            None => write!(f, "MQTT: {}", self.message),
        }
    }
}

impl std::error::Error for Error {}

//! One TCP connection to a NATS server: the INFO/CONNECT handshake, a read buffer that frames are
//! parsed from as bytes arrive, an output buffer written in one go (so a batch of 1,000 acks or
//! publishes is a few TCP writes, not 1,000), PING answered with PONG, and request/reply over the
//! connection's own inbox.
//!
//! Both buffers keep their progress in `self`, so a caller's future can be dropped between or
//! inside reads and writes (e.g. in a `select!` on shutdown) without losing or tearing a frame.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, timeout_at, Instant};

use crate::config::Config;
use crate::error::{Error, ErrorKind};
use crate::proto::{self, Frame, Msg};

/// Connecting plus the handshake; a server that accepts TCP but says nothing is not a NATS server.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A write that makes no progress for this long means the server stopped reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Room for a header block beyond `max_payload` (JetStream adds headers to some messages).
const HEADER_ALLOWANCE: usize = 64 * 1024;
/// The sid of the subscription to `<inbox>.>`, which every reply to this connection arrives on.
pub const INBOX_SID: u64 = 1;

/// What the server says about itself in INFO. Only what this client acts on.
#[derive(Debug, Deserialize)]
struct ServerInfo {
    #[serde(default)]
    version: String,
    #[serde(default)]
    max_payload: Option<u64>,
    #[serde(default)]
    headers: bool,
    #[serde(default)]
    tls_required: bool,
}

pub struct Connection {
    tcp: TcpStream,
    input: Vec<u8>,
    /// Where the unparsed bytes of `input` start.
    consumed: usize,
    output: Vec<u8>,
    /// How much of `output` is on the wire.
    written: usize,
    max_payload: usize,
    version: (u64, u64, u64),
    /// `_INBOX.<unique>`: replies to this connection arrive on subjects below it.
    inbox: String,
    next_request: u64,
    broken: Option<Error>,
}

impl Connection {
    /// Connects, reads INFO, sends CONNECT (verbose and pedantic off, headers and no_responders on:
    /// a request nobody serves then fails at once with a 503 status instead of timing out) and
    /// waits for the PONG of a PING, which is when the server has accepted the credentials.
    pub async fn open(config: &Config) -> Result<Connection, Error> {
        config.validate()?;
        let address = config.address();
        let tcp = match timeout(HANDSHAKE_TIMEOUT, TcpStream::connect(&address)).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(error)) => return Err(Error::io(&format!("cannot connect to {address}"), &error)),
            Err(_) => return Err(Error::new(ErrorKind::Timeout, format!("connecting to {address} timed out"))),
        };
        // Acks and pull requests are small writes that are waited on: Nagle would add latency.
        let _ = tcp.set_nodelay(true);
        let mut connection = Connection {
            tcp,
            input: Vec::with_capacity(64 * 1024),
            consumed: 0,
            output: Vec::with_capacity(64 * 1024),
            written: 0,
            max_payload: 1024 * 1024,
            version: (0, 0, 0),
            inbox: format!("_INBOX.{}", unique_token()),
            next_request: 0,
            broken: None,
        };
        let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
        let info = match connection.read_raw(Some(deadline)).await? {
            Some(Frame::Info(json)) => json,
            Some(_) => return Err(Error::protocol(format!("{address} did not start with INFO: not a NATS server?"))),
            None => return Err(Error::new(ErrorKind::Timeout, format!("{address} sent no INFO"))),
        };
        let info: ServerInfo = serde_json::from_str(&info)
            .map_err(|e| Error::protocol(format!("the INFO of {address} is not valid: {e}")))?;
        if info.tls_required {
            return Err(Error::config(format!("{address} requires TLS, which this client does not speak")));
        }
        if !info.headers {
            return Err(Error::config(format!("{address} does not support headers (NATS 2.2 or later is needed)")));
        }
        connection.version = parse_version(&info.version);
        if let Some(max) = info.max_payload {
            connection.max_payload = usize::try_from(max).unwrap_or(usize::MAX);
        }

        let mut options = serde_json::json!({
            "verbose": false, "pedantic": false, "headers": true, "no_responders": true,
            "lang": "rust", "version": env!("CARGO_PKG_VERSION"), "name": "fhirside-nats", "protocol": 1,
        });
        if let Some(user) = &config.user {
            options["user"] = user.clone().into();
        }
        if let Some(password) = &config.password {
            options["pass"] = password.clone().into();
        }
        if let Some(token) = &config.token {
            options["auth_token"] = token.clone().into();
        }
        proto::connect(&mut connection.output, &options);
        connection.output.extend_from_slice(proto::PING);
        let inbox = format!("{}.>", connection.inbox);
        proto::subscribe(&mut connection.output, &inbox, INBOX_SID);
        connection.flush().await?;
        loop {
            match connection.read_frame(Some(deadline)).await {
                Ok(Some(Frame::Pong)) => return Ok(connection),
                Ok(Some(_)) => continue,
                Ok(None) => return Err(Error::new(ErrorKind::Timeout, format!("{address} did not answer CONNECT"))),
                Err(error) if error.kind() == ErrorKind::Server => {
                    return Err(Error::new(ErrorKind::Server, format!("{address} refused the connection: {error}")))
                }
                Err(error) => return Err(error),
            }
        }
    }

    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// The server's version as (major, minor, patch); (0, 0, 0) if it did not say.
    pub fn version(&self) -> (u64, u64, u64) {
        self.version
    }

    /// A fresh subject below this connection's inbox.
    pub fn new_reply_subject(&mut self, kind: &str) -> String {
        self.next_request += 1;
        format!("{}.{kind}.{}", self.inbox, self.next_request)
    }

    /// The output buffer, to append frames with [`proto`]'s encoders before [`Connection::flush`].
    pub fn output(&mut self) -> &mut Vec<u8> {
        &mut self.output
    }

    pub async fn flush(&mut self) -> Result<(), Error> {
        self.check()?;
        while self.written < self.output.len() {
            match timeout(WRITE_TIMEOUT, self.tcp.write(&self.output[self.written..])).await {
                Ok(Ok(0)) => return Err(self.fail(Error::new(ErrorKind::Io, "the server closed the connection"))),
                Ok(Ok(n)) => self.written += n,
                Ok(Err(error)) => return Err(self.fail(Error::io("writing to the server", &error))),
                Err(_) => return Err(self.fail(Error::new(ErrorKind::Timeout, "the server stopped reading"))),
            }
        }
        self.output.clear();
        self.written = 0;
        Ok(())
    }

    /// The next MSG/HMSG or PONG, or `None` at `deadline`. PINGs are answered, +OK and later INFOs
    /// skipped; `-ERR` is an error (the server closes the connection after most of them).
    pub async fn read_frame(&mut self, deadline: Option<Instant>) -> Result<Option<Frame>, Error> {
        loop {
            match self.read_raw(deadline).await? {
                Some(Frame::Ping) => {
                    self.output.extend_from_slice(proto::PONG);
                    self.flush().await?;
                }
                Some(Frame::Ok) => {}
                Some(Frame::Info(json)) => {
                    if let Ok(ServerInfo { max_payload: Some(max), .. }) = serde_json::from_str(&json) {
                        self.max_payload = usize::try_from(max).unwrap_or(usize::MAX);
                    }
                }
                Some(Frame::Err(message)) => {
                    return Err(self.fail(Error::new(ErrorKind::Server, format!("the server said -ERR {message:?}"))))
                }
                other => return Ok(other),
            }
        }
    }

    /// Sends `payload` to `subject` and waits for the reply. Messages for other subjects that arrive
    /// meanwhile are dropped: requests are only made while nothing else is in flight.
    pub async fn request(&mut self, subject: &str, payload: &[u8], wait: Duration) -> Result<Msg, Error> {
        let reply = self.new_reply_subject("req");
        proto::publish(&mut self.output, subject, Some(&reply), payload);
        self.flush().await?;
        let deadline = Instant::now() + wait;
        loop {
            match self.read_frame(Some(deadline)).await? {
                Some(Frame::Msg(msg)) if msg.subject == reply => return Ok(msg),
                Some(_) => {}
                None => return Err(Error::new(ErrorKind::Timeout, format!("no reply to {subject} within {wait:?}"))),
            }
        }
    }

    async fn read_raw(&mut self, deadline: Option<Instant>) -> Result<Option<Frame>, Error> {
        self.check()?;
        loop {
            let max_size = self.max_payload.saturating_add(HEADER_ALLOWANCE);
            match proto::parse(&self.input[self.consumed..], max_size) {
                Ok(Some((frame, used))) => {
                    self.consumed += used;
                    return Ok(Some(frame));
                }
                Ok(None) => {}
                Err(error) => return Err(self.fail(error)),
            }
            // Keep the buffer from growing: drop what has been parsed before reading more.
            if self.consumed == self.input.len() {
                self.input.clear();
                self.consumed = 0;
            } else if self.consumed > 0
                && (self.consumed >= 64 * 1024 || self.input.capacity() - self.input.len() < 4096)
            {
                self.input.drain(..self.consumed);
                self.consumed = 0;
            }
            self.input.reserve(64 * 1024);
            let read = self.tcp.read_buf(&mut self.input);
            let result = match deadline {
                Some(deadline) => match timeout_at(deadline, read).await {
                    Ok(result) => result,
                    Err(_) => return Ok(None),
                },
                None => read.await,
            };
            match result {
                Ok(0) => return Err(self.fail(Error::new(ErrorKind::Io, "the server closed the connection"))),
                Ok(_) => {}
                Err(error) => return Err(self.fail(Error::io("reading from the server", &error))),
            }
        }
    }

    /// After a protocol or I/O error the byte stream cannot be trusted: every later call fails.
    fn fail(&mut self, error: Error) -> Error {
        self.broken = Some(error.clone());
        error
    }

    fn check(&self) -> Result<(), Error> {
        match &self.broken {
            Some(error) => {
                Err(Error::new(error.kind(), format!("the connection is unusable after an earlier error ({error})")))
            }
            None => Ok(()),
        }
    }
}

fn parse_version(version: &str) -> (u64, u64, u64) {
    let mut parts = version.split(|c: char| !c.is_ascii_digit()).map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// 64 random-enough bits in hex, for inbox subjects that must not collide between connections and
/// processes: the std hasher's per-process random keys, the time and a counter.
pub fn unique_token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher
        .write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    hasher.write_u32(std::process::id());
    format!("{:016x}", hasher.finish())
}

#[cfg(test)]
mod tests {
    #[test]
    fn versions() {
        assert_eq!(super::parse_version("2.9.10"), (2, 9, 10));
        assert_eq!(super::parse_version("2.11.0-beta.1"), (2, 11, 0));
        assert_eq!(super::parse_version(""), (0, 0, 0));
    }
}

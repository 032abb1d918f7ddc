//! One TCP connection to a broker: the CONNECT/CONNACK handshake, a read buffer that packets are
//! decoded from in place, and a write buffer.
//!
//! Both halves are cancel-safe, so a caller may drop a `next_batch` future (a shutdown signal, a
//! timeout) and call again: reads land in `read_buf` and are only consumed once a whole packet
//! decoded; writes go out of `write_buf` with `write`, which reports what it took, so an
//! interrupted flush resumes where it stopped instead of sending half a packet twice.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::config::Config;
use crate::error::{Error, ErrorKind};
use crate::packet::{self, Packet, MAX_PACKET_SIZE};

/// How long connecting, the broker's answers to CONNECT and SUBSCRIBE, and a stalled write may take.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// How much to ask the socket for at once: a batch of small messages in a few reads.
const READ_CHUNK: usize = 64 * 1024;

pub(crate) struct Connection {
    stream: TcpStream,
    /// `host:port`, for errors.
    pub broker: String,
    read_buf: Vec<u8>,
    /// Bytes of `read_buf` already decoded; compacted away before the next read.
    read_pos: usize,
    write_buf: Vec<u8>,
    write_pos: usize,
    /// When a packet last left, for keep-alive: any packet counts, not only PINGREQ.
    pub last_sent: Instant,
}

impl Connection {
    /// Connects and completes CONNECT/CONNACK; returns the connection and CONNACK's "session
    /// present" flag.
    pub async fn open(config: &Config, clean_session: bool) -> Result<(Connection, bool), Error> {
        let broker = config.broker();
        let connect = TcpStream::connect((config.host.as_str(), config.port));
        let stream = match tokio::time::timeout(IO_TIMEOUT, connect).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(Error::io(ErrorKind::Connect, "cannot connect", e).at(&broker)),
            Err(_) => {
                return Err(Error::new(ErrorKind::Timeout, format!("no connection within {IO_TIMEOUT:?}")).at(&broker))
            }
        };
        // Small packets (PUBACKs, PINGREQ) must not wait for Nagle's algorithm: the broker holds
        // the next messages until it sees the acknowledgements.
        stream.set_nodelay(true).map_err(|e| Error::io(ErrorKind::Io, "cannot set TCP_NODELAY", e).at(&broker))?;
        let mut connection = Connection {
            stream,
            broker,
            read_buf: Vec::with_capacity(READ_CHUNK),
            read_pos: 0,
            write_buf: Vec::new(),
            write_pos: 0,
            last_sent: Instant::now(),
        };
        let connect = packet::Connect {
            client_id: &config.client_id,
            username: config.username.as_deref(),
            password: config.password.as_deref(),
            clean_session,
            keep_alive_secs: config.keep_alive_secs(),
        };
        packet::encode_connect(&mut connection.write_buf, &connect).map_err(|e| e.at(&connection.broker))?;
        let deadline = Instant::now() + IO_TIMEOUT;
        connection.flush_by(deadline).await?;
        let session_present = match connection.next_packet_by(deadline, "CONNACK").await? {
            Packet::ConnAck { session_present, return_code: 0 } => session_present,
            Packet::ConnAck { return_code, .. } => return Err(refusal(return_code).at(&connection.broker)),
            other => return Err(connection.unexpected(&other, "CONNACK")),
        };
        Ok((connection, session_present))
    }

    /// Appends bytes to send at the next flush.
    pub fn write_buf(&mut self) -> &mut Vec<u8> {
        &mut self.write_buf
    }

    pub fn has_unsent(&self) -> bool {
        self.write_pos < self.write_buf.len()
    }

    /// Sends everything buffered.
    pub async fn flush(&mut self) -> Result<(), Error> {
        while self.write_pos < self.write_buf.len() {
            let written = self.stream.write(&self.write_buf[self.write_pos..]).await;
            match written {
                Ok(0) => return Err(Error::new(ErrorKind::Closed, "connection closed while writing").at(&self.broker)),
                Ok(n) => {
                    self.write_pos += n;
                    self.last_sent = Instant::now();
                }
                Err(e) => return Err(Error::io(ErrorKind::Io, "write failed", e).at(&self.broker)),
            }
        }
        self.write_buf.clear();
        self.write_pos = 0;
        Ok(())
    }

    /// [`Connection::flush`], bounded: a broker that stops reading is as good as gone.
    pub async fn flush_by(&mut self, deadline: Instant) -> Result<(), Error> {
        match tokio::time::timeout_at(deadline, self.flush()).await {
            Ok(result) => result,
            Err(_) => Err(Error::new(ErrorKind::Timeout, "the broker stopped reading").at(&self.broker)),
        }
    }

    /// The next whole packet already read, if any.
    pub fn decode(&mut self) -> Result<Option<Packet>, Error> {
        match packet::decode(&self.read_buf[self.read_pos..], MAX_PACKET_SIZE) {
            Ok(Some((packet, used))) => {
                self.read_pos += used;
                Ok(Some(packet))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(e.at(&self.broker)),
        }
    }

    /// Reads what the socket has (waiting for at least a byte). End of stream is an error: a
    /// broker closes the connection only when it gave up on the client.
    pub async fn read_more(&mut self) -> Result<(), Error> {
        if self.read_pos > 0 {
            self.read_buf.drain(..self.read_pos);
            self.read_pos = 0;
        }
        self.read_buf.reserve(READ_CHUNK);
        match self.stream.read_buf(&mut self.read_buf).await {
            Ok(0) => Err(Error::new(ErrorKind::Closed, "the broker closed the connection").at(&self.broker)),
            Ok(_) => Ok(()),
            Err(e) => Err(Error::io(ErrorKind::Io, "read failed", e).at(&self.broker)),
        }
    }

    /// The next packet, reading as needed until `deadline`.
    pub async fn next_packet_by(&mut self, deadline: Instant, awaited: &str) -> Result<Packet, Error> {
        loop {
            if let Some(packet) = self.decode()? {
                return Ok(packet);
            }
            match tokio::time::timeout_at(deadline, self.read_more()).await {
                Ok(result) => result?,
                Err(_) => {
                    return Err(
                        Error::new(ErrorKind::Timeout, format!("no {awaited} within {IO_TIMEOUT:?}")).at(&self.broker)
                    )
                }
            }
        }
    }

    pub fn unexpected(&self, packet: &Packet, awaited: &str) -> Error {
        let name = match packet {
            Packet::ConnAck { .. } => "CONNACK",
            Packet::Publish(_) => "PUBLISH",
            Packet::PubAck(_) => "PUBACK",
            Packet::PubRec(_) => "PUBREC",
            Packet::PubRel(_) => "PUBREL",
            Packet::PubComp(_) => "PUBCOMP",
            Packet::SubAck { .. } => "SUBACK",
            Packet::UnsubAck(_) => "UNSUBACK",
            Packet::PingResp => "PINGRESP",
        };
        Error::protocol(format!("unexpected {name} while waiting for {awaited}")).at(&self.broker)
    }

    /// Best effort, without waiting: DISCONNECT tells the broker the client leaves on purpose (it
    /// does not publish a will, and logs no error). If the socket cannot take two bytes now, the
    /// broker sees the connection drop instead, which is just as safe for a QoS 1 session.
    pub fn disconnect_now(&mut self) {
        if !self.has_unsent() {
            let _ = self.stream.try_write(&packet::DISCONNECT_PACKET);
        }
    }

    /// DISCONNECT, then close; waits for the bytes to leave.
    pub async fn disconnect(mut self) {
        self.write_buf.extend_from_slice(&packet::DISCONNECT_PACKET);
        let deadline = Instant::now() + Duration::from_secs(1);
        if self.flush_by(deadline).await.is_ok() {
            let _ = tokio::time::timeout_at(deadline, self.stream.shutdown()).await;
        }
    }
}

/// CONNACK's return codes (MQTT 3.1.1 §3.2.2.3), in words an operator can act on.
fn refusal(code: u8) -> Error {
    let (kind, reason) = match code {
        1 => (ErrorKind::Refused, "unacceptable protocol version (the broker does not speak MQTT 3.1.1)"),
        2 => (ErrorKind::Refused, "client identifier rejected"),
        3 => (ErrorKind::Refused, "server unavailable"),
        4 => (ErrorKind::BadCredentials, "bad user name or password"),
        5 => (ErrorKind::NotAuthorized, "not authorized (missing or wrong credentials, or an ACL)"),
        _ => (ErrorKind::Refused, "refused with an unknown return code"),
    };
    Error::new(kind, format!("connection refused: {reason} (CONNACK return code {code})"))
}

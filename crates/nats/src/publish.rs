//! Publishing through JetStream for tests and benchmarks: every payload is sent with a reply subject
//! and counts as published once its PubAck (`{"stream": …, "seq": …}`) has come back. Publishes are
//! pipelined — up to [`WINDOW`] in flight, written in large buffers — so 50,000 messages take a
//! fraction of a second rather than 50,000 round trips.

use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use crate::config::{check_subject, Config};
use crate::connection::Connection;
use crate::error::{Error, ErrorKind};
use crate::jetstream;
use crate::proto::{self, Frame};

/// Publishes without a PubAck yet. Bounded so that a slow stream (or a failing one) does not make
/// the client buffer everything, and the server's outbound queue to us stays small.
const WINDOW: usize = 4096;
/// Write when this much is buffered, rather than building one buffer of every payload.
const WRITE_CHUNK: usize = 256 * 1024;
/// A PubAck may take this long (file storage syncing) before publishing is given up.
const PUBACK_TIMEOUT: Duration = Duration::from_secs(10);

/// Publishes each payload, in order, to `config.subject` and returns once JetStream has stored
/// every one. Each is sent with the header `Nats-Expected-Stream: <config.stream>`, so a message
/// that would land in another stream is refused. On an error some payloads may have been stored.
pub async fn publish(config: &Config, payloads: &[Vec<u8>]) -> Result<(), Error> {
    config.validate()?;
    check_subject(&config.subject, false)?;
    let mut connection = Connection::open(config).await?;
    let max_payload = connection.max_payload();
    if let Some(too_big) = payloads.iter().position(|p| p.len() > max_payload) {
        return Err(Error::config(format!(
            "payload {too_big} is larger than the server's max_payload ({max_payload} bytes)"
        )));
    }
    let prefix = format!("{}.", connection.new_reply_subject("pub"));
    let headers = [("Nats-Expected-Stream", config.stream.as_str())];
    let (mut sent, mut acked) = (0, 0);
    let mut reply = String::with_capacity(prefix.len() + 8);
    while acked < payloads.len() {
        while sent < payloads.len() && sent - acked < WINDOW && connection.output().len() < WRITE_CHUNK {
            reply.clear();
            reply.push_str(&prefix);
            reply.push_str(&sent.to_string());
            proto::publish_with_headers(connection.output(), &config.subject, Some(&reply), &headers, &payloads[sent]);
            sent += 1;
        }
        connection.flush().await?;
        // Read PubAcks until there is room for more (or all are in), not one by one.
        let enough = |acked: usize| acked == payloads.len() || (sent < payloads.len() && sent - acked <= WINDOW / 2);
        let mut deadline = Instant::now() + PUBACK_TIMEOUT;
        while !enough(acked) {
            match connection.read_frame(Some(deadline)).await? {
                Some(Frame::Msg(msg)) if msg.subject.starts_with(&prefix) => {
                    if let Some(status) = msg.status {
                        return Err(match status.code {
                            503 => Error::api(
                                format!(
                                    "no stream captures {} (no responders): call ensure_stream first",
                                    config.subject
                                ),
                                None,
                            ),
                            code => {
                                Error::api(format!("publishing failed with status {code} {}", status.description), None)
                            }
                        });
                    }
                    let answer: Value = serde_json::from_slice(&msg.payload)
                        .map_err(|e| Error::protocol(format!("a PubAck is not JSON: {e}")))?;
                    if let Some(error) = answer.get("error") {
                        return Err(jetstream::api_error(&format!("publishing to {}", config.subject), error));
                    }
                    acked += 1;
                    deadline = Instant::now() + PUBACK_TIMEOUT;
                }
                Some(_) => {}
                None => {
                    return Err(Error::new(
                        ErrorKind::Timeout,
                        format!("no PubAck within {PUBACK_TIMEOUT:?} ({acked} of {} stored)", payloads.len()),
                    ))
                }
            }
        }
    }
    Ok(())
}

/// Creates `config.stream` (file storage, `subjects: [config.subject]`) unless it exists, and checks
/// that an existing one captures `config.subject`.
pub async fn ensure_stream(config: &Config) -> Result<(), Error> {
    let mut connection = Connection::open(config).await?;
    jetstream::ensure_stream(&mut connection, config).await
}

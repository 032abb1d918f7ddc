//! Publishing a list of payloads at QoS 1, pipelined: for tests and benchmarks that feed the
//! subscriber, not for devices.
//!
//! One round trip per message would cap a loopback publisher at a few thousand messages a second,
//! below what the subscriber is measured at; so up to [`WINDOW`] messages are in flight, the next
//! ones written as PUBACKs come back (a broker acknowledges in the order it received, §4.6).

use tokio::time::Instant;

use crate::config::Config;
use crate::connection::{Connection, IO_TIMEOUT};
use crate::error::{Error, ErrorKind};
use crate::packet::{self, Packet, MAX_PACKET_SIZE};

/// Unacknowledged messages at most. Mosquitto does not limit a 3.1.1 client's incoming QoS 1
/// messages, and 4-byte PUBACKs for this many fit in any socket buffer, so the broker never blocks
/// writing acknowledgements while this client is busy writing messages.
const WINDOW: usize = 2_000;

/// Bytes encoded ahead of a write, so large payloads are not all copied into memory at once.
const WRITE_AHEAD: usize = 1024 * 1024;

/// Publishes each payload to `topic` at QoS 1 and returns once the broker acknowledged every one
/// (PUBACK), keeping many in flight. Connects with a clean session under `config.client_id`,
/// which must not be a subscriber's: the broker would disconnect the subscriber.
///
/// Note that a broker acknowledges a message it then drops (Mosquitto: larger than its
/// `message_size_limit`, or beyond a subscriber's `max_queued_messages`).
pub async fn publish(config: &Config, topic: &str, payloads: &[Vec<u8>]) -> Result<(), Error> {
    if topic.is_empty() || topic.len() > usize::from(u16::MAX) || topic.contains(['+', '#', '\0']) {
        let message = "a topic to publish to is 1 to 65535 bytes, without wildcards ('+', '#') or NUL";
        return Err(Error::new(ErrorKind::Usage, message));
    }
    if let Some(size) = payloads.iter().map(|p| packet::publish_size(topic, p)).find(|&s| s > MAX_PACKET_SIZE) {
        let message = format!("a message of {size} bytes exceeds the limit of {MAX_PACKET_SIZE} bytes");
        return Err(Error::new(ErrorKind::TooLarge, message));
    }
    if payloads.is_empty() {
        return Ok(());
    }
    let (mut connection, _) = Connection::open(config, true).await?;
    let mut outstanding = vec![false; usize::from(u16::MAX) + 1];
    let (mut in_flight, mut sent, mut acknowledged) = (0usize, 0usize, 0usize);
    let mut next_id: u16 = 1;
    while acknowledged < payloads.len() {
        // Refill once half the window came back, so writes stay large.
        if in_flight <= WINDOW / 2 {
            while sent < payloads.len() && in_flight < WINDOW && connection.write_buf().len() < WRITE_AHEAD {
                while outstanding[usize::from(next_id)] {
                    next_id = next_id.checked_add(1).unwrap_or(1);
                }
                packet::encode_publish_qos1(connection.write_buf(), topic, next_id, &payloads[sent])?;
                outstanding[usize::from(next_id)] = true;
                next_id = next_id.checked_add(1).unwrap_or(1);
                in_flight += 1;
                sent += 1;
            }
            connection.flush_by(Instant::now() + IO_TIMEOUT).await?;
        }
        let mut packet = Some(connection.next_packet_by(Instant::now() + IO_TIMEOUT, "PUBACK").await?);
        while let Some(p) = packet {
            match p {
                Packet::PubAck(id) if outstanding[usize::from(id)] => {
                    outstanding[usize::from(id)] = false;
                    in_flight -= 1;
                    acknowledged += 1;
                }
                Packet::PubAck(id) => {
                    let message = format!("PUBACK for packet {id}, which is not in flight");
                    return Err(Error::protocol(message).at(&connection.broker));
                }
                Packet::PingResp => {}
                other => return Err(connection.unexpected(&other, "PUBACK")),
            }
            packet = connection.decode()?;
        }
    }
    connection.disconnect().await;
    Ok(())
}

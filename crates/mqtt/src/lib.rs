//! A minimal MQTT 3.1.1 client over TCP, written by hand on tokio: the MedTech service's way to
//! receive device telemetry, and its tests' and benchmark's way to send it.
//!
//! - [`Subscriber`]: one QoS 1 subscription in a persistent session (clean session off), read in
//!   batches ([`Subscriber::next_batch`]) and acknowledged per batch ([`Subscriber::ack`]) once
//!   the caller has stored the messages durably: at-least-once delivery, duplicates possible
//!   after a reconnection, nothing lost.
//! - [`publish`]: a list of payloads at QoS 1, pipelined, returning once all are acknowledged.
//!
//! It must not know FHIR, MedTech's mappings or the resource store: it moves topics and bytes.
//! Left out on purpose: TLS (`mqtts://` is refused, not downgraded), MQTT 5, wills, retained
//! publishing, unsubscribing, more than one subscription per connection, reconnecting by itself
//! (an error means: drop the subscriber and connect again, which the caller paces).
//!
//! # Broker settings
//!
//! A broker sends a client at most a window of unacknowledged QoS 1 messages and then waits for
//! PUBACKs. In Mosquitto that window is `max_inflight_messages` (default **20**) for a 3.1.1
//! client like this one; an MQTT 5 client states its own (Receive Maximum), a 3.1.1 client has
//! no say. Since the subscriber acknowledges only per batch, a batch cannot outgrow the window:
//! with 20, a broker that keeps to it yields batches of 20, each closed by `linger` rather than
//! by `max`, about a thousand messages a second at a 20 ms linger. (Mosquitto 2.0.11, the one
//! tested here, keeps to it only for the first window: each PUBACK then releases another 20, so
//! batches reach 1,000 from the third on; a deployment should not count on that.) Set, in
//! `mosquitto.conf` (all global):
//!
//! ```text
//! max_inflight_messages 1000     # at least the subscriber's batch size (0 = no limit)
//! max_queued_messages 1000000    # per client, above those in flight, also while it is away;
//!                                # beyond it Mosquitto drops messages silently (default 1000)
//! max_queued_bytes 1073741824    # and a bound in bytes on that queue (default: none)
//! persistence true               # sessions and queues survive a broker restart
//! autosave_interval 60           # (seconds between saves: what a broker crash can lose)
//! # persistent_client_expiration: leave unset, so the subscriber's session never expires
//! ```
//!
//! Measured with `examples/subscribe_throughput.rs` (numbers there): a 50,000-message backlog
//! drains at about 300,000 messages/s in batches of 1,000 on this 2-core machine, so the client is
//! not what limits MedTech's ingestion.
//!
//! The caller must also come back (`ack`, then `next_batch`) within 1.5 times the keep-alive
//! ([`Config::keep_alive`], 30 s by default), because the client pings only while it waits.

mod config;
mod connection;
mod error;
mod packet;
mod publish;
mod subscriber;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
mod tests;

pub use config::{Config, DEFAULT_KEEP_ALIVE, DEFAULT_PORT};
pub use error::{Error, ErrorKind};
pub use packet::MAX_PACKET_SIZE;
pub use publish::publish;
pub use subscriber::Subscriber;

/// A message as delivered: the topic it was published to (not the filter) and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
}

//! A minimal NATS client for Fhirside: consuming a JetStream stream through a durable pull consumer
//! in batches, at least once (a batch is acknowledged only after the caller has stored it), and
//! publishing to JetStream with pipelined PubAcks for tests and benchmarks.
//!
//! It is written by hand over tokio TCP — the text protocol in `proto`, one connection in
//! `connection`, the JetStream API in `jetstream` — because a full client (`async-nats`) brings a
//! large dependency tree for the few operations needed here. What it does not do: TLS, NKey/JWT
//! credentials, reconnecting (a caller makes a new [`Subscriber`]; unacknowledged messages come back
//! after the consumer's `ack_wait`), core NATS subscriptions, key-value or object stores.
//!
//! It must not know FHIR, MedTech mappings, or the resource store: it moves opaque payloads.
//!
//! ```no_run
//! # async fn run() -> Result<(), fhirside_nats::Error> {
//! use std::time::Duration;
//! let config = fhirside_nats::Config::from_url("nats://127.0.0.1:4222", "TELEMETRY", "devices.telemetry", "fhirside")?;
//! let mut subscriber = fhirside_nats::Subscriber::connect(&config).await?;
//! loop {
//!     let batch = subscriber.next_batch(1000, Duration::from_millis(50)).await?;
//!     // … store every message durably …
//!     subscriber.ack().await?;
//! }
//! # }
//! ```

mod config;
mod connection;
mod error;
mod jetstream;
mod proto;
mod publish;
mod subscriber;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
mod tests;

pub use config::Config;
pub use error::{Error, ErrorKind};
pub use publish::{ensure_stream, publish};
pub use subscriber::Subscriber;

/// A message delivered by JetStream: the subject it was published to and its payload (headers, if
/// any, are dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub subject: String,
    pub payload: Vec<u8>,
}

//! The relay: Fhirside's receiving side of an integration engine shaped like Redox. Upstream
//! systems (sources) post FHIR data to an environment; the relay stores each message durably and
//! delivers it, at least once, to every verified destination of that environment: a FHIR service
//! (Fhirside itself, Azure Health Data Services, …) reached with an OAuth 2.0 client-credentials
//! token from an auth credential, or a standard HTTPS endpoint checked with a verification token.
//!
//! What it holds ([`store`]): environments, auth credentials (secrets kept, never shown),
//! destinations (with the wizard's rules: [`model`]), sources and their keys, messages and one
//! delivery per message and destination with its attempts (Redox's "logs"). What it does:
//! [`worker`] leases due deliveries from the store's own queue table and sends them
//! ([`deliver`]), with tokens cached per credential ([`token`]), exponential backoff with jitter
//! ([`backoff`]), a circuit breaker per destination ([`breaker`]), per-patient ordering, a
//! dead-letter state and replay. Bundles are rewritten before they leave ([`rewrite`]) so that a
//! delivery repeated after a crash or a lost answer never duplicates data at the target.
//!
//! It knows SQL (its own tables) and outbound HTTP (over `fhirside-fetch`), not the resource store
//! and not serving HTTP: the Platform API's routes are the server's `relay/` module.

pub mod assertion;
pub mod backoff;
pub mod breaker;
pub mod deliver;
mod error;
pub mod model;
pub mod rewrite;
pub mod store;
pub mod token;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

pub use error::{RelayError, Result};
pub use store::RelayStore;

/// How deliveries are retried; the defaults suit a production feed, tests shorten them.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Attempts of one delivery before it is dead-lettered (replay starts a new round).
    pub max_attempts: u32,
    /// The first retry's delay; each later one doubles, up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// Consecutive failed attempts to a destination that open its circuit.
    pub breaker_threshold: u32,
    /// How long an open circuit holds deliveries back before one trial attempt.
    pub breaker_open: Duration,
    /// How long a leased delivery is held by its worker; longer than one attempt can take.
    pub lease: Duration,
    /// Deliveries one process sends at once.
    pub concurrency: usize,
}

impl Default for RelayConfig {
    fn default() -> RelayConfig {
        RelayConfig {
            max_attempts: 12,
            retry_base: Duration::from_secs(10),
            retry_max: Duration::from_secs(600),
            breaker_threshold: 5,
            breaker_open: Duration::from_secs(30),
            lease: Duration::from_secs(120),
            concurrency: 4,
        }
    }
}

/// The relay of one process: its store, outbound client and in-memory delivery state (tokens,
/// circuits), shared by the Platform API and the worker.
pub struct Relay {
    pub store: Arc<RelayStore>,
    pub client: fhirside_fetch::Client,
    pub config: RelayConfig,
    pub tokens: token::TokenCache,
    pub breakers: breaker::Breakers,
    /// Wakes the worker when a message was just queued here.
    pub(crate) wake: tokio::sync::Notify,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Relay {
    pub fn new(store: Arc<RelayStore>, client: fhirside_fetch::Client, config: RelayConfig) -> Relay {
        let breakers = breaker::Breakers::new(config.breaker_threshold, config.breaker_open);
        Relay { store, client, config, tokens: token::TokenCache::default(), breakers, wake: Default::default() }
    }

    /// Asks the worker to look for due deliveries now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

/// Milliseconds since the Unix epoch: how the store keeps time.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// An RFC 3339 instant in UTC with milliseconds, as Redox shows `createdAt`.
pub fn iso(ms: i64) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_default()
}

/// The name of this data directory's delivery worker, kept in `relay-worker-id` so that a
/// restarted server finds its own leases; the directory's lock makes it unique among live
/// processes.
pub fn worker_id(data_dir: &std::path::Path) -> Result<String> {
    let path = data_dir.join("relay-worker-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_owned()),
        _ => {
            let id = new_id();
            std::fs::write(&path, &id)
                .map_err(|e| RelayError::Database(format!("cannot write {}: {e}", path.display())))?;
            Ok(id)
        }
    }
}

/// A fresh id: a UUID, as Redox's ids are.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

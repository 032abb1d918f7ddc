//! Subscriptions: device messages from a message broker (MQTT, NATS JetStream) into
//! [`super::ingest`].
//!
//! One task per subscription, in a loop: take a batch (up to [`BATCH`] messages, waiting
//! [`LINGER`] after the first for more), ingest it in one store transaction, record each
//! message's outcome in the audit trail, then acknowledge the batch to the broker. Acknowledging
//! last makes delivery at-least-once, and ingesting is idempotent, so a crash anywhere before the
//! acknowledgement means a redelivery that stores nothing twice. A store or audit failure leaves
//! the batch unacknowledged: the connection is dropped and made again after a pause, and the
//! broker delivers the batch again. Connection failures back off from 1 s to 30 s. A payload that
//! is not JSON is refused like any bad message, and acknowledged: it will never parse.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fhirside_audit::{AuditRecord, ResultType};
use serde_json::{json, Map, Value};

use super::{ingest, Medtech, Processed, Refusal};
use crate::AppState;

/// Most messages in one batch (one store transaction).
pub const BATCH: usize = 1000;
/// How long a batch waits, after its first message, for more.
pub const LINGER: Duration = Duration::from_millis(20);

/// A subscription's messages: each is its subject (topic) and payload.
pub trait Feed: Send {
    /// Waits for at least one message, then takes those that arrive within `linger`, up to `max`.
    fn next_batch(
        &mut self,
        max: usize,
        linger: Duration,
    ) -> impl Future<Output = Result<Vec<(String, Vec<u8>)>, String>> + Send;
    /// Acknowledges every message of the last batch.
    fn ack(&mut self) -> impl Future<Output = Result<(), String>> + Send;
}

/// Where a subscription's messages come from.
pub trait Source: Send + Sync + 'static {
    type Feed: Feed;
    /// `mqtt`, `nats`.
    fn transport(&self) -> &'static str;
    /// Where, without credentials: `mqtt://127.0.0.1:1883`.
    fn broker(&self) -> String;
    /// What is subscribed to: a topic filter, a stream and consumer.
    fn describe(&self) -> String;
    fn connect(&self) -> impl Future<Output = Result<Self::Feed, String>> + Send;
}

/// Runs the subscription until the task is aborted.
pub fn spawn<S: Source>(state: AppState, medtech: Arc<Medtech>, source: S) -> tokio::task::JoinHandle<()> {
    let index = medtech.subscription_added(source.transport(), source.describe());
    tokio::spawn(async move {
        let mut pause = Duration::from_secs(1);
        loop {
            let error = match source.connect().await {
                Ok(mut feed) => {
                    eprintln!("fhirside: medtech: subscribed to {}", source.describe());
                    medtech.subscription_changed(index, true, None);
                    pause = Duration::from_secs(1);
                    consume(&state, &medtech, &source, &mut feed).await
                }
                Err(error) => format!("cannot subscribe: {error}"),
            };
            eprintln!("fhirside: medtech: {}: {error}; again in {} s", source.describe(), pause.as_secs());
            medtech.subscription_changed(index, false, Some(error));
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(30));
        }
    })
}

/// Ingests batches until something fails; returns what did.
async fn consume<S: Source>(state: &AppState, medtech: &Arc<Medtech>, source: &S, feed: &mut S::Feed) -> String {
    loop {
        let batch = match feed.next_batch(BATCH, LINGER).await {
            Ok(batch) => batch,
            Err(error) => return error,
        };
        let started = Instant::now();
        let (subjects, bodies): (Vec<String>, Vec<Result<Value, Refusal>>) = batch
            .into_iter()
            .map(|(subject, payload)| (subject, serde_json::from_slice(&payload).map_err(|e| Refusal::not_json(&e))))
            .unzip();
        let processed = match ingest(state, Arc::clone(medtech), bodies).await {
            Ok(processed) => processed,
            Err(error) => return format!("a batch could not be stored ({error:?}); it will be delivered again"),
        };
        if let Err(error) = audit(state, source, &subjects, &processed, started).await {
            return format!("the audit log refused a batch's records ({error}); it will be delivered again");
        }
        log_refusals(source, &processed);
        if let Err(error) = feed.ack().await {
            return format!("acknowledging a stored batch failed ({error}); it will be delivered again");
        }
    }
}

/// One record per message: `medtech-ingest`, `Succeeded` or `Failed` with the refusal's code and
/// summary (no identifier, no value from the message).
async fn audit<S: Source>(
    state: &AppState,
    source: &S,
    subjects: &[String],
    processed: &[Processed],
    started: Instant,
) -> Result<(), String> {
    let Some(log) = &state.audit else { return Ok(()) };
    let broker = source.broker();
    let host = broker.split("://").nth(1).unwrap_or(&broker).to_owned();
    let duration = started.elapsed().as_millis() as u64;
    let keyring = state.keys.as_ref().and_then(fhirside_keys::KeyringCell::get);
    let records: Vec<AuditRecord> = subjects
        .iter()
        .zip(processed)
        .map(|(subject, result)| {
            let (result_type, properties) = match result {
                Processed::Stored { changed, unchanged } => {
                    let written =
                        json!({"observationsWritten": changed.len(), "observationsUnchanged": unchanged.len()});
                    (ResultType::Succeeded, written)
                }
                Processed::Refused(refusal) => {
                    (ResultType::Failed, json!({"code": refusal.code, "reason": refusal.summary}))
                }
            };
            let mut caller = Map::new();
            caller.insert("transport".into(), Value::from(source.transport()));
            let mut record = AuditRecord {
                time_generated: fhirside_audit::timestamp_now(),
                log_category: fhirside_audit::LOG_CATEGORY.to_owned(),
                operation_name: "medtech-ingest".to_owned(),
                result_type,
                correlation_id: crate::ids::new_id(),
                request_uri: format!("{broker}/{subject}"),
                fhir_resource_type: Some("Observation".to_owned()),
                caller_identity: Arc::new(caller),
                caller_identity_issuer: None,
                caller_identity_object_id: None,
                caller_ip_address: host.clone(),
                status_code: None,
                operation_duration: Some(duration),
                location: state.config.audit_location.clone(),
                properties: properties.as_object().cloned().unwrap_or_default(),
                sequence: 0,
                previous_hash: String::new(),
                hash: String::new(),
            };
            // The topic can name a device (a serial number is PHI).
            if let Some(keyring) = &keyring {
                crate::audit::sealed::seal(keyring, &mut record);
            }
            record
        })
        .collect();
    log.record_all(&records).await.map_err(|e| e.to_string())
}

/// One line per batch with refusals: how many, by code (no identifiers: the codes say enough to
/// look the records up in the audit trail).
fn log_refusals<S: Source>(source: &S, processed: &[Processed]) {
    let mut codes: Vec<&str> = processed
        .iter()
        .filter_map(|p| match p {
            Processed::Refused(refusal) => Some(refusal.code),
            Processed::Stored { .. } => None,
        })
        .collect();
    if codes.is_empty() {
        return;
    }
    codes.sort_unstable();
    let mut counts: Vec<String> = Vec::new();
    for chunk in codes.chunk_by(|a, b| a == b) {
        counts.push(format!("{} ×{}", chunk[0], chunk.len()));
    }
    eprintln!(
        "fhirside: medtech: {}: {} of {} messages refused ({})",
        source.describe(),
        codes.len(),
        processed.len(),
        counts.join(", ")
    );
}

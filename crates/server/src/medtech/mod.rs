//! MedTech: device messages in, FHIR Observations out, as Azure's MedTech service does it.
//!
//! The mappings (Azure's device mapping and FHIR destination mapping documents) are read and
//! checked once, at start ([`Medtech::load`]); `fhirside_medtech` does the mapping itself. This
//! module is the service around it: the transports ([`http`], [`subscribe`] for MQTT and NATS
//! JetStream) hand it batches of messages ([`ingest`]), and for each batch it normalizes, groups,
//! resolves the Patient, Device and Encounter each Observation refers to ([`resolve`], in Azure's
//! `Create` or `Lookup` mode), merges into the Observation already stored under the group's
//! identifier, and stores what changed, in one store transaction.
//!
//! Idempotent by construction: an Observation is found by the identifier Azure gives it
//! (patient, device, type and window or correlation id), and merging a measurement it already
//! holds changes nothing, so a message delivered twice is stored once. A transport acknowledges a
//! batch only once [`ingest`] has returned, so a crash in between means a redelivery, not a loss.

pub mod brokers;
pub(crate) mod http;
mod refusal;
mod resolve;
pub mod subscribe;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use fhirside_medtech::{
    event_message, group_measurements, observation, Change, DeviceMapping, FhirMapping, MappingError, MeasurementGroup,
    ObservationContext,
};
use fhirside_store::{
    Clause, SearchQuery, StoreError, TokenSystem, TokenValue, Transaction, Unstamped, Value as Match,
};
use fhirside_store::{WriteOp, WriteResult};
use serde_json::{json, Value};

use crate::error::FhirError;
use crate::{indexing, AppState};

pub use refusal::Refusal;
pub use resolve::Resolution;

/// The mappings in force, how identities are resolved, and what this process has done.
pub struct Medtech {
    device: DeviceMapping,
    fhir: FhirMapping,
    resolution: Resolution,
    counters: Counters,
    /// The broker subscriptions' states, for `GET /medtech/v1/status`.
    subscriptions: std::sync::Mutex<Vec<SubscriptionState>>,
}

/// Where a broker subscription stands.
#[derive(Debug, Clone)]
struct SubscriptionState {
    transport: &'static str,
    /// Where and what, without credentials.
    source: String,
    connected: bool,
    /// Why it last lost or failed to make its connection (no message content).
    last_error: Option<String>,
}

/// Messages this process has handled, as Azure's MedTech metrics count them.
#[derive(Default)]
struct Counters {
    received: AtomicU64,
    stored: AtomicU64,
    refused: AtomicU64,
    /// Observations created or amended.
    observations: AtomicU64,
}

impl std::fmt::Debug for Medtech {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Medtech").field("resolution", &self.resolution).finish_non_exhaustive()
    }
}

impl Medtech {
    /// Reads both mapping documents; every problem in either is reported, each with where it is.
    pub fn load(device: &Value, fhir: &Value, resolution: Resolution) -> Result<Medtech, String> {
        match (DeviceMapping::parse(device), FhirMapping::parse(fhir)) {
            (Ok(device), Ok(fhir)) => Ok(Medtech {
                device,
                fhir,
                resolution,
                counters: Counters::default(),
                subscriptions: Default::default(),
            }),
            (device, fhir) => {
                let mut problems = Vec::new();
                let mut collect = |which: &str, error: Option<MappingError>| {
                    for issue in error.map(|e| e.issues).unwrap_or_default() {
                        let at = if issue.path.is_empty() { String::new() } else { format!(" at {}", issue.path) };
                        problems.push(format!("{which}{at}: {}", issue.message));
                    }
                };
                collect("device mapping", device.err());
                collect("FHIR destination mapping", fhir.err());
                Err(problems.join("; "))
            }
        }
    }

    /// The counters and the subscriptions, as JSON (`GET /medtech/v1/status`).
    pub fn status(&self) -> Value {
        let c = &self.counters;
        let subscriptions: Vec<Value> = self
            .lock_subscriptions()
            .iter()
            .map(|s| {
                json!({"transport": s.transport, "source": s.source, "connected": s.connected,
                       "lastError": s.last_error})
            })
            .collect();
        json!({
            "subscriptions": subscriptions,
            "resolution": match self.resolution { Resolution::Create => "create", Resolution::Lookup => "lookup" },
            "messagesReceived": c.received.load(Ordering::Relaxed),
            "messagesStored": c.stored.load(Ordering::Relaxed),
            "messagesRefused": c.refused.load(Ordering::Relaxed),
            "observationsWritten": c.observations.load(Ordering::Relaxed),
        })
    }
}

/// Starts a subscription ([`subscribe::spawn`]) on a server whose MedTech is on; `None` when it
/// is off.
pub fn start(state: &AppState, subscription: brokers::Subscription) -> Option<tokio::task::JoinHandle<()>> {
    let medtech = state.medtech.clone()?;
    Some(match subscription {
        brokers::Subscription::Mqtt(source) => subscribe::spawn(state.clone(), medtech, source),
        brokers::Subscription::Nats(source) => subscribe::spawn(state.clone(), medtech, source),
    })
}

impl Medtech {
    fn lock_subscriptions(&self) -> std::sync::MutexGuard<'_, Vec<SubscriptionState>> {
        self.subscriptions.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a subscription; returns its index for [`Medtech::subscription_changed`].
    fn subscription_added(&self, transport: &'static str, source: String) -> usize {
        let mut subscriptions = self.lock_subscriptions();
        subscriptions.push(SubscriptionState { transport, source, connected: false, last_error: None });
        subscriptions.len() - 1
    }

    fn subscription_changed(&self, index: usize, connected: bool, error: Option<String>) {
        if let Some(state) = self.lock_subscriptions().get_mut(index) {
            state.connected = connected;
            if error.is_some() {
                state.last_error = error;
            }
        }
    }
}

/// What became of one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Processed {
    /// Stored: the Observations it created or amended (`Observation/id`), and those it left as they
    /// were because they already held its measurements.
    Stored { changed: Vec<String>, unchanged: Vec<String> },
    /// Refused. Nothing of it was stored, unless a window it shares with another message was (a
    /// Patient or Device it created may remain too).
    Refused(Refusal),
}

impl Processed {
    /// The result for the sender: identifiers included.
    pub fn to_json(&self, index: usize) -> Value {
        match self {
            Processed::Stored { changed, unchanged } => {
                json!({"index": index, "status": "processed", "observations": changed, "unchanged": unchanged})
            }
            Processed::Refused(refusal) => {
                json!({"index": index, "status": "failed", "code": refusal.code, "reason": refusal.detail})
            }
        }
    }
}

/// Processes device messages (each a JSON body, or a refusal already: a payload that is not JSON)
/// in one store transaction. Errors only when the store fails; a message that cannot be stored is
/// reported as such and the others are stored.
pub async fn ingest(
    state: &AppState,
    medtech: Arc<Medtech>,
    messages: Vec<Result<Value, Refusal>>,
) -> Result<Vec<Processed>, FhirError> {
    let counted = Arc::clone(&medtech);
    let ((processed, written), _) =
        crate::interaction::in_transaction(state, move |tx| process(tx, &medtech, messages)).await?;
    let c = &counted.counters;
    let refused = processed.iter().filter(|p| matches!(p, Processed::Refused(_))).count() as u64;
    c.received.fetch_add(processed.len() as u64, Ordering::Relaxed);
    c.refused.fetch_add(refused, Ordering::Relaxed);
    c.stored.fetch_add(processed.len() as u64 - refused, Ordering::Relaxed);
    c.observations.fetch_add(written, Ordering::Relaxed);
    Ok(processed)
}

/// The Observations a message changed, and those it left as they were.
type Written = (Vec<String>, Vec<String>);

/// The messages of a batch, together: each is normalized and grouped on its own (so that an error
/// is its own), then the measurements of all are grouped as one, so that a window that several
/// messages fill is merged and written once. A message is stored when every group it contributed
/// to is; each group's result is reported to every message in it. Also returns how many
/// Observations were written.
fn process(
    tx: &mut dyn Transaction,
    medtech: &Medtech,
    messages: Vec<Result<Value, Refusal>>,
) -> Result<(Vec<Processed>, u64), FhirError> {
    // Per message: the Observations changed and left unchanged so far, or its refusal.
    let mut results: Vec<Result<Written, Refusal>> = Vec::with_capacity(messages.len());
    let mut measurements = Vec::new();
    // Which messages each group (by key) holds measurements of.
    let mut contributors: HashMap<String, Vec<usize>> = HashMap::new();
    for (index, body) in messages.into_iter().enumerate() {
        let found = body.and_then(|body| {
            let message = event_message(body, json!({}), json!({}));
            medtech.device.normalize(&message).map_err(|e| Refusal::normalization(&e))
        });
        let found = match found {
            Ok(found) => found,
            Err(refusal) => {
                results.push(Err(refusal));
                continue;
            }
        };
        let own = group_measurements(&medtech.fhir, &found);
        if let Some(error) = own.errors.first() {
            results.push(Err(Refusal::observation(error)));
            continue;
        }
        for group in &own.groups {
            contributors.entry(group.key()).or_default().push(index);
        }
        measurements.extend(found);
        results.push(Ok((Vec::new(), Vec::new())));
    }
    let grouping = group_measurements(&medtech.fhir, &measurements);
    let mut resolver = resolve::Resolver::new(medtech.resolution);
    let mut written = 0;
    for group in &grouping.groups {
        let stored = store_group(tx, medtech, &mut resolver, group)?;
        written += u64::from(matches!(stored, Ok((_, true))));
        for &index in contributors.get(&group.key()).map_or(&[][..], Vec::as_slice) {
            match (&mut results[index], &stored) {
                (Ok((changed, _)), Ok((reference, true))) => changed.push(reference.clone()),
                (Ok((_, unchanged)), Ok((reference, false))) => unchanged.push(reference.clone()),
                (result @ Ok(_), Err(refusal)) => *result = Err(refusal.clone()),
                (Err(_), _) => {}
            }
        }
    }
    let processed = results
        .into_iter()
        .map(|result| match result {
            Ok((changed, unchanged)) => Processed::Stored { changed, unchanged },
            Err(refusal) => Processed::Refused(refusal),
        })
        .collect();
    Ok((processed, written))
}

/// Resolves a group's identities and stores its Observation: its reference and whether it changed,
/// or why it could not be stored.
fn store_group(
    tx: &mut dyn Transaction,
    medtech: &Medtech,
    resolver: &mut resolve::Resolver,
    group: &MeasurementGroup,
) -> Result<Result<(String, bool), Refusal>, FhirError> {
    let Some(template) = medtech.fhir.template(&group.type_name) else {
        let detail = format!("no FHIR destination template for the type '{}'", group.type_name);
        return Ok(Err(Refusal::coded("TemplateNotFound", detail)));
    };
    let identities = match resolver.identities(tx, group)? {
        Ok(identities) => identities,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let identifier = group.observation_identifier(&identities.patient, &identities.device);
    let existing = match find_one(tx, "Observation", Some(&identifier.system), &identifier.value)? {
        Ok(existing) => existing,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let context = ObservationContext {
        patient_id: &identities.patient,
        device_id: &identities.device,
        encounter_id: identities.encounter.as_deref(),
        issued: None,
    };
    let built = match observation(template, group, &context, existing.as_ref().map(|(_, body)| body)) {
        Ok(built) => built,
        Err(error) => return Ok(Err(Refusal::observation(&error))),
    };
    let id = match (&existing, built.change) {
        (Some((id, _)), Change::Unchanged) => return Ok(Ok((format!("Observation/{id}"), false))),
        (Some((id, _)), _) => id.clone(),
        (None, _) => crate::ids::new_id(),
    };
    match write(tx, "Observation", &id, built.resource, existing.is_some())? {
        Ok(()) => Ok(Ok((format!("Observation/{id}"), true))),
        Err(refusal) => Ok(Err(refusal)),
    }
}

/// The one resource of `resource_type` with the identifier `value` (in `system`, or any), with
/// its id and body; none; or a refusal when several match.
pub(crate) fn find_one(
    tx: &mut dyn Transaction,
    resource_type: &str,
    system: Option<&str>,
    value: &str,
) -> Result<Result<Option<(String, Value)>, Refusal>, FhirError> {
    let system = system.map_or(TokenSystem::Any, |s| TokenSystem::Is(s.to_owned()));
    let query = SearchQuery {
        types: vec![resource_type.to_owned()],
        clauses: vec![Clause::Match {
            param: "identifier".into(),
            values: vec![Match::Token(TokenValue { system, code: Some(value.to_owned()) })],
        }],
        count: 2,
        ..SearchQuery::default()
    };
    let mut found = tx.search(&query, 2).map_err(FhirError::from)?;
    if found.len() > 1 {
        let detail = format!("more than one {resource_type} has the identifier '{value}'");
        return Ok(Err(Refusal::coded("MultipleResourceFound", detail)));
    }
    let Some(version) = found.pop() else { return Ok(Ok(None)) };
    let body: Value = serde_json::from_slice(&version.body)
        .map_err(|e| FhirError::Internal(format!("a stored {resource_type} is not JSON: {e}")))?;
    Ok(Ok(Some((version.id, body))))
}

/// Validates and stores `resource` as `resource_type/id` (an update of it when `exists`), or
/// refuses it when it is not a valid resource.
pub(crate) fn write(
    tx: &mut dyn Transaction,
    resource_type: &str,
    id: &str,
    resource: Value,
    exists: bool,
) -> Result<Result<(), Refusal>, FhirError> {
    let mut value = resource;
    let Some(object) = value.as_object_mut() else {
        let detail = format!("the {resource_type} built is not a JSON object");
        return Ok(Err(Refusal::coded("InvalidResource", detail)));
    };
    object.remove("id");
    object.remove("meta");
    let problems: Vec<String> = fhir::validate::validate_resource(&value)
        .into_iter()
        .filter(|i| matches!(i.severity, fhir::Severity::Error | fhir::Severity::Fatal))
        .map(|i| format!("{}: {}", i.expression, i.diagnostics))
        .collect();
    let Value::Object(mut resource) = value else { return Ok(Err(Refusal::coded("InvalidResource", "not an object"))) };
    if !problems.is_empty() {
        let detail = format!("the {resource_type} built is not valid: {}", problems.join("; "));
        return Ok(Err(Refusal::coded("InvalidResource", detail)));
    }
    let index = indexing::extract(resource_type, &mut resource);
    let (resource_type, id, resource) = (resource_type.to_owned(), id.to_owned(), Unstamped::new(resource));
    let op = if exists {
        WriteOp::Update { resource_type, id, resource, index, if_match: None }
    } else {
        WriteOp::Create { resource_type, id, resource, index, if_none_exist: None }
    };
    match tx.write(op) {
        Ok(WriteResult::Created(_) | WriteResult::Updated(_)) => Ok(Ok(())),
        Ok(other) => Err(FhirError::Internal(format!("a MedTech write produced {other:?}"))),
        Err(StoreError::Invalid(reason) | StoreError::Conflict(reason)) => {
            Ok(Err(Refusal::coded("InvalidResource", reason)))
        }
        Err(error) => Err(error.into()),
    }
}

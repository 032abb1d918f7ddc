//! MedTech: device messages in, FHIR Observations out, as Azure's MedTech service does it.
//!
//! The mappings (Azure's device mapping and FHIR destination mapping documents) are read and
//! checked once, at start ([`Medtech::load`]); `fhirside_medtech` does the mapping itself. This
//! module is the service around it: the transports hand it messages ([`ingest`]), and for each it
//! normalizes, groups, resolves the Patient, Device and Encounter the Observation refers to
//! ([`resolve`], in Azure's `Create` or `Lookup` mode), merges into the Observation already stored
//! under the group's identifier, and stores what changed.
//!
//! Idempotent by construction: an Observation is found by the identifier Azure gives it
//! (patient, device, type and window or correlation id), and merging a measurement it already
//! holds changes nothing, so a message delivered twice is stored once.

pub(crate) mod http;
mod resolve;

use std::sync::Arc;

use fhirside_medtech::{
    event_message, group_measurements, observation, Change, DeviceMapping, FhirMapping, MappingError, MeasurementGroup,
    ObservationContext,
};
use fhirside_store::{
    Clause, SearchQuery, StoreError, TokenSystem, TokenValue, Transaction, Unstamped, Value as Match,
};
use fhirside_store::{WriteOp, WriteResult};
use serde_json::{json, Map, Value};

use crate::error::FhirError;
use crate::{indexing, AppState};

pub use resolve::Resolution;

/// The mappings in force and how identities are resolved.
pub struct Medtech {
    device: DeviceMapping,
    fhir: FhirMapping,
    resolution: Resolution,
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
            (Ok(device), Ok(fhir)) => Ok(Medtech { device, fhir, resolution }),
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
}

/// What became of one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Processed {
    /// Stored: the Observations it created or amended (`Observation/id`), and those it left as they
    /// were because they already held its measurements.
    Stored { changed: Vec<String>, unchanged: Vec<String> },
    /// Refused, with why; nothing of it was stored (a Patient or Device it created may remain).
    Failed(String),
}

impl Processed {
    pub fn to_json(&self, index: usize) -> Value {
        match self {
            Processed::Stored { changed, unchanged } => {
                json!({"index": index, "status": "processed", "observations": changed, "unchanged": unchanged})
            }
            Processed::Failed(reason) => json!({"index": index, "status": "failed", "reason": reason}),
        }
    }
}

/// Processes device messages (their bodies) in one store transaction, each on its own: one
/// message's failure leaves the others stored. Errors only when the store fails.
pub async fn ingest(
    state: &AppState,
    medtech: Arc<Medtech>,
    messages: Vec<Value>,
) -> Result<Vec<Processed>, FhirError> {
    let (processed, _) = crate::interaction::in_transaction(state, move |tx| {
        let mut processed = Vec::with_capacity(messages.len());
        for message in messages {
            processed.push(process(tx, &medtech, message)?);
        }
        Ok(processed)
    })
    .await?;
    Ok(processed)
}

/// One message; `Err` only for a store failure, which fails the whole transaction.
fn process(tx: &mut dyn Transaction, medtech: &Medtech, body: Value) -> Result<Processed, FhirError> {
    let message = event_message(body, json!({}), json!({}));
    let measurements = match medtech.device.normalize(&message) {
        Ok(measurements) => measurements,
        Err(error) => return Ok(Processed::Failed(format!("normalization: {error}"))),
    };
    let grouping = group_measurements(&medtech.fhir, &measurements);
    if let Some(error) = grouping.errors.first() {
        return Ok(Processed::Failed(format!("grouping: {error}")));
    }
    let (mut changed, mut unchanged) = (Vec::new(), Vec::new());
    for group in &grouping.groups {
        match store_group(tx, medtech, group)? {
            Ok((reference, true)) => changed.push(reference),
            Ok((reference, false)) => unchanged.push(reference),
            Err(reason) => return Ok(Processed::Failed(reason)),
        }
    }
    Ok(Processed::Stored { changed, unchanged })
}

/// Resolves a group's identities and stores its Observation: its reference and whether it changed,
/// or why it could not be stored.
fn store_group(
    tx: &mut dyn Transaction,
    medtech: &Medtech,
    group: &MeasurementGroup,
) -> Result<Result<(String, bool), String>, FhirError> {
    let Some(template) = medtech.fhir.template(&group.type_name) else {
        return Ok(Err(format!("no FHIR destination template for the type '{}'", group.type_name)));
    };
    let identities = match resolve::identities(tx, medtech.resolution, group)? {
        Ok(identities) => identities,
        Err(reason) => return Ok(Err(reason)),
    };
    let identifier = group.observation_identifier(&identities.patient, &identities.device);
    let existing = find_one(tx, "Observation", Some(&identifier.system), &identifier.value)?;
    let existing = match existing {
        Ok(existing) => existing,
        Err(reason) => return Ok(Err(reason)),
    };
    let context = ObservationContext {
        patient_id: &identities.patient,
        device_id: &identities.device,
        encounter_id: identities.encounter.as_deref(),
        issued: None,
    };
    let built = match observation(template, group, &context, existing.as_ref().map(|(_, body)| body)) {
        Ok(built) => built,
        Err(error) => return Ok(Err(format!("{} ({}): {error}", group.type_name, group.id_segment()))),
    };
    let id = match (&existing, built.change) {
        (Some((id, _)), Change::Unchanged) => return Ok(Ok((format!("Observation/{id}"), false))),
        (Some((id, _)), _) => id.clone(),
        (None, _) => crate::ids::new_id(),
    };
    match write(tx, "Observation", &id, built.resource, existing.is_some())? {
        Ok(()) => Ok(Ok((format!("Observation/{id}"), true))),
        Err(reason) => Ok(Err(reason)),
    }
}

/// The one resource of `resource_type` with the identifier `value` (in `system`, or any), with
/// its id and body; none; or why not (several match).
pub(crate) fn find_one(
    tx: &mut dyn Transaction,
    resource_type: &str,
    system: Option<&str>,
    value: &str,
) -> Result<Result<Option<(String, Value)>, String>, FhirError> {
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
        return Ok(Err(format!("more than one {resource_type} has the identifier '{value}'")));
    }
    let Some(version) = found.pop() else { return Ok(Ok(None)) };
    let body: Value = serde_json::from_slice(&version.body)
        .map_err(|e| FhirError::Internal(format!("a stored {resource_type} is not JSON: {e}")))?;
    Ok(Ok(Some((version.id, body))))
}

/// Validates and stores `resource` as `resource_type/id` (an update of it when `exists`): `Err`
/// with the validation problems when it is not a valid resource.
pub(crate) fn write(
    tx: &mut dyn Transaction,
    resource_type: &str,
    id: &str,
    resource: Value,
    exists: bool,
) -> Result<Result<(), String>, FhirError> {
    let Value::Object(mut resource) = resource else {
        return Ok(Err(format!("the {resource_type} built is not a JSON object")));
    };
    resource.remove("id");
    resource.remove("meta");
    if let Err(problems) = valid(&resource) {
        return Ok(Err(format!("the {resource_type} built is not valid: {problems}")));
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
        Err(StoreError::Invalid(reason) | StoreError::Conflict(reason)) => Ok(Err(reason)),
        Err(error) => Err(error.into()),
    }
}

/// The resource's validation errors, joined, if it has any.
fn valid(resource: &Map<String, Value>) -> Result<(), String> {
    let value = Value::Object(resource.clone());
    let errors: Vec<String> = fhir::validate::validate_resource(&value)
        .into_iter()
        .filter(|i| matches!(i.severity, fhir::Severity::Error | fhir::Severity::Fatal))
        .map(|i| format!("{}: {}", i.expression, i.diagnostics))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

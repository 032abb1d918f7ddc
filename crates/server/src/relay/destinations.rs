//! Destinations: `POST|GET /relay/v1/environments/{id}/destinations`,
//! `GET|PATCH|DELETE /relay/v1/destinations/{id}` and `POST …/destinations/{id}/verify`.
//!
//! The wizard's rules live in `fhirside_relay::model` (type fixed at creation, drafts with a
//! `setupState`) and its store (no deletion in production, credentials from the same
//! environment). Verify answers `200` with the destination either way: `verified` and
//! `verification.error` say how it went.

use axum::extract::{Path, Request, State};
use axum::response::Response;
use fhirside_relay::deliver::{self, Method};
use fhirside_relay::model::{Destination, Environment};
use serde_json::{json, Value};

use super::{admin, blocking, deleted, json_body, ok};
use crate::error::FhirError;
use crate::AppState;

/// The destination with its circuit, as this process sees it.
fn shown(relay: &fhirside_relay::Relay, destination: &Destination, environment: &Environment) -> Value {
    let mut out = destination.to_json(environment);
    let circuit = relay.breakers.get(&destination.id);
    out["circuit"] = json!({ "state": circuit.name(), "timesOpened": circuit.opened });
    out
}

pub(super) async fn create(
    State(state): State<AppState>,
    Path(environment): Path<String>,
    request: Request,
) -> Result<Response, FhirError> {
    let relay = admin(&state, &request)?;
    let body = json_body(&state, request).await?;
    let now = fhirside_relay::now_ms();
    let (destination, environment) =
        blocking(&relay, move |store| store.create_destination(&environment, &body, now)).await?;
    Ok(ok(json!({ "destination": shown(&relay, &destination, &environment) })))
}

pub(super) async fn list(
    State(state): State<AppState>,
    Path(environment): Path<String>,
    request: Request,
) -> Result<Response, FhirError> {
    let relay = admin(&state, &request)?;
    let (destinations, environment) = blocking(&relay, move |store| store.destinations(&environment)).await?;
    let list: Vec<Value> = destinations.iter().map(|d| shown(&relay, d, &environment)).collect();
    Ok(ok(json!({ "destinations": list })))
}

pub(super) async fn read(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, FhirError> {
    let relay = admin(&state, &request)?;
    let (destination, environment) = blocking(&relay, move |store| store.destination(&id)).await?;
    Ok(ok(json!({ "destination": shown(&relay, &destination, &environment) })))
}

pub(super) async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, FhirError> {
    let relay = admin(&state, &request)?;
    let body = json_body(&state, request).await?;
    let now = fhirside_relay::now_ms();
    let (destination, environment) = blocking(&relay, move |store| store.update_destination(&id, &body, now)).await?;
    Ok(ok(json!({ "destination": shown(&relay, &destination, &environment) })))
}

pub(super) async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, FhirError> {
    let relay = admin(&state, &request)?;
    blocking(&relay, move |store| store.delete_destination(&id)).await?;
    Ok(deleted("destination"))
}

/// Sends the verification request (standard endpoint) or sample Bundle (FHIR service). The body
/// may set `endpoint` and `verificationToken` first, and choose `verificationMethod` (`POST`, the
/// default, or `GET`).
pub(super) async fn verify(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, FhirError> {
    let relay = admin(&state, &request)?;
    let body = match json_body(&state, request).await? {
        Value::Null => json!({}),
        body @ Value::Object(_) => body,
        _ => return Err(FhirError::bad_request("The body of verify must be a JSON object.")),
    };
    let method = match body.get("verificationMethod").and_then(Value::as_str) {
        None | Some("POST") => Method::Post,
        Some("GET") => Method::Get,
        Some(other) => {
            return Err(FhirError::bad_request(format!("verificationMethod must be 'POST' or 'GET', not '{other}'.")))
        }
    };
    if let Some(model) = body.get("dataModel").and_then(Value::as_str) {
        if !model.starts_with("FHIR") {
            return Err(FhirError::bad_request(format!(
                "The relay delivers FHIR data only: dataModel '{model}' cannot be sent (use e.g. 'FHIR.Event.PatientAdmin')."
            )));
        }
    }
    let mut changes = serde_json::Map::new();
    for field in ["endpoint", "verificationToken"] {
        if let Some(value) = body.get(field) {
            changes.insert(field.into(), value.clone());
        }
    }
    let now = fhirside_relay::now_ms();
    let (destination, credential) = blocking(&relay, move |store| {
        let (destination, _) = match changes.is_empty() {
            true => store.destination(&id)?,
            false => store.update_destination(&id, &Value::Object(changes), now)?,
        };
        let credential = destination.auth_credential.as_deref().map(|c| store.credential(c)).transpose()?;
        Ok((destination, credential))
    })
    .await?;
    let result = deliver::verify(&relay.client, &relay.tokens, &destination, credential.as_ref(), method).await;
    let now = fhirside_relay::now_ms();
    let (destination, environment) =
        blocking(&relay, move |store| store.record_verification(&destination, result, now)).await?;
    Ok(ok(json!({ "destination": shown(&relay, &destination, &environment) })))
}

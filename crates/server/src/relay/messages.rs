//! Messages: `POST /relay/v1/environments/{id}/messages` from a source (its key as the bearer
//! token), answered once the message and its deliveries are on disk; `GET …/messages/{id}` shows
//! each destination's delivery and attempts (Redox's logs); `GET …/logs?status=…` lists the newest
//! messages (`status`: `pending`, `succeeded`, `failed` or `dead-letter`; `_count` up to 1000,
//! default 50); `POST …/messages/{id}/replay` puts failed and dead-lettered deliveries back in the
//! queue.

use axum::extract::{Path, Request, State};
use axum::http::header;
use axum::response::Response;
use fhirside_relay::rewrite;
use serde_json::{json, Value};

use super::{admin, blocking, json_body, ok, relay};
use crate::error::FhirError;
use crate::AppState;

pub(super) async fn accept(
    State(state): State<AppState>,
    Path(environment): Path<String>,
    request: Request,
) -> Result<Response, FhirError> {
    let relay = relay(&state)?;
    let key = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|k| k.trim().to_owned())
        .ok_or_else(|| {
            FhirError::from(fhirside_relay::RelayError::Unauthenticated(
                "a message was posted without a source key".into(),
            ))
        })?;
    let env = environment.clone();
    let source = blocking(&relay, move |store| store.source_by_key(&env, &key)).await?;
    let body = json_body(&state, request).await?;
    rewrite::check_message(&body).map_err(FhirError::bad_request)?;
    let patient = rewrite::patient_key(&body);
    let now = fhirside_relay::now_ms();
    let view = blocking(&relay, move |store| {
        let id = store.accept_message(&environment, &source.id, &body, patient.as_deref(), now)?;
        store.message(&id)
    })
    .await?;
    relay.wake();
    Ok(ok(json!({ "message": view })))
}

/// The message, if it belongs to the environment of the path.
async fn in_environment(
    relay: &std::sync::Arc<fhirside_relay::Relay>,
    environment: String,
    id: String,
) -> Result<Value, FhirError> {
    let view = blocking(relay, move |store| store.message(&id)).await?;
    if view["environmentId"] != environment.as_str() {
        return Err(FhirError::NoMatch(format!("No message of environment '{environment}' has this id.")));
    }
    Ok(view)
}

pub(super) async fn read(
    State(state): State<AppState>,
    Path((environment, id)): Path<(String, String)>,
    request: Request,
) -> Result<Response, FhirError> {
    let relay = admin(&state, &request)?;
    let view = in_environment(&relay, environment, id).await?;
    Ok(ok(json!({ "message": view })))
}

pub(super) async fn replay(
    State(state): State<AppState>,
    Path((environment, id)): Path<(String, String)>,
    request: Request,
) -> Result<Response, FhirError> {
    let relay = admin(&state, &request)?;
    in_environment(&relay, environment, id.clone()).await?;
    let now = fhirside_relay::now_ms();
    let view = blocking(&relay, move |store| {
        store.replay(&id, now)?;
        store.message(&id)
    })
    .await?;
    relay.wake();
    Ok(ok(json!({ "message": view })))
}

pub(super) async fn logs(
    State(state): State<AppState>,
    Path(environment): Path<String>,
    request: Request,
) -> Result<Response, FhirError> {
    let relay = admin(&state, &request)?;
    let (mut states, mut count): (&'static [&'static str], i64) = (&[], 50);
    for (name, value) in form_urlencoded::parse(request.uri().query().unwrap_or_default().as_bytes()) {
        match (&*name, &*value) {
            ("status", "pending") => states = &["pending"],
            ("status", "succeeded") => states = &["succeeded"],
            ("status", "failed") => states = &["failed", "dead"],
            ("status", "dead-letter") => states = &["dead"],
            ("status", other) => {
                return Err(FhirError::bad_request(format!(
                    "status must be pending, succeeded, failed or dead-letter, not '{other}'."
                )))
            }
            ("_count", n) => {
                count = n
                    .parse()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| FhirError::bad_request("_count must be a number from 1 to 1000."))?
            }
            (other, _) => {
                return Err(FhirError::bad_request(format!(
                    "Unknown parameter '{other}'; the logs take status and _count."
                )))
            }
        }
    }
    let list = blocking(&relay, move |store| store.messages(&environment, states, count)).await?;
    Ok(ok(json!({ "logs": list })))
}

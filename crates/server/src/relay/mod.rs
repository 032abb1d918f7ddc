//! The relay's Platform API under `/relay/v1`, in Redox's shapes: every answer is
//! `{"meta": {"version": "1.0.0"}, "payload": {…}}`, and field names are the ones users copy from
//! Redox's documentation. `fhirside_relay` holds the state and does the delivering; this module is
//! HTTP around it, one file per concern:
//! [`environments`], [`credentials`], [`destinations`] (with verify), [`sources`] and
//! [`messages`].
//!
//! Managing the relay needs Fhirside's `admin` data action (the `Fhirside Administrator` role), as
//! managing sources, destinations and credentials needs Redox's engineer role. A source posts
//! messages with its own key instead of a token (`Authorization: Bearer <source key>`).

mod credentials;
mod destinations;
mod environments;
mod messages;
mod sources;

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use fhirside_relay::{Relay, RelayStore};
use serde_json::{json, Value};

use crate::auth::{self, DataAction, Principal};
use crate::error::FhirError;
use crate::AppState;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/relay/v1/organizations/{organization}/environments", get(environments::list))
        .route("/relay/v1/environments/{environment}", get(environments::read))
        .route("/relay/v1/authcredentials", post(credentials::create))
        .route("/relay/v1/authcredentials/strategies", get(credentials::strategies))
        .route(
            "/relay/v1/authcredentials/{id}",
            get(credentials::read).patch(credentials::update).delete(credentials::delete),
        )
        .route("/relay/v1/environments/{environment}/authcredentials", get(credentials::list))
        .route("/relay/v1/environments/{environment}/destinations", get(destinations::list).post(destinations::create))
        .route(
            "/relay/v1/destinations/{id}",
            get(destinations::read).patch(destinations::update).delete(destinations::delete),
        )
        .route("/relay/v1/destinations/{id}/verify", post(destinations::verify))
        .route("/relay/v1/environments/{environment}/sources", get(sources::list).post(sources::create))
        .route("/relay/v1/sources/{id}", get(sources::read).patch(sources::update).delete(sources::delete))
        .route("/relay/v1/environments/{environment}/messages", post(messages::accept))
        .route("/relay/v1/environments/{environment}/messages/{id}", get(messages::read))
        .route("/relay/v1/environments/{environment}/logs", get(messages::logs))
        .route("/relay/v1/environments/{environment}/messages/{id}/replay", post(messages::replay))
}

/// `POST /relay/v1/environments/{id}/messages`: authenticated by the source's key, not a token.
pub(crate) fn is_source_route(path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/relay/v1/environments/") else { return false };
    matches!(rest.split('/').collect::<Vec<_>>().as_slice(), [environment, "messages"] if !environment.is_empty())
}

fn relay(state: &AppState) -> Result<Arc<Relay>, FhirError> {
    state.relay.clone().ok_or_else(|| FhirError::BadRequest {
        code: "not-supported",
        diagnostics: "The relay is not enabled on this server.".into(),
        expression: None,
    })
}

/// The relay, for a caller holding `admin`; checked before the body is read.
fn admin(state: &AppState, request: &Request) -> Result<Arc<Relay>, FhirError> {
    let principal = request.extensions().get::<Principal>().cloned();
    auth::authorize(&principal.ok_or(FhirError::Forbidden)?, DataAction::Admin)?;
    relay(state)
}

/// Runs `work` on the relay's store off the async workers (SQLite waits for the disk).
async fn blocking<T: Send + 'static>(
    relay: &Arc<Relay>,
    work: impl FnOnce(&RelayStore) -> fhirside_relay::Result<T> + Send + 'static,
) -> Result<T, FhirError> {
    let relay = relay.clone();
    tokio::task::spawn_blocking(move || work(&relay.store))
        .await
        .map_err(|e| FhirError::Internal(e.to_string()))?
        .map_err(FhirError::from)
}

/// The request's JSON body; an empty body is `null`.
async fn json_body(state: &AppState, request: Request) -> Result<Value, FhirError> {
    let bytes = crate::interaction::read_body(request.into_body(), state.config.max_body_bytes).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&bytes).map_err(|e| FhirError::bad_request(format!("The body is not valid JSON: {e}")))
}

/// A Redox-shaped answer.
fn payload(status: StatusCode, payload: Value) -> Response {
    let body = json!({ "meta": { "version": "1.0.0" }, "payload": payload });
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn ok(value: Value) -> Response {
    payload(StatusCode::OK, value)
}

/// What a delete answers, as Redox does.
fn deleted(what: &str) -> Response {
    ok(json!({ "message": format!("The {what} was deleted.") }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_message_posting_skips_the_token() {
        assert!(super::is_source_route("/relay/v1/environments/e1/messages"));
        assert!(!super::is_source_route("/relay/v1/environments/e1/messages/m1"));
        assert!(!super::is_source_route("/relay/v1/environments//messages"));
        assert!(!super::is_source_route("/relay/v1/environments/e1/destinations"));
    }
}

//! `POST /medtech/v1/messages`: device messages over HTTP.
//!
//! The body is one device message (a JSON object, as a device sends it to an event hub) or a JSON
//! array of them. The answer comes once every message is stored or refused: `200` with one result
//! per message, in order (`processed` with the Observations it created or amended, or `failed` with
//! why). Storing a message is idempotent, so a client that did not get the answer sends it again.
//! Needs the `write` data action (FHIR Data Writer), as the Observations are written as the caller.
//!
//! `GET /medtech/v1/status`: what this process has handled since it started (messages received,
//! stored and refused, Observations written, over every transport), for the `read` data action.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};

use crate::auth::{self, DataAction, Principal};
use crate::error::FhirError;
use crate::AppState;

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/medtech/v1/messages", post(handle)).route("/medtech/v1/status", get(status))
}

fn configured(state: &AppState) -> Result<std::sync::Arc<super::Medtech>, FhirError> {
    state.medtech.clone().ok_or_else(|| FhirError::BadRequest {
        code: "not-supported",
        diagnostics: "MedTech is not configured on this server (--medtech-device-mapping and \
                      --medtech-fhir-mapping)."
            .into(),
        expression: None,
    })
}

async fn status(State(state): State<AppState>, request: Request) -> Result<Response, FhirError> {
    let principal = request.extensions().get::<Principal>().cloned();
    auth::authorize(&principal.ok_or(FhirError::Forbidden)?, DataAction::Read)?;
    Ok(json_response(configured(&state)?.status()))
}

fn json_response(body: Value) -> Response {
    let mut response = (StatusCode::OK, body.to_string()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
    response
}

async fn handle(State(state): State<AppState>, request: Request) -> Result<Response, FhirError> {
    let principal = request.extensions().get::<Principal>().cloned();
    auth::authorize(&principal.ok_or(FhirError::Forbidden)?, DataAction::Write)?;
    let medtech = configured(&state)?;
    let limit = state.config.max_body_bytes;
    let body = crate::interaction::read_body(request.into_body(), limit).await?;
    let messages = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Array(messages)) => messages,
        Ok(message @ Value::Object(_)) => vec![message],
        Ok(_) => {
            return Err(FhirError::bad_request(
                "The body must be a device message (a JSON object) or an array of them.",
            ))
        }
        Err(error) => return Err(FhirError::bad_request(format!("The body is not JSON: {error}"))),
    };
    if messages.is_empty() {
        return Err(FhirError::bad_request("The array of device messages is empty."));
    }
    let processed = super::ingest(&state, medtech, messages.into_iter().map(Ok).collect()).await?;
    let results: Vec<Value> = processed.iter().enumerate().map(|(i, p)| p.to_json(i)).collect();
    Ok(json_response(json!({ "messages": results })))
}

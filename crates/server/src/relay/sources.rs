//! Sources: `POST|GET /relay/v1/environments/{id}/sources` and `GET|PATCH|DELETE
//! /relay/v1/sources/{id}` (a PATCH changes the name only, as Redox's). A new source's key
//! (`secret`) is shown once; it is stored as a SHA-256 hash.

use axum::extract::{Path, Request, State};
use axum::response::Response;
use serde_json::{json, Value};

use super::{admin, blocking, deleted, json_body, ok};
use crate::error::FhirError;
use crate::AppState;

pub(super) async fn create(
    State(state): State<AppState>,
    Path(environment): Path<String>,
    request: Request,
) -> Result<Response, FhirError> {
    let relay = admin(&state, &request)?;
    let body = json_body(&state, request).await?;
    let now = fhirside_relay::now_ms();
    let (source, key) = blocking(&relay, move |store| store.create_source(&environment, &body, now)).await?;
    let mut shown = source.to_json();
    shown["secret"] = json!(key);
    Ok(ok(json!({ "source": shown })))
}

pub(super) async fn list(
    State(state): State<AppState>,
    Path(environment): Path<String>,
    request: Request,
) -> Result<Response, FhirError> {
    let relay = admin(&state, &request)?;
    let sources = blocking(&relay, move |store| store.sources(&environment)).await?;
    let list: Vec<Value> = sources.iter().map(|s| s.to_json()).collect();
    Ok(ok(json!({ "sources": list })))
}

pub(super) async fn read(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, FhirError> {
    let relay = admin(&state, &request)?;
    let source = blocking(&relay, move |store| store.source(&id)).await?;
    Ok(ok(json!({ "source": source.to_json() })))
}

pub(super) async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, FhirError> {
    let relay = admin(&state, &request)?;
    let body = json_body(&state, request).await?;
    let source = blocking(&relay, move |store| store.update_source(&id, &body)).await?;
    Ok(ok(json!({ "source": source.to_json() })))
}

pub(super) async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, FhirError> {
    let relay = admin(&state, &request)?;
    blocking(&relay, move |store| store.delete_source(&id)).await?;
    Ok(deleted("source"))
}

//! `GET /relay/v1/organizations/{organization}/environments` (Redox's three environments of an
//! organization, created on first use) and `GET /relay/v1/environments/{id}`.

use axum::extract::{Path, Request, State};
use axum::response::Response;
use serde_json::{json, Value};

use super::{admin, blocking, ok};
use crate::error::FhirError;
use crate::AppState;

pub(super) async fn list(
    State(state): State<AppState>,
    Path(organization): Path<String>,
    request: Request,
) -> Result<Response, FhirError> {
    let relay = admin(&state, &request)?;
    let organization: i64 = organization.parse().map_err(|_| {
        FhirError::bad_request(format!("The organization id must be a number (e.g. 118), not '{organization}'."))
    })?;
    let environments = blocking(&relay, move |store| store.environments(organization)).await?;
    let list: Vec<Value> = environments.iter().map(|e| e.to_json()).collect();
    Ok(ok(json!({ "environments": list })))
}

pub(super) async fn read(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, FhirError> {
    let relay = admin(&state, &request)?;
    let environment = blocking(&relay, move |store| store.environment(&id)).await?;
    Ok(ok(json!({ "environment": environment.to_json() })))
}

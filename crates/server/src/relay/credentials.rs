//! Auth credentials: `POST /relay/v1/authcredentials`, `GET|PATCH|DELETE …/authcredentials/{id}`,
//! `GET /relay/v1/environments/{id}/authcredentials` and `GET …/authcredentials/strategies`.
//! Secrets are kept and never shown: `hasClientSecret` says whether one is set. A credential a
//! destination uses cannot be deleted (`409`).

use axum::extract::{Path, Request, State};
use axum::response::Response;
use serde_json::{json, Value};

use super::{admin, blocking, deleted, json_body, ok};
use crate::error::FhirError;
use crate::AppState;

pub(super) async fn create(State(state): State<AppState>, request: Request) -> Result<Response, FhirError> {
    let relay = admin(&state, &request)?;
    let body = json_body(&state, request).await?;
    let now = fhirside_relay::now_ms();
    let credential = blocking(&relay, move |store| store.create_credential(&body, now)).await?;
    Ok(ok(json!({ "credential": credential.to_json() })))
}

pub(super) async fn list(
    State(state): State<AppState>,
    Path(environment): Path<String>,
    request: Request,
) -> Result<Response, FhirError> {
    let relay = admin(&state, &request)?;
    let credentials = blocking(&relay, move |store| store.credentials(&environment)).await?;
    let list: Vec<Value> = credentials.iter().map(|c| c.to_json()).collect();
    Ok(ok(json!({ "credentials": list })))
}

pub(super) async fn read(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, FhirError> {
    let relay = admin(&state, &request)?;
    let credential = blocking(&relay, move |store| store.credential(&id)).await?;
    Ok(ok(json!({ "credential": credential.to_json() })))
}

pub(super) async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, FhirError> {
    let relay = admin(&state, &request)?;
    let body = json_body(&state, request).await?;
    let now = fhirside_relay::now_ms();
    let credential = blocking(&relay, move |store| store.update_credential(&id, &body, now)).await?;
    // The next token comes from the changed credential (the cache is keyed by its version).
    relay.tokens.forget(&credential);
    Ok(ok(json!({ "credential": credential.to_json() })))
}

pub(super) async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, FhirError> {
    let relay = admin(&state, &request)?;
    blocking(&relay, move |store| store.delete_credential(&id)).await?;
    Ok(deleted("auth credential"))
}

/// The strategies this relay can use and the fields each takes.
pub(super) async fn strategies(State(state): State<AppState>, request: Request) -> Result<Response, FhirError> {
    admin(&state, &request)?;
    let common = [
        "clientId",
        "url",
        "grantType",
        "scopes",
        "audience",
        "resource",
        "contentType",
        "customFieldName",
        "customFieldValue",
        "defaultExpirationSeconds",
        "grantTypeName",
        "clientIdName",
        "accessTokenName",
        "expiresFieldName",
    ];
    let with = |extra: &[&'static str]| -> Vec<&'static str> { common.iter().chain(extra).copied().collect() };
    Ok(ok(json!({
        "strategies": {
            fhirside_relay::model::STRATEGY_OAUTH: { "availableFields": with(&["clientSecret", "clientSecretName"]) },
            fhirside_relay::model::STRATEGY_OAUTH_JWT: { "availableFields": with(&["privateKey", "kid"]) },
        }
    })))
}

//! The admin REST API, under `/_admin`: app registrations, client secrets, users and role
//! assignments of the built-in identity service — what Azure users do through Microsoft Graph and
//! Azure role assignments. Callers need Fhirside's `admin` data action (the `Fhirside
//! Administrator` role). The same operations are in the CLI (`fhirside app create`, …); both go
//! through [`fhirside_identity::admin`].
//!
//! Shapes follow Graph where it has one: collections are `{"value": [...]}`, a new secret's value
//! is `secretText` and is returned once.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::Router;
use fhirside_identity::admin::{self, AppRegistration};
use fhirside_identity::jwt::JwkSet;
use fhirside_identity::store::{AppKind, IdentityError, IdentityStore, NewApp, NewUser};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::{self, DataAction, Principal};
use crate::error::FhirError;
use crate::AppState;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/_admin/apps", get(list_apps).post(create_app))
        .route("/_admin/apps/{id}", get(read_app).patch(update_app).delete(delete_app))
        .route("/_admin/apps/{id}/secrets", get(list_secrets).post(add_secret))
        .route("/_admin/apps/{id}/secrets/{key_id}", delete(remove_secret))
        .route("/_admin/users", get(list_users).post(create_user))
        .route("/_admin/users/{id}", get(read_user).delete(delete_user))
        .route("/_admin/roleAssignments", get(list_assignments).post(create_assignment))
        .route("/_admin/roleAssignments/{id}", delete(remove_assignment))
        .route("/_admin/roleDefinitions", get(role_definitions))
}

/// The identity store, for a caller holding `admin`; runs `work` off the async workers (hashing
/// secrets is deliberately slow).
async fn with_store<T: Send + 'static>(
    state: &AppState,
    principal: Option<Principal>,
    work: impl FnOnce(&IdentityStore, i64) -> Result<T, IdentityError> + Send + 'static,
) -> Result<T, FhirError> {
    auth::authorize(&principal.ok_or(FhirError::Forbidden)?, DataAction::Admin)?;
    let store: Arc<IdentityStore> = state.identity.clone().ok_or_else(|| FhirError::BadRequest {
        code: "not-supported",
        diagnostics: "This server has no identity store (authentication is off).".into(),
        expression: None,
    })?;
    tokio::task::spawn_blocking(move || work(&store, fhirside_identity::time::now()))
        .await
        .map_err(|e| FhirError::Internal(e.to_string()))?
        .map_err(identity_error)
}

fn identity_error(error: IdentityError) -> FhirError {
    match error {
        IdentityError::Database(message) => FhirError::Internal(message),
        IdentityError::NotFound(message) => FhirError::NoMatch(message),
        IdentityError::Conflict(message) => FhirError::Conflict(message),
        IdentityError::Invalid(message) => FhirError::bad_request(message),
    }
}

fn not_found(what: &str, id: &str) -> IdentityError {
    IdentityError::NotFound(format!("No {what} has the id '{id}'."))
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn json_body<T: for<'de> Deserialize<'de>>(state: &AppState, request: Request) -> Result<T, FhirError> {
    let bytes = crate::interaction::read_body(request.into_body(), state.config.max_body_bytes).await?;
    serde_json::from_slice(&bytes).map_err(|e| FhirError::bad_request(format!("The request body is not valid: {e}")))
}

/// The caller, taken before the body is read.
fn principal(request: &Request) -> Option<Principal> {
    request.extensions().get::<Principal>().cloned()
}

/// Deletes `id` with `work`: `204`, or `404` when there was nothing to delete.
async fn remove(
    state: &AppState,
    caller: Option<Principal>,
    what: &'static str,
    id: String,
    work: impl FnOnce(&IdentityStore, &str) -> Result<bool, IdentityError> + Send + 'static,
) -> Result<Response, FhirError> {
    with_store(state, caller, move |store, _| if work(store, &id)? { Ok(()) } else { Err(not_found(what, &id)) })
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewAppBody {
    display_name: String,
    #[serde(default)]
    kind: Option<AppKind>,
    #[serde(default)]
    redirect_uris: Vec<String>,
    #[serde(default)]
    jwks: Option<Value>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    secret_expires_in_days: Option<i64>,
}

fn parse_jwks(value: Option<Value>) -> Result<Option<JwkSet>, FhirError> {
    value
        .map(|v| admin::parse_jwks(v.to_string().as_bytes()).map_err(|e| FhirError::bad_request(format!("jwks: {e}"))))
        .transpose()
}

async fn create_app(State(state): State<AppState>, request: Request) -> Result<Response, FhirError> {
    let caller = principal(&request);
    let body: NewAppBody = json_body(&state, request).await?;
    let registration = AppRegistration {
        app: NewApp {
            display_name: body.display_name,
            kind: body.kind.unwrap_or(AppKind::Confidential),
            redirect_uris: body.redirect_uris,
            jwks: parse_jwks(body.jwks)?,
        },
        roles: body.roles,
        secret_days: body.secret_expires_in_days.unwrap_or(admin::DEFAULT_SECRET_DAYS),
    };
    let registered =
        with_store(&state, caller, move |store, now| admin::register_app(store, registration, now)).await?;
    Ok(json_response(StatusCode::CREATED, &admin::registered_json(&registered)))
}

async fn list_apps(State(state): State<AppState>, request: Request) -> Result<Response, FhirError> {
    let apps = with_store(&state, principal(&request), |store, _| {
        store.apps()?.iter().map(|app| admin::stored_app_json(store, app)).collect::<Result<Vec<_>, IdentityError>>()
    })
    .await?;
    Ok(json_response(StatusCode::OK, &json!({ "value": apps })))
}

async fn read_app(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, FhirError> {
    let app = with_store(&state, principal(&request), move |store, _| {
        let app = store.app(&id)?.ok_or_else(|| not_found("app", &id))?;
        admin::stored_app_json(store, &app)
    })
    .await?;
    Ok(json_response(StatusCode::OK, &app))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AppPatch {
    display_name: Option<String>,
    redirect_uris: Option<Vec<String>>,
    jwks: Option<Value>,
}

async fn update_app(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, FhirError> {
    let caller = principal(&request);
    let patch: AppPatch = json_body(&state, request).await?;
    let jwks = parse_jwks(patch.jwks)?;
    let app = with_store(&state, caller, move |store, _| {
        let mut app = store.app(&id)?.ok_or_else(|| not_found("app", &id))?;
        if let Some(name) = patch.display_name {
            app.display_name = name;
        }
        if let Some(uris) = patch.redirect_uris {
            app.redirect_uris = uris;
        }
        if jwks.is_some() {
            app.jwks = jwks;
        }
        store.update_app(&app)?;
        admin::stored_app_json(store, &app)
    })
    .await?;
    Ok(json_response(StatusCode::OK, &app))
}

async fn delete_app(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, FhirError> {
    remove(&state, principal(&request), "app", id, |store, id| store.delete_app(id)).await
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewSecretBody {
    display_name: Option<String>,
    expires_in_days: Option<i64>,
}

async fn add_secret(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, FhirError> {
    let caller = principal(&request);
    let body: NewSecretBody = json_body(&state, request).await?;
    let days = body.expires_in_days.unwrap_or(admin::DEFAULT_SECRET_DAYS);
    let secret = with_store(&state, caller, move |store, now| {
        let name = body.display_name.unwrap_or_else(|| "secret".into());
        let (info, value) = admin::add_secret(store, &id, &name, days, now)?;
        Ok(admin::secret_json(&info, Some(&value)))
    })
    .await?;
    Ok(json_response(StatusCode::CREATED, &secret))
}

async fn list_secrets(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, FhirError> {
    let secrets = with_store(&state, principal(&request), move |store, _| {
        Ok(store.secrets(&id)?.iter().map(|s| admin::secret_json(s, None)).collect::<Vec<_>>())
    })
    .await?;
    Ok(json_response(StatusCode::OK, &json!({ "value": secrets })))
}

async fn remove_secret(
    State(state): State<AppState>,
    Path((id, key_id)): Path<(String, String)>,
    request: Request,
) -> Result<Response, FhirError> {
    remove(&state, principal(&request), "secret", key_id, move |store, key_id| store.remove_secret(&id, key_id)).await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewUserBody {
    user_principal_name: String,
    display_name: Option<String>,
    password: String,
    fhir_user: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
}

async fn create_user(State(state): State<AppState>, request: Request) -> Result<Response, FhirError> {
    let caller = principal(&request);
    let body: NewUserBody = json_body(&state, request).await?;
    let user = with_store(&state, caller, move |store, now| {
        let new = NewUser {
            display_name: body.display_name.unwrap_or_else(|| body.user_principal_name.clone()),
            user_principal_name: body.user_principal_name,
            password: body.password,
            fhir_user: body.fhir_user,
        };
        let (user, roles) = admin::create_user(store, new, &body.roles, now)?;
        Ok(admin::user_json(&user, &roles))
    })
    .await?;
    Ok(json_response(StatusCode::CREATED, &user))
}

async fn list_users(State(state): State<AppState>, request: Request) -> Result<Response, FhirError> {
    let users = with_store(&state, principal(&request), |store, _| {
        store.users()?.iter().map(|u| admin::stored_user_json(store, u)).collect::<Result<Vec<_>, IdentityError>>()
    })
    .await?;
    Ok(json_response(StatusCode::OK, &json!({ "value": users })))
}

async fn read_user(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, FhirError> {
    let user = with_store(&state, principal(&request), move |store, _| {
        let user = store.user(&id)?.ok_or_else(|| not_found("user", &id))?;
        admin::stored_user_json(store, &user)
    })
    .await?;
    Ok(json_response(StatusCode::OK, &user))
}

async fn delete_user(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, FhirError> {
    remove(&state, principal(&request), "user", id, |store, id| store.delete_user(id)).await
}

async fn list_assignments(State(state): State<AppState>, request: Request) -> Result<Response, FhirError> {
    let principal_id = form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "principalId")
        .map(|(_, v)| v.into_owned());
    let assignments = with_store(&state, principal(&request), move |store, _| {
        let assignments = admin::role_assignments(store, principal_id.as_deref())?;
        Ok(assignments.iter().map(|(a, p)| admin::assignment_json(a, p)).collect::<Vec<_>>())
    })
    .await?;
    Ok(json_response(StatusCode::OK, &json!({ "value": assignments })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewAssignmentBody {
    role: String,
    principal_id: String,
}

async fn create_assignment(State(state): State<AppState>, request: Request) -> Result<Response, FhirError> {
    let caller = principal(&request);
    let body: NewAssignmentBody = json_body(&state, request).await?;
    let assignment = with_store(&state, caller, move |store, now| {
        let (assignment, principal) = admin::assign_role(store, &body.role, &body.principal_id, now)?;
        Ok(admin::assignment_json(&assignment, &principal))
    })
    .await?;
    Ok(json_response(StatusCode::CREATED, &assignment))
}

async fn remove_assignment(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, FhirError> {
    remove(&state, principal(&request), "role assignment", id, |store, id| store.remove_role_assignment(id)).await
}

async fn role_definitions(State(state): State<AppState>, request: Request) -> Result<Response, FhirError> {
    let definitions = with_store(&state, principal(&request), |_, _| Ok(admin::role_definitions_json())).await?;
    Ok(json_response(StatusCode::OK, &json!({ "value": definitions })))
}

//! The authority's routes, to be mounted under `/{tenant}` beside the FHIR API. None of them needs
//! a token: they are how a caller gets one.
//!
//! The token endpoint is open to every origin (`Access-Control-Allow-Origin: *`, no credentials):
//! browser SMART apps are public clients that redeem their codes from script. A token request
//! carries no cookie or ambient credential, so opening it exposes nothing.

use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::Value;

use super::authorize::{AuthorizeOutcome, Credentials};
use super::token::TokenRequest;
use super::{Authority, EndpointVersion, OAuthError};

/// Largest form accepted by the token and authorization endpoints.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// The request headers a browser app may send to the token endpoint: `content-type` and
/// `authorization` (client secrets in HTTP Basic), and those MSAL.js adds.
const TOKEN_ALLOWED_HEADERS: &str = "content-type, authorization, client-request-id, x-client-sku, x-client-ver, \
     x-client-os, x-client-cpu, x-ms-lib-capability, x-client-current-telemetry, x-client-last-telemetry, origin, accept";

/// The routes under `/{tenant}` (the caller nests them).
pub fn router(authority: Arc<Authority>) -> Router {
    Router::new()
        .route("/oauth2/v2.0/token", post(token_v2).options(token_preflight))
        .route("/oauth2/token", post(token_v1).options(token_preflight))
        .route("/oauth2/v2.0/authorize", get(authorize_v2).post(authorize_v2))
        .route("/oauth2/authorize", get(authorize_v1).post(authorize_v1))
        .route("/v2.0/.well-known/openid-configuration", get(discovery_v2))
        .route("/.well-known/openid-configuration", get(discovery_v1))
        .route("/discovery/v2.0/keys", get(keys))
        .route("/discovery/keys", get(keys))
        .with_state(authority)
}

async fn token_v2(State(authority): State<Arc<Authority>>, request: Request) -> Response {
    token(authority, EndpointVersion::V2, request).await
}

async fn token_v1(State(authority): State<Arc<Authority>>, request: Request) -> Response {
    token(authority, EndpointVersion::V1, request).await
}

/// Answers a CORS preflight of a token request.
pub(super) async fn token_preflight() -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("POST, OPTIONS"));
    headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static(TOKEN_ALLOWED_HEADERS));
    headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
    response
}

/// Lets script on any origin read a token response, success or error.
pub(super) fn open_cors(mut response: Response) -> Response {
    response.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    response
}

async fn token(authority: Arc<Authority>, version: EndpointVersion, request: Request) -> Response {
    token_endpoint(request, move |token_request, now| authority.token(version, &token_request, now)).await
}

/// A token endpoint: reads the form and HTTP Basic credentials, has `answer` decide, and sends the
/// JSON response (with open CORS, never cached).
pub(super) async fn token_endpoint<F>(request: Request, answer: F) -> Response
where
    F: FnOnce(TokenRequest, i64) -> Result<Value, OAuthError> + Send + 'static,
{
    open_cors(token_response(request, answer).await)
}

async fn token_response<F>(request: Request, answer: F) -> Response
where
    F: FnOnce(TokenRequest, i64) -> Result<Value, OAuthError> + Send + 'static,
{
    let correlation_id = correlation_id(request.headers());
    let basic = match basic_credentials(request.headers()) {
        Ok(basic) => basic,
        Err(e) => return oauth_error(&e, &correlation_id),
    };
    let params = match form(request).await {
        Ok(params) => params,
        Err(e) => return oauth_error(&e, &correlation_id),
    };
    let token_request = TokenRequest { params, basic };
    // Secret verification is a deliberately slow hash: keep it off the async workers.
    let result = tokio::task::spawn_blocking(move || answer(token_request, crate::time::now())).await;
    match result {
        Ok(Ok(body)) => no_store(json_response(StatusCode::OK, &body)),
        Ok(Err(e)) => oauth_error(&e, &correlation_id),
        Err(_) => oauth_error(&OAuthError::server_error("the token request failed"), &correlation_id),
    }
}

async fn authorize_v2(State(authority): State<Arc<Authority>>, request: Request) -> Response {
    authorize(authority, EndpointVersion::V2, request).await
}

async fn authorize_v1(State(authority): State<Arc<Authority>>, request: Request) -> Response {
    authorize(authority, EndpointVersion::V1, request).await
}

async fn authorize(authority: Arc<Authority>, version: EndpointVersion, request: Request) -> Response {
    // The picker's sign-in token is honoured from a posted form only, never from a URL, which
    // logs and `Referer` headers keep.
    let query: Vec<(String, String)> =
        query_params(request.uri().query()).into_iter().filter(|(k, _)| k != "signin").collect();
    let (mut params, posted) = if request.method() == Method::POST {
        match form(request).await {
            Ok(mut body) => {
                body.extend(query);
                (body, true)
            }
            Err(e) => return html_response(StatusCode::BAD_REQUEST, &e.description()),
        }
    } else {
        (query, false)
    };
    let credentials = if posted {
        let take = |params: &mut Vec<(String, String)>, name: &str| {
            params.iter().position(|(k, _)| k == name).map(|i| params.remove(i).1)
        };
        match (take(&mut params, "login"), take(&mut params, "passwd")) {
            (Some(login), Some(password)) => Some(Credentials { login, password }),
            _ => None,
        }
    } else {
        None
    };
    let outcome =
        tokio::task::spawn_blocking(move || authority.authorize(version, &params, credentials, crate::time::now()))
            .await
            .unwrap_or_else(|_| AuthorizeOutcome::ErrorPage {
                status: 500,
                html: "The sign-in service failed.".into(),
            });
    match outcome {
        AuthorizeOutcome::Page(html) => html_response(StatusCode::OK, &html),
        AuthorizeOutcome::ErrorPage { status, html } => {
            html_response(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST), &html)
        }
        AuthorizeOutcome::Redirect(location) => redirect(&location),
    }
}

/// `302 Found` to `location`, not cached.
pub(super) fn redirect(location: &str) -> Response {
    let mut response = StatusCode::FOUND.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    no_store(response)
}

async fn discovery_v2(State(authority): State<Arc<Authority>>) -> Response {
    discovery(&authority.openid_configuration(EndpointVersion::V2))
}

async fn discovery_v1(State(authority): State<Arc<Authority>>) -> Response {
    discovery(&authority.openid_configuration(EndpointVersion::V1))
}

fn discovery(body: &Value) -> Response {
    let mut response = json_response(StatusCode::OK, body);
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=86400, private"));
    // Browser apps (SMART) read discovery documents from other origins.
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    response
}

async fn keys(State(authority): State<Arc<Authority>>) -> Response {
    match authority.jwks() {
        Ok(set) => discovery(&serde_json::to_value(set).unwrap_or_default()),
        Err(e) => oauth_error(&OAuthError::server_error(e.to_string()), &correlation_id(&HeaderMap::new())),
    }
}

/// The client's `client-request-id` (MSAL sends one), else a new id.
pub(super) fn correlation_id(headers: &HeaderMap) -> String {
    headers
        .get("client-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

pub(super) fn oauth_error(error: &OAuthError, correlation_id: &str) -> Response {
    let trace_id = uuid::Uuid::new_v4().to_string();
    let body = error.body(&trace_id, correlation_id, crate::time::now());
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::BAD_REQUEST);
    no_store(json_response(status, &body))
}

pub(super) fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
    response
}

fn html_response(status: StatusCode, html: &str) -> Response {
    let mut response = (status, html.to_owned()).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    // The sign-in page must not be framed (clickjacking) nor load anything from elsewhere.
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; form-action *; frame-ancestors 'none'"),
    );
    no_store(response)
}

pub(super) fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store, no-cache"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

pub(super) fn query_params(query: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes()).into_owned().collect()
}

/// The request's `application/x-www-form-urlencoded` body.
pub(super) async fn form(request: Request) -> Result<Vec<(String, String)>, OAuthError> {
    let is_form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Err(OAuthError::invalid_request(900144, "The request body must be application/x-www-form-urlencoded."));
    }
    let body: Body = request.into_body();
    let bytes = to_bytes(body, MAX_FORM_BYTES).await.map_err(|_| {
        OAuthError::invalid_request(9002313, "Invalid request. The request body is too large or unreadable.")
    })?;
    Ok(form_urlencoded::parse(&bytes).into_owned().collect())
}

/// HTTP Basic client credentials (RFC 6749 §2.3.1: each part form-urlencoded, then base64).
pub(super) fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, OAuthError> {
    let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else { return Ok(None) };
    let Some(encoded) = value.strip_prefix("Basic ").or_else(|| value.strip_prefix("basic ")) else {
        return Ok(None);
    };
    let malformed = || OAuthError::invalid_client(7000215, "The HTTP Basic client credentials are malformed.");
    let decoded = crate::b64::decode_standard(encoded).ok_or_else(malformed)?;
    let text = String::from_utf8(decoded).map_err(|_| malformed())?;
    let (id, secret) = text.split_once(':').ok_or_else(malformed)?;
    let unescape = |s: &str| -> String {
        form_urlencoded::parse(format!("v={s}").as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default()
    };
    Ok(Some((unescape(id), unescape(secret))))
}

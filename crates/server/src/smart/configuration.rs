//! `GET /.well-known/smart-configuration`
//! (<https://hl7.org/fhir/smart-app-launch/conformance.html>): where a SMART app learns the
//! authorization and token endpoints and what the server supports. Served without a token and open
//! to every origin, since an app reads it before it has either.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::error::FhirError;
use crate::AppState;

pub(crate) async fn handle(State(state): State<AppState>) -> Result<Response, FhirError> {
    let document = match (&state.authority, &state.config.oauth) {
        (Some(authority), _) => authority.smart_configuration(),
        // An external authority: what the server knows of it, and what the FHIR side enforces.
        (None, Some(uris)) => json!({
            "authorization_endpoint": uris.authorize,
            "token_endpoint": uris.token,
            "grant_types_supported": ["authorization_code", "client_credentials"],
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": ["openid", "fhirUser", "launch", "launch/patient", "offline_access", "online_access"],
            "capabilities": [
                "launch-standalone", "client-public", "client-confidential-symmetric", "context-standalone-patient",
                "permission-patient", "permission-user", "permission-v1", "permission-v2", "sso-openid-connect",
            ],
        }),
        (None, None) => return Err(FhirError::RouteNotFound),
    };
    Ok(document_response(&document))
}

fn document_response(document: &Value) -> Response {
    let mut response = (StatusCode::OK, document.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=3600, public"));
    crate::cors::add_open_cors_headers(headers);
    response
}

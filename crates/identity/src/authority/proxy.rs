//! Azure's SMART on FHIR proxy (`AadSmartOnFhirProxyController`), mounted at the FHIR base:
//! `/AadSmartOnFhirProxy/{authorize, callback/{encoded}, token}`.
//!
//! Azure puts it between SMART apps and Entra ID, which knows nothing of SMART's `launch`: the
//! proxy keeps the app's state and launch in a state of its own, receives the code at a callback
//! URL of its own (which names the app's redirect URI, base64url, and must be registered on the app
//! as in Azure), and hands the app a wrapped code that its token route unwraps. Apps written for
//! Azure's proxy work unchanged against this authority, which also reads the launch itself.
//!
//! The encodings: the callback's segment is base64url (no padding) of the app's redirect URI; the
//! state sent on is base64url of `{"s": <app's state>, "l": <launch>}`; the code given to the app
//! is base64url of `{"code": <authority's code>}`.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};

use super::http::{self, correlation_id, oauth_error, query_params, redirect};
use super::token::TokenRequest;
use super::{Authority, EndpointVersion, OAuthError};
use crate::b64;

const PREFIX: &str = "/AadSmartOnFhirProxy";

/// The proxy's routes, to be mounted at the FHIR base.
pub fn router(authority: Arc<Authority>) -> Router {
    Router::new()
        .route(&format!("{PREFIX}/authorize"), get(authorize))
        .route(&format!("{PREFIX}/callback/{{encoded}}"), get(callback))
        .route(&format!("{PREFIX}/token"), post(token).options(http::token_preflight))
        .with_state(authority)
}

async fn authorize(State(authority): State<Arc<Authority>>, request: Request) -> Response {
    let params = query_params(request.uri().query());
    match authority.proxy_authorize(&params) {
        Ok(location) => redirect(&location),
        Err(e) => oauth_error(&e, &correlation_id(request.headers())),
    }
}

async fn callback(State(authority): State<Arc<Authority>>, Path(encoded): Path<String>, request: Request) -> Response {
    let params = query_params(request.uri().query());
    let correlation_id = correlation_id(request.headers());
    // The registration check reads the store, which blocks.
    let result = tokio::task::spawn_blocking(move || authority.proxy_callback(&encoded, &params)).await;
    match result {
        Ok(Ok(location)) => redirect(&location),
        Ok(Err(e)) => oauth_error(&e, &correlation_id),
        Err(_) => oauth_error(&OAuthError::server_error("the callback failed"), &correlation_id),
    }
}

async fn token(State(authority): State<Arc<Authority>>, request: Request) -> Response {
    http::token_endpoint(request, move |token_request, now| authority.proxy_token(token_request, now)).await
}

impl Authority {
    /// The proxy's callback URL for an app's redirect URI: what the app registration must list.
    pub fn proxy_callback_url(&self, redirect_uri: &str) -> String {
        format!("{}{PREFIX}/callback/{}", self.fhir_base(), b64::encode(redirect_uri))
    }

    /// The proxy's token route.
    pub fn proxy_token_endpoint(&self) -> String {
        format!("{}{PREFIX}/token", self.fhir_base())
    }

    /// Where the proxy's authorize route sends the browser: this authority's v2 authorization
    /// endpoint, with the callback as redirect URI and the state wrapped. `response_mode` is
    /// dropped: the callback reads its query.
    pub(super) fn proxy_authorize(&self, params: &[(String, String)]) -> Result<String, OAuthError> {
        let redirect_uri = param(params, "redirect_uri").ok_or_else(|| {
            OAuthError::invalid_request(900144, "The request must contain the parameter 'redirect_uri'.")
        })?;
        let launch = param(params, "launch").map(str::to_owned).unwrap_or_else(|| b64::encode("{}"));
        let state = b64::encode(json!({"s": param(params, "state"), "l": launch}).to_string());
        let callback = self.proxy_callback_url(redirect_uri);
        let replaced = ["redirect_uri", "state", "launch", "response_mode"];
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (k, v) in params.iter().filter(|(k, _)| !replaced.contains(&k.as_str())) {
            query.append_pair(k, v);
        }
        query.append_pair("redirect_uri", &callback).append_pair("launch", &launch).append_pair("state", &state);
        Ok(format!("{}?{}", self.authorization_endpoint(EndpointVersion::V2), query.finish()))
    }

    /// Where the callback sends the browser: the app's redirect URI with the wrapped code (or the
    /// error) and the app's own state. Only a callback URL some app registered is followed, so the
    /// route cannot send browsers elsewhere.
    pub(super) fn proxy_callback(&self, encoded: &str, params: &[(String, String)]) -> Result<String, OAuthError> {
        let invalid = |message: &str| OAuthError::invalid_request(9002313, message.to_owned());
        let redirect_uri = b64::decode(encoded)
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .filter(|uri| uri.contains("://"))
            .ok_or_else(|| invalid("The callback does not name a valid redirect URI."))?;
        let callback = self.proxy_callback_url(&redirect_uri);
        if !self.store.apps()?.iter().any(|app| app.redirect_uris.contains(&callback)) {
            return Err(invalid("The callback URL is not a redirect URI of any application."));
        }
        let state = match param(params, "state") {
            None => None,
            Some(state) => unwrap_state(state).ok_or_else(|| invalid("The state is not the proxy's."))?,
        };
        let mut fields: Vec<(&str, String)> = Vec::new();
        if let Some(error) = param(params, "error") {
            fields.push(("error", error.to_owned()));
            if let Some(description) = param(params, "error_description") {
                fields.push(("error_description", description.to_owned()));
            }
        } else {
            let code = param(params, "code")
                .ok_or_else(|| OAuthError::invalid_request(900144, "The request must contain the parameter 'code'."))?;
            fields.push(("code", wrap_code(code)));
        }
        if let Some(state) = state {
            fields.push(("state", state));
        }
        if let Some(session_state) = param(params, "session_state") {
            fields.push(("session_state", session_state.to_owned()));
        }
        let query: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields.iter().map(|(k, v)| (*k, v.as_str())))
            .finish();
        let separator = if redirect_uri.contains('?') { '&' } else { '?' };
        Ok(format!("{redirect_uri}{separator}{query}"))
    }

    /// The proxy's token route: an authorization code is unwrapped and redeemed at the callback URL
    /// it was issued for, and the response names the client; other grants pass through.
    pub(super) fn proxy_token(&self, mut request: TokenRequest, now: i64) -> Result<Value, OAuthError> {
        if request.get("grant_type") != Some("authorization_code") {
            return self.token(EndpointVersion::V2, &request, now);
        }
        let code = unwrap_code(request.require("code")?).ok_or_else(|| {
            OAuthError::invalid_grant(70000, "The provided value for the 'code' parameter is not valid.")
        })?;
        let callback = self.proxy_callback_url(request.require("redirect_uri")?);
        let client_id =
            request.get("client_id").or(request.basic.as_ref().map(|(id, _)| id.as_str())).map(str::to_owned);
        request.params.retain(|(k, _)| k != "code" && k != "redirect_uri");
        request.params.push(("code".into(), code));
        request.params.push(("redirect_uri".into(), callback));
        let mut body = self.token(EndpointVersion::V2, &request, now)?;
        if let (Some(map), Some(client_id)) = (body.as_object_mut(), client_id) {
            map.insert("client_id".into(), json!(client_id));
        }
        Ok(body)
    }
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
}

/// The app's state from the proxy's (`None` inside when the app sent none); `None` when it is not
/// the proxy's.
fn unwrap_state(state: &str) -> Option<Option<String>> {
    match json_object(state)?.get("s") {
        Some(Value::String(s)) => Some(Some(s.clone())),
        None | Some(Value::Null) => Some(None),
        Some(_) => None,
    }
}

fn wrap_code(code: &str) -> String {
    b64::encode(json!({ "code": code }).to_string())
}

fn unwrap_code(wrapped: &str) -> Option<String> {
    json_object(wrapped)?.get("code")?.as_str().filter(|c| !c.is_empty()).map(str::to_owned)
}

/// A base64url JSON object.
fn json_object(encoded: &str) -> Option<serde_json::Map<String, Value>> {
    match serde_json::from_slice(&b64::decode(encoded)?).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_round_trip_and_refuse_garbage() {
        assert_eq!(unwrap_code(&wrap_code("abc")).as_deref(), Some("abc"));
        assert_eq!(unwrap_code("not base64!"), None);
        assert_eq!(unwrap_code(&b64::encode("[1]")), None);
        assert_eq!(unwrap_code(&b64::encode(r#"{"code":""}"#)), None);
        assert_eq!(unwrap_state(&b64::encode(r#"{"s":"xyz","l":"e30"}"#)), Some(Some("xyz".into())));
        assert_eq!(unwrap_state(&b64::encode(r#"{"s":null,"l":"e30"}"#)), Some(None));
        assert_eq!(unwrap_state(&b64::encode(r#"{"s":1}"#)), None);
        assert_eq!(unwrap_state("%%%"), None);
    }
}

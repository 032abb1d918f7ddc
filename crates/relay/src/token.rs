//! OAuth 2.0 client-credentials tokens for destinations, from an auth credential's `url`.
//!
//! The request is built from Redox's field names (REDOX-COMPAT §7): `grant_type`, `client_id` and
//! `client_secret` (each key renamable), `scope` from `scopes`, `audience`, `resource`, and one
//! custom field, form-encoded unless `contentType` says JSON. `resource` is the Entra v1 form and
//! Entra's v2 endpoint (`…/oauth2/v2.0/token`) refuses it (AADSTS901002), so it is left out there
//! when a scope is given: the value Redox's Azure page asks for then still works unchanged.
//!
//! With the `OAuth_2.0_2-legged_JWT` strategy a signed client assertion ([`crate::assertion`])
//! takes the secret's place.
//!
//! Tokens are cached per credential (and its version, so a changed secret is used at once) until
//! a minute before they expire, and forgotten when a destination answers `401`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::assertion::SigningKey;
use crate::model::Credential;

/// RFC 7523's client assertion type.
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How long before its expiry a cached token is replaced.
const MARGIN: Duration = Duration::from_secs(60);
/// A token's lifetime when the endpoint names none and the credential gives no default.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

#[derive(Debug, Default)]
pub struct TokenCache {
    tokens: Mutex<HashMap<(String, i64), (String, Instant)>>,
}

impl TokenCache {
    /// A bearer token for `credential`: cached, or fetched now.
    pub async fn bearer(&self, client: &fhirside_fetch::Client, credential: &Credential) -> Result<String, String> {
        let key = (credential.id.clone(), credential.updated_at);
        if let Some((token, until)) = self.lock().get(&key) {
            if Instant::now() < *until {
                return Ok(token.clone());
            }
        }
        let (token, lifetime) = fetch(client, credential).await?;
        // A short-lived token is kept for half its life rather than not at all.
        let keep = lifetime.checked_sub(MARGIN).unwrap_or(lifetime / 2);
        self.lock().insert(key, (token.clone(), Instant::now() + keep));
        Ok(token)
    }

    /// Drops the cached token of `credential` (the destination refused it).
    pub fn forget(&self, credential: &Credential) {
        self.lock().retain(|(id, _), _| id != &credential.id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, i64), (String, Instant)>> {
        self.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The token request's content type and body; `now` (seconds) dates a client assertion.
pub fn request_body(credential: &Credential, now: i64) -> Result<(&'static str, String), String> {
    let name = |field: &str, default: &'static str| credential.field(field).unwrap_or(default).to_owned();
    let url = credential.field("url").unwrap_or_default();
    let scope = credential.field("scopes");
    let client_id = credential.field("clientId").unwrap_or_default();
    let mut pairs: Vec<(String, String)> = vec![
        (name("grantTypeName", "grant_type"), credential.field("grantType").unwrap_or("client_credentials").into()),
        (name("clientIdName", "client_id"), client_id.into()),
    ];
    if credential.field("authStrategy") == Some(crate::model::STRATEGY_OAUTH_JWT) {
        let key = SigningKey::from_pem(credential.secret("privateKey").unwrap_or_default())?;
        let assertion = key.assertion(client_id, url, credential.field("kid"), now)?;
        pairs.push(("client_assertion_type".into(), ASSERTION_TYPE.into()));
        pairs.push(("client_assertion".into(), assertion));
    } else {
        pairs.push((
            name("clientSecretName", "client_secret"),
            credential.secret("clientSecret").unwrap_or_default().into(),
        ));
    }
    if let Some(scope) = scope {
        pairs.push(("scope".into(), scope.into()));
    }
    if let Some(audience) = credential.field("audience") {
        pairs.push(("audience".into(), audience.into()));
    }
    if let Some(resource) = credential.field("resource") {
        if !(url.contains("/oauth2/v2.0/token") && scope.is_some()) {
            pairs.push(("resource".into(), resource.into()));
        }
    }
    if let (Some(field), Some(value)) = (credential.field("customFieldName"), credential.field("customFieldValue")) {
        pairs.push((field.into(), value.into()));
    }
    Ok(if credential.field("contentType") == Some("application/json") {
        let object: Map<String, Value> = pairs.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
        ("application/json", Value::Object(object).to_string())
    } else {
        let mut form = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &pairs {
            form.append_pair(k, v);
        }
        ("application/x-www-form-urlencoded", form.finish())
    })
}

/// Reads the token and its lifetime from the endpoint's answer.
pub fn parse_response(credential: &Credential, body: &[u8]) -> Result<(String, Duration), String> {
    let json: Value = serde_json::from_slice(body).map_err(|_| "the token endpoint's answer is not JSON".to_owned())?;
    let token_field = credential.field("accessTokenName").unwrap_or("access_token");
    let token = json
        .get(token_field)
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| format!("the token endpoint's answer has no '{token_field}'"))?;
    let expires_field = credential.field("expiresFieldName").unwrap_or("expires_in");
    let seconds = |v: &Value| v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok()));
    let lifetime = json
        .get(expires_field)
        .and_then(seconds)
        .or_else(|| credential.fields.get("defaultExpirationSeconds").and_then(seconds))
        .map_or(DEFAULT_LIFETIME, Duration::from_secs);
    Ok((token.to_owned(), lifetime))
}

async fn fetch(client: &fhirside_fetch::Client, credential: &Credential) -> Result<(String, Duration), String> {
    let url = credential.field("url").unwrap_or_default();
    let (content_type, body) = request_body(credential, crate::now_ms() / 1000)
        .map_err(|e| format!("cannot sign the client assertion of '{}': {e}", credential.name()))?;
    let shown = fhirside_fetch::redact(url);
    let response = client
        .post(url, &[("content-type", content_type), ("accept", "application/json")], body)
        .await
        .map_err(|e| format!("the token endpoint could not be reached: {e}"))?;
    if !response.is_success() {
        // OAuth error bodies carry `error` and `error_description`, which never hold the secret.
        let detail = serde_json::from_slice::<Value>(&response.body)
            .ok()
            .map(|j| {
                let error = j["error"].as_str().unwrap_or_default();
                let description = j["error_description"].as_str().unwrap_or_default();
                format!(": {error}: {}", description.lines().next().unwrap_or_default())
            })
            .unwrap_or_default();
        return Err(format!(
            "the token endpoint {shown} refused the auth credential '{}' (HTTP {}){detail}",
            credential.name(),
            response.status
        ));
    }
    parse_response(credential, &response.body).map_err(|e| format!("{e} ({shown})"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn credential(extra: Value) -> Credential {
        let mut fields = json!({
            "name": "c", "url": "https://login.example/t/oauth2/v2.0/token", "clientId": "app",
            "grantType": "client_credentials", "scopes": "https://fhir.example/.default",
            "resource": "https://fhir.example/Bundle", "audience": "https://fhir.example/Bundle"
        });
        for (k, v) in extra.as_object().unwrap() {
            fields[k] = v.clone();
        }
        Credential {
            id: "id".into(),
            environment_id: "e".into(),
            fields: fields.as_object().unwrap().clone(),
            secrets: json!({"clientSecret": "s e/cret"}).as_object().unwrap().clone(),
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn v2_endpoints_get_the_scope_and_not_the_resource() {
        let (kind, body) = request_body(&credential(json!({})), 0).unwrap();
        assert_eq!(kind, "application/x-www-form-urlencoded");
        assert_eq!(
            body,
            "grant_type=client_credentials&client_id=app&client_secret=s+e%2Fcret&scope=https%3A%2F%2Ffhir.example%2F.default\
             &audience=https%3A%2F%2Ffhir.example%2FBundle"
        );
        let (_, v1) = request_body(&credential(json!({"url": "https://login.example/t/oauth2/token"})), 0).unwrap();
        assert!(v1.ends_with("&resource=https%3A%2F%2Ffhir.example%2FBundle"), "{v1}");
    }

    #[test]
    fn renamed_keys_custom_fields_and_json() {
        let (kind, body) = request_body(
            &credential(json!({
                "contentType": "application/json", "clientIdName": "id", "customFieldName": "tenant",
                "customFieldValue": "t1"
            })),
            0,
        )
        .unwrap();
        assert_eq!(kind, "application/json");
        let json: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["id"], "app");
        assert_eq!(json["tenant"], "t1");
    }

    #[test]
    fn lifetimes_come_from_the_answer_or_the_default() {
        let c = credential(json!({}));
        assert_eq!(
            parse_response(&c, br#"{"access_token":"t","expires_in":"120"}"#).unwrap(),
            ("t".into(), Duration::from_secs(120))
        );
        let c = credential(json!({"defaultExpirationSeconds": 30, "accessTokenName": "token"}));
        assert_eq!(parse_response(&c, br#"{"token":"x"}"#).unwrap(), ("x".into(), Duration::from_secs(30)));
        assert!(parse_response(&c, br#"{"access_token":"x"}"#).unwrap_err().contains("'token'"));
    }
}

//! Tokens of an Azure managed identity for Blob Storage, fetched from the identity endpoint of
//! the machine the server runs on (settings in src/setting.rs):
//!
//! - App Service, Azure Functions and Container Apps name a local endpoint in `IDENTITY_ENDPOINT`
//!   and a value in `IDENTITY_HEADER`, which each request sends back as `X-IDENTITY-HEADER` (so
//!   that a request forged through some other program cannot get a token):
//!   `GET {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=https://storage.azure.com/`;
//! - elsewhere (VMs, scale sets, AKS nodes) the Instance Metadata Service, with `Metadata: true`:
//!   `GET http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=…`.
//!
//! - AKS workload identity: Kubernetes writes the pod's service account token to
//!   `AZURE_FEDERATED_TOKEN_FILE` (and replaces it before it expires, so it is read again for each
//!   fetch), and Entra exchanges it for a token of the identity whose federated credential trusts
//!   it: `POST {AZURE_AUTHORITY_HOST}/{AZURE_TENANT_ID}/oauth2/v2.0/token` with the form
//!   `grant_type=client_credentials`, `client_id`, `scope=https://storage.azure.com/.default`,
//!   `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer` and the file's
//!   token as `client_assertion`.
//!
//! A user-assigned identity adds `client_id=…`. All answer JSON with `access_token` and its
//! expiry, `expires_in` (seconds from now) and/or `expires_on` (epoch seconds), as numbers or
//! strings.
//!
//! A token lasts hours at most and a bulk job may run longer, so a token is kept until half its
//! life has passed and then replaced. All requests of a store share one cache, and one fetch at a
//! time: concurrent requests wait for it rather than each asking the endpoint. Should a refresh
//! fail while the old token is still valid, the old one is used and the refresh tried again a few
//! seconds later; once it has expired, the failure is the request's error. Tokens appear in no
//! error, Debug output or log; errors name the endpoint without its query.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fhirside_fetch::{Request, Response};
use serde_json::Value;
use tokio::sync::Mutex;

use crate::http::Http;
use crate::text::query_string;
use crate::{IdentityEndpoint, ManagedIdentity, ObjectError};

/// The resource (audience) of tokens for Azure Storage.
pub(crate) const STORAGE_RESOURCE: &str = "https://storage.azure.com/";
/// The Instance Metadata Service's address, unless `AZURE_POD_IDENTITY_AUTHORITY_HOST` says.
pub(crate) const IMDS_AUTHORITY: &str = "http://169.254.169.254";
const IMDS_TOKEN_PATH: &str = "/metadata/identity/oauth2/token";
const IMDS_API_VERSION: &str = "2018-02-01";
const APP_SERVICE_API_VERSION: &str = "2019-08-01";
/// The scope of workload identity tokens for Azure Storage (Entra's v2 endpoint takes scopes).
const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";
/// What `client_assertion` holds: a JWT, the service account token.
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A token closer than this (or than a quarter of its life) to its expiry is not sent, even when
/// its refresh failed: it could expire on the way.
const LAST_USE: Duration = Duration::from_secs(30);
/// After a failed refresh while the old token is still valid, the pause before the next try (so
/// that every request does not wait for a failing endpoint).
const RETRY_PAUSE: Duration = Duration::from_secs(10);
/// No token is kept longer than this, whatever its answer said (Entra's tokens last at most a
/// day); a mistaken expiry far in the future must not pin a token forever.
const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// A managed identity's tokens, cached for the requests of one store.
pub(crate) struct TokenSource {
    identity: ManagedIdentity,
    state: Mutex<State>,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource").field("identity", &self.identity).finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    token: Option<Token>,
    /// Set after a failed refresh while the token was still valid.
    retry_at: Option<Instant>,
}

struct Token {
    value: String,
    refresh_at: Instant,
    /// The last moment it is sent when its refresh fails.
    last_use_at: Instant,
}

impl Token {
    fn usable(&self, now: Instant) -> bool {
        now < self.last_use_at
    }
}

impl TokenSource {
    pub fn new(identity: ManagedIdentity) -> TokenSource {
        TokenSource { identity, state: Mutex::new(State::default()) }
    }

    /// A token for Azure Storage: the cached one while it is fresh, else a new one.
    pub async fn token(&self, http: &Http) -> Result<String, ObjectError> {
        // Held across the fetch: concurrent requests wait for this one fetch and then share it.
        let mut state = self.state.lock().await;
        let now = Instant::now();
        if let Some(token) = &state.token {
            let pausing = state.retry_at.is_some_and(|at| now < at) && token.usable(now);
            if now < token.refresh_at || pausing {
                return Ok(token.value.clone());
            }
        }
        match self.fetch(http).await {
            Ok(token) => {
                let value = token.value.clone();
                *state = State { token: Some(token), retry_at: None };
                Ok(value)
            }
            Err(error) => {
                let now = Instant::now();
                match &state.token {
                    Some(token) if token.usable(now) => {
                        let value = token.value.clone();
                        state.retry_at = Some(now + RETRY_PAUSE);
                        Ok(value)
                    }
                    _ => Err(error),
                }
            }
        }
    }

    /// Drops the cached token, which the storage refused: the next request fetches another.
    pub async fn forget(&self, refused: &str) {
        let mut state = self.state.lock().await;
        if state.token.as_ref().is_some_and(|token| token.value == refused) {
            *state = State::default();
        }
    }

    async fn fetch(&self, http: &Http) -> Result<Token, ObjectError> {
        let url = token_url(&self.identity);
        let shown = fhirside_fetch::redact(&url);
        let what = "Azure managed identity token";
        let assertion = match &self.identity.endpoint {
            IdentityEndpoint::Workload { token_file, .. } => Some(service_account_token(token_file).await?),
            _ => None,
        };
        let sent = Instant::now();
        let response = http.call(what, 0, || Ok(token_request(&self.identity, &url, assertion.as_deref()))).await?;
        if response.status != 200 {
            return Err(refusal(&format!("{what} from {shown}"), &response));
        }
        let now_epoch = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let (value, lifetime) = parse_answer(&response.body, now_epoch)
            .map_err(|why| ObjectError::Rejected(format!("{what} from {shown}: {why}")))?;
        // Measured from when the request was sent, so that its round trip does not stretch it.
        let lifetime = lifetime.min(MAX_LIFETIME);
        let last_use = lifetime - LAST_USE.min(lifetime / 4);
        Ok(Token { value, refresh_at: sent + lifetime / 2, last_use_at: sent + last_use })
    }
}

/// The token request's URL, with the identity's parameters.
pub(crate) fn token_url(identity: &ManagedIdentity) -> String {
    let (base, api_version) = match &identity.endpoint {
        // Entra's token endpoint takes its parameters in the form.
        IdentityEndpoint::Workload { authority, tenant, .. } => {
            return format!("{}/{tenant}/oauth2/v2.0/token", authority.trim_end_matches('/'));
        }
        IdentityEndpoint::AppService { url, .. } => (url.clone(), APP_SERVICE_API_VERSION),
        IdentityEndpoint::Imds { authority } => {
            (format!("{}{IMDS_TOKEN_PATH}", authority.trim_end_matches('/')), IMDS_API_VERSION)
        }
    };
    let mut params = vec![("api-version", api_version.to_owned()), ("resource", STORAGE_RESOURCE.to_owned())];
    if let Some(client_id) = &identity.client_id {
        params.push(("client_id", client_id.clone()));
    }
    let separator = if base.contains('?') { '&' } else { '?' };
    format!("{base}{separator}{}", query_string(&params))
}

/// The token request; `assertion` is the service account token, for workload identity.
fn token_request(identity: &ManagedIdentity, url: &str, assertion: Option<&str>) -> Request {
    match &identity.endpoint {
        IdentityEndpoint::AppService { header, .. } => {
            Request::new("GET", url).header("Accept", "application/json").header("X-IDENTITY-HEADER", header.as_str())
        }
        // The metadata service answers over plain http at a link-local address, which the client
        // reaches only for requests that ask to.
        IdentityEndpoint::Imds { .. } => {
            Request::new("GET", url).header("Accept", "application/json").header("Metadata", "true").instance_metadata()
        }
        IdentityEndpoint::Workload { .. } => {
            let form = query_string(&[
                ("grant_type", "client_credentials".to_owned()),
                ("client_id", identity.client_id.clone().unwrap_or_default()),
                ("scope", STORAGE_SCOPE.to_owned()),
                ("client_assertion_type", JWT_BEARER.to_owned()),
                ("client_assertion", assertion.unwrap_or_default().to_owned()),
            ]);
            Request::new("POST", url)
                .header("Accept", "application/json")
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(form)
        }
    }
}

/// The service account token Kubernetes keeps in the file (read afresh: it is replaced before it
/// expires). Errors name the file, never its content.
async fn service_account_token(path: &std::path::Path) -> Result<String, ObjectError> {
    let text = tokio::fs::read_to_string(path).await.map_err(|e| {
        ObjectError::Denied(format!("the workload identity token file {} cannot be read: {e}", path.display()))
    })?;
    let token = text.trim();
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ObjectError::Denied(format!("the workload identity token file {} holds no token", path.display())));
    }
    Ok(token.to_owned())
}

/// The token and its lifetime from a 200 answer. Errors never quote the answer, which may hold
/// the token.
fn parse_answer(body: &[u8], now_epoch: u64) -> Result<(String, Duration), String> {
    let answer: Value = serde_json::from_slice(body).map_err(|_| "the answer is not JSON".to_owned())?;
    let token = answer.get("access_token").and_then(Value::as_str).unwrap_or_default();
    if token.is_empty() {
        return Err("the answer has no access_token".into());
    }
    // It goes into a header as it is.
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the access_token has characters no token has".into());
    }
    if let Some(kind) = answer.get("token_type").and_then(Value::as_str) {
        if !kind.eq_ignore_ascii_case("Bearer") {
            return Err(format!("a token of type '{}', not Bearer", printable(kind, 40)));
        }
    }
    // expires_in does not depend on this machine's clock agreeing with Azure's; App Service's
    // answer has only expires_on.
    let lifetime = if let Some(seconds) = seconds(answer.get("expires_in")) {
        seconds
    } else if let Some(at) = seconds(answer.get("expires_on")) {
        at.saturating_sub(now_epoch)
    } else {
        return Err("the answer has no expires_in or expires_on (in seconds)".into());
    };
    Ok((token.to_owned(), Duration::from_secs(lifetime)))
}

/// A whole number of seconds, given as a number or a string of digits.
fn seconds(value: Option<&Value>) -> Option<u64> {
    match value? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The error for an answer other than 200: the status and the endpoint's error code and
/// description (`{"error": "invalid_request", "error_description": "Identity not found"}` from the
/// metadata service, `{"message": …}` or `{"error": {"code": …, "message": …}}` elsewhere).
/// Throttling and server errors are worth another try later; anything else means that this
/// identity gets no token (none assigned, a wrong client id, a wrong header).
fn refusal(what: &str, response: &Response) -> ObjectError {
    let answer: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
    let text = |value: Option<&Value>| value.and_then(Value::as_str).map(|s| printable(s, 200));
    let error = answer.get("error");
    let code = text(error).or_else(|| text(error.and_then(|e| e.get("code"))));
    let description = text(answer.get("error_description"))
        .or_else(|| text(answer.get("message")))
        .or_else(|| text(error.and_then(|e| e.get("message"))));
    let detail: Vec<String> = code.into_iter().chain(description).collect();
    let message = match detail.is_empty() {
        true => format!("{what}: HTTP {}", response.status),
        false => format!("{what}: HTTP {} {}", response.status, detail.join(": ")),
    };
    match response.status {
        408 | 429 | 500.. => ObjectError::Unavailable(message),
        _ => ObjectError::Denied(message),
    }
}

/// At most `max` characters, without control characters: the text comes from the endpoint.
fn printable(text: &str, max: usize) -> String {
    text.chars().take(max).map(|c| if c.is_control() { '\u{FFFD}' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(client_id: Option<&str>, endpoint: IdentityEndpoint) -> ManagedIdentity {
        ManagedIdentity { client_id: client_id.map(str::to_owned), endpoint }
    }

    #[test]
    fn token_urls() {
        let imds = IdentityEndpoint::Imds { authority: IMDS_AUTHORITY.into() };
        assert_eq!(
            token_url(&identity(None, imds)),
            "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01\
             &resource=https%3A%2F%2Fstorage.azure.com%2F"
        );
        let pod = IdentityEndpoint::Imds { authority: "http://127.0.0.1:2579/".into() };
        assert_eq!(
            token_url(&identity(Some("0d1e2f3a-0000-4000-8000-000000000001"), pod)),
            "http://127.0.0.1:2579/metadata/identity/oauth2/token?api-version=2018-02-01\
             &resource=https%3A%2F%2Fstorage.azure.com%2F&client_id=0d1e2f3a-0000-4000-8000-000000000001"
        );
        let app = IdentityEndpoint::AppService { url: "http://localhost:42356/msi/token".into(), header: "h".into() };
        assert_eq!(
            token_url(&identity(None, app)),
            "http://localhost:42356/msi/token?api-version=2019-08-01&resource=https%3A%2F%2Fstorage.azure.com%2F"
        );
    }

    #[test]
    fn answers() {
        let now = 1_700_000_000;
        let parse = |body: &str| parse_answer(body.as_bytes(), now);
        // The metadata service: strings, expires_in preferred.
        let imds = r#"{"access_token":"eyJ0.eyJ1.sig","refresh_token":"","expires_in":"3599",
            "expires_on":"1700009999","not_before":"1699996400","resource":"https://storage.azure.com/",
            "token_type":"Bearer"}"#;
        assert_eq!(parse(imds).unwrap(), ("eyJ0.eyJ1.sig".to_owned(), Duration::from_secs(3599)));
        // App Service: expires_on only, as a number or a string.
        let app = r#"{"access_token":"t","expires_on":1700003600,"resource":"https://storage.azure.com/","token_type":"Bearer","client_id":"c"}"#;
        assert_eq!(parse(app).unwrap().1, Duration::from_secs(3600));
        assert_eq!(parse(r#"{"access_token":"t","expires_on":"1700000060"}"#).unwrap().1, Duration::from_secs(60));
        // Already expired: a lifetime of nothing (used once, then fetched again).
        assert_eq!(parse(r#"{"access_token":"t","expires_on":"1600000000"}"#).unwrap().1, Duration::ZERO);

        for (body, why) in [
            ("not json", "not JSON"),
            (r#"{"expires_in":"3599"}"#, "no access_token"),
            (r#"{"access_token":"","expires_in":"3599"}"#, "no access_token"),
            (r#"{"access_token":"secret-token","expires_on":"soon"}"#, "no expires_in or expires_on"),
            (r#"{"access_token":"secret token","expires_in":1}"#, "characters"),
            (r#"{"access_token":"secret-token","expires_in":1,"token_type":"pop"}"#, "type 'pop'"),
        ] {
            let error = parse(body).unwrap_err();
            assert!(error.contains(why), "{body}: {error}");
            assert!(!error.contains("secret"), "{error}");
        }
    }

    #[test]
    fn refusals_carry_the_endpoint_error() {
        let answer = |status: u16, body: &str| Response { status, headers: vec![], body: body.as_bytes().to_vec() };
        let error = refusal(
            "token from E",
            &answer(400, r#"{"error":"invalid_request","error_description":"Identity not found"}"#),
        );
        assert_eq!(error, ObjectError::Denied("token from E: HTTP 400 invalid_request: Identity not found".into()));
        let error = refusal("t", &answer(500, r#"{"error":{"code":"Internal","message":"try later"}}"#));
        assert_eq!(error, ObjectError::Unavailable("t: HTTP 500 Internal: try later".into()));
        let error = refusal("t", &answer(401, r#"{"statusCode":401,"message":"Unauthorized\nrequest"}"#));
        assert_eq!(error, ObjectError::Denied("t: HTTP 401 Unauthorized\u{FFFD}request".into()));
        assert_eq!(refusal("t", &answer(429, "busy")), ObjectError::Unavailable("t: HTTP 429".into()));
    }
}

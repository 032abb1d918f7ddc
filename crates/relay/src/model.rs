//! The relay's objects as the Platform API shows them, and the checks on the bodies that create or
//! change them: Redox's field names, its wizard's rules, and one clear message per mistake.

use serde_json::{json, Map, Value};

use crate::{iso, RelayError, Result};

/// Redox's environment flags, title case as its API spells them.
pub const FLAGS: [&str; 3] = ["Development", "Staging", "Production"];

#[derive(Debug, Clone, PartialEq)]
pub struct Environment {
    pub id: String,
    pub organization: i64,
    pub name: String,
    pub flag: String,
}

impl Environment {
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "environmentFlag": self.flag,
            "organization": { "id": self.organization },
        })
    }

    pub fn is_production(&self) -> bool {
        self.flag == "Production"
    }
}

/// The auth strategies this relay can use to get a token: client id and secret, or client id and
/// a private key that signs a client assertion (RFC 7523, `private_key_jwt`).
pub const STRATEGY_OAUTH: &str = "OAuth_2.0_2-legged";
pub const STRATEGY_OAUTH_JWT: &str = "OAuth_2.0_2-legged_JWT";
/// Redox's other strategies: known names, refused with a clear message.
const OTHER_STRATEGIES: [&str; 4] = ["GoogleWIF", "AwsSigv4", "SMART_Backend", "JWT_bearer"];

/// Credential fields stored and shown as they are (Redox's schema spelling).
const CREDENTIAL_FIELDS: [&str; 24] = [
    "organization",
    "name",
    "environmentId",
    "authStrategy",
    "grantType",
    "url",
    "clientId",
    "username",
    "audience",
    "scopes",
    "resource",
    "contentType",
    "noBasic",
    "refreshGrantType",
    "customFieldName",
    "customFieldValue",
    "defaultExpirationSeconds",
    "grantTypeName",
    "clientIdName",
    "clientSecretName",
    "refreshTokenName",
    "accessTokenName",
    "expiresFieldName",
    "kid",
];
/// Credential fields kept but never shown: each appears as `has<Name>` instead.
const SECRET_FIELDS: [&str; 3] = ["clientSecret", "password", "privateKey"];
/// The spellings of Redox's Azure page, accepted for the Platform API's.
const ALIASES: [(&str, &str); 2] = [("scope", "scopes"), ("resourceURI", "resource")];
/// What a client may send back from a read; ignored.
const READ_ONLY: [&str; 6] = ["id", "createdAt", "updatedAt", "hasClientSecret", "hasPassword", "hasPrivateKey"];

/// An auth credential: the non-secret fields as given, and the secrets.
#[derive(Clone, PartialEq)]
pub struct Credential {
    pub id: String,
    pub environment_id: String,
    pub fields: Map<String, Value>,
    pub secrets: Map<String, Value>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl std::fmt::Debug for Credential {
    // Secrets are named, never shown: a credential may end up in a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("id", &self.id)
            .field("environment_id", &self.environment_id)
            .field("fields", &self.fields)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Credential {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).and_then(Value::as_str)
    }

    pub fn secret(&self, name: &str) -> Option<&str> {
        self.secrets.get(name).and_then(Value::as_str)
    }

    pub fn name(&self) -> &str {
        self.field("name").unwrap_or_default()
    }

    /// The credential as shown: no secret, a `has<Name>` flag for each.
    pub fn to_json(&self) -> Value {
        let mut out = Map::new();
        out.insert("id".into(), json!(self.id));
        for (k, v) in &self.fields {
            out.insert(k.clone(), v.clone());
        }
        for name in SECRET_FIELDS {
            out.insert(has(name), json!(self.secrets.get(name).is_some_and(|v| !v.is_null())));
        }
        out.insert("createdAt".into(), json!(iso(self.created_at)));
        out.insert("updatedAt".into(), json!(iso(self.updated_at)));
        Value::Object(out)
    }
}

fn has(name: &str) -> String {
    let mut chars = name.chars();
    let first = chars.next().map(|c| c.to_ascii_uppercase()).unwrap_or_default();
    format!("has{first}{}", chars.as_str())
}

fn object(body: &Value) -> Result<&Map<String, Value>> {
    body.as_object().ok_or_else(|| RelayError::Invalid("The body must be a JSON object.".into()))
}

/// Splits a credential body into its stored fields and secrets, resolving aliases; `existing` is
/// the credential a PATCH changes (a field set to `null` is removed).
pub fn credential_fields(
    body: &Value,
    existing: Option<&Credential>,
) -> Result<(Map<String, Value>, Map<String, Value>)> {
    let (mut fields, mut secrets) = existing.map(|c| (c.fields.clone(), c.secrets.clone())).unwrap_or_default();
    for (key, value) in object(body)? {
        if READ_ONLY.contains(&key.as_str()) {
            continue;
        }
        let name = ALIASES.iter().find(|(alias, _)| alias == key).map_or(key.as_str(), |(_, name)| name);
        let target = if SECRET_FIELDS.contains(&name) {
            &mut secrets
        } else if CREDENTIAL_FIELDS.contains(&name) {
            &mut fields
        } else {
            return Err(RelayError::Invalid(format!(
                "Unknown auth credential field '{key}'. Known fields: {}, {} (also 'scope' for 'scopes' and \
                 'resourceURI' for 'resource').",
                CREDENTIAL_FIELDS.join(", "),
                SECRET_FIELDS.join(", ")
            )));
        };
        match value {
            Value::Null => {
                target.remove(name);
            }
            Value::String(_) => {
                target.insert(name.to_owned(), value.clone());
            }
            Value::Number(_) if matches!(name, "organization" | "defaultExpirationSeconds") => {
                target.insert(name.to_owned(), value.clone());
            }
            Value::Bool(b) if name == "noBasic" => {
                target.insert(name.to_owned(), json!(b.to_string()));
            }
            _ => return Err(RelayError::Invalid(format!("The auth credential field '{key}' must be a string."))),
        }
    }
    if existing.is_some_and(|c| fields.get("environmentId") != c.fields.get("environmentId")) {
        return Err(RelayError::Conflict(
            "An auth credential cannot move to another environment; create one there instead.".into(),
        ));
    }
    check_credential(&fields, &secrets)?;
    Ok((fields, secrets))
}

/// The rules of a complete credential.
fn check_credential(fields: &Map<String, Value>, secrets: &Map<String, Value>) -> Result<()> {
    let text = |name: &str| fields.get(name).and_then(Value::as_str).filter(|s| !s.trim().is_empty());
    let required =
        |name: &str| text(name).ok_or_else(|| RelayError::Invalid(format!("The auth credential needs '{name}'.")));
    match fields.get("organization") {
        Some(Value::Number(n)) if n.as_i64().is_some() => {}
        Some(Value::String(s)) if s.parse::<i64>().is_ok() => {}
        _ => return Err(RelayError::Invalid("The auth credential needs 'organization', a number (e.g. 118).".into())),
    }
    required("name")?;
    required("environmentId")?;
    let strategy = required("authStrategy")?;
    if strategy != STRATEGY_OAUTH && strategy != STRATEGY_OAUTH_JWT {
        let why = if OTHER_STRATEGIES.contains(&strategy) { "is not supported by this relay" } else { "is unknown" };
        return Err(RelayError::Invalid(format!(
            "The authStrategy '{strategy}' {why}; use '{STRATEGY_OAUTH}' (client id and secret) or \
             '{STRATEGY_OAUTH_JWT}' (client id and private key)."
        )));
    }
    let grant = required("grantType")?;
    if grant != "client_credentials" {
        return Err(RelayError::Invalid(format!(
            "The grantType '{grant}' is not supported; '{STRATEGY_OAUTH}' uses 'client_credentials'."
        )));
    }
    check_url("url", required("url")?, true)?;
    required("clientId")?;
    if strategy == STRATEGY_OAUTH_JWT {
        let key = secrets.get("privateKey").and_then(Value::as_str).ok_or_else(|| {
            RelayError::Invalid(format!("The {STRATEGY_OAUTH_JWT} credential needs 'privateKey' (PKCS#8 PEM)."))
        })?;
        crate::assertion::SigningKey::from_pem(key)
            .map_err(|e| RelayError::Invalid(format!("The credential's privateKey: {e}.")))?;
    } else if secrets.get("clientSecret").and_then(Value::as_str).is_none_or(|s| s.is_empty()) {
        return Err(RelayError::Invalid("The auth credential needs 'clientSecret'.".into()));
    }
    if let Some(kind) = text("contentType") {
        if kind != "application/x-www-form-urlencoded" && kind != "application/json" {
            return Err(RelayError::Invalid(format!(
                "The contentType '{kind}' is not supported; use 'application/x-www-form-urlencoded' or 'application/json'."
            )));
        }
    }
    if let Some(v) = fields.get("defaultExpirationSeconds") {
        let ok = v.as_u64().is_some() || v.as_str().is_some_and(|s| s.parse::<u64>().is_ok());
        if !ok {
            return Err(RelayError::Invalid("defaultExpirationSeconds must be a whole number of seconds.".into()));
        }
    }
    Ok(())
}

/// An absolute `https` URL (or `http` to the loopback interface when `loopback_http`, for
/// development: the outbound client refuses plain HTTP anywhere else).
pub fn check_url(field: &str, url: &str, loopback_http: bool) -> Result<()> {
    let rest = if let Some(rest) = url.strip_prefix("https://") {
        rest
    } else if let Some(rest) = url.strip_prefix("http://") {
        let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
        let loopback = host.starts_with("127.") || host.starts_with("localhost") || host.starts_with("[::1]");
        if !(loopback_http && loopback) {
            return Err(RelayError::Invalid(format!(
                "'{field}' must be an https URL (plain http only to the loopback interface, in development), not '{url}'."
            )));
        }
        rest
    } else {
        return Err(RelayError::Invalid(format!("'{field}' must be an absolute https URL, not '{url}'.")));
    };
    if rest.is_empty() || rest.starts_with('/') || rest.contains(char::is_whitespace) {
        return Err(RelayError::Invalid(format!("'{field}' is not a valid URL: '{url}'.")));
    }
    Ok(())
}

/// A destination's type, fixed at creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A standard HTTPS endpoint: the message is POSTed as it is.
    Standard,
    /// A cloud FHIR service (Azure Health Data Services' FHIR service, or any FHIR server): the
    /// message is POSTed as an idempotent transaction Bundle to `settings.fhirBaseUrl`.
    CloudFhir,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Standard => "standard",
            Kind::CloudFhir => "cloud",
        }
    }

    pub fn parse(s: &str) -> Kind {
        if s == "cloud" {
            Kind::CloudFhir
        } else {
            Kind::Standard
        }
    }
}

#[derive(Clone, PartialEq)]
pub struct Destination {
    pub id: String,
    pub environment_id: String,
    pub name: String,
    pub kind: Kind,
    pub endpoint: Option<String>,
    pub verification_token: Option<String>,
    pub auth_credential: Option<String>,
    /// `cloudProviderSettings` as given.
    pub cloud: Option<Value>,
    /// Redox's "save progress" draft: `Some` while the destination is in progress.
    pub setup_state: Option<Value>,
    pub verified: bool,
    pub verification_error: Option<String>,
    pub verified_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl std::fmt::Debug for Destination {
    // The verification token is a shared secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Destination")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("endpoint", &self.endpoint)
            .field("has_verification_token", &self.verification_token.is_some())
            .field("auth_credential", &self.auth_credential)
            .field("cloud", &self.cloud)
            .field("setup_state", &self.setup_state)
            .field("verified", &self.verified)
            .finish_non_exhaustive()
    }
}

impl Destination {
    pub fn fhir_base_url(&self) -> Option<&str> {
        self.cloud.as_ref()?.pointer("/settings/fhirBaseUrl")?.as_str().map(|s| s.trim_end_matches('/'))
    }

    pub fn in_progress(&self) -> bool {
        self.setup_state.is_some()
    }

    /// The destination as shown; the verification token is a shared secret, so only whether one
    /// is set.
    pub fn to_json(&self, environment: &Environment) -> Value {
        let verification = match (self.verified, &self.verification_error, self.verified_at) {
            (true, _, at) => json!({ "status": "verified", "at": at.map(iso) }),
            (false, Some(error), at) => json!({ "status": "failed", "error": error, "at": at.map(iso) }),
            (false, None, _) => json!({ "status": "not verified" }),
        };
        let mut out = json!({
            "id": self.id,
            "name": self.name,
            "type": self.kind.as_str(),
            "environment": { "id": environment.id, "environmentFlag": environment.flag },
            "authCredential": self.auth_credential,
            "hasVerificationToken": self.verification_token.is_some(),
            "setupState": self.setup_state,
            "status": if self.in_progress() { "in progress" } else { "complete" },
            "verified": self.verified,
            "verification": verification,
            "createdAt": iso(self.created_at),
            "updatedAt": iso(self.updated_at),
        });
        if let Some(endpoint) = &self.endpoint {
            out["endpoint"] = json!(endpoint);
        }
        if let Some(cloud) = &self.cloud {
            out["cloudProviderSettings"] = cloud.clone();
        }
        out
    }
}

const DESTINATION_FIELDS: [&str; 6] =
    ["name", "endpoint", "verificationToken", "authCredential", "cloudProviderSettings", "setupState"];
const DESTINATION_READ_ONLY: [&str; 11] = [
    "id",
    "type",
    "environment",
    "environmentId",
    "hasVerificationToken",
    "status",
    "verified",
    "verification",
    "createdAt",
    "updatedAt",
    "verificationMethod",
];

fn optional_text(map: &Map<String, Value>, name: &str) -> Result<Option<Option<String>>> {
    match map.get(name) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(Some(None)),
        Some(Value::String(s)) => Ok(Some(Some(s.clone()))),
        Some(_) => Err(RelayError::Invalid(format!("The destination field '{name}' must be a string."))),
    }
}

fn check_known(map: &Map<String, Value>) -> Result<()> {
    for key in map.keys() {
        if !DESTINATION_FIELDS.contains(&key.as_str()) && !DESTINATION_READ_ONLY.contains(&key.as_str()) {
            return Err(RelayError::Invalid(format!(
                "Unknown destination field '{key}'. Known fields: {}.",
                DESTINATION_FIELDS.join(", ")
            )));
        }
    }
    Ok(())
}

fn check_cloud(settings: &Value) -> Result<()> {
    let type_id = settings.get("typeId").and_then(Value::as_str);
    let product_id = settings.get("productId").and_then(Value::as_str);
    if type_id != Some("azure") || product_id != Some("health-data-services") {
        return Err(RelayError::Invalid(format!(
            "cloudProviderSettings: only typeId 'azure' with productId 'health-data-services' (a FHIR service) is \
             supported, not {} / {}.",
            type_id.unwrap_or("(none)"),
            product_id.unwrap_or("(none)")
        )));
    }
    match settings.pointer("/settings") {
        None | Some(Value::Object(_)) => Ok(()),
        Some(_) => Err(RelayError::Invalid("cloudProviderSettings.settings must be an object.".into())),
    }
}

/// A new destination from its body (in `environment_id`, at `now`), checked as far as it goes:
/// completely unless it carries a `setupState`.
pub fn new_destination(body: &Value, id: String, environment: &Environment, now: i64) -> Result<Destination> {
    let map = object(body)?;
    check_known(map)?;
    let name = optional_text(map, "name")?
        .flatten()
        .ok_or_else(|| RelayError::Invalid("The destination needs a 'name'.".into()))?;
    let cloud = match map.get("cloudProviderSettings") {
        None | Some(Value::Null) => None,
        Some(settings) => {
            check_cloud(settings)?;
            Some(settings.clone())
        }
    };
    let setup_state = map.get("setupState").filter(|v| !v.is_null()).cloned();
    let destination = Destination {
        id,
        environment_id: environment.id.clone(),
        name,
        kind: if cloud.is_some() { Kind::CloudFhir } else { Kind::Standard },
        endpoint: optional_text(map, "endpoint")?.flatten(),
        verification_token: optional_text(map, "verificationToken")?.flatten(),
        auth_credential: optional_text(map, "authCredential")?.flatten(),
        cloud,
        setup_state,
        verified: false,
        verification_error: None,
        verified_at: None,
        created_at: now,
        updated_at: now,
    };
    if destination.kind == Kind::CloudFhir && destination.endpoint.is_some() {
        return Err(RelayError::Invalid(
            "A cloud FHIR destination has no 'endpoint': it delivers to cloudProviderSettings.settings.fhirBaseUrl."
                .into(),
        ));
    }
    check_destination(&destination, environment)?;
    Ok(destination)
}

/// Applies a PATCH. The type cannot change (`409`); changing where or how it delivers makes the
/// destination unverified again.
pub fn patch_destination(
    current: &Destination,
    body: &Value,
    environment: &Environment,
    now: i64,
) -> Result<Destination> {
    let map = object(body)?;
    check_known(map)?;
    let mut next = current.clone();
    if let Some(name) = optional_text(map, "name")? {
        next.name = name.ok_or_else(|| RelayError::Invalid("A destination's 'name' cannot be empty.".into()))?;
    }
    let type_change = |what: &str| {
        RelayError::Conflict(format!(
            "This destination is a {} destination; {what}. A destination's type cannot change after creation: \
             create a new destination of the other type and delete this one.",
            if current.kind == Kind::CloudFhir { "cloud FHIR" } else { "standard HTTPS" }
        ))
    };
    if let Some(endpoint) = optional_text(map, "endpoint")? {
        if current.kind == Kind::CloudFhir && endpoint.is_some() {
            return Err(type_change("an 'endpoint' would make it a standard one"));
        }
        next.endpoint = endpoint;
    }
    match map.get("cloudProviderSettings") {
        None => {}
        Some(Value::Null) if current.kind == Kind::Standard => {}
        Some(Value::Null) => return Err(type_change("removing cloudProviderSettings would make it a standard one")),
        Some(_) if current.kind == Kind::Standard => {
            return Err(type_change("cloudProviderSettings would make it a cloud one"))
        }
        Some(settings) => {
            let same = |field: &str| settings.get(field) == current.cloud.as_ref().and_then(|c| c.get(field));
            if !same("typeId") || !same("productId") {
                return Err(type_change("its typeId and productId cannot change"));
            }
            check_cloud(settings)?;
            next.cloud = Some(settings.clone());
        }
    }
    if let Some(token) = optional_text(map, "verificationToken")? {
        next.verification_token = token;
    }
    if let Some(credential) = optional_text(map, "authCredential")? {
        next.auth_credential = credential;
    }
    if let Some(state) = map.get("setupState") {
        next.setup_state = Some(state.clone()).filter(|v| !v.is_null());
    }
    let moved = next.endpoint != current.endpoint
        || next.cloud != current.cloud
        || next.verification_token != current.verification_token
        || next.auth_credential != current.auth_credential;
    if moved {
        next.verified = false;
        next.verification_error = None;
        next.verified_at = None;
    }
    next.updated_at = now;
    check_destination(&next, environment)?;
    Ok(next)
}

/// The rules of a complete destination (a draft needs only its name).
pub fn check_destination(destination: &Destination, environment: &Environment) -> Result<()> {
    if destination.in_progress() {
        return Ok(());
    }
    let development = environment.flag == "Development";
    match destination.kind {
        Kind::Standard => {
            let endpoint = destination.endpoint.as_deref().ok_or_else(|| {
                RelayError::Invalid(
                    "A standard destination needs an 'endpoint' (or save it in progress with a 'setupState').".into(),
                )
            })?;
            check_url("endpoint", endpoint, development)?;
            if destination.verification_token.is_none() && destination.auth_credential.is_none() {
                return Err(RelayError::Invalid(
                    "A standard destination needs a 'verificationToken' or an 'authCredential'.".into(),
                ));
            }
        }
        Kind::CloudFhir => {
            let base = destination.fhir_base_url().ok_or_else(|| {
                RelayError::Invalid(
                    "A cloud FHIR destination needs cloudProviderSettings.settings.fhirBaseUrl (or save it in \
                     progress with a 'setupState')."
                        .into(),
                )
            })?;
            check_url("cloudProviderSettings.settings.fhirBaseUrl", base, development)?;
            if destination.auth_credential.is_none() {
                return Err(RelayError::Invalid(
                    "A cloud FHIR destination needs an 'authCredential' (the OAuth 2.0 client of the FHIR service)."
                        .into(),
                ));
            }
        }
    }
    Ok(())
}

/// A source: an upstream system that posts messages with its own key.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    pub id: String,
    pub environment_id: String,
    pub name: String,
    pub created_at: i64,
}

impl Source {
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "environment": { "id": self.environment_id },
            "hasSecret": true,
            "createdAt": iso(self.created_at),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credential_body() -> Value {
        json!({
            "organization": 118, "name": "FHIR service", "environmentId": "e1",
            "authStrategy": "OAuth_2.0_2-legged", "grantType": "client_credentials",
            "url": "https://login.example/t/oauth2/v2.0/token", "clientId": "c", "clientSecret": "s",
            "scope": "https://fhir.example/.default", "resourceURI": "https://fhir.example/Bundle",
            "audience": "https://fhir.example/Bundle"
        })
    }

    #[test]
    fn credentials_take_both_spellings_and_never_show_secrets() {
        let (fields, secrets) = credential_fields(&credential_body(), None).unwrap();
        assert_eq!(fields["scopes"], "https://fhir.example/.default");
        assert_eq!(fields["resource"], "https://fhir.example/Bundle");
        assert!(!fields.contains_key("scope") && !fields.contains_key("clientSecret"));
        let credential =
            Credential { id: "x".into(), environment_id: "e1".into(), fields, secrets, created_at: 0, updated_at: 0 };
        let shown = credential.to_json();
        assert_eq!(shown["hasClientSecret"], true);
        assert_eq!(shown["hasPassword"], false);
        assert!(!shown.to_string().contains("\"s\""), "{shown}");
        assert!(!format!("{credential:?}").contains("\"s\""), "nor in Debug: {credential:?}");
    }

    #[test]
    fn credential_mistakes_are_named() {
        let mut body = credential_body();
        body["authStrategy"] = json!("AwsSigv4");
        let e = credential_fields(&body, None).unwrap_err();
        assert!(matches!(&e, RelayError::Invalid(m) if m.contains("not supported")), "{e}");
        let mut body = credential_body();
        body["url"] = json!("http://login.example/token");
        assert!(credential_fields(&body, None).unwrap_err().to_string().contains("https"));
        let mut body = credential_body();
        body["colour"] = json!("red");
        assert!(credential_fields(&body, None).unwrap_err().to_string().contains("'colour'"));
        let mut body = credential_body();
        body.as_object_mut().unwrap().remove("clientSecret");
        assert!(credential_fields(&body, None).unwrap_err().to_string().contains("clientSecret"));
    }

    #[test]
    fn a_patch_keeps_the_secret_and_cannot_move_environments() {
        let (fields, secrets) = credential_fields(&credential_body(), None).unwrap();
        let current =
            Credential { id: "x".into(), environment_id: "e1".into(), fields, secrets, created_at: 0, updated_at: 0 };
        let (patched, kept) = credential_fields(&json!({"name": "renamed"}), Some(&current)).unwrap();
        assert_eq!(patched["name"], "renamed");
        assert_eq!(kept["clientSecret"], "s");
        let e = credential_fields(&json!({"environmentId": "e2"}), Some(&current)).unwrap_err();
        assert!(matches!(e, RelayError::Conflict(_)));
    }

    fn environment(flag: &str) -> Environment {
        Environment { id: "e1".into(), organization: 1, name: flag.into(), flag: flag.into() }
    }

    #[test]
    fn destinations_follow_the_wizard() {
        let production = environment("Production");
        let draft =
            new_destination(&json!({"name": "d", "setupState": {"step": 1}}), "d".into(), &production, 0).unwrap();
        assert!(draft.in_progress());
        let e = new_destination(&json!({"name": "d"}), "d".into(), &production, 0).unwrap_err();
        assert!(e.to_string().contains("endpoint"), "{e}");
        let e = new_destination(
            &json!({"name": "d", "endpoint": "http://127.0.0.1:1/x", "verificationToken": "t"}),
            "d".into(),
            &production,
            0,
        )
        .unwrap_err();
        assert!(e.to_string().contains("https"), "{e}");
        let ok = new_destination(
            &json!({"name": "d", "endpoint": "http://127.0.0.1:1/x", "verificationToken": "t"}),
            "d".into(),
            &environment("Development"),
            0,
        );
        assert!(ok.is_ok(), "development may use plain http to loopback");
        let cloud = new_destination(
            &json!({"name": "fhir", "authCredential": "c1", "cloudProviderSettings":
                {"typeId": "azure", "productId": "health-data-services", "settings": {"fhirBaseUrl": "https://f.example/"}}}),
            "d".into(), &production, 0).unwrap();
        assert_eq!(cloud.kind, Kind::CloudFhir);
        assert_eq!(cloud.fhir_base_url(), Some("https://f.example"));
        let e = patch_destination(&cloud, &json!({"endpoint": "https://x.example"}), &production, 1).unwrap_err();
        assert!(matches!(&e, RelayError::Conflict(m) if m.contains("cannot change")), "{e}");
        let e = patch_destination(
            &cloud,
            &json!({"cloudProviderSettings": {"typeId": "azure", "productId": "databricks"}}),
            &production,
            1,
        )
        .unwrap_err();
        assert!(matches!(e, RelayError::Conflict(_)));
        let mut verified = cloud.clone();
        verified.verified = true;
        let renamed = patch_destination(&verified, &json!({"name": "n"}), &production, 1).unwrap();
        assert!(renamed.verified, "a new name keeps the verification");
        let moved = patch_destination(&verified, &json!({"authCredential": "c2"}), &production, 1).unwrap();
        assert!(!moved.verified, "a new credential must be verified again");
        let e = new_destination(
            &json!({"name": "x", "cloudProviderSettings": {"typeId": "aws", "productId": "healthlake"}}),
            "d".into(),
            &production,
            0,
        )
        .unwrap_err();
        assert!(e.to_string().contains("health-data-services"));
    }
}

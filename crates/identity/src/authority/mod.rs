//! The built-in authority: an OAuth 2.0 / OpenID Connect service with Microsoft Entra ID's endpoint
//! shapes, served by `fhirside serve` under `/{tenant}`.
//!
//! - [`token`]: the token endpoint (`client_credentials`, `authorization_code` with PKCE,
//!   `refresh_token`; client secrets and `private_key_jwt`);
//! - [`authorize`]: the authorization endpoint and its sign-in page;
//! - [`launch`]: SMART's `launch` context and the patient picker;
//! - [`discovery`]: the OpenID Connect discovery documents, SMART's configuration and the JWKS;
//! - [`http`]: the routes;
//! - [`proxy`]: Azure's SMART on FHIR proxy routes, mounted at the FHIR base.
//!
//! Tokens follow Entra's claims. The access token's version (`ver` 1.0 or 2.0, which decides `iss`,
//! `aud` and a few claim names) is a property of the resource, as in Entra, where the API's app
//! manifest chooses it; Fhirside's FHIR service defaults to 1.0 like Azure's.

pub mod authorize;
pub mod discovery;
pub mod error;
pub mod http;
pub mod launch;
pub mod proxy;
pub mod token;

#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex, OnceLock, RwLock};

use serde_json::{json, Map, Value};

use crate::keys::SigningKey;
use crate::store::{IdentityError, IdentityStore};
pub use error::OAuthError;
pub use launch::PatientDirectory;

/// The endpoint family a request came through: `/oauth2/…` (v1) or `/oauth2/v2.0/…` (v2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointVersion {
    V1,
    V2,
}

impl EndpointVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointVersion::V1 => "v1",
            EndpointVersion::V2 => "v2",
        }
    }

    pub fn parse(text: &str) -> EndpointVersion {
        if text == "v1" {
            EndpointVersion::V1
        } else {
            EndpointVersion::V2
        }
    }
}

/// How the authority is set up.
#[derive(Debug, Clone)]
pub struct AuthorityConfig {
    /// Where the authority answers, without a trailing slash (`https://fhir.example.org`); the
    /// tenant's endpoints are under `{base}/{tenant}`.
    pub base: String,
    /// The FHIR service's identifiers (App ID URIs) that clients may request tokens for; the first
    /// is canonical. Requests may add or omit a trailing slash.
    pub fhir_audiences: Vec<String>,
    /// Access-token version for the FHIR service: 1 (Azure's default) or 2.
    pub access_token_version: u8,
    /// Access-token lifetime in seconds.
    pub token_lifetime: i64,
    /// Refresh-token lifetime in seconds.
    pub refresh_token_lifetime: i64,
    /// Authorization-code lifetime in seconds.
    pub code_lifetime: i64,
    /// How long retired signing keys stay published, in seconds: at least the token lifetime.
    pub key_publication: i64,
}

impl AuthorityConfig {
    pub fn new(base: &str, fhir_audiences: Vec<String>) -> AuthorityConfig {
        AuthorityConfig {
            base: base.trim_end_matches('/').to_owned(),
            fhir_audiences,
            access_token_version: 1,
            token_lifetime: 3599,
            refresh_token_lifetime: 90 * 24 * 3600,
            code_lifetime: 600,
            key_publication: 2 * 3600,
        }
    }
}

/// The authority: its configuration, store and signing keys.
pub struct Authority {
    pub config: AuthorityConfig,
    pub store: Arc<IdentityStore>,
    fhir_app_id: String,
    keys: RwLock<KeyCache>,
    /// `jti`s of client assertions already used, with their expiry: an assertion is good once.
    seen_assertions: Mutex<std::collections::HashMap<String, i64>>,
    /// The patients the SMART patient picker offers, set by the server.
    patient_directory: OnceLock<Arc<dyn PatientDirectory>>,
}

struct KeyCache {
    version: i64,
    keys: Arc<Vec<SigningKey>>,
}

impl Authority {
    pub fn new(config: AuthorityConfig, store: Arc<IdentityStore>) -> Result<Authority, IdentityError> {
        // The FHIR service's application id, decided once per installation.
        let fhir_app_id = store.setting_or_insert("fhir_app_id", &uuid::Uuid::new_v4().to_string())?;
        let authority = Authority {
            config,
            fhir_app_id,
            store,
            keys: RwLock::new(KeyCache { version: i64::MIN, keys: Arc::new(Vec::new()) }),
            seen_assertions: Mutex::default(),
            patient_directory: OnceLock::new(),
        };
        authority.signing_keys()?;
        Ok(authority)
    }

    pub fn tenant_id(&self) -> &str {
        self.store.tenant_id()
    }

    /// `{base}/{tenant}`: what clients configure as the authority.
    pub fn authority_url(&self) -> String {
        format!("{}/{}", self.config.base, self.tenant_id())
    }

    /// The issuer of v1 tokens (Entra: `https://sts.windows.net/{tid}/`).
    pub fn issuer_v1(&self) -> String {
        format!("{}/{}/", self.config.base, self.tenant_id())
    }

    /// The issuer of v2 tokens (Entra: `https://login.microsoftonline.com/{tid}/v2.0`).
    pub fn issuer_v2(&self) -> String {
        format!("{}/{}/v2.0", self.config.base, self.tenant_id())
    }

    pub fn issuer(&self, version: EndpointVersion) -> String {
        match version {
            EndpointVersion::V1 => self.issuer_v1(),
            EndpointVersion::V2 => self.issuer_v2(),
        }
    }

    pub fn token_endpoint(&self, version: EndpointVersion) -> String {
        match version {
            EndpointVersion::V1 => format!("{}/oauth2/token", self.authority_url()),
            EndpointVersion::V2 => format!("{}/oauth2/v2.0/token", self.authority_url()),
        }
    }

    /// The FHIR service's base URL (its canonical audience), without a trailing slash: where
    /// `fhirUser` references and the SMART proxy's routes live.
    pub fn fhir_base(&self) -> String {
        let base = self.config.fhir_audiences.first().map(String::as_str).unwrap_or(&self.config.base);
        base.trim_end_matches('/').to_owned()
    }

    pub fn authorization_endpoint(&self, version: EndpointVersion) -> String {
        match version {
            EndpointVersion::V1 => format!("{}/oauth2/authorize", self.authority_url()),
            EndpointVersion::V2 => format!("{}/oauth2/v2.0/authorize", self.authority_url()),
        }
    }

    /// The FHIR service's application id (a GUID), the `aud` of its v2 tokens.
    pub fn fhir_app_id(&self) -> &str {
        &self.fhir_app_id
    }

    /// The keys still published (current first), reloaded when the store changed (a rotation by
    /// `fhirside authority rotate-key` in another process).
    pub fn signing_keys(&self) -> Result<Arc<Vec<SigningKey>>, IdentityError> {
        let version = self.store.data_version()?;
        if let Ok(cache) = self.keys.read() {
            if cache.version == version && !cache.keys.is_empty() {
                return Ok(cache.keys.clone());
            }
        }
        let published_after = crate::time::now() - self.config.key_publication;
        let keys = Arc::new(self.store.signing_keys(published_after)?);
        if let Ok(mut cache) = self.keys.write() {
            *cache = KeyCache { version, keys: keys.clone() };
        }
        Ok(keys)
    }

    /// Signs claims with the current key.
    pub fn sign(&self, claims: &Value) -> Result<String, IdentityError> {
        let keys = self.signing_keys()?;
        let key = keys
            .iter()
            .find(|k| k.retired_at.is_none())
            .or(keys.first())
            .ok_or_else(|| IdentityError::Database("no signing key".into()))?;
        Ok(key.sign(claims))
    }

    /// Records a client assertion's `jti`; false if it was seen before (a replay).
    fn first_use_of_assertion(&self, jti: &str, expires: i64, now: i64) -> bool {
        let mut seen = self.seen_assertions.lock().unwrap_or_else(|e| e.into_inner());
        seen.retain(|_, exp| *exp >= now);
        seen.insert(jti.to_owned(), expires).is_none()
    }

    /// Which FHIR audience a requested resource names, in its canonical spelling, or `None` when
    /// it names no resource this authority issues tokens for (AADSTS500011).
    pub fn resolve_resource(&self, requested: &str) -> Option<String> {
        let requested = requested.trim_end_matches('/');
        if let Some(audience) =
            self.config.fhir_audiences.iter().find(|a| a.trim_end_matches('/').eq_ignore_ascii_case(requested))
        {
            return Some(audience.clone());
        }
        let app_id = self.fhir_app_id();
        if requested.eq_ignore_ascii_case(app_id) || requested.eq_ignore_ascii_case(&format!("api://{app_id}")) {
            return Some(self.config.fhir_audiences.first().cloned().unwrap_or_else(|| app_id.to_owned()));
        }
        None
    }
}

/// A requested scope, split into the resource it names and the permission within it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ScopeTarget {
    /// An OpenID Connect scope (`openid`, `offline_access`, …), which names no resource.
    Oidc(String),
    /// A scope prefixed by one of the FHIR service's identifiers (`https://fhir/.default`,
    /// `https://fhir/patient/*.read`): the canonical audience and the permission
    /// (`user_impersonation` for `.default`).
    Fhir { audience: String, name: String },
    /// A scope without a resource (`patient/*.read`, `fhirUser`, `launch`), as SMART apps send
    /// with an `aud` parameter.
    Bare(String),
    /// A scope of a resource this authority does not know.
    Unknown(String),
}

impl Authority {
    pub(crate) fn scope_target(&self, scope: &str) -> ScopeTarget {
        const OIDC: [&str; 5] = ["openid", "profile", "email", "offline_access", "online_access"];
        if OIDC.contains(&scope) {
            return ScopeTarget::Oidc(scope.to_owned());
        }
        if !scope.contains("://") {
            return ScopeTarget::Bare(scope.to_owned());
        }
        let app_id = self.fhir_app_id();
        let canonical = self.config.fhir_audiences.first().cloned().unwrap_or_else(|| app_id.to_owned());
        let identifiers = self
            .config
            .fhir_audiences
            .iter()
            .map(|a| (a.trim_end_matches('/').to_owned(), a.clone()))
            .chain([(format!("api://{app_id}"), canonical.clone())]);
        for (prefix, audience) in identifiers {
            let matches = scope.len() > prefix.len()
                && scope.as_bytes()[prefix.len()] == b'/'
                && scope[..prefix.len()].eq_ignore_ascii_case(&prefix);
            if matches {
                let name = scope[prefix.len()..].trim_start_matches('/');
                let name = if name == ".default" || name.is_empty() { "user_impersonation" } else { name };
                return ScopeTarget::Fhir { audience, name: name.to_owned() };
            }
        }
        ScopeTarget::Unknown(scope.to_owned())
    }
}

/// The claims every token shares, in Entra's order.
pub(crate) fn base_claims(iss: String, aud: String, now: i64, lifetime: i64) -> Map<String, Value> {
    let mut claims = Map::new();
    claims.insert("aud".into(), json!(aud));
    claims.insert("iss".into(), json!(iss));
    claims.insert("iat".into(), json!(now));
    claims.insert("nbf".into(), json!(now));
    claims.insert("exp".into(), json!(now + lifetime));
    claims
}

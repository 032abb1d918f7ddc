//! Validating the bearer tokens presented to the FHIR service.
//!
//! A token is accepted when it is a JWT signed with an accepted asymmetric algorithm by a key of
//! the trusted authority (the built-in one, or an external OpenID Connect issuer's JWKS), names an
//! accepted issuer and audience, and is within its lifetime (`nbf`/`exp`, 5 minutes of clock skew,
//! as Azure's service allows). Anything else is refused with a reason for the log; the caller only
//! ever learns "Authentication failed.".
//!
//! Verified tokens are remembered until they expire, so that a client sending the same token with
//! every request pays for one RSA verification, not one per request.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde_json::{Map, Value};

use crate::authority::Authority;
use crate::jwt::{self, Jwk};
use crate::oidc::OidcIssuer;

/// Clock skew allowed on `exp` and `nbf`.
pub const SKEW: i64 = 300;
/// Most tokens remembered; the cache is emptied when it fills (cheap, and rare).
const CACHE_LIMIT: usize = 10_000;

/// Where the signing keys come from.
pub enum Trust {
    /// The built-in authority of this installation.
    BuiltIn(Arc<Authority>),
    /// An external OpenID Connect issuer.
    External(Arc<OidcIssuer>),
}

/// Why a token was refused (for the log; never sent to the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    Malformed,
    Algorithm(String),
    UnknownKey,
    BadSignature,
    Issuer(String),
    Audience(String),
    Expired,
    NotYetValid,
    /// The issuer's keys could not be fetched.
    KeysUnavailable(String),
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::Malformed => write!(f, "not a well-formed JWT"),
            Rejection::Algorithm(alg) => write!(f, "signature algorithm '{alg}' is not accepted"),
            Rejection::UnknownKey => write!(f, "signed by an unknown key"),
            Rejection::BadSignature => write!(f, "bad signature"),
            Rejection::Issuer(iss) => write!(f, "issuer '{iss}' is not accepted"),
            Rejection::Audience(aud) => write!(f, "audience '{aud}' is not accepted"),
            Rejection::Expired => write!(f, "expired"),
            Rejection::NotYetValid => write!(f, "not yet valid"),
            Rejection::KeysUnavailable(e) => write!(f, "the issuer's keys are unavailable: {e}"),
        }
    }
}

/// The claims that identify a caller, in this order: Azure's audit logs carry them as
/// `CallerIdentity`. Nothing else of a token is recorded.
pub const CALLER_CLAIMS: [&str; 10] =
    ["iss", "oid", "sub", "tid", "appid", "azp", "idtyp", "upn", "unique_name", "preferred_username"];

/// The verified claims of a token.
#[derive(Debug, Clone)]
pub struct Claims {
    pub claims: Map<String, Value>,
    pub expires_at: i64,
    /// [`CALLER_CLAIMS`] of `claims`, made once per token: every request's audit records share it.
    caller_identity: Arc<Map<String, Value>>,
}

impl Claims {
    pub fn new(claims: Map<String, Value>, expires_at: i64) -> Claims {
        let caller_identity = CALLER_CLAIMS
            .iter()
            .filter_map(|name| Some(((*name).to_owned(), Value::String(claims.get(*name)?.as_str()?.to_owned()))))
            .collect();
        Claims { claims, expires_at, caller_identity: Arc::new(caller_identity) }
    }

    /// The claims that identify the caller ([`CALLER_CLAIMS`], those present, as strings).
    pub fn caller_identity(&self) -> &Arc<Map<String, Value>> {
        &self.caller_identity
    }

    pub fn str(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }

    /// The caller's object id (`oid`, falling back to `sub` for issuers without one).
    pub fn object_id(&self) -> &str {
        self.str("oid").or_else(|| self.str("sub")).unwrap_or("")
    }

    /// The `roles` claim (app roles).
    pub fn roles(&self) -> Vec<&str> {
        match self.claims.get("roles") {
            Some(Value::Array(roles)) => roles.iter().filter_map(Value::as_str).collect(),
            Some(Value::String(role)) => vec![role.as_str()],
            _ => Vec::new(),
        }
    }

    /// The `scp` claim, split.
    pub fn scopes(&self) -> Vec<&str> {
        self.str("scp").map(|s| s.split_whitespace().collect()).unwrap_or_default()
    }
}

/// Validates tokens for one FHIR service.
pub struct Validator {
    trust: Trust,
    /// Accepted `iss` values, beyond those the trusted authority names itself.
    issuers: Vec<String>,
    /// Accepted `aud` values (compared without a trailing slash).
    audiences: Vec<String>,
    cache: RwLock<HashMap<String, Arc<Claims>>>,
}

impl Validator {
    pub fn new(trust: Trust, issuers: Vec<String>, audiences: Vec<String>) -> Validator {
        Validator { trust, issuers, audiences, cache: RwLock::default() }
    }

    pub fn trust(&self) -> &Trust {
        &self.trust
    }

    /// Validates a bearer token at time `now`.
    pub async fn validate(&self, token: &str, now: i64) -> Result<Arc<Claims>, Rejection> {
        if let Some(claims) = self.cache.read().ok().and_then(|c| c.get(token).cloned()) {
            check_lifetime(claims.expires_at, None, now)?;
            return Ok(claims);
        }
        let decoded = jwt::decode(token).map_err(|_| Rejection::Malformed)?;
        decoded.alg().map_err(|e| match e {
            jwt::JwtError::UnsupportedAlgorithm(alg) => Rejection::Algorithm(alg),
            _ => Rejection::Malformed,
        })?;
        let keys = self.keys_for(&decoded).await?;
        if keys.is_empty() {
            return Err(Rejection::UnknownKey);
        }
        if !keys.iter().any(|k| decoded.verify_with(k).is_ok()) {
            return Err(Rejection::BadSignature);
        }
        let iss = decoded.claim_str("iss").unwrap_or("");
        if !self.accepted_issuers()?.iter().any(|i| i == iss) {
            return Err(Rejection::Issuer(iss.to_owned()));
        }
        self.check_audience(&decoded.claims)?;
        let exp = decoded.claim_time("exp").ok_or(Rejection::Expired)?;
        check_lifetime(exp, decoded.claim_time("nbf"), now)?;
        let claims = Arc::new(Claims::new(decoded.claims, exp));
        if let Ok(mut cache) = self.cache.write() {
            if cache.len() >= CACHE_LIMIT {
                cache.retain(|_, c| c.expires_at + SKEW > now);
                if cache.len() >= CACHE_LIMIT {
                    cache.clear();
                }
            }
            cache.insert(token.to_owned(), claims.clone());
        }
        Ok(claims)
    }

    async fn keys_for(&self, token: &jwt::Decoded) -> Result<Vec<Jwk>, Rejection> {
        match &self.trust {
            Trust::BuiltIn(authority) => {
                let set = authority.jwks().map_err(|e| Rejection::KeysUnavailable(e.to_string()))?;
                Ok(set.candidates(token).cloned().collect())
            }
            Trust::External(issuer) => issuer.keys_for(token).await.map_err(Rejection::KeysUnavailable),
        }
    }

    fn accepted_issuers(&self) -> Result<Vec<String>, Rejection> {
        let mut issuers = self.issuers.clone();
        match &self.trust {
            Trust::BuiltIn(authority) => {
                issuers.push(authority.issuer_v1());
                issuers.push(authority.issuer_v2());
            }
            Trust::External(issuer) => issuers.extend(issuer.issuer()),
        }
        Ok(issuers)
    }

    fn check_audience(&self, claims: &Map<String, Value>) -> Result<(), Rejection> {
        let mut accepted: Vec<String> = self.audiences.iter().map(|a| a.trim_end_matches('/').to_owned()).collect();
        if let Trust::BuiltIn(authority) = &self.trust {
            let app_id = authority.fhir_app_id();
            accepted.push(format!("api://{app_id}"));
            accepted.push(app_id.to_owned());
        }
        let matches = |aud: &str| accepted.iter().any(|a| a.eq_ignore_ascii_case(aud.trim_end_matches('/')));
        match claims.get("aud") {
            Some(Value::String(aud)) if matches(aud) => Ok(()),
            Some(Value::Array(auds)) if auds.iter().filter_map(Value::as_str).any(matches) => Ok(()),
            Some(aud) => Err(Rejection::Audience(aud.to_string())),
            None => Err(Rejection::Audience(String::new())),
        }
    }
}

fn check_lifetime(exp: i64, nbf: Option<i64>, now: i64) -> Result<(), Rejection> {
    if exp + SKEW <= now {
        return Err(Rejection::Expired);
    }
    if nbf.is_some_and(|nbf| nbf - SKEW > now) {
        return Err(Rejection::NotYetValid);
    }
    Ok(())
}

//! OpenID Connect discovery (`/{tenant}/v2.0/.well-known/openid-configuration` and the v1
//! `/{tenant}/.well-known/openid-configuration`) and the JWKS they point at.
//!
//! MSAL reads `authorization_endpoint` and `token_endpoint` and takes the tenant from the token
//! endpoint's first path segment; validators read `issuer` and `jwks_uri`. The documents carry
//! the members Entra's do where Fhirside has an equivalent, and advertise only what is implemented.
//!
//! SMART App Launch 2's `.well-known/smart-configuration` is served by the FHIR service at its
//! base, built here from the same endpoints (v2, the family SMART apps use).

use serde_json::{json, Value};

use super::{Authority, EndpointVersion};
use crate::jwt::{Alg, JwkSet};
use crate::store::IdentityError;

impl Authority {
    pub fn jwks_uri(&self, version: EndpointVersion) -> String {
        match version {
            EndpointVersion::V1 => format!("{}/discovery/keys", self.authority_url()),
            EndpointVersion::V2 => format!("{}/discovery/v2.0/keys", self.authority_url()),
        }
    }

    pub fn openid_configuration(&self, version: EndpointVersion) -> Value {
        let scopes = match version {
            EndpointVersion::V1 => json!(["openid"]),
            EndpointVersion::V2 => json!(["openid", "profile", "email", "offline_access"]),
        };
        json!({
            "token_endpoint": self.token_endpoint(version),
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "token_endpoint_auth_signing_alg_values_supported": ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384"],
            "jwks_uri": self.jwks_uri(version),
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": scopes,
            "issuer": self.issuer(version),
            "request_uri_parameter_supported": false,
            "authorization_endpoint": self.authorization_endpoint(version),
            "http_logout_supported": false,
            "frontchannel_logout_supported": false,
            "claims_supported": [
                "sub", "iss", "aud", "exp", "iat", "nbf", "name", "nonce", "oid", "tid", "ver",
                "preferred_username", "upn", "unique_name", "roles", "scp", "fhirUser"
            ],
            "tenant_region_scope": Value::Null,
            "cloud_instance_name": self.config.base.split("://").nth(1).unwrap_or(""),
        })
    }

    /// SMART App Launch 2.x's configuration document (`{fhir base}/.well-known/smart-configuration`).
    pub fn smart_configuration(&self) -> Value {
        // SMART asks servers for RS384 and ES384; the assertion verifier takes these and more.
        let algorithms: Vec<&str> =
            ["RS256", "RS384", "ES256", "ES384"].into_iter().filter(|a| Alg::parse(a).is_some()).collect();
        let v2 = EndpointVersion::V2;
        json!({
            "issuer": self.issuer_v2(),
            "jwks_uri": self.jwks_uri(v2),
            "authorization_endpoint": self.authorization_endpoint(v2),
            "token_endpoint": self.token_endpoint(v2),
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"],
            "token_endpoint_auth_signing_alg_values_supported": algorithms,
            "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token"],
            "scopes_supported": [
                "openid", "fhirUser", "launch", "launch/patient", "offline_access", "online_access",
                "patient/*.read", "patient/*.rs", "patient/*.cruds",
                "user/*.read", "user/*.write", "user/*.cruds",
                "system/*.read", "system/*.rs", "system/*.cruds"
            ],
            "response_types_supported": ["code"],
            "code_challenge_methods_supported": ["S256"],
            "capabilities": [
                "launch-ehr", "launch-standalone", "authorize-post",
                "client-public", "client-confidential-symmetric", "client-confidential-asymmetric",
                "context-ehr-patient", "context-ehr-encounter", "context-standalone-patient",
                "context-banner", "context-style",
                "permission-offline", "permission-online", "permission-patient", "permission-user",
                "permission-v1", "permission-v2", "sso-openid-connect"
            ],
        })
    }

    /// Every published signing key: the current one and those retired recently enough that
    /// tokens they signed may still be in use.
    pub fn jwks(&self) -> Result<JwkSet, IdentityError> {
        Ok(JwkSet { keys: self.signing_keys()?.iter().map(|k| k.jwk()).collect() })
    }
}

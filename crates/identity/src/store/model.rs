//! The identity store's records and errors: app registrations, secrets (as listed, never the
//! secret), users, role assignments and the grants behind one-time codes and refresh tokens.

use serde::{Deserialize, Serialize};

use crate::jwt::JwkSet;

/// A failure of the identity store.
#[derive(Debug)]
pub enum IdentityError {
    /// The database failed (I/O, corruption); the message is for the log.
    Database(String),
    /// The request names something that does not exist.
    NotFound(String),
    /// The request conflicts with what exists (a duplicate user name).
    Conflict(String),
    /// The request is invalid (an empty name, a bad redirect URI).
    Invalid(String),
}

impl std::fmt::Display for IdentityError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdentityError::Database(m) => write!(f, "identity store: {m}"),
            IdentityError::NotFound(m) | IdentityError::Conflict(m) | IdentityError::Invalid(m) => f.write_str(m),
        }
    }
}

impl From<rusqlite::Error> for IdentityError {
    fn from(e: rusqlite::Error) -> IdentityError {
        IdentityError::Database(e.to_string())
    }
}

impl From<fhirside_sql::Error> for IdentityError {
    fn from(e: fhirside_sql::Error) -> IdentityError {
        match e {
            fhirside_sql::Error::Invalid(m) => IdentityError::Invalid(m),
            fhirside_sql::Error::Sqlite(e) => e.into(),
            fhirside_sql::Error::Database(m) => IdentityError::Database(m),
        }
    }
}

pub type Result<T> = std::result::Result<T, IdentityError>;

/// How an app registration authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AppKind {
    /// Has client secrets (and may have public keys); web apps and daemons.
    Confidential,
    /// No credential (single-page and native apps); must use PKCE.
    Public,
    /// A backend service authenticating with `private_key_jwt` only (SMART backend services).
    Service,
}

/// An app registration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct App {
    /// The service principal's object id (`oid` of its tokens; what roles are assigned to).
    pub object_id: String,
    /// The application (client) id.
    pub client_id: String,
    pub display_name: String,
    pub kind: AppKind,
    pub redirect_uris: Vec<String>,
    /// Public keys for `private_key_jwt` client authentication.
    pub jwks: Option<JwkSet>,
    /// Unix seconds.
    pub created_at: i64,
}

/// What `create_app` needs.
#[derive(Debug, Clone)]
pub struct NewApp {
    pub display_name: String,
    pub kind: AppKind,
    pub redirect_uris: Vec<String>,
    pub jwks: Option<JwkSet>,
}

/// A client secret as listed: never the secret itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretInfo {
    /// The secret's id (Entra's `keyId`).
    pub key_id: String,
    pub display_name: String,
    /// The first three characters of the secret, to tell secrets apart.
    pub hint: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// A user, for the authorization code flow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub object_id: String,
    /// The sign-in name (`preferred_username`, `upn`); unique, compared case-insensitively.
    pub user_principal_name: String,
    pub display_name: String,
    /// The FHIR resource that is this user (`Practitioner/123`), for SMART's `fhirUser` claim.
    pub fhir_user: Option<String>,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct NewUser {
    pub user_principal_name: String,
    pub display_name: String,
    pub password: String,
    pub fhir_user: Option<String>,
}

/// A role granted to an object id (an app's service principal or a user).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleAssignment {
    /// The assignment's own id.
    pub id: String,
    /// The role's name as in [`crate::roles::ROLES`].
    pub role: String,
    pub role_definition_id: String,
    /// The object id the role is granted to.
    pub principal_id: String,
    pub created_at: i64,
}

/// What an authorization code stands for, kept until the code is redeemed (once) or expires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CodeGrant {
    pub client_id: String,
    pub redirect_uri: String,
    pub user_object_id: String,
    /// The scopes granted, space-separated as requested.
    pub scope: String,
    /// The resource (audience) the access token is for.
    pub resource: String,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub nonce: Option<String>,
    /// `v1` or `v2`: the endpoint family the flow started on.
    pub endpoint_version: String,
    /// Extra context carried into the token response (SMART launch context), as a JSON object.
    pub context: serde_json::Value,
}

/// What a refresh token stands for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefreshGrant {
    pub client_id: String,
    pub user_object_id: String,
    pub scope: String,
    pub resource: String,
    pub endpoint_version: String,
    pub context: serde_json::Value,
}

/// The outcome of redeeming a one-time value.
#[derive(Debug, Clone, PartialEq)]
pub enum Redeemed<T> {
    Valid(T),
    /// Known but already used (a replayed code) — Entra's AADSTS54005.
    AlreadyUsed,
    Expired,
    Unknown,
}

impl AppKind {
    /// The kind's name, as stored and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            AppKind::Confidential => "confidential",
            AppKind::Public => "public",
            AppKind::Service => "service",
        }
    }
}

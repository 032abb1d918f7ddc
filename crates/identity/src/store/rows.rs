//! The identity tables' rows as the store's records, and the lookups several operations share.

use fhirside_sql::{params, Db, Row};
use serde::Serialize;

use super::{App, AppKind, IdentityError, Result, RoleAssignment, SecretInfo, User};

pub(super) const APP_COLUMNS: &str = "object_id, client_id, display_name, kind, redirect_uris, jwks, created_at";
pub(super) const USER_COLUMNS: &str = "object_id, upn, display_name, fhir_user, created_at";
pub(super) const SECRET_COLUMNS: &str = "key_id, display_name, hint, created_at, expires_at";
pub(super) const ASSIGNMENT_COLUMNS: &str = "id, role, role_definition_id, principal_id, created_at";

/// An app from a row of [`APP_COLUMNS`].
pub(super) fn app(row: &Row) -> Result<App> {
    let object_id = row.text(0)?;
    let kind = match row.text(3)?.as_str() {
        "confidential" => AppKind::Confidential,
        "public" => AppKind::Public,
        "service" => AppKind::Service,
        other => return Err(IdentityError::Database(format!("app {object_id}: unknown kind '{other}'"))),
    };
    Ok(App {
        client_id: row.text(1)?,
        display_name: row.text(2)?,
        kind,
        redirect_uris: from_json(&row.text(4)?)?,
        jwks: row.opt_text(5)?.as_deref().map(from_json).transpose()?,
        created_at: row.int(6)?,
        object_id,
    })
}

/// A user from a row of [`USER_COLUMNS`].
pub(super) fn user(row: &Row) -> Result<User> {
    Ok(User {
        object_id: row.text(0)?,
        user_principal_name: row.text(1)?,
        display_name: row.text(2)?,
        fhir_user: row.opt_text(3)?,
        created_at: row.int(4)?,
    })
}

/// A secret from a row of [`SECRET_COLUMNS`].
pub(super) fn secret_info(row: &Row) -> Result<SecretInfo> {
    Ok(SecretInfo {
        key_id: row.text(0)?,
        display_name: row.text(1)?,
        hint: row.text(2)?,
        created_at: row.int(3)?,
        expires_at: row.int(4)?,
    })
}

/// An assignment from a row of [`ASSIGNMENT_COLUMNS`].
pub(super) fn assignment(row: &Row) -> Result<RoleAssignment> {
    Ok(RoleAssignment {
        id: row.text(0)?,
        role: row.text(1)?,
        role_definition_id: row.text(2)?,
        principal_id: row.text(3)?,
        created_at: row.int(4)?,
    })
}

/// An app by client id or object id.
pub(super) fn find_app(db: &mut dyn Db, id: &str) -> Result<Option<App>> {
    let sql = format!("SELECT {APP_COLUMNS} FROM identity_apps WHERE client_id = ?1 OR object_id = ?1");
    db.query_opt(&sql, &params![id.trim()])?.as_ref().map(app).transpose()
}

/// A user by object id or user principal name (whose case does not matter).
pub(super) fn find_user(db: &mut dyn Db, id: &str) -> Result<Option<User>> {
    let sql = format!("SELECT {USER_COLUMNS} FROM identity_users WHERE object_id = ?1 OR lower(upn) = lower(?1)");
    db.query_opt(&sql, &params![id.trim()])?.as_ref().map(user).transpose()
}

/// The tenant id, if the store has one yet.
pub(super) fn tenant(db: &mut dyn Db) -> Result<Option<String>> {
    let row = db.query_opt("SELECT value FROM identity_settings WHERE key = 'tenant_id'", &[])?;
    Ok(row.map(|row| row.text(0)).transpose()?)
}

pub(super) fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| IdentityError::Database(e.to_string()))
}

pub(super) fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| IdentityError::Database(format!("stored JSON: {e}")))
}

//! Identity administration shared by the admin REST API and the CLI: the rules (registering an app
//! with its roles and first secret, adding users and secrets, assigning roles by any of a
//! principal's names) and the JSON shapes both print. Each front end only parses its input and
//! prints text of its own.
//!
//! The rules, decided here once:
//! - a password has at least [`MIN_PASSWORD_CHARS`] characters;
//! - a client secret lives at least one day; only confidential apps have secrets, and public apps
//!   no keys either (both enforced by the store);
//! - a role is named by its name (case-insensitive) or id; an unknown one is refused with the list;
//! - an assignee is an app (object or client id) or a user (object id or user principal name);
//!   anything else must be a GUID, taken as the object id of an external issuer's principal.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::jwt::JwkSet;
use crate::roles::{self, Role, RoleKind};
use crate::store::{
    App, AppKind, IdentityError, IdentityStore, NewApp, NewUser, Result, RoleAssignment, SecretInfo, User,
};

/// Default lifetime of a client secret (Entra's portal offers 6 to 24 months).
pub const DEFAULT_SECRET_DAYS: i64 = 365;

/// The shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 8;

/// A request to register an app.
#[derive(Debug, Clone)]
pub struct AppRegistration {
    pub app: NewApp,
    /// Role names to assign to the app's service principal.
    pub roles: Vec<String>,
    /// Lifetime of the first client secret (confidential apps only).
    pub secret_days: i64,
}

/// A registered app, with its first secret (shown once).
#[derive(Debug, Clone)]
pub struct Registered {
    pub app: App,
    pub tenant_id: String,
    pub roles: Vec<RoleAssignment>,
    pub secret: Option<(SecretInfo, String)>,
}

/// What a role assignment's object id stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    App,
    User,
    /// Not of this tenant: an object id of an external issuer.
    External,
}

impl PrincipalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::App => "app",
            PrincipalKind::User => "user",
            PrincipalKind::External => "external",
        }
    }
}

/// A principal roles are assigned to: its object id, and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub object_id: String,
    pub kind: PrincipalKind,
    /// An app's display name or a user's principal name; none for an external principal.
    pub name: Option<String>,
}

impl Principal {
    fn app(app: App) -> Principal {
        Principal { object_id: app.object_id, kind: PrincipalKind::App, name: Some(app.display_name) }
    }

    fn user(user: User) -> Principal {
        Principal { object_id: user.object_id, kind: PrincipalKind::User, name: Some(user.user_principal_name) }
    }

    fn external(object_id: &str) -> Principal {
        Principal { object_id: object_id.to_owned(), kind: PrincipalKind::External, name: None }
    }
}

/// Roles by name (case-insensitive) or id, each once, refusing unknown names with the known ones.
pub fn parse_roles(names: &[String]) -> Result<Vec<&'static Role>> {
    let mut found: Vec<&'static Role> = Vec::new();
    for name in names {
        let role = roles::find(name.trim()).ok_or_else(|| {
            let known: Vec<&str> = roles::ROLES.iter().map(|r| r.name).collect();
            IdentityError::Invalid(format!("unknown role '{name}'; the roles are: {}", known.join(", ")))
        })?;
        if !found.iter().any(|r| r.id == role.id) {
            found.push(role);
        }
    }
    Ok(found)
}

pub fn check_password(password: &str) -> Result<()> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(IdentityError::Invalid(format!("a password needs at least {MIN_PASSWORD_CHARS} characters")));
    }
    Ok(())
}

fn check_secret_days(days: i64) -> Result<()> {
    if days < 1 {
        return Err(IdentityError::Invalid("a client secret's lifetime must be at least one day".into()));
    }
    Ok(())
}

/// A JWK Set of public keys for `private_key_jwt`: refuses a set without usable keys, and one
/// holding a private key (given by mistake, it should not be stored).
pub fn parse_jwks(json: &[u8]) -> Result<JwkSet> {
    let jwks = JwkSet::parse(json).map_err(|e| IdentityError::Invalid(format!("not a JWK Set: {e}")))?;
    if jwks.keys.is_empty() {
        return Err(IdentityError::Invalid("the JWK Set has no usable keys".into()));
    }
    let raw: Value = serde_json::from_slice(json).unwrap_or_default();
    if raw["keys"].as_array().is_some_and(|keys| keys.iter().any(|k| k.get("d").is_some())) {
        return Err(IdentityError::Invalid("the JWK Set holds a private key; give the public keys only".into()));
    }
    Ok(jwks)
}

/// Registers an app, assigns its roles and, for a confidential app, creates its first secret.
/// Everything that can be refused is checked before anything is written.
pub fn register_app(store: &IdentityStore, registration: AppRegistration, now: i64) -> Result<Registered> {
    let roles = parse_roles(&registration.roles)?;
    check_secret_days(registration.secret_days)?;
    let app = store.create_app(registration.app, now)?;
    let assignments =
        roles.iter().map(|role| store.assign_role(role, &app.object_id, now)).collect::<Result<Vec<_>>>()?;
    let secret = if app.kind == AppKind::Confidential {
        Some(store.add_secret(&app.object_id, "default", now, now + registration.secret_days * 86_400)?)
    } else {
        None
    };
    Ok(Registered { app, tenant_id: store.tenant_id().to_owned(), roles: assignments, secret })
}

/// Adds a client secret to a confidential app (by client or object id), valid for `days` days.
pub fn add_secret(
    store: &IdentityStore,
    app: &str,
    display_name: &str,
    days: i64,
    now: i64,
) -> Result<(SecretInfo, String)> {
    check_secret_days(days)?;
    store.add_secret(app, display_name, now, now + days * 86_400)
}

/// Creates a user and assigns its roles.
pub fn create_user(
    store: &IdentityStore,
    user: NewUser,
    role_names: &[String],
    now: i64,
) -> Result<(User, Vec<RoleAssignment>)> {
    let roles = parse_roles(role_names)?;
    check_password(&user.password)?;
    let user = store.create_user(user, now)?;
    let assignments =
        roles.iter().map(|role| store.assign_role(role, &user.object_id, now)).collect::<Result<Vec<_>>>()?;
    Ok((user, assignments))
}

/// Sets a user's (by object id or principal name) password.
pub fn set_password(store: &IdentityStore, user: &str, password: &str) -> Result<()> {
    check_password(password)?;
    store.set_password(user, password)
}

/// The principal a name stands for: an app by object or client id, a user by object id or
/// principal name, or, for a GUID that is neither, an external issuer's object id.
pub fn resolve_principal(store: &IdentityStore, name: &str) -> Result<Principal> {
    let name = name.trim();
    // Only the hyphenated form (what issuers put in `oid`), in lower case as ids are stored.
    let guid = uuid::Uuid::parse_str(name).ok().filter(|_| name.len() == 36).map(|g| g.to_string());
    let id = guid.as_deref().unwrap_or(name);
    if let Some(app) = store.app(id)? {
        return Ok(Principal::app(app));
    }
    if let Some(user) = store.user(id)? {
        return Ok(Principal::user(user));
    }
    guid.map(|guid| Principal::external(&guid)).ok_or_else(|| {
        IdentityError::NotFound(format!(
            "'{name}' is not the object id, client id or user principal name of an app or user, nor a GUID \
             (the object id of a principal of an external issuer)"
        ))
    })
}

/// Assigns a role by name or id to a principal by any of its names.
pub fn assign_role(
    store: &IdentityStore,
    role: &str,
    principal: &str,
    now: i64,
) -> Result<(RoleAssignment, Principal)> {
    let role = parse_roles(&[role.to_owned()])?[0];
    let principal = resolve_principal(store, principal)?;
    let assignment = store.assign_role(role, &principal.object_id, now)?;
    Ok((assignment, principal))
}

/// Role assignments, all or those of one assignee by any of its names, each with its principal.
pub fn role_assignments(store: &IdentityStore, assignee: Option<&str>) -> Result<Vec<(RoleAssignment, Principal)>> {
    if let Some(assignee) = assignee {
        let principal = resolve_principal(store, assignee)?;
        let assignments = store.role_assignments(Some(&principal.object_id))?;
        return Ok(assignments.into_iter().map(|a| (a, principal.clone())).collect());
    }
    let mut known: HashMap<String, Principal> = HashMap::new();
    for app in store.apps()? {
        known.insert(app.object_id.clone(), Principal::app(app));
    }
    for user in store.users()? {
        known.insert(user.object_id.clone(), Principal::user(user));
    }
    let assignments = store.role_assignments(None)?;
    Ok(assignments
        .into_iter()
        .map(|a| {
            let principal = known.get(&a.principal_id).cloned().unwrap_or_else(|| Principal::external(&a.principal_id));
            (a, principal)
        })
        .collect())
}

fn role_names(roles: &[RoleAssignment]) -> Vec<&str> {
    roles.iter().map(|r| r.role.as_str()).collect()
}

pub fn app_json(app: &App, tenant_id: &str, roles: &[RoleAssignment]) -> Value {
    json!({
        "displayName": app.display_name,
        "clientId": app.client_id,
        "objectId": app.object_id,
        "tenantId": tenant_id,
        "kind": app.kind,
        "redirectUris": app.redirect_uris,
        "jwks": app.jwks,
        "roles": role_names(roles),
        "createdDateTime": crate::time::rfc3339(app.created_at),
    })
}

/// A stored app with its current role assignments.
pub fn stored_app_json(store: &IdentityStore, app: &App) -> Result<Value> {
    Ok(app_json(app, store.tenant_id(), &store.role_assignments(Some(&app.object_id))?))
}

/// A registered app as printed once: with its first secret's value.
pub fn registered_json(registered: &Registered) -> Value {
    let mut value = app_json(&registered.app, &registered.tenant_id, &registered.roles);
    if let Some((info, secret)) = &registered.secret {
        value["clientSecret"] = json!(secret);
        value["clientSecretKeyId"] = json!(info.key_id);
        value["clientSecretExpires"] = json!(crate::time::rfc3339(info.expires_at));
    }
    value
}

/// A secret as listed or, with its value (shown once), as added: Graph's `passwordCredential`.
pub fn secret_json(info: &SecretInfo, value: Option<&str>) -> Value {
    let mut json = json!({
        "keyId": info.key_id,
        "displayName": info.display_name,
        "hint": info.hint,
        "startDateTime": crate::time::rfc3339(info.created_at),
        "endDateTime": crate::time::rfc3339(info.expires_at),
    });
    if let Some(value) = value {
        json["secretText"] = json!(value);
    }
    json
}

/// A secret just added, as the CLI prints it: named like [`registered_json`]'s first secret
/// (`clientSecret`), with the app's client id.
pub fn added_secret_json(client_id: &str, info: &SecretInfo, value: &str) -> Value {
    let mut json = secret_json(info, None);
    json["clientId"] = json!(client_id);
    json["clientSecret"] = json!(value);
    json
}

pub fn user_json(user: &User, roles: &[RoleAssignment]) -> Value {
    json!({
        "objectId": user.object_id,
        "userPrincipalName": user.user_principal_name,
        "displayName": user.display_name,
        "fhirUser": user.fhir_user,
        "roles": role_names(roles),
        "createdDateTime": crate::time::rfc3339(user.created_at),
    })
}

/// A stored user with its current role assignments.
pub fn stored_user_json(store: &IdentityStore, user: &User) -> Result<Value> {
    Ok(user_json(user, &store.role_assignments(Some(&user.object_id))?))
}

/// A role assignment with what its principal is (`app`, `user` or `external`) and its name.
pub fn assignment_json(assignment: &RoleAssignment, principal: &Principal) -> Value {
    json!({
        "id": assignment.id,
        "role": assignment.role,
        "roleDefinitionId": assignment.role_definition_id,
        "principalId": assignment.principal_id,
        "principalType": principal.kind.as_str(),
        "principalName": principal.name,
        "createdDateTime": crate::time::rfc3339(assignment.created_at),
    })
}

pub fn role_kind_name(kind: RoleKind) -> &'static str {
    match kind {
        RoleKind::Rbac => "rbac",
        RoleKind::AppRole => "appRole",
    }
}

pub fn role_definitions_json() -> Value {
    Value::Array(
        roles::ROLES
            .iter()
            .map(|r| {
                json!({
                    "name": r.name,
                    "id": r.id,
                    "kind": role_kind_name(r.kind),
                    "description": r.description,
                    "dataActions": r.data_actions().names(),
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests;

//! The rules the identity store enforces on what it is given: names, passwords, redirect URIs,
//! which kinds of app may hold which credentials.

use crate::jwt::JwkSet;

use super::{AppKind, IdentityError, Result};

/// A public client has no credentials: no secrets (see `add_secret`) and no public keys.
pub(super) fn check_keys(kind: AppKind, jwks: Option<&JwkSet>) -> Result<()> {
    if kind == AppKind::Public && jwks.is_some() {
        return Err(IdentityError::Invalid("a public client has no credentials, so no public keys (jwks)".into()));
    }
    Ok(())
}

pub(super) fn no_app(id: &str) -> IdentityError {
    IdentityError::NotFound(format!("no app with client id or object id '{id}'"))
}

pub(super) fn no_user(id: &str) -> IdentityError {
    IdentityError::NotFound(format!("no user with object id or user principal name '{id}'"))
}

pub(super) fn duplicate_user(upn: &str) -> IdentityError {
    IdentityError::Conflict(format!("a user named '{upn}' already exists"))
}

pub(super) fn checked_display_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() {
        return Err(IdentityError::Invalid("an app needs a non-empty display name".into()));
    }
    Ok(name.to_owned())
}

pub(super) fn check_password_value(password: &str) -> Result<()> {
    if password.is_empty() {
        return Err(IdentityError::Invalid("the password must not be empty".into()));
    }
    Ok(())
}

pub(super) fn dedup(mut uris: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    uris.retain(|u| seen.insert(u.clone()));
    uris
}

/// A redirect URI must be an absolute `https` URL, or `http` on the loopback host (native apps and
/// local development), without a fragment (RFC 6749 §3.1.2).
pub fn check_redirect_uri(uri: &str) -> Result<()> {
    let invalid = || {
        IdentityError::Invalid(format!(
            "invalid redirect URI '{uri}': it must be an absolute https URL, or http on localhost or 127.0.0.1, \
             without a fragment"
        ))
    };
    if uri.is_empty() || uri.contains('#') || uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid());
    }
    let (scheme, rest) = uri.split_once("://").ok_or_else(invalid)?;
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    if authority.contains('@') {
        return Err(invalid());
    }
    let (host, port) = if authority.starts_with('[') {
        let close = authority.find(']').ok_or_else(invalid)?;
        (&authority[..=close], &authority[close + 1..])
    } else {
        match authority.find(':') {
            Some(colon) => (&authority[..colon], &authority[colon..]),
            None => (authority, ""),
        }
    };
    let host_ok = !host.is_empty()
        && if host.starts_with('[') {
            host[1..host.len() - 1].chars().all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        } else {
            host.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
        };
    let port_ok = port.is_empty() || port.strip_prefix(':').is_some_and(|p| p.parse::<u16>().is_ok());
    if !host_ok || !port_ok {
        return Err(invalid());
    }
    let loopback = host.eq_ignore_ascii_case("localhost") || host == "127.0.0.1" || host == "[::1]";
    match scheme.to_ascii_lowercase().as_str() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(invalid()),
    }
}

//! The authority's SMART features against a real (SQLite) store: what an app sees at the
//! authorization and token endpoints. Password hashing is slow in a debug build, so each test
//! creates as few users as it can.

mod launch;
mod proxy;
mod smart;

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::authorize::{AuthorizeOutcome, Credentials};
use super::token::TokenRequest;
use super::{Authority, AuthorityConfig, EndpointVersion};
use crate::store::{App, AppKind, IdentityStore, NewApp, NewUser, User};

pub(super) const FHIR: &str = "https://fhir.example";
pub(super) const PASSWORD: &str = "correct horse battery";
/// The PKCE verifier of every test flow.
pub(super) const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

/// An authority over a store of its own, removed when dropped.
pub(super) struct Fixture {
    pub authority: Arc<Authority>,
    dir: PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Fixture {
    pub fn new(name: &str) -> Fixture {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "fhirside-identity-authority-{}-{}-{name}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = Arc::new(IdentityStore::open(&dir).unwrap());
        let config = AuthorityConfig::new("https://login.example", vec![FHIR.to_owned()]);
        Fixture { authority: Arc::new(Authority::new(config, store).unwrap()), dir }
    }

    pub fn app(&self, kind: AppKind, redirect_uris: &[&str]) -> App {
        let app = NewApp {
            display_name: "SMART app".into(),
            kind,
            redirect_uris: redirect_uris.iter().map(|u| u.to_string()).collect(),
            jwks: None,
        };
        self.authority.store.create_app(app, 0).unwrap()
    }

    pub fn user(&self, upn: &str, fhir_user: Option<&str>) -> User {
        let user = NewUser {
            user_principal_name: upn.into(),
            display_name: upn.into(),
            password: PASSWORD.into(),
            fhir_user: fhir_user.map(str::to_owned),
        };
        self.authority.store.create_user(user, 0).unwrap()
    }

    /// An authorization request on the v2 endpoint, signed in as `login` when given.
    pub fn authorize(&self, params: &[(String, String)], login: Option<&str>) -> AuthorizeOutcome {
        let credentials = login.map(|l| Credentials { login: l.into(), password: PASSWORD.into() });
        self.authority.authorize(EndpointVersion::V2, params, credentials, now())
    }

    /// Redeems a code (PKCE with [`VERIFIER`]) at the v2 token endpoint.
    pub fn redeem(&self, app: &App, redirect_uri: &str, code: &str) -> Value {
        let request = form(&[
            ("grant_type", "authorization_code"),
            ("client_id", &app.client_id),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", VERIFIER),
        ]);
        self.authority.token(EndpointVersion::V2, &request, now()).unwrap()
    }
}

pub(super) fn now() -> i64 {
    crate::time::now()
}

pub(super) fn pairs(params: &[(&str, &str)]) -> Vec<(String, String)> {
    params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

pub(super) fn form(params: &[(&str, &str)]) -> TokenRequest {
    TokenRequest { params: pairs(params), basic: None }
}

/// An authorization code request of a public SMART app with PKCE.
pub(super) fn code_request(app: &App, redirect_uri: &str, scope: &str) -> Vec<(String, String)> {
    let challenge = crate::b64::encode(ring::digest::digest(&ring::digest::SHA256, VERIFIER.as_bytes()));
    pairs(&[
        ("client_id", &app.client_id),
        ("redirect_uri", redirect_uri),
        ("response_type", "code"),
        ("scope", scope),
        ("state", "app-state"),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
    ])
}

/// The query of a redirect, decoded.
pub(super) fn redirect_query(outcome: &AuthorizeOutcome) -> Vec<(String, String)> {
    let AuthorizeOutcome::Redirect(location) = outcome else { panic!("expected a redirect, got {outcome:?}") };
    let query = location.split_once('?').map(|(_, q)| q).unwrap_or("");
    form_urlencoded::parse(query.as_bytes()).into_owned().collect()
}

pub(super) fn value<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// The code a redirect carries, failing with the redirect's error otherwise.
pub(super) fn code_of(outcome: &AuthorizeOutcome) -> String {
    let query = redirect_query(outcome);
    match value(&query, "code") {
        Some(code) => code.to_owned(),
        None => panic!("no code: {query:?}"),
    }
}

/// A JWT's claims, unverified.
pub(super) fn claims(token: &str) -> Map<String, Value> {
    crate::jwt::decode(token).unwrap().claims
}

pub(super) fn access_claims(response: &Value) -> Map<String, Value> {
    claims(response["access_token"].as_str().expect("an access token"))
}

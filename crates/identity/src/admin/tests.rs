//! The administration rules against a real store. Hashing is slow in a debug build: the tests
//! create as few secrets and users as they can.

use std::path::PathBuf;

use super::*;

fn store(name: &str) -> IdentityStore {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir: PathBuf = std::env::temp_dir().join(format!(
        "fhirside-identity-admin-{}-{}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    IdentityStore::open(&dir).unwrap()
}

fn registration(name: &str, kind: AppKind, roles: &[&str]) -> AppRegistration {
    AppRegistration {
        app: NewApp { display_name: name.into(), kind, redirect_uris: vec![], jwks: None },
        roles: roles.iter().map(|r| r.to_string()).collect(),
        secret_days: DEFAULT_SECRET_DAYS,
    }
}

fn new_user(upn: &str, password: &str) -> NewUser {
    NewUser { user_principal_name: upn.into(), display_name: String::new(), password: password.into(), fhir_user: None }
}

const KEY: &str = r#"{"kty":"RSA","kid":"k1","n":"AQAB","e":"AQAB""#;

fn invalid<T: std::fmt::Debug>(result: Result<T>) -> String {
    match result {
        Err(IdentityError::Invalid(message)) => message,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn refusals_write_nothing() {
    let store = store("refusals");
    let message = invalid(register_app(&store, registration("Typo", AppKind::Confidential, &["FHIR Data Raeder"]), 0));
    assert!(message.contains("unknown role 'FHIR Data Raeder'") && message.contains("FHIR Data Reader"), "{message}");
    let zero_days = AppRegistration { secret_days: 0, ..registration("Zero", AppKind::Confidential, &[]) };
    assert!(invalid(register_app(&store, zero_days, 0)).contains("at least one day"));
    let keys = parse_jwks(format!(r#"{{"keys":[{KEY}}}]}}"#).as_bytes()).unwrap();
    let mut keyed_spa = registration("Spa", AppKind::Public, &["FHIR Data Reader"]);
    keyed_spa.app.jwks = Some(keys);
    assert!(invalid(register_app(&store, keyed_spa, 0)).contains("public client"));
    assert!(store.apps().unwrap().is_empty());
    assert!(store.role_assignments(None).unwrap().is_empty());

    let message = invalid(create_user(&store, new_user("bob@example.org", "1234567"), &[], 0));
    assert!(message.contains("at least 8 characters"), "{message}");
    assert!(invalid(create_user(&store, new_user("bob@example.org", "12345678"), &["nope".into()], 0)).contains("nope"));
    assert!(store.users().unwrap().is_empty());

    let spa = register_app(&store, registration("Spa", AppKind::Public, &[]), 0).unwrap();
    assert!(spa.secret.is_none(), "a public client gets no secret");
    assert!(invalid(add_secret(&store, &spa.app.client_id, "", 0, 0)).contains("at least one day"));
    assert!(invalid(add_secret(&store, &spa.app.client_id, "", 30, 0)).contains("without client secrets"));
    assert!(invalid(set_password(&store, "nobody", "short")).contains("at least 8"));
}

#[test]
fn roles_by_name_or_id_each_once() {
    let names =
        ["fhir data reader".to_string(), " FHIR Data Reader ".into(), "4c8d0bbc-75d3-4935-991f-5f3c56d81508".into()];
    let parsed = parse_roles(&names).unwrap();
    assert_eq!(parsed.iter().map(|r| r.name).collect::<Vec<_>>(), ["FHIR Data Reader"]);
    let two = parse_roles(&["globaladmin".into(), "FHIR Data Reader".into()]).unwrap();
    assert_eq!(two.iter().map(|r| r.name).collect::<Vec<_>>(), ["globalAdmin", "FHIR Data Reader"]);
}

#[test]
fn jwks_with_public_keys_only() {
    assert!(parse_jwks(format!(r#"{{"keys":[{KEY}}}]}}"#).as_bytes()).is_ok());
    assert!(invalid(parse_jwks(format!(r#"{{"keys":[{KEY},"d":"AQAB"}}]}}"#).as_bytes())).contains("private key"));
    assert!(invalid(parse_jwks(br#"{"keys":[]}"#)).contains("no usable keys"));
    assert!(invalid(parse_jwks(b"[]")).contains("not a JWK Set"));
}

#[test]
fn principals_by_any_name_and_external_guids() {
    let store = store("principals");
    let registered = register_app(&store, registration("Portal", AppKind::Public, &["FHIR Data Reader"]), 10).unwrap();
    let app = &registered.app;
    let (user, roles) =
        create_user(&store, new_user("alice@example.org", "correct horse"), &["FHIR SMART User".into()], 20).unwrap();
    assert_eq!(role_names(&roles), ["FHIR SMART User"]);

    for name in [app.client_id.as_str(), &app.object_id] {
        let principal = resolve_principal(&store, name).unwrap();
        assert_eq!((principal.kind, principal.name.as_deref()), (PrincipalKind::App, Some("Portal")));
        assert_eq!(principal.object_id, app.object_id);
    }
    let upper = resolve_principal(&store, &app.client_id.to_uppercase()).unwrap();
    assert_eq!((upper.kind, upper.object_id.as_str()), (PrincipalKind::App, app.object_id.as_str()));
    let by_upn = resolve_principal(&store, "ALICE@example.org").unwrap();
    assert_eq!((by_upn.kind, by_upn.object_id.as_str()), (PrincipalKind::User, user.object_id.as_str()));

    let external = resolve_principal(&store, "0FC44DC2-9AA1-4E1B-924E-EA4E0B5717F0").unwrap();
    assert_eq!(external, Principal::external("0fc44dc2-9aa1-4e1b-924e-ea4e0b5717f0"));
    for unknown in ["no-such-app", "bob@example.org", "0fc44dc29aa14e1b924eea4e0b5717f0", ""] {
        match resolve_principal(&store, unknown) {
            Err(IdentityError::NotFound(message)) => assert!(message.contains("GUID"), "{message}"),
            other => panic!("{unknown}: {other:?}"),
        }
    }

    let (assignment, principal) = assign_role(&store, "globalAdmin", &app.client_id, 30).unwrap();
    assert_eq!(assignment.principal_id, app.object_id);
    let json = assignment_json(&assignment, &principal);
    assert_eq!((json["principalType"].as_str(), json["principalName"].as_str()), (Some("app"), Some("Portal")));
    assign_role(&store, "FHIR Data Reader", &external.object_id, 40).unwrap();

    let all = role_assignments(&store, None).unwrap();
    let kinds: Vec<(&str, PrincipalKind)> = all.iter().map(|(a, p)| (a.role.as_str(), p.kind)).collect();
    assert_eq!(
        kinds,
        [
            ("FHIR Data Reader", PrincipalKind::App),
            ("FHIR SMART User", PrincipalKind::User),
            ("globalAdmin", PrincipalKind::App),
            ("FHIR Data Reader", PrincipalKind::External)
        ]
    );
    let alices = role_assignments(&store, Some("alice@example.org")).unwrap();
    assert_eq!(alices.len(), 1);
    assert_eq!(alices[0].1.name.as_deref(), Some("alice@example.org"));
    assert!(matches!(role_assignments(&store, Some("nobody")), Err(IdentityError::NotFound(_))));
}

#[test]
fn a_registered_app_prints_its_first_secret_once() {
    let store = store("registered");
    let registered =
        register_app(&store, registration("Nightly", AppKind::Confidential, &["FHIR Data Exporter"]), 0).unwrap();
    let json = registered_json(&registered);
    for field in ["clientId", "clientSecret", "clientSecretKeyId", "objectId", "tenantId", "displayName", "kind"] {
        assert!(json[field].is_string(), "{field}: {json}");
    }
    assert_eq!(json["redirectUris"], json!([]));
    assert_eq!(json["roles"], json!(["FHIR Data Exporter"]));
    let listed = stored_app_json(&store, &registered.app).unwrap();
    assert_eq!(listed["roles"], json["roles"]);
    assert!(listed.get("clientSecret").is_none());
    let (info, _) = registered.secret.as_ref().unwrap();
    assert_eq!(info.expires_at, DEFAULT_SECRET_DAYS * 86_400);
}

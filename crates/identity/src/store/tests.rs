//! The identity store against both backends: each test below runs on a SQLite file of its own
//! and on a PostgreSQL schema of its own (`FHIRSIDE_TEST_POSTGRES`, default
//! `postgres://root@127.0.0.1:5432/test`, as the resource store's tests). The PostgreSQL variants
//! fail, never skip, when the server is missing: CI starts one. Secret and password hashes are the
//! production PBKDF2 (slow in a debug build), so the tests hash as few values as they can.

use std::path::Path;

use serde_json::json;

use fhirside_sql::testing::{admin_client, TestDir, TestSchema};

use super::*;
use crate::jwt::JwkSet;
use crate::roles;

/// Where a test's stores live: a directory of its own, or a PostgreSQL schema of its own. Removed
/// when dropped.
pub(super) enum Place {
    Dir(TestDir),
    Schema(TestSchema),
}

fn unique(name: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("{}_{}_{name}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

impl Place {
    pub(super) fn sqlite(name: &str) -> Place {
        Place::Dir(TestDir::create(&format!("fhirside-identity-{}", unique(name))))
    }

    pub(super) fn postgres(name: &str) -> Place {
        let name = format!("fhirside_identity_test_{}", unique(name)).to_lowercase().replace('-', "_");
        Place::Schema(TestSchema::create(&name))
    }

    pub(super) fn open(&self) -> IdentityStore {
        match self {
            Place::Dir(dir) => IdentityStore::open(dir.path()).unwrap(),
            Place::Schema(schema) => IdentityStore::open_postgres(&schema.url).unwrap(),
        }
    }

    fn dir(&self) -> Option<&Path> {
        match self {
            Place::Dir(dir) => Some(dir.path()),
            Place::Schema(_) => None,
        }
    }

    /// Marks the store as migrated by a newer build.
    fn set_schema_version(&self, version: i64) {
        match self {
            Place::Dir(dir) => {
                let conn = rusqlite::Connection::open(dir.path().join(FILE_NAME)).unwrap();
                conn.pragma_update(None, "user_version", version).unwrap();
            }
            Place::Schema(TestSchema { name, .. }) => {
                admin_client()
                    .execute(
                        &format!("INSERT INTO {name}.identity_migration (version, description) VALUES ($1, 'newer')"),
                        &[&version],
                    )
                    .unwrap();
            }
        }
    }
}

/// Each named test, once per backend: `sqlite::<name>` and `postgres::<name>`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test]
            fn $name() {
                super::$name(&super::Place::sqlite(stringify!($name)));
            })*
        }
        mod postgres {
            $(#[test]
            fn $name() {
                super::$name(&super::Place::postgres(stringify!($name)));
            })*
        }
    };
}

on_both_backends!(
    two_opens_share_tenant_and_key_and_see_each_others_writes,
    concurrent_first_opens_agree,
    rotation_keeps_the_old_key_published_until_its_window_passes,
    app_registrations,
    client_secrets,
    secret_removed_in_process_is_forgotten_by_the_cache,
    users_and_passwords,
    role_assignments_are_idempotent_and_removable,
    a_role_assigned_through_one_store_reaches_another_within_the_check_interval,
    codes_and_refresh_tokens_redeem_once,
    a_refresh_token_raced_on_two_stores_is_redeemed_once,
    refuses_a_newer_schema,
);

fn new_app(name: &str, kind: AppKind) -> NewApp {
    NewApp { display_name: name.into(), kind, redirect_uris: vec![], jwks: None }
}

fn code_grant() -> CodeGrant {
    CodeGrant {
        client_id: "client".into(),
        redirect_uri: "http://localhost/cb".into(),
        user_object_id: "user".into(),
        scope: "openid fhirUser".into(),
        resource: "https://fhir.example".into(),
        code_challenge: Some("abc".into()),
        code_challenge_method: Some("S256".into()),
        nonce: None,
        endpoint_version: "v2".into(),
        context: json!({"patient": "123"}),
    }
}

fn refresh_grant() -> RefreshGrant {
    RefreshGrant {
        client_id: "client".into(),
        user_object_id: "user".into(),
        scope: "openid offline_access".into(),
        resource: "https://fhir.example".into(),
        endpoint_version: "v1".into(),
        context: json!({}),
    }
}

fn two_opens_share_tenant_and_key_and_see_each_others_writes(place: &Place) {
    let a = place.open();
    let b = place.open();
    assert_eq!(a.tenant_id(), b.tenant_id());
    assert_eq!(a.tenant_id().len(), 36, "a GUID");
    #[cfg(unix)]
    if let Some(dir) = place.dir() {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join(FILE_NAME)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "private keys inside: owner only");
    }
    let keys_a = a.signing_keys(0).unwrap();
    let keys_b = b.signing_keys(0).unwrap();
    assert_eq!(keys_a.len(), 1);
    assert_eq!(keys_a[0].kid, keys_b[0].kid);
    assert!(keys_a[0].retired_at.is_none());

    // Another connection's commit moves data_version; so does one's own.
    let before = a.data_version().unwrap();
    assert_eq!(a.data_version().unwrap(), before, "stable without writes");
    b.set_setting("authority_base", "https://localhost:8443").unwrap();
    // Another process's change is looked for at most every EXTERNAL_CHECK_MS.
    std::thread::sleep(std::time::Duration::from_millis(super::EXTERNAL_CHECK_MS + 20));
    let after_other = a.data_version().unwrap();
    assert_ne!(after_other, before);
    assert_eq!(a.setting("authority_base").unwrap().as_deref(), Some("https://localhost:8443"));
    a.set_setting("authority_base", "https://localhost:9443").unwrap();
    assert_ne!(a.data_version().unwrap(), after_other);
    assert_eq!(b.setting("authority_base").unwrap().as_deref(), Some("https://localhost:9443"));
    assert_eq!(a.setting("missing").unwrap(), None);

    let tenant = a.tenant_id().to_owned();
    drop((a, b));
    let reopened = place.open();
    assert_eq!(reopened.tenant_id(), tenant);
    assert_eq!(reopened.signing_keys(0).unwrap()[0].kid, keys_a[0].kid);
}

/// Replicas starting together on a new database: one migration, one tenant, one signing key.
fn concurrent_first_opens_agree(place: &Place) {
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..3)
            .map(|_| {
                scope.spawn(|| {
                    let store = place.open();
                    (store.tenant_id().to_owned(), store.signing_keys(0).unwrap()[0].kid.clone())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(results.windows(2).all(|w| w[0] == w[1]), "{results:?}");
    let store = place.open();
    assert_eq!(store.signing_keys(0).unwrap().len(), 1, "one key, not one per opener");
}

fn rotation_keeps_the_old_key_published_until_its_window_passes(place: &Place) {
    let store = place.open();
    let first = store.signing_keys(0).unwrap().remove(0);
    let second = store.rotate_signing_key(1_000).unwrap();
    assert_ne!(first.kid, second.kid);
    let keys = store.signing_keys(500).unwrap();
    let kids: Vec<_> = keys.iter().map(|k| (k.kid.as_str(), k.retired_at)).collect();
    assert_eq!(kids, [(second.kid.as_str(), None), (first.kid.as_str(), Some(1_000))], "current first");
    assert_eq!(store.signing_keys(1_000).unwrap().len(), 2, "retired at the boundary is still published");
    let later = store.signing_keys(1_001).unwrap();
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].kid, second.kid);
    // The stored key still signs what its JWK verifies.
    let token = later[0].sign(&json!({"sub": "x"}));
    crate::jwt::decode(&token).unwrap().verify_with(&second.jwk()).unwrap();
}

fn app_registrations(place: &Place) {
    let store = place.open();
    let mut spa = new_app("  Portal  ", AppKind::Public);
    spa.redirect_uris = vec!["http://localhost:3000/cb".into(), "https://app.example/cb?x=1".into()];
    let spa = store.create_app(spa, 100).unwrap();
    assert_eq!(spa.display_name, "Portal");
    assert_ne!(spa.client_id, spa.object_id);
    assert_eq!(store.app(&spa.client_id).unwrap().as_ref(), Some(&spa));
    assert_eq!(store.app(&spa.object_id).unwrap().as_ref(), Some(&spa));
    assert_eq!(store.app("nope").unwrap(), None);

    let jwks = JwkSet::parse(br#"{"keys":[{"kty":"RSA","kid":"k1","n":"AQAB","e":"AQAB"}]}"#).unwrap();
    let service =
        store.create_app(NewApp { jwks: Some(jwks.clone()), ..new_app("Backend", AppKind::Service) }, 101).unwrap();
    assert_eq!(store.app(&service.client_id).unwrap().unwrap().jwks, Some(jwks));
    let names: Vec<_> = store.apps().unwrap().into_iter().map(|a| a.display_name).collect();
    assert_eq!(names, ["Portal", "Backend"]);

    for bad in ["http://example.com/cb", "ftp://localhost/", "/relative", "https://", "https://a b", "https://x/#f"] {
        let mut app = new_app("Bad", AppKind::Public);
        app.redirect_uris = vec![bad.into()];
        assert!(matches!(store.create_app(app, 0), Err(IdentityError::Invalid(_))), "{bad}");
    }
    assert!(matches!(store.create_app(new_app(" ", AppKind::Public), 0), Err(IdentityError::Invalid(_))));
    for good in ["http://127.0.0.1:8080/", "http://[::1]/x", "https://example.com:8443"] {
        check_redirect_uri(good).unwrap();
    }

    let mut updated = spa.clone();
    updated.display_name = "Portal 2".into();
    updated.redirect_uris.push("https://other.example/cb".into());
    store.update_app(&updated).unwrap();
    assert_eq!(store.app(&spa.client_id).unwrap().unwrap(), updated);
    updated.redirect_uris.push("http://evil.example/".into());
    assert!(matches!(store.update_app(&updated), Err(IdentityError::Invalid(_))));
    let keyed = App { jwks: service.jwks.clone(), ..spa.clone() };
    assert!(matches!(store.update_app(&keyed), Err(IdentityError::Invalid(_))), "a public client has no keys");
    let ghost = App { object_id: "ghost".into(), ..spa.clone() };
    assert!(matches!(store.update_app(&ghost), Err(IdentityError::NotFound(_))));

    let reader = roles::find("FHIR Data Reader").unwrap();
    store.assign_role(reader, &spa.object_id, 5).unwrap();
    store.save_code("c-of-portal", &CodeGrant { client_id: spa.client_id.clone(), ..code_grant() }, i64::MAX).unwrap();
    assert!(store.delete_app(&spa.client_id).unwrap());
    assert!(!store.delete_app(&spa.client_id).unwrap());
    assert_eq!(store.app(&spa.object_id).unwrap(), None);
    assert!(store.role_assignments(Some(&spa.object_id)).unwrap().is_empty(), "assignments go with the app");
    assert_eq!(store.redeem_code("c-of-portal", 0).unwrap(), Redeemed::Unknown, "so do its codes");
}

fn client_secrets(place: &Place) {
    let store = place.open();
    let app = store.create_app(new_app("Daemon", AppKind::Confidential), 0).unwrap();
    let (info, secret) = store.add_secret(&app.client_id, "ci", 1_000, 2_000).unwrap();
    assert_eq!(secret.len(), 40);
    assert_eq!(info.hint, &secret[..3]);
    assert_eq!((info.created_at, info.expires_at), (1_000, 2_000));
    assert_eq!(store.secrets(&app.object_id).unwrap(), std::slice::from_ref(&info));

    // Nothing stored can be turned back into the secret.
    let stored = store.read(|db| Ok(db.query_one("SELECT hash, hint FROM identity_secrets", &[])?)).unwrap();
    assert!(!stored.text(0).unwrap().contains(&secret), "plaintext secret stored");
    assert_eq!(stored.text(1).unwrap(), info.hint);
    if let Some(dir) = place.dir() {
        let bytes = std::fs::read(dir.join(FILE_NAME)).unwrap();
        let wal = std::fs::read(dir.join(format!("{FILE_NAME}-wal"))).unwrap_or_default();
        for file in [&bytes, &wal] {
            assert!(!file.windows(secret.len()).any(|w| w == secret.as_bytes()), "plaintext secret stored");
        }
    }

    // The right secret matches (an expired one too: the caller reports the expiry), then from cache.
    assert_eq!(store.check_secret(&app.client_id, &secret).unwrap(), Some(info.clone()));
    assert_eq!(store.check_secret(&app.client_id, &secret).unwrap(), Some(info.clone()));
    // A wrong secret with another hint costs no hash; one with the same hint is verified and fails.
    assert_eq!(store.check_secret(&app.client_id, "wrong").unwrap(), None);
    let same_hint = format!("{}{}", &secret[..3], "x".repeat(37));
    assert_eq!(store.check_secret(&app.client_id, &same_hint).unwrap(), None);
    assert_eq!(store.check_secret(&app.object_id, &secret).unwrap(), None, "by client id only");

    // Removal by another connection (the CLI) is seen despite the cache.
    let other = place.open();
    assert!(other.remove_secret(&app.client_id, &info.key_id).unwrap());
    assert!(!other.remove_secret(&app.client_id, &info.key_id).unwrap());
    assert_eq!(store.check_secret(&app.client_id, &secret).unwrap(), None);
    assert!(store.secrets(&app.client_id).unwrap().is_empty());

    assert!(matches!(store.add_secret("ghost", "", 0, 1), Err(IdentityError::NotFound(_))));
    assert!(matches!(store.secrets("ghost"), Err(IdentityError::NotFound(_))));
    assert!(matches!(store.add_secret(&app.client_id, "", 10, 10), Err(IdentityError::Invalid(_))));
    let public = store.create_app(new_app("SPA", AppKind::Public), 0).unwrap();
    assert!(matches!(store.add_secret(&public.client_id, "", 0, 1), Err(IdentityError::Invalid(_))));
}

fn secret_removed_in_process_is_forgotten_by_the_cache(place: &Place) {
    let store = place.open();
    let app = store.create_app(new_app("Daemon", AppKind::Confidential), 0).unwrap();
    let (info, secret) = store.add_secret(&app.client_id, "", 0, 10).unwrap();
    assert!(store.check_secret(&app.client_id, &secret).unwrap().is_some());
    assert!(store.remove_secret(&app.object_id, &info.key_id).unwrap());
    assert_eq!(store.check_secret(&app.client_id, &secret).unwrap(), None);
}

fn users_and_passwords(place: &Place) {
    let store = place.open();
    let alice = store
        .create_user(
            NewUser {
                user_principal_name: "alice@example.org".into(),
                display_name: "".into(),
                password: "correct horse".into(),
                fhir_user: Some("Practitioner/123".into()),
            },
            7,
        )
        .unwrap();
    assert_eq!(alice.display_name, "alice@example.org");
    assert_eq!(alice.fhir_user.as_deref(), Some("Practitioner/123"));
    assert_eq!(store.user("ALICE@example.org").unwrap().as_ref(), Some(&alice), "names ignore case");
    assert_eq!(store.user(&alice.object_id).unwrap().as_ref(), Some(&alice));
    assert_eq!(store.users().unwrap(), std::slice::from_ref(&alice));

    let duplicate = NewUser {
        user_principal_name: "Alice@Example.org".into(),
        display_name: "Other".into(),
        password: "x".into(),
        fhir_user: None,
    };
    assert!(matches!(store.create_user(duplicate, 8), Err(IdentityError::Conflict(_))));

    assert_eq!(store.check_password("alice@example.org", "correct horse").unwrap(), Some(alice.clone()));
    assert_eq!(store.check_password("alice@example.org", "wrong").unwrap(), None);
    store.set_password(&alice.object_id, "battery staple").unwrap();
    assert_eq!(store.check_password("Alice@example.org", "battery staple").unwrap(), Some(alice.clone()));
    assert!(matches!(store.set_password("bob", "x"), Err(IdentityError::NotFound(_))));

    assert!(store.delete_user("alice@example.org").unwrap());
    assert!(!store.delete_user(&alice.object_id).unwrap());
    assert!(store.users().unwrap().is_empty());
}

fn role_assignments_are_idempotent_and_removable(place: &Place) {
    let store = place.open();
    let reader = roles::find("fhir data reader").unwrap();
    let admin = roles::find("globalAdmin").unwrap();
    let first = store.assign_role(reader, "oid-1", 10).unwrap();
    assert_eq!(first.role, "FHIR Data Reader");
    assert_eq!(first.role_definition_id, reader.id);
    assert_eq!(store.assign_role(reader, "oid-1", 20).unwrap(), first, "same pair, same assignment");
    let second = store.assign_role(admin, "oid-1", 30).unwrap();
    let third = store.assign_role(reader, "oid-2", 40).unwrap();
    assert_eq!(store.role_assignments(None).unwrap(), [first.clone(), second.clone(), third.clone()]);
    assert_eq!(store.role_assignments(Some("oid-1")).unwrap(), [first.clone(), second.clone()]);
    assert!(store.remove_role_assignment(&first.id).unwrap());
    assert!(!store.remove_role_assignment(&first.id).unwrap());
    assert_eq!(store.role_assignments(Some("oid-1")).unwrap(), [second]);
    assert!(matches!(store.assign_role(reader, " ", 0), Err(IdentityError::Invalid(_))));
}

fn codes_and_refresh_tokens_redeem_once(place: &Place) {
    let store = place.open();
    let grant = code_grant();
    let now = crate::time::now();
    store.save_code("code-1", &grant, now + 100).unwrap();
    store.save_code("code-2", &grant, now + 100).unwrap();
    assert_eq!(store.redeem_code("code-1", now).unwrap(), Redeemed::Valid(grant.clone()));
    assert_eq!(store.redeem_code("code-1", now + 1).unwrap(), Redeemed::AlreadyUsed);
    assert_eq!(store.redeem_code("code-2", now + 100).unwrap(), Redeemed::Expired);
    assert_eq!(store.redeem_code("code-2", now + 99).unwrap(), Redeemed::Valid(grant.clone()), "not used by that");
    assert_eq!(store.redeem_code("code-3", now).unwrap(), Redeemed::Unknown);
    assert_eq!(store.redeem_refresh_token("code-1", now).unwrap(), Redeemed::Unknown, "separate tables");

    // Only hashes are stored.
    let stored = store.read(|db| Ok(db.query_one("SELECT hash FROM identity_codes LIMIT 1", &[])?.text(0)?)).unwrap();
    assert!(stored != "code-1" && stored != "code-2");

    let refresh = refresh_grant();
    store.save_refresh_token("rt-1", &refresh, now + 3600).unwrap();
    // Another connection redeeming first wins; this one sees the use.
    let other = place.open();
    assert_eq!(other.redeem_refresh_token("rt-1", now).unwrap(), Redeemed::Valid(refresh.clone()));
    assert_eq!(store.redeem_refresh_token("rt-1", now).unwrap(), Redeemed::AlreadyUsed);

    // Rows expired for more than a day are purged on the next save.
    store.save_refresh_token("rt-old", &refresh, now - 2 * 24 * 3600).unwrap();
    assert_eq!(store.redeem_refresh_token("rt-old", now).unwrap(), Redeemed::Expired);
    store.save_refresh_token("rt-2", &refresh, now + 3600).unwrap();
    assert_eq!(store.redeem_refresh_token("rt-old", now).unwrap(), Redeemed::Unknown);
    store.save_code("code-old", &grant, now - 2 * 24 * 3600).unwrap();
    store.save_code("code-4", &grant, now + 60).unwrap();
    assert_eq!(store.redeem_code("code-old", now).unwrap(), Redeemed::Unknown);
    assert_eq!(store.redeem_code("code-1", now).unwrap(), Redeemed::AlreadyUsed, "recent rows stay");
}

fn refuses_a_newer_schema(place: &Place) {
    drop(place.open());
    place.set_schema_version(99);
    let err = match place {
        Place::Dir(dir) => IdentityStore::open(dir.path()).err(),
        Place::Schema(schema) => IdentityStore::open_postgres(&schema.url).err(),
    };
    let err = err.expect("refused");
    assert!(err.to_string().contains("newer"), "{err}");
}

/// What an admin (or another replica) assigns is what the FHIR service's per-request check reads:
/// `data_version` moves within [`EXTERNAL_CHECK_MS`], and the assignment is there.
fn a_role_assigned_through_one_store_reaches_another_within_the_check_interval(place: &Place) {
    let (admin, service) = (place.open(), place.open());
    let reader = roles::find("FHIR Data Reader").unwrap();
    let before = service.data_version().unwrap();
    assert!(service.role_assignments(Some("oid-x")).unwrap().is_empty());
    let assigned = admin.assign_role(reader, "oid-x", 1).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(EXTERNAL_CHECK_MS + 20));
    assert_ne!(service.data_version().unwrap(), before, "the other store's commit is noticed");
    assert_eq!(service.role_assignments(Some("oid-x")).unwrap(), std::slice::from_ref(&assigned));
    // Removal too: revocation is what this matters most for.
    let seen = service.data_version().unwrap();
    assert!(admin.remove_role_assignment(&assigned.id).unwrap());
    std::thread::sleep(std::time::Duration::from_millis(EXTERNAL_CHECK_MS + 20));
    assert_ne!(service.data_version().unwrap(), seen);
    assert!(service.role_assignments(Some("oid-x")).unwrap().is_empty());
}

/// Two replicas presented the same refresh token at once: one redeems it, the other is refused.
fn a_refresh_token_raced_on_two_stores_is_redeemed_once(place: &Place) {
    let stores = [place.open(), place.open()];
    let now = crate::time::now();
    for round in 0..5 {
        let token = format!("rt-race-{round}");
        stores[0].save_refresh_token(&token, &refresh_grant(), now + 3600).unwrap();
        let outcomes: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> =
                stores.iter().map(|store| scope.spawn(|| store.redeem_refresh_token(&token, now).unwrap())).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let valid = outcomes.iter().filter(|o| matches!(o, Redeemed::Valid(_))).count();
        let used = outcomes.iter().filter(|o| **o == Redeemed::AlreadyUsed).count();
        assert_eq!((valid, used), (1, 1), "round {round}: {outcomes:?}");
    }
}

/// A connection PostgreSQL ended (a restart, a failover, an administrator) fails the operation
/// that finds it broken; the next one connects again.
#[test]
fn postgres_a_broken_connection_is_replaced() {
    let place = Place::postgres("reconnect");
    let Place::Schema(schema) = &place else { unreachable!() };
    let store = IdentityStore::open_postgres(&schema.named_url()).unwrap();
    store.set_setting("k", "v").unwrap();
    assert_eq!(schema.end_sessions(), 1, "the store's one connection");
    assert!(matches!(store.setting("k"), Err(IdentityError::Database(_))), "the broken connection's operation fails");
    assert_eq!(store.setting("k").unwrap().as_deref(), Some("v"), "the next one reconnects");
    store.set_setting("k", "w").unwrap();
    assert_eq!(store.setting("k").unwrap().as_deref(), Some("w"));
}

/// `migrate-store`'s identity part: an embedded installation's identity, moved to PostgreSQL, is
/// the same tenant with the same keys, apps, secrets, users and roles; a target that holds
/// identity of its own is refused.
#[test]
fn postgres_identity_moves_from_an_embedded_store() {
    let source_place = Place::sqlite("export");
    let source = source_place.open();
    let app = source.create_app(new_app("Daemon", AppKind::Confidential), 10).unwrap();
    let (_, secret) = source.add_secret(&app.client_id, "ci", 10, i64::MAX).unwrap();
    let mut public = new_app("Portal", AppKind::Public);
    public.redirect_uris = vec!["http://localhost/cb".into()];
    let public = source.create_app(public, 11).unwrap();
    let user = NewUser {
        user_principal_name: "alice@example.org".into(),
        display_name: "Alice".into(),
        password: "correct horse".into(),
        fhir_user: None,
    };
    let alice = source.create_user(user, 12).unwrap();
    let reader = roles::find("FHIR Data Reader").unwrap();
    source.assign_role(reader, &app.object_id, 13).unwrap();
    source.assign_role(reader, &alice.object_id, 14).unwrap();
    source.assign_role(reader, "external-oid", 15).unwrap();
    source.rotate_signing_key(20).unwrap();
    source.set_setting("fhir_app_id", "app-id").unwrap();
    source.save_refresh_token("rt", &refresh_grant(), i64::MAX).unwrap();

    let export = source.export().unwrap();
    assert_eq!(export.tenant_id(), source.tenant_id());
    let counts = ImportCounts { signing_keys: 2, apps: 2, secrets: 1, users: 1, role_assignments: 3 };
    assert_eq!(export.counts(), counts);

    let target_place = Place::postgres("import");
    let Place::Schema(TestSchema { url, .. }) = &target_place else { unreachable!() };
    let target = IdentityImport::connect(url).unwrap();
    target.check(&export).unwrap();
    assert_eq!(target.import(&export).unwrap(), counts);

    let moved = target_place.open();
    assert_eq!(moved.tenant_id(), source.tenant_id());
    let kids = |store: &IdentityStore| -> Vec<_> {
        store.signing_keys(0).unwrap().into_iter().map(|k| (k.kid, k.retired_at)).collect()
    };
    assert_eq!(kids(&moved), kids(&source));
    assert_eq!(moved.apps().unwrap(), [app.clone(), public]);
    assert_eq!(moved.secrets(&app.client_id).unwrap(), source.secrets(&app.client_id).unwrap());
    assert!(moved.check_secret(&app.client_id, &secret).unwrap().is_some(), "the secret still works");
    assert_eq!(moved.check_password("Alice@example.org", "correct horse").unwrap(), Some(alice));
    assert_eq!(moved.role_assignments(None).unwrap(), source.role_assignments(None).unwrap());
    assert_eq!(moved.setting("fhir_app_id").unwrap().as_deref(), Some("app-id"));
    assert_eq!(moved.redeem_refresh_token("rt", 0).unwrap(), Redeemed::Unknown, "one-time values stay behind");

    // Again into the same target: it holds apps now.
    let again = target.check(&export).unwrap_err();
    assert!(matches!(&again, IdentityError::Conflict(m) if m.contains("2 apps")), "{again}");
    assert!(target.import(&export).is_err());
    // A target a server already ran on has a tenant of its own.
    let other_place = Place::postgres("import-other");
    let Place::Schema(TestSchema { url, .. }) = &other_place else { unreachable!() };
    drop(other_place.open());
    let refused = IdentityImport::connect(url).unwrap().check(&export).unwrap_err();
    assert!(refused.to_string().contains("another tenant"), "{refused}");
}

//! The identity store against real SQLite files. Secret and password hashes are the production
//! PBKDF2 (slow in a debug build), so the tests hash as few values as they can.

use std::path::PathBuf;

use serde_json::json;

use super::*;
use crate::roles;

fn temp_dir(name: &str) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "fhirside-identity-{}-{}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

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

#[test]
fn two_opens_share_tenant_and_key_and_see_each_others_writes() {
    let dir = temp_dir("open");
    let a = IdentityStore::open(&dir).unwrap();
    let b = IdentityStore::open(&dir).unwrap();
    assert_eq!(a.tenant_id(), b.tenant_id());
    assert_eq!(a.tenant_id().len(), 36, "a GUID");
    #[cfg(unix)]
    {
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
    let reopened = IdentityStore::open(&dir).unwrap();
    assert_eq!(reopened.tenant_id(), tenant);
    assert_eq!(reopened.signing_keys(0).unwrap()[0].kid, keys_a[0].kid);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn concurrent_first_opens_agree() {
    let dir = temp_dir("race");
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let dir = dir.clone();
            std::thread::spawn(move || {
                let store = IdentityStore::open(&dir).unwrap();
                (store.tenant_id().to_owned(), store.signing_keys(0).unwrap()[0].kid.clone())
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(results.windows(2).all(|w| w[0] == w[1]), "{results:?}");
    let store = IdentityStore::open(&dir).unwrap();
    assert_eq!(store.signing_keys(0).unwrap().len(), 1, "one key, not one per opener");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn rotation_keeps_the_old_key_published_until_its_window_passes() {
    let dir = temp_dir("rotate");
    let store = IdentityStore::open(&dir).unwrap();
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
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn app_registrations() {
    let dir = temp_dir("apps");
    let store = IdentityStore::open(&dir).unwrap();
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
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn client_secrets() {
    let dir = temp_dir("secrets");
    let store = IdentityStore::open(&dir).unwrap();
    let app = store.create_app(new_app("Daemon", AppKind::Confidential), 0).unwrap();
    let (info, secret) = store.add_secret(&app.client_id, "ci", 1_000, 2_000).unwrap();
    assert_eq!(secret.len(), 40);
    assert_eq!(info.hint, &secret[..3]);
    assert_eq!((info.created_at, info.expires_at), (1_000, 2_000));
    assert_eq!(store.secrets(&app.object_id).unwrap(), std::slice::from_ref(&info));

    // Nothing in the file can be turned back into the secret.
    let bytes = std::fs::read(dir.join(FILE_NAME)).unwrap();
    let wal = std::fs::read(dir.join(format!("{FILE_NAME}-wal"))).unwrap_or_default();
    for file in [&bytes, &wal] {
        assert!(!file.windows(secret.len()).any(|w| w == secret.as_bytes()), "plaintext secret stored");
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
    let other = IdentityStore::open(&dir).unwrap();
    assert!(other.remove_secret(&app.client_id, &info.key_id).unwrap());
    assert!(!other.remove_secret(&app.client_id, &info.key_id).unwrap());
    assert_eq!(store.check_secret(&app.client_id, &secret).unwrap(), None);
    assert!(store.secrets(&app.client_id).unwrap().is_empty());

    assert!(matches!(store.add_secret("ghost", "", 0, 1), Err(IdentityError::NotFound(_))));
    assert!(matches!(store.secrets("ghost"), Err(IdentityError::NotFound(_))));
    assert!(matches!(store.add_secret(&app.client_id, "", 10, 10), Err(IdentityError::Invalid(_))));
    let public = store.create_app(new_app("SPA", AppKind::Public), 0).unwrap();
    assert!(matches!(store.add_secret(&public.client_id, "", 0, 1), Err(IdentityError::Invalid(_))));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn secret_removed_in_process_is_forgotten_by_the_cache() {
    let dir = temp_dir("secret-cache");
    let store = IdentityStore::open(&dir).unwrap();
    let app = store.create_app(new_app("Daemon", AppKind::Confidential), 0).unwrap();
    let (info, secret) = store.add_secret(&app.client_id, "", 0, 10).unwrap();
    assert!(store.check_secret(&app.client_id, &secret).unwrap().is_some());
    assert!(store.remove_secret(&app.object_id, &info.key_id).unwrap());
    assert_eq!(store.check_secret(&app.client_id, &secret).unwrap(), None);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn users_and_passwords() {
    let dir = temp_dir("users");
    let store = IdentityStore::open(&dir).unwrap();
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
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn role_assignments_are_idempotent_and_removable() {
    let dir = temp_dir("roles");
    let store = IdentityStore::open(&dir).unwrap();
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
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn codes_and_refresh_tokens_redeem_once() {
    let dir = temp_dir("codes");
    let store = IdentityStore::open(&dir).unwrap();
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
    let conn = store.lock();
    let stored: String = conn.query_row("SELECT hash FROM codes LIMIT 1", [], |r| r.get(0)).unwrap();
    assert!(stored != "code-1" && stored != "code-2");
    drop(conn);

    let refresh = RefreshGrant {
        client_id: "client".into(),
        user_object_id: "user".into(),
        scope: "openid offline_access".into(),
        resource: "https://fhir.example".into(),
        endpoint_version: "v1".into(),
        context: json!({}),
    };
    store.save_refresh_token("rt-1", &refresh, now + 3600).unwrap();
    // Another connection redeeming first wins; this one sees the use.
    let other = IdentityStore::open(&dir).unwrap();
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
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn refuses_a_newer_schema() {
    let dir = temp_dir("newer");
    drop(IdentityStore::open(&dir).unwrap());
    let conn = Connection::open(dir.join(FILE_NAME)).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = IdentityStore::open(&dir).err().expect("refused");
    assert!(err.to_string().contains("newer"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

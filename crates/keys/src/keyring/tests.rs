use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;

use super::*;
use crate::provider::LocalKek;
use crate::zeroize::Zeroizing;

fn kek(byte: u8) -> LocalKek {
    LocalKek::from_bytes("test", &[byte; 32]).unwrap()
}

/// A keyring stored as JSON and opened again, as a server restarting does.
async fn reopen(keyring: &Keyring, provider: &dyn KeyProvider) -> Result<Keyring, KeyError> {
    let json = serde_json::to_string(keyring.state()).unwrap();
    Keyring::open(provider, serde_json::from_str(&json).unwrap()).await
}

#[tokio::test]
async fn a_reopened_keyring_reads_what_was_written() {
    let kek = kek(1);
    let keyring = Keyring::create(&kek).await.unwrap();
    let sealed = keyring.encrypt(b"body", b"Patient/1/_history/1");
    let deterministic = keyring.encrypt_deterministic("identifier", b"12345");
    let index = keyring.blind_index("token", b"12345");

    let reopened = reopen(&keyring, &kek).await.unwrap();
    assert_eq!(reopened.decrypt(&sealed, b"Patient/1/_history/1").unwrap(), b"body");
    assert_eq!(reopened.decrypt(&deterministic, b"identifier").unwrap(), b"12345");
    assert_eq!(reopened.encrypt_deterministic("identifier", b"12345"), deterministic);
    assert_eq!(reopened.blind_index("token", b"12345"), index);
}

#[tokio::test]
async fn the_state_is_plain_json() {
    let keyring = Keyring::create(&kek(1)).await.unwrap();
    let json: serde_json::Value = serde_json::to_value(keyring.state()).unwrap();
    let key = &json["keys"][0];
    assert_eq!(json["active"], key["id"]);
    assert_eq!(key["id"].as_str().unwrap().len(), 8);
    assert!(key["created_at"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(key["wrapped"]["kek_id"], kek(1).id());
    assert_eq!(key["wrapped"]["kek_version"], "1");
    assert_eq!(STANDARD.decode(key["wrapped"]["ciphertext"].as_str().unwrap()).unwrap().len(), 60);
}

#[tokio::test]
async fn another_kek_refuses_to_open_and_says_which() {
    let keyring = Keyring::create(&kek(1)).await.unwrap();
    let error = reopen(&keyring, &kek(2)).await.unwrap_err();
    assert_eq!(error, KeyError::KekMismatch { wrapped_by: kek(1).id().to_owned(), configured: kek(2).id().to_owned() });
    assert_eq!(error.kek_id(), Some(kek(1).id()));
    assert!(error.to_string().contains(kek(1).id()), "{error}");
}

#[tokio::test]
async fn an_altered_wrapped_key_refuses_to_open() {
    let keyring = Keyring::create(&kek(1)).await.unwrap();
    let mut state = keyring.state().clone();
    state.keys[0].wrapped.ciphertext[20] ^= 1;
    let error = Keyring::open(&kek(1), state).await.unwrap_err();
    assert!(matches!(&error, KeyError::Unwrap { kek_id, .. } if kek_id == kek(1).id()), "{error:?}");
}

#[tokio::test]
async fn an_inconsistent_state_is_refused() {
    let keyring = Keyring::create(&kek(1)).await.unwrap();
    let mut no_active = keyring.state().clone();
    no_active.active = DekId(no_active.active.0.wrapping_add(1));
    assert!(matches!(Keyring::open(&kek(1), no_active).await, Err(KeyError::InvalidKeyring { .. })));
    let mut twice = keyring.state().clone();
    twice.keys.push(twice.keys[0].clone());
    assert!(matches!(Keyring::open(&kek(1), twice).await, Err(KeyError::InvalidKeyring { .. })));
}

#[tokio::test]
async fn rotate_dek_keeps_old_keys_for_reading() {
    let kek = kek(1);
    let first = Keyring::create(&kek).await.unwrap();
    let old = first.encrypt(b"old", b"row");
    let second = first.rotate_dek(&kek).await.unwrap();
    assert_ne!(second.active_id(), first.active_id());
    assert_eq!(second.ids(), vec![first.active_id(), second.active_id()]);

    let second = reopen(&second, &kek).await.unwrap();
    let new = second.encrypt(b"new", b"row");
    assert_eq!(second.decrypt(&old, b"row").unwrap(), b"old");
    assert_eq!(second.decrypt(&new, b"row").unwrap(), b"new");
    assert_eq!(format::dek_id_of(&new).unwrap(), second.active_id());
    assert!(!second.is_active(&old).unwrap());
    assert!(second.is_active(&new).unwrap());
    // The old keyring cannot read what the new key sealed.
    assert_eq!(first.decrypt(&new, b"row"), Err(CipherError::UnknownDek { dek_id: second.active_id() }));

    // Searches while data moves: the active key's index first, then the older one's.
    assert_eq!(
        second.blind_indexes("token", b"12345"),
        vec![second.blind_index("token", b"12345"), first.blind_index("token", b"12345")]
    );
    assert_eq!(
        second.encrypt_deterministic_all("identifier", b"12345"),
        vec![second.encrypt_deterministic("identifier", b"12345"), first.encrypt_deterministic("identifier", b"12345")]
    );
}

#[tokio::test]
async fn retire_drops_an_old_key_but_never_the_active_one() {
    let kek = kek(1);
    let first = Keyring::create(&kek).await.unwrap();
    let old = first.encrypt(b"old", b"row");
    let second = first.rotate_dek(&kek).await.unwrap();
    assert!(matches!(second.retire(second.active_id()), Err(KeyError::InvalidKeyring { .. })));
    let third = second.retire(first.active_id()).unwrap();
    assert_eq!(third.ids(), vec![second.active_id()]);
    assert_eq!(third.decrypt(&old, b"row"), Err(CipherError::UnknownDek { dek_id: first.active_id() }));
    assert_eq!(reopen(&third, &kek).await.unwrap().ids(), vec![second.active_id()]);
}

#[tokio::test]
async fn rotate_kek_moves_every_key_to_another_kek_without_touching_data() {
    let (old_kek, new_kek) = (kek(1), kek(2));
    let keyring = Keyring::create(&old_kek).await.unwrap().rotate_dek(&old_kek).await.unwrap();
    let sealed = keyring.encrypt(b"body", b"row");
    let (rotated, count) = keyring.rotate_kek(&new_kek).await.unwrap();
    assert_eq!(count, 2);
    assert!(rotated.state().keys.iter().all(|stored| stored.wrapped.kek_id == new_kek.id()));
    assert_eq!(rotated.ids(), keyring.ids());

    let reopened = reopen(&rotated, &new_kek).await.unwrap();
    assert_eq!(reopened.decrypt(&sealed, b"row").unwrap(), b"body");
    assert!(matches!(reopen(&rotated, &old_kek).await, Err(KeyError::KekMismatch { .. })));
    // Nothing left to do the second time.
    assert_eq!(rotated.rotate_kek(&new_kek).await.unwrap().1, 0);
}

#[tokio::test]
async fn status_shows_ids_versions_and_times() {
    let kek = kek(1);
    let first = Keyring::create(&kek).await.unwrap();
    let keyring = first.rotate_dek(&kek).await.unwrap();
    let status = keyring.status();
    assert_eq!(status.active, keyring.active_id());
    assert_eq!(status.keys.len(), 2);
    assert_eq!(status.keys[0].id, first.active_id());
    assert!(!status.keys[0].active);
    assert!(status.keys[1].active);
    assert!(status.keys.iter().all(|key| key.kek_id == kek.id() && key.kek_version == "1" && key.created_at > 0));
}

/// Every way a 32-byte key could be written out in a log.
fn renderings(key: &[u8]) -> Vec<String> {
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let decimal = format!("{key:?}");
    let decimal_prefix = decimal[..decimal.len() / 3].to_owned();
    vec![
        hex.clone(),
        hex.to_uppercase(),
        hex[..16].to_owned(),
        STANDARD.encode(key),
        URL_SAFE_NO_PAD.encode(key),
        STANDARD.encode(key)[..16].to_owned(),
        decimal,
        decimal_prefix,
        String::from_utf8_lossy(key).into_owned(),
    ]
}

#[tokio::test]
async fn no_debug_or_display_shows_key_bytes() {
    // Key bytes that are easy to find: a run of distinct values.
    let kek_bytes: Vec<u8> = (100..132).collect();
    let kek = LocalKek::from_bytes("test", &kek_bytes).unwrap();
    let keyring = Keyring::create(&kek).await.unwrap().rotate_dek(&kek).await.unwrap();
    let mut state = keyring.state().clone();
    state.keys[0].wrapped.ciphertext[20] ^= 1;
    let unwrap_error = Keyring::open(&kek, state).await.unwrap_err();

    let dek = &keyring.keys[&keyring.active_id()].dek;
    let shown = [
        format!("{keyring:?}"),
        format!("{keyring:#?}"),
        format!("{:?}", keyring.state()),
        format!("{:?}", keyring.status()),
        serde_json::to_string(&keyring.status()).unwrap(),
        format!("{kek:?}"),
        format!("{dek:?}"),
        format!("{:?}", keyring.keys[&keyring.active_id()]),
        format!("{unwrap_error:?}"),
        unwrap_error.to_string(),
        format!("{:?}", Zeroizing::new(dek.as_bytes().to_vec())),
        keyring.decrypt(b"\x01garbage-garbage-garbage-garbage-garbage", b"").unwrap_err().to_string(),
    ]
    .join("\n");

    let mut secrets = vec![kek_bytes.clone()];
    secrets.extend(keyring.keys.values().map(|key| key.dek.as_bytes().to_vec()));
    for secret in &secrets {
        for rendering in renderings(secret) {
            assert!(!shown.contains(&rendering), "{rendering} appears in:\n{shown}");
        }
    }
    // The search can fail: the same renderings of a key written out on purpose are found.
    let leaked = format!("{shown}\n{:?}", dek.as_bytes());
    assert!(renderings(dek.as_bytes()).iter().any(|rendering| leaked.contains(rendering)));
}

/// A KEK that wraps some other key than the one it is given, as a broken key service might.
struct Lying(LocalKek);

impl KeyProvider for Lying {
    fn id(&self) -> &str {
        "lying"
    }
    fn current_version(&self) -> crate::BoxFuture<'_, Result<String, KeyError>> {
        self.0.current_version()
    }
    fn wrap<'a>(&'a self, _dek: &'a Dek) -> crate::BoxFuture<'a, Result<WrappedKey, KeyError>> {
        Box::pin(async move {
            let other = Dek::generate();
            let mut wrapped = self.0.wrap(&other).await?;
            wrapped.kek_id = "lying".into();
            Ok(wrapped)
        })
    }
    fn unwrap<'a>(&'a self, wrapped: &'a WrappedKey) -> crate::BoxFuture<'a, Result<Dek, KeyError>> {
        Box::pin(async move {
            let mut honest = wrapped.clone();
            honest.kek_id = self.0.id().to_owned();
            self.0.unwrap(&honest).await
        })
    }
}

#[tokio::test]
async fn rotate_kek_refuses_a_wrap_that_does_not_give_the_key_back() {
    let keyring = Keyring::create(&kek(1)).await.unwrap();
    let error = keyring.rotate_kek(&Lying(kek(2))).await.unwrap_err();
    let KeyError::Unwrap { kek_id, reason, .. } = &error else { panic!("{error:?}") };
    assert_eq!(kek_id, "lying");
    assert!(reason.contains("does not unwrap to itself"), "{reason}");
    // The keyring it was called on is unchanged and still opens.
    assert!(reopen(&keyring, &kek(1)).await.is_ok());
}

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine;

use super::*;

const KEY: [u8; 32] = [0x42; 32];

/// A key file in a directory of its own, removed when dropped.
struct TempKey(PathBuf);

impl std::ops::Deref for TempKey {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempKey {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.0.parent().unwrap());
    }
}

fn temp_file(name: &str, contents: &[u8], mode: u32) -> TempKey {
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let unique = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("fhirside-keys-{}-{unique}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    TempKey(path)
}

#[tokio::test]
async fn a_local_kek_wraps_and_unwraps() {
    let kek = LocalKek::from_bytes("test", &KEY).unwrap();
    let dek = Dek::generate();
    let wrapped = kek.wrap(&dek).await.unwrap();
    assert_eq!(wrapped.kek_id, kek.id());
    assert_eq!(wrapped.kek_version, "1");
    assert_eq!(kek.current_version().await.unwrap(), "1");
    assert!(!wrapped.ciphertext.windows(32).any(|w| w == dek.as_bytes()));
    assert_eq!(kek.unwrap(&wrapped).await.unwrap().as_bytes(), dek.as_bytes());
    // Two wraps of one key differ (random nonce) and both open.
    let again = kek.wrap(&dek).await.unwrap();
    assert_ne!(again.ciphertext, wrapped.ciphertext);
    assert_eq!(kek.rewrap(&wrapped).await.unwrap().kek_id, kek.id());
}

#[tokio::test]
async fn a_local_kek_refuses_what_it_did_not_wrap() {
    let kek = LocalKek::from_bytes("test", &KEY).unwrap();
    let wrapped = kek.wrap(&Dek::generate()).await.unwrap();

    let other = LocalKek::from_bytes("test", &[0x43; 32]).unwrap();
    assert!(matches!(other.unwrap(&wrapped).await, Err(KeyError::KekMismatch { .. })));

    // The right id, the wrong bytes: the tag, not the id, is what refuses.
    let mut altered = wrapped.clone();
    altered.ciphertext[30] ^= 0x80;
    assert!(matches!(kek.unwrap(&altered).await, Err(KeyError::Unwrap { .. })));
    let mut cut = wrapped.clone();
    cut.ciphertext.pop();
    assert!(matches!(kek.unwrap(&cut).await, Err(KeyError::Unwrap { .. })));
    let mut version = wrapped.clone();
    version.kek_version = "2".into();
    assert!(matches!(kek.unwrap(&version).await, Err(KeyError::Unwrap { .. })));
}

#[test]
fn the_id_is_a_fingerprint_of_the_key() {
    let id = LocalKek::from_bytes("a", &KEY).unwrap().id().to_owned();
    assert!(id.starts_with("local:") && id.len() == "local:".len() + 16, "{id}");
    assert_eq!(LocalKek::from_bytes("b", &KEY).unwrap().id(), id);
    assert_ne!(LocalKek::from_bytes("a", &[0x43; 32]).unwrap().id(), id);
    // It is not the key.
    assert!(!id.contains("4242"));
}

#[test]
fn base64_with_or_without_padding_and_white_space() {
    let id = LocalKek::from_bytes("raw", &KEY).unwrap().id().to_owned();
    for text in [STANDARD.encode(KEY), STANDARD_NO_PAD.encode(KEY), format!("  {}\n", STANDARD.encode(KEY))] {
        assert_eq!(LocalKek::from_base64("text", &text).unwrap().id(), id);
    }
    let short = LocalKek::from_base64("the variable K", &STANDARD.encode([1u8; 16])).unwrap_err();
    assert_eq!(
        short,
        KeyError::KeySource {
            source: "the variable K".into(),
            reason: "the key is 16 bytes, not 32 (give 32 raw bytes or their base64)".into()
        }
    );
    assert!(matches!(LocalKek::from_base64("text", "not base64!"), Err(KeyError::KeySource { .. })));
}

#[tokio::test]
async fn a_key_file_holds_raw_bytes_or_base64() {
    let id = LocalKek::from_bytes("raw", &KEY).unwrap().id().to_owned();
    let raw = temp_file("raw.key", &KEY, 0o600);
    let text = temp_file("text.key", format!("{}\n", STANDARD.encode(KEY)).as_bytes(), 0o400);
    assert_eq!(LocalKek::from_file(&raw).unwrap().id(), id);
    assert_eq!(LocalKek::from_file(&text).unwrap().id(), id);
    let wrong = temp_file("short.key", &[1u8; 31], 0o600);
    assert!(matches!(LocalKek::from_file(&wrong), Err(KeyError::KeySource { .. })));
}

#[test]
fn a_key_file_others_may_read_is_refused() {
    for mode in [0o644, 0o640, 0o604, 0o620, 0o660, 0o666] {
        let path = temp_file("loose.key", &KEY, mode);
        let error = LocalKek::from_file(&path).unwrap_err();
        let KeyError::KeySource { source, reason } = &error else { panic!("{error:?}") };
        assert!(source.contains("loose.key"), "{source}");
        assert!(reason.contains(&format!("{mode:04o}")) && reason.contains("chmod 600"), "{reason}");
    }
    // Execute permission for the owner alone is odd but not a disclosure.
    assert!(LocalKek::from_file(&temp_file("owner.key", &KEY, 0o700)).is_ok());
}

#[test]
fn a_missing_key_file_says_so() {
    let error = LocalKek::from_file(std::path::Path::new("/nonexistent/fhirside/kek")).unwrap_err();
    assert!(error
        .to_string()
        .starts_with("cannot use the key in the key file /nonexistent/fhirside/kek: cannot open it"));
}

#[tokio::test]
async fn a_key_in_the_environment_is_the_same_kek_as_in_a_file() {
    // A variable of this test's own: nextest runs each test in its own process.
    let name = "FHIRSIDE_KEYS_TEST_KEK";
    std::env::set_var(name, STANDARD.encode(KEY));
    let from_env = LocalKek::from_env(name).unwrap();
    let from_file = LocalKek::from_file(&temp_file("k", &KEY, 0o600)).unwrap();
    assert_eq!(from_env.id(), from_file.id());
    let wrapped = from_env.wrap(&Dek::generate()).await.unwrap();
    assert!(from_file.unwrap(&wrapped).await.is_ok());

    std::env::remove_var(name);
    assert_eq!(
        LocalKek::from_env(name).unwrap_err(),
        KeyError::KeySource { source: format!("the environment variable {name}"), reason: "it is not set".into() }
    );
}

#[test]
fn a_wrapped_key_is_json_with_base64() {
    let wrapped = WrappedKey { kek_id: "local:00".into(), kek_version: "1".into(), ciphertext: vec![1, 2, 3] };
    let json = serde_json::to_string(&wrapped).unwrap();
    assert_eq!(json, r#"{"kek_id":"local:00","kek_version":"1","ciphertext":"AQID"}"#);
    assert_eq!(serde_json::from_str::<WrappedKey>(&json).unwrap(), wrapped);
    assert_eq!(format!("{wrapped:?}"), r#"WrappedKey { kek_id: "local:00", kek_version: "1", ciphertext_len: 3 }"#);
}

#[test]
fn names_in_urls_are_checked() {
    assert!(check_path_segment("key", "fhirside-kek_1.0").is_ok());
    for bad in ["", ".", "..", "a/b", "a b", "a?b", "ä"] {
        assert!(check_path_segment("key", bad).is_err(), "{bad}");
    }
    assert!(base_url("url", "ftp://x").is_err());
    assert_eq!(base_url("url", "https://v.example/").unwrap(), "https://v.example");
}

#[test]
fn long_service_messages_are_cut() {
    assert_eq!(short("fine"), "fine");
    assert_eq!(short(&"x".repeat(1000)).chars().count(), 301);
}

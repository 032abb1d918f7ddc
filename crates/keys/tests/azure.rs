//! The Azure Key Vault provider against a fake vault speaking Key Vault's REST shapes over HTTPS
//! (`GET /keys/{name}`, `POST /keys/{name}/{version}/wrapkey` and `/unwrapkey`, api-version 7.4,
//! bearer tokens, `{"error":{"code","message"}}` errors). No Key Vault emulator is published on
//! Debian, PyPI or npm. The fake checks the protocol, not RSA: since only the vault ever sees the
//! key, it "wraps" with AES-256-GCM under a key per version where Azure would use RSA-OAEP-256,
//! and insists that the client asks for `RSA-OAEP-256`.

use std::sync::{Arc, Mutex, OnceLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use fhirside_fetch::testing::{serve, temp_file, tls_fixture, TestRequest, TestResponse};
use fhirside_fetch::Client;
use fhirside_keys::{AzureKeyVault, AzureKeyVaultConfig, KeyError, KeyProvider, Keyring};
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::{json, Value};

const KEY_NAME: &str = "fhirside-kek";
const TOKEN: &str = "eyJ0eXAiOiJKV1QifQ.fake-bearer-token-7d2e";

struct Version {
    name: String,
    key: LessSafeKey,
    enabled: bool,
}

/// The vault's state, shared with the handler.
#[derive(Default)]
struct State {
    versions: Vec<Version>,
    requests: Vec<TestRequest>,
}

struct FakeVault {
    url: String,
    client: Client,
    state: Arc<Mutex<State>>,
}

fn error(status: u16, code: &str, message: &str) -> TestResponse {
    let mut response = TestResponse::json(json!({ "error": { "code": code, "message": message } }));
    response.status = status;
    response
}

fn new_version(number: usize) -> Version {
    let mut bytes = [0u8; 32];
    SystemRandom::new().fill(&mut bytes).unwrap();
    let key = LessSafeKey::new(UnboundKey::new(&aead::AES_256_GCM, &bytes).unwrap());
    Version { name: format!("{number:032x}"), key, enabled: true }
}

impl FakeVault {
    async fn start() -> FakeVault {
        let state = Arc::new(Mutex::new(State { versions: vec![new_version(1)], requests: Vec::new() }));
        let base: Arc<OnceLock<String>> = Arc::new(OnceLock::new());
        let (ca, tls) = tls_fixture();
        let handler_state = state.clone();
        let handler_base = base.clone();
        let handler = Arc::new(move |request: TestRequest| {
            let mut state = handler_state.lock().unwrap();
            state.requests.push(request.clone());
            Some(answer(&state, handler_base.get().unwrap(), &request))
        });
        let address = serve(handler, Some(tls)).await;
        let url = format!("https://127.0.0.1:{}", address.port());
        base.set(url.clone()).unwrap();
        let client = Client::new(Some(&temp_file(&ca))).unwrap();
        FakeVault { url, client, state }
    }

    fn provider(&self, version: Option<&str>, token: &str) -> AzureKeyVault {
        let config = AzureKeyVaultConfig {
            vault_url: format!("{}/", self.url),
            key_name: KEY_NAME.into(),
            key_version: version.map(str::to_owned),
        };
        AzureKeyVault::new(self.client.clone(), config, token.to_owned()).unwrap()
    }

    fn version_name(&self, index: usize) -> String {
        self.state.lock().unwrap().versions[index].name.clone()
    }

    fn rotate(&self) -> String {
        let mut state = self.state.lock().unwrap();
        let version = new_version(state.versions.len() + 1);
        let name = version.name.clone();
        state.versions.push(version);
        name
    }

    fn requests(&self) -> Vec<TestRequest> {
        std::mem::take(&mut self.state.lock().unwrap().requests)
    }
}

fn answer(state: &State, base: &str, request: &TestRequest) -> TestResponse {
    let Some((path, query)) = request.path.split_once('?') else {
        return error(400, "BadParameter", "api-version is required");
    };
    if query != "api-version=7.4" {
        return error(400, "BadParameter", "unsupported api-version");
    }
    if request.header("authorization") != Some(&format!("Bearer {TOKEN}")) {
        return error(401, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token.");
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let kid = |version: &Version| format!("{base}/keys/{KEY_NAME}/{}", version.name);
    match (request.method.as_str(), &segments[..]) {
        ("GET", ["keys", name]) if *name == KEY_NAME => {
            let latest = state.versions.iter().rev().find(|v| v.enabled).unwrap();
            TestResponse::json(json!({
                "key": { "kid": kid(latest), "kty": "RSA", "key_ops": ["wrapKey", "unwrapKey"] },
                "attributes": { "enabled": true }
            }))
        }
        ("POST", ["keys", name, version, operation]) if *name == KEY_NAME => {
            let Some(found) = state.versions.iter().find(|v| v.name == *version && v.enabled) else {
                return error(404, "KeyNotFound", "A key with (name/id) fhirside-kek was not found in this key vault.");
            };
            if request.header("content-type") != Some("application/json") {
                return error(400, "BadParameter", "content type");
            }
            let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
            if body["alg"] != "RSA-OAEP-256" {
                return error(400, "BadParameter", "The parameter alg is invalid.");
            }
            let Some(value) = body["value"].as_str().and_then(|v| URL_SAFE_NO_PAD.decode(v).ok()) else {
                return error(400, "BadParameter", "value must be base64url");
            };
            let result = match *operation {
                "wrapkey" => Some(seal(&found.key, &value)),
                "unwrapkey" => open(&found.key, &value),
                _ => return error(404, "NotFound", "no such operation"),
            };
            match result {
                Some(bytes) => TestResponse::json(json!({ "kid": kid(found), "value": URL_SAFE_NO_PAD.encode(bytes) })),
                None => error(400, "BadParameter", "Bad Request"),
            }
        }
        _ => error(404, "NotFound", "no such route"),
    }
}

fn seal(key: &LessSafeKey, plaintext: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; 12];
    SystemRandom::new().fill(&mut nonce).unwrap();
    let mut out = plaintext.to_vec();
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut out).unwrap();
    [nonce.to_vec(), out].concat()
}

fn open(key: &LessSafeKey, sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < 12 + 16 {
        return None;
    }
    let (nonce, rest) = sealed.split_at(12);
    let mut buffer = rest.to_vec();
    let nonce = Nonce::assume_unique_for_key(nonce.try_into().unwrap());
    key.open_in_place(nonce, Aad::empty(), &mut buffer).ok().map(|plaintext| plaintext.to_vec())
}

#[tokio::test]
async fn wraps_and_unwraps_with_key_vaults_requests() {
    let vault = FakeVault::start().await;
    let provider = vault.provider(None, TOKEN);
    assert_eq!(provider.id(), format!("azure-keyvault:{}/keys/{KEY_NAME}", vault.url.trim_start_matches("https://")));

    let keyring = Keyring::create(&provider).await.unwrap();
    let wrapped = &keyring.state().keys[0].wrapped;
    assert_eq!(wrapped.kek_version, vault.version_name(0));
    assert_eq!(wrapped.ciphertext.len(), 12 + 32 + 16);

    let requests = vault.requests();
    let shapes: Vec<(&str, &str)> = requests.iter().map(|r| (r.method.as_str(), r.path.as_str())).collect();
    let wrap_path = format!("/keys/{KEY_NAME}/{}/wrapkey?api-version=7.4", vault.version_name(0));
    assert_eq!(shapes, [("GET", &*format!("/keys/{KEY_NAME}?api-version=7.4")), ("POST", &*wrap_path)]);
    let body: Value = serde_json::from_slice(&requests[1].body).unwrap();
    assert_eq!(body["alg"], "RSA-OAEP-256");
    let value = body["value"].as_str().unwrap();
    assert!(!value.contains('=') && !value.contains('+') && !value.contains('/'), "base64url without padding: {value}");
    assert_eq!(URL_SAFE_NO_PAD.decode(value).unwrap().len(), 32);

    let sealed = keyring.encrypt(b"body", b"row");
    let reopened = Keyring::open(&vault.provider(None, TOKEN), keyring.state().clone()).await.unwrap();
    assert_eq!(reopened.decrypt(&sealed, b"row").unwrap(), b"body");
    let unwrap_path = format!("/keys/{KEY_NAME}/{}/unwrapkey?api-version=7.4", vault.version_name(0));
    assert_eq!(vault.requests().last().unwrap().path, unwrap_path);
    assert!(!format!("{provider:?}").contains(TOKEN));
}

#[tokio::test]
async fn rotation_follows_the_current_version() {
    let vault = FakeVault::start().await;
    let provider = vault.provider(None, TOKEN);
    let keyring = Keyring::create(&provider).await.unwrap();
    let sealed = keyring.encrypt(b"body", b"row");
    let before = keyring.state().clone();

    let second = vault.rotate();
    assert_eq!(provider.current_version().await.unwrap(), second);
    let (rotated, count) = keyring.rotate_kek(&provider).await.unwrap();
    assert_eq!(count, 1);
    assert_eq!(rotated.state().keys[0].wrapped.kek_version, second);

    // The first version disabled: only the rewrapped state opens.
    vault.state.lock().unwrap().versions[0].enabled = false;
    let error = Keyring::open(&provider, before).await.unwrap_err();
    assert!(
        matches!(&error, KeyError::Remote { status: 404, message, .. } if message.starts_with("KeyNotFound")),
        "{error:?}"
    );
    let reopened = Keyring::open(&provider, rotated.state().clone()).await.unwrap();
    assert_eq!(reopened.decrypt(&sealed, b"row").unwrap(), b"body");
}

#[tokio::test]
async fn a_configured_version_is_used_without_asking() {
    let vault = FakeVault::start().await;
    let first = vault.version_name(0);
    vault.rotate();
    let provider = vault.provider(Some(&first), TOKEN);
    assert_eq!(provider.current_version().await.unwrap(), first);
    let keyring = Keyring::create(&provider).await.unwrap();
    assert_eq!(keyring.state().keys[0].wrapped.kek_version, first);
    assert!(vault.requests().iter().all(|request| request.method == "POST"));
}

#[tokio::test]
async fn a_refused_ciphertext_and_a_bad_token_are_typed_errors() {
    let vault = FakeVault::start().await;
    let keyring = Keyring::create(&vault.provider(None, TOKEN)).await.unwrap();

    let mut altered = keyring.state().clone();
    altered.keys[0].wrapped.ciphertext[20] ^= 1;
    let error = Keyring::open(&vault.provider(None, TOKEN), altered).await.unwrap_err();
    assert!(
        matches!(&error, KeyError::Unwrap { reason, .. } if reason == "Key Vault: BadParameter: Bad Request"),
        "{error:?}"
    );

    let provider = vault.provider(None, "expired");
    let error = Keyring::open(&provider, keyring.state().clone()).await.unwrap_err();
    assert!(matches!(&error, KeyError::Remote { status: 401, .. }), "{error:?}");
    assert!(!error.to_string().contains("expired"));
    provider.set_token(TOKEN.into());
    assert!(Keyring::open(&provider, keyring.state().clone()).await.is_ok());
}

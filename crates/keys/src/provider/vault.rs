//! HashiCorp Vault's (or OpenBao's) transit secrets engine as the key-encryption key.
//!
//! The KEK is a transit key (`aes256-gcm96`) that never leaves Vault. Wrapping is
//! `POST /v1/<mount>/encrypt/<key>` with the data key in base64; the answer's ciphertext
//! (`vault:v3:…`) is the wrapped key, and its `vN` prefix the KEK version. Unwrapping is
//! `POST /v1/<mount>/decrypt/<key>`. Rotating the transit key (`POST …/keys/<key>/rotate`, an
//! operator's act) makes a new version; `rewrap` (`POST /v1/<mount>/rewrap/<key>`) moves a
//! wrapped key to it inside Vault, so the data key does not travel. The current version is
//! `latest_version` of `GET /v1/<mount>/keys/<key>`.
//!
//! The policy the token needs: `update` on `<mount>/encrypt/<key>`, `<mount>/decrypt/<key>` and
//! `<mount>/rewrap/<key>`, `read` on `<mount>/keys/<key>`.
//!
//! No `associated_data` is sent: Vault's `rewrap` does not take it (checked against OpenBao 2.7,
//! where a ciphertext sealed with associated data cannot be rewrapped at all), and the data key's
//! binding to its data is the data format's job, not the wrap's.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use fhirside_fetch::{Client, Response};
use serde::Deserialize;
use serde_json::json;

use super::{base_url, check_kek, check_path_segment, short, BoxFuture, KeyProvider, WrappedKey};
use crate::cipher::Dek;
use crate::error::KeyError;
use crate::zeroize::{Zeroize, Zeroizing};

/// Where the transit key is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultConfig {
    /// Vault's address, e.g. `https://vault.example.org:8200` (http only to the loopback).
    pub address: String,
    /// The transit engine's mount path, usually `transit`.
    pub mount: String,
    /// The transit key's name.
    pub key: String,
    /// Vault Enterprise's / OpenBao's namespace (`X-Vault-Namespace`), if any.
    pub namespace: Option<String>,
}

/// The transit engine as a [`KeyProvider`]. Its id is `vault-transit:<mount>/<key>`: the address
/// is left out so that Vault can move (a new DNS name, a proxy) without orphaning the data keys.
pub struct VaultTransit {
    client: Client,
    base: String,
    id: String,
    key: String,
    mount: String,
    namespace: Option<String>,
    token: Zeroizing<String>,
}

impl fmt::Debug for VaultTransit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultTransit").field("id", &self.id).field("address", &self.base).finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Envelope<T> {
    data: T,
}

#[derive(Deserialize)]
struct Sealed {
    ciphertext: String,
}

#[derive(Deserialize)]
struct Opened {
    plaintext: String,
}

#[derive(Deserialize)]
struct KeyInfo {
    latest_version: u64,
}

#[derive(Deserialize)]
struct Errors {
    #[serde(default)]
    errors: Vec<String>,
}

impl VaultTransit {
    /// A provider for `config`, authenticating with `token` (`X-Vault-Token`). Fails only on a
    /// configuration that cannot be put in a URL.
    pub fn new(client: Client, config: VaultConfig, token: String) -> Result<VaultTransit, KeyError> {
        let token = Zeroizing::new(token);
        let base = base_url("the Vault address", &config.address)?;
        for segment in config.mount.split('/') {
            check_path_segment("the transit mount", segment)?;
        }
        check_path_segment("the transit key name", &config.key)?;
        Ok(VaultTransit {
            client,
            base,
            id: format!("vault-transit:{}/{}", config.mount, config.key),
            key: config.key,
            mount: config.mount,
            namespace: config.namespace,
            token,
        })
    }

    fn url(&self, operation: &str) -> String {
        match operation {
            "keys" => format!("{}/v1/{}/keys/{}", self.base, self.mount, self.key),
            _ => format!("{}/v1/{}/{operation}/{}", self.base, self.mount, self.key),
        }
    }

    async fn call(&self, method: &str, operation: &str, body: Option<Vec<u8>>) -> Result<Response, KeyError> {
        let mut headers = vec![("X-Vault-Token", self.token.as_str())];
        if let Some(namespace) = &self.namespace {
            headers.push(("X-Vault-Namespace", namespace.as_str()));
        }
        if body.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        let url = self.url(operation);
        self.client
            .request(method, &url, &headers, body.unwrap_or_default())
            .await
            .map_err(|e| KeyError::Unreachable { kek_id: self.id.clone(), reason: e.to_string() })
    }

    /// Vault's `errors` array, or the status alone.
    fn message(response: &Response) -> String {
        match serde_json::from_slice::<Errors>(&response.body) {
            Ok(Errors { errors }) if !errors.is_empty() => short(&errors.join("; ")),
            _ => "no error message".to_owned(),
        }
    }

    fn remote(&self, response: &Response) -> KeyError {
        KeyError::Remote { kek_id: self.id.clone(), status: response.status, message: Self::message(response) }
    }

    fn invalid(&self, reason: impl Into<String>) -> KeyError {
        KeyError::InvalidResponse { kek_id: self.id.clone(), reason: reason.into() }
    }

    fn sealed(&self, response: Response) -> Result<WrappedKey, KeyError> {
        if !response.is_success() {
            return Err(self.remote(&response));
        }
        let sealed: Envelope<Sealed> =
            serde_json::from_slice(&response.body).map_err(|e| self.invalid(format!("no data.ciphertext: {e}")))?;
        let ciphertext = sealed.data.ciphertext;
        let version = version_of(&ciphertext).ok_or_else(|| self.invalid("the ciphertext has no vault:vN: prefix"))?;
        Ok(WrappedKey {
            kek_id: self.id.clone(),
            kek_version: version.to_string(),
            ciphertext: ciphertext.into_bytes(),
        })
    }

    fn wrapped_text<'a>(&self, wrapped: &'a WrappedKey) -> Result<&'a str, KeyError> {
        check_kek(&self.id, wrapped)?;
        let refused = |reason: &str| KeyError::Unwrap {
            kek_id: self.id.clone(),
            kek_version: wrapped.kek_version.clone(),
            reason: reason.to_owned(),
        };
        let text = std::str::from_utf8(&wrapped.ciphertext).map_err(|_| refused("not a Vault ciphertext"))?;
        match version_of(text) {
            Some(version) if version.to_string() == wrapped.kek_version => Ok(text),
            Some(_) => Err(refused("the ciphertext's vault:vN: prefix disagrees with the recorded version")),
            None => Err(refused("not a Vault ciphertext (no vault:vN: prefix)")),
        }
    }
}

/// The `N` of a `vault:vN:…` ciphertext.
fn version_of(ciphertext: &str) -> Option<u64> {
    let rest = ciphertext.strip_prefix("vault:v")?;
    let (digits, _) = rest.split_once(':')?;
    digits.parse().ok()
}

impl KeyProvider for VaultTransit {
    fn id(&self) -> &str {
        &self.id
    }

    fn current_version(&self) -> BoxFuture<'_, Result<String, KeyError>> {
        Box::pin(async move {
            let response = self.call("GET", "keys", None).await?;
            if !response.is_success() {
                return Err(self.remote(&response));
            }
            let info: Envelope<KeyInfo> = serde_json::from_slice(&response.body)
                .map_err(|e| self.invalid(format!("no data.latest_version: {e}")))?;
            Ok(info.data.latest_version.to_string())
        })
    }

    fn wrap<'a>(&'a self, dek: &'a Dek) -> BoxFuture<'a, Result<WrappedKey, KeyError>> {
        Box::pin(async move {
            let plaintext = Zeroizing::new(STANDARD.encode(dek.as_bytes()));
            let body = json!({ "plaintext": plaintext.as_str() }).to_string().into_bytes();
            // The body (with the data key in base64) is handed to the HTTP client, which does not
            // zero its buffers: see zeroize.rs.
            let response = self.call("POST", "encrypt", Some(body)).await?;
            self.sealed(response)
        })
    }

    fn unwrap<'a>(&'a self, wrapped: &'a WrappedKey) -> BoxFuture<'a, Result<Dek, KeyError>> {
        Box::pin(async move {
            let text = self.wrapped_text(wrapped)?;
            let body = json!({ "ciphertext": text }).to_string().into_bytes();
            let mut response = self.call("POST", "decrypt", Some(body)).await?;
            if !response.is_success() {
                // 400 is Vault refusing this ciphertext (another key of the same name, altered
                // bytes, a version below min_decryption_version); others are access or service
                // errors.
                return Err(if response.status == 400 {
                    KeyError::Unwrap {
                        kek_id: self.id.clone(),
                        kek_version: wrapped.kek_version.clone(),
                        reason: format!("Vault: {}", Self::message(&response)),
                    }
                } else {
                    self.remote(&response)
                });
            }
            let parsed = serde_json::from_slice::<Envelope<Opened>>(&response.body);
            response.body.zeroize();
            let plaintext =
                Zeroizing::new(parsed.map_err(|e| self.invalid(format!("no data.plaintext: {e}")))?.data.plaintext);
            let bytes = Zeroizing::new(
                STANDARD.decode(plaintext.as_bytes()).map_err(|_| self.invalid("data.plaintext is not base64"))?,
            );
            Dek::from_slice(&bytes)
                .ok_or_else(|| self.invalid(format!("the unwrapped key is {} bytes, not 32", bytes.len())))
        })
    }

    fn rewrap<'a>(&'a self, wrapped: &'a WrappedKey) -> BoxFuture<'a, Result<WrappedKey, KeyError>> {
        Box::pin(async move {
            let text = self.wrapped_text(wrapped)?;
            let body = json!({ "ciphertext": text }).to_string().into_bytes();
            let response = self.call("POST", "rewrap", Some(body)).await?;
            self.sealed(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::version_of;

    #[test]
    fn version_comes_from_the_prefix() {
        assert_eq!(version_of("vault:v1:abc"), Some(1));
        assert_eq!(version_of("vault:v12:abc"), Some(12));
        assert_eq!(version_of("vault:vx:abc"), None);
        assert_eq!(version_of("abc"), None);
    }
}

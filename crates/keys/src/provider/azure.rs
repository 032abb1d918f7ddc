//! Azure Key Vault's REST API as the key-encryption key: an RSA key (software or HSM) that never
//! leaves the vault, used with `RSA-OAEP-256`.
//!
//! Wrapping is `POST {vault}/keys/{name}/{version}/wrapkey?api-version=7.4` with
//! `{"alg":"RSA-OAEP-256","value":<base64url data key>}`; the answer's `value` is the wrapped key
//! and its `kid` (`{vault}/keys/{name}/{version}`) the version used. Unwrapping is `…/unwrapkey`
//! with the version recorded in the wrapped key. Without a configured version, the current one is
//! the version in the `kid` of `GET {vault}/keys/{name}` (the latest enabled version); Key Vault
//! has no rewrap, so rotation unwraps and wraps again, and the data key passes through this
//! process.
//!
//! The bearer token (audience `https://vault.azure.net`, role "Key Vault Crypto Service
//! Encryption User" or the `wrapKey`, `unwrapKey` and `get` key permissions) is the caller's to
//! obtain — a managed identity, a client secret — and to refresh with [`AzureKeyVault::set_token`].

use std::fmt;
use std::sync::RwLock;

use base64::engine::general_purpose::{URL_SAFE_NO_PAD, URL_SAFE_NO_PAD_INDIFFERENT};
use base64::Engine;
use fhirside_fetch::{Client, Response};
use serde::Deserialize;
use serde_json::json;

use super::{base_url, check_kek, check_path_segment, short, BoxFuture, KeyProvider, WrappedKey};
use crate::cipher::Dek;
use crate::error::KeyError;
use crate::zeroize::{Zeroize, Zeroizing};

/// The REST API version used.
pub const AZURE_API_VERSION: &str = "7.4";
const ALGORITHM: &str = "RSA-OAEP-256";

/// Where the key is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureKeyVaultConfig {
    /// The vault's URL, e.g. `https://contoso.vault.azure.net`.
    pub vault_url: String,
    /// The key's name.
    pub key_name: String,
    /// A version to wrap with; `None` follows the key's current version.
    pub key_version: Option<String>,
}

/// Azure Key Vault as a [`KeyProvider`]. Its id is `azure-keyvault:<vault host>/keys/<name>`.
pub struct AzureKeyVault {
    client: Client,
    base: String,
    id: String,
    name: String,
    version: Option<String>,
    token: RwLock<Zeroizing<String>>,
}

impl fmt::Debug for AzureKeyVault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureKeyVault").field("id", &self.id).field("version", &self.version).finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct KeyOperationResult {
    kid: Option<String>,
    value: String,
}

#[derive(Deserialize)]
struct KeyBundle {
    key: JsonWebKey,
}

#[derive(Deserialize)]
struct JsonWebKey {
    kid: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

impl AzureKeyVault {
    /// A provider for `config`, authenticating with the bearer `token`.
    pub fn new(client: Client, config: AzureKeyVaultConfig, token: String) -> Result<AzureKeyVault, KeyError> {
        let token = Zeroizing::new(token);
        let base = base_url("the Key Vault URL", &config.vault_url)?;
        check_path_segment("the Key Vault key name", &config.key_name)?;
        if let Some(version) = &config.key_version {
            check_path_segment("the Key Vault key version", version)?;
        }
        let host = base.split_once("://").map(|(_, rest)| rest).unwrap_or(&base);
        Ok(AzureKeyVault {
            client,
            id: format!("azure-keyvault:{host}/keys/{}", config.key_name),
            base,
            name: config.key_name,
            version: config.key_version,
            token: RwLock::new(token),
        })
    }

    /// Replaces the bearer token (they last about an hour).
    pub fn set_token(&self, token: String) {
        *self.token.write().unwrap_or_else(|e| e.into_inner()) = Zeroizing::new(token);
    }

    async fn call(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> Result<Response, KeyError> {
        let url = format!("{}/keys/{}{path}?api-version={AZURE_API_VERSION}", self.base, self.name);
        let authorization =
            Zeroizing::new(format!("Bearer {}", self.token.read().unwrap_or_else(|e| e.into_inner()).as_str()));
        let mut headers = vec![("Authorization", authorization.as_str())];
        if body.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        self.client
            .request(method, &url, &headers, body.unwrap_or_default())
            .await
            .map_err(|e| KeyError::Unreachable { kek_id: self.id.clone(), reason: e.to_string() })
    }

    fn message(response: &Response) -> String {
        match serde_json::from_slice::<ErrorBody>(&response.body) {
            Ok(ErrorBody { error }) => short(&format!("{}: {}", error.code, error.message)),
            Err(_) => "no error message".to_owned(),
        }
    }

    fn remote(&self, response: &Response) -> KeyError {
        KeyError::Remote { kek_id: self.id.clone(), status: response.status, message: Self::message(response) }
    }

    fn invalid(&self, reason: impl Into<String>) -> KeyError {
        KeyError::InvalidResponse { kek_id: self.id.clone(), reason: reason.into() }
    }

    async fn latest_version(&self) -> Result<String, KeyError> {
        let response = self.call("GET", "", None).await?;
        if !response.is_success() {
            return Err(self.remote(&response));
        }
        let bundle: KeyBundle =
            serde_json::from_slice(&response.body).map_err(|e| self.invalid(format!("no key.kid: {e}")))?;
        version_of(&bundle.key.kid).ok_or_else(|| self.invalid("key.kid names no version"))
    }
}

/// The version at the end of a key id `…/keys/{name}/{version}`.
fn version_of(kid: &str) -> Option<String> {
    let segments: Vec<&str> = kid.trim_end_matches('/').split('/').collect();
    match segments[..] {
        [.., "keys", _name, version] if !version.is_empty() => Some(version.to_owned()),
        _ => None,
    }
}

impl KeyProvider for AzureKeyVault {
    fn id(&self) -> &str {
        &self.id
    }

    fn current_version(&self) -> BoxFuture<'_, Result<String, KeyError>> {
        Box::pin(async move {
            match &self.version {
                Some(version) => Ok(version.clone()),
                None => self.latest_version().await,
            }
        })
    }

    fn wrap<'a>(&'a self, dek: &'a Dek) -> BoxFuture<'a, Result<WrappedKey, KeyError>> {
        Box::pin(async move {
            let version = self.current_version().await?;
            let value = Zeroizing::new(URL_SAFE_NO_PAD.encode(dek.as_bytes()));
            let body = json!({ "alg": ALGORITHM, "value": value.as_str() }).to_string().into_bytes();
            let response = self.call("POST", &format!("/{version}/wrapkey"), Some(body)).await?;
            if !response.is_success() {
                return Err(self.remote(&response));
            }
            let result: KeyOperationResult =
                serde_json::from_slice(&response.body).map_err(|e| self.invalid(format!("no value: {e}")))?;
            let ciphertext = URL_SAFE_NO_PAD_INDIFFERENT
                .decode(&result.value)
                .map_err(|_| self.invalid("value is not base64url"))?;
            let kek_version = result.kid.as_deref().and_then(version_of).unwrap_or(version);
            Ok(WrappedKey { kek_id: self.id.clone(), kek_version, ciphertext })
        })
    }

    fn unwrap<'a>(&'a self, wrapped: &'a WrappedKey) -> BoxFuture<'a, Result<Dek, KeyError>> {
        Box::pin(async move {
            check_kek(&self.id, wrapped)?;
            check_path_segment("the wrapped key's version", &wrapped.kek_version)?;
            let body = json!({ "alg": ALGORITHM, "value": URL_SAFE_NO_PAD.encode(&wrapped.ciphertext) })
                .to_string()
                .into_bytes();
            let mut response = self.call("POST", &format!("/{}/unwrapkey", wrapped.kek_version), Some(body)).await?;
            if !response.is_success() {
                // 400 is the vault refusing this ciphertext; 401, 403, 404 are access or a key
                // (version) that is gone.
                return Err(if response.status == 400 {
                    KeyError::Unwrap {
                        kek_id: self.id.clone(),
                        kek_version: wrapped.kek_version.clone(),
                        reason: format!("Key Vault: {}", Self::message(&response)),
                    }
                } else {
                    self.remote(&response)
                });
            }
            let parsed = serde_json::from_slice::<KeyOperationResult>(&response.body);
            response.body.zeroize();
            let value = Zeroizing::new(parsed.map_err(|e| self.invalid(format!("no value: {e}")))?.value);
            let bytes = Zeroizing::new(
                URL_SAFE_NO_PAD_INDIFFERENT
                    .decode(value.as_bytes())
                    .map_err(|_| self.invalid("value is not base64url"))?,
            );
            Dek::from_slice(&bytes)
                .ok_or_else(|| self.invalid(format!("the unwrapped key is {} bytes, not 32", bytes.len())))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::version_of;

    #[test]
    fn version_comes_from_the_key_id() {
        assert_eq!(version_of("https://v.vault.azure.net/keys/kek/0123abcd").as_deref(), Some("0123abcd"));
        assert_eq!(version_of("https://v.vault.azure.net/keys/kek"), None);
        assert_eq!(version_of("https://v.vault.azure.net/secrets/kek/0123"), None);
    }
}

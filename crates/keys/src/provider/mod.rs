//! Key-encryption keys (KEKs): where the key that wraps the data keys lives.
//!
//! A [`KeyProvider`] wraps and unwraps data keys and never hands out its own key. Local keys
//! (a file, an environment variable) are [`LocalKek`]s; remote ones ([`VaultTransit`],
//! [`AzureKeyVault`]) keep the KEK in the key service, so the data key travels to it and back
//! over HTTPS (`fhirside-fetch`) and the KEK never reaches this process.
//!
//! The trait's methods return boxed futures rather than being `async fn`s so that a server can
//! hold the provider its configuration chose as an `Arc<dyn KeyProvider>`. A provider is called
//! at start-up and on rotation, never per request.

mod azure;
mod env;
mod file;
mod local;
mod vault;

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::cipher::Dek;
use crate::error::KeyError;

pub use azure::{AzureKeyVault, AzureKeyVaultConfig, AZURE_API_VERSION};
pub use local::LocalKek;
pub use vault::{VaultConfig, VaultTransit};

/// A boxed, sendable future: what [`KeyProvider`]'s methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A data key as a KEK wrapped it: stored by the caller next to the data (in the keyring's
/// state). Not secret by itself, but useless without the KEK it names.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrappedKey {
    /// The [`KeyProvider::id`] of the KEK that wrapped it.
    pub kek_id: String,
    /// The KEK's version that wrapped it (Vault's `N` of `vault:vN:`, Azure's key version, `1`
    /// for a local key).
    pub kek_version: String,
    /// The wrapped bytes, as the provider produced them (base64 in JSON).
    #[serde(serialize_with = "to_base64", deserialize_with = "from_base64")]
    pub ciphertext: Vec<u8>,
}

impl fmt::Debug for WrappedKey {
    // Not key material, but long and meaningless in a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrappedKey")
            .field("kek_id", &self.kek_id)
            .field("kek_version", &self.kek_version)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish()
    }
}

fn to_base64<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&STANDARD.encode(bytes))
}

fn from_base64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    let text = String::deserialize(deserializer)?;
    STANDARD.decode(text).map_err(serde::de::Error::custom)
}

/// Where the key-encryption key lives. See the module docs.
pub trait KeyProvider: Send + Sync {
    /// A stable name of the KEK, written into every [`WrappedKey`] (`local:<fingerprint>`,
    /// `vault-transit:<mount>/<key>`, `azure-keyvault:<vault host>/keys/<name>`). Never secret.
    fn id(&self) -> &str;

    /// The version new wraps are made with.
    fn current_version(&self) -> BoxFuture<'_, Result<String, KeyError>>;

    /// Wraps a data key under the current version.
    fn wrap<'a>(&'a self, dek: &'a Dek) -> BoxFuture<'a, Result<WrappedKey, KeyError>>;

    /// Unwraps a data key. A key wrapped by another KEK is [`KeyError::KekMismatch`]; one this
    /// KEK refuses is [`KeyError::Unwrap`].
    fn unwrap<'a>(&'a self, wrapped: &'a WrappedKey) -> BoxFuture<'a, Result<Dek, KeyError>>;

    /// Wraps a data key again under the current version. By default it unwraps and wraps;
    /// Vault's transit engine does it inside the server, so the data key never travels.
    fn rewrap<'a>(&'a self, wrapped: &'a WrappedKey) -> BoxFuture<'a, Result<WrappedKey, KeyError>> {
        Box::pin(async move {
            let dek = self.unwrap(wrapped).await?;
            self.wrap(&dek).await
        })
    }
}

/// The mismatch error every provider gives for a key wrapped by another KEK.
pub(crate) fn check_kek(provider_id: &str, wrapped: &WrappedKey) -> Result<(), KeyError> {
    if wrapped.kek_id == provider_id {
        Ok(())
    } else {
        Err(KeyError::KekMismatch { wrapped_by: wrapped.kek_id.clone(), configured: provider_id.to_owned() })
    }
}

/// A key service's error message, cut short (it ends up in logs and start-up messages).
pub(crate) fn short(message: &str) -> String {
    const LIMIT: usize = 300;
    match message.char_indices().nth(LIMIT) {
        Some((at, _)) => format!("{}…", &message[..at]),
        None => message.to_owned(),
    }
}

/// Names of keys, mounts and versions go into URL paths: only characters that need no encoding.
pub(crate) fn check_path_segment(what: &str, value: &str) -> Result<(), KeyError> {
    let fine = !value.is_empty() && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if fine && value != "." && value != ".." {
        Ok(())
    } else {
        Err(KeyError::InvalidConfig {
            reason: format!("{what} '{value}' may hold only letters, digits, '-', '_' and '.'"),
        })
    }
}

/// A base URL without its trailing slashes; https, or http to the loopback interface (which
/// `fhirside-fetch` enforces again when it sends).
pub(crate) fn base_url(what: &str, url: &str) -> Result<String, KeyError> {
    let trimmed = url.trim_end_matches('/');
    if !(trimmed.starts_with("https://") || trimmed.starts_with("http://")) {
        return Err(KeyError::InvalidConfig { reason: format!("{what} must be an http(s) URL") });
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests;

//! A key-encryption key held in this process: 32 bytes from a file or an environment variable.
//!
//! Two subkeys are derived from it with HKDF-SHA256: one wraps data keys (AES-256-GCM, a random
//! nonce, the KEK id as associated data), one gives the key's **fingerprint**, the first 8 bytes
//! of which (hex) name the KEK: `local:<16 hex digits>`. So the same 32 bytes are the same KEK
//! whether they come from a file or a variable, and a server given the wrong key says "wrapped by
//! local:ab…, configured local:cd…" instead of a bare authentication failure. The fingerprint
//! is an HMAC output: it tells nothing about the key.
//!
//! A wrapped key is nonce (12) ‖ ciphertext (32) ‖ tag (16). A local key has one version, `1`:
//! rotating it means a new key, and `Keyring::rotate_kek` with the new provider re-wraps the data
//! keys the keyring holds (unwrapped by the old one when it was opened).

use std::fmt;

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf;

use super::{check_kek, BoxFuture, KeyProvider, WrappedKey};
use crate::cipher::{derive, fill_random, Dek, DEK_LEN};
use crate::error::KeyError;
use crate::zeroize::{Zeroize, Zeroizing};

const VERSION: &str = "1";
const NONCE_LEN: usize = 12;

/// A 32-byte key-encryption key held in memory. Built by [`LocalKek::from_file`] or
/// [`LocalKek::from_env`].
pub struct LocalKek {
    id: String,
    wrapping: LessSafeKey,
}

impl fmt::Debug for LocalKek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalKek").field("id", &self.id).finish_non_exhaustive()
    }
}

impl LocalKek {
    /// A KEK from its 32 bytes. `source` names where they came from, for errors.
    pub fn from_bytes(source: &str, bytes: &[u8]) -> Result<LocalKek, KeyError> {
        if bytes.len() != DEK_LEN {
            return Err(KeyError::KeySource {
                source: source.to_owned(),
                reason: format!("the key is {} bytes, not 32 (give 32 raw bytes or their base64)", bytes.len()),
            });
        }
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"fhirside-keys kek v1").extract(bytes);
        let fingerprint = derive(&prk, &[b"fingerprint"]);
        let id = format!("local:{}", hex(&fingerprint[..8]));
        let wrapping = derive(&prk, &[b"wrap"]);
        let wrapping = LessSafeKey::new(UnboundKey::new(&aead::AES_256_GCM, &wrapping[..]).expect("32-byte key"));
        Ok(LocalKek { id, wrapping })
    }

    /// A KEK from base64 text (standard alphabet, padding optional, surrounding white space
    /// ignored).
    pub fn from_base64(source: &str, text: &str) -> Result<LocalKek, KeyError> {
        use base64::engine::general_purpose::STANDARD_NO_PAD_INDIFFERENT;
        use base64::Engine;
        let decoded = STANDARD_NO_PAD_INDIFFERENT.decode(text.trim()).map_err(|_| KeyError::KeySource {
            source: source.to_owned(),
            reason: "not 32 raw bytes, and not base64".to_owned(),
        })?;
        let bytes = Zeroizing::new(decoded);
        LocalKek::from_bytes(source, &bytes)
    }

    fn aad(&self) -> Vec<u8> {
        let mut aad = b"fhirside-keys wrap v1\0".to_vec();
        aad.extend_from_slice(self.id.as_bytes());
        aad
    }

    fn wrap_now(&self, dek: &Dek) -> WrappedKey {
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce);
        let mut sealed = Vec::with_capacity(NONCE_LEN + DEK_LEN + 16);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(dek.as_bytes());
        let tag = self
            .wrapping
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(self.aad()),
                &mut sealed[NONCE_LEN..],
            )
            .expect("32 bytes is within AES-GCM's limit");
        sealed.extend_from_slice(tag.as_ref());
        WrappedKey { kek_id: self.id.clone(), kek_version: VERSION.to_owned(), ciphertext: sealed }
    }

    fn unwrap_now(&self, wrapped: &WrappedKey) -> Result<Dek, KeyError> {
        check_kek(&self.id, wrapped)?;
        let refused = |reason: &str| KeyError::Unwrap {
            kek_id: self.id.clone(),
            kek_version: wrapped.kek_version.clone(),
            reason: reason.to_owned(),
        };
        if wrapped.kek_version != VERSION {
            return Err(refused("a local key has only version 1"));
        }
        if wrapped.ciphertext.len() != NONCE_LEN + DEK_LEN + 16 {
            return Err(refused("the wrapped key has the wrong length"));
        }
        let (nonce, sealed) = wrapped.ciphertext.split_at(NONCE_LEN);
        let mut buffer = Zeroizing::new(sealed.to_vec());
        let nonce = Nonce::assume_unique_for_key(nonce.try_into().expect("split at NONCE_LEN"));
        match self.wrapping.open_in_place(nonce, Aad::from(self.aad()), &mut buffer[..]) {
            Ok(plaintext) => Ok(Dek::from_slice(plaintext).expect("a 60-byte wrapped key opens to 32 bytes")),
            Err(_) => {
                buffer.zeroize();
                Err(refused("the wrapped key does not authenticate under this key (altered?)"))
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl KeyProvider for LocalKek {
    fn id(&self) -> &str {
        &self.id
    }

    fn current_version(&self) -> BoxFuture<'_, Result<String, KeyError>> {
        Box::pin(async { Ok(VERSION.to_owned()) })
    }

    fn wrap<'a>(&'a self, dek: &'a Dek) -> BoxFuture<'a, Result<WrappedKey, KeyError>> {
        Box::pin(async move { Ok(self.wrap_now(dek)) })
    }

    fn unwrap<'a>(&'a self, wrapped: &'a WrappedKey) -> BoxFuture<'a, Result<Dek, KeyError>> {
        Box::pin(async move { self.unwrap_now(wrapped) })
    }
}

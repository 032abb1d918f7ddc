//! Encryption at rest of resource bodies: every version's JSON is sealed (AES-256-GCM with the
//! installation's active data key, `fhirside-keys`) as it is written and opened as it is read, in
//! both backends, when the installation has a keyring.
//!
//! The associated data is the version's identity, `Type/id/_history/version`: a ciphertext moved
//! to another row, or another version of the same resource, does not open. A stored body is
//! either JSON (an installation without encryption) or a sealed value; which one is told by its
//! first byte (`{` against the format byte of `fhirside-keys`, which is never `{`). A sealed body
//! in a store opened without its keyring, or plain JSON in one with a keyring, is an error, never
//! bytes served as they are.

use std::borrow::Cow;

use fhirside_keys::KeyringCell;

use crate::model::StoreError;

/// How this store seals bodies: a handle on the process's keyring, empty when encryption at rest
/// is off. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Seal(KeyringCell);

impl Seal {
    pub fn new(keyring: KeyringCell) -> Seal {
        Seal(keyring)
    }

    /// The body to store for a version.
    pub(crate) fn seal<'a>(&self, resource_type: &str, id: &str, version: u64, body: &'a [u8]) -> Cow<'a, [u8]> {
        match self.0.get() {
            Some(keyring) => Cow::Owned(keyring.encrypt(body, aad(resource_type, id, version).as_bytes())),
            None => Cow::Borrowed(body),
        }
    }

    /// The JSON of a stored body.
    pub(crate) fn open(
        &self,
        resource_type: &str,
        id: &str,
        version: u64,
        stored: Vec<u8>,
    ) -> Result<Vec<u8>, StoreError> {
        let sealed = stored.first().is_some_and(|&b| b != b'{');
        match (self.0.get(), sealed) {
            (None, false) => Ok(stored),
            (Some(keyring), true) => {
                keyring.decrypt(&stored, aad(resource_type, id, version).as_bytes()).map_err(|e| {
                    StoreError::Backend(format!(
                        "the body of {resource_type}/{id} version {version} does not open: {e}"
                    ))
                })
            }
            (None, true) => Err(StoreError::Backend(format!(
                "the body of {resource_type}/{id} version {version} is encrypted, and no encryption key is configured"
            ))),
            (Some(_), false) => Err(StoreError::Backend(format!(
                "the body of {resource_type}/{id} version {version} is stored unencrypted in an encrypted store"
            ))),
        }
    }
}

fn aad(resource_type: &str, id: &str, version: u64) -> String {
    format!("{resource_type}/{id}/_history/{version}")
}

#[cfg(test)]
mod tests {
    use fhirside_keys::{Keyring, KeyringCell, LocalKek};

    use super::Seal;

    fn keyring() -> Keyring {
        let kek = LocalKek::from_bytes("test", &[7u8; 32]).unwrap();
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(Keyring::create(&kek)).unwrap()
    }

    #[test]
    fn sealed_bodies_open_only_as_their_own_version() {
        let cell = KeyringCell::new();
        cell.replace(keyring());
        let seal = Seal::new(cell);
        let body = br#"{"resourceType":"Patient","id":"a","name":[{"family":"Donald"}]}"#;
        let stored = seal.seal("Patient", "a", 1, body).into_owned();
        assert!(!stored.windows(6).any(|w| w == b"Donald"));
        assert_eq!(seal.open("Patient", "a", 1, stored.clone()).unwrap(), body);
        assert!(seal.open("Patient", "a", 2, stored.clone()).is_err());
        assert!(seal.open("Patient", "b", 1, stored.clone()).is_err());
        // Plain JSON where ciphertext belongs is refused, not served.
        assert!(seal.open("Patient", "a", 1, body.to_vec()).is_err());
        // And ciphertext without the keyring.
        assert!(Seal::default().open("Patient", "a", 1, stored).is_err());
    }

    #[test]
    fn without_a_keyring_bodies_pass_through() {
        let seal = Seal::default();
        let body = br#"{"resourceType":"Patient"}"#;
        assert_eq!(&*seal.seal("Patient", "a", 1, body), body);
        assert_eq!(seal.open("Patient", "a", 1, body.to_vec()).unwrap(), body);
    }
}

//! Blind indexes: a keyed hash of a value, stored instead of the value, for equality search.
//!
//! `blind_index(purpose, value)` = HMAC-SHA256(K_purpose, value), where K_purpose is HKDF-expanded
//! from the data key with the info `blind-index` ‖ 0x00 ‖ purpose. One key per purpose (`token`,
//! `string-exact`…) so that equal bytes under two purposes give unrelated indexes: a reader of
//! the token table cannot join it to the string table to learn that a name equals an identifier.
//! The index cannot be reversed and cannot be computed without the data key, so a database
//! reader cannot test guesses (unlike a plain SHA-256, which falls to a dictionary of names or
//! medical record numbers in seconds). What it still reveals is in the crate docs.
//!
//! The value is hashed as given: normalizing it (case, accents, `system|code`) is the caller's,
//! and must be the same on writing and searching.

use std::collections::HashMap;
use std::sync::RwLock;

use ring::{hkdf, hmac};

use crate::cipher::derive;

/// One blind index: 32 bytes.
pub type BlindIndex = [u8; 32];

/// The per-purpose HMAC keys of one data key, derived on first use and kept (a server has a
/// handful of purposes, and deriving costs two HMACs, more than the index itself).
pub(crate) struct BlindKeys {
    prk: hkdf::Prk,
    by_purpose: RwLock<HashMap<String, hmac::Key>>,
}

impl BlindKeys {
    pub fn new(prk: hkdf::Prk) -> BlindKeys {
        BlindKeys { prk, by_purpose: RwLock::new(HashMap::new()) }
    }

    pub fn index(&self, purpose: &str, value: &[u8]) -> BlindIndex {
        // A poisoned lock only means another thread panicked while inserting a derived key; the
        // map is still valid.
        if let Some(key) = self.by_purpose.read().unwrap_or_else(|e| e.into_inner()).get(purpose) {
            return sign(key, value);
        }
        let key = hmac::Key::new(hmac::HMAC_SHA256, &derive(&self.prk, &[b"blind-index\0", purpose.as_bytes()])[..]);
        let index = sign(&key, value);
        self.by_purpose.write().unwrap_or_else(|e| e.into_inner()).insert(purpose.to_owned(), key);
        index
    }
}

fn sign(key: &hmac::Key, value: &[u8]) -> BlindIndex {
    hmac::sign(key, value).as_ref().try_into().expect("HMAC-SHA256 is 32 bytes")
}

#[cfg(test)]
mod tests {
    use ring::{hkdf, hmac};

    use crate::cipher::{DataKey, Dek};
    use crate::format::DekId;

    fn data_key(byte: u8) -> DataKey {
        DataKey::new(DekId(1), Dek::from_slice(&[byte; 32]).unwrap())
    }

    #[test]
    fn stable_for_a_key_and_a_purpose() {
        let first = data_key(1).blind.index("token", b"http://hospital.example/mrn|12345");
        // Another DataKey from the same bytes: nothing depends on the cache or on chance.
        let again = data_key(1).blind.index("token", b"http://hospital.example/mrn|12345");
        let cached = data_key(1);
        cached.blind.index("token", b"warm the cache");
        assert_eq!(first, again);
        assert_eq!(first, cached.blind.index("token", b"http://hospital.example/mrn|12345"));
    }

    #[test]
    fn separate_per_purpose_value_and_key() {
        let key = data_key(1);
        let index = key.blind.index("token", b"12345");
        assert_ne!(index, key.blind.index("string-exact", b"12345"));
        assert_ne!(index, key.blind.index("token", b"12346"));
        assert_ne!(index, data_key(2).blind.index("token", b"12345"));
    }

    #[test]
    fn is_the_documented_construction() {
        // Recomputed from the module docs with ring's primitives: HKDF-SHA256 (salt
        // "fhirside-keys v1", info "blind-index" 0x00 purpose) then HMAC-SHA256 of the value.
        // Stored indexes depend on this never changing silently.
        let dek = [1u8; 32];
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"fhirside-keys v1").extract(&dek);
        let okm = prk.expand(&[b"blind-index\0", b"token"], hkdf::HKDF_SHA256).unwrap();
        let mut purpose_key = [0u8; 32];
        okm.fill(&mut purpose_key).unwrap();
        let expected = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &purpose_key), b"12345");
        assert_eq!(&data_key(1).blind.index("token", b"12345")[..], expected.as_ref());
    }
}

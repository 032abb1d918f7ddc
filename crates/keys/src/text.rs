//! Sealed text: a value sealed by the keyring and kept where text goes (a text column, a JSON
//! string, a field of an audit record), as `sealed:` followed by the ciphertext in base64.
//!
//! The prefix lets a reader tell a sealed value from one written before encryption was on, or
//! by a part that leaves it readable; base64 of a ciphertext never begins with it.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::error::CipherError;
use crate::keyring::Keyring;

const PREFIX: &str = "sealed:";

impl Keyring {
    /// `text` sealed with the active data key, bound to `aad` (what the value belongs to).
    pub fn seal_text(&self, text: &str, aad: &str) -> String {
        format!("{PREFIX}{}", STANDARD.encode(self.encrypt(text.as_bytes(), aad.as_bytes())))
    }

    /// The text of a value [`seal_text`](Self::seal_text) made; `None` when `stored` is not
    /// sealed text at all.
    pub fn open_text(&self, stored: &str, aad: &str) -> Option<Result<String, CipherError>> {
        let encoded = stored.strip_prefix(PREFIX)?;
        let Ok(sealed) = STANDARD.decode(encoded) else {
            return Some(Err(CipherError::Truncated { len: encoded.len() }));
        };
        Some(self.decrypt(&sealed, aad.as_bytes()).map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
    }
}

/// Whether `stored` is sealed text (it can only be opened with a keyring).
pub fn is_sealed_text(stored: &str) -> bool {
    stored.starts_with(PREFIX)
}

#[cfg(test)]
mod tests {
    use crate::{Keyring, LocalKek};

    #[test]
    fn sealed_text_opens_with_its_associated_data_only() {
        let kek = LocalKek::from_bytes("test", &[4u8; 32]).unwrap();
        let keyring =
            tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(Keyring::create(&kek)).unwrap();
        let sealed = keyring.seal_text("Patient?name=Donaldson", "audit/RequestUri/1");
        assert!(super::is_sealed_text(&sealed) && !sealed.contains("Donaldson"));
        assert_eq!(keyring.open_text(&sealed, "audit/RequestUri/1").unwrap().unwrap(), "Patient?name=Donaldson");
        assert!(keyring.open_text(&sealed, "audit/RequestUri/2").unwrap().is_err());
        assert!(keyring.open_text("Patient?name=x", "a").is_none());
        assert!(keyring.open_text("sealed:@@@", "a").unwrap().is_err());
    }
}

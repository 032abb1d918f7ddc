//! The ciphertext format: what a stored encrypted value looks like, byte by byte.
//!
//! ```text
//! offset  size    field
//! 0       1       format   0x01 randomized AES-256-GCM, 0x02 deterministic AES-256-GCM (SIV-style)
//! 1       4       DEK id   big-endian: which data key of the keyring opens it
//! 5       12      nonce    0x01: random; 0x02: first 96 bits of HMAC-SHA256(siv key, input)
//! 17      n + 16  ciphertext of the n plaintext bytes, then the 16-byte GCM tag
//! ```
//!
//! A ciphertext is 33 bytes longer than its plaintext. The GCM associated data is the 5-byte
//! header followed by the caller's associated data, so neither the format byte nor the DEK id
//! can be changed without the tag failing.
//!
//! Why this shape:
//! - the **format byte** first, so a reader dispatches before parsing anything else and a later
//!   format (another AEAD, compression before encryption) is a new byte, not a migration. `0x00`
//!   is reserved so that zero-filled bytes are never a ciphertext; format bytes are control
//!   characters that no JSON text starts with (not `{`, `[`, nor JSON's white space `0x09`,
//!   `0x0a`, `0x0d`, `0x20`), so a plaintext body is never mistaken for a ciphertext, which lets
//!   a store be encrypted row by row while it serves. New formats must keep to that;
//! - the **DEK id** so that data written before a data-key rotation still opens: the keyring
//!   keeps old keys for reading. Four bytes, not sixteen: a keyring holds a handful of keys, and
//!   the id is repeated in every row;
//! - the **nonce** stored, not derived from the row, so that the same plaintext in the same row
//!   written twice gives two unrelated ciphertexts (format 0x01).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::CipherError;

/// Randomized AES-256-GCM: a random nonce per message.
pub const FORMAT_RANDOMIZED: u8 = 0x01;
/// Deterministic AES-256-GCM: the nonce is a synthetic IV computed from the input (see
/// [`crate::Keyring::encrypt_deterministic`]).
pub const FORMAT_DETERMINISTIC: u8 = 0x02;

pub(crate) const HEADER_LEN: usize = 1 + 4;
pub(crate) const NONCE_LEN: usize = 12;
pub(crate) const TAG_LEN: usize = 16;
/// The length of a ciphertext of an empty plaintext.
pub const OVERHEAD: usize = HEADER_LEN + NONCE_LEN + TAG_LEN;

/// The id of a data key, written in every ciphertext it seals. Shown and serialized as eight hex
/// digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DekId(pub u32);

impl fmt::Display for DekId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

impl fmt::Debug for DekId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DekId({self})")
    }
}

impl std::str::FromStr for DekId {
    type Err = String;
    fn from_str(s: &str) -> Result<DekId, String> {
        if s.len() != 8 {
            return Err(format!("a data key id is 8 hex digits, not '{s}'"));
        }
        u32::from_str_radix(s, 16).map(DekId).map_err(|_| format!("a data key id is 8 hex digits, not '{s}'"))
    }
}

impl Serialize for DekId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DekId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<DekId, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The parts of a ciphertext, borrowed from it.
pub(crate) struct Parsed<'a> {
    pub format: u8,
    pub dek_id: DekId,
    pub header: &'a [u8],
    pub nonce: [u8; NONCE_LEN],
    /// Ciphertext then tag.
    pub sealed: &'a [u8],
}

/// The DEK id a ciphertext names, without opening it (e.g. to count what a re-encryption job
/// still has to do).
pub fn dek_id_of(ciphertext: &[u8]) -> Result<DekId, CipherError> {
    parse(ciphertext).map(|parsed| parsed.dek_id)
}

pub(crate) fn parse(ciphertext: &[u8]) -> Result<Parsed<'_>, CipherError> {
    let Some(&format) = ciphertext.first() else {
        return Err(CipherError::Truncated { len: 0 });
    };
    if format != FORMAT_RANDOMIZED && format != FORMAT_DETERMINISTIC {
        return Err(CipherError::UnknownFormat { format });
    }
    if ciphertext.len() < OVERHEAD {
        return Err(CipherError::Truncated { len: ciphertext.len() });
    }
    let (header, rest) = ciphertext.split_at(HEADER_LEN);
    let (nonce, sealed) = rest.split_at(NONCE_LEN);
    Ok(Parsed {
        format,
        dek_id: DekId(u32::from_be_bytes([header[1], header[2], header[3], header[4]])),
        header,
        nonce: nonce.try_into().expect("split at NONCE_LEN"),
        sealed,
    })
}

pub(crate) fn header(format: u8, dek_id: DekId) -> [u8; HEADER_LEN] {
    let id = dek_id.0.to_be_bytes();
    [format, id[0], id[1], id[2], id[3]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_reads_the_header_and_refuses_what_is_not_a_ciphertext() {
        let mut bytes = header(FORMAT_RANDOMIZED, DekId(0x0102_0304)).to_vec();
        bytes.extend([9u8; NONCE_LEN]);
        bytes.extend([0u8; TAG_LEN]);
        let parsed = parse(&bytes).unwrap();
        assert_eq!(parsed.format, FORMAT_RANDOMIZED);
        assert_eq!(parsed.dek_id, DekId(0x0102_0304));
        assert_eq!(parsed.nonce, [9u8; NONCE_LEN]);
        assert_eq!(parsed.sealed.len(), TAG_LEN);

        assert_eq!(parse(&bytes[..OVERHEAD - 1]).err(), Some(CipherError::Truncated { len: OVERHEAD - 1 }));
        assert_eq!(parse(b"").err(), Some(CipherError::Truncated { len: 0 }));
        assert_eq!(parse(br#"{"resourceType":"Patient"}"#).err(), Some(CipherError::UnknownFormat { format: b'{' }));
        assert_eq!(parse(&[0u8; 40]).err(), Some(CipherError::UnknownFormat { format: 0 }));
    }

    #[test]
    fn dek_ids_are_eight_hex_digits() {
        let id = DekId(0xdead_beef);
        assert_eq!(id.to_string(), "deadbeef");
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"deadbeef\"");
        assert_eq!(serde_json::from_str::<DekId>("\"deadbeef\"").unwrap(), id);
        assert!(serde_json::from_str::<DekId>("\"beef\"").is_err());
        assert!("xyzxyzxy".parse::<DekId>().is_err());
    }
}

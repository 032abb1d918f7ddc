//! Data keys and what they do: AES-256-GCM sealing of values, randomized or deterministic.
//!
//! A data key (DEK) is never used directly. HKDF-SHA256 (salt `fhirside-keys v1`) derives one
//! subkey per use, so that no key serves two algorithms and a subkey that leaked would not give
//! the others: `data` (randomized AES-256-GCM), `deterministic-siv` (HMAC-SHA256 computing the
//! synthetic IV), `deterministic-enc` (AES-256-GCM under that IV) and, per purpose,
//! `blind-index` (see `blind.rs`). Deriving happens once, when a keyring is opened.
//!
//! **Randomized** (format 0x01): a random 96-bit nonce per message from the operating system.
//! Random nonces under one key stay safe up to about 2³² messages (NIST SP 800-38D); a keyring
//! should get a new data key long before (yearly, or per a few hundred million writes).
//!
//! **Deterministic** (format 0x02): ring has no AES-GCM-SIV, so the nonce is a synthetic IV in
//! the manner of SIV (RFC 5297) — the first 96 bits of HMAC-SHA256(siv key, header ‖ len(purpose)
//! ‖ purpose ‖ plaintext) — and the value is sealed with AES-256-GCM under a separate key with that
//! nonce and the purpose as associated data. Equal (purpose, plaintext) give equal ciphertexts,
//! which is the point; a nonce is reused only for an equal input, which gives an equal ciphertext
//! and reveals nothing more. Two different inputs share a nonce with probability about
//! n²/2⁹⁷ for n values, the same bound as random nonces. Opening checks the tag and then that
//! the nonce is the synthetic IV of what it opened.

use std::fmt;

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use crate::blind::BlindKeys;
use crate::error::CipherError;
use crate::format::{self, DekId, Parsed, FORMAT_DETERMINISTIC, FORMAT_RANDOMIZED, HEADER_LEN, NONCE_LEN, OVERHEAD};
use crate::zeroize::{Zeroize, Zeroizing};

/// A data key's length: 256 bits.
pub const DEK_LEN: usize = 32;

const HKDF_SALT: &[u8] = b"fhirside-keys v1";

/// A data-encryption key: 256 random bits, zeroed when dropped, never shown. Only a
/// [`KeyProvider`](crate::KeyProvider) sees its bytes, to wrap them.
pub struct Dek(Zeroizing<[u8; DEK_LEN]>);

impl Dek {
    /// A new random data key.
    pub fn generate() -> Dek {
        let mut bytes = Zeroizing::new([0u8; DEK_LEN]);
        fill_random(&mut bytes[..]);
        Dek(bytes)
    }

    /// A data key from unwrapped bytes; `None` unless there are exactly 32.
    pub fn from_slice(bytes: &[u8]) -> Option<Dek> {
        let array: [u8; DEK_LEN] = bytes.try_into().ok()?;
        Some(Dek(Zeroizing::new(array)))
    }

    /// The key's bytes, for a key provider to wrap.
    pub fn as_bytes(&self) -> &[u8; DEK_LEN] {
        &self.0
    }
}

impl fmt::Debug for Dek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Dek(<redacted>)")
    }
}

pub(crate) fn fill_random(out: &mut [u8]) {
    // The operating system's generator failing is not a condition a server can carry on from.
    SystemRandom::new().fill(out).expect("the operating system's random number generator failed");
}

/// The length argument ring's HKDF wants.
struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF-expand of `prk` for `info` into 32 bytes.
pub(crate) fn derive(prk: &hkdf::Prk, info: &[&[u8]]) -> Zeroizing<[u8; 32]> {
    let mut out = Zeroizing::new([0u8; 32]);
    prk.expand(info, Len(32)).and_then(|okm| okm.fill(&mut out[..])).expect("32 bytes is within HKDF's limit");
    out
}

fn gcm_key(bytes: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&aead::AES_256_GCM, bytes).expect("32 bytes is an AES-256 key"))
}

/// A data key with its derived subkeys, as a keyring holds it.
pub(crate) struct DataKey {
    pub id: DekId,
    pub dek: Dek,
    data: LessSafeKey,
    siv: hmac::Key,
    deterministic: LessSafeKey,
    pub blind: BlindKeys,
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKey").field("id", &self.id).finish_non_exhaustive()
    }
}

impl DataKey {
    pub fn new(id: DekId, dek: Dek) -> DataKey {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT).extract(dek.as_bytes());
        let data = gcm_key(&derive(&prk, &[b"data"]));
        let siv = hmac::Key::new(hmac::HMAC_SHA256, &derive(&prk, &[b"deterministic-siv"])[..]);
        let deterministic = gcm_key(&derive(&prk, &[b"deterministic-enc"]));
        DataKey { id, dek, data, siv, deterministic, blind: BlindKeys::new(prk) }
    }

    /// Format 0x01: a random nonce.
    pub fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce);
        seal(&self.data, format::header(FORMAT_RANDOMIZED, self.id), nonce, aad, plaintext)
    }

    /// Format 0x02: the synthetic IV of (purpose, plaintext); the purpose is the associated data.
    pub fn encrypt_deterministic(&self, purpose: &str, plaintext: &[u8]) -> Vec<u8> {
        let header = format::header(FORMAT_DETERMINISTIC, self.id);
        let nonce = self.synthetic_iv(&header, purpose.as_bytes(), plaintext);
        seal(&self.deterministic, header, nonce, purpose.as_bytes(), plaintext)
    }

    fn synthetic_iv(&self, header: &[u8], purpose: &[u8], plaintext: &[u8]) -> [u8; NONCE_LEN] {
        // The purpose's length first, so that (purpose, plaintext) splits cannot collide.
        let mut context = hmac::Context::with_key(&self.siv);
        context.update(header);
        context.update(&(purpose.len() as u64).to_be_bytes());
        context.update(purpose);
        context.update(plaintext);
        let tag = context.sign();
        tag.as_ref()[..NONCE_LEN].try_into().expect("HMAC-SHA256 is 32 bytes")
    }

    /// Opens a parsed ciphertext that names this key.
    pub fn decrypt(&self, parsed: &Parsed<'_>, aad: &[u8]) -> Result<Vec<u8>, CipherError> {
        let failed = CipherError::Authentication { dek_id: self.id };
        let key = match parsed.format {
            FORMAT_RANDOMIZED => &self.data,
            FORMAT_DETERMINISTIC => &self.deterministic,
            format => return Err(CipherError::UnknownFormat { format }),
        };
        let mut buffer = parsed.sealed.to_vec();
        let opened =
            key.open_in_place(Nonce::assume_unique_for_key(parsed.nonce), gcm_aad(parsed.header, aad), &mut buffer);
        let len = match opened {
            Ok(plaintext) => plaintext.len(),
            Err(_) => {
                // Whatever ring left in the buffer did not authenticate: it must not linger.
                buffer.zeroize();
                return Err(failed);
            }
        };
        buffer.truncate(len);
        if parsed.format == FORMAT_DETERMINISTIC {
            let expected = self.synthetic_iv(parsed.header, aad, &buffer);
            if !constant_time_eq(&expected, &parsed.nonce) {
                buffer.zeroize();
                return Err(failed);
            }
        }
        Ok(buffer)
    }
}

fn gcm_aad(header: &[u8], aad: &[u8]) -> Aad<Vec<u8>> {
    let mut bytes = Vec::with_capacity(header.len() + aad.len());
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(aad);
    Aad::from(bytes)
}

fn seal(key: &LessSafeKey, header: [u8; HEADER_LEN], nonce: [u8; NONCE_LEN], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            gcm_aad(&header, aad),
            &mut out[HEADER_LEN + NONCE_LEN..],
        )
        .expect("a value within AES-GCM's 64 GiB limit");
    out.extend_from_slice(tag.as_ref());
    out
}

/// Compares without an early exit, so the time taken does not say where two values differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

#[cfg(test)]
mod tests;

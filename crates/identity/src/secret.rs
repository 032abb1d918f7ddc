//! Client secrets, passwords and one-time codes: generation and hashing.
//!
//! Secrets and passwords are stored only as PBKDF2-HMAC-SHA256 hashes (600,000 iterations, the
//! OWASP recommendation), so a copy of the database does not reveal them. High-entropy values the
//! authority itself generates (authorization codes, refresh tokens) are stored as plain SHA-256:
//! they cannot be guessed, so a slow hash would add cost and no safety.

use std::num::NonZeroU32;

use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, pbkdf2};

use crate::b64;

const ITERATIONS: u32 = 600_000;
const SCHEME: &str = "pbkdf2-sha256";

/// `n` random bytes from the operating system.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut bytes = vec![0; n];
    SystemRandom::new().fill(&mut bytes).expect("the operating system's random source failed");
    bytes
}

/// A new client secret in Entra's shape: 40 characters from a URL-safe alphabet with a `~`, whose
/// first three characters are the hint shown in listings.
pub fn new_client_secret() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.";
    let bytes = random_bytes(37);
    let mut secret = String::with_capacity(40);
    for (i, b) in bytes.iter().enumerate() {
        if i == 3 {
            secret.push_str("8Q~");
        }
        secret.push(ALPHABET[*b as usize % ALPHABET.len()] as char);
    }
    secret
}

/// An opaque, unguessable token (authorization codes, refresh tokens): 32 random bytes.
pub fn new_opaque_token() -> String {
    b64::encode(random_bytes(32))
}

/// The slow hash of a secret or password, with its parameters: `pbkdf2-sha256$<iterations>$<salt>$<hash>`.
pub fn hash(secret: &str) -> String {
    hash_with(secret, ITERATIONS)
}

fn hash_with(secret: &str, iterations: u32) -> String {
    let salt = random_bytes(16);
    let mut out = [0u8; 32];
    let rounds = NonZeroU32::new(iterations).expect("iterations > 0");
    pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, rounds, &salt, secret.as_bytes(), &mut out);
    format!("{SCHEME}${iterations}${}${}", b64::encode(salt), b64::encode(out))
}

/// Whether `secret` matches a stored hash (in constant time).
pub fn verify(secret: &str, stored: &str) -> bool {
    let mut parts = stored.split('$');
    let (Some(SCHEME), Some(iterations), Some(salt), Some(expected), None) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let (Some(rounds), Some(salt), Some(expected)) =
        (iterations.parse().ok().and_then(NonZeroU32::new), b64::decode(salt), b64::decode(expected))
    else {
        return false;
    };
    pbkdf2::verify(pbkdf2::PBKDF2_HMAC_SHA256, rounds, &salt, secret.as_bytes(), &expected).is_ok()
}

/// SHA-256 of a high-entropy value, base64url: how codes and refresh tokens are looked up.
pub fn fast_hash(value: &str) -> String {
    b64::encode(digest::digest(&digest::SHA256, value.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_only_their_secret() {
        let stored = hash_with("correct horse", 1000);
        assert!(verify("correct horse", &stored));
        assert!(!verify("correct horsE", &stored));
        assert!(!verify("correct horse", "plain"));
        assert_ne!(hash_with("a", 1000), hash_with("a", 1000), "salted");
    }

    #[test]
    fn client_secrets_look_like_entras() {
        let secret = new_client_secret();
        assert_eq!(secret.len(), 40);
        assert_eq!(&secret[3..6], "8Q~");
        assert_ne!(secret, new_client_secret());
    }
}

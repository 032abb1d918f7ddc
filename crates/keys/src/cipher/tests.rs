use std::collections::HashSet;

use super::*;
use crate::format::{parse, OVERHEAD};

fn data_key(id: u32, byte: u8) -> DataKey {
    DataKey::new(DekId(id), Dek::from_slice(&[byte; DEK_LEN]).unwrap())
}

fn open(key: &DataKey, ciphertext: &[u8], aad: &[u8]) -> Result<Vec<u8>, CipherError> {
    key.decrypt(&parse(ciphertext)?, aad)
}

#[test]
fn randomized_round_trips_at_every_size() {
    let key = data_key(7, 1);
    for len in [0, 1, 15, 16, 17, 1024, 8192, 100_000] {
        let plaintext: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        let sealed = key.encrypt(&plaintext, b"Patient/1/_history/1");
        assert_eq!(sealed.len(), plaintext.len() + OVERHEAD);
        assert_eq!(sealed[0], FORMAT_RANDOMIZED);
        assert_eq!(&sealed[1..5], &7u32.to_be_bytes());
        assert_eq!(open(&key, &sealed, b"Patient/1/_history/1").unwrap(), plaintext);
    }
}

#[test]
fn the_plaintext_does_not_appear_in_the_ciphertext() {
    let key = data_key(7, 1);
    let sealed = key.encrypt(b"Chalmers Peter James", b"row");
    assert!(!sealed.windows(8).any(|w| w == b"Chalmers"));
}

#[test]
fn every_flipped_bit_is_refused() {
    let key = data_key(7, 1);
    let sealed = key.encrypt(b"{\"resourceType\":\"Patient\"}", b"row");
    for byte in 0..sealed.len() {
        for bit in 0..8 {
            let mut altered = sealed.clone();
            altered[byte] ^= 1 << bit;
            let result = open(&key, &altered, b"row");
            assert!(
                matches!(result, Err(CipherError::Authentication { .. }) | Err(CipherError::UnknownFormat { .. })),
                "byte {byte} bit {bit}: {result:?}"
            );
        }
    }
}

#[test]
fn another_associated_data_is_refused() {
    let key = data_key(7, 1);
    let sealed = key.encrypt(b"secret", b"Patient/1/_history/1");
    assert_eq!(open(&key, &sealed, b"Patient/2/_history/1"), Err(CipherError::Authentication { dek_id: DekId(7) }));
    assert_eq!(open(&key, &sealed, b""), Err(CipherError::Authentication { dek_id: DekId(7) }));
}

#[test]
fn a_truncated_ciphertext_is_refused() {
    let key = data_key(7, 1);
    let sealed = key.encrypt(b"secret", b"row");
    for len in 0..sealed.len() {
        let result = open(&key, &sealed[..len], b"row");
        match len {
            0..OVERHEAD => assert_eq!(result, Err(CipherError::Truncated { len })),
            _ => assert_eq!(result, Err(CipherError::Authentication { dek_id: DekId(7) })),
        }
    }
    let mut longer = sealed.clone();
    longer.push(0);
    assert_eq!(open(&key, &longer, b"row"), Err(CipherError::Authentication { dek_id: DekId(7) }));
}

#[test]
fn another_key_with_the_same_id_is_refused() {
    let sealed = data_key(7, 1).encrypt(b"secret", b"row");
    assert_eq!(open(&data_key(7, 2), &sealed, b"row"), Err(CipherError::Authentication { dek_id: DekId(7) }));
}

#[test]
fn nonces_do_not_repeat() {
    let key = data_key(7, 1);
    let mut nonces = HashSet::new();
    for _ in 0..200_000 {
        let sealed = key.encrypt(b"same plaintext", b"same row");
        assert!(nonces.insert(sealed[5..17].to_vec()), "a nonce repeated after {} messages", nonces.len());
    }
}

#[test]
fn deterministic_is_equal_for_equal_inputs_only() {
    let key = data_key(7, 1);
    let a = key.encrypt_deterministic("identifier", b"http://hospital.example/mrn|12345");
    assert_eq!(a, key.encrypt_deterministic("identifier", b"http://hospital.example/mrn|12345"));
    assert_eq!(a[0], FORMAT_DETERMINISTIC);
    assert_ne!(a, key.encrypt_deterministic("identifier", b"http://hospital.example/mrn|12346"));
    assert_ne!(a, key.encrypt_deterministic("name", b"http://hospital.example/mrn|12345"));
    assert_ne!(a, data_key(7, 2).encrypt_deterministic("identifier", b"http://hospital.example/mrn|12345"));
    // The purpose's length is framed: ("ab", "c") and ("a", "bc") differ.
    assert_ne!(key.encrypt_deterministic("ab", b"c")[5..17], key.encrypt_deterministic("a", b"bc")[5..17]);
    // It is not the randomized format under another name.
    assert_ne!(a[5..], key.encrypt(b"http://hospital.example/mrn|12345", b"identifier")[5..]);
}

#[test]
fn deterministic_opens_with_its_purpose_only() {
    let key = data_key(7, 1);
    let sealed = key.encrypt_deterministic("identifier", b"12345");
    assert_eq!(open(&key, &sealed, b"identifier").unwrap(), b"12345");
    assert_eq!(open(&key, &sealed, b"name"), Err(CipherError::Authentication { dek_id: DekId(7) }));
    let mut altered = sealed.clone();
    altered[20] ^= 1;
    assert_eq!(open(&key, &altered, b"identifier"), Err(CipherError::Authentication { dek_id: DekId(7) }));
}

#[test]
fn deterministic_checks_the_synthetic_iv() {
    // A value sealed under the deterministic key with a nonce that is not its synthetic IV
    // authenticates under GCM, and must still be refused.
    let key = data_key(7, 1);
    let header = format::header(FORMAT_DETERMINISTIC, DekId(7));
    let forged = seal(&key.deterministic, header, [3u8; NONCE_LEN], b"identifier", b"12345");
    assert_eq!(open(&key, &forged, b"identifier"), Err(CipherError::Authentication { dek_id: DekId(7) }));
}

#[test]
fn constant_time_eq_compares() {
    assert!(constant_time_eq(b"abc", b"abc"));
    assert!(!constant_time_eq(b"abc", b"abd"));
    assert!(!constant_time_eq(b"abc", b"ab"));
}

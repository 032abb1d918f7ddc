//! The hash of a record (see the crate documentation for the definition).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::digest::{Context, SHA256};

/// The end of a canonical line: the `Hash` member, empty.
pub(crate) const EMPTY_HASH_MEMBER: &[u8] = br#""Hash":""}"#;

/// Appends to `buf` the stored line (without its newline) of the record whose line without the
/// chain members is `head` (it ends with the comma before `"Sequence"`), chained after
/// `previous_hash`; returns its hash.
pub(crate) fn append_line(buf: &mut Vec<u8>, head: &[u8], sequence: u64, previous_hash: &str) -> String {
    let start = buf.len();
    buf.extend_from_slice(head);
    buf.extend_from_slice(br#""Sequence":"#);
    push_decimal(buf, sequence);
    buf.extend_from_slice(br#","PreviousHash":""#);
    buf.extend_from_slice(previous_hash.as_bytes());
    buf.extend_from_slice(br#"","#);
    buf.extend_from_slice(EMPTY_HASH_MEMBER);
    let hash = hash(previous_hash, &[&buf[start..]]);
    buf.truncate(buf.len() - 2);
    buf.extend_from_slice(hash.as_bytes());
    buf.extend_from_slice(b"\"}");
    hash
}

/// Appends `n` in decimal (what `write!` would, without the formatting machinery: this runs for
/// every record).
pub(crate) fn push_decimal(buf: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[at..]);
}

/// `base64url(SHA-256(previous_hash + "\n" + canonical))`, the canonical line given in parts.
pub(crate) fn hash(previous_hash: &str, canonical: &[&[u8]]) -> String {
    let mut context = Context::new(&SHA256);
    context.update(previous_hash.as_bytes());
    context.update(b"\n");
    for part in canonical {
        context.update(part);
    }
    URL_SAFE_NO_PAD.encode(context.finish().as_ref())
}

/// Splits a stored line (without its newline) into the part before the `Hash` value and that value:
/// the line must end with `"Hash":"<value>"}`, the value free of quotes and backslashes.
/// The canonical line is then the first part followed by `"}`.
pub(crate) fn split_hash(line: &[u8]) -> Option<(&[u8], &[u8])> {
    const KEY: &[u8] = br#""Hash":""#;
    let body = line.strip_suffix(b"\"}")?;
    let start = body.windows(KEY.len()).rposition(|w| w == KEY)? + KEY.len();
    let value = &body[start..];
    if value.iter().any(|&b| b == b'"' || b == b'\\') {
        return None;
    }
    Some((&body[..start], value))
}

/// The hash of a stored line, recomputed from its bytes, with the record's `previous_hash`;
/// `None` when the line does not end with its `Hash` member.
pub(crate) fn rehash<'a>(previous_hash: &str, line: &'a [u8]) -> Option<(String, &'a [u8])> {
    let (head, stored) = split_hash(line)?;
    Some((hash(previous_hash, &[head, b"\"}"]), stored))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_base64url_sha256_of_previous_newline_line() {
        // SHA-256("\n{}") computed independently (python3 hashlib).
        let h = hash("", &[b"{}"]);
        assert_eq!(h, "oGLdSVK5NeQw1AnEpeXNdg6HgeMgDVx-EqIy3duopSg");
        assert_eq!(h, hash("", &[b"{", b"}"]));
        assert_ne!(h, hash("x", &[b"{}"]));
        let line = br#"{"A":1,"Hash":"abc"}"#;
        let (head, value) = split_hash(line).unwrap();
        assert_eq!(head, br#"{"A":1,"Hash":""#);
        assert_eq!(value, b"abc");
        assert!(split_hash(br#"{"A":1,"Hash":"a\"bc"}"#).is_none());
        assert!(split_hash(br#"{"Hash":"abc","A":1}"#).is_none());
        let (rehashed, _) = rehash("p", line).unwrap();
        for n in [0, 7, 10, 99, 1_000_001, u64::MAX] {
            let mut buf = b"x".to_vec();
            push_decimal(&mut buf, n);
            assert_eq!(buf, format!("x{n}").into_bytes());
        }
        assert_eq!(rehashed, hash("p", &[br#"{"A":1,"Hash":""}"#]));
    }
}

//! The hash of a record (see the crate documentation for the definition).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::digest::{Context, SHA256};

/// The end of a canonical line: the `Hash` member, empty.
pub(crate) const EMPTY_HASH_MEMBER: &[u8] = br#""Hash":""}"#;

/// The chain's last record: its sequence number (0 before the first) and hash (empty before it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct End {
    pub(crate) sequence: u64,
    pub(crate) hash: String,
}

/// Appends to `buf` the stored line (without its newline) of the record whose line without the
/// chain members is `head` (it ends with the comma before `"Sequence"`), chained after
/// `previous_hash`; returns its hash.
pub(crate) fn append_line(buf: &mut Vec<u8>, head: &[u8], sequence: u64, previous_hash: &str) -> String {
    let start = buf.len();
    buf.extend_from_slice(head);
    push_sequence(buf, sequence);
    finish_line(buf, start, previous_hash)
}

/// Appends the `Sequence` member (without a comma after it): a head followed by this is a
/// journal entry, a line that waits for the rest of its chain members ([`append_entry`]).
pub(crate) fn push_sequence(buf: &mut Vec<u8>, sequence: u64) {
    buf.extend_from_slice(br#""Sequence":"#);
    push_decimal(buf, sequence);
}

/// Appends to `buf` the stored line (without its newline) of a journal entry (a head followed by
/// its `Sequence` member), chained after `previous_hash`; returns its hash.
pub(crate) fn append_entry(buf: &mut Vec<u8>, entry: &[u8], previous_hash: &str) -> String {
    let start = buf.len();
    buf.extend_from_slice(entry);
    finish_line(buf, start, previous_hash)
}

/// The sequence number a journal entry ends with; `None` if it does not end with one.
pub(crate) fn entry_sequence(entry: &[u8]) -> Option<u64> {
    const KEY: &[u8] = br#","Sequence":"#;
    let digits = entry.len() - entry.iter().rev().take_while(|b| b.is_ascii_digit()).count();
    if digits == entry.len() || !entry[..digits].ends_with(KEY) {
        return None;
    }
    std::str::from_utf8(&entry[digits..]).ok()?.parse().ok()
}

/// Completes the line that starts at `start` in `buf` and ends with its `Sequence` member: the
/// other chain members, the hash of it all with `Hash` empty, then that hash as `Hash`.
fn finish_line(buf: &mut Vec<u8>, start: usize, previous_hash: &str) -> String {
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

    #[test]
    fn an_entry_chained_later_is_the_line_chained_at_once() {
        let head = br#"{"A":1,"#;
        let mut at_once = Vec::new();
        let hash_at_once = append_line(&mut at_once, head, 42, "prev");
        let mut entry = head.to_vec();
        push_sequence(&mut entry, 42);
        assert_eq!(entry_sequence(&entry), Some(42));
        let mut later = Vec::new();
        assert_eq!(append_entry(&mut later, &entry, "prev"), hash_at_once);
        assert_eq!(later, at_once);
        assert_eq!(
            at_once,
            format!(r#"{{"A":1,"Sequence":42,"PreviousHash":"prev","Hash":"{hash_at_once}"}}"#).into_bytes()
        );
        for not_an_entry in
            [&b""[..], b"42", br#"{"A":1}"#, br#"{"Sequence":"#, br#"{"A":1,"Sequence":"#, br#"{"X":1,"NotSequence":7"#]
        {
            assert_eq!(entry_sequence(not_an_entry), None, "{}", String::from_utf8_lossy(not_an_entry));
        }
    }
}

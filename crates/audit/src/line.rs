//! The stored line of a record, written field by field.
//!
//! The bytes are exactly what `serde_json` writes for [`AuditRecord`] (a test holds them equal),
//! so readers parse lines with serde and the documented format does not change; writing them
//! directly skips serde's per-field machinery, which at two records per read was a measurable
//! share of a read's cost.

use std::cell::RefCell;
use std::sync::{Arc, Weak};

use serde_json::{Map, Value};

use crate::{AuditRecord, ResultType};

/// Appends the record's line without its chain members: it ends with the comma before
/// `"Sequence"`.
pub(crate) fn write_head(buf: &mut Vec<u8>, record: &AuditRecord) {
    buf.extend_from_slice(br#"{"TimeGenerated":"#);
    string(buf, &record.time_generated);
    buf.extend_from_slice(br#","LogCategory":"#);
    string(buf, &record.log_category);
    buf.extend_from_slice(br#","OperationName":"#);
    string(buf, &record.operation_name);
    buf.extend_from_slice(br#","ResultType":""#);
    buf.extend_from_slice(match record.result_type {
        ResultType::Started => b"Started",
        ResultType::Succeeded => b"Succeeded",
        ResultType::Failed => b"Failed",
    });
    buf.extend_from_slice(br#"","CorrelationId":"#);
    string(buf, &record.correlation_id);
    buf.extend_from_slice(br#","RequestUri":"#);
    string(buf, &record.request_uri);
    buf.extend_from_slice(br#","FhirResourceType":"#);
    optional_string(buf, record.fhir_resource_type.as_deref());
    buf.extend_from_slice(br#","CallerIdentity":"#);
    caller_identity(buf, &record.caller_identity);
    buf.extend_from_slice(br#","CallerIdentityIssuer":"#);
    optional_string(buf, record.caller_identity_issuer.as_deref());
    buf.extend_from_slice(br#","CallerIdentityObjectId":"#);
    optional_string(buf, record.caller_identity_object_id.as_deref());
    buf.extend_from_slice(br#","CallerIPAddress":"#);
    string(buf, &record.caller_ip_address);
    buf.extend_from_slice(br#","StatusCode":"#);
    optional_number(buf, record.status_code.map(u64::from));
    buf.extend_from_slice(br#","OperationDuration":"#);
    optional_number(buf, record.operation_duration);
    buf.extend_from_slice(br#","Location":"#);
    string(buf, &record.location);
    buf.extend_from_slice(br#","Properties":"#);
    map(buf, &record.properties);
    buf.push(b',');
}

/// A JSON string, escaped as `serde_json` escapes (only `"`, `\` and control characters).
fn string(buf: &mut Vec<u8>, text: &str) {
    if needs_escape(text.as_bytes()) {
        let _ = serde_json::to_writer(&mut *buf, text);
        return;
    }
    buf.push(b'"');
    buf.extend_from_slice(text.as_bytes());
    buf.push(b'"');
}

/// Whether any byte is `"`, `\` or a control character. Sixteen bytes at a time without an early
/// exit inside a block, which the compiler turns into vector compares: every line has a few
/// hundred bytes of strings to check, and a byte-by-byte search was a visible share of a read.
fn needs_escape(bytes: &[u8]) -> bool {
    let escaped = |b: u8| (b < 0x20) | (b == b'"') | (b == b'\\');
    let mut blocks = bytes.chunks_exact(16);
    for block in &mut blocks {
        if block.iter().fold(false, |any, &b| any | escaped(b)) {
            return true;
        }
    }
    blocks.remainder().iter().any(|&b| escaped(b))
}

fn optional_string(buf: &mut Vec<u8>, text: Option<&str>) {
    match text {
        Some(text) => string(buf, text),
        None => buf.extend_from_slice(b"null"),
    }
}

fn optional_number(buf: &mut Vec<u8>, number: Option<u64>) {
    match number {
        Some(number) => crate::chain::push_decimal(buf, number),
        None => buf.extend_from_slice(b"null"),
    }
}

thread_local! {
    /// The `CallerIdentity` this thread wrote last and its JSON. Every record of a token shares
    /// one map (made once per token), and the records of one caller come in runs, so this skips
    /// writing and escape-checking the largest member of the line. The weak pointer keeps the
    /// map's allocation alive, so an equal address is the same map, which nobody can change
    /// while shared (`Arc::make_mut` would move it elsewhere).
    static CALLER_IDENTITY: RefCell<Option<Written>> = const { RefCell::new(None) };
}

/// A `CallerIdentity` and its JSON as written.
type Written = (Weak<Map<String, Value>>, Vec<u8>);

/// `CallerIdentity`: the thread's last one again, or written (and kept) as [`map`] writes it.
fn caller_identity(buf: &mut Vec<u8>, identity: &Arc<Map<String, Value>>) {
    if identity.is_empty() {
        buf.extend_from_slice(b"{}");
        return;
    }
    CALLER_IDENTITY.with(|last| {
        let mut last = last.borrow_mut();
        if let Some((weak, json)) = last.as_ref() {
            if std::ptr::eq(weak.as_ptr(), Arc::as_ptr(identity)) {
                buf.extend_from_slice(json);
                return;
            }
        }
        let start = buf.len();
        map(buf, identity);
        *last = Some((Arc::downgrade(identity), buf[start..].to_vec()));
    });
}

/// `CallerIdentity` and `Properties`: string values (all the server writes) directly, others as
/// serde writes them.
fn map(buf: &mut Vec<u8>, map: &Map<String, Value>) {
    buf.push(b'{');
    for (i, (key, value)) in map.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        string(buf, key);
        buf.push(b':');
        match value {
            Value::String(text) => string(buf, text),
            other => {
                let _ = serde_json::to_writer(&mut *buf, other);
            }
        }
    }
    buf.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record with nothing optional: no resource type, caller, status or duration.
    fn record() -> AuditRecord {
        let mut record = crate::tests::record("2026-05-01T12:34:56.123456Z", "read");
        record.fhir_resource_type = None;
        record.caller_identity = Default::default();
        record.caller_identity_issuer = None;
        record.caller_identity_object_id = None;
        record
    }

    /// The head as serde writes it: the whole line, less the unset chain members.
    fn serde_head(record: &AuditRecord) -> Vec<u8> {
        let mut line = serde_json::to_vec(record).unwrap();
        let unset = br#""Sequence":0,"PreviousHash":"","Hash":""}"#;
        assert!(line.ends_with(unset));
        line.truncate(line.len() - unset.len());
        line
    }

    #[test]
    fn the_head_is_what_serde_writes() {
        let mut full = record();
        full.result_type = ResultType::Failed;
        full.fhir_resource_type = Some("Patient".into());
        full.caller_identity = serde_json::from_value(serde_json::json!({"oid": "o-1", "sub": "s\"1"})).unwrap();
        full.caller_identity_issuer = Some("https://login.example/t/".into());
        full.caller_identity_object_id = Some("o-1".into());
        full.status_code = Some(404);
        full.operation_duration = Some(0);
        full.properties = serde_json::from_value(serde_json::json!({
            "X-MS-AZUREFHIR-AUDIT-A": "b, c",
            "X-MS-AZUREFHIR-AUDIT-\"B\"": "tab\there",
            "n": 1.5,
            "list": [1, "two", null, {"k": true}]
        }))
        .unwrap();
        // Escapes: quotes, backslashes, control characters; non-ASCII and `/` stay as they are.
        full.request_uri = "https://localhost/Patient?name=\"O'Brien\"\\\n\t\u{1}&given=Zoë/ü".into();
        let mut succeeded = record();
        succeeded.result_type = ResultType::Succeeded;
        succeeded.status_code = Some(200);
        succeeded.operation_duration = Some(u64::MAX);
        for record in [record(), full, succeeded] {
            let mut head = b"x".to_vec();
            write_head(&mut head, &record);
            assert_eq!(String::from_utf8_lossy(&head[1..]), String::from_utf8_lossy(&serde_head(&record)));
        }
    }

    #[test]
    fn a_shared_caller_identity_is_written_again_as_it_was_written_first() {
        let identity = |json: serde_json::Value| Arc::new(json.as_object().unwrap().clone());
        let first = identity(serde_json::json!({"oid": "o-1", "name": "Zoë \"Z\""}));
        let second = identity(serde_json::json!({"oid": "o-2"}));
        let mut record = record();
        for (identity, expected) in [
            (&first, r#"{"oid":"o-1","name":"Zoë \"Z\""}"#),
            (&first, r#"{"oid":"o-1","name":"Zoë \"Z\""}"#),
            (&second, r#"{"oid":"o-2"}"#),
            (&first, r#"{"oid":"o-1","name":"Zoë \"Z\""}"#),
        ] {
            record.caller_identity = identity.clone();
            let mut head = Vec::new();
            write_head(&mut head, &record);
            assert_eq!(String::from_utf8_lossy(&head), String::from_utf8_lossy(&serde_head(&record)));
            assert!(String::from_utf8_lossy(&head).contains(&format!(r#""CallerIdentity":{expected},"#)));
        }
        // A map dropped and another made at the same address is written as itself: the weak
        // pointer kept the first one's allocation, so the new one cannot be there.
        drop(first);
        record.caller_identity = identity(serde_json::json!({"oid": "o-3"}));
        let mut head = Vec::new();
        write_head(&mut head, &record);
        assert!(String::from_utf8_lossy(&head).contains(r#""CallerIdentity":{"oid":"o-3"},"#));
    }

    #[test]
    fn escapes_are_found_in_blocks_and_in_the_remainder() {
        for len in 0..40 {
            let plain = "a".repeat(len);
            assert!(!needs_escape(plain.as_bytes()), "{len}");
            for at in 0..len {
                for special in [b'"', b'\\', b'\n', 0x1f, 0x00] {
                    let mut bytes = plain.clone().into_bytes();
                    bytes[at] = special;
                    assert!(needs_escape(&bytes), "{len} {at} {special}");
                }
                let mut bytes = plain.clone().into_bytes();
                bytes[at] = 0x20;
                assert!(!needs_escape(&bytes), "a space at {at} of {len}");
            }
        }
    }
}

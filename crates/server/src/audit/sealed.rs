//! Audit records on an encrypted installation: the fields that can carry PHI are sealed before
//! the record is written, and opened again for `GET /_audit`.
//!
//! `RequestUri` carries search values (`Patient?name=…&birthdate=…`) and `Properties` whatever a
//! client puts in its custom audit headers. The other fields say who did what, when and with what
//! result, which an auditor must be able to read and filter on without the key, and they hold no
//! resource content. The hash chain covers the record as stored, sealed fields included, so
//! `fhirside audit verify` needs no key.

use fhirside_audit::AuditRecord;
use fhirside_keys::Keyring;
use serde_json::Value;

/// Seals the record's `RequestUri` and `Properties` values. The associated data names the field
/// and the request, so a sealed value copied into another record does not open there.
pub(crate) fn seal(keyring: &Keyring, record: &mut AuditRecord) {
    record.request_uri = keyring.seal_text(&record.request_uri, &aad("RequestUri", &record.correlation_id));
    for (name, value) in record.properties.iter_mut() {
        if let Value::String(text) = value {
            *text = keyring.seal_text(text, &aad(&format!("Properties/{name}"), &record.correlation_id));
        }
    }
}

/// Opens what [`seal`] sealed; a value that does not open (another installation's key, an edited
/// file) is left as stored rather than failing the whole answer.
pub(crate) fn open(keyring: &Keyring, record: &mut AuditRecord) {
    if let Some(uri) = open_text(keyring, &record.request_uri, &aad("RequestUri", &record.correlation_id)) {
        record.request_uri = uri;
    }
    for (name, value) in record.properties.iter_mut() {
        if let Value::String(text) = value {
            if let Some(opened) = open_text(keyring, text, &aad(&format!("Properties/{name}"), &record.correlation_id))
            {
                *text = opened;
            }
        }
    }
}

fn aad(field: &str, correlation_id: &str) -> String {
    format!("audit/{field}/{correlation_id}")
}

fn open_text(keyring: &Keyring, stored: &str, aad: &str) -> Option<String> {
    keyring.open_text(stored, aad)?.ok()
}

#[cfg(test)]
mod tests {
    use fhirside_audit::{AuditRecord, ResultType};
    use fhirside_keys::{Keyring, LocalKek};
    use serde_json::json;

    fn keyring() -> Keyring {
        let kek = LocalKek::from_bytes("test", &[5u8; 32]).unwrap();
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(Keyring::create(&kek)).unwrap()
    }

    fn record() -> AuditRecord {
        AuditRecord {
            time_generated: "2026-01-01T00:00:00.000000Z".into(),
            log_category: "AuditLogs".into(),
            operation_name: "search-type".into(),
            result_type: ResultType::Started,
            correlation_id: "c-1".into(),
            request_uri: "https://fhir.example/Patient?name=Donaldson".into(),
            fhir_resource_type: Some("Patient".into()),
            caller_identity: Default::default(),
            caller_identity_issuer: None,
            caller_identity_object_id: None,
            caller_ip_address: "127.0.0.1".into(),
            status_code: None,
            operation_duration: None,
            location: String::new(),
            properties: json!({"X-MS-AZUREFHIR-AUDIT-PURPOSE": "treatment of Donaldson"}).as_object().unwrap().clone(),
            sequence: 0,
            previous_hash: String::new(),
            hash: String::new(),
        }
    }

    #[test]
    fn sealed_fields_hold_no_plaintext_and_open_only_in_their_record() {
        let keyring = keyring();
        let mut sealed = record();
        super::seal(&keyring, &mut sealed);
        let stored = serde_json::to_string(&sealed).unwrap();
        assert!(!stored.contains("Donaldson"), "{stored}");
        assert_eq!(sealed.operation_name, "search-type");

        let mut opened = sealed.clone();
        super::open(&keyring, &mut opened);
        assert_eq!(opened, record());

        // Moved into another request's record, it stays sealed.
        let mut moved = sealed.clone();
        moved.correlation_id = "c-2".into();
        super::open(&keyring, &mut moved);
        assert_eq!(moved.request_uri, sealed.request_uri);
    }
}

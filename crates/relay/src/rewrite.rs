//! What a message becomes before it leaves: a transaction Bundle that can be sent any number of
//! times with the same result.
//!
//! Delivery is at least once (a crash between the target's commit and our record of it, or a
//! lost answer, means a second send), so each plain create is turned into a write the target
//! recognizes the second time:
//! - a resource with a business identifier (`identifier[0]` with `system` and `value`) becomes a
//!   conditional create, `ifNoneExist: identifier=system|value`: the second send matches the first
//!   one's resource and creates nothing; references to the entry resolve to it either way. Its
//!   `urn:uuid:` placeholder is renamed (deterministically), because some servers replace a
//!   placeholder wherever it appears, and Synthea uses it as the identifier value too;
//! - a resource without one becomes an update by id (`PUT Type/id`) with the id it carries, or the
//!   UUID of its `urn:uuid:` full URL, or one derived from the message and entry; references to its
//!   full URL are rewritten to `Type/id`, since an update's full URL is not a placeholder.
//!
//! Entries that are already conditional, updates, deletes or reads are left as they are.

use serde_json::{json, Map, Value};

/// The system of the identifiers the verification sample carries.
pub const VERIFICATION_SYSTEM: &str = "urn:fhirside:relay:verification";

/// Checks that `message` is something the relay can deliver: a FHIR resource (a JSON object with a
/// `resourceType`), and for a Bundle, entries that each hold one.
pub fn check_message(message: &Value) -> Result<(), String> {
    let Some(object) = message.as_object() else {
        return Err("The message must be a FHIR resource or Bundle (a JSON object).".into());
    };
    let Some(kind) = object.get("resourceType").and_then(Value::as_str) else {
        return Err("The message has no resourceType: it must be a FHIR resource or Bundle.".into());
    };
    if kind != "Bundle" {
        return Ok(());
    }
    let entries = match object.get("entry") {
        None => return Err("The Bundle has no entries: there is nothing to deliver.".into()),
        Some(Value::Array(entries)) if entries.is_empty() => {
            return Err("The Bundle has no entries: there is nothing to deliver.".into())
        }
        Some(Value::Array(entries)) => entries,
        Some(_) => return Err("Bundle.entry must be an array.".into()),
    };
    for (i, entry) in entries.iter().enumerate() {
        let method = entry.pointer("/request/method").and_then(Value::as_str);
        let has_resource = entry.pointer("/resource/resourceType").and_then(Value::as_str).is_some();
        if !has_resource && !matches!(method, Some("DELETE" | "GET" | "HEAD")) {
            return Err(format!("Bundle.entry[{i}] has no resource with a resourceType."));
        }
    }
    Ok(())
}

/// The key that orders deliveries: messages about the same patient reach a destination in the
/// order they were accepted. The first Patient's business identifier (or id), else the first
/// `subject` or `patient` reference; `None` when the message names no patient.
pub fn patient_key(message: &Value) -> Option<String> {
    let resources: Vec<&Value> = match message.get("resourceType").and_then(Value::as_str) {
        Some("Bundle") => message["entry"].as_array()?.iter().filter_map(|e| e.get("resource")).collect(),
        _ => vec![message],
    };
    if let Some(patient) = resources.iter().find(|r| r["resourceType"] == "Patient") {
        if let Some((system, value)) = first_identifier(patient) {
            return Some(format!("{system}|{value}"));
        }
        if let Some(id) = patient["id"].as_str() {
            return Some(format!("Patient/{id}"));
        }
    }
    resources
        .iter()
        .find_map(|r| ["subject", "patient"].iter().find_map(|field| r[field]["reference"].as_str().map(str::to_owned)))
}

fn first_identifier(resource: &Value) -> Option<(&str, &str)> {
    let first = resource.get("identifier")?.as_array()?.first()?;
    Some((first.get("system")?.as_str()?, first.get("value")?.as_str()?))
}

/// `message` as an idempotent transaction Bundle; `message_id` seeds the ids of entries that
/// have neither an identifier, an id nor a `urn:uuid:` full URL.
pub fn as_transaction(message: &Value, message_id: &str) -> Value {
    let mut bundle = match message.get("resourceType").and_then(Value::as_str) {
        Some("Bundle") => message.clone(),
        _ => json!({ "resourceType": "Bundle", "type": "transaction", "entry": [{ "resource": message }] }),
    };
    // A batch stays a batch (its entries succeed or fail alone); anything else (a collection, a
    // message, a document) is delivered as one transaction.
    if bundle["type"] != "batch" {
        bundle["type"] = json!("transaction");
    }
    let mut placeholders: Vec<(String, String)> = Vec::new();
    if let Some(entries) = bundle.get_mut("entry").and_then(Value::as_array_mut) {
        for (index, entry) in entries.iter_mut().enumerate() {
            if let Some(placeholder) = make_idempotent(entry, message_id, index) {
                placeholders.push(placeholder);
            }
        }
        if !placeholders.is_empty() {
            for entry in entries.iter_mut() {
                if let Some(resource) = entry.get_mut("resource") {
                    rewrite_references(resource, &placeholders);
                }
            }
        }
    }
    bundle
}

/// Turns one create into its idempotent form; returns (full URL, `Type/id`) when references to
/// the entry must change.
fn make_idempotent(entry: &mut Value, message_id: &str, index: usize) -> Option<(String, String)> {
    let kind = entry.pointer("/resource/resourceType")?.as_str()?.to_owned();
    let request = entry.get("request").cloned().unwrap_or_else(|| json!({ "method": "POST", "url": kind }));
    let method = request.get("method").and_then(Value::as_str).unwrap_or("POST");
    if method != "POST" || request.get("ifNoneExist").is_some() {
        if entry.get("request").is_none() {
            entry["request"] = request;
        }
        return None;
    }
    let full_url = entry.get("fullUrl").and_then(Value::as_str).map(str::to_owned);
    if let Some((system, value)) = first_identifier(&entry["resource"]) {
        let criteria = format!("identifier={}|{}", encode(&escape(system)), encode(&escape(value)));
        entry["request"] = json!({ "method": "POST", "url": kind, "ifNoneExist": criteria });
        // Some servers replace the placeholder wherever it appears in the bundle, identifier values
        // included (Synthea's DocumentReference identifier is its own full URL), which would
        // change the very identifier the condition matches on; a placeholder of our own cannot
        // collide with the data.
        let placeholder = full_url.filter(|u| u.starts_with("urn:uuid:"))?;
        let renamed = derived_urn(message_id, &placeholder);
        entry["fullUrl"] = json!(renamed);
        return Some((placeholder, renamed));
    }
    let id = entry["resource"]["id"]
        .as_str()
        .filter(|id| is_valid_id(id))
        .map(str::to_owned)
        .or_else(|| {
            full_url
                .as_deref()
                .and_then(|u| u.strip_prefix("urn:uuid:"))
                .filter(|id| is_valid_id(id))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| format!("{message_id}.{index}"));
    entry["resource"]["id"] = json!(id);
    entry["request"] = json!({ "method": "PUT", "url": format!("{kind}/{id}") });
    // References now name `Type/id`; without a placeholder nothing else in the bundle can be
    // taken for one.
    if let Some(map) = entry.as_object_mut() {
        map.remove("fullUrl");
    }
    full_url.map(|url| (url, format!("{kind}/{id}")))
}

/// A `urn:uuid:` of our own for a placeholder, the same on every attempt of the message.
fn derived_urn(message_id: &str, placeholder: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, format!("{message_id}|{placeholder}").as_bytes());
    let h: String = digest.as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("urn:uuid:{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// Replaces every `reference` that names a rewritten full URL.
fn rewrite_references(value: &mut Value, placeholders: &[(String, String)]) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(reference)) = map.get_mut("reference") {
                if let Some((_, target)) = placeholders.iter().find(|(url, _)| url == reference) {
                    *reference = target.clone();
                }
            }
            for (_, child) in map.iter_mut() {
                rewrite_references(child, placeholders);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| rewrite_references(item, placeholders)),
        _ => {}
    }
}

/// FHIR's escaping of a token's parts (`\`, `|`, `,`, `$`).
fn escape(part: &str) -> String {
    let mut out = String::with_capacity(part.len());
    for c in part.chars() {
        if matches!(c, '\\' | '|' | ',' | '$') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn encode(part: &str) -> String {
    form_urlencoded::byte_serialize(part.as_bytes()).collect()
}

/// R4's `id`: 1 to 64 of `[A-Za-z0-9\-\.]`.
fn is_valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// The verification sample for a FHIR destination: a new Patient with an Encounter, as an event
/// of Redox's `PatientAdmin` model would carry them, both conditional on their identifier so that
/// verifying twice stores them once.
pub fn sample_bundle(destination_id: &str) -> Value {
    let patient_url = format!("urn:uuid:{}", crate::new_id());
    let mut identifier = Map::new();
    identifier.insert("system".into(), json!(VERIFICATION_SYSTEM));
    identifier.insert("value".into(), json!(destination_id));
    let bundle = json!({
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": patient_url,
                "resource": {
                    "resourceType": "Patient",
                    "identifier": [Value::Object(identifier)],
                    "active": true,
                    "name": [{ "family": "Verification", "given": ["Relay"] }],
                    "gender": "unknown",
                },
                "request": { "method": "POST", "url": "Patient" },
            },
            {
                "resource": {
                    "resourceType": "Encounter",
                    "identifier": [{ "system": VERIFICATION_SYSTEM, "value": format!("{destination_id}-encounter") }],
                    "status": "finished",
                    "class": {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                        "code": "AMB",
                        "display": "ambulatory",
                    },
                    "subject": { "reference": patient_url },
                },
                "request": { "method": "POST", "url": "Encounter" },
            },
        ],
    });
    as_transaction(&bundle, destination_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_with_an_identifier_become_conditional_creates() {
        let message = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:1f0c6d2e-0000-4000-8000-000000000001",
             "resource": {"resourceType": "Patient", "id": "p1",
                          "identifier": [{"system": "https://example.org/mrn", "value": "a|b,c"}]},
             "request": {"method": "POST", "url": "Patient"}}]});
        let out = as_transaction(&message, "m");
        let renamed = out["entry"][0]["fullUrl"].as_str().unwrap();
        assert!(renamed.starts_with("urn:uuid:") && renamed != "urn:uuid:1f0c6d2e-0000-4000-8000-000000000001");
        assert_eq!(as_transaction(&message, "m")["entry"][0]["fullUrl"], renamed, "stable across attempts");
        assert_eq!(
            out["entry"][0]["request"],
            json!({"method": "POST", "url": "Patient",
                   "ifNoneExist": "identifier=https%3A%2F%2Fexample.org%2Fmrn|a%5C%7Cb%5C%2Cc"})
        );
    }

    #[test]
    fn creates_without_an_identifier_become_updates_and_references_follow() {
        let message = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:0a0a0a0a-0000-4000-8000-000000000001",
             "resource": {"resourceType": "Condition", "id": "c1"},
             "request": {"method": "POST", "url": "Condition"}},
            {"fullUrl": "urn:uuid:0a0a0a0a-0000-4000-8000-000000000002",
             "resource": {"resourceType": "Observation"},
             "request": {"method": "POST", "url": "Observation"}},
            {"resource": {"resourceType": "Provenance",
                          "target": [{"reference": "urn:uuid:0a0a0a0a-0000-4000-8000-000000000001"},
                                     {"reference": "urn:uuid:0a0a0a0a-0000-4000-8000-000000000002"}]}}]});
        let out = as_transaction(&message, "msg");
        assert_eq!(out["entry"][0]["request"], json!({"method": "PUT", "url": "Condition/c1"}));
        assert_eq!(
            out["entry"][1]["request"],
            json!({"method": "PUT", "url": "Observation/0a0a0a0a-0000-4000-8000-000000000002"})
        );
        assert_eq!(out["entry"][1]["resource"]["id"], "0a0a0a0a-0000-4000-8000-000000000002");
        assert!(out["entry"][1].get("fullUrl").is_none(), "no placeholder left to match");
        assert_eq!(out["entry"][2]["request"], json!({"method": "PUT", "url": "Provenance/msg.2"}));
        assert_eq!(out["entry"][2]["resource"]["target"][0]["reference"], "Condition/c1");
        assert_eq!(
            out["entry"][2]["resource"]["target"][1]["reference"],
            "Observation/0a0a0a0a-0000-4000-8000-000000000002"
        );
    }

    #[test]
    fn an_identifier_equal_to_the_full_url_is_left_intact() {
        let url = "urn:uuid:3efe2f24-3359-8c4e-1bea-e1baff34e76c";
        let message = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": url, "resource": {"resourceType": "DocumentReference",
                "identifier": [{"system": "urn:ietf:rfc:3986", "value": url}]},
             "request": {"method": "POST", "url": "DocumentReference"}},
            {"resource": {"resourceType": "Provenance", "id": "p", "target": [{"reference": url}]},
             "request": {"method": "POST", "url": "Provenance"}}]});
        let out = as_transaction(&message, "m");
        let renamed = out["entry"][0]["fullUrl"].clone();
        assert_eq!(out["entry"][0]["resource"]["identifier"][0]["value"], url);
        assert_eq!(out["entry"][1]["resource"]["target"][0]["reference"], renamed);
    }

    #[test]
    fn rewriting_is_stable_so_a_retry_sends_the_same_writes() {
        let message = json!({"resourceType": "Observation", "status": "final"});
        assert_eq!(as_transaction(&message, "m1"), as_transaction(&message, "m1"));
        let out = as_transaction(&message, "m1");
        assert_eq!(out["type"], "transaction");
        assert_eq!(out["entry"][0]["request"]["url"], "Observation/m1.0");
    }

    #[test]
    fn conditional_and_non_create_entries_are_left_alone() {
        let entries = json!([
            {"resource": {"resourceType": "Organization", "identifier": [{"system": "s", "value": "v"}]},
             "request": {"method": "POST", "url": "Organization", "ifNoneExist": "identifier=s|x"}},
            {"resource": {"resourceType": "Patient", "id": "p"}, "request": {"method": "PUT", "url": "Patient/p"}},
            {"request": {"method": "DELETE", "url": "Patient/q"}}
        ]);
        let message = json!({"resourceType": "Bundle", "type": "batch", "entry": entries.clone()});
        let out = as_transaction(&message, "m");
        assert_eq!(out["type"], "batch");
        assert_eq!(out["entry"], entries);
    }

    #[test]
    fn messages_are_checked_before_they_are_queued() {
        assert!(check_message(&json!({"resourceType": "Patient"})).is_ok());
        assert!(check_message(&json!([1])).unwrap_err().contains("JSON object"));
        assert!(check_message(&json!({"id": "x"})).unwrap_err().contains("resourceType"));
        assert!(check_message(&json!({"resourceType": "Bundle", "entry": []})).unwrap_err().contains("no entries"));
        assert!(check_message(&json!({"resourceType": "Bundle", "entry": [{"fullUrl": "x"}]}))
            .unwrap_err()
            .contains("entry[0]"));
    }

    #[test]
    fn the_patient_key_orders_by_business_identifier() {
        let bundle = json!({"resourceType": "Bundle", "entry": [
            {"resource": {"resourceType": "Encounter", "subject": {"reference": "urn:uuid:x"}}},
            {"resource": {"resourceType": "Patient", "identifier": [{"system": "s", "value": "1"}]}}]});
        assert_eq!(patient_key(&bundle).as_deref(), Some("s|1"));
        let observation = json!({"resourceType": "Observation", "subject": {"reference": "Patient/9"}});
        assert_eq!(patient_key(&observation).as_deref(), Some("Patient/9"));
        assert_eq!(patient_key(&json!({"resourceType": "Organization"})), None);
    }

    #[test]
    fn the_verification_sample_is_conditional() {
        let sample = sample_bundle("d1");
        assert_eq!(sample["entry"][0]["request"]["ifNoneExist"], "identifier=urn%3Afhirside%3Arelay%3Averification|d1");
        assert_eq!(
            sample["entry"][1]["request"]["ifNoneExist"],
            "identifier=urn%3Afhirside%3Arelay%3Averification|d1-encounter"
        );
    }
}

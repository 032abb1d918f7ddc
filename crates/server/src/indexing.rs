//! Extracting search index entries from a resource before it is stored.
//!
//! Today this covers the `identifier` token parameter (with `_id` and `_lastUpdated` kept on the
//! resource row itself), which is what conditional create, update and delete most often match on.
//! Each parameter's R4 FHIRPath expression decides where its values come from; expressions made
//! of plain element paths (`Patient.identifier`, `DocumentReference.masterIdentifier |
//! DocumentReference.identifier`) are followed directly, and the FHIRPath engine will take over
//! the general case.

use fhirside_store::{IndexEntries, TokenEntry};
use serde_json::{Map, Value};

/// Index entries of `resource` (of type `resource_type`).
pub(crate) fn extract(resource_type: &str, resource: &Map<String, Value>) -> IndexEntries {
    let mut entries = IndexEntries::default();
    let Some(param) = fhir::definitions().search_param(resource_type, "identifier") else {
        return entries;
    };
    let Some(expression) = param.expression.as_deref() else {
        return entries;
    };
    for path in simple_paths(expression, resource_type) {
        let mut values = Vec::new();
        if let Some(child) = resource.get(path[0]) {
            collect(child, &path[1..], &mut values);
        }
        for identifier in values {
            push_identifier(&mut entries, identifier);
        }
    }
    entries
}

/// The element paths of `expression` that apply to `resource_type`, when every part of the union
/// is a plain path; otherwise none.
fn simple_paths<'a>(expression: &'a str, resource_type: &str) -> Vec<Vec<&'a str>> {
    let mut paths = Vec::new();
    for part in expression.split('|') {
        let part = part.trim();
        let mut steps = part.split('.');
        if steps.next() != Some(resource_type) {
            continue;
        }
        let steps: Vec<&str> = steps.collect();
        if steps.is_empty() || !steps.iter().all(|s| s.chars().all(|c| c.is_ascii_alphanumeric())) {
            continue;
        }
        paths.push(steps);
    }
    paths
}

fn collect<'v>(value: &'v Value, path: &[&str], out: &mut Vec<&'v Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|item| collect(item, path, out)),
        Value::Object(map) => match path.split_first() {
            None => out.push(value),
            Some((first, rest)) => {
                if let Some(child) = map.get(*first) {
                    collect(child, rest, out);
                }
            }
        },
        _ => {}
    }
}

fn push_identifier(entries: &mut IndexEntries, identifier: &Value) {
    let Some(code) = identifier.get("value").and_then(Value::as_str) else {
        return;
    };
    entries.tokens.push(TokenEntry {
        param: "identifier".into(),
        system: identifier.get("system").and_then(Value::as_str).map(str::to_owned),
        code: code.to_owned(),
    });
}

//! Rewriting references inside a Bundle's resources.
//!
//! A transaction's entries refer to each other by `fullUrl` (`urn:uuid:…`, or an absolute URL). Once
//! every entry's id is known, each string in every resource that equals such a `fullUrl` becomes the
//! assigned `Type/id`, and links in the narrative are rewritten the same way (R4 http.html#trules).
//! Conditional references (`Patient?identifier=x|y`) are resolved against the store inside the same
//! transaction: exactly one match is required.

use std::collections::HashMap;

use fhirside_store::Transaction;
use serde_json::{Map, Value};

use crate::error::FhirError;
use crate::interaction::search;
use crate::params::Params;

/// The `fullUrl` → `Type/id` map of one Bundle, and the conditional references resolved so far.
#[derive(Default)]
pub(crate) struct References {
    by_full_url: HashMap<String, String>,
    conditional: HashMap<String, String>,
}

impl References {
    pub fn insert(&mut self, full_url: String, reference: String) {
        self.by_full_url.insert(full_url, reference);
    }

    /// Rewrites `resource` in place.
    pub fn rewrite(&mut self, tx: &mut dyn Transaction, resource: &mut Map<String, Value>) -> Result<(), FhirError> {
        for (key, value) in resource.iter_mut() {
            self.rewrite_value(tx, key, value)?;
        }
        Ok(())
    }

    fn rewrite_value(&mut self, tx: &mut dyn Transaction, key: &str, value: &mut Value) -> Result<(), FhirError> {
        match value {
            Value::String(text) => {
                // Only URLs and URNs can be fullUrls; most strings are codes and names.
                let could_be_full_url = text.starts_with("urn:") || text.contains("://");
                let mapped = if could_be_full_url { self.by_full_url.get(text.as_str()) } else { None };
                if let Some(reference) = mapped {
                    *text = reference.clone();
                } else if key == "reference" && is_conditional(text) {
                    *text = self.resolve_conditional(tx, text)?;
                } else if key == "div" && !self.by_full_url.is_empty() {
                    self.rewrite_narrative(text);
                }
            }
            Value::Array(items) => {
                for item in items {
                    self.rewrite_value(tx, key, item)?;
                }
            }
            Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    self.rewrite_value(tx, k, v)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn resolve_conditional(&mut self, tx: &mut dyn Transaction, reference: &str) -> Result<String, FhirError> {
        if let Some(resolved) = self.conditional.get(reference) {
            return Ok(resolved.clone());
        }
        let (resource_type, query) = reference.split_once('?').expect("checked by is_conditional");
        let parsed = search::conditional(resource_type, &Params::parse(Some(query)))?;
        let matches = tx.search(resource_type, &parsed, 2)?;
        let resolved = match matches.as_slice() {
            [one] => format!("{resource_type}/{}", one.id),
            [] => {
                return Err(FhirError::BadRequest {
                    code: "not-found",
                    diagnostics: format!("Given conditional reference '{reference}' does not resolve to a resource."),
                    expression: None,
                })
            }
            _ => {
                return Err(FhirError::PreconditionFailed(format!(
                    "Given conditional reference '{reference}' resolves to more than one resource."
                )))
            }
        };
        self.conditional.insert(reference.to_owned(), resolved.clone());
        Ok(resolved)
    }

    /// Replaces `fullUrl`s in narrative links (`href="urn:uuid:…"`, `src='…'`): each attribute value
    /// is looked up once, so the cost is linear in the narrative, not in the size of the Bundle.
    fn rewrite_narrative(&self, div: &mut String) {
        if !div.contains("href=") && !div.contains("src=") {
            return;
        }
        let mut out = String::with_capacity(div.len());
        let mut rest = div.as_str();
        let mut changed = false;
        while let Some(at) = rest.find(['"', '\'']) {
            let quote = rest.as_bytes()[at] as char;
            out.push_str(&rest[..=at]);
            rest = &rest[at + 1..];
            let Some(end) = rest.find(quote) else { break };
            let value = &rest[..end];
            match self.by_full_url.get(value) {
                Some(reference)
                    if out.ends_with(&format!("href={quote}")) || out.ends_with(&format!("src={quote}")) =>
                {
                    out.push_str(reference);
                    changed = true;
                }
                _ => out.push_str(value),
            }
            out.push(quote);
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        if changed {
            *div = out;
        }
    }
}

/// `Type?query` with a known resource type.
fn is_conditional(reference: &str) -> bool {
    reference.split_once('?').is_some_and(|(t, q)| !q.is_empty() && fhir::definitions().is_resource_type(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narrative_links_are_rewritten() {
        let mut refs = References::default();
        refs.insert("urn:uuid:1".into(), "Patient/a".into());
        let mut div = r#"<div xmlns="http://www.w3.org/1999/xhtml"><a href="urn:uuid:1">x</a> "urn:uuid:1" <img src='urn:uuid:1'/></div>"#.to_owned();
        refs.rewrite_narrative(&mut div);
        assert_eq!(
            div,
            r#"<div xmlns="http://www.w3.org/1999/xhtml"><a href="Patient/a">x</a> "urn:uuid:1" <img src='Patient/a'/></div>"#
        );
    }

    #[test]
    fn conditional_references_need_a_known_type() {
        assert!(is_conditional("Patient?identifier=x"));
        assert!(!is_conditional("Patient/1"));
        assert!(!is_conditional("http://x/Patient?y=1"));
        assert!(!is_conditional("Nope?x=1"));
    }
}

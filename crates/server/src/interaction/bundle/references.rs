//! Rewriting references inside a Bundle's resources.
//!
//! A transaction's entries refer to each other by `fullUrl` (`urn:uuid:…`, or an absolute URL). Once
//! every entry's id is known, each string in every resource that equals such a `fullUrl` becomes the
//! assigned `Type/id`, and links in the narrative are rewritten the same way (R4 http.html#trules).
//! Conditional references (`Patient?identifier=x|y`) are resolved against the store inside the same
//! transaction: exactly one match is required.
//!
//! To keep work off the store's single writer, most of this happens before the transaction
//! ([`References::rewrite_before`]): ids assigned by the server are known up front, and conditional
//! references are resolved on the read pool and *assumed*; inside the transaction each assumption is
//! confirmed by one indexed search, and a resource is rewritten there only if it refers to an id that
//! only the transaction decides (a conditional create's match).

use std::collections::{HashMap, HashSet};

use fhirside_store::Transaction;
use serde_json::{Map, Value};

use crate::error::FhirError;
use crate::interaction::search;
use crate::params::Params;

/// The `fullUrl` → `Type/id` map of one Bundle, and the conditional references resolved so far.
#[derive(Default)]
pub(crate) struct References {
    by_full_url: HashMap<String, String>,
    /// `fullUrl`s whose ids are only known inside the transaction (conditional creates and updates).
    late: HashSet<String>,
    /// Conditional references resolved inside the transaction.
    conditional: HashMap<String, String>,
    /// Conditional references resolved before it, which the transaction must confirm.
    assumed: HashMap<String, String>,
}

/// What a rewrite done before the transaction could not settle.
#[derive(Default)]
pub(crate) struct Unsettled {
    /// Conditional references not (yet) assumed.
    pub conditional: Vec<String>,
    /// Whether the resource refers to a `fullUrl` whose id only the transaction will know.
    pub late: bool,
}

/// How conditional references are treated during a rewrite.
enum Mode<'t, 'u> {
    /// Inside the transaction: resolve them against the store.
    InTransaction(&'t mut dyn Transaction),
    /// Before it: use assumptions, and note what is left.
    Before(&'u mut Unsettled),
}

impl References {
    pub fn insert(&mut self, full_url: String, reference: String) {
        self.by_full_url.insert(full_url, reference);
    }

    /// Marks a `fullUrl` whose id the transaction will decide.
    pub fn insert_late(&mut self, full_url: String) {
        self.late.insert(full_url);
    }

    /// Records that `reference` resolved to `resolved` before the transaction.
    pub fn assume(&mut self, reference: String, resolved: String) {
        self.assumed.insert(reference, resolved);
    }

    pub fn assumed(&self, reference: &str) -> Option<&str> {
        self.assumed.get(reference).map(String::as_str)
    }

    /// Rewrites `resource` in place inside the transaction.
    pub fn rewrite(&mut self, tx: &mut dyn Transaction, resource: &mut Map<String, Value>) -> Result<(), FhirError> {
        let mut mode = Mode::InTransaction(tx);
        for (key, value) in resource.iter_mut() {
            self.rewrite_value(&mut mode, key, value)?;
        }
        Ok(())
    }

    /// Rewrites what can be rewritten before the transaction (known `fullUrl`s, assumed conditional
    /// references) and reports the rest.
    pub fn rewrite_before(&mut self, resource: &mut Map<String, Value>) -> Unsettled {
        let mut unsettled = Unsettled::default();
        let mut mode = Mode::Before(&mut unsettled);
        for (key, value) in resource.iter_mut() {
            // Nothing fails before the transaction: unresolvable references are left for it to report.
            let _ = self.rewrite_value(&mut mode, key, value);
        }
        unsettled
    }

    fn rewrite_value(&mut self, mode: &mut Mode<'_, '_>, key: &str, value: &mut Value) -> Result<(), FhirError> {
        match value {
            Value::String(text) => {
                // Only URLs and URNs can be fullUrls; most strings are codes and names.
                let could_be_full_url = text.starts_with("urn:") || text.contains("://");
                let mapped = if could_be_full_url { self.by_full_url.get(text.as_str()) } else { None };
                if let Some(reference) = mapped {
                    *text = reference.clone();
                } else if key == "reference" && is_conditional(text) {
                    match mode {
                        Mode::InTransaction(tx) => *text = self.resolve_conditional(&mut **tx, text)?,
                        Mode::Before(unsettled) => match self.assumed.get(text.as_str()) {
                            Some(resolved) => *text = resolved.clone(),
                            None => unsettled.conditional.push(text.clone()),
                        },
                    }
                } else if let Mode::Before(unsettled) = mode {
                    if could_be_full_url && self.late.contains(text.as_str()) {
                        unsettled.late = true;
                    }
                }
                if key == "div" && !self.by_full_url.is_empty() {
                    self.rewrite_narrative(text);
                    if let Mode::Before(unsettled) = mode {
                        unsettled.late |= self.late.iter().any(|l| text.contains(l.as_str()));
                    }
                }
            }
            Value::Array(items) => {
                for item in items {
                    self.rewrite_value(mode, key, item)?;
                }
            }
            Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    self.rewrite_value(mode, k, v)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    pub fn resolve_conditional(&mut self, tx: &mut dyn Transaction, reference: &str) -> Result<String, FhirError> {
        if let Some(resolved) = self.conditional.get(reference) {
            return Ok(resolved.clone());
        }
        let (resource_type, query) = reference.split_once('?').expect("checked by is_conditional");
        let parsed = search::conditional(resource_type, &Params::parse(Some(query)))?;
        let matches = tx.search(&parsed, 2)?;
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

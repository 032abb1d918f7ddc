//! Rewriting references inside a Bundle's resources.
//!
//! A transaction's entries refer to each other by `fullUrl` (`urn:uuid:…`, or an absolute URL). Once
//! every entry's id is known, each `Reference.reference` and each element of type uri, url, oid, uuid
//! or canonical that equals such a `fullUrl` becomes the assigned `Type/id`, and links in the
//! narrative are rewritten the same way (R4 http.html#trules; [`fhir::links`] finds the elements by
//! their type). Other elements are data, even when they hold the same text: Synthea's
//! DocumentReference carries a `fullUrl` as `identifier.value`, a string, and a conditional create on
//! that identifier must keep matching.
//!
//! Conditional references (`Patient?identifier=x|y`) are resolved against the store inside the same
//! transaction: exactly one match is required.
//!
//! To keep work off the store's single writer, most of this happens before the transaction
//! ([`References::rewrite_before`]): ids assigned by the server are known up front, and conditional
//! references are resolved on the read pool and *assumed*; inside the transaction each assumption is
//! confirmed by one indexed search, and a resource is rewritten there only if it refers to an id that
//! only the transaction decides (a conditional create's match).

use std::collections::{HashMap, HashSet};

use fhir::links::Link;
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
        fhir::links::for_each_link_mut(resource, |link, text| self.rewrite_link(&mut mode, link, text))
    }

    /// Rewrites what can be rewritten before the transaction (known `fullUrl`s, assumed conditional
    /// references) and reports the rest.
    pub fn rewrite_before(&mut self, resource: &mut Map<String, Value>) -> Unsettled {
        let mut unsettled = Unsettled::default();
        let mut mode = Mode::Before(&mut unsettled);
        // Nothing fails before the transaction: unresolvable references are left for it to report.
        let _ = fhir::links::for_each_link_mut(resource, |link, text| self.rewrite_link(&mut mode, link, text));
        unsettled
    }

    /// One element that may name a `fullUrl`: a `Reference.reference`, an element of a uri type or
    /// the narrative (see [`fhir::links`] for which elements R4 counts).
    fn rewrite_link(&mut self, mode: &mut Mode<'_, '_>, link: Link, text: &mut String) -> Result<(), FhirError> {
        if link == Link::Narrative {
            if !self.by_full_url.is_empty() {
                self.rewrite_narrative(text);
            }
            // Even when no id is known yet: a link to a conditional create's match is only settled
            // inside the transaction.
            if let Mode::Before(unsettled) = mode {
                unsettled.late |= self.late.iter().any(|l| text.contains(l.as_str()));
            }
            return Ok(());
        }
        // Only URLs and URNs can be fullUrls: relative references (`Patient/1`, `#p`) skip the lookup.
        let could_be_full_url = text.starts_with("urn:") || text.contains("://");
        let mapped = if could_be_full_url { self.by_full_url.get(text.as_str()) } else { None };
        if let Some(reference) = mapped {
            *text = reference.clone();
        } else if link == Link::Reference && is_conditional(text) {
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
    use serde_json::json;

    fn references() -> References {
        let mut refs = References::default();
        refs.insert("urn:uuid:a".into(), "Patient/a".into());
        refs.insert("urn:uuid:b".into(), "DocumentReference/b".into());
        refs.insert("http://example.org/fhir/Questionnaire/q".into(), "Questionnaire/q".into());
        refs
    }

    fn rewritten_before(refs: &mut References, resource: Value) -> (Value, Unsettled) {
        let Value::Object(mut resource) = resource else { panic!("a resource is an object") };
        let unsettled = refs.rewrite_before(&mut resource);
        (Value::Object(resource), unsettled)
    }

    #[test]
    fn strings_equal_to_a_full_url_are_data() {
        // Synthea's DocumentReference: a fullUrl as the value of its identifier.
        let document = json!({
            "resourceType": "DocumentReference",
            "identifier": [{"system": "urn:ietf:rfc:3986", "value": "urn:uuid:b"}],
            "status": "current",
            "description": "urn:uuid:a",
            "subject": {"reference": "urn:uuid:a", "display": "urn:uuid:a"},
            "content": [{"attachment": {"title": "urn:uuid:b"}}],
            "extension": [{"url": "http://example.org/note", "valueString": "urn:uuid:a"}]
        });
        let (after, _) = rewritten_before(&mut references(), document.clone());
        let mut expected = document;
        expected["subject"]["reference"] = json!("Patient/a");
        assert_eq!(after, expected);

        let observation = json!({
            "resourceType": "Observation", "status": "final", "code": {"text": "urn:uuid:a"},
            "note": [{"text": "urn:uuid:a"}], "valueString": "urn:uuid:b"
        });
        assert_eq!(rewritten_before(&mut references(), observation.clone()).0, observation);
    }

    #[test]
    fn references_uris_canonicals_and_narrative_links_are_rewritten() {
        let (after, _) = rewritten_before(
            &mut references(),
            json!({
                "resourceType": "Provenance",
                "meta": {"profile": ["http://example.org/fhir/Questionnaire/q"]},
                "text": {"status": "generated",
                         "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\"><a href=\"urn:uuid:a\">a</a></div>"},
                "target": [{"reference": "urn:uuid:b"}],
                "recorded": "2024-01-01T00:00:00Z",
                "policy": ["urn:uuid:a", "http://example.org/policy"],
                "agent": [{"who": {"reference": "urn:uuid:a", "identifier": {"system": "urn:uuid:a", "value": "urn:uuid:a"}}}],
                "extension": [{"url": "urn:uuid:a", "valueUri": "urn:uuid:b"},
                              {"url": "http://example.org/q", "valueCanonical": "http://example.org/fhir/Questionnaire/q"}],
                "_recorded": {"extension": [{"url": "http://example.org/by", "valueReference": {"reference": "urn:uuid:a"}}]}
            }),
        );
        assert_eq!(
            after,
            json!({
                "resourceType": "Provenance",
                "meta": {"profile": ["Questionnaire/q"]},
                "text": {"status": "generated",
                         "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\"><a href=\"Patient/a\">a</a></div>"},
                "target": [{"reference": "DocumentReference/b"}],
                "recorded": "2024-01-01T00:00:00Z",
                "policy": ["Patient/a", "http://example.org/policy"],
                "agent": [{"who": {"reference": "Patient/a", "identifier": {"system": "Patient/a", "value": "urn:uuid:a"}}}],
                "extension": [{"url": "Patient/a", "valueUri": "DocumentReference/b"},
                              {"url": "http://example.org/q", "valueCanonical": "Questionnaire/q"}],
                "_recorded": {"extension": [{"url": "http://example.org/by", "valueReference": {"reference": "Patient/a"}}]}
            })
        );
    }

    #[test]
    fn only_references_are_conditional_and_only_links_wait_for_the_transaction() {
        let mut refs = references();
        refs.insert_late("urn:uuid:late".into());
        let (_, unsettled) = rewritten_before(
            &mut refs,
            json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                   "identifier": [{"value": "urn:uuid:late"}, {"value": "Patient?identifier=x"}],
                   "subject": {"reference": "Patient?identifier=y"}}),
        );
        assert_eq!(unsettled.conditional, ["Patient?identifier=y"]);
        assert!(!unsettled.late, "an identifier's value is not a link");

        let (_, unsettled) = rewritten_before(
            &mut refs,
            json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                   "focus": [{"reference": "urn:uuid:late"}]}),
        );
        assert!(unsettled.late);

        // A narrative link to a late entry, in a Bundle whose other ids are not known yet either.
        let mut refs = References::default();
        refs.insert_late("urn:uuid:late".into());
        let (_, unsettled) = rewritten_before(
            &mut refs,
            json!({"resourceType": "Basic", "code": {"text": "x"},
                   "text": {"status": "generated",
                            "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\"><a href=\"urn:uuid:late\">x</a></div>"}}),
        );
        assert!(unsettled.late);
    }

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

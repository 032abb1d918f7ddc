//! The elements of a resource that can link to another resource, found by their R4 type.
//!
//! When a transaction is processed, R4 has the server replace each reference to an entry's `fullUrl`
//! "whether they are found in the resource ids, resource references, elements of type uri, url, oid,
//! uuid, and `<a href="" />` & `<img src="" />` in the narrative" (http.html#trules), and nowhere else: a
//! `string` such as `Identifier.value` that happens to equal a `fullUrl` is data and stays as it is.
//! [`for_each_link_mut`] hands exactly those elements to the caller:
//! - `Reference.reference` (a `string` by type, but the one element that is a reference);
//! - elements of type `uri`, `url`, `oid`, `uuid`, and `canonical`, which specializes `uri` (a profile or
//!   ValueSet in the Bundle may be named by its `fullUrl` like any other entry), `Extension.url` and choice
//!   elements of those types (`valueUri`) included;
//! - the narrative's `div`, whose `href` and `src` attributes the caller looks into.
//!
//! Resource ids are left out: an `id` cannot hold a URL or URN. The walk follows the validator's compiled
//! [`Schema`](crate::validate::schema): one hash probe per JSON property, into nested datatypes,
//! BackboneElements, primitives' `_x` extensions and `contained` and inline resources; it allocates nothing.
//! Properties the definitions do not know are skipped, since their type is unknown.

use crate::validate::schema::{ChildKind, NodeId, Schema};
use serde_json::{Map, Value};

/// The kind of element a link was found in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// `Reference.reference`: literal (`Patient/1`, a `fullUrl`, `#contained`) or conditional
    /// (`Patient?identifier=…`).
    Reference,
    /// An element of type `uri`, `url`, `oid`, `uuid` or `canonical`.
    Uri,
    /// `Narrative.div` (xhtml): links are in its `href` and `src` attributes.
    Narrative,
}

/// Calls `visit` with each link of `resource` (a resource's JSON object, `resourceType` included), in
/// document order, and stops at its first error. A resource of unknown type has none.
pub fn for_each_link_mut<E, F>(resource: &mut Map<String, Value>, mut visit: F) -> Result<(), E>
where
    F: FnMut(Link, &mut String) -> Result<(), E>,
{
    walk_resource(&crate::definitions().schema, resource, &mut visit)
}

fn walk_resource<E, F>(schema: &Schema, resource: &mut Map<String, Value>, visit: &mut F) -> Result<(), E>
where
    F: FnMut(Link, &mut String) -> Result<(), E>,
{
    let node = resource.get("resourceType").and_then(Value::as_str).and_then(|t| schema.by_type.get(t));
    match node {
        Some(&node) if schema.nodes[node as usize].is_resource => walk_object(schema, node, resource, visit),
        _ => Ok(()),
    }
}

fn walk_object<E, F>(schema: &Schema, node: NodeId, object: &mut Map<String, Value>, visit: &mut F) -> Result<(), E>
where
    F: FnMut(Link, &mut String) -> Result<(), E>,
{
    let node = &schema.nodes[node as usize];
    for (key, value) in object.iter_mut() {
        let (name, is_ext) = match key.strip_prefix('_') {
            Some(name) => (name, true),
            None => (key.as_str(), false),
        };
        let Some(child) = node.children.get(name) else { continue };
        match (child.kind, is_ext) {
            // `_x`: the id and extensions of primitive `x`; extensions carry links of their own.
            (ChildKind::Primitive(_, ext_node), true) => {
                for_each_object(value, |o| walk_object(schema, ext_node, o, visit))?
            }
            (ChildKind::Primitive(..), false) => {
                if let Some(link) = child.link {
                    for_each_string(value, |s| visit(link, s))?
                }
            }
            (ChildKind::Complex(inner), false) => for_each_object(value, |o| walk_object(schema, inner, o, visit))?,
            (ChildKind::Resource | ChildKind::Contained, false) => {
                for_each_object(value, |o| walk_resource(schema, o, visit))?
            }
            (_, true) => {}
        }
    }
    Ok(())
}

/// Each object of a single value or an array (nulls and other kinds are the validator's business).
fn for_each_object<E>(value: &mut Value, mut f: impl FnMut(&mut Map<String, Value>) -> Result<(), E>) -> Result<(), E> {
    match value {
        Value::Object(object) => f(object),
        Value::Array(items) => items.iter_mut().try_for_each(|item| match item {
            Value::Object(object) => f(object),
            _ => Ok(()),
        }),
        _ => Ok(()),
    }
}

fn for_each_string<E>(value: &mut Value, mut f: impl FnMut(&mut String) -> Result<(), E>) -> Result<(), E> {
    match value {
        Value::String(text) => f(text),
        Value::Array(items) => items.iter_mut().try_for_each(|item| match item {
            Value::String(text) => f(text),
            _ => Ok(()),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The links of `resource` as `(kind, value)`, each replaced by `seen` to show it was writable.
    fn links(mut resource: Value) -> (Vec<(Link, String)>, Value) {
        let mut found = Vec::new();
        for_each_link_mut::<(), _>(resource.as_object_mut().unwrap(), |link, text| {
            found.push((link, std::mem::replace(text, "seen".into())));
            Ok(())
        })
        .unwrap();
        (found, resource)
    }

    #[test]
    fn only_references_uri_types_and_narratives_are_links() {
        let (found, after) = links(json!({
            "resourceType": "DocumentReference",
            "id": "d1",
            "meta": {"profile": ["urn:uuid:canonical"]},
            "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>"},
            "identifier": [{"system": "urn:ietf:rfc:3986", "value": "urn:uuid:b"}],
            "status": "current",
            "subject": {"reference": "urn:uuid:a", "display": "urn:uuid:a"},
            "description": "urn:uuid:a",
            "content": [{"attachment": {"url": "urn:uuid:url", "title": "urn:uuid:a"}}],
            "extension": [
                {"url": "http://x/e1", "valueUri": "urn:uuid:uri"},
                {"url": "http://x/e2", "valueString": "urn:uuid:a"},
                {"url": "http://x/e3", "valueReference": {"reference": "Patient?identifier=x"}}
            ],
            "_status": {"extension": [{"url": "http://x/e4", "valueOid": "urn:oid:1.2"}]},
            "unknownElement": {"reference": "urn:uuid:a"}
        }));
        let found: Vec<(Link, &str)> = found.iter().map(|(l, s)| (*l, s.as_str())).collect();
        assert_eq!(
            found,
            [
                (Link::Uri, "urn:uuid:canonical"),
                (Link::Narrative, "<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>"),
                (Link::Uri, "urn:ietf:rfc:3986"),
                (Link::Reference, "urn:uuid:a"),
                (Link::Uri, "urn:uuid:url"),
                (Link::Uri, "http://x/e1"),
                (Link::Uri, "urn:uuid:uri"),
                (Link::Uri, "http://x/e2"),
                (Link::Uri, "http://x/e3"),
                (Link::Reference, "Patient?identifier=x"),
                (Link::Uri, "http://x/e4"),
                (Link::Uri, "urn:oid:1.2"),
            ]
        );
        // Strings stay as they are.
        assert_eq!(after["identifier"][0]["value"], "urn:uuid:b");
        assert_eq!(after["subject"]["display"], "urn:uuid:a");
        assert_eq!(after["extension"][1]["valueString"], "urn:uuid:a");
        assert_eq!(after["unknownElement"]["reference"], "urn:uuid:a");
        assert_eq!(after["id"], "d1");
    }

    #[test]
    fn contained_inline_and_nested_elements_are_walked() {
        let (found, _) = links(json!({
            "resourceType": "Parameters",
            "parameter": [{"name": "p", "part": [{"name": "q", "valueCanonical": "urn:uuid:c"}],
                           "resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                                        "contained": [{"resourceType": "Patient", "id": "p",
                                                       "link": [{"other": {"reference": "urn:uuid:p"}, "type": "seealso"}]}],
                                        "subject": {"reference": "#p"}}}]
        }));
        let found: Vec<&str> = found.iter().map(|(_, s)| s.as_str()).collect();
        assert_eq!(found, ["urn:uuid:c", "urn:uuid:p", "#p"]);
    }

    #[test]
    fn primitive_arrays_and_unknown_types() {
        let (found, _) = links(json!({"resourceType": "Provenance", "policy": ["urn:uuid:1", "urn:uuid:2"]}));
        assert_eq!(found.len(), 2);
        let (found, _) = links(json!({"resourceType": "HumanName", "text": "urn:uuid:1"}));
        assert!(found.is_empty(), "a datatype is not a resource");
        let (found, _) = links(json!({"resourceType": "Nope", "url": "urn:uuid:1"}));
        assert!(found.is_empty());
    }
}

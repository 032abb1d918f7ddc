//! Syntax of `Reference.reference`.
//!
//! Accepted forms: a local reference to a contained resource (`#id`, or `#` for the container itself); a
//! relative literal reference `Type/id` or `Type/id/_history/vid` with a known resource type and valid ids;
//! an absolute URL (`https://server/fhir/Patient/1`); `urn:uuid:` and `urn:oid:` (bundle-internal
//! identities); and a conditional reference `Type?query`, which the transaction code resolves later. Whether
//! the target exists, or is of a type the element allows, is not checked here.

use super::primitive::{is_oid, is_uuid};
use crate::{is_valid_id, Definitions};

/// `Ok` if `reference` has one of the accepted forms; otherwise why not.
pub(crate) fn check(defs: &Definitions, reference: &str) -> Result<(), String> {
    if reference.bytes().any(|b| b.is_ascii_whitespace()) {
        return Err("a reference must not contain whitespace".into());
    }
    if let Some(local) = reference.strip_prefix('#') {
        return if local.is_empty() || is_valid_id(local) {
            Ok(())
        } else {
            Err(format!("'{reference}' is not a valid local reference (#id)"))
        };
    }
    if reference.starts_with("urn:uuid:") {
        return if is_uuid(reference) { Ok(()) } else { Err(format!("'{reference}' is not a valid urn:uuid")) };
    }
    if reference.starts_with("urn:oid:") {
        return if is_oid(reference) { Ok(()) } else { Err(format!("'{reference}' is not a valid urn:oid")) };
    }
    // Conditional: the part before '?' is a bare name (the query itself may hold URLs).
    if let Some((resource_type, query)) =
        reference.split_once('?').filter(|(t, _)| t.bytes().all(|b| b.is_ascii_alphanumeric()))
    {
        return if defs.is_resource_type(resource_type) && !query.is_empty() {
            Ok(())
        } else {
            Err(format!("'{reference}' is not a valid conditional reference (Type?query with a known type)"))
        };
    }
    if let Some((scheme, rest)) = reference.split_once("://") {
        let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
        return if scheme_ok && !rest.is_empty() {
            Ok(())
        } else {
            Err(format!("'{reference}' is not a valid absolute URL"))
        };
    }
    let mut parts = reference.split('/');
    let valid = match (parts.next(), parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(t), Some(id), None, None, None) => defs.is_resource_type(t) && is_valid_id(id),
        (Some(t), Some(id), Some("_history"), Some(vid), None) => {
            defs.is_resource_type(t) && is_valid_id(id) && is_valid_id(vid)
        }
        _ => false,
    };
    if valid {
        Ok(())
    } else {
        Err(format!(
            "'{reference}' is not a valid reference: expected Type/id (a known resource type), an absolute URL, \
             #id, urn:uuid: or urn:oid:"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::check;
    use crate::definitions;

    #[test]
    fn accepted_forms() {
        for ok in [
            "Patient/example",
            "Patient/example/_history/2",
            "#p1",
            "#",
            "http://example.org/fhir/Patient/1",
            "urn:uuid:c757873d-ec9a-4326-a141-556f43239520",
            "urn:oid:1.2.3",
            "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|9999",
        ] {
            assert_eq!(check(definitions(), ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn rejected_forms() {
        for bad in [
            "Patient",
            "Patient/",
            "Foo/1",
            "patient/1",
            "Patient/a_b",
            "Patient/1/_history",
            "Patient/1/history/2",
            "Patient/1 ",
            "#a_b",
            "urn:uuid:123",
            "Foo?x=1",
            "Patient?",
            "://x",
        ] {
            assert!(check(definitions(), bad).is_err(), "{bad}");
        }
    }
}

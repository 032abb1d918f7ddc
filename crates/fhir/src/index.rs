//! Search index values of a resource, computed from the R4 SearchParameters' FHIRPath expressions.
//!
//! This is the one code path that turns a resource into the values search matches on, whichever
//! storage backend keeps them. Every parameter's expression (the branch that applies to the
//! resource's type) is parsed once per process; extraction evaluates them and converts the selected
//! elements by datatype — a `CodeableConcept` yields one token per coding, an `Identifier` its
//! `system|value`, a `Reference` its target type and id. Compartment membership (which patient,
//! encounter, practitioner… a resource belongs to) follows from the CompartmentDefinitions and the
//! reference values.
//!
//! Covered so far: token, reference (with compartments) and date parameters. `_id` and
//! `_lastUpdated` are not extracted: stores keep them as columns of the resource itself.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::Value;

use crate::fhirpath::{self, Context, Expression, Item};
use crate::search_param::SearchParamType;

/// Index values of one resource.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ResourceIndex {
    pub tokens: Vec<TokenValue>,
    pub dates: Vec<DateValue>,
    pub references: Vec<ReferenceValue>,
    pub compartments: Vec<CompartmentValue>,
}

/// `system|code` of a token parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenValue {
    pub param: &'static str,
    pub system: Option<String>,
    pub code: String,
}

/// The interval `[low, high)` (microseconds since the epoch, UTC) that a date parameter's value
/// covers at its precision: `1974-12-25` is that whole day; a Period from its start to the end of its
/// end; an open end is `i64::MIN` or `i64::MAX`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateValue {
    pub param: &'static str,
    pub low: i64,
    pub high: i64,
}

/// A reference parameter's target: a local `Type/id`, or an absolute or canonical URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferenceValue {
    pub param: &'static str,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    /// The reference as written when it is not a relative `Type/id` (absolute URL, canonical).
    pub url: Option<String>,
}

/// Membership of a compartment, e.g. (`Patient`, `123`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompartmentValue {
    pub compartment: &'static str,
    pub id: String,
}

/// A parameter ready to evaluate on one resource type.
struct Compiled {
    code: &'static str,
    kind: SearchParamType,
    expression: Expression,
}

/// Per resource type: its indexed parameters, and for each compartment the parameters that place a
/// resource in it.
struct Plan {
    params: Vec<Compiled>,
    compartments: Vec<(&'static str, Vec<&'static str>)>,
}

fn plans() -> &'static HashMap<String, Plan> {
    static PLANS: OnceLock<HashMap<String, Plan>> = OnceLock::new();
    PLANS.get_or_init(|| {
        let definitions = crate::definitions();
        let compartment_types: Vec<&'static str> = definitions.compartment_types().collect();
        definitions
            .resource_types()
            .iter()
            .map(|resource_type| {
                let params = definitions
                    .search_params(resource_type)
                    .into_iter()
                    .filter(|p| {
                        matches!(p.kind, SearchParamType::Token | SearchParamType::Reference | SearchParamType::Date)
                    })
                    .filter(|p| p.code != "_id" && p.code != "_lastUpdated")
                    .filter_map(|p| {
                        let source = p.expression_for(resource_type)?;
                        let expression = fhirpath::parse(&source).ok()?;
                        Some(Compiled { code: p.code.as_str(), kind: p.kind, expression })
                    })
                    .collect();
                let compartments = compartment_types
                    .iter()
                    .filter_map(|c| {
                        let codes = definitions.compartment_params(c, resource_type)?;
                        let codes: Vec<&'static str> =
                            codes.iter().map(String::as_str).filter(|code| *code != "{def}").collect();
                        (!codes.is_empty()).then_some((*c, codes))
                    })
                    .collect();
                (resource_type.clone(), Plan { params, compartments })
            })
            .collect()
    })
}

/// Whether `code` is a parameter of `resource_type` whose values [`extract`] indexes.
pub fn is_indexed(resource_type: &str, code: &str) -> bool {
    plans().get(resource_type).is_some_and(|plan| plan.params.iter().any(|p| p.code == code))
}

/// The index values of `resource` (of type `resource_type`).
pub fn extract(resource_type: &str, resource: &Value) -> ResourceIndex {
    let mut index = ResourceIndex::default();
    let Some(plan) = plans().get(resource_type) else {
        return index;
    };
    let context = Context::new().with_resource(resource).with_root_resource(resource);
    for param in &plan.params {
        // An expression that fails on unusual data indexes nothing rather than failing the write:
        // the resource was already validated, and search simply will not find it by that value.
        let Ok(items) = fhirpath::evaluate(&param.expression, resource, &context) else { continue };
        for item in &items {
            match param.kind {
                SearchParamType::Token => tokens(param.code, item, &mut index.tokens),
                SearchParamType::Reference => references(param.code, item, &mut index.references),
                SearchParamType::Date => dates(param.code, item, &mut index.dates),
                _ => {}
            }
        }
    }
    for (compartment, codes) in &plan.compartments {
        for reference in &index.references {
            if codes.contains(&reference.param) && reference.target_type.as_deref() == Some(compartment) {
                let id = reference.target_id.clone().unwrap_or_default();
                let value = CompartmentValue { compartment, id };
                if !index.compartments.contains(&value) {
                    index.compartments.push(value);
                }
            }
        }
    }
    index.tokens.dedup();
    index.dates.dedup();
    index.references.dedup();
    index
}

fn text(value: &Value, key: &str) -> Option<String> {
    value.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn tokens(param: &'static str, item: &Item<'_>, out: &mut Vec<TokenValue>) {
    let mut push = |system: Option<String>, code: Option<String>| {
        if let Some(code) = code.filter(|c| !c.is_empty()) {
            out.push(TokenValue { param, system, code });
        }
    };
    match item {
        Item::Node(node) => {
            let value = node.value();
            match node.type_name() {
                "Coding" => push(text(value, "system"), text(value, "code")),
                "CodeableConcept" => {
                    for coding in value.get("coding").and_then(Value::as_array).into_iter().flatten() {
                        push(text(coding, "system"), text(coding, "code"));
                    }
                }
                "Identifier" => push(text(value, "system"), text(value, "value")),
                "ContactPoint" => push(text(value, "system"), text(value, "value")),
                _ => match value {
                    Value::String(s) => push(None, Some(s.clone())),
                    Value::Bool(b) => push(None, Some(b.to_string())),
                    Value::Number(n) => push(None, Some(n.to_string())),
                    _ => {}
                },
            }
        }
        Item::String(s) => push(None, Some(s.to_string())),
        Item::Boolean(b) => push(None, Some(b.to_string())),
        Item::Integer(i) => push(None, Some(i.to_string())),
        _ => {}
    }
}

fn dates(param: &'static str, item: &Item<'_>, out: &mut Vec<DateValue>) {
    let Item::Node(node) = item else { return };
    let value = node.value();
    let range =
        |text: Option<&str>| text.and_then(|t| crate::datetime::parse_datetime(t).ok()).map(|d| d.range_micros());
    match node.type_name() {
        "date" | "dateTime" | "instant" => {
            if let Some((low, high)) = range(value.as_str()) {
                out.push(DateValue { param, low, high });
            }
        }
        "Period" => {
            let start = range(value.get("start").and_then(Value::as_str));
            let end = range(value.get("end").and_then(Value::as_str));
            if start.is_some() || end.is_some() {
                let low = start.map_or(i64::MIN, |(low, _)| low);
                let high = end.map_or(i64::MAX, |(_, high)| high);
                out.push(DateValue { param, low, high });
            }
        }
        "Timing" => {
            for event in value.get("event").and_then(Value::as_array).into_iter().flatten() {
                if let Some((low, high)) = range(event.as_str()) {
                    out.push(DateValue { param, low, high });
                }
            }
        }
        _ => {}
    }
}

fn references(param: &'static str, item: &Item<'_>, out: &mut Vec<ReferenceValue>) {
    let Item::Node(node) = item else { return };
    let value = node.value();
    let written = match node.type_name() {
        "Reference" => value.get("reference").and_then(Value::as_str),
        _ => value.as_str(), // canonical, uri
    };
    let Some(written) = written.filter(|w| !w.starts_with('#') && !w.is_empty()) else { return };
    out.push(parse_reference(param, written));
}

/// Splits a literal reference into type and id where it names one (`Patient/1`,
/// `Patient/1/_history/2`, `https://host/fhir/Patient/1`).
fn parse_reference(param: &'static str, written: &str) -> ReferenceValue {
    let absolute = written.contains("://") || written.starts_with("urn:");
    let path = written.split(['?', '|']).next().unwrap_or(written);
    let segments: Vec<&str> = path.split('/').collect();
    let typed = |t: &str, id: &str| crate::definitions().is_resource_type(t) && crate::is_valid_id(id);
    let found = match segments.as_slice() {
        [.., t, id, "_history", _] if typed(t, id) => Some((*t, *id)),
        [.., t, id] if typed(t, id) => Some((*t, *id)),
        _ => None,
    };
    ReferenceValue {
        param,
        target_type: found.map(|(t, _)| t.to_owned()),
        target_id: found.map(|(_, id)| id.to_owned()),
        url: absolute.then(|| written.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn observation_tokens_references_and_compartments() {
        let observation = json!({
            "resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}, {"code": "weight"}]},
            "subject": {"reference": "Patient/p1"},
            "performer": [{"reference": "Practitioner/d1"}, {"reference": "https://other/fhir/Patient/p2"}],
            "identifier": [{"system": "urn:x", "value": "o1"}],
            "meta": {"tag": [{"system": "urn:t", "code": "t1"}]}
        });
        let index = extract("Observation", &observation);
        let has_token = |param: &str, system: Option<&str>, code: &str| {
            index.tokens.iter().any(|t| t.param == param && t.system.as_deref() == system && t.code == code)
        };
        assert!(has_token("code", Some("http://loinc.org"), "29463-7"));
        assert!(has_token("code", None, "weight"));
        assert!(has_token("status", None, "final"));
        assert!(has_token("identifier", Some("urn:x"), "o1"));
        assert!(has_token("_tag", Some("urn:t"), "t1"));
        let subject = index.references.iter().find(|r| r.param == "subject").unwrap();
        assert_eq!((subject.target_type.as_deref(), subject.target_id.as_deref()), (Some("Patient"), Some("p1")));
        assert!(index.references.iter().any(|r| r.param == "patient" && r.target_id.as_deref() == Some("p1")));
        let remote = index.references.iter().find(|r| r.url.is_some()).unwrap();
        assert_eq!(remote.target_id.as_deref(), Some("p2"));
        assert!(index.compartments.contains(&CompartmentValue { compartment: "Patient", id: "p1".into() }));
        assert!(index.compartments.contains(&CompartmentValue { compartment: "Practitioner", id: "d1".into() }));
        assert!(is_indexed("Observation", "code"));
        assert!(is_indexed("Observation", "date"));
        assert!(!is_indexed("Observation", "_id"));
        assert!(!is_indexed("Observation", "value-quantity"));
    }

    #[test]
    fn dates_cover_their_precision_and_periods() {
        let patient = json!({"resourceType": "Patient", "birthDate": "1974-12-25"});
        let index = extract("Patient", &patient);
        let birth = index.dates.iter().find(|d| d.param == "birthdate").unwrap();
        assert_eq!(birth.high - birth.low, 86_400_000_000, "a day");
        let encounter = json!({"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"},
            "period": {"start": "2020-01-01T10:00:00Z"}});
        let index = extract("Encounter", &encounter);
        let date = index.dates.iter().find(|d| d.param == "date").unwrap();
        assert_eq!(date.high, i64::MAX, "an open end");
        let observation = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
            "effectivePeriod": {"start": "2020-01", "end": "2020-02"}});
        let index = extract("Observation", &observation);
        let date = index.dates.iter().find(|d| d.param == "date").unwrap();
        let (low, _) = crate::datetime::parse_datetime("2020-01").unwrap().range_micros();
        let (_, high) = crate::datetime::parse_datetime("2020-02").unwrap().range_micros();
        assert_eq!((date.low, date.high), (low, high));
    }

    #[test]
    fn references_by_shape() {
        assert_eq!(parse_reference("p", "Patient/1/_history/2").target_id.as_deref(), Some("1"));
        assert_eq!(parse_reference("p", "urn:uuid:abc").target_type, None);
        assert_eq!(parse_reference("p", "http://x/ValueSet/vs|1.0").target_type.as_deref(), Some("ValueSet"));
        assert_eq!(parse_reference("p", "Nope/1").target_type, None);
    }
}

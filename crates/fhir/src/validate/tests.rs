//! One broken variant per rule: each asserts the exact issues (expression and code) it produces.

use super::{validate_resource, Severity};
use serde_json::{json, Value};

/// `(expression, code)` of every issue.
fn issues(resource: Value) -> Vec<(String, &'static str)> {
    validate_resource(&resource).into_iter().map(|i| (i.expression, i.code.as_str())).collect()
}

fn one(expression: &str, code: &'static str) -> Vec<(String, &'static str)> {
    vec![(expression.to_string(), code)]
}

fn patient(extra: Value) -> Value {
    let mut p = json!({"resourceType": "Patient", "id": "p1"});
    p.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    p
}

#[test]
fn a_rich_valid_resource_has_no_issues() {
    let p = patient(json!({
        "meta": {"versionId": "1", "lastUpdated": "2020-01-01T00:00:00Z", "tag": [{"system": "urn:x", "code": "t"}]},
        "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Pat</div>"},
        "extension": [{"url": "http://example.org/e", "valueQuantity": {"value": 1.5, "unit": "kg"}}],
        "name": [{"given": ["A", null, "C"], "_given": [null, {"extension": [{"url": "http://x", "valueString": "B"}]}, null]}],
        "birthDate": "1970-02-28",
        "_birthDate": {"extension": [{"url": "http://x", "valueDateTime": "1970-02-28T10:00:00+01:00"}]},
        "deceasedBoolean": false,
        "gender": "female",
        "multipleBirthInteger": 2,
        "contained": [{"resourceType": "Organization", "id": "o1", "name": "Acme"}],
        "managingOrganization": {"reference": "#o1"},
        "generalPractitioner": [{"reference": "Practitioner/x/_history/2"}, {"reference": "urn:uuid:c757873d-ec9a-4326-a141-556f43239520"}]
    }));
    assert_eq!(issues(p), vec![]);
}

#[test]
fn unknown_element() {
    assert_eq!(issues(patient(json!({"foo": 1}))), one("Patient.foo", "structure"));
    assert_eq!(issues(patient(json!({"name": [{"first": "A"}]}))), one("Patient.name[0].first", "structure"));
    assert_eq!(
        issues(patient(json!({"_name": {"id": "x"}}))),
        one("Patient.name", "structure"),
        "_x of a non-primitive"
    );
}

#[test]
fn missing_required_elements() {
    let obs = json!({"resourceType": "Observation", "code": {"text": "x"}});
    assert_eq!(issues(obs), one("Observation.status", "required"));
    let q = json!({"resourceType": "Questionnaire", "status": "draft",
        "item": [{"linkId": "1", "type": "group", "item": [{"type": "string"}]}]});
    assert_eq!(issues(q), one("Questionnaire.item[0].item[0].linkId", "required"), "via contentReference");
    assert_eq!(
        issues(patient(json!({"extension": [{"valueString": "x"}]}))),
        one("Patient.extension[0].url", "required")
    );
    // A primitive present only through its extension counts as present.
    let obs = json!({"resourceType": "Observation", "code": {"text": "x"},
        "_status": {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason", "valueCode": "unknown"}]}});
    assert_eq!(issues(obs), vec![]);
}

#[test]
fn cardinality_arrays() {
    assert_eq!(issues(patient(json!({"birthDate": ["2000"]}))), one("Patient.birthDate", "structure"));
    assert_eq!(issues(patient(json!({"name": {"text": "A"}}))), one("Patient.name", "structure"));
    assert_eq!(issues(patient(json!({"name": []}))), one("Patient.name", "structure"));
    assert_eq!(issues(patient(json!({"name": [{}]}))), one("Patient.name[0]", "structure"));
    assert_eq!(issues(patient(json!({"birthDate": null}))), one("Patient.birthDate", "structure"));
    assert_eq!(issues(patient(json!({"name": [null]}))), one("Patient.name[0]", "structure"));
}

#[test]
fn primitive_formats_and_json_types() {
    assert_eq!(issues(patient(json!({"birthDate": "2020-13-01"}))), one("Patient.birthDate", "value"));
    assert_eq!(issues(patient(json!({"birthDate": "2020-01-01T10:00:00Z"}))), one("Patient.birthDate", "value"));
    assert_eq!(issues(json!({"resourceType": "Patient", "id": "a_b"})), one("Patient.id", "value"));
    assert_eq!(issues(patient(json!({"active": "true"}))), one("Patient.active", "structure"));
    assert_eq!(issues(patient(json!({"multipleBirthInteger": 1.5}))), one("Patient.multipleBirthInteger", "value"));
    assert_eq!(issues(patient(json!({"name": [{"given": ["A", ""]}]}))), one("Patient.name[0].given[1]", "value"));
    assert_eq!(issues(patient(json!({"gender": "female "}))), one("Patient.gender", "value"));
    let text = json!({"text": {"status": "generated", "div": "<div>no namespace</div>"}});
    assert_eq!(issues(patient(text)), one("Patient.text.div", "value"));
    assert_eq!(issues(patient(json!({"name": "A"}))), one("Patient.name", "structure"));
}

#[test]
fn choice_types() {
    let both = patient(json!({"deceasedBoolean": true, "deceasedDateTime": "2020"}));
    assert_eq!(issues(both), one("Patient.deceasedDateTime", "structure"));
    let obs = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "valueFoo": 1});
    assert_eq!(issues(obs), one("Observation.valueFoo", "structure"));
    let obs = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "value": 1});
    assert_eq!(issues(obs), one("Observation.value", "structure"));
    // A value and its own extension are one choice, not two.
    let ext = patient(json!({"deceasedDateTime": "2020", "_deceasedDateTime": {"id": "d"}}));
    assert_eq!(issues(ext), vec![]);
}

#[test]
fn resource_type() {
    assert_eq!(issues(json!({"resourceType": "Foo"})), one("resourceType", "not-supported"));
    assert_eq!(issues(json!({"resourceType": "DomainResource"})), one("resourceType", "not-supported"));
    assert_eq!(issues(json!({"id": "x"})), one("resourceType", "required"));
    let not_object = validate_resource(&json!([1]));
    assert_eq!(not_object.len(), 1);
    assert_eq!(not_object[0].severity, Severity::Fatal);
}

#[test]
fn references() {
    for bad in ["Foo/1", "Patient/a_b", "Patient/1/_history", "not a ref"] {
        let obs = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "subject": {"reference": bad}});
        assert_eq!(issues(obs), one("Observation.subject.reference", "value"), "{bad}");
    }
    let conditional = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
        "subject": {"reference": "Patient?identifier=urn:x|1"}});
    assert_eq!(issues(conditional), vec![]);
}

#[test]
fn required_binding_codes() {
    assert_eq!(issues(patient(json!({"gender": "bloke"}))), one("Patient.gender", "code-invalid"));
    let obs = json!({"resourceType": "Observation", "status": "finished", "code": {"text": "x"}});
    assert_eq!(issues(obs), one("Observation.status", "code-invalid"));
}

#[test]
fn contained_resources() {
    let no_id = patient(json!({"contained": [{"resourceType": "Organization", "name": "A"}]}));
    assert_eq!(issues(no_id), one("Patient.contained[0]", "required"));
    let nested = patient(json!({"contained": [{"resourceType": "Organization", "id": "o",
        "contained": [{"resourceType": "Organization", "id": "o2"}]}]}));
    assert_eq!(issues(nested), one("Patient.contained[0].contained", "invariant"));
    let bad = patient(json!({"contained": [{"resourceType": "Organization", "id": "o", "nom": "A"}]}));
    assert_eq!(issues(bad), one("Patient.contained[0].nom", "structure"));
    let unknown = patient(json!({"contained": [{"resourceType": "Nope", "id": "o"}]}));
    assert_eq!(issues(unknown), one("Patient.contained[0].resourceType", "not-supported"));
}

#[test]
fn bundle_entries_are_validated_as_resources() {
    let bundle = json!({"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": "urn:uuid:c757873d-ec9a-4326-a141-556f43239520", "resource": {"resourceType": "Patient", "birthDate": "1990-02-30"}}
    ]});
    assert_eq!(issues(bundle), one("Bundle.entry[0].resource.birthDate", "value"));
}

#[test]
fn primitive_extensions() {
    let misaligned = patient(json!({"name": [{"given": ["A", "B"], "_given": [null]}]}));
    assert_eq!(issues(misaligned), one("Patient.name[0].given", "structure"));
    let both_null = patient(json!({"name": [{"given": ["A", null], "_given": [null, null]}]}));
    assert_eq!(issues(both_null), one("Patient.name[0].given[1]", "structure"));
    assert_eq!(issues(patient(json!({"_birthDate": "x"}))), one("Patient.birthDate", "structure"));
    assert_eq!(issues(patient(json!({"_birthDate": {"value": "x"}}))), one("Patient.birthDate.value", "structure"));
    assert_eq!(issues(patient(json!({"_birthDate": [{"id": "x"}]}))), one("Patient.birthDate", "structure"));
    let only_ext = patient(json!({"name": [{"_given": [{"id": "g"}]}]}));
    assert_eq!(issues(only_ext), vec![]);
}

#[test]
fn issues_render_as_operation_outcome_issues() {
    let issue = &validate_resource(&patient(json!({"foo": 1})))[0];
    assert_eq!(
        issue.to_json(),
        json!({"severity": "error", "code": "structure", "diagnostics": "unknown element 'foo' in Patient", "expression": ["Patient.foo"]})
    );
}

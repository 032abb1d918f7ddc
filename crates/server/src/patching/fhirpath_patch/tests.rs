//! Unit tests: one behaviour per operation and per error. The official cases are in `official_cases`.

mod fhir_xml;
mod official_cases;

use super::apply;
use crate::patching::json_patch::PatchError;
use serde_json::{json, Value};

/// An `operation` parameter: its type, path and further parts (`{"name": "index", "valueInteger": 0}`).
fn operation(kind: &str, path: &str, parts: &[Value]) -> Value {
    let mut all = vec![json!({"name": "type", "valueCode": kind}), json!({"name": "path", "valueString": path})];
    all.extend_from_slice(parts);
    json!({"name": "operation", "part": all})
}

fn parameters(operations: &[Value]) -> Value {
    json!({"resourceType": "Parameters", "parameter": operations})
}

fn patched(resource: Value, operations: &[Value]) -> Result<Value, PatchError> {
    let mut resource = resource;
    apply(&mut resource, &parameters(operations))?;
    Ok(resource)
}

fn patient(content: Value) -> Value {
    let mut resource = json!({"resourceType": "Patient"});
    resource.as_object_mut().unwrap().extend(content.as_object().unwrap().clone());
    resource
}

fn is_malformed(result: Result<Value, PatchError>) -> bool {
    matches!(result, Err(PatchError::Malformed(_)))
}

fn is_unprocessable(result: Result<Value, PatchError>) -> bool {
    matches!(result, Err(PatchError::Unprocessable(_)))
}

#[test]
fn add_sets_a_primitive_in_fhir_json_form() {
    let ops = [operation(
        "add",
        "Patient",
        &[json!({"name": "name", "valueString": "active"}), json!({"name": "value", "valueBoolean": true})],
    )];
    assert_eq!(patched(patient(json!({})), &ops).unwrap(), patient(json!({"active": true})));
}

#[test]
fn add_appends_to_a_list_keeping_underscore_siblings_aligned() {
    let before = patient(json!({"name": [{"given": ["A", "B"], "_given": [{"id": "a"}, null]}]}));
    let ops = [operation(
        "add",
        "Patient.name[0]",
        &[
            json!({"name": "name", "valueString": "given"}),
            json!({"name": "value", "valueString": "C", "_valueString": {"id": "c"}}),
        ],
    )];
    let after = patient(json!({"name": [{"given": ["A", "B", "C"], "_given": [{"id": "a"}, null, {"id": "c"}]}]}));
    assert_eq!(patched(before, &ops).unwrap(), after);
}

#[test]
fn add_names_a_choice_element_by_the_value_type() {
    let ops = [operation(
        "add",
        "Patient",
        &[json!({"name": "name", "valueString": "deceased"}), json!({"name": "value", "valueDateTime": "2020-01-01"})],
    )];
    assert_eq!(patched(patient(json!({})), &ops).unwrap(), patient(json!({"deceasedDateTime": "2020-01-01"})));
}

#[test]
fn add_to_a_primitive_goes_into_its_underscore_object() {
    let extension = json!({"url": "http://example.org/x", "valueString": "v"});
    let ops = [operation(
        "add",
        "Patient.birthDate",
        &[json!({"name": "name", "valueString": "extension"}), json!({"name": "value", "valueExtension": extension})],
    )];
    let after = patient(json!({"birthDate": "2000-01-01", "_birthDate": {"extension": [extension]}}));
    assert_eq!(patched(patient(json!({"birthDate": "2000-01-01"})), &ops).unwrap(), after);
}

#[test]
fn add_builds_a_backbone_element_from_parts() {
    let value = json!({"name": "value", "part": [
        {"name": "gender", "valueCode": "female"},
        {"name": "telecom", "valueContactPoint": {"value": "1"}},
        {"name": "telecom", "valueContactPoint": {"value": "2"}},
    ]});
    let ops = [operation("add", "Patient", &[json!({"name": "name", "valueString": "contact"}), value])];
    let after = patient(json!({"contact": [{"telecom": [{"value": "1"}, {"value": "2"}], "gender": "female"}]}));
    assert_eq!(patched(patient(json!({})), &ops).unwrap(), after);
}

#[test]
fn add_to_a_present_single_element_is_unprocessable() {
    let ops = [operation(
        "add",
        "Patient",
        &[json!({"name": "name", "valueString": "birthDate"}), json!({"name": "value", "valueDate": "2000-01-01"})],
    )];
    assert!(is_unprocessable(patched(patient(json!({"birthDate": "1999-01-01"})), &ops)));
}

#[test]
fn insert_puts_the_value_at_the_index() {
    let before = patient(json!({"name": [{"given": ["A", "C"]}]}));
    let ops = [operation(
        "insert",
        "Patient.name.given",
        &[json!({"name": "index", "valueInteger": 1}), json!({"name": "value", "valueString": "B"})],
    )];
    assert_eq!(patched(before, &ops).unwrap(), patient(json!({"name": [{"given": ["A", "B", "C"]}]})));
}

#[test]
fn insert_into_an_empty_list_finds_its_holder() {
    let ops = [operation(
        "insert",
        "Patient.identifier",
        &[json!({"name": "index", "valueInteger": 0}), json!({"name": "value", "valueIdentifier": {"value": "1"}})],
    )];
    assert_eq!(patched(patient(json!({})), &ops).unwrap(), patient(json!({"identifier": [{"value": "1"}]})));
}

#[test]
fn insert_index_out_of_range_is_unprocessable() {
    let ops = [operation(
        "insert",
        "Patient.name.given",
        &[json!({"name": "index", "valueInteger": 2}), json!({"name": "value", "valueString": "B"})],
    )];
    assert!(is_unprocessable(patched(patient(json!({"name": [{"given": ["A"]}]})), &ops)));
}

#[test]
fn delete_removes_a_list_item_and_its_underscore_twin() {
    let before = patient(json!({"name": [{"given": ["A", "B"], "_given": [{"id": "a"}, {"id": "b"}]}]}));
    let ops = [operation("delete", "Patient.name.given[0]", &[])];
    assert_eq!(patched(before, &ops).unwrap(), patient(json!({"name": [{"given": ["B"], "_given": [{"id": "b"}]}]})));
}

#[test]
fn delete_of_nothing_is_a_no_op() {
    let ops = [operation("delete", "Patient.birthDate", &[])];
    assert_eq!(patched(patient(json!({})), &ops).unwrap(), patient(json!({})));
}

#[test]
fn delete_of_several_is_unprocessable() {
    let ops = [operation("delete", "Patient.name", &[])];
    assert!(is_unprocessable(patched(patient(json!({"name": [{"text": "a"}, {"text": "b"}]})), &ops)));
}

#[test]
fn replace_sets_the_one_selected_element() {
    let ops =
        [operation("replace", "Patient.name.where(text = 'b').text", &[json!({"name": "value", "valueString": "c"})])];
    let before = patient(json!({"name": [{"text": "a"}, {"text": "b"}]}));
    assert_eq!(patched(before, &ops).unwrap(), patient(json!({"name": [{"text": "a"}, {"text": "c"}]})));
}

#[test]
fn replace_may_change_a_choice_type() {
    let ops = [operation("replace", "Patient.deceased", &[json!({"name": "value", "valueDateTime": "2020-01-01"})])];
    let before = patient(json!({"deceasedBoolean": true, "_deceasedBoolean": {"id": "d"}}));
    assert_eq!(patched(before, &ops).unwrap(), patient(json!({"deceasedDateTime": "2020-01-01"})));
}

#[test]
fn replace_of_nothing_or_several_is_unprocessable() {
    let ops = [operation("replace", "Patient.name.text", &[json!({"name": "value", "valueString": "c"})])];
    assert!(is_unprocessable(patched(patient(json!({})), &ops)));
    assert!(is_unprocessable(patched(patient(json!({"name": [{"text": "a"}, {"text": "b"}]})), &ops)));
}

#[test]
fn replace_with_a_value_of_the_wrong_type_is_unprocessable() {
    let ops = [operation("replace", "Patient.active", &[json!({"name": "value", "valueString": "yes"})])];
    assert!(is_unprocessable(patched(patient(json!({"active": true})), &ops)));
}

#[test]
fn move_reorders_a_list_and_its_underscore_twin() {
    let before = patient(json!({"name": [{"given": ["A", "B", "C"], "_given": [{"id": "a"}, null, null]}]}));
    let ops = [operation(
        "move",
        "Patient.name.given",
        &[json!({"name": "source", "valueInteger": 0}), json!({"name": "destination", "valueInteger": 2})],
    )];
    let after = patient(json!({"name": [{"given": ["B", "C", "A"], "_given": [null, null, {"id": "a"}]}]}));
    assert_eq!(patched(before, &ops).unwrap(), after);
}

#[test]
fn a_failing_operation_leaves_the_resource_unchanged() {
    let before = patient(json!({"active": true}));
    let ops = [
        operation("delete", "Patient.active", &[]),
        operation("replace", "Patient.birthDate", &[json!({"name": "value", "valueDate": "2000"})]),
    ];
    let mut resource = before.clone();
    assert!(matches!(apply(&mut resource, &parameters(&ops)), Err(PatchError::Unprocessable(_))));
    assert_eq!(resource, before);
}

#[test]
fn unknown_operation_type_is_malformed() {
    assert!(is_malformed(patched(patient(json!({})), &[operation("copy", "Patient", &[])])));
}

#[test]
fn missing_path_part_is_malformed() {
    let op = json!({"name": "operation", "part": [{"name": "type", "valueCode": "delete"}]});
    assert!(is_malformed(patched(patient(json!({})), &[op])));
}

#[test]
fn unparsable_path_and_bad_json_form_are_malformed() {
    assert!(is_malformed(patched(patient(json!({})), &[operation("delete", "Patient.(", &[])])));
    let ops = [operation("replace", "Patient.active", &[json!({"name": "value", "valueBoolean": "true"})])];
    assert!(is_malformed(patched(patient(json!({"active": false})), &ops)));
}

#[test]
fn unknown_element_in_the_path_is_unprocessable() {
    assert!(is_unprocessable(patched(patient(json!({})), &[operation("delete", "Patient.nickname", &[])])));
}

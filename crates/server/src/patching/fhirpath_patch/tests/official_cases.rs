//! The official FHIRPath Patch cases (`fhir-test-cases/fhir-patch-tests.xml`): each `Patient` input and
//! `Parameters` diff, converted from XML to JSON, must patch to the converted output, or fail where the case
//! expects an error (and then leave the input as it was).
//!
//! The comparison is of the serialized JSON, so it also checks that new properties land in definition
//! order, as the XML (where order is part of the format) has them.

use super::super::apply;
use super::fhir_xml::{self, Element};
use std::path::Path;

fn first_element<'e>(case: &'e Element, name: &str) -> Option<&'e Element> {
    case.child(name).map(|wrapper| wrapper.elements().next().unwrap_or_else(|| panic!("<{name}> holds a resource")))
}

#[test]
fn official_fhirpath_patch_cases() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fhir-test-cases/fhir-patch-tests.xml");
    let xml = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let tests = fhir_xml::parse(&xml);
    let mut ran = 0;
    let mut failures = Vec::new();
    for case in tests.elements().filter(|e| e.name == "case") {
        ran += 1;
        let name = case.attribute("name").expect("a case has a name");
        let input = fhir_xml::resource_to_json(first_element(case, "input").expect("an input"));
        let diff = fhir_xml::resource_to_json(first_element(case, "diff").expect("a diff"));
        let mut patched = input.clone();
        let result = apply(&mut patched, &diff);
        match (first_element(case, "output"), case.child("error")) {
            (Some(output), _) => {
                let expected = serde_json::to_string_pretty(&fhir_xml::resource_to_json(output)).unwrap();
                let got = serde_json::to_string_pretty(&patched).unwrap();
                if let Err(e) = result {
                    failures.push(format!("{name}: {e:?}"));
                } else if got != expected {
                    failures.push(format!("{name}: expected\n{expected}\ngot\n{got}"));
                }
            }
            (None, Some(error)) => {
                if result.is_ok() {
                    failures.push(format!("{name}: expected the error {:?}", error.attribute("msg")));
                } else if patched != input {
                    failures.push(format!("{name}: a failed patch changed the resource"));
                }
            }
            (None, None) => panic!("{name} has neither output nor error"),
        }
    }
    assert_eq!(ran, 33, "the file has 33 cases");
    assert!(failures.is_empty(), "{} of {ran} cases failed:\n{}", failures.len(), failures.join("\n\n"));
}

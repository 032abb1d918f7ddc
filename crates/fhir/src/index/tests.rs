//! Extraction tests: one resource per parameter type, checked value by value.

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
    assert!(is_indexed("Observation", "value-quantity"));
    assert!(!is_indexed("Observation", "_text"));
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

#[test]
fn strings_numbers_quantities_uris_and_text() {
    let patient = json!({"resourceType": "Patient",
        "name": [{"family": "Müller", "given": ["Anna", "Lena"], "prefix": ["Dr."]}],
        "address": [{"line": ["1 Main St"], "city": "Springfield", "postalCode": "01101"}],
        "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Anna Müller</div>"}});
    let index = extract("Patient", &patient);
    let strings = |param: &str| -> Vec<String> {
        index.strings.iter().filter(|s| s.param == param).map(|s| s.normalized.clone()).collect()
    };
    assert_eq!(strings("family"), ["muller"]);
    assert_eq!(strings("given"), ["anna", "lena"]);
    assert_eq!(strings("name"), ["muller", "anna", "lena", "dr."]);
    assert_eq!(strings("address-city"), ["springfield"]);
    assert!(strings("address").contains(&"1 main st".to_owned()));
    assert_eq!(index.strings.iter().find(|s| s.param == "family").unwrap().exact, "Müller");
    assert_eq!(index.text.as_ref().unwrap().narrative, "anna müller");

    let observation = json!({"resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2339-0", "display": "Glucose"}], "text": "Glucose Bld"},
        "valueQuantity": {"value": 6.3, "unit": "mmol/L", "system": "http://unitsofmeasure.org", "code": "mmol/L"},
        "component": [
            {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
             "valueQuantity": {"value": 120, "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
            {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
             "valueQuantity": {"value": 80, "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}]});
    let index = extract("Observation", &observation);
    let quantity = index.quantities.iter().find(|q| q.param == "value-quantity").unwrap();
    assert_eq!((quantity.low, quantity.code.as_deref()), (6.3, Some("mmol/L")));
    let texts: Vec<&str> =
        index.strings.iter().filter(|s| s.param == "code:text").map(|s| s.normalized.as_str()).collect();
    assert_eq!(texts, ["glucose", "glucose bld"]);
    // component-code-value-quantity: one group per component, code and value paired.
    let groups: Vec<&ResourceIndex> = index
        .composites
        .iter()
        .filter(|g| g.tokens.iter().any(|t| t.param == "component-code-value-quantity$0"))
        .collect();
    assert_eq!(groups.len(), 2);
    let systolic = groups.iter().find(|g| g.tokens.iter().any(|t| t.code == "8480-6")).unwrap();
    assert_eq!(systolic.quantities[0].param, "component-code-value-quantity$1");
    assert_eq!(systolic.quantities[0].low, 120.0);
    // Only composites whose every component has a value, and no `:text` rows for components.
    let params: Vec<&str> = index.composites.iter().flat_map(|g| g.tokens.iter().map(|t| t.param.as_str())).collect();
    assert!(params.contains(&"code-value-quantity$0") && !params.contains(&"code-value-concept$0"), "{params:?}");
    assert!(index.composites.iter().all(|g| g.strings.is_empty()));

    let risk = json!({"resourceType": "RiskAssessment", "status": "final", "subject": {"reference": "Patient/1"},
        "prediction": [{"probabilityDecimal": 0.02}]});
    let index = extract("RiskAssessment", &risk);
    assert_eq!(index.numbers.iter().find(|n| n.param == "probability").map(|n| n.value), Some(0.02));

    let vs = json!({"resourceType": "ValueSet", "status": "active", "url": "http://example.org/vs/1"});
    let index = extract("ValueSet", &vs);
    assert!(index.uris.iter().any(|u| u.param == "url" && u.uri == "http://example.org/vs/1"));
}

#[test]
fn identifier_types_and_reference_identifiers() {
    let patient = json!({"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "123",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}}],
        "generalPractitioner": [{"identifier": {"system": "urn:npi", "value": "999"}}]});
    let index = extract("Patient", &patient);
    assert!(index.tokens.iter().any(|t| t.param == "identifier:of-type"
        && t.system.as_deref() == Some("http://terminology.hl7.org/CodeSystem/v2-0203|MR")
        && t.code == "123"));
    assert!(index.tokens.iter().any(|t| t.param == "general-practitioner:identifier" && t.code == "999"));
}

#[test]
fn location_position_for_near() {
    let location = json!({"resourceType": "Location", "position": {"latitude": 42.25, "longitude": -83.5}});
    let index = extract("Location", &location);
    let group = &index.composites[0];
    assert_eq!(
        group.numbers.iter().map(|n| (n.param.as_str(), n.value)).collect::<Vec<_>>(),
        [("near$0", 42.25), ("near$1", -83.5)]
    );
}

#[test]
fn custom_parameters_join_the_plan_and_the_fingerprint() {
    let custom: crate::SearchParamDef = serde_json::from_value(json!({
        "code": "nickname", "url": "http://example.org/sp/nickname", "type": "string",
        "expression": "Patient.name.where(use = 'nickname').given", "base": ["Patient"]}))
    .unwrap();
    let indexer = Indexer::new(vec![custom]);
    assert_ne!(indexer.fingerprint(), Indexer::builtin().fingerprint());
    assert!(indexer.is_indexed("Patient", "nickname") && !is_indexed("Patient", "nickname"));
    let patient = json!({"resourceType": "Patient", "name": [{"use": "nickname", "given": ["Bob"]}]});
    let index = indexer.extract("Patient", &patient);
    assert!(index.strings.iter().any(|s| s.param == "nickname" && s.normalized == "bob"));
}

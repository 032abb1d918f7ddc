//! Parsing tests: names, modifiers, chains and `_has` to clauses; malformed values to errors.

use fhirside_store::{Clause, SortBy, StringMatch, Value, ValueKind};

use super::*;

fn params(pairs: &[(&str, &str)]) -> Params {
    Params(pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect())
}

fn one(resource_type: &str, name: &str, value: &str) -> Result<Clause, FhirError> {
    let (query, ignored) = parse(resource_type, &params(&[(name, value)]), Handling::Strict)?;
    assert!(ignored.is_empty());
    Ok(query.clauses.into_iter().next().unwrap())
}

#[test]
fn strict_refuses_unknown_parameters() {
    let unknown = params(&[("nonsense", "x")]);
    assert!(parse("Patient", &unknown, Handling::Strict).is_err());
    let (query, ignored) = parse("Patient", &unknown, Handling::Lenient).unwrap();
    assert!(query.clauses.is_empty());
    assert_eq!(ignored, vec!["nonsense".to_owned()]);
    assert!(conditional("Patient", &Params::default()).is_err());
}

#[test]
fn string_modifiers() {
    let Clause::Match { param, values } = one("Patient", "family:exact", "Müller").unwrap() else { panic!() };
    assert_eq!(param, "family");
    assert_eq!(values, [Value::String { value: "Müller".into(), matching: StringMatch::Exact }]);
    let Clause::Match { values, .. } = one("Patient", "name", "MÜL,ab").unwrap() else { panic!() };
    assert_eq!(values.len(), 2);
    assert_eq!(values[0], Value::String { value: "mul".into(), matching: StringMatch::StartsWith });
    assert!(matches!(
        one("Patient", "family:missing", "true").unwrap(),
        Clause::Missing { kind: ValueKind::String, missing: true, .. }
    ));
    assert!(one("Patient", "family:missing", "maybe").is_err());
    assert!(one("Patient", "family:below", "x").is_err(), "unsupported modifier");
}

#[test]
fn token_modifiers() {
    assert!(matches!(one("Observation", "code:not", "1234").unwrap(), Clause::Not(_)));
    let Clause::Match { param, .. } = one("Observation", "code:text", "glucose").unwrap() else { panic!() };
    assert_eq!(param, "code:text");
    let Clause::Match { values, .. } =
        one("Patient", "gender:in", "http://hl7.org/fhir/ValueSet/administrative-gender").unwrap()
    else {
        panic!()
    };
    assert_eq!(values.len(), 8, "each code with its system, and without one for plain code elements");
    assert!(one("Patient", "gender:in", "http://example.org/unknown").is_err());
    let Clause::Match { param, .. } = one("Patient", "identifier:of-type", "http://t|MR|123").unwrap() else {
        panic!()
    };
    assert_eq!(param, "identifier:of-type");
    assert!(one("Patient", "identifier:of-type", "MR|123").is_err());
}

#[test]
fn chains_and_reverse_chains() {
    let Clause::Chain { param, target_types, clauses } = one("Observation", "subject:Patient.name", "peter").unwrap()
    else {
        panic!()
    };
    assert_eq!((param.as_str(), target_types.as_slice()), ("subject", ["Patient".to_owned()].as_slice()));
    assert!(matches!(&clauses[0], Clause::Match { param, .. } if param == "name"));
    let two = one("Observation", "encounter.service-provider.name", "General").unwrap();
    let Clause::Chain { clauses, .. } = two else { panic!() };
    assert!(matches!(&clauses[0], Clause::Chain { param, .. } if param == "service-provider"));
    let Clause::Has { source_type, param, clauses } = one("Patient", "_has:Observation:patient:code", "1234").unwrap()
    else {
        panic!()
    };
    assert_eq!((source_type.as_str(), param.as_str()), ("Observation", "patient"));
    assert!(matches!(&clauses[0], Clause::Match { .. }));
    assert!(matches!(
        one("Patient", "_has:Observation:patient:_has:Provenance:target:agent", "Practitioner/1").unwrap(),
        Clause::Has { .. }
    ));
    assert!(one("Patient", "_has:Observation:code:code", "x").is_err(), "code is not a reference");
    assert!(one("Patient", "_has:Nope:patient:code", "x").is_err());
    assert!(one("Observation", "status.name", "x").is_err(), "status is not a reference");
}

#[test]
fn composites_numbers_quantities() {
    let Clause::Composite { values, .. } =
        one("Observation", "component-code-value-quantity", "http://loinc.org|8480-6$gt140").unwrap()
    else {
        panic!()
    };
    assert_eq!(values[0].len(), 2);
    assert!(one("Observation", "component-code-value-quantity", "8480-6").is_err());
    assert!(one("RiskAssessment", "probability", "gt0.5").is_ok());
    assert!(one("RiskAssessment", "probability", "high").is_err());
    assert!(one("Observation", "value-quantity", "5.4|http://unitsofmeasure.org|mg").is_ok());
    assert!(one("Location", "near", "42.25|-83.5|10|km").is_ok());
    assert!(one("Location", "near", "north").is_err());
    assert!(one("Patient", "birthdate", "notadate").is_err());
    assert!(one("Patient", "birthdate", "xx2020").is_err());
}

#[test]
fn sort_keys() {
    let indexer = crate::search_params::current();
    let keys = sort(&indexer, &["Patient".to_owned()], Some("-birthdate,family,_id")).unwrap();
    assert_eq!(keys.len(), 3);
    assert!(keys[0].descending);
    assert_eq!(keys[0].by, SortBy::Param { param: "birthdate".into(), kind: ValueKind::Date });
    assert_eq!(keys[2].by, SortBy::Id);
    assert!(sort(&indexer, &["Patient".to_owned()], Some("nonsense")).is_err());
    assert!(sort(&indexer, &["Observation".to_owned()], Some("code-value-quantity")).is_err());
}

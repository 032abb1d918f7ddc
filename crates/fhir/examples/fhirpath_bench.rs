//! Micro-benchmark of FHIRPath evaluation on the expressions search indexing runs most.
//!
//! `cargo run --release -p fhir --example fhirpath_bench` prints µs per evaluation. Expressions are parsed
//! once, as the indexer does; each figure is the best of five rounds, to keep a shared machine's noise out.
//!
//! Measured when written (release, shared 2-core machine, µs per evaluation): `Patient.name.given` 0.9–1.0,
//! `Patient.birthDate` 0.2–0.3, `Patient.name.where(use = 'official').family` 1.2–1.5,
//! `Observation.value.as(Quantity)` 0.55, `(Observation.value as Quantity)` 0.5,
//! `Observation.subject.where(resolve() is Patient)` 0.9, `Bundle.entry.resource.where(resourceType='Patient')`
//! on 20 entries 10 (0.5 per entry). Over all R4 search parameters on all spec examples
//! (`tests/fhirpath_search_params.rs` in release): 1.6 µs per evaluation.

use std::time::Instant;

use fhir::fhirpath::{evaluate, parse, Context};
use serde_json::Value;

const PATIENT: &str = r#"{"resourceType":"Patient","id":"example","active":true,
  "identifier":[{"use":"usual","system":"urn:oid:1.2.36.146.595.217.0.1","value":"12345"}],
  "name":[{"use":"official","family":"Chalmers","given":["Peter","James"]},{"use":"usual","given":["Jim"]},
          {"use":"maiden","family":"Windsor","given":["Peter","James"],"period":{"end":"2002"}}],
  "telecom":[{"use":"home"},{"system":"phone","value":"(03) 5555 6473","use":"work","rank":1}],
  "gender":"male","birthDate":"1974-12-25","managingOrganization":{"reference":"Organization/1"}}"#;

const OBSERVATION: &str = r#"{"resourceType":"Observation","id":"example","status":"final",
  "category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs"}]}],
  "code":{"coding":[{"system":"http://loinc.org","code":"29463-7","display":"Body Weight"}]},
  "subject":{"reference":"Patient/example"},"effectiveDateTime":"2016-03-28",
  "valueQuantity":{"value":185,"unit":"lbs","system":"http://unitsofmeasure.org","code":"[lb_av]"}}"#;

fn bench(label: &str, expression: &str, resource: &Value) {
    let expr = parse(expression).unwrap();
    let ctx = Context::new();
    let results = evaluate(&expr, resource, &ctx).unwrap().len();
    let iterations = 100_000;
    let mut best = f64::MAX;
    for _ in 0..5 {
        let started = Instant::now();
        for _ in 0..iterations {
            std::hint::black_box(evaluate(&expr, std::hint::black_box(resource), &ctx).unwrap());
        }
        best = best.min(started.elapsed().as_secs_f64() * 1e6 / iterations as f64);
    }
    println!("{label:12} {best:8.3} µs  ({results} results)  {expression}");
}

fn main() {
    let patient: Value = serde_json::from_str(PATIENT).unwrap();
    let observation: Value = serde_json::from_str(OBSERVATION).unwrap();
    let mut entries = Vec::new();
    for i in 0..20 {
        let resource = if i % 2 == 0 { patient.clone() } else { observation.clone() };
        entries.push(serde_json::json!({"fullUrl": format!("urn:uuid:{i}"), "resource": resource}));
    }
    let bundle = serde_json::json!({"resourceType": "Bundle", "type": "collection", "entry": entries});

    bench("patient", "Patient.name.given", &patient);
    bench("patient", "Patient.birthDate", &patient);
    bench("patient", "Patient.name.where(use = 'official').family", &patient);
    bench("observation", "Observation.value.as(Quantity)", &observation);
    bench("observation", "(Observation.value as Quantity)", &observation);
    bench("observation", "Observation.subject.where(resolve() is Patient)", &observation);
    bench("bundle(20)", "Bundle.entry.resource.where(resourceType='Patient')", &bundle);
    bench("bundle(20)", "Bundle.entry.resource.ofType(Observation).value", &bundle);
}

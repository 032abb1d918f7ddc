//! Every R4 SearchParameter expression parses, and evaluates without error on every spec example.
//!
//! Search indexing evaluates these expressions on every write, in lenient mode (the default): a
//! multi-resource expression such as `Patient.name | Practitioner.name` must select nothing, not fail, on
//! the other resource types. The test also prints how long indexing all examples took.

mod support;
use support::examples_dir;

use std::time::Instant;

use fhir::definitions;
use fhir::fhirpath::{self, Context};

#[test]
fn every_search_parameter_expression_evaluates_on_every_example() {
    let defs = definitions();
    let mut parsed = Vec::new();
    for param in defs.all_search_params() {
        if let Some(expression) = &param.expression {
            let expr = fhirpath::parse(expression).unwrap_or_else(|e| panic!("{}: {e}: {expression}", param.url));
            parsed.push((param, expr));
        }
    }
    assert!(parsed.len() > 1000, "{} expressions", parsed.len());

    let mut resources = Vec::new();
    for entry in std::fs::read_dir(examples_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "json") && !path.ends_with("package.json") {
            resources.push(serde_json::from_slice::<serde_json::Value>(&std::fs::read(&path).unwrap()).unwrap());
        }
    }
    let ctx = Context::new();
    let started = Instant::now();
    let (mut evaluations, mut values, mut failures) = (0usize, 0usize, Vec::new());
    for resource in &resources {
        let resource_type = resource["resourceType"].as_str().unwrap();
        for (param, expr) in &parsed {
            if !param.base.iter().any(|b| b == resource_type || b == "Resource" || b == "DomainResource") {
                continue;
            }
            evaluations += 1;
            match fhirpath::evaluate(expr, resource, &ctx) {
                Ok(items) => values += items.len(),
                Err(e) => failures.push(format!("{resource_type}/{}: {}: {e}", resource["id"], param.code)),
            }
        }
    }
    let elapsed = started.elapsed();
    println!(
        "{evaluations} evaluations on {} resources, {values} values, {:.1} µs per evaluation",
        resources.len(),
        elapsed.as_secs_f64() * 1e6 / evaluations as f64
    );
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
    assert!(values > 5_000, "only {values} values indexed"); // 8,056 when written
}

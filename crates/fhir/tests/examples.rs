//! The spec's own examples, validated against the spec's own definitions.
//!
//! `examples.tar.gz` (the 717 example resources of `hl7.fhir.r4.examples@4.0.1`) lives in the shared folder
//! beside the repository, not in it; the test unpacks it with the system `tar` into Cargo's per-target
//! temporary directory. Every example must validate without errors, except the few listed in
//! [`KNOWN_INVALID`], which break the R4 definitions themselves: each is asserted to be rejected for exactly
//! that reason, so a change in the validator that hides or shifts the problem fails the test.

mod support;
use support::examples_dir;

use std::time::Instant;

use fhir::validate::{has_errors, validate_resource};
use fhir::Issue;

/// An example that breaks the R4 definitions, and how: every error it gets must match one of `errors`
/// `(expression suffix, issue code, count)`, with exactly those counts.
struct KnownInvalid {
    file: &'static str,
    #[allow(dead_code)] // documentation for the reader of a failure
    reason: &'static str,
    errors: &'static [(&'static str, &'static str, usize)],
}

const KNOWN_INVALID: &[KnownInvalid] = &[
    KnownInvalid {
        file: "package.json",
        reason: "the npm package manifest shipped in the archive, not a FHIR resource",
        errors: &[("resourceType", "required", 1)],
    },
    KnownInvalid {
        file: "Questionnaire-qs1.json",
        reason: "32 nested items have no linkId (Questionnaire.item.linkId is 1..1)",
        errors: &[(".linkId", "required", 32)],
    },
    KnownInvalid {
        file: "ig-r4.json",
        reason: "ImplementationGuide.name and .status (both 1..1) are missing, and one manifest reference's id \
                 'questionnaireresponse-extensions-QuestionnaireResponse-item-subject' is 67 characters (ids are \
                 at most 64)",
        errors: &[
            ("ImplementationGuide.name", "required", 1),
            ("ImplementationGuide.status", "required", 1),
            ("ImplementationGuide.manifest.resource[11904].reference.reference", "value", 1),
        ],
    },
];

fn load_examples() -> Vec<(String, serde_json::Value)> {
    let mut examples: Vec<(String, serde_json::Value)> = std::fs::read_dir(examples_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, value)
        })
        .collect();
    examples.sort_by(|a, b| a.0.cmp(&b.0));
    examples
}

#[test]
fn every_spec_example_validates() {
    let examples = load_examples();
    assert_eq!(examples.len(), 717); // the archive lists 718 entries: 717 files and `./`
    let mut unexpected = Vec::new();
    let mut known_seen = 0;
    for (name, resource) in &examples {
        let issues = validate_resource(resource);
        let errors: Vec<&Issue> = issues.iter().filter(|i| has_errors(std::slice::from_ref(*i))).collect();
        let expected = KNOWN_INVALID.iter().find(|k| k.file == name).map_or(&[][..], |k| k.errors);
        known_seen += usize::from(!expected.is_empty());
        let as_expected = errors.len() == expected.iter().map(|e| e.2).sum::<usize>()
            && expected.iter().all(|&(suffix, code, count)| {
                errors.iter().filter(|i| i.expression.ends_with(suffix) && i.code.as_str() == code).count() == count
            });
        if !as_expected {
            unexpected.push(format!("{name}: expected {expected:?}, got {errors:#?}"));
        }
    }
    assert!(unexpected.is_empty(), "{} examples not as expected:\n{}", unexpected.len(), unexpected.join("\n"));
    assert_eq!(known_seen, KNOWN_INVALID.len(), "every known-invalid example must exist");
    println!("{} files: {} valid, {} known invalid", examples.len(), examples.len() - known_seen, known_seen);
}

/// Not a benchmark harness, just rough figures printed with `--nocapture` (run with `--release` for
/// meaningful numbers); it asserts only that validation stays far from pathological.
#[test]
fn validation_speed_over_the_examples() {
    let examples = load_examples();
    let start = Instant::now();
    fhir::definitions();
    let init_ms = start.elapsed().as_secs_f64() * 1e3;
    let rounds = 20;
    let mut per_example: Vec<(f64, &str)> = examples
        .iter()
        .map(|(name, resource)| {
            let start = Instant::now();
            for _ in 0..rounds {
                std::hint::black_box(validate_resource(std::hint::black_box(resource)));
            }
            (start.elapsed().as_secs_f64() * 1e6 / rounds as f64, name.as_str())
        })
        .collect();
    let mean = per_example.iter().map(|e| e.0).sum::<f64>() / per_example.len() as f64;
    per_example.sort_by(|a, b| a.0.total_cmp(&b.0));
    let median = per_example[per_example.len() / 2].0;
    let p90 = per_example[per_example.len() * 9 / 10].0;
    let patient = per_example.iter().find(|e| e.1 == "Patient-example.json").unwrap().0;
    let slowest = per_example.last().unwrap();
    println!(
        "definitions parsed in {init_ms:.0} ms; validation µs per example: median {median:.1}, p90 {p90:.1}, mean {mean:.1}, Patient-example {patient:.1}, \
         slowest {:.0} ({})",
        slowest.0, slowest.1
    );
    assert!(median < 1_000.0);
}

//! A dry run for mapping authors (the future `fhirside medtech test` command): a message through both
//! mappings, showing the normalized measurements and the Observations they would become.

use crate::device::DeviceMapping;
use crate::fhir_mapping::FhirMapping;
use crate::group::group_measurements;
use crate::observation::{observation, ObservationContext};
use serde_json::{json, Value};

/// Runs `message` through both mappings and reports, as JSON:
/// `{"normalized": [measurement…], "observations": [Observation…], "errors": ["…"]}`.
///
/// Identity resolution is the server's job, so the Observations reference `Patient/<patient id>` and
/// `Device/<device id>` with the identifiers found in the message standing in for resolved logical ids
/// (`unknown` when the message has no patient id), and carry no `issued`.
pub fn explain(device: &DeviceMapping, fhir: &FhirMapping, message: &Value) -> Value {
    let measurements = match device.normalize(message) {
        Ok(m) => m,
        Err(e) => return json!({"normalized": [], "observations": [], "errors": [e.to_string()]}),
    };
    let grouping = group_measurements(fhir, &measurements);
    let mut errors: Vec<String> = grouping.errors.iter().map(ToString::to_string).collect();
    let mut observations = Vec::new();
    for group in &grouping.groups {
        let Some(template) = fhir.template(&group.type_name) else { continue };
        let context = ObservationContext {
            patient_id: group.patient_id.as_deref().unwrap_or("unknown"),
            device_id: &group.device_id,
            encounter_id: group.encounter_id.as_deref(),
            issued: None,
        };
        match observation(template, group, &context, None) {
            Ok(built) => observations.push(built.resource),
            Err(e) => errors.push(format!("{} ({}): {e}", group.type_name, group.id_segment())),
        }
    }
    json!({
        "normalized": measurements.iter().map(|m| m.to_json()).collect::<Vec<_>>(),
        "observations": observations,
        "errors": errors,
    })
}

//! Identity resolution: which Patient, Device and Encounter an Observation refers to, found by the
//! identifiers a message carries, as Azure's MedTech service's two modes do it.
//!
//! - **Lookup**: the Device with the message's device identifier must exist, and its `patient`
//!   reference names the Patient; a patient identifier in the message, if any, must be that
//!   Patient's. Nothing is created.
//! - **Create**: the Patient (by the message's patient identifier, which is then required) and the
//!   Device (by its identifier) are found or created, and a new Device refers to the Patient. A
//!   Device already linked to another Patient is refused rather than moved.
//!
//! In both modes an encounter identifier, when the mapping extracts one, must name an existing
//! Encounter. Identifiers are matched by value in any system, as the device sends them.

use fhirside_medtech::MeasurementGroup;
use fhirside_store::Transaction;
use serde_json::{json, Value};

use super::{find_one, write};
use crate::error::FhirError;

/// How identities are resolved (Azure's `resolutionType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    Create,
    Lookup,
}

/// The logical ids an Observation refers to.
pub(super) struct Identities {
    pub patient: String,
    pub device: String,
    pub encounter: Option<String>,
}

/// Resolves `group`'s identities: `Err` (inside) says why they cannot be, for the message's result.
pub(super) fn identities(
    tx: &mut dyn Transaction,
    resolution: Resolution,
    group: &MeasurementGroup,
) -> Result<Result<Identities, String>, FhirError> {
    let device = match find_one(tx, "Device", None, &group.device_id)? {
        Ok(device) => device,
        Err(reason) => return Ok(Err(reason)),
    };
    let (patient, device) = match (resolution, device) {
        (Resolution::Lookup, None) => {
            return Ok(Err(format!("no Device has the identifier '{}' (resolution: Lookup)", group.device_id)))
        }
        (Resolution::Lookup, Some((device, body))) => {
            let Some(patient) = patient_of(&body) else {
                return Ok(Err(format!("Device/{device} refers to no Patient (resolution: Lookup)")));
            };
            if let Some(expected) = &group.patient_id {
                match find_one(tx, "Patient", None, expected)? {
                    Ok(Some((found, _))) if found == patient => {}
                    Ok(_) => {
                        return Ok(Err(format!(
                            "Device/{device} belongs to Patient/{patient}, not to the patient with the identifier \
                             '{expected}'"
                        )))
                    }
                    Err(reason) => return Ok(Err(reason)),
                }
            }
            (patient, device)
        }
        (Resolution::Create, device) => {
            let Some(patient_identifier) = &group.patient_id else {
                return Ok(Err("the message has no patient identifier, which resolution Create needs \
                               (patientIdExpression)"
                    .into()));
            };
            let patient = match find_or_create(tx, "Patient", patient_identifier, json!({}))? {
                Ok(patient) => patient,
                Err(reason) => return Ok(Err(reason)),
            };
            let device = match device {
                Some((device, body)) => match patient_of(&body) {
                    Some(linked) if linked != patient => {
                        return Ok(Err(format!(
                            "Device/{device} belongs to Patient/{linked}, not to Patient/{patient}: a device is not \
                             moved between patients"
                        )))
                    }
                    _ => device,
                },
                None => {
                    let extra = json!({"patient": {"reference": format!("Patient/{patient}")}});
                    match find_or_create(tx, "Device", &group.device_id, extra)? {
                        Ok(device) => device,
                        Err(reason) => return Ok(Err(reason)),
                    }
                }
            };
            (patient, device)
        }
    };
    let encounter = match &group.encounter_id {
        None => None,
        Some(identifier) => match find_one(tx, "Encounter", None, identifier)? {
            Ok(Some((encounter, _))) => Some(encounter),
            Ok(None) => return Ok(Err(format!("no Encounter has the identifier '{identifier}'"))),
            Err(reason) => return Ok(Err(reason)),
        },
    };
    Ok(Ok(Identities { patient, device, encounter }))
}

/// The id of the `resource_type` with the identifier, created (with `extra` elements) if there is none.
fn find_or_create(
    tx: &mut dyn Transaction,
    resource_type: &str,
    identifier: &str,
    extra: Value,
) -> Result<Result<String, String>, FhirError> {
    match find_one(tx, resource_type, None, identifier)? {
        Ok(Some((id, _))) => Ok(Ok(id)),
        Ok(None) => {
            let mut resource = json!({"resourceType": resource_type, "identifier": [{"value": identifier}]});
            if let (Some(resource), Value::Object(extra)) = (resource.as_object_mut(), extra) {
                resource.extend(extra);
            }
            let id = crate::ids::new_id();
            Ok(write(tx, resource_type, &id, resource, false)?.map(|()| id))
        }
        Err(reason) => Ok(Err(reason)),
    }
}

/// The logical id of the Patient a Device refers to (`patient.reference` `Patient/{id}`).
fn patient_of(device: &Value) -> Option<String> {
    let reference = device["patient"]["reference"].as_str()?;
    reference.strip_prefix("Patient/").map(|id| id.split('/').next().unwrap_or(id).to_owned())
}

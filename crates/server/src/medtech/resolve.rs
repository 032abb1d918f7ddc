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

use std::collections::HashMap;

use fhirside_medtech::MeasurementGroup;
use fhirside_store::Transaction;
use serde_json::{json, Value};

use super::{find_one, write, Refusal};
use crate::error::FhirError;

/// How identities are resolved (Azure's `resolutionType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    Create,
    Lookup,
}

/// The logical ids an Observation refers to.
#[derive(Clone)]
pub(super) struct Identities {
    pub patient: String,
    pub device: String,
    pub encounter: Option<String>,
}

/// What resolution gives: the identities, or why there are none. `Err` outside: the store failed.
type Resolved = Result<Result<Identities, Refusal>, FhirError>;

/// A message's device, patient and encounter identifiers.
type IdentityKey = (String, Option<String>, Option<String>);

/// Resolves identities within one transaction, each set of a batch once: the groups of a batch
/// mostly share a device and a patient.
pub(super) struct Resolver {
    resolution: Resolution,
    /// By device, patient and encounter identifier.
    known: HashMap<IdentityKey, Result<Identities, Refusal>>,
}

impl Resolver {
    pub(super) fn new(resolution: Resolution) -> Resolver {
        Resolver { resolution, known: HashMap::new() }
    }

    /// `group`'s identities, or why they cannot be resolved.
    pub(super) fn identities(&mut self, tx: &mut dyn Transaction, group: &MeasurementGroup) -> Resolved {
        let key = (group.device_id.clone(), group.patient_id.clone(), group.encounter_id.clone());
        if let Some(known) = self.known.get(&key) {
            return Ok(known.clone());
        }
        let resolved = identities(tx, self.resolution, group)?;
        self.known.insert(key, resolved.clone());
        Ok(resolved)
    }
}

/// Returns the refusal from a `Result<Result<T, Refusal>, FhirError>`, or its value.
macro_rules! settle {
    ($e:expr) => {
        match $e? {
            Ok(value) => value,
            Err(refusal) => return Ok(Err(refusal)),
        }
    };
}

fn identities(tx: &mut dyn Transaction, resolution: Resolution, group: &MeasurementGroup) -> Resolved {
    let device = settle!(find_one(tx, "Device", None, &group.device_id));
    let (patient, device) = match (resolution, device) {
        (Resolution::Lookup, None) => {
            let detail = format!("no Device has the identifier '{}' (resolution: Lookup)", group.device_id);
            return Ok(Err(Refusal::coded("DeviceNotFound", detail)));
        }
        (Resolution::Lookup, Some((device, body))) => {
            let Some(patient) = patient_of(&body) else {
                let detail = format!("Device/{device} refers to no Patient (resolution: Lookup)");
                return Ok(Err(Refusal::coded("PatientNotFound", detail)));
            };
            if let Some(expected) = &group.patient_id {
                match settle!(find_one(tx, "Patient", None, expected)) {
                    Some((found, _)) if found == patient => {}
                    _ => {
                        let detail = format!(
                            "Device/{device} belongs to Patient/{patient}, not to the patient with the identifier \
                             '{expected}'"
                        );
                        return Ok(Err(Refusal::coded("PatientDeviceMismatch", detail)));
                    }
                }
            }
            (patient, device)
        }
        (Resolution::Create, device) => {
            let Some(patient_identifier) = &group.patient_id else {
                let detail = "the message has no patient identifier, which resolution Create needs \
                              (patientIdExpression)";
                return Ok(Err(Refusal::coded("ResourceIdentityNotDefined", detail)));
            };
            let patient = settle!(find_or_create(tx, "Patient", patient_identifier, json!({})));
            let device = match device {
                Some((device, body)) => match patient_of(&body) {
                    Some(linked) if linked != patient => {
                        let detail = format!(
                            "Device/{device} belongs to Patient/{linked}, not to Patient/{patient}: a device is not \
                             moved between patients"
                        );
                        return Ok(Err(Refusal::coded("PatientDeviceMismatch", detail)));
                    }
                    _ => device,
                },
                None => {
                    let link = json!({"patient": {"reference": format!("Patient/{patient}")}});
                    settle!(find_or_create(tx, "Device", &group.device_id, link))
                }
            };
            (patient, device)
        }
    };
    let encounter = match &group.encounter_id {
        None => None,
        Some(identifier) => match settle!(find_one(tx, "Encounter", None, identifier)) {
            Some((encounter, _)) => Some(encounter),
            None => {
                let detail = format!("no Encounter has the identifier '{identifier}'");
                return Ok(Err(Refusal::coded("EncounterNotFound", detail)));
            }
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
) -> Result<Result<String, Refusal>, FhirError> {
    if let Some((id, _)) = settle!(find_one(tx, resource_type, None, identifier)) {
        return Ok(Ok(id));
    }
    let mut resource = json!({"resourceType": resource_type, "identifier": [{"value": identifier}]});
    if let (Some(resource), Value::Object(extra)) = (resource.as_object_mut(), extra) {
        resource.extend(extra);
    }
    let id = crate::ids::new_id();
    Ok(write(tx, resource_type, &id, resource, false)?.map(|()| id))
}

/// The logical id of the Patient a Device refers to (`patient.reference` `Patient/{id}`).
fn patient_of(device: &Value) -> Option<String> {
    let reference = device["patient"]["reference"].as_str()?;
    reference.strip_prefix("Patient/").map(|id| id.split('/').next().unwrap_or(id).to_owned())
}

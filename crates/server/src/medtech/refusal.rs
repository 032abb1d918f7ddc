//! Why a device message was not stored.
//!
//! A refusal has a code, named after the exception Azure's MedTech service raises in the same case
//! (`DeviceNotFound` for `DeviceNotFoundException`, …) so that operators' alerts carry over; a
//! summary that holds no identifier or value from the message (device serial numbers and patient
//! identifiers are PHI), for the audit trail and the server's log; and the full detail, which only
//! goes back to the sender of the message, who has it already.

use fhirside_medtech::{NormalizeError, ObservationError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    /// Free of identifiers and values: safe for the audit trail.
    pub summary: String,
    /// Everything known, identifiers included: for the sender only.
    pub detail: String,
}

impl Refusal {
    pub(crate) fn new(code: &'static str, summary: impl Into<String>, detail: impl Into<String>) -> Refusal {
        Refusal { code, summary: summary.into(), detail: detail.into() }
    }

    pub(crate) fn not_json(error: &serde_json::Error) -> Refusal {
        Refusal::new("InvalidMessage", "the message is not JSON", format!("the message is not JSON: {error}"))
    }

    /// Names the template and expression that failed, not what they found.
    pub(crate) fn normalization(error: &NormalizeError) -> Refusal {
        let mut summary = format!("template[{}] ({})", error.template_index, error.type_name);
        if !error.expression_name.is_empty() {
            summary.push_str(&format!(", {}", error.expression_name));
        }
        Refusal::new("NormalizationDataMapping", summary, format!("normalization: {error}"))
    }

    pub(crate) fn observation(error: &ObservationError) -> Refusal {
        let code = match error {
            ObservationError::NoTemplate { .. } => "TemplateNotFound",
            ObservationError::MissingCorrelationId { .. } => "CorrelationIdNotDefined",
            _ => "IncompatibleData",
        };
        Refusal::new(code, code_summary(code), error.to_string())
    }

    /// A refusal whose summary is its code's description.
    pub(crate) fn coded(code: &'static str, detail: impl Into<String>) -> Refusal {
        Refusal::new(code, code_summary(code), detail)
    }
}

/// What each code means, in words that name no identifier.
fn code_summary(code: &str) -> &'static str {
    match code {
        "DeviceNotFound" => "no Device has the message's device identifier",
        "PatientNotFound" => "the Device refers to no Patient, or not to the message's patient",
        "ResourceIdentityNotDefined" => "the message has no patient identifier, which resolution Create needs",
        "PatientDeviceMismatch" => "the Device belongs to another Patient",
        "EncounterNotFound" => "no Encounter has the message's encounter identifier",
        "MultipleResourceFound" => "more than one resource has the message's identifier",
        "TemplateNotFound" => "no FHIR destination template for the measurement's type",
        "CorrelationIdNotDefined" => "the mapping groups by correlation id but the measurement has none",
        "IncompatibleData" => "the measurements do not fit the FHIR destination template",
        "InvalidResource" => "the resource built is not valid FHIR",
        _ => "the message was not stored",
    }
}

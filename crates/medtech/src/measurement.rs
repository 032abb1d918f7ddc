//! The normalized measurement: what a device mapping extracts from a device message.

use crate::time::Timestamp;
use serde_json::{json, Map, Value};

/// One normalized measurement (Azure's `IMeasurement`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measurement {
    /// The template's `typeName`, which binds it to a CodeValueFhir template.
    pub type_name: String,
    pub occurrence_time: Timestamp,
    /// The device identifier found in the message (matched against `Device.identifier`).
    pub device_id: String,
    pub patient_id: Option<String>,
    pub encounter_id: Option<String>,
    pub correlation_id: Option<String>,
    /// The named values, in the template's order, as strings (see `json.rs` for how numbers and
    /// booleans are written).
    pub values: Vec<MeasurementValue>,
}

/// A named value of a measurement (Azure's `MeasurementProperty`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeasurementValue {
    pub name: String,
    pub value: String,
}

impl Measurement {
    /// The normalized message as Azure's Mapping debugger shows it: `type`, `occurrenceTimeUtc`,
    /// `deviceId`, optional `patientId`/`encounterId`/`correlationId`, `properties[{name, value}]`.
    pub fn to_json(&self) -> Value {
        let mut out = Map::new();
        out.insert("type".into(), json!(self.type_name));
        out.insert("occurrenceTimeUtc".into(), json!(self.occurrence_time.to_trimmed()));
        out.insert("deviceId".into(), json!(self.device_id));
        for (key, value) in [
            ("patientId", &self.patient_id),
            ("encounterId", &self.encounter_id),
            ("correlationId", &self.correlation_id),
        ] {
            if let Some(v) = value {
                out.insert(key.into(), json!(v));
            }
        }
        let properties: Vec<Value> = self.values.iter().map(|v| json!({"name": v.name, "value": v.value})).collect();
        out.insert("properties".into(), Value::Array(properties));
        Value::Object(out)
    }
}

//! Azure Health Data Services' MedTech service mapping engine, as pure logic.
//!
//! The MedTech service turns device messages into FHIR Observations in two stages, each driven by a
//! JSON mapping that this crate reads with Azure's semantics:
//!
//! 1. **Normalize** ([`DeviceMapping`]): the device mapping (`CollectionContent` of `JsonPathContent`,
//!    `CalculatedContent`, `IotJsonPathContent` and `IotCentralJsonPathContent` templates) finds
//!    [`Measurement`]s in a message: type, time, device, patient, encounter, correlation id, values.
//!    Expressions are JSONPath with Newtonsoft's semantics ([`jsonpath`]) or JMESPath with Azure's
//!    custom functions ([`jmespath`]).
//! 2. **Transform** ([`FhirMapping`]): the FHIR destination mapping (`CollectionFhir` of `CodeValueFhir`
//!    templates) says how measurements are grouped ([`group_measurements`]: per instant, hour, day or
//!    correlation id) and written ([`observation`]): codes, categories, `SampledData`, `Quantity`,
//!    `String` or `CodeableConcept` values, components, and the identifier Azure gives the Observation
//!    so that re-processing updates it instead of duplicating it.
//!
//! [`explain`] runs a message through both for mapping authors.
//!
//! What it must **not** know: transports (HTTP, MQTT, NATS, Event Hubs), the FHIR store, identity
//! resolution (finding or creating Device, Patient and Encounter resources), clocks and async. The
//! server resolves identities, looks the Observation up by [`MeasurementGroup::observation_identifier`],
//! calls [`observation`] with what it found, and stores the result. Everything here is deterministic
//! functions over `serde_json::Value`s; bad input gives typed errors, never a panic.

mod device;
mod error;
mod explain;
mod expression;
mod fhir_mapping;
mod group;
pub mod jmespath;
mod json;
pub mod jsonpath;
mod measurement;
mod observation;
mod read;
mod sampled_data;
mod time;

pub use device::{ContentTemplate, DeviceMapping, TemplateKind, ValueExpression};
pub use error::{MappingError, MappingIssue, NormalizeError, NormalizeErrorKind, ObservationError};
pub use explain::explain;
pub use expression::{Expression, ExpressionLanguage};
pub use fhir_mapping::{
    CodeValueFhirTemplate, ComponentTemplate, FhirCode, FhirCodeableConcept, FhirMapping, FhirValue, PeriodInterval,
    ValueType,
};
pub use group::{group_measurements, Grouping, MeasurementGroup, ObservationIdentifier};
pub use measurement::{Measurement, MeasurementValue};
pub use observation::{observation, BuiltObservation, Change, ObservationContext};
pub use time::{Timestamp, TimestampError};

use serde_json::{json, Value};

/// The identifier system (and coding system) Azure's MedTech service stamps on the Observations it
/// writes.
pub const SERVICE_SYSTEM: &str = "https://azure.microsoft.com/en-us/services/iomt-fhir-connector/";

/// The shape in which Azure hands a device message to the device mapping: the event body under
/// `Body`, the application properties under `Properties` and the broker's under `SystemProperties`
/// (IoT Hub puts `iothub-connection-device-id` and `iothub-enqueuedtime` there, and
/// `iothub-creation-time-utc` in `Properties`). Transports build this envelope before normalizing.
pub fn event_message(body: Value, properties: Value, system_properties: Value) -> Value {
    json!({"Body": body, "Properties": properties, "SystemProperties": system_properties})
}

//! Building a group's Observation, or merging a group into the Observation already stored for it.
//!
//! A new Observation has, in FHIR's element order: `identifier` (see [`crate::group`]), `status`
//! `final`, `category` from the template, `code` (the template's codings plus Azure's own coding
//! `{system: SERVICE_SYSTEM, code: typeName, display: typeName}`, `text` = typeName), `subject`,
//! `encounter` when resolved, `effectivePeriod` (the group's window, .NET `o` format), `issued` when
//! the caller gives it, `value[x]`, `device` and `component[]` (each coded like `code`, with the value
//! name).
//!
//! Merging follows Azure's `MergeObservation`: the period widens to cover the group, categories are
//! rewritten from the template, SampledData streams are merged (see [`crate::sampled_data`]), other
//! values are replaced, components are found by Azure's coding for their value name, and the status
//! becomes `amended`. Two choices differ from Azure on purpose: the status changes only when something
//! else did (Azure marks any merged final Observation amended, even when the data is the same), so
//! re-processing a message leaves the stored Observation untouched; and an existing stream is decoded
//! from its own start and period (Azure decodes from the widened start, which shifts values when a
//! correlation group grows backwards).

use crate::error::ObservationError;
use crate::fhir_mapping::{CodeValueFhirTemplate, FhirCode, FhirCodeableConcept, FhirValue, ValueType};
use crate::group::MeasurementGroup;
use crate::json::decimal_number;
use crate::sampled_data::{self, MAX_SAMPLES};
use crate::time::Timestamp;
use crate::SERVICE_SYSTEM;
use serde_json::{json, Map, Value};

/// What the caller resolved for a group: the logical ids of its Patient, Device and (optionally)
/// Encounter, and the `issued` instant to stamp on new Observations (Azure uses the time of
/// processing; this crate does not read the clock).
#[derive(Debug, Clone, Copy)]
pub struct ObservationContext<'a> {
    pub patient_id: &'a str,
    pub device_id: &'a str,
    pub encounter_id: Option<&'a str>,
    pub issued: Option<&'a str>,
}

/// The Observation to store and what happened to it.
#[derive(Debug, Clone, PartialEq)]
pub struct BuiltObservation {
    pub resource: Value,
    pub change: Change,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// No Observation existed; `resource` is new (store it with a conditional update on its identifier).
    Created,
    /// The existing Observation changed; `resource` has status `amended`.
    Amended,
    /// Merging changed nothing; `resource` is the existing Observation as given, nothing to store.
    Unchanged,
}

/// Builds the Observation for `group` under `template`, or merges the group into `existing` (the
/// Observation found by the group's identifier).
pub fn observation(
    template: &CodeValueFhirTemplate,
    group: &MeasurementGroup,
    context: &ObservationContext<'_>,
    existing: Option<&Value>,
) -> Result<BuiltObservation, ObservationError> {
    match existing {
        None => Ok(BuiltObservation { resource: create(template, group, context)?, change: Change::Created }),
        Some(existing) => {
            let merged = merge(template, group, existing)?;
            Ok(if &merged == existing {
                BuiltObservation { resource: merged, change: Change::Unchanged }
            } else {
                let mut merged = merged;
                if let Some(o) = merged.as_object_mut() {
                    o.insert("status".into(), json!("amended"));
                }
                BuiltObservation { resource: merged, change: Change::Amended }
            })
        }
    }
}

fn create(
    template: &CodeValueFhirTemplate,
    group: &MeasurementGroup,
    context: &ObservationContext<'_>,
) -> Result<Value, ObservationError> {
    let identifier = group.observation_identifier(context.patient_id, context.device_id);
    let period = (group.start, group.end);
    let mut o = Map::new();
    o.insert("resourceType".into(), json!("Observation"));
    o.insert("identifier".into(), json!([{"system": identifier.system, "value": identifier.value}]));
    o.insert("status".into(), json!("final"));
    if !template.category.is_empty() {
        o.insert("category".into(), categories(&template.category));
    }
    o.insert("code".into(), code(&template.codes, &group.type_name));
    o.insert("subject".into(), json!({"reference": format!("Patient/{}", context.patient_id)}));
    if let Some(encounter) = context.encounter_id {
        o.insert("encounter".into(), json!({"reference": format!("Encounter/{encounter}")}));
    }
    o.insert("effectivePeriod".into(), effective_period(period));
    if let Some(issued) = context.issued {
        o.insert("issued".into(), json!(issued));
    }
    if let Some(value) = &template.value {
        if let Some((key, v)) = new_value(value, group, period)? {
            o.insert(key, v);
        }
    }
    o.insert("device".into(), json!({"reference": format!("Device/{}", context.device_id)}));
    let mut components = Vec::new();
    for component in &template.components {
        if let Some((key, v)) = new_value(&component.value, group, period)? {
            components.push(component_json(&component.codes, &component.value, key, v));
        }
    }
    if !components.is_empty() {
        o.insert("component".into(), Value::Array(components));
    }
    Ok(Value::Object(o))
}

fn merge(
    template: &CodeValueFhirTemplate,
    group: &MeasurementGroup,
    existing: &Value,
) -> Result<Value, ObservationError> {
    let incompatible = |why: &str| ObservationError::Incompatible(why.to_owned());
    let Some(mut o) = existing.as_object().cloned() else { return Err(incompatible("it is not a JSON object")) };
    if o.get("resourceType").and_then(Value::as_str) != Some("Observation") {
        return Err(incompatible("it is not an Observation"));
    }
    let old_period = existing_period(&o)?;
    let period = (old_period.0.min(group.start), old_period.1.max(group.end));
    let effective = effective_period(period);
    o.remove("effectiveDateTime");
    o.remove("effectiveInstant");
    insert_in_order(&mut o, "effectivePeriod", effective);
    o.remove("category");
    if !template.category.is_empty() {
        insert_in_order(&mut o, "category", categories(&template.category));
    }
    if let Some(value) = &template.value {
        let current = VALUE_KEYS.iter().find_map(|k| o.get(*k).map(|v| (*k, v.clone())));
        if let Some((key, v)) = merged_value(value, group, old_period, period, current)? {
            for k in VALUE_KEYS {
                o.remove(k);
            }
            insert_in_order(&mut o, &key, v);
        }
    }
    if !template.components.is_empty() {
        let mut components = match o.remove("component") {
            None => Vec::new(),
            Some(Value::Array(items)) => items,
            Some(_) => return Err(incompatible("component is not an array")),
        };
        for component in &template.components {
            let Some(name) = component.value.name() else { continue };
            let found = components.iter().position(|c| has_service_coding(c, name));
            match found {
                Some(i) => {
                    let Some(existing_component) = components[i].as_object_mut() else {
                        return Err(incompatible("a component is not an object"));
                    };
                    let current = VALUE_KEYS.iter().find_map(|k| existing_component.get(*k).map(|v| (*k, v.clone())));
                    if let Some((key, v)) = merged_value(&component.value, group, old_period, period, current)? {
                        for k in VALUE_KEYS {
                            existing_component.remove(k);
                        }
                        existing_component.insert(key, v);
                    }
                }
                None => {
                    if let Some((key, v)) = new_value(&component.value, group, period)? {
                        components.push(component_json(&component.codes, &component.value, key, v));
                    }
                }
            }
        }
        if !components.is_empty() {
            insert_in_order(&mut o, "component", Value::Array(components));
        }
    }
    Ok(Value::Object(o))
}

const VALUE_KEYS: [&str; 4] = ["valueSampledData", "valueQuantity", "valueString", "valueCodeableConcept"];

/// Observation elements in FHIR's order, so that merged Observations keep a stable shape.
const ORDER: [&str; 30] = [
    "resourceType",
    "id",
    "meta",
    "implicitRules",
    "language",
    "text",
    "contained",
    "extension",
    "modifierExtension",
    "identifier",
    "basedOn",
    "partOf",
    "status",
    "category",
    "code",
    "subject",
    "focus",
    "encounter",
    "effectivePeriod",
    "issued",
    "performer",
    "valueQuantity",
    "valueCodeableConcept",
    "valueString",
    "valueSampledData",
    "dataAbsentReason",
    "interpretation",
    "note",
    "device",
    "component",
];

/// Inserts `key` and puts the object's known elements back in FHIR order (unknown ones keep their
/// place after the known ones).
fn insert_in_order(o: &mut Map<String, Value>, key: &str, value: Value) {
    o.insert(key.to_owned(), value);
    let mut entries: Vec<(String, Value)> = std::mem::take(o).into_iter().collect();
    entries.sort_by_key(|(k, _)| ORDER.iter().position(|known| known == k).unwrap_or(ORDER.len()));
    o.extend(entries);
}

fn existing_period(o: &Map<String, Value>) -> Result<(Timestamp, Timestamp), ObservationError> {
    let parse = |v: Option<&Value>, what: &str| {
        v.and_then(Value::as_str)
            .ok_or_else(|| ObservationError::Incompatible(format!("{what} is missing")))
            .and_then(|s| Timestamp::parse(s).map_err(|e| ObservationError::Incompatible(format!("{what}: {e}"))))
    };
    if let Some(period) = o.get("effectivePeriod") {
        return Ok((
            parse(period.get("start"), "effectivePeriod.start")?,
            parse(period.get("end"), "effectivePeriod.end")?,
        ));
    }
    let t = parse(o.get("effectiveDateTime").or_else(|| o.get("effectiveInstant")), "effectiveDateTime")?;
    Ok((t, t))
}

fn effective_period((start, end): (Timestamp, Timestamp)) -> Value {
    json!({"start": start.to_round_trip(), "end": end.to_round_trip()})
}

fn coding(c: &FhirCode) -> Value {
    let mut o = Map::new();
    if let Some(system) = &c.system {
        o.insert("system".into(), json!(system));
    }
    o.insert("code".into(), json!(c.code));
    if let Some(display) = &c.display {
        o.insert("display".into(), json!(display));
    }
    Value::Object(o)
}

/// The template's codings plus Azure's own coding of the type (or value) name.
fn code(codes: &[FhirCode], name: &str) -> Value {
    let mut codings: Vec<Value> = codes.iter().map(coding).collect();
    codings.push(json!({"system": SERVICE_SYSTEM, "code": name, "display": name}));
    json!({"coding": codings, "text": name})
}

fn codeable_concept(c: &FhirCodeableConcept) -> Value {
    let mut o = Map::new();
    if !c.codes.is_empty() {
        o.insert("coding".into(), Value::Array(c.codes.iter().map(coding).collect()));
    }
    if let Some(text) = &c.text {
        o.insert("text".into(), json!(text));
    }
    Value::Object(o)
}

fn categories(categories: &[FhirCodeableConcept]) -> Value {
    Value::Array(categories.iter().map(codeable_concept).collect())
}

fn component_json(codes: &[FhirCode], value: &FhirValue, key: String, v: Value) -> Value {
    let mut o = Map::new();
    o.insert("code".into(), code(codes, value.name().unwrap_or_default()));
    o.insert(key, v);
    Value::Object(o)
}

fn has_service_coding(component: &Value, name: &str) -> bool {
    let codings = component.get("code").and_then(|c| c.get("coding")).and_then(Value::as_array);
    codings.is_some_and(|codings| {
        codings.iter().any(|c| {
            c.get("system").and_then(Value::as_str) == Some(SERVICE_SYSTEM)
                && c.get("code").and_then(Value::as_str) == Some(name)
        })
    })
}

/// The group's values for `value`, or `None` when the group has none (the element is then left out).
fn group_values<'g>(value: &FhirValue, group: &'g MeasurementGroup) -> Option<&'g [(Timestamp, String)]> {
    match value.name() {
        Some(name) => Some(group.values(name)).filter(|v| !v.is_empty()),
        // A CodeableConcept without a value name applies to every group: the measurement is the fact.
        None => (group.measurement_count() > 0).then_some(&[][..]),
    }
}

fn value_key(value_type: &ValueType) -> &'static str {
    match value_type {
        ValueType::SampledData { .. } => "valueSampledData",
        ValueType::Quantity { .. } => "valueQuantity",
        ValueType::String => "valueString",
        ValueType::CodeableConcept(_) => "valueCodeableConcept",
    }
}

fn new_value(
    value: &FhirValue,
    group: &MeasurementGroup,
    period: (Timestamp, Timestamp),
) -> Result<Option<(String, Value)>, ObservationError> {
    let Some(values) = group_values(value, group) else { return Ok(None) };
    let name = value.name().unwrap_or_default();
    let v = match &value.value_type {
        ValueType::SampledData { default_period, period_ticks, unit } => {
            let data = stream(name, values, period, *period_ticks)?;
            sampled_data_json(default_period, unit, data)
        }
        ValueType::Quantity { unit, code, system } => {
            let text = single(name, values)?;
            let number = decimal(name, text)?;
            let mut q = Map::new();
            q.insert("value".into(), number);
            for (key, field) in [("unit", unit), ("system", system), ("code", code)] {
                if let Some(f) = field {
                    q.insert(key.into(), json!(f));
                }
            }
            Value::Object(q)
        }
        ValueType::String => json!(single(name, values)?),
        ValueType::CodeableConcept(concept) => codeable_concept(concept),
    };
    Ok(Some((value_key(&value.value_type).to_owned(), v)))
}

fn merged_value(
    value: &FhirValue,
    group: &MeasurementGroup,
    old_period: (Timestamp, Timestamp),
    period: (Timestamp, Timestamp),
    current: Option<(&str, Value)>,
) -> Result<Option<(String, Value)>, ObservationError> {
    let Some(values) = group_values(value, group) else { return Ok(None) };
    let key = value_key(&value.value_type);
    let Some((current_key, current)) = current else { return new_value(value, group, period) };
    if current_key != key {
        return Err(ObservationError::Incompatible(format!("it has {current_key}, the template writes {key}")));
    }
    let ValueType::SampledData { default_period, period_ticks, unit } = &value.value_type else {
        // Quantity, String and CodeableConcept hold one value: the new one replaces it.
        return new_value(value, group, period);
    };
    if current.get("dimensions").and_then(Value::as_u64).unwrap_or(1) > 1 {
        return Err(ObservationError::Incompatible("its SampledData has more than one dimension".into()));
    }
    let data = current.get("data").and_then(Value::as_str).unwrap_or("");
    let stored_period = current
        .get("period")
        .and_then(Value::as_f64)
        .map(|ms| (ms * crate::time::TICKS_PER_MILLISECOND as f64).round() as i64)
        .filter(|t| *t >= 1)
        .unwrap_or(*period_ticks);
    let name = value.name().unwrap_or_default();
    check_decimals(name, values)?;
    let merged = sampled_data::merge(sampled_data::decode(data, old_period.0, stored_period), values);
    let data = stream(name, &merged, period, *period_ticks)?;
    Ok(Some((key.to_owned(), sampled_data_json(default_period, unit, data))))
}

fn sampled_data_json(default_period: &serde_json::Number, unit: &str, data: String) -> Value {
    let mut origin = Map::new();
    origin.insert("value".into(), json!(0));
    // FHIR forbids empty strings; Azure's step-count sample has `"unit": ""`.
    if !unit.is_empty() {
        origin.insert("unit".into(), json!(unit));
    }
    json!({"origin": origin, "period": default_period, "dimensions": 1, "data": data})
}

fn stream(
    name: &str,
    values: &[(Timestamp, String)],
    period: (Timestamp, Timestamp),
    period_ticks: i64,
) -> Result<String, ObservationError> {
    let samples = sampled_data::sample_count(period.0, period.1, period_ticks);
    if samples > MAX_SAMPLES {
        return Err(ObservationError::TooManySamples { value_name: name.to_owned(), samples });
    }
    check_decimals(name, values)?;
    let refs: Vec<(Timestamp, &str)> = values.iter().map(|(t, v)| (*t, v.trim())).collect();
    Ok(sampled_data::build(&refs, period.0, period.1, period_ticks))
}

/// SampledData holds decimals (and the `E`, `L`, `U` markers, which an existing stream may carry).
fn check_decimals(name: &str, values: &[(Timestamp, String)]) -> Result<(), ObservationError> {
    for (_, v) in values {
        if crate::json::as_decimal(v).is_none() && !matches!(v.as_str(), "E" | "L" | "U") {
            return Err(ObservationError::NotADecimal { value_name: name.to_owned(), value: v.clone() });
        }
    }
    Ok(())
}

fn single<'v>(name: &str, values: &'v [(Timestamp, String)]) -> Result<&'v str, ObservationError> {
    match values {
        [(_, v)] => Ok(v),
        _ => Err(ObservationError::MultipleValues { value_name: name.to_owned(), count: values.len() }),
    }
}

fn decimal(name: &str, text: &str) -> Result<Value, ObservationError> {
    decimal_number(text)
        .ok_or_else(|| ObservationError::NotADecimal { value_name: name.to_owned(), value: text.to_owned() })
}

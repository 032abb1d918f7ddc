//! The FHIR destination mapping: a `CollectionFhir` of `CodeValueFhir` templates saying how
//! measurements of a type become an Observation (period, codes, categories, value type, components).
//!
//! `periodInterval` is 0 (one Observation per instant), 60 (hourly windows), 1440 (daily windows), or
//! -1 / `"CorrelationId"` (one Observation per correlation id); Azure's enum names (`Single`, `Hourly`,
//! `Daily`, `CorrelationId`) are accepted too, and a missing value means 0, as in Azure. Value types:
//! `SampledData {defaultPeriod (ms), unit}`, `Quantity {unit, code, system}`, `String`,
//! `CodeableConcept {text, codes}`; names match in any case.

use crate::error::{Issues, MappingError};
use crate::read::{self, join};
use crate::time::TICKS_PER_MILLISECOND;
use serde_json::{Map, Value};

/// A parsed FHIR destination mapping.
#[derive(Debug, Clone)]
pub struct FhirMapping {
    templates: Vec<CodeValueFhirTemplate>,
}

/// How measurements are grouped into Observations (Azure's `ObservationPeriodInterval`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PeriodInterval {
    /// -1: one Observation per correlation id.
    CorrelationId,
    /// 0: one Observation per measurement instant.
    Single,
    /// 60: UTC hour windows.
    Hourly,
    /// 1440: UTC day windows.
    Daily,
}

/// One `CodeValueFhir` template.
#[derive(Debug, Clone, PartialEq)]
pub struct CodeValueFhirTemplate {
    pub type_name: String,
    pub period_interval: PeriodInterval,
    pub category: Vec<FhirCodeableConcept>,
    pub codes: Vec<FhirCode>,
    pub value: Option<FhirValue>,
    pub components: Vec<ComponentTemplate>,
}

/// A Coding to write (`codes[]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FhirCode {
    pub code: String,
    pub system: Option<String>,
    pub display: Option<String>,
}

/// A CodeableConcept to write (`category[]`, the CodeableConcept value type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FhirCodeableConcept {
    pub text: Option<String>,
    pub codes: Vec<FhirCode>,
}

/// `value` / `components[].value`.
#[derive(Debug, Clone, PartialEq)]
pub struct FhirValue {
    /// The measurement value to read; only a CodeableConcept value may go without (it then applies
    /// whenever the group has a measurement).
    pub value_name: Option<String>,
    pub value_type: ValueType,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ValueType {
    SampledData {
        /// As written in the mapping, in milliseconds; written to `SampledData.period`.
        default_period: serde_json::Number,
        /// The same period in ticks (100 ns), at least one.
        period_ticks: i64,
        unit: String,
    },
    Quantity {
        unit: Option<String>,
        code: Option<String>,
        system: Option<String>,
    },
    String,
    CodeableConcept(FhirCodeableConcept),
}

/// `components[]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ComponentTemplate {
    pub codes: Vec<FhirCode>,
    pub value: FhirValue,
}

impl FhirValue {
    /// The value name, for templates whose value type needs one.
    pub fn name(&self) -> Option<&str> {
        self.value_name.as_deref()
    }
}

impl FhirMapping {
    /// Parses and validates a FHIR destination mapping, reporting every problem found.
    pub fn parse(document: &Value) -> Result<FhirMapping, MappingError> {
        let mut issues = Issues::default();
        let mut templates: Vec<(String, CodeValueFhirTemplate)> = Vec::new();
        for (path, item) in read::collection(document, "CollectionFhir", &mut issues) {
            let Some((template_type, body)) = read::container(item, &path, &mut issues) else { continue };
            if !read::is_template_type(&template_type, "CodeValueFhir") {
                issues.push(
                    &join(&path, "templateType"),
                    format!("unknown template type '{template_type}'; expected CodeValueFhir"),
                );
                continue;
            }
            let body_path = join(&path, "template");
            let Some(template) = parse_template(body, &body_path, &mut issues) else { continue };
            if let Some((first, _)) = templates.iter().find(|(_, t)| t.type_name == template.type_name) {
                issues.push(&body_path, format!("typeName '{}' is already used by {first}", template.type_name));
                continue;
            }
            templates.push((path, template));
        }
        issues.into_result(FhirMapping { templates: templates.into_iter().map(|(_, t)| t).collect() })
    }

    /// The templates, in mapping order.
    pub fn templates(&self) -> &[CodeValueFhirTemplate] {
        &self.templates
    }

    /// The template for a measurement type: the exact name, else one differing only in ASCII case.
    pub fn template(&self, type_name: &str) -> Option<&CodeValueFhirTemplate> {
        self.templates
            .iter()
            .find(|t| t.type_name == type_name)
            .or_else(|| self.templates.iter().find(|t| t.type_name.eq_ignore_ascii_case(type_name)))
    }
}

fn parse_template(body: &Map<String, Value>, path: &str, issues: &mut Issues) -> Option<CodeValueFhirTemplate> {
    let type_name = read::required_string(body, "typeName", path, issues);
    let period_interval = period_interval(body, path, issues);
    if read::field(body, "codes").is_none() {
        issues.push(path, "codes is required (an array of {code, system, display})");
    }
    let template_codes = codes(body, "codes", path, issues);
    let category = read::array_items(body, "category", path, issues)
        .into_iter()
        .filter_map(|(p, item)| read::as_object(item, &p, issues).map(|o| codeable_concept(o, &p, issues)))
        .collect();
    let value = read::field(body, "value").and_then(|v| fhir_value(v, &join(path, "value"), false, issues));
    let mut components = Vec::new();
    for (p, item) in read::array_items(body, "components", path, issues) {
        let Some(object) = read::as_object(item, &p, issues) else { continue };
        let component_codes = codes(object, "codes", &p, issues);
        match read::field(object, "value") {
            None => issues.push(&p, "value is required"),
            Some(v) => {
                if let Some(value) = fhir_value(v, &join(&p, "value"), true, issues) {
                    components.push(ComponentTemplate { codes: component_codes, value });
                }
            }
        }
    }
    if read::field(body, "value").is_none() && read::field(body, "components").is_none() {
        issues.push(path, "value or components is required");
    }
    Some(CodeValueFhirTemplate {
        type_name: type_name?,
        period_interval,
        category,
        codes: template_codes,
        value,
        components,
    })
}

fn period_interval(body: &Map<String, Value>, path: &str, issues: &mut Issues) -> PeriodInterval {
    let named = [
        (PeriodInterval::CorrelationId, -1, "CorrelationId"),
        (PeriodInterval::Single, 0, "Single"),
        (PeriodInterval::Hourly, 60, "Hourly"),
        (PeriodInterval::Daily, 1440, "Daily"),
    ];
    let found = match read::field(body, "periodInterval") {
        None => return PeriodInterval::Single,
        Some(Value::Number(n)) => named.iter().find(|(_, v, _)| n.as_i64() == Some(*v)),
        Some(Value::String(s)) => named
            .iter()
            .find(|(_, v, name)| name.eq_ignore_ascii_case(s.trim()) || s.trim().parse::<i64>().ok() == Some(*v)),
        Some(_) => None,
    };
    match found {
        Some((interval, _, _)) => *interval,
        None => {
            issues.push(path, "periodInterval must be 0 (instant), 60 (hour), 1440 (day) or -1 (correlation id)");
            PeriodInterval::Single
        }
    }
}

fn codes(object: &Map<String, Value>, name: &str, path: &str, issues: &mut Issues) -> Vec<FhirCode> {
    let mut out = Vec::new();
    for (p, item) in read::array_items(object, name, path, issues) {
        let Some(o) = read::as_object(item, &p, issues) else { continue };
        let code = read::required_string(o, "code", &p, issues);
        let system = read::optional_string(o, "system", &p, issues).filter(|s| !s.is_empty());
        let display = read::optional_string(o, "display", &p, issues).filter(|s| !s.is_empty());
        if let Some(code) = code {
            out.push(FhirCode { code, system, display });
        }
    }
    out
}

fn codeable_concept(object: &Map<String, Value>, path: &str, issues: &mut Issues) -> FhirCodeableConcept {
    FhirCodeableConcept {
        text: read::optional_string(object, "text", path, issues).filter(|s| !s.is_empty()),
        codes: codes(object, "codes", path, issues),
    }
}

/// Reads a value type. `in_component`: a component's code is made from its value name, so every
/// component value needs one.
fn fhir_value(value: &Value, path: &str, in_component: bool, issues: &mut Issues) -> Option<FhirValue> {
    let object = read::as_object(value, path, issues)?;
    let value_type = read::required_string(object, "valueType", path, issues)?;
    let kind = ["SampledData", "Quantity", "String", "CodeableConcept"]
        .into_iter()
        .find(|k| read::is_template_type(&value_type, k));
    let Some(kind) = kind else {
        issues.push(
            &join(path, "valueType"),
            format!("unknown value type '{value_type}'; expected SampledData, Quantity, String or CodeableConcept"),
        );
        return None;
    };
    let value_name = if kind == "CodeableConcept" && !in_component {
        read::optional_string(object, "valueName", path, issues).filter(|s| !s.trim().is_empty())
    } else {
        Some(read::required_string(object, "valueName", path, issues)?)
    };
    let value_type = match kind {
        "SampledData" => {
            let unit = match read::field(object, "unit") {
                None => {
                    issues.push(path, "unit is required for SampledData");
                    return None;
                }
                Some(_) => read::optional_string(object, "unit", path, issues)?,
            };
            let default_period = match read::field(object, "defaultPeriod") {
                Some(Value::Number(n)) => n.clone(),
                Some(Value::String(s)) => match serde_json::from_str::<serde_json::Number>(s.trim()) {
                    Ok(n) => n,
                    Err(_) => {
                        issues.push(path, "defaultPeriod must be a number of milliseconds");
                        return None;
                    }
                },
                Some(_) => {
                    issues.push(path, "defaultPeriod must be a number of milliseconds");
                    return None;
                }
                None => {
                    issues.push(path, "defaultPeriod is required for SampledData (milliseconds between samples)");
                    return None;
                }
            };
            let ticks = default_period.as_f64().map(|ms| (ms * TICKS_PER_MILLISECOND as f64).round());
            let Some(period_ticks) = ticks.filter(|t| *t >= 1.0 && *t < 1e15).map(|t| t as i64) else {
                issues.push(path, "defaultPeriod must be a positive number of milliseconds");
                return None;
            };
            ValueType::SampledData { default_period, period_ticks, unit }
        }
        "Quantity" => ValueType::Quantity {
            unit: read::optional_string(object, "unit", path, issues).filter(|s| !s.is_empty()),
            code: read::optional_string(object, "code", path, issues).filter(|s| !s.is_empty()),
            system: read::optional_string(object, "system", path, issues).filter(|s| !s.is_empty()),
        },
        "String" => ValueType::String,
        _ => {
            let concept = codeable_concept(object, path, issues);
            if read::field(object, "codes").is_none() {
                issues.push(path, "codes is required for CodeableConcept");
            }
            ValueType::CodeableConcept(concept)
        }
    };
    Some(FhirValue { value_name, value_type })
}

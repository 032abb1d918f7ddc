//! The device mapping: a `CollectionContent` of content templates that find measurements in device
//! messages.
//!
//! Template types (names match in any case, with or without a `Template` suffix, as in Azure):
//!
//! | type | expressions | evaluated against |
//! | --- | --- | --- |
//! | `CalculatedContent` | JSONPath or JMESPath, each a string (in `defaultExpressionLanguage`, JsonPath unless set) or `{"value", "language"}` | the message with the matched token added as `matchedToken` |
//! | `JsonPathContent` | JSONPath strings | the matched token |
//! | `IotJsonPathContent` | JSONPath strings; device id from `$.SystemProperties.iothub-connection-device-id`, timestamp from `$.Properties.iothub-creation-time-utc`, else `$.SystemProperties.iothub-enqueuedtime` | the matched token (match the whole message: `$..[?(@Body.HeartRate)]`) |
//! | `IotCentralJsonPathContent` | JSONPath strings; device id `$.deviceId`, timestamp `$.enqueuedTime` | the matched token |
//!
//! `typeName` and `typeMatchExpression` are always required; `deviceIdExpression` and
//! `timestampExpression` too, except on the IoT templates, which fix them (and ignore any given, as
//! Azure does). `values[]` holds `{valueName, valueExpression, required}`.

mod normalize;

use crate::error::{Issues, MappingError};
use crate::expression::{Expression, ExpressionLanguage};
use crate::read::{self, join};
use serde_json::{Map, Value};

/// A parsed device mapping.
#[derive(Debug, Clone)]
pub struct DeviceMapping {
    templates: Vec<ContentTemplate>,
}

/// The kinds of content template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateKind {
    CalculatedContent,
    JsonPathContent,
    IotJsonPathContent,
    IotCentralJsonPathContent,
}

impl TemplateKind {
    const ALL: [(TemplateKind, &'static str); 4] = [
        (TemplateKind::CalculatedContent, "CalculatedContent"),
        (TemplateKind::JsonPathContent, "JsonPathContent"),
        (TemplateKind::IotJsonPathContent, "IotJsonPathContent"),
        (TemplateKind::IotCentralJsonPathContent, "IotCentralJsonPathContent"),
    ];

    pub fn name(self) -> &'static str {
        TemplateKind::ALL.iter().find(|(k, _)| *k == self).map_or("", |(_, n)| n)
    }
}

/// One content template.
#[derive(Debug, Clone)]
pub struct ContentTemplate {
    pub kind: TemplateKind,
    pub type_name: String,
    pub type_match: Expression,
    /// Set on every template after parsing (the IoT templates get their fixed expressions).
    pub device_id: Expression,
    /// Tried in order; IotJsonPathContent has a fallback.
    pub timestamp: Vec<Expression>,
    pub patient_id: Option<Expression>,
    pub encounter_id: Option<Expression>,
    pub correlation_id: Option<Expression>,
    pub values: Vec<ValueExpression>,
}

/// `values[]`: a named value to extract.
#[derive(Debug, Clone)]
pub struct ValueExpression {
    pub value_name: String,
    pub expression: Expression,
    pub required: bool,
}

impl DeviceMapping {
    /// Parses and validates a device mapping, reporting every problem found.
    pub fn parse(document: &Value) -> Result<DeviceMapping, MappingError> {
        let mut issues = Issues::default();
        let mut templates = Vec::new();
        for (path, item) in read::collection(document, "CollectionContent", &mut issues) {
            let Some((template_type, body)) = read::container(item, &path, &mut issues) else { continue };
            let kind = TemplateKind::ALL.iter().find(|(_, name)| read::is_template_type(&template_type, name));
            let Some((kind, _)) = kind else {
                let known: Vec<&str> = TemplateKind::ALL.iter().map(|(_, n)| *n).collect();
                issues.push(
                    &join(&path, "templateType"),
                    format!("unknown template type '{template_type}'; expected one of {}", known.join(", ")),
                );
                continue;
            };
            if let Some(template) = parse_template(*kind, body, &join(&path, "template"), &mut issues) {
                templates.push(template);
            }
        }
        issues.into_result(DeviceMapping { templates })
    }

    /// The templates, in mapping order.
    pub fn templates(&self) -> &[ContentTemplate] {
        &self.templates
    }
}

fn parse_template(
    kind: TemplateKind,
    body: &Map<String, Value>,
    path: &str,
    issues: &mut Issues,
) -> Option<ContentTemplate> {
    let calculated = kind == TemplateKind::CalculatedContent;
    let default_language = if calculated {
        match read::field(body, "defaultExpressionLanguage") {
            None => ExpressionLanguage::JsonPath,
            Some(Value::String(s)) => ExpressionLanguage::parse(s).unwrap_or_else(|| {
                issues.push(path, format!("defaultExpressionLanguage must be JsonPath or JmesPath, found '{s}'"));
                ExpressionLanguage::JsonPath
            }),
            Some(_) => {
                issues.push(path, "defaultExpressionLanguage must be JsonPath or JmesPath");
                ExpressionLanguage::JsonPath
            }
        }
    } else {
        ExpressionLanguage::JsonPath
    };
    let reader = ExpressionReader { calculated, default_language };
    let type_name = read::required_string(body, "typeName", path, issues);
    let type_match = reader.required(body, "typeMatchExpression", path, issues);
    let fixed = |source: &str| Expression::compile(source, ExpressionLanguage::JsonPath).ok();
    let (device_id, timestamp) = match kind {
        TemplateKind::IotJsonPathContent => (
            fixed("$.SystemProperties.iothub-connection-device-id"),
            vec![fixed("$.Properties.iothub-creation-time-utc"), fixed("$.SystemProperties.iothub-enqueuedtime")],
        ),
        TemplateKind::IotCentralJsonPathContent => (fixed("$.deviceId"), vec![fixed("$.enqueuedTime")]),
        _ => (
            reader.required(body, "deviceIdExpression", path, issues),
            vec![reader.required(body, "timestampExpression", path, issues)],
        ),
    };
    let patient_id = reader.optional(body, "patientIdExpression", path, issues);
    let encounter_id = reader.optional(body, "encounterIdExpression", path, issues);
    let correlation_id = reader.optional(body, "correlationIdExpression", path, issues);
    let mut values = Vec::new();
    for (value_path, item) in read::array_items(body, "values", path, issues) {
        let Some(object) = read::as_object(item, &value_path, issues) else { continue };
        let value_name = read::required_string(object, "valueName", &value_path, issues);
        let expression = reader.required(object, "valueExpression", &value_path, issues);
        let required = read::optional_bool(object, "required", &value_path, issues);
        if let (Some(value_name), Some(expression)) = (value_name, expression) {
            values.push(ValueExpression { value_name, expression, required });
        }
    }
    let timestamp: Option<Vec<Expression>> = timestamp.into_iter().collect();
    Some(ContentTemplate {
        kind,
        type_name: type_name?,
        type_match: type_match?,
        device_id: device_id?,
        timestamp: timestamp?,
        patient_id,
        encounter_id,
        correlation_id,
        values,
    })
}

/// Reads expression properties: plain strings everywhere, and `{value, language}` objects on
/// CalculatedContent templates.
struct ExpressionReader {
    calculated: bool,
    default_language: ExpressionLanguage,
}

impl ExpressionReader {
    fn required(&self, object: &Map<String, Value>, name: &str, path: &str, issues: &mut Issues) -> Option<Expression> {
        if read::field(object, name).is_none() {
            issues.push(path, format!("{name} is required"));
            return None;
        }
        self.optional(object, name, path, issues)
    }

    fn optional(&self, object: &Map<String, Value>, name: &str, path: &str, issues: &mut Issues) -> Option<Expression> {
        let at = join(path, name);
        let (source, language) = match read::field(object, name)? {
            Value::String(s) => (s.as_str(), self.default_language),
            Value::Object(o) if self.calculated => {
                let source = match read::field(o, "value") {
                    Some(Value::String(s)) => s.as_str(),
                    Some(_) => {
                        issues.push(&at, "value must be a string");
                        return None;
                    }
                    None => {
                        issues.push(&at, "value is required");
                        return None;
                    }
                };
                let language = match read::field(o, "language") {
                    None => self.default_language,
                    Some(Value::String(l)) => match ExpressionLanguage::parse(l) {
                        Some(language) => language,
                        None => {
                            issues.push(&at, format!("language must be JsonPath or JmesPath, found '{l}'"));
                            return None;
                        }
                    },
                    Some(_) => {
                        issues.push(&at, "language must be JsonPath or JmesPath");
                        return None;
                    }
                };
                (source, language)
            }
            Value::Object(_) => {
                issues.push(&at, "must be a JSONPath string (this template type takes no {value, language} objects)");
                return None;
            }
            _ if self.calculated => {
                issues.push(&at, "must be a string or an object {\"value\", \"language\"}");
                return None;
            }
            _ => {
                issues.push(&at, "must be a JSONPath string");
                return None;
            }
        };
        match Expression::compile(source, language) {
            Ok(expression) => Some(expression),
            Err(why) => {
                issues.push(&at, why);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests;

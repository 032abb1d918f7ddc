//! Normalization: every template's `typeMatchExpression` against a device message, and each matched
//! token turned into a [`Measurement`].
//!
//! As in Azure, each message is evaluated against all templates, so one message can yield measurements
//! of several types, and one template several measurements (one per matched token). A failure stops the
//! message (Azure does not retry it either), with an error naming the template and expression.

use super::{ContentTemplate, DeviceMapping, TemplateKind};
use crate::error::{NormalizeError, NormalizeErrorKind};
use crate::expression::{Expression, SelectError};
use crate::json::{token_to_string, ScalarError};
use crate::measurement::{Measurement, MeasurementValue};
use crate::time::Timestamp;
use serde_json::Value;

/// The property CalculatedContent adds to the message to hold the matched token.
const MATCHED_TOKEN: &str = "matchedToken";

impl DeviceMapping {
    /// Normalizes one device message (the Event Hubs shape `{"Body": …, "Properties": …,
    /// "SystemProperties": …}`; see [`crate::event_message`]) into measurements.
    pub fn normalize(&self, message: &Value) -> Result<Vec<Measurement>, NormalizeError> {
        let mut out = Vec::new();
        for (index, template) in self.templates.iter().enumerate() {
            let at = Site { index, template };
            let matched = template.type_match.select_all(message).map_err(|why| {
                at.error(&template.type_match, "typeMatchExpression", NormalizeErrorKind::Evaluation(why))
            })?;
            for token in matched {
                let context = match template.kind {
                    TemplateKind::CalculatedContent => {
                        with_matched_token(message, token).map_err(|kind| at.bare(kind))?
                    }
                    _ => token,
                };
                out.push(at.measurement(&context)?);
            }
        }
        Ok(out)
    }
}

/// A copy of the message with the matched token added as `matchedToken`, so later expressions reach
/// both.
fn with_matched_token(message: &Value, token: Value) -> Result<Value, NormalizeErrorKind> {
    let Some(object) = message.as_object() else { return Err(NormalizeErrorKind::MessageNotAnObject) };
    if object.contains_key(MATCHED_TOKEN) {
        return Err(NormalizeErrorKind::MatchedTokenTaken);
    }
    let mut object = object.clone();
    object.insert(MATCHED_TOKEN.to_owned(), token);
    Ok(Value::Object(object))
}

/// The template being applied, for building errors.
struct Site<'a> {
    index: usize,
    template: &'a ContentTemplate,
}

impl Site<'_> {
    fn error(&self, expression: &Expression, name: &str, kind: NormalizeErrorKind) -> NormalizeError {
        NormalizeError {
            template_index: self.index,
            type_name: self.template.type_name.clone(),
            expression_name: name.to_owned(),
            expression: expression.source().to_owned(),
            kind,
        }
    }

    fn bare(&self, kind: NormalizeErrorKind) -> NormalizeError {
        NormalizeError {
            template_index: self.index,
            type_name: self.template.type_name.clone(),
            expression_name: String::new(),
            expression: String::new(),
            kind,
        }
    }

    fn measurement(&self, context: &Value) -> Result<Measurement, NormalizeError> {
        let t = self.template;
        let device_id = self.required_string(context, &t.device_id, "deviceIdExpression")?;
        let occurrence_time = self.timestamp(context)?;
        let correlation_id = match &t.correlation_id {
            Some(e) => Some(self.required_string(context, e, "correlationIdExpression")?),
            None => None,
        };
        let mut values = Vec::new();
        for v in &t.values {
            let name = format!("values[{}]", v.value_name);
            match self.string(context, &v.expression, &name)? {
                Some(value) => values.push(MeasurementValue { name: v.value_name.clone(), value }),
                None if v.required => return Err(self.error(&v.expression, &name, NormalizeErrorKind::Missing)),
                None => {}
            }
        }
        Ok(Measurement {
            type_name: t.type_name.clone(),
            occurrence_time,
            device_id,
            patient_id: self.optional_string(context, t.patient_id.as_ref(), "patientIdExpression")?,
            encounter_id: self.optional_string(context, t.encounter_id.as_ref(), "encounterIdExpression")?,
            correlation_id,
            values,
        })
    }

    fn select(&self, context: &Value, e: &Expression, name: &str) -> Result<Option<Value>, NormalizeError> {
        e.select_one(context).map_err(|why| {
            self.error(
                e,
                name,
                match why {
                    SelectError::Multiple(n) => NormalizeErrorKind::MultipleTokens(n),
                    SelectError::Evaluation(message) => NormalizeErrorKind::Evaluation(message),
                },
            )
        })
    }

    fn string(&self, context: &Value, e: &Expression, name: &str) -> Result<Option<String>, NormalizeError> {
        let Some(token) = self.select(context, e, name)? else { return Ok(None) };
        token_to_string(&token)
            .map_err(|ScalarError::Container(what)| self.error(e, name, NormalizeErrorKind::NotAValue(what)))
    }

    /// Identifiers must be present and not blank: a blank device id could never be resolved.
    fn required_string(&self, context: &Value, e: &Expression, name: &str) -> Result<String, NormalizeError> {
        match self.string(context, e, name)? {
            Some(s) if !s.trim().is_empty() => Ok(s),
            _ => Err(self.error(e, name, NormalizeErrorKind::Missing)),
        }
    }

    fn optional_string(
        &self,
        context: &Value,
        e: Option<&Expression>,
        name: &str,
    ) -> Result<Option<String>, NormalizeError> {
        match e {
            Some(e) => Ok(self.string(context, e, name)?.filter(|s| !s.trim().is_empty())),
            None => Ok(None),
        }
    }

    /// The first timestamp expression that finds a value decides (IotJsonPathContent has a fallback).
    fn timestamp(&self, context: &Value) -> Result<Timestamp, NormalizeError> {
        let name = "timestampExpression";
        for e in &self.template.timestamp {
            let Some(token) = self.select(context, e, name)? else { continue };
            return match token {
                Value::String(s) => {
                    Timestamp::parse(&s).map_err(|why| self.error(e, name, NormalizeErrorKind::BadTimestamp(why.to_string())))
                }
                // .NET cannot convert a number to a DateTime either; use fromUnixTimestamp.
                other => Err(self.error(
                    e,
                    name,
                    NormalizeErrorKind::BadTimestamp(format!(
                        "{other} is not an ISO 8601 string (convert epoch numbers with fromUnixTimestamp in a JmesPath expression)"
                    )),
                )),
            };
        }
        let first = self.template.timestamp.first().unwrap_or(&self.template.type_match);
        Err(self.error(first, name, NormalizeErrorKind::Missing))
    }
}

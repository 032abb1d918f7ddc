//! The crate's errors: one type per stage, each saying where the problem is.
//!
//! - [`MappingError`]: a device or FHIR destination mapping is invalid. It lists every problem found,
//!   each with the JSON path of the offending place (`template[1].template.values[0]: valueExpression
//!   is required`), so an author can fix them all in one go.
//! - [`NormalizeError`]: a device message did not yield a measurement (a required value missing, an
//!   unreadable timestamp, an expression failing). It names the template and the expression.
//! - [`ObservationError`]: measurements could not be grouped or written into an Observation.

use std::fmt;

/// One problem in a mapping, at a JSON path within the mapping document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingIssue {
    /// Where, e.g. `template[1].template.values[0].valueExpression`; empty for the document itself.
    pub path: String,
    pub message: String,
}

/// A mapping that cannot be used, with every problem found in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingError {
    pub issues: Vec<MappingIssue>,
}

impl fmt::Display for MappingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.issues.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            if issue.path.is_empty() {
                f.write_str(&issue.message)?;
            } else {
                write!(f, "{}: {}", issue.path, issue.message)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for MappingError {}

/// Collects [`MappingIssue`]s while a mapping is read, so that reading goes on past the first one.
#[derive(Default)]
pub(crate) struct Issues(pub(crate) Vec<MappingIssue>);

impl Issues {
    pub(crate) fn push(&mut self, path: &str, message: impl Into<String>) {
        self.0.push(MappingIssue { path: path.to_owned(), message: message.into() });
    }

    pub(crate) fn into_result<T>(self, value: T) -> Result<T, MappingError> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(MappingError { issues: self.0 })
        }
    }
}

/// Why a device message did not normalize.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizeError {
    /// The template's position in the device mapping's `template` array.
    pub template_index: usize,
    pub type_name: String,
    /// The mapping property whose expression failed (`deviceIdExpression`, `values[hr]`, …); empty when
    /// the failure is not about one expression.
    pub expression_name: String,
    /// The expression as written; empty when there is none.
    pub expression: String,
    pub kind: NormalizeErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NormalizeErrorKind {
    /// A required value (device id, timestamp, correlation id, a `required` value) was not found.
    Missing,
    /// A single value was wanted but the expression selected several tokens.
    MultipleTokens(usize),
    /// The expression selected an object or array where a value was wanted.
    NotAValue(&'static str),
    /// The timestamp could not be read.
    BadTimestamp(String),
    /// Evaluating the expression failed (a JMESPath function error, such as a division by zero).
    Evaluation(String),
    /// CalculatedContent templates need the message to be a JSON object.
    MessageNotAnObject,
    /// CalculatedContent adds `matchedToken` to the message; the message already has one.
    MatchedTokenTaken,
}

impl fmt::Display for NormalizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "template[{}] ({})", self.template_index, self.type_name)?;
        if !self.expression_name.is_empty() {
            write!(f, ", {}", self.expression_name)?;
        }
        if !self.expression.is_empty() {
            write!(f, " `{}`", self.expression)?;
        }
        f.write_str(": ")?;
        match &self.kind {
            NormalizeErrorKind::Missing => f.write_str("required value not found in the message"),
            NormalizeErrorKind::MultipleTokens(n) => write!(f, "selected {n} tokens where one value is wanted"),
            NormalizeErrorKind::NotAValue(what) => write!(f, "selected {what} where a value is wanted"),
            NormalizeErrorKind::BadTimestamp(why) => write!(f, "unreadable timestamp: {why}"),
            NormalizeErrorKind::Evaluation(why) => write!(f, "evaluation failed: {why}"),
            NormalizeErrorKind::MessageNotAnObject => f.write_str("the device message must be a JSON object"),
            NormalizeErrorKind::MatchedTokenTaken => {
                f.write_str("the device message already has a 'matchedToken' property")
            }
        }
    }
}

impl std::error::Error for NormalizeError {}

/// Why measurements could not become an Observation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObservationError {
    /// No CodeValueFhir template has the measurement's type name.
    NoTemplate { type_name: String },
    /// Grouping by correlation id, but a measurement has none.
    MissingCorrelationId { type_name: String, device_id: String },
    /// A value that must be a decimal (Quantity, SampledData) is not one.
    NotADecimal { value_name: String, value: String },
    /// Quantity and String hold one value, but the group has several (Azure fails the same way).
    MultipleValues { value_name: String, count: usize },
    /// A SampledData stream would be unreasonably long (tiny `defaultPeriod`, long correlation group).
    TooManySamples { value_name: String, samples: i64 },
    /// The existing Observation cannot be merged into (wrong shape, different value type, more than one
    /// SampledData dimension, unreadable effective time).
    Incompatible(String),
}

impl fmt::Display for ObservationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObservationError::NoTemplate { type_name } => {
                write!(f, "the FHIR destination mapping has no CodeValueFhir template with typeName '{type_name}'")
            }
            ObservationError::MissingCorrelationId { type_name, device_id } => write!(
                f,
                "template '{type_name}' groups by correlation id, but a measurement of device '{device_id}' has none"
            ),
            ObservationError::NotADecimal { value_name, value } => {
                write!(f, "value '{value}' of '{value_name}' is not a decimal")
            }
            ObservationError::MultipleValues { value_name, count } => {
                write!(f, "'{value_name}' has {count} values in one observation group, but its value type holds one")
            }
            ObservationError::TooManySamples { value_name, samples } => {
                write!(f, "SampledData for '{value_name}' would hold {samples} samples, more than allowed")
            }
            ObservationError::Incompatible(why) => write!(f, "cannot merge into the existing Observation: {why}"),
        }
    }
}

impl std::error::Error for ObservationError {}

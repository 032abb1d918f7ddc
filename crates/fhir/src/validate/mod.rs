//! Structural validation of FHIR R4 JSON resources against the embedded StructureDefinitions.
//!
//! It runs on every write, so it is built for speed: the definitions are compiled once into a graph of nodes
//! keyed by JSON property name (module `schema`), the walk over a resource allocates nothing while the resource is
//! valid, and the FHIRPath-style location of an issue (`Patient.name[0].given[1]`) is rendered from a chain of
//! stack frames only when an issue is reported.
//!
//! What is checked:
//! - `resourceType`: present and a known, concrete resource type;
//! - unknown elements; cardinality (missing required elements, an array where one value is expected and the
//!   other way round); choice types (`valueQuantity`: a known suffix, one per group);
//! - the JSON kind and lexical format of each primitive (dates with real calendars, integer ranges, `id`,
//!   `code`, `uri`, `oid`, `uuid`, `base64Binary`, the narrative `div`, ...);
//! - FHIR's JSON rules: no empty strings, objects or arrays, `null` only to align a primitive array with its
//!   `_x` extension array, `_x` objects holding only `id` and `extension`;
//! - `contained` resources (each needs an `id` and may not itself contain resources), and resources nested in
//!   `Bundle.entry.resource` or `Parameters.parameter.resource`, validated as resources in their own right;
//! - `Reference.reference` syntax (module `reference` lists the accepted forms);
//! - codes of required bindings whose ValueSet is embedded (see `tools/fhir-codegen`).
//!
//! Not checked: FHIRPath invariants (`constraint` in the definitions, such as `ele-1` or `dom-3`) — a later
//! issue adds FHIRPath; profiles other than the base definitions; extensible and preferred bindings; whether
//! a reference's target exists or has an allowed type.
//!
//! Expressions use JSON property names (`Observation.valueQuantity.value`), except that a primitive's `_x`
//! extension property is reported under the primitive's own name, as FHIRPath sees it
//! (`Patient.birthDate.extension[0]`).

mod primitive;
pub(crate) mod reference;
pub(crate) mod schema;
mod walk;

use serde_json::Value;

/// Validates one resource. An empty result means valid; any issue of severity error or fatal means invalid.
pub fn validate_resource(resource: &Value) -> Vec<Issue> {
    walk::validate(crate::definitions(), resource)
}

/// Whether any issue makes the resource invalid (severity `error` or `fatal`).
pub fn has_errors(issues: &[Issue]) -> bool {
    issues.iter().any(|i| matches!(i.severity, Severity::Fatal | Severity::Error))
}

/// One problem found, shaped like an `OperationOutcome.issue`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub severity: Severity,
    pub code: IssueType,
    /// FHIRPath-style location, e.g. `Patient.name[0].given[1]`.
    pub expression: String,
    /// A human-readable explanation.
    pub diagnostics: String,
}

impl Issue {
    /// This issue as an `OperationOutcome.issue` JSON object.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "severity": self.severity.as_str(),
            "code": self.code.as_str(),
            "diagnostics": self.diagnostics,
            "expression": [self.expression],
        })
    }
}

/// `OperationOutcome.issue.severity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Severity {
    Fatal,
    Error,
    Warning,
    Information,
}

impl Severity {
    /// The FHIR code, e.g. `"error"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Fatal => "fatal",
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Information => "information",
        }
    }
}

/// `OperationOutcome.issue.code` (the IssueType value set), complete so other layers can use it too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IssueType {
    Invalid,
    Structure,
    Required,
    Value,
    Invariant,
    Security,
    Login,
    Unknown,
    Expired,
    Forbidden,
    Suppressed,
    Processing,
    NotSupported,
    Duplicate,
    MultipleMatches,
    NotFound,
    Deleted,
    TooLong,
    CodeInvalid,
    Extension,
    TooCostly,
    BusinessRule,
    Conflict,
    Transient,
    LockError,
    NoStore,
    Exception,
    Timeout,
    Incomplete,
    Throttled,
    Informational,
}

impl IssueType {
    /// The FHIR code, e.g. `"code-invalid"`.
    pub fn as_str(self) -> &'static str {
        match self {
            IssueType::Invalid => "invalid",
            IssueType::Structure => "structure",
            IssueType::Required => "required",
            IssueType::Value => "value",
            IssueType::Invariant => "invariant",
            IssueType::Security => "security",
            IssueType::Login => "login",
            IssueType::Unknown => "unknown",
            IssueType::Expired => "expired",
            IssueType::Forbidden => "forbidden",
            IssueType::Suppressed => "suppressed",
            IssueType::Processing => "processing",
            IssueType::NotSupported => "not-supported",
            IssueType::Duplicate => "duplicate",
            IssueType::MultipleMatches => "multiple-matches",
            IssueType::NotFound => "not-found",
            IssueType::Deleted => "deleted",
            IssueType::TooLong => "too-long",
            IssueType::CodeInvalid => "code-invalid",
            IssueType::Extension => "extension",
            IssueType::TooCostly => "too-costly",
            IssueType::BusinessRule => "business-rule",
            IssueType::Conflict => "conflict",
            IssueType::Transient => "transient",
            IssueType::LockError => "lock-error",
            IssueType::NoStore => "no-store",
            IssueType::Exception => "exception",
            IssueType::Timeout => "timeout",
            IssueType::Incomplete => "incomplete",
            IssueType::Throttled => "throttled",
            IssueType::Informational => "informational",
        }
    }
}

#[cfg(test)]
mod tests;

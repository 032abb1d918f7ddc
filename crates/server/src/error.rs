//! The one place where failures become HTTP responses.
//!
//! Every handler returns `Result<Response, FhirError>`; this module alone decides the status code,
//! the `OperationOutcome` issue code and the wording (Azure's, where its service has one, so that
//! clients written against it see the same messages). Internal details (database messages) are
//! logged, never sent.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use fhirside_store::StoreError;
use serde_json::{json, Value};

use crate::context;

/// A failed FHIR request.
#[derive(Debug)]
pub enum FhirError {
    /// `404`: no such resource.
    NotFound { resource_type: String, id: String },
    /// `404`: no such version.
    VersionNotFound { resource_type: String, id: String, version: String },
    /// `404`: a conditional interaction that needs a match found none.
    NoMatch(String),
    /// `410`: the current version is a deletion; carries the deleted version for the `ETag`.
    Gone { resource_type: String, id: String, version: u64 },
    /// `401`: no valid bearer token; carries the `WWW-Authenticate` challenge.
    Unauthenticated { challenge: HeaderValue },
    /// `403`: the caller lacks the data action.
    Forbidden,
    /// `403`: the caller's SMART scopes do not reach this; the reason says which.
    ScopeForbidden(String),
    /// `429` with `Retry-After`: a limit on concurrent work (bulk exports) is reached.
    TooManyRequests { diagnostics: String, retry_after: u32 },
    /// `500`: a background job failed; the message is the job's error, safe to show its caller.
    JobFailed(String),
    /// `404`: no route.
    RouteNotFound,
    /// `405`
    MethodNotAllowed,
    /// `400`: the resource type is not an R4 resource type.
    UnsupportedResourceType(String),
    /// `400` with one issue.
    BadRequest { code: &'static str, diagnostics: String, expression: Option<String> },
    /// `400` with the validator's issues.
    Invalid(Vec<fhir::Issue>),
    /// `422`: a well-formed request that cannot be carried out (a patch that does not apply, or
    /// whose result is not a valid resource).
    Unprocessable(Vec<Value>),
    /// `412`: `If-Match` named another version.
    VersionMismatch { supplied: String },
    /// `412`: a precondition other than a version mismatch failed.
    PreconditionFailed(String),
    /// `412`: a conditional interaction matched too many resources.
    NotSelective { resource_type: String },
    /// `406`
    NotAcceptable(String),
    /// `415`
    UnsupportedMediaType(String),
    /// `413`
    PayloadTooLarge { limit: usize },
    /// `409`
    Conflict(String),
    /// The failure of one entry of a batch or transaction Bundle; the status is the inner one.
    InEntry { index: usize, error: Box<FhirError> },
    /// `500`: the details go to the log.
    Internal(String),
    /// `503`
    Unavailable,
    /// `431`: more custom audit headers (`X-MS-AZUREFHIR-AUDIT-*`) than allowed.
    TooManyAuditHeaders { count: usize },
    /// `431`: a custom audit header's value is too long; `name` is the header as received.
    AuditHeaderTooLong { name: String, length: usize },
    /// `503`: the audit log could not record the start of the request, which was therefore not run.
    AuditUnavailable,
    /// `500`: the request ran but its outcome could not be recorded in the audit log.
    AuditIncomplete,
}

impl FhirError {
    pub fn bad_request(diagnostics: impl Into<String>) -> FhirError {
        FhirError::BadRequest { code: "invalid", diagnostics: diagnostics.into(), expression: None }
    }

    /// Wraps this error as the failure of Bundle entry `index`.
    pub fn in_entry(self, index: usize) -> FhirError {
        match self {
            FhirError::InEntry { .. } => self,
            error => FhirError::InEntry { index, error: Box::new(error) },
        }
    }

    /// The status and the `OperationOutcome` body, for callers that embed them (Bundle entries).
    pub fn status_and_outcome(&self) -> (StatusCode, Value) {
        let (status, issues) = self.status_and_issues();
        (status, operation_outcome(issues))
    }

    fn status_and_issues(&self) -> (StatusCode, Vec<Value>) {
        let issue = |severity: &str, code: &str, diagnostics: String| {
            vec![json!({"severity": severity, "code": code, "diagnostics": diagnostics})]
        };
        match self {
            FhirError::NotFound { resource_type, id } => (
                StatusCode::NOT_FOUND,
                issue("error", "not-found", format!("Resource type '{resource_type}' with id '{id}' couldn't be found.")),
            ),
            FhirError::VersionNotFound { resource_type, id, version } => (
                StatusCode::NOT_FOUND,
                issue(
                    "error",
                    "not-found",
                    format!("Resource type '{resource_type}' with id '{id}' and version '{version}' couldn't be found."),
                ),
            ),
            FhirError::NoMatch(diagnostics) => (StatusCode::NOT_FOUND, issue("error", "not-found", diagnostics.clone())),
            FhirError::Gone { resource_type, id, .. } => (
                StatusCode::GONE,
                issue("error", "deleted", format!("Resource type '{resource_type}' with id '{id}' has been deleted.")),
            ),
            FhirError::Unauthenticated { .. } => {
                (StatusCode::UNAUTHORIZED, issue("error", "login", "Authentication failed.".into()))
            }
            FhirError::Forbidden => {
                (StatusCode::FORBIDDEN, issue("error", "forbidden", "Authorization failed.".into()))
            }
            FhirError::ScopeForbidden(reason) => (StatusCode::FORBIDDEN, issue("error", "forbidden", reason.clone())),
            FhirError::TooManyRequests { diagnostics, .. } => {
                (StatusCode::TOO_MANY_REQUESTS, issue("error", "throttled", diagnostics.clone()))
            }
            FhirError::JobFailed(message) => (StatusCode::INTERNAL_SERVER_ERROR, issue("error", "exception", message.clone())),
            FhirError::RouteNotFound => {
                (StatusCode::NOT_FOUND, issue("error", "not-found", "The requested route was not found.".into()))
            }
            FhirError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                issue("error", "not-supported", "The requested operation is not supported.".into()),
            ),
            FhirError::UnsupportedResourceType(t) => (
                StatusCode::BAD_REQUEST,
                issue("error", "not-supported", format!("Resource type '{t}' is not supported.")),
            ),
            FhirError::BadRequest { code, diagnostics, expression } => {
                let mut issue = json!({"severity": "error", "code": code, "diagnostics": diagnostics});
                if let Some(expression) = expression {
                    issue["expression"] = json!([expression]);
                }
                (StatusCode::BAD_REQUEST, vec![issue])
            }
            FhirError::Invalid(issues) => (
                StatusCode::BAD_REQUEST,
                issues
                    .iter()
                    .map(|i| {
                        json!({
                            "severity": i.severity.as_str(),
                            "code": i.code.as_str(),
                            "diagnostics": i.diagnostics,
                            "expression": [i.expression],
                        })
                    })
                    .collect(),
            ),
            FhirError::Unprocessable(issues) => (StatusCode::UNPROCESSABLE_ENTITY, issues.clone()),
            FhirError::VersionMismatch { supplied } => (
                StatusCode::PRECONDITION_FAILED,
                issue("error", "conflict", format!("The supplied version '{supplied}' did not match.")),
            ),
            FhirError::PreconditionFailed(diagnostics) => {
                (StatusCode::PRECONDITION_FAILED, issue("error", "conflict", diagnostics.clone()))
            }
            FhirError::NotSelective { resource_type } => (
                StatusCode::PRECONDITION_FAILED,
                issue(
                    "error",
                    "multiple-matches",
                    format!(
                        "Conditional operation on {resource_type} was not attempted because search criteria was not selective enough."
                    ),
                ),
            ),
            FhirError::NotAcceptable(what) => (StatusCode::NOT_ACCEPTABLE, issue("error", "not-supported", what.clone())),
            FhirError::UnsupportedMediaType(what) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, issue("error", "not-supported", what.clone()))
            }
            FhirError::PayloadTooLarge { limit } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                issue("error", "too-costly", format!("The request body exceeds the limit of {limit} bytes.")),
            ),
            FhirError::Conflict(diagnostics) => (StatusCode::CONFLICT, issue("error", "conflict", diagnostics.clone())),
            FhirError::InEntry { index, error } => {
                let (status, mut issues) = error.status_and_issues();
                let entry = format!("Bundle.entry[{index}]");
                for issue in &mut issues {
                    let diagnostics = issue["diagnostics"].as_str().unwrap_or_default().to_owned();
                    if !diagnostics.starts_with(&entry) {
                        issue["diagnostics"] = json!(format!("{entry}: {diagnostics}"));
                    }
                    if issue.get("expression").is_none() {
                        issue["expression"] = json!([entry]);
                    }
                }
                (status, issues)
            }
            FhirError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                issue("error", "exception", "There was an error processing your request.".into()),
            ),
            FhirError::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                issue("error", "transient", "The service is shutting down; retry the request.".into()),
            ),
            FhirError::TooManyAuditHeaders { count } => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                issue(
                    "error",
                    "invalid",
                    format!(
                        "The maximum number of custom audit headers allowed is {}. The number of custom audit headers \
                         supplied is {count}.",
                        crate::audit::MAX_AUDIT_HEADERS
                    ),
                ),
            ),
            FhirError::AuditHeaderTooLong { name, length } => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                issue(
                    "error",
                    "invalid",
                    format!(
                        "The maximum length of a custom audit header value is {}. The supplied custom audit header \
                         '{name}' has length of {length}.",
                        crate::audit::MAX_AUDIT_HEADER_LENGTH
                    ),
                ),
            ),
            FhirError::AuditUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                issue(
                    "error",
                    "transient",
                    "The audit log is unavailable, so the request was not processed; retry it later.".into(),
                ),
            ),
            FhirError::AuditIncomplete => (
                StatusCode::INTERNAL_SERVER_ERROR,
                issue(
                    "error",
                    "exception",
                    "The audit log is unavailable: the outcome of the request could not be recorded, and the request \
                     may have taken effect."
                        .into(),
                ),
            ),
        }
    }
}

impl From<StoreError> for FhirError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::VersionConflict { expected, .. } => {
                FhirError::VersionMismatch { supplied: expected.to_string() }
            }
            StoreError::NotFoundForMatch => {
                FhirError::PreconditionFailed("If-Match was given for a resource that does not exist.".into())
            }
            StoreError::TooManyMatches { resource_type, .. } => FhirError::NotSelective { resource_type },
            StoreError::Invalid(message) => FhirError::bad_request(message),
            StoreError::Conflict(message) => FhirError::Conflict(message),
            StoreError::Backend(message) => FhirError::Internal(message),
            StoreError::RolledBack => FhirError::Internal("a transaction was rolled back without its reason".into()),
            StoreError::Unavailable => FhirError::Unavailable,
        }
    }
}

impl From<fhirside_relay::RelayError> for FhirError {
    fn from(error: fhirside_relay::RelayError) -> Self {
        use fhirside_relay::RelayError;
        match error {
            RelayError::Invalid(message) => FhirError::bad_request(message),
            RelayError::NotFound(message) => FhirError::NoMatch(message),
            RelayError::Conflict(message) => FhirError::Conflict(message),
            // A source key is not a token of the authority: the challenge names the relay.
            RelayError::Unauthenticated(message) => {
                eprintln!("fhirside: request {} refused: {message}", context::request_id());
                FhirError::Unauthenticated { challenge: HeaderValue::from_static("Bearer realm=\"relay\"") }
            }
            RelayError::Database(message) => FhirError::Internal(message),
        }
    }
}

/// An `OperationOutcome` body: `id` is the request's correlation id, as in Azure's service.
pub fn operation_outcome(issues: Vec<Value>) -> Value {
    json!({
        "resourceType": "OperationOutcome",
        "id": context::request_id(),
        "meta": {"lastUpdated": fhir::datetime::format_instant(fhir::datetime::now_micros())},
        "issue": issues,
    })
}

impl IntoResponse for FhirError {
    fn into_response(self) -> Response {
        if let FhirError::Internal(detail) = &self {
            eprintln!("request {} failed: {detail}", context::request_id());
        }
        let (status, issues) = self.status_and_issues();
        let body = serde_json::to_vec(&operation_outcome(issues)).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(crate::response::FHIR_JSON));
        if let FhirError::Gone { version, .. } = self {
            if let Ok(etag) = HeaderValue::from_str(&format!("W/\"{version}\"")) {
                headers.insert(header::ETAG, etag);
            }
        } else if let FhirError::Unauthenticated { challenge } = self {
            headers.insert(header::WWW_AUTHENTICATE, challenge);
        } else if let FhirError::TooManyRequests { retry_after, .. } = self {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        }
        response
    }
}

//! `$validate` at type level (`POST /{type}/$validate`) and instance level
//! (`POST /{type}/{id}/$validate`) (<https://hl7.org/fhir/R4/resource-operation-validate.html>).
//!
//! The body is the resource itself or a `Parameters` with a `resource` part (and optionally
//! `mode`). The answer is `200` with an `OperationOutcome` listing every issue, or one
//! informational "All OK" issue; `400` only when the request itself cannot be validated.
//! Nothing is stored.

use axum::http::StatusCode;
use axum::response::Response;
use fhirside_store::Cost;
use serde_json::{json, Value};

use crate::auth::DataAction;
use crate::error::{operation_outcome, FhirError};
use crate::response;
use crate::AppState;

use super::Call;

pub(crate) async fn handle(
    state: &AppState,
    call: Call,
    resource_type: &str,
    id: Option<&str>,
) -> Result<Response, FhirError> {
    call.authorize(DataAction::ResourceValidate)?;
    let format = call.format()?;
    crate::negotiate::require_json_body(&call.headers)?;
    let bytes = super::read_body(call.body, state.config.max_body_bytes).await?;
    let body: Value = serde_json::from_slice(&bytes).map_err(|e| FhirError::BadRequest {
        code: "structure",
        diagnostics: format!("The request body is not valid JSON: {e}."),
        expression: None,
    })?;
    let (resource, mode) = unwrap_parameters(body)?;
    let mode = mode.as_deref().unwrap_or(if id.is_some() { "update" } else { "create" });

    let mut issues: Vec<Value> = Vec::new();
    let mut cost = Cost::default();
    match mode {
        "create" | "update" | "profile" => {
            let resource = resource.ok_or_else(|| FhirError::bad_request("$validate needs a resource to validate."))?;
            if resource.get("resourceType").and_then(Value::as_str) != Some(resource_type) {
                return Err(FhirError::bad_request(format!("The resource to validate must be a {resource_type}.")));
            }
            if let (Some(id), "update") = (id, mode) {
                if resource.get("id").and_then(Value::as_str) != Some(id) {
                    issues.push(json!({"severity": "error", "code": "invalid",
                        "diagnostics": format!("For an update the resource's id must be '{id}'."),
                        "expression": [format!("{resource_type}.id")]}));
                }
            }
            for issue in fhir::validate::validate_resource(&resource) {
                issues.push(json!({
                    "severity": issue.severity.as_str(),
                    "code": issue.code.as_str(),
                    "diagnostics": issue.diagnostics,
                    "expression": [issue.expression],
                }));
            }
        }
        "delete" => {
            let id = id.ok_or_else(|| FhirError::bad_request("mode=delete needs an instance-level $validate."))?;
            let outcome = state.store.read(resource_type, id).await?;
            cost = outcome.cost;
            if outcome.value.is_none_or(|v| v.deleted) {
                issues.push(json!({"severity": "error", "code": "not-found",
                    "diagnostics": format!("{resource_type}/{id} does not exist.")}));
            }
        }
        other => return Err(FhirError::bad_request(format!("The $validate mode '{other}' is not known."))),
    }
    if issues.is_empty() {
        issues.push(json!({"severity": "information", "code": "informational", "diagnostics": "All OK"}));
    }
    let body = serde_json::to_vec(&operation_outcome(issues)).map_err(|e| FhirError::Internal(e.to_string()))?;
    response::document(StatusCode::OK, body.into(), format, cost)
}

/// The resource and mode from a `Parameters` body, or the body itself as the resource.
fn unwrap_parameters(body: Value) -> Result<(Option<Value>, Option<String>), FhirError> {
    if body.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
        return Ok((Some(body), None));
    }
    let mut resource = None;
    let mut mode = None;
    if let Some(Value::Array(parts)) = body.get("parameter") {
        for part in parts {
            match part.get("name").and_then(Value::as_str) {
                Some("resource") => resource = part.get("resource").cloned(),
                Some("mode") => mode = part.get("valueCode").and_then(Value::as_str).map(str::to_owned),
                _ => {}
            }
        }
    }
    if resource.is_none() && mode.is_none() {
        // A Parameters resource sent to Parameters/$validate is itself the subject.
        return Ok((Some(body), None));
    }
    Ok((resource, mode))
}

//! `$import` (Azure's FHIR service's operation): `POST /$import` with a `Parameters` body naming
//! NDJSON inputs, run as a job in the store's job table; its status at `/_operations/import/{id}`.
//!
//! `mode=InitialLoad` writes each resource as its next version, now; `IncrementalLoad` keeps
//! `meta.versionId` and `meta.lastUpdated` from the files, so history carries over and newer
//! versions win. Every line is validated like a write; a bad line is reported, with its line
//! number, in the job's error files and never stops the good ones ([`job`]).

pub(crate) mod job;
pub(crate) mod status;

use std::path::PathBuf;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::DataAction;
use crate::error::FhirError;
use crate::AppState;

use super::Call;

/// The kind of import jobs in the job table.
pub(crate) const IMPORT: &str = "import";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Mode {
    InitialLoad,
    IncrementalLoad,
}

/// One input file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Input {
    /// The type of its resources, when the request named one (each line must then be of it).
    #[serde(rename = "type")]
    pub resource_type: Option<String>,
    pub url: String,
    pub etag: Option<String>,
}

/// What an import job was asked to do, as queued.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ImportDefinition {
    pub mode: Mode,
    pub input: Vec<Input>,
    /// Where error files go: a container of the job's own.
    pub container: String,
    /// The kick-off's instant (microseconds) and URL, for the result.
    pub transaction_time: i64,
    pub request: String,
    pub caller: String,
}

pub(crate) async fn kick_off(state: &AppState, call: Call) -> Result<Response, FhirError> {
    call.authorize(DataAction::Import)?;
    let prefer = call.headers.get_all("prefer").iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>().join(",");
    if !prefer.split(',').any(|p| p.trim().eq_ignore_ascii_case("respond-async")) {
        return Err(FhirError::bad_request("$import is asynchronous: send the header 'Prefer: respond-async'."));
    }
    if state.bulk.is_none() {
        return Err(FhirError::BadRequest {
            code: "not-supported",
            diagnostics: "Bulk import is not configured on this server.".into(),
            expression: None,
        });
    }
    let mut call = call;
    crate::negotiate::require_json_body(&call.headers)?;
    let body = super::read_body(std::mem::take(&mut call.body), state.config.max_body_bytes).await?;
    let (mode, input) = parse_parameters(&body)?;
    for (i, input) in input.iter().enumerate() {
        // The same check the job makes, now, so that a wrong URL fails the request.
        job::check_input(state, &input.url).await.map_err(|reason| FhirError::BadRequest {
            code: "invalid",
            diagnostics: format!("input[{i}] '{}': {reason}", input.url),
            expression: Some(format!("Parameters.parameter[input][{i}].url")),
        })?;
    }
    let id = crate::ids::new_id();
    let definition = ImportDefinition {
        mode,
        input,
        container: format!("fhirimport-{}", id.replace('-', "")),
        transaction_time: fhir::datetime::now_micros(),
        request: call.self_link(),
        caller: call.caller().to_owned(),
    };
    let job = fhirside_store::NewJob {
        id: id.clone(),
        kind: IMPORT.into(),
        definition: serde_json::to_string(&definition).map_err(|e| FhirError::Internal(e.to_string()))?,
        singleton: false,
    };
    state.store.jobs().enqueue(&job).await?;
    state.jobs.wake();
    let mut response = StatusCode::ACCEPTED.into_response();
    let location = format!("{}/_operations/import/{id}", crate::context::base_url());
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::CONTENT_LOCATION, value);
    }
    Ok(response)
}

/// The `Parameters` of Azure's `$import`: `inputFormat` (`application/fhir+ndjson`), `mode`
/// (`InitialLoad` by default, or `IncrementalLoad`), `input` parts with `type`, `url` and `etag`
/// (`storageDetail` is accepted and needs nothing here).
fn parse_parameters(body: &[u8]) -> Result<(Mode, Vec<Input>), FhirError> {
    let resource: Value = serde_json::from_slice(body)
        .map_err(|e| FhirError::bad_request(format!("The request body is not valid JSON: {e}.")))?;
    if resource.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
        return Err(FhirError::bad_request("$import takes a Parameters resource."));
    }
    fn text(p: &Value) -> Option<&str> {
        ["valueString", "valueCode", "valueUri", "valueUrl"].iter().find_map(|k| p.get(*k).and_then(Value::as_str))
    }
    let mut mode = Mode::InitialLoad;
    let mut input = Vec::new();
    for parameter in resource.get("parameter").and_then(Value::as_array).into_iter().flatten() {
        match parameter.get("name").and_then(Value::as_str).unwrap_or("") {
            "inputFormat" => match text(parameter) {
                Some("application/fhir+ndjson") => {}
                other => {
                    return Err(FhirError::bad_request(format!(
                        "inputFormat {other:?} is not supported; use application/fhir+ndjson."
                    )))
                }
            },
            "mode" => {
                mode = match text(parameter) {
                    Some("InitialLoad") => Mode::InitialLoad,
                    Some("IncrementalLoad") => Mode::IncrementalLoad,
                    other => {
                        return Err(FhirError::bad_request(format!(
                            "mode {other:?} is not InitialLoad or IncrementalLoad."
                        )))
                    }
                }
            }
            "input" => {
                let parts = parameter.get("part").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
                let part = |name: &str| parts.iter().find(|p| p.get("name").and_then(Value::as_str) == Some(name));
                let url = part("url")
                    .and_then(text)
                    .ok_or_else(|| FhirError::bad_request(format!("input[{}] has no url.", input.len())))?;
                let resource_type = part("type").and_then(text).map(str::to_owned);
                if let Some(t) = &resource_type {
                    if !fhir::definitions().is_resource_type(t) {
                        return Err(FhirError::bad_request(format!("input type '{t}' is not a resource type.")));
                    }
                }
                input.push(Input {
                    resource_type,
                    url: url.to_owned(),
                    etag: part("etag").and_then(text).map(str::to_owned),
                });
            }
            "storageDetail" => {}
            other => {
                return Err(FhirError::bad_request(format!("The parameter '{other}' is not supported by $import.")))
            }
        }
    }
    if input.is_empty() {
        return Err(FhirError::bad_request("$import needs at least one input."));
    }
    Ok((mode, input))
}

/// Directories local inputs may come from: the operator's, and the bulk storage's own.
pub(crate) fn import_roots(state: &AppState) -> Vec<PathBuf> {
    let mut roots = state.config.export.import_roots.clone();
    if let Some(root) = state.bulk.as_ref().and_then(|b| b.local_root()) {
        roots.push(root.to_path_buf());
    }
    roots
}

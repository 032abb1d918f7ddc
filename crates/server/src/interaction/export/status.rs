//! An export's status URL (`/_operations/export/{id}`, as Azure's service names it), its
//! cancellation and, on local storage, its files.
//!
//! - `GET`: `202` with `X-Progress` and `Retry-After` while the job is queued or running; `200` with
//!   the manifest once it completed; the job's error as a `500` OperationOutcome when it failed;
//!   `404` for an unknown, cancelled or expired job.
//! - `DELETE`: cancels the job (its worker stops at its next checkpoint), removes its files, `202`.
//! - `GET …/{file}`: one output file, when the server keeps them itself.

use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use fhirside_store::{JobRecord, JobStatus};
use serde_json::json;

use super::job::{ExportProgress, ExportResult};
use super::{ExportDefinition, EXPORT};
use crate::auth::DataAction;
use crate::error::FhirError;
use crate::interaction::Call;
use crate::AppState;

static X_PROGRESS: HeaderName = HeaderName::from_static("x-progress");

/// How long a client should wait between status requests, in seconds.
const RETRY_AFTER: u32 = 2;

pub(crate) async fn get(state: &AppState, call: Call, id: &str) -> Result<Response, FhirError> {
    call.authorize(DataAction::Export)?;
    let job = export_job(state, id).await?;
    let definition = definition(&job)?;
    match job.status {
        JobStatus::Queued | JobStatus::Running => {
            let progress: ExportProgress =
                job.checkpoint.as_deref().and_then(|c| serde_json::from_str(c).ok()).unwrap_or_default();
            let text = match (job.status, progress.current_type(&definition)) {
                (JobStatus::Queued, _) => "queued".to_owned(),
                (_, Some(resource_type)) => {
                    format!("exported {} resources; now {resource_type}", progress.exported)
                }
                (_, None) => format!("exported {} resources", progress.exported),
            };
            let mut response = StatusCode::ACCEPTED.into_response();
            let headers = response.headers_mut();
            if let Ok(value) = HeaderValue::from_str(&text) {
                headers.insert(X_PROGRESS.clone(), value);
            }
            headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER));
            Ok(response)
        }
        JobStatus::Completed => {
            let result: ExportResult = job
                .result
                .as_deref()
                .and_then(|r| serde_json::from_str(r).ok())
                .ok_or_else(|| FhirError::Internal(format!("export job {id} has no readable result")))?;
            let manifest = manifest(state, &job, &definition, &result);
            let mut response = (StatusCode::OK, manifest.to_string()).into_response();
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            Ok(response)
        }
        JobStatus::Failed => Err(FhirError::JobFailed(format!(
            "The export failed: {}",
            job.error.as_deref().unwrap_or("no reason was recorded")
        ))),
        JobStatus::Cancelled => Err(not_found(id)),
    }
}

/// Cancels the job and removes what it wrote.
pub(crate) async fn cancel(state: &AppState, call: Call, id: &str) -> Result<Response, FhirError> {
    call.authorize(DataAction::Export)?;
    let job = export_job(state, id).await?;
    if job.status == JobStatus::Cancelled {
        return Err(not_found(id));
    }
    let definition = definition(&job)?;
    if job.status.is_final() {
        // The client is done with a finished export: its files and its status go.
        state.store.jobs().remove(id).await?;
    } else {
        // The worker stops at its next checkpoint; the row stays, cancelled, so that a worker
        // that wrote a file meanwhile finds out and the status URL answers 404.
        state.store.jobs().cancel(id).await?;
    }
    super::job::remove_files(state, &definition).await;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// `GET /_operations/export/{id}/{file}`: a file of a completed export, from local storage.
pub(crate) async fn file(state: &AppState, call: Call, id: &str, file: &str) -> Result<Response, FhirError> {
    call.authorize(DataAction::Export)?;
    let job = export_job(state, id).await?;
    let definition = definition(&job)?;
    let storage = state.bulk.as_ref().filter(|s| s.served_here()).ok_or(FhirError::RouteNotFound)?;
    let known = job
        .result
        .as_deref()
        .and_then(|r| serde_json::from_str::<ExportResult>(r).ok())
        .is_some_and(|result| result.output.iter().any(|o| o.key == format!("{}{file}", definition.prefix)));
    if job.status != JobStatus::Completed || !known {
        return Err(FhirError::NotFound { resource_type: format!("_operations/export/{id}"), id: file.to_owned() });
    }
    let key = format!("{}{file}", definition.prefix);
    let body = storage.get(&definition.container, &key).await.map_err(FhirError::Internal)?.ok_or_else(|| {
        FhirError::NotFound { resource_type: format!("_operations/export/{id}"), id: file.to_owned() }
    })?;
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/fhir+ndjson"));
    Ok(response)
}

/// The export job `id`; an expired one is removed and is `404` like an unknown one.
async fn export_job(state: &AppState, id: &str) -> Result<JobRecord, FhirError> {
    match state.store.jobs().job(id).await? {
        Some(job) if job.kind == EXPORT && crate::bulk::expiry::expired(state, &job) => {
            crate::bulk::expiry::discard(state, &job).await;
            Err(not_found(id))
        }
        Some(job) if job.kind == EXPORT => Ok(job),
        _ => Err(not_found(id)),
    }
}

fn definition(job: &JobRecord) -> Result<ExportDefinition, FhirError> {
    serde_json::from_str(&job.definition).map_err(|e| FhirError::Internal(format!("export job {}: {e}", job.id)))
}

fn not_found(id: &str) -> FhirError {
    FhirError::NotFound { resource_type: "_operations/export".into(), id: id.to_owned() }
}

/// The completion manifest (Bulk Data IG): where each file is, of which type, with how many
/// resources.
fn manifest(
    state: &AppState,
    job: &JobRecord,
    definition: &ExportDefinition,
    result: &ExportResult,
) -> serde_json::Value {
    let storage = state.bulk.as_ref();
    let served_here = storage.is_some_and(|s| s.served_here());
    // Files the server serves need the caller's token whenever the API does.
    let requires_token = served_here && state.authentication.is_some();
    let base = crate::context::base_url();
    let url = |key: &str| match storage {
        Some(storage) if !served_here => storage.url(&definition.container, key),
        _ => format!("{base}/_operations/export/{}/{}", job.id, key.strip_prefix(&definition.prefix).unwrap_or(key)),
    };
    json!({
        "transactionTime": fhir::datetime::format_instant(definition.transaction_time),
        "request": definition.request,
        "requiresAccessToken": requires_token,
        "output": result.output.iter().map(|o| json!({"type": o.resource_type, "url": url(&o.key), "count": o.count})).collect::<Vec<_>>(),
        "error": result.errors.iter().map(|o| json!({"type": "OperationOutcome", "url": url(&o.key), "count": o.count})).collect::<Vec<_>>(),
    })
}

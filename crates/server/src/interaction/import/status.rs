//! An import's status URL (`/_operations/import/{id}`), its cancellation and its error files.
//!
//! `GET`: `202` with `X-Progress` while it runs; `200` with the result once done (Azure's shape:
//! `transactionTime`, `request`, `output[] {type, count, inputUrl}`, `error[] {type, count,
//! inputUrl, url}`); a failed job's reason as a `500`; `404` for unknown or cancelled jobs.
//! `DELETE` cancels a running import (what it wrote stays) or discards a finished one's status and
//! error files.

use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use fhirside_store::{JobRecord, JobStatus};
use serde_json::json;

use super::job::ImportProgress;
use super::{ImportDefinition, IMPORT};
use crate::auth::DataAction;
use crate::error::FhirError;
use crate::interaction::Call;
use crate::AppState;

static X_PROGRESS: HeaderName = HeaderName::from_static("x-progress");

pub(crate) async fn get(state: &AppState, call: Call, id: &str) -> Result<Response, FhirError> {
    call.authorize(DataAction::Import)?;
    let job = import_job(state, id).await?;
    let definition = definition(&job)?;
    match job.status {
        JobStatus::Queued | JobStatus::Running => {
            let progress: ImportProgress =
                job.checkpoint.as_deref().and_then(|c| serde_json::from_str(c).ok()).unwrap_or_default();
            let text = match job.status {
                JobStatus::Queued => "queued".to_owned(),
                _ => format!(
                    "imported {} resources; input {} of {}",
                    progress.imported_total(),
                    (progress.input_index + 1).min(definition.input.len()),
                    definition.input.len()
                ),
            };
            let mut response = StatusCode::ACCEPTED.into_response();
            if let Ok(value) = HeaderValue::from_str(&text) {
                response.headers_mut().insert(X_PROGRESS.clone(), value);
            }
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(2u32));
            Ok(response)
        }
        JobStatus::Completed => {
            let progress: ImportProgress = job
                .result
                .as_deref()
                .and_then(|r| serde_json::from_str(r).ok())
                .ok_or_else(|| FhirError::Internal(format!("import job {id} has no readable result")))?;
            let body = result(&job, &definition, &progress);
            let mut response = (StatusCode::OK, body.to_string()).into_response();
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            Ok(response)
        }
        JobStatus::Failed => Err(FhirError::JobFailed(format!(
            "The import failed: {}",
            job.error.as_deref().unwrap_or("no reason was recorded")
        ))),
        JobStatus::Cancelled => Err(not_found(id)),
    }
}

pub(crate) async fn cancel(state: &AppState, call: Call, id: &str) -> Result<Response, FhirError> {
    call.authorize(DataAction::Import)?;
    let job = import_job(state, id).await?;
    if job.status == JobStatus::Cancelled {
        return Err(not_found(id));
    }
    if job.status.is_final() {
        state.store.jobs().remove(id).await?;
        discard_files(state, &job).await;
    } else {
        state.store.jobs().cancel(id).await?;
    }
    Ok(StatusCode::ACCEPTED.into_response())
}

/// `GET /_operations/import/{id}/{file}`: an error file of a completed import.
pub(crate) async fn file(state: &AppState, call: Call, id: &str, file: &str) -> Result<Response, FhirError> {
    call.authorize(DataAction::Import)?;
    let job = import_job(state, id).await?;
    let definition = definition(&job)?;
    let storage = state.bulk.as_ref().filter(|s| s.served_here()).ok_or(FhirError::RouteNotFound)?;
    let missing = || FhirError::NotFound { resource_type: format!("_operations/import/{id}"), id: file.to_owned() };
    let progress: ImportProgress =
        job.result.as_deref().and_then(|r| serde_json::from_str(r).ok()).ok_or_else(missing)?;
    if !progress.error_files.iter().any(|f| f.key == file) {
        return Err(missing());
    }
    let body = storage.get(&definition.container, file).await.map_err(FhirError::Internal)?.ok_or_else(missing)?;
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/fhir+ndjson"));
    Ok(response)
}

/// Removes an import's error files.
pub(crate) async fn discard_files(state: &AppState, job: &JobRecord) {
    let (Some(storage), Ok(definition)) = (&state.bulk, definition(job)) else { return };
    if let Err(error) = storage.delete_prefix(&definition.container, "").await {
        eprintln!("import: cannot remove the error files of import {}: {error}", job.id);
    }
}

/// The import job `id`; an expired one is removed and is `404` like an unknown one.
async fn import_job(state: &AppState, id: &str) -> Result<JobRecord, FhirError> {
    match state.store.jobs().job(id).await? {
        Some(job) if job.kind == IMPORT && crate::bulk::expiry::expired(state, &job) => {
            crate::bulk::expiry::discard(state, &job).await;
            Err(not_found(id))
        }
        Some(job) if job.kind == IMPORT => Ok(job),
        _ => Err(not_found(id)),
    }
}

fn definition(job: &JobRecord) -> Result<ImportDefinition, FhirError> {
    serde_json::from_str(&job.definition).map_err(|e| FhirError::Internal(format!("import job {}: {e}", job.id)))
}

fn not_found(id: &str) -> FhirError {
    FhirError::NotFound { resource_type: "_operations/import".into(), id: id.to_owned() }
}

fn result(job: &JobRecord, definition: &ImportDefinition, progress: &ImportProgress) -> serde_json::Value {
    let base = crate::context::base_url();
    let mut output = Vec::new();
    for (input, counts) in definition.input.iter().zip(&progress.imported) {
        for (resource_type, count) in counts {
            output.push(json!({"type": resource_type, "count": count, "inputUrl": input.url}));
        }
    }
    let error: Vec<serde_json::Value> = progress
        .error_files
        .iter()
        .map(|f| {
            json!({
                "type": "OperationOutcome",
                "count": f.count,
                "inputUrl": definition.input.get(f.input).map(|i| i.url.as_str()).unwrap_or(""),
                "url": format!("{base}/_operations/import/{}/{}", job.id, f.key),
            })
        })
        .collect();
    json!({
        "transactionTime": fhir::datetime::format_instant(definition.transaction_time),
        "request": definition.request,
        "output": output,
        "error": error,
    })
}

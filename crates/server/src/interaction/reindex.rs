//! `$reindex` (`POST /$reindex`), its status (`GET /_operations/reindex/{id}`) and cancellation
//! (`DELETE /_operations/reindex/{id}`), as in Azure's FHIR service: after a custom
//! SearchParameter is created, a reindex job makes it searchable over the resources already
//! stored. The job is a row in the store's job table, so any replica answers for it and any
//! replica may run it; its results are complete once the status says `Completed`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use fhirside_store::{Cost, JobRecord, JobStatus};
use serde_json::json;

use crate::auth::DataAction;
use crate::error::FhirError;
use crate::search_params::{ReindexDefinition, ReindexProgress, REINDEX};
use crate::AppState;

use super::Call;

pub(crate) async fn start(state: &AppState, call: Call) -> Result<Response, FhirError> {
    call.authorize(DataAction::Reindex)?;
    let format = call.format()?;
    let job = crate::search_params::reindex(state).await?;
    let location = format!("{}/_operations/reindex/{}", crate::context::base_url(), job.id);
    let mut response = crate::response::document(StatusCode::CREATED, parameters(&job), format, Cost::default())?;
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::CONTENT_LOCATION, value);
    }
    Ok(response)
}

pub(crate) async fn status(state: &AppState, call: Call, id: &str) -> Result<Response, FhirError> {
    call.authorize(DataAction::Reindex)?;
    let format = call.format()?;
    let job = state.store.jobs().job(id).await?.filter(|job| job.kind == REINDEX).ok_or_else(|| not_found(id))?;
    crate::response::document(StatusCode::OK, parameters(&job), format, Cost::default())
}

/// Cancels the job; its worker stops at its next checkpoint. Azure answers with the job.
pub(crate) async fn cancel(state: &AppState, call: Call, id: &str) -> Result<Response, FhirError> {
    call.authorize(DataAction::Reindex)?;
    let format = call.format()?;
    match state.store.jobs().job(id).await? {
        Some(job) if job.kind == REINDEX => {}
        _ => return Err(not_found(id)),
    }
    let job = state.store.jobs().cancel(id).await?.ok_or_else(|| not_found(id))?;
    crate::response::document(StatusCode::OK, parameters(&job), format, Cost::default())
}

fn not_found(id: &str) -> FhirError {
    FhirError::NotFound { resource_type: "_operations/reindex".into(), id: id.to_owned() }
}

/// Azure's names for a job's status.
fn status_name(status: JobStatus) -> &'static str {
    match status {
        JobStatus::Queued => "Queued",
        JobStatus::Running => "Running",
        JobStatus::Completed => "Completed",
        JobStatus::Failed => "Failed",
        JobStatus::Cancelled => "Canceled",
    }
}

/// The job as a Parameters resource, with Azure's parameter names.
fn parameters(job: &JobRecord) -> bytes::Bytes {
    let definition: ReindexDefinition = serde_json::from_str(&job.definition).unwrap_or_default();
    let progress: ReindexProgress =
        job.checkpoint.as_deref().and_then(|c| serde_json::from_str(c).ok()).unwrap_or_default();
    let mut parameter = vec![
        json!({"name": "id", "valueString": job.id}),
        json!({"name": "status", "valueString": status_name(job.status)}),
        json!({"name": "resourcesSuccessfullyReindexed", "valueDecimal": progress.count}),
        json!({"name": "searchParams", "valueString": definition.params.join(",")}),
    ];
    if let Some(error) = &job.error {
        parameter.push(json!({"name": "error", "valueString": error}));
    }
    let resource = json!({"resourceType": "Parameters", "id": job.id, "parameter": parameter});
    serde_json::to_vec(&resource).unwrap_or_default().into()
}

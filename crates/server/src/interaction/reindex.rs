//! `$reindex` (`POST /$reindex`) and its status (`GET /_operations/reindex/{id}`), as in Azure's
//! FHIR service: after a custom SearchParameter is created, a reindex job makes it searchable over
//! the resources already stored. The job runs in the background; its results are complete once
//! the status says `Completed`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use fhirside_store::Cost;
use serde_json::json;

use crate::auth::DataAction;
use crate::error::FhirError;
use crate::search_params::ReindexStatus;
use crate::AppState;

use super::Call;

pub(crate) async fn start(state: &AppState, call: Call) -> Result<Response, FhirError> {
    call.authorize(DataAction::Reindex)?;
    let format = call.format()?;
    let status = crate::search_params::reindex(state).await?;
    let location = format!("{}/_operations/reindex/{}", crate::context::base_url(), status.id);
    let mut response = crate::response::document(StatusCode::CREATED, parameters(&status), format, Cost::default())?;
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::CONTENT_LOCATION, value);
    }
    Ok(response)
}

pub(crate) async fn status(state: &AppState, call: Call, id: &str) -> Result<Response, FhirError> {
    call.authorize(DataAction::Reindex)?;
    let format = call.format()?;
    let status = state
        .reindexer
        .status(id)
        .ok_or(FhirError::NotFound { resource_type: "_operations/reindex".into(), id: id.to_owned() })?;
    crate::response::document(StatusCode::OK, parameters(&status), format, Cost::default())
}

/// The job as a Parameters resource, with Azure's parameter names.
fn parameters(status: &ReindexStatus) -> bytes::Bytes {
    let mut parameter = vec![
        json!({"name": "id", "valueString": status.id}),
        json!({"name": "status", "valueString": status.status}),
        json!({"name": "resourcesSuccessfullyReindexed", "valueDecimal": status.resources_reindexed}),
        json!({"name": "searchParams", "valueString": status.params.join(",")}),
    ];
    if let Some(error) = &status.error {
        parameter.push(json!({"name": "error", "valueString": error}));
    }
    let resource = json!({"resourceType": "Parameters", "id": status.id, "parameter": parameter});
    serde_json::to_vec(&resource).unwrap_or_default().into()
}

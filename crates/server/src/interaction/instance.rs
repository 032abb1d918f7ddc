//! Dispatch for `/{segment}/{id}` and `/{segment}/{id}/{op}`: an id (read) or a type-level keyword
//! (`_history`, `_search`, `$validate`, `$everything`), then instance-level `_history`, `$validate`,
//! `$everything` and compartment searches (`/Patient/1/Observation`).

use axum::extract::{Request, State};

use crate::extract::Segments;
use axum::response::Response;
use fhirside_store::HistoryScope;

use crate::error::FhirError;
use crate::AppState;

use super::{everything, export, history, read, resource_type, search, validate, Call};

pub(crate) async fn get(
    State(state): State<AppState>,
    Segments((segment, id)): Segments<(String, String)>,
    request: Request,
) -> Result<Response, FhirError> {
    let call = Call::new(request);
    let resource_type = resource_type(&segment)?;
    match id.as_str() {
        "_history" => history::handle(&state, call, HistoryScope::Type(resource_type.to_owned())).await,
        "$everything" => everything::handle(&state, call, resource_type, None).await,
        "$export" => patient_export(&state, call, resource_type).await,
        "_search" | "$validate" => Err(FhirError::MethodNotAllowed),
        s if s.starts_with('$') || s.starts_with('_') => Err(FhirError::RouteNotFound),
        id => read::handle(&state, call, resource_type, id).await,
    }
}

pub(crate) async fn post(
    State(state): State<AppState>,
    Segments((segment, id)): Segments<(String, String)>,
    request: Request,
) -> Result<Response, FhirError> {
    let mut call = Call::new(request);
    let resource_type = resource_type(&segment)?;
    match id.as_str() {
        "$validate" => validate::handle(&state, call, resource_type, None).await,
        "$export" => patient_export(&state, call, resource_type).await,
        "_search" => {
            super::merge_form_body(&state, &mut call).await?;
            search::handle(&state, call, resource_type).await
        }
        s if s.starts_with('$') || s.starts_with('_') => Err(FhirError::RouteNotFound),
        _ => Err(FhirError::MethodNotAllowed),
    }
}

pub(crate) async fn get_sub(
    State(state): State<AppState>,
    Segments((segment, id, op)): Segments<(String, String, String)>,
    request: Request,
) -> Result<Response, FhirError> {
    let call = Call::new(request);
    match (segment.as_str(), id.as_str()) {
        ("_operations", "reindex") => return super::reindex::status(&state, call, &op).await,
        ("_operations", "export") => return export::status::get(&state, call, &op).await,
        ("_operations", "import") => return super::import::status::get(&state, call, &op).await,
        _ => {}
    }
    let resource_type = resource_type(&segment)?;
    match op.as_str() {
        "_history" => history::handle(&state, call, HistoryScope::Instance(resource_type.to_owned(), id)).await,
        "$everything" => everything::handle(&state, call, resource_type, Some(&id)).await,
        "$export" => group_export(&state, call, resource_type, &id).await,
        t if fhir::definitions().is_resource_type(t) => {
            search::in_compartment(&state, call, resource_type, &id, t).await
        }
        _ => Err(FhirError::RouteNotFound),
    }
}

/// `DELETE /_operations/reindex/{id}` cancels a reindex job; nothing else has three segments.
pub(crate) async fn delete_sub(
    State(state): State<AppState>,
    Segments((segment, id, op)): Segments<(String, String, String)>,
    request: Request,
) -> Result<Response, FhirError> {
    let call = Call::new(request);
    match (segment.as_str(), id.as_str()) {
        ("_operations", "reindex") => return super::reindex::cancel(&state, call, &op).await,
        ("_operations", "export") => return export::status::cancel(&state, call, &op).await,
        ("_operations", "import") => return super::import::status::cancel(&state, call, &op).await,
        _ => {}
    }
    resource_type(&segment)?;
    Err(FhirError::MethodNotAllowed)
}

pub(crate) async fn post_sub(
    State(state): State<AppState>,
    Segments((segment, id, op)): Segments<(String, String, String)>,
    request: Request,
) -> Result<Response, FhirError> {
    let call = Call::new(request);
    let resource_type = resource_type(&segment)?;
    match op.as_str() {
        "$validate" => validate::handle(&state, call, resource_type, Some(&id)).await,
        "$export" => group_export(&state, call, resource_type, &id).await,
        _ => Err(FhirError::RouteNotFound),
    }
}

/// `GET /_operations/export/{id}/{file}`: an export's file, when the server keeps them.
pub(crate) async fn get_file(
    State(state): State<AppState>,
    Segments((segment, id, op, sub)): Segments<(String, String, String, String)>,
    request: Request,
) -> Result<Response, FhirError> {
    let call = Call::new(request);
    match (segment.as_str(), id.as_str()) {
        ("_operations", "export") => export::status::file(&state, call, &op, &sub).await,
        ("_operations", "import") => super::import::status::file(&state, call, &op, &sub).await,
        _ => Err(FhirError::RouteNotFound),
    }
}

/// `/Patient/$export`; `$export` on another type is no operation.
async fn patient_export(state: &AppState, call: Call, resource_type: &str) -> Result<Response, FhirError> {
    match resource_type {
        "Patient" => export::kick_off(state, call, export::KickOffLevel::Patient).await,
        _ => Err(FhirError::RouteNotFound),
    }
}

/// `/Group/{id}/$export`.
async fn group_export(state: &AppState, call: Call, resource_type: &str, id: &str) -> Result<Response, FhirError> {
    match resource_type {
        "Group" => export::kick_off(state, call, export::KickOffLevel::Group(id)).await,
        _ => Err(FhirError::RouteNotFound),
    }
}

/// `POST /{compartment}/{id}/{type}/_search`: compartment search with a form body.
pub(crate) async fn post_compartment_search(
    State(state): State<AppState>,
    Segments((segment, id, target, sub)): Segments<(String, String, String, String)>,
    request: Request,
) -> Result<Response, FhirError> {
    let mut call = Call::new(request);
    let compartment = resource_type(&segment)?;
    if sub != "_search" || !fhir::definitions().is_resource_type(&target) {
        return Err(FhirError::RouteNotFound);
    }
    super::merge_form_body(&state, &mut call).await?;
    search::in_compartment(&state, call, compartment, &id, &target).await
}

//! Dispatch for `/{segment}`: a resource type (search, create, conditional update/delete) or a
//! system-level keyword (`_history`).

use axum::extract::{Request, State};

use crate::extract::Segments;
use axum::response::Response;
use fhirside_store::HistoryScope;

use crate::error::FhirError;
use crate::AppState;

use super::{create, export, history, reindex, resource_type, search, Call};

pub(crate) async fn get(
    State(state): State<AppState>,
    Segments(segment): Segments<String>,
    request: Request,
) -> Result<Response, FhirError> {
    let call = Call::new(request);
    match segment.as_str() {
        "_history" => history::handle(&state, call, HistoryScope::System).await,
        "$export" => export::kick_off(&state, call, export::KickOffLevel::System).await,
        s if s.starts_with('$') || s.starts_with('_') => Err(FhirError::RouteNotFound),
        s => search::handle(&state, call, resource_type(s)?).await,
    }
}

pub(crate) async fn post(
    State(state): State<AppState>,
    Segments(segment): Segments<String>,
    request: Request,
) -> Result<Response, FhirError> {
    let mut call = Call::new(request);
    match segment.as_str() {
        "$reindex" => reindex::start(&state, call).await,
        "$export" => export::kick_off(&state, call, export::KickOffLevel::System).await,
        "$import" => super::import::kick_off(&state, call).await,
        "_search" => {
            super::merge_form_body(&state, &mut call).await?;
            search::system(&state, call).await
        }
        s if s.starts_with('$') || s.starts_with('_') => Err(FhirError::RouteNotFound),
        s => create::handle(&state, call, resource_type(s)?).await,
    }
}

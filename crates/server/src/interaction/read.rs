//! read: `GET /{type}/{id}` (<https://hl7.org/fhir/R4/http.html#read>).
//!
//! `404` if the resource never existed, `410` with the deletion's `ETag` if its current version is
//! a deletion, `304` when `If-None-Match` names the current version or `If-Modified-Since` is not
//! older than it.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use fhirside_store::StoredVersion;

use crate::auth::DataAction;
use crate::error::FhirError;
use crate::negotiate::Return;
use crate::response::{self, ResourceResponse};
use crate::smart::Interaction;
use crate::AppState;

use super::{parse_etag, Call};

pub(crate) async fn handle(state: &AppState, call: Call, resource_type: &str, id: &str) -> Result<Response, FhirError> {
    call.authorize(DataAction::Read)?;
    call.require_scope(resource_type, Interaction::Read)?;
    let format = call.format()?;
    let outcome = state.store.read(resource_type, id).await?;
    let version = match outcome.value {
        // Outside a SMART caller's reach reads as absent: it must not learn what exists there.
        Some(v) if !call.may_see(&v, Interaction::Read) => {
            return Err(FhirError::NotFound { resource_type: resource_type.into(), id: id.into() })
        }
        None => return Err(FhirError::NotFound { resource_type: resource_type.into(), id: id.into() }),
        Some(v) if v.deleted => {
            return Err(FhirError::Gone { resource_type: resource_type.into(), id: id.into(), version: v.version })
        }
        Some(v) => v,
    };
    if not_modified(&call, &version) {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        response::version_headers(response.headers_mut(), &version);
        response::charge(response.headers_mut(), outcome.cost);
        return Ok(response);
    }
    response::resource(ResourceResponse {
        status: StatusCode::OK,
        version: &version,
        format,
        return_: Return::Representation,
        cost: outcome.cost,
        location: false,
    })
}

/// `If-None-Match` takes precedence over `If-Modified-Since` (RFC 9110 §13.2.2).
fn not_modified(call: &Call, version: &StoredVersion) -> bool {
    if let Some(value) = call.headers.get(header::IF_NONE_MATCH) {
        let text = value.to_str().unwrap_or("");
        return text.trim() == "*" || text.split(',').any(|tag| parse_etag(tag) == Some(version.version));
    }
    if let Some(value) = call.headers.get(header::IF_MODIFIED_SINCE) {
        if let Some(since) = value.to_str().ok().and_then(fhir::datetime::parse_http_date) {
            // HTTP dates have whole seconds: compare at that precision.
            return version.last_updated.div_euclid(1_000_000) <= since.div_euclid(1_000_000);
        }
    }
    false
}

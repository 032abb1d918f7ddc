//! vread: `GET /{type}/{id}/_history/{vid}` (<https://hl7.org/fhir/R4/http.html#vread>).
//!
//! A version that is a deletion answers `410` with its `ETag`; an unknown version `404`.

use axum::extract::{Request, State};

use crate::extract::Segments;
use axum::http::StatusCode;
use axum::response::Response;

use crate::auth::DataAction;
use crate::error::FhirError;
use crate::negotiate::Return;
use crate::response::{self, ResourceResponse};
use crate::smart::Interaction;
use crate::AppState;

use super::Call;

pub(crate) async fn handle(
    State(state): State<AppState>,
    Segments((segment, id, vid)): Segments<(String, String, String)>,
    request: Request,
) -> Result<Response, FhirError> {
    let call = Call::new(request);
    let resource_type = super::resource_type(&segment)?;
    call.authorize(DataAction::Read)?;
    call.require_scope(resource_type, Interaction::Read)?;
    let format = call.format()?;
    let not_found =
        || FhirError::VersionNotFound { resource_type: resource_type.into(), id: id.clone(), version: vid.clone() };
    let version: u64 = vid.parse().map_err(|_| not_found())?;
    let outcome = state.store.vread(resource_type, &id, version).await?;
    match outcome.value {
        None => Err(not_found()),
        Some(v) if !call.may_see(&v, Interaction::Read) => Err(not_found()),
        Some(v) if v.deleted => Err(FhirError::Gone { resource_type: resource_type.into(), id, version: v.version }),
        Some(v) => response::resource(ResourceResponse {
            status: StatusCode::OK,
            version: &v,
            format,
            return_: Return::Representation,
            cost: outcome.cost,
            location: false,
        }),
    }
}

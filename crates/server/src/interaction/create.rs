//! create: `POST /{type}` (<https://hl7.org/fhir/R4/http.html#create>), and conditional create
//! with `If-None-Exist` (<https://hl7.org/fhir/R4/http.html#ccreate>).
//!
//! The server assigns the id (any id in the body is ignored, as the spec directs). With
//! `If-None-Exist`, one match answers `200` with that resource and stores nothing; several matches
//! answer `412`. The match and the insert happen in one store transaction, so two racing
//! conditional creates make one resource.

use axum::http::{HeaderName, StatusCode};
use axum::response::Response;
use fhirside_store::{Unstamped, WriteOp, WriteResult};

use crate::auth::DataAction;
use crate::error::FhirError;
use crate::indexing;
use crate::params::Params;
use crate::response::{self, ResourceResponse};
use crate::smart::Interaction;
use crate::AppState;

use super::{needs, search, Call};

static IF_NONE_EXIST: HeaderName = HeaderName::from_static("if-none-exist");

pub(crate) async fn handle(state: &AppState, call: Call, resource_type: &str) -> Result<Response, FhirError> {
    if call.headers.contains_key(&IF_NONE_EXIST) {
        call.authorize_any_of(needs::CONDITIONAL_CREATE)?;
    } else {
        call.authorize(DataAction::Write)?;
    }
    let format = call.format()?;
    let prefer = call.prefer()?;
    let if_none_exist = match call.headers.get(&IF_NONE_EXIST) {
        None => None,
        Some(value) => {
            let text = value.to_str().map_err(|_| FhirError::bad_request("The If-None-Exist header is not valid."))?;
            // Either `identifier=x` or a full `Patient?identifier=x`.
            let query = text.split_once('?').map_or(text, |(_, q)| q);
            let mut query = search::conditional(resource_type, &Params::parse(Some(query)))?;
            call.restrict_conditional(&mut query)?;
            Some(query)
        }
    };
    call.require_scope(resource_type, Interaction::Create)?;
    let smart = call.smart_shared();
    let mut resource = call.resource(resource_type, state.config.max_body_bytes).await?;
    let index = indexing::extract(resource_type, &mut resource);
    if let Some(smart) = smart {
        smart.check_write(resource_type, Interaction::Create, None, &index)?;
    }
    let op = WriteOp::Create {
        resource_type: resource_type.to_owned(),
        id: crate::ids::new_id(),
        resource: Unstamped::new(resource),
        index,
        if_none_exist,
    };
    let outcome = state.store.write(op).await?;
    let (status, version) = match &outcome.value {
        WriteResult::Created(v) => (StatusCode::CREATED, v),
        WriteResult::Existing(v) => (StatusCode::OK, v),
        other => return Err(FhirError::Internal(format!("create produced {other:?}"))),
    };
    response::resource(ResourceResponse {
        status,
        version,
        format,
        return_: prefer.return_,
        cost: outcome.cost,
        location: status == StatusCode::CREATED,
    })
}

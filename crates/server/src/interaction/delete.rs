//! delete: `DELETE /{type}/{id}` (<https://hl7.org/fhir/R4/http.html#delete>) and conditional
//! delete `DELETE /{type}?…` (<https://hl7.org/fhir/R4/http.html#cdelete>).
//!
//! Deletion is soft: a new version marks the resource deleted, reads then answer `410`, and history
//! keeps every version. Deleting something absent or already deleted is a no-op `204`, so deletes
//! are idempotent. A conditional delete removes one match by default; with `_count=n` (at most the
//! configured maximum, 100 as in Azure's service) up to `n`; more matches than that answer `412`
//! and delete nothing.

use axum::extract::{Request, State};

use crate::extract::Segments;
use axum::http::{HeaderName, HeaderValue};
use axum::response::Response;
use fhirside_store::{WriteOp, WriteResult};

use crate::auth::DataAction;
use crate::error::FhirError;
use crate::response;
use crate::smart::Interaction;
use crate::AppState;

use super::{needs, search, Call};

static ITEMS_DELETED: HeaderName = HeaderName::from_static("items-deleted");

pub(crate) async fn handle(
    State(state): State<AppState>,
    Segments((segment, id)): Segments<(String, String)>,
    request: Request,
) -> Result<Response, FhirError> {
    let call = Call::new(request);
    let resource_type = super::resource_type(&segment)?;
    super::writable_id(&id)?;
    call.authorize(DataAction::Delete)?;
    let if_match = call.if_match()?;
    if let Some(smart) = call.smart() {
        smart.require(resource_type, Interaction::Delete)?;
        if let Some(current) = state.store.read(resource_type, &id).await?.value {
            smart.check_existing(&current, Interaction::Delete)?;
        }
    }
    let op = WriteOp::Delete { resource_type: resource_type.to_owned(), id, if_match };
    let outcome = state.store.write(op).await?;
    match &outcome.value {
        WriteResult::Deleted(versions) => Ok(response::no_content(versions.first(), outcome.cost)),
        other => Err(FhirError::Internal(format!("delete produced {other:?}"))),
    }
}

/// `DELETE /{type}?criteria[&_count=n]`
pub(crate) async fn conditional(
    State(state): State<AppState>,
    Segments(segment): Segments<String>,
    request: Request,
) -> Result<Response, FhirError> {
    let call = Call::new(request);
    let resource_type = super::resource_type(&segment)?;
    call.authorize_any_of(needs::CONDITIONAL_DELETE)?;
    let mut query = search::conditional(resource_type, &call.params)?;
    call.require_scope(resource_type, Interaction::Delete)?;
    call.restrict_conditional(&mut query)?;
    let max = match call.params.get("_count") {
        None => 1,
        Some(text) => match text.parse::<u32>() {
            Ok(n) if (1..=state.config.conditional_delete_max).contains(&n) => n,
            _ => {
                return Err(FhirError::bad_request(format!(
                    "_count for a conditional delete must be between 1 and {}.",
                    state.config.conditional_delete_max
                )))
            }
        },
    };
    let op = WriteOp::ConditionalDelete { resource_type: resource_type.to_owned(), query, max };
    let outcome = state.store.write(op).await?;
    match &outcome.value {
        WriteResult::Deleted(versions) => {
            let single = if versions.len() == 1 { versions.first() } else { None };
            let mut response = response::no_content(single, outcome.cost);
            response.headers_mut().insert(ITEMS_DELETED.clone(), HeaderValue::from(versions.len()));
            Ok(response)
        }
        other => Err(FhirError::Internal(format!("conditional delete produced {other:?}"))),
    }
}

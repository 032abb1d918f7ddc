//! update: `PUT /{type}/{id}` (<https://hl7.org/fhir/R4/http.html#update>), including
//! update-as-create, and conditional update `PUT /{type}?…`
//! (<https://hl7.org/fhir/R4/http.html#cond-update>).
//!
//! The body's `id` must equal the URL's (`400` otherwise). `If-Match: W/"n"` makes the update
//! conditional on the current version (`412` on mismatch), checked in the same transaction as the
//! write. A resource that did not exist, or whose current version is a deletion, is created:
//! `201` with `Location`; otherwise `200`.

use axum::extract::{Request, State};

use crate::extract::Segments;
use axum::http::StatusCode;
use axum::response::Response;
use fhirside_store::{Unstamped, WriteOp, WriteResult};
use serde_json::Value;

use crate::auth::DataAction;
use crate::error::FhirError;
use crate::indexing;
use crate::response::{self, ResourceResponse};
use crate::smart::Interaction;
use crate::AppState;

use super::{needs, search, Call};

pub(crate) async fn handle(
    State(state): State<AppState>,
    Segments((segment, id)): Segments<(String, String)>,
    request: Request,
) -> Result<Response, FhirError> {
    let call = Call::new(request);
    let resource_type = super::resource_type(&segment)?;
    super::writable_id(&id)?;
    call.authorize(DataAction::Write)?;
    let format = call.format()?;
    let prefer = call.prefer()?;
    let if_match = call.if_match()?;
    if !fhir::is_valid_id(&id) {
        return Err(FhirError::BadRequest {
            code: "invalid",
            diagnostics: format!("'{id}' is not a valid resource id."),
            expression: None,
        });
    }
    let smart = call.smart_shared();
    let mut resource = call.resource(resource_type, state.config.max_body_bytes).await?;
    match resource.get("id").and_then(Value::as_str) {
        Some(body_id) if body_id == id => {}
        Some(body_id) => {
            return Err(FhirError::BadRequest {
                code: "invalid",
                diagnostics: format!("The id in the body ('{body_id}') does not match the id in the URL ('{id}')."),
                expression: Some(format!("{resource_type}.id")),
            })
        }
        None => {
            return Err(FhirError::BadRequest {
                code: "required",
                diagnostics: "The resource in an update must have an id equal to the id in the URL.".into(),
                expression: Some(format!("{resource_type}.id")),
            })
        }
    }
    let index = indexing::extract(resource_type, &mut resource);
    if let Some(smart) = smart {
        // The version replaced must be within reach too; an update that creates needs `create`.
        let current = state.store.read(resource_type, &id).await?.value;
        let interaction = match &current {
            Some(v) if !v.deleted => {
                smart.check_existing(v, Interaction::Update)?;
                Interaction::Update
            }
            _ => Interaction::Create,
        };
        smart.check_write(resource_type, interaction, Some(&id), &index)?;
    }
    let op = WriteOp::Update {
        resource_type: resource_type.to_owned(),
        id,
        resource: Unstamped::new(resource),
        index,
        if_match,
    };
    respond(&state, op, format, prefer.return_).await
}

/// `PUT /{type}?criteria`
pub(crate) async fn conditional(
    State(state): State<AppState>,
    Segments(segment): Segments<String>,
    request: Request,
) -> Result<Response, FhirError> {
    let call = Call::new(request);
    let resource_type = super::resource_type(&segment)?;
    call.authorize_any_of(needs::CONDITIONAL_UPDATE)?;
    let format = call.format()?;
    let prefer = call.prefer()?;
    let if_match = call.if_match()?;
    let mut query = search::conditional(resource_type, &call.params)?;
    call.restrict_conditional(&mut query)?;
    let smart = call.smart_shared();
    let mut resource = call.resource(resource_type, state.config.max_body_bytes).await?;
    let body_id = resource.get("id").and_then(Value::as_str).map(str::to_owned);
    let index = indexing::extract(resource_type, &mut resource);
    if let Some(smart) = smart {
        // What it replaces is within reach (the query is restricted); what it writes must be, as an
        // update or, when nothing matches, a create.
        let mut probe = query.clone();
        probe.count = 1;
        let matched = !state.store.search(&probe).await?.value.versions.is_empty();
        let interaction = if matched { Interaction::Update } else { Interaction::Create };
        smart.check_write(resource_type, interaction, body_id.as_deref(), &index)?;
    }
    let op = WriteOp::ConditionalUpdate {
        resource_type: resource_type.to_owned(),
        query,
        new_id: body_id.clone().unwrap_or_else(crate::ids::new_id),
        body_id,
        resource: Unstamped::new(resource),
        index,
        if_match,
    };
    respond(&state, op, format, prefer.return_).await
}

async fn respond(
    state: &AppState,
    op: WriteOp,
    format: crate::negotiate::Format,
    return_: crate::negotiate::Return,
) -> Result<Response, FhirError> {
    let outcome = state.store.write(op).await?;
    let (status, version) = match &outcome.value {
        WriteResult::Created(v) => (StatusCode::CREATED, v),
        WriteResult::Updated(v) => (StatusCode::OK, v),
        other => return Err(FhirError::Internal(format!("update produced {other:?}"))),
    };
    response::resource(ResourceResponse {
        status,
        version,
        format,
        return_,
        cost: outcome.cost,
        location: status == StatusCode::CREATED,
    })
}

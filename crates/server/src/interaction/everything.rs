//! `$everything` on a Patient: `GET /Patient/{id}/$everything`, and `GET /Patient/$everything` for
//! all patients (<https://hl7.org/fhir/R4/patient-operation-everything.html>).
//!
//! Returns the patient, every resource in its compartment (per the R4 CompartmentDefinition, kept as
//! index rows when resources are written), and the resources those refer to (practitioners,
//! organizations, medications…), as a `searchset` Bundle. `_type` narrows the types, `_since` keeps
//! resources updated at or after an instant, `_count` sizes pages and `next` links continue.

use axum::http::StatusCode;
use axum::response::Response;
use fhirside_store::{EverythingQuery, Page};

use crate::auth::DataAction;
use crate::bundle::BundleWriter;
use crate::error::FhirError;
use crate::response;
use crate::smart::Interaction;
use crate::AppState;

use super::{search, Call};

const PARAMETERS: &[&str] = &["_count", "_since", "_type", "ct", "_format", "_pretty", "start", "end"];

pub(crate) async fn handle(
    state: &AppState,
    call: Call,
    resource_type: &str,
    id: Option<&str>,
) -> Result<Response, FhirError> {
    if resource_type != "Patient" {
        return Err(FhirError::BadRequest {
            code: "not-supported",
            diagnostics: format!("$everything is supported on Patient, not {resource_type}."),
            expression: None,
        });
    }
    call.authorize(DataAction::Read)?;
    if let Some(smart) = call.smart() {
        smart.require(resource_type, Interaction::Read)?;
        // Bound to a patient: that patient's record only, never every patient's.
        if let Some(patient) = smart.patient().filter(|_| !smart.reaches_all("Patient", Interaction::Read)) {
            if id != Some(patient) {
                return Err(FhirError::ScopeForbidden(format!(
                    "The token's SMART scopes reach the record of Patient/{patient} only."
                )));
            }
        }
    }
    let format = call.format()?;
    if let Some((name, _)) = call.params.iter().find(|(name, _)| !PARAMETERS.contains(name)) {
        return Err(FhirError::bad_request(format!("The parameter '{name}' is not supported by $everything.")));
    }
    if call.params.get("start").is_some() || call.params.get("end").is_some() {
        return Err(FhirError::BadRequest {
            code: "not-supported",
            diagnostics: "The start and end parameters of $everything are not supported yet.".into(),
            expression: None,
        });
    }
    let mut query = EverythingQuery {
        count: super::page_size(&call.params, state.config.default_page_size, state.config.max_page_size)?,
        ..EverythingQuery::default()
    };
    if let Some(types) = call.params.get("_type") {
        let types: Vec<String> = types.split(',').map(str::trim).map(str::to_owned).collect();
        if let Some(unknown) = types.iter().find(|t| !fhir::definitions().is_resource_type(t)) {
            return Err(FhirError::bad_request(format!("_type names an unknown resource type '{unknown}'.")));
        }
        query.types = Some(types);
    }
    if let Some(since) = call.params.get("_since") {
        let (low, _) = search::search_date(since)
            .ok_or_else(|| FhirError::bad_request(format!("_since must be an instant, not '{since}'.")))?;
        query.since = Some(low);
    }
    if let Some(token) = call.params.get("ct") {
        query.cursor = Some(
            Page::decode_cursor(token).ok_or_else(|| FhirError::bad_request("The continuation token is not valid."))?,
        );
    }
    let outcome = state.store.everything(resource_type, id, &query).await?;
    let page = outcome.value;
    if let (Some(id), true) = (id, page.versions.is_empty() && query.cursor.is_none()) {
        // No focal patient: distinguish "gone" from "never existed" as a read would.
        match state.store.read(resource_type, id).await?.value {
            None => return Err(FhirError::NotFound { resource_type: resource_type.into(), id: id.into() }),
            Some(v) if v.deleted => {
                return Err(FhirError::Gone { resource_type: resource_type.into(), id: id.into(), version: v.version })
            }
            Some(_) => {} // it exists; the filters left nothing
        }
    }
    let next = page.next.as_deref().map(|token| call.next_link(token));
    let mut bundle = BundleWriter::new("searchset", &call.self_link(), next.as_deref(), None);
    for version in page.versions.iter().filter(|v| call.may_see(v, Interaction::Read)) {
        bundle.search_entry(version, "match");
    }
    response::document(StatusCode::OK, bundle.finish(), format, outcome.cost)
}

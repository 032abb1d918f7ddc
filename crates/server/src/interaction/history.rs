//! history: instance `GET /{type}/{id}/_history`, type `GET /{type}/_history` and system
//! `GET /_history` (<https://hl7.org/fhir/R4/http.html#history>).
//!
//! Newest first. `_since` keeps versions created at or after an instant; `_at` keeps the versions
//! that were current at some point within the given date's precision; `_count` sizes pages (Azure's
//! default 10, clamped at 1000), and `next` links carry an opaque continuation token.

use axum::http::StatusCode;
use axum::response::Response;
use fhirside_store::{HistoryQuery, HistoryScope, Page};

use crate::auth::DataAction;
use crate::bundle::BundleWriter;
use crate::error::FhirError;
use crate::negotiate::Handling;
use crate::response;
use crate::smart::Interaction;
use crate::AppState;

use super::{search, Call};

const PARAMETERS: &[&str] = &["_count", "_since", "_at", "ct", "_format", "_pretty"];

pub(crate) async fn handle(state: &AppState, call: Call, scope: HistoryScope) -> Result<Response, FhirError> {
    call.authorize(DataAction::Read)?;
    // A SMART caller sees the versions its scopes reach: read for one resource's history, search
    // for a type's or the system's.
    let interaction = match &scope {
        HistoryScope::Instance(..) => Interaction::Read,
        _ => Interaction::Search,
    };
    if let Some(smart) = call.smart() {
        match &scope {
            HistoryScope::Instance(resource_type, _) | HistoryScope::Type(resource_type) => {
                smart.require(resource_type, interaction)?
            }
            HistoryScope::System => {
                if smart.searchable_types(interaction).is_empty() {
                    return Err(FhirError::ScopeForbidden("The token's SMART scopes permit no search.".into()));
                }
            }
        }
    }
    let format = call.format()?;
    if call.prefer()?.handling == Handling::Strict {
        if let Some((name, _)) = call.params.iter().find(|(name, _)| !PARAMETERS.contains(name)) {
            return Err(FhirError::bad_request(format!("The parameter '{name}' is not supported for history.")));
        }
    }
    let mut query = HistoryQuery {
        count: super::page_size(&call.params, state.config.default_page_size, state.config.max_page_size)?,
        ..HistoryQuery::default()
    };
    if let Some(since) = call.params.get("_since") {
        let (low, _) = search::search_date(since)
            .ok_or_else(|| FhirError::bad_request(format!("_since must be an instant, not '{since}'.")))?;
        query.since = Some(low);
    }
    if let Some(at) = call.params.get("_at") {
        let range = search::date_range("_at", at)?;
        query.at = Some((range.low, range.high));
    }
    if let Some(token) = call.params.get("ct") {
        query.cursor = Some(
            Page::decode_history_cursor(token)
                .ok_or_else(|| FhirError::bad_request("The continuation token is not valid."))?,
        );
    }
    let outcome = state.store.history(&scope, &query).await?;
    let page = outcome.value;
    let next = page.next.as_deref().map(|token| call.next_link(token));
    let mut bundle = BundleWriter::new("history", &call.self_link(), next.as_deref(), None);
    // Filtered after the store's page: a SMART caller may get short pages, never others' versions.
    for version in page.versions.iter().filter(|v| call.may_see(v, interaction)) {
        bundle.history_entry(version);
    }
    response::document(StatusCode::OK, bundle.finish(), format, outcome.cost)
}

//! search: `GET /{type}?…`, `POST /{type}/_search`, `GET /?_type=…` (system level) and
//! `GET /{compartment}/{id}/{type}` (<https://hl7.org/fhir/R4/search.html>).
//!
//! `parse.rs` turns parameters into store clauses and `values.rs` parses values by parameter type;
//! this module runs the query and writes the searchset: `_sort`, `_count` with `next`/`previous`
//! links carrying the store's opaque keyset cursor, `_total`, `_summary`, `_elements`
//! (`subset.rs`), `_include`/`_revinclude` (`includes.rs`) and `_list`.
//!
//! The same parsing serves the conditional interactions (`If-None-Exist`, conditional update and
//! delete), where it is strict: an unknown parameter there could widen the match and change the
//! wrong resource, so it is refused rather than ignored.

mod includes;
mod parse;
mod subset;
mod values;

use axum::http::StatusCode;
use axum::response::Response;
use fhir::index::Indexer;
use fhir::SearchParamType;
use fhirside_store::{Clause, Cursor, SearchQuery, SortBy, SortKey};
use serde_json::json;

use crate::auth::DataAction;
use crate::bundle::BundleWriter;
use crate::error::{operation_outcome, FhirError};
use crate::negotiate::Handling;
use crate::params::Params;
use crate::response;
use crate::smart::Interaction;
use crate::AppState;

use super::Call;

pub(crate) use values::date as date_range;

/// Parameters that control the result rather than select resources.
const RESULT_PARAMETERS: &[&str] = &[
    "_count",
    "_format",
    "_pretty",
    "ct",
    "_total",
    "_summary",
    "_include",
    "_revinclude",
    "_include:iterate",
    "_revinclude:iterate",
    "_elements",
    "_sort",
    "_type",
    "_list",
    "_contained",
    "_containedType",
];

pub(crate) async fn handle(state: &AppState, call: Call, resource_type: &str) -> Result<Response, FhirError> {
    search(state, call, vec![resource_type.to_owned()], None).await
}

/// `GET /?…`: every resource type, or those `_type` names; only parameters that every one of
/// them has.
pub(crate) async fn system(state: &AppState, call: Call) -> Result<Response, FhirError> {
    let types = match call.params.get("_type") {
        Some(list) => {
            let types: Vec<String> =
                list.split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned).collect();
            if let Some(unknown) = types.iter().find(|t| !fhir::definitions().is_resource_type(t)) {
                return Err(FhirError::bad_request(format!("_type names '{unknown}', which is not a resource type.")));
            }
            types
        }
        None => Vec::new(),
    };
    search(state, call, types, None).await
}

/// `GET /{compartment}/{id}/{type}`: search within a compartment.
pub(crate) async fn in_compartment(
    state: &AppState,
    call: Call,
    compartment: &str,
    id: &str,
    resource_type: &str,
) -> Result<Response, FhirError> {
    if fhir::definitions().compartment_params(compartment, resource_type).is_none() {
        return Err(FhirError::BadRequest {
            code: "not-supported",
            diagnostics: format!("{resource_type} is not in the {compartment} compartment."),
            expression: None,
        });
    }
    let clause = Clause::Compartment { compartment: compartment.to_owned(), id: id.to_owned() };
    search(state, call, vec![resource_type.to_owned()], Some(clause)).await
}

async fn search(
    state: &AppState,
    call: Call,
    types: Vec<String>,
    scope: Option<Clause>,
) -> Result<Response, FhirError> {
    call.authorize(DataAction::Read)?;
    let format = call.format()?;
    let handling = call.prefer()?.handling;
    let indexer = crate::search_params::current();
    let (mut query, ignored) = parse_for(&indexer, types, &call.params, handling)?;
    query.clauses.extend(scope);
    if let Some(list) = call.params.get("_list") {
        query.clauses.push(list_clause(state, &query.types, list).await?);
    }
    query.sort = sort(&indexer, &query.types, call.params.get("_sort"))?;
    if let Some(smart) = call.smart() {
        // Only what the scopes reach, chains and `_has` included; a system-wide search covers the
        // types they name.
        if query.types.is_empty() {
            query.types = smart.searchable_types(Interaction::Search);
            if query.types.is_empty() {
                return Err(FhirError::ScopeForbidden("The token's SMART scopes permit no search.".into()));
            }
        }
        smart.restrict_clauses(&mut query.clauses)?;
        query.clauses.extend(smart.search_clause(&query.types, Interaction::Search)?);
    }
    query.count = super::page_size(&call.params, state.config.default_page_size, state.config.max_page_size)?;
    let summary = subset::Summary::parse(call.params.get("_summary"))?;
    // `_summary=count` and, as in Azure's service, `_count=0` ask for the total alone.
    let count_only = summary == Some(subset::Summary::Count) || call.params.get("_count") == Some("0");
    if count_only {
        query.count = 0;
    }
    query.total = count_only
        || match call.params.get("_total") {
            None | Some("none") => false,
            Some("accurate" | "estimate") => true,
            Some(other) => {
                return Err(FhirError::bad_request(format!(
                    "_total must be none, estimate or accurate, not '{other}'."
                )))
            }
        };
    query.cursor = match call.params.get("ct") {
        None => None,
        Some(token) => {
            let cursor = Cursor::decode(token).filter(|c| c.keys.len() == query.sort.len());
            Some(cursor.ok_or_else(|| FhirError::bad_request("The continuation token is not valid for this search."))?)
        }
    };
    let subset = subset::Subset::new(&query.types, summary, call.params.get("_elements"))?;
    let outcome = state.store.search(&query).await?;
    let page = outcome.value;
    let mut cost = outcome.cost;
    let next = page.next.as_deref().map(|token| call.next_link(token));
    let previous = page.previous.as_deref().map(|token| call.next_link(token));
    let smart = call.smart_shared();
    let visible =
        |v: &fhirside_store::StoredVersion| smart.as_ref().is_none_or(|s| s.permits_version(v, Interaction::Read));
    let (included, include_cost) = includes::resolve(state, &indexer, &call.params, &page.versions, &visible).await?;
    cost.add(include_cost);
    let mut bundle =
        BundleWriter::paged("searchset", &call.self_link(), previous.as_deref(), next.as_deref(), page.total);
    for version in &page.versions {
        match &subset {
            Some(subset) => {
                bundle.subsetted_entry(version, "match", &|element| subset.keeps(&version.resource_type, element))
            }
            None => bundle.search_entry(version, "match"),
        }
    }
    for version in &included {
        bundle.search_entry(version, "include");
    }
    if !ignored.is_empty() {
        let issues = ignored
            .iter()
            .map(|name| {
                json!({"severity": "warning", "code": "not-supported",
                       "diagnostics": format!("The search parameter '{name}' is not supported and was ignored.")})
            })
            .collect();
        bundle.outcome_entry(&operation_outcome(issues));
    }
    response::document(StatusCode::OK, bundle.finish(), format, cost)
}

/// Parses search parameters into a query on `resource_type`; returns the names of unsupported
/// parameters that were ignored (only when `handling` is lenient).
pub(crate) fn parse(
    resource_type: &str,
    params: &Params,
    handling: Handling,
) -> Result<(SearchQuery, Vec<String>), FhirError> {
    parse_for(&crate::search_params::current(), vec![resource_type.to_owned()], params, handling)
}

fn parse_for(
    indexer: &Indexer,
    types: Vec<String>,
    params: &Params,
    handling: Handling,
) -> Result<(SearchQuery, Vec<String>), FhirError> {
    let mut query = SearchQuery { types, ..SearchQuery::default() };
    let mut ignored = Vec::new();
    // A system-level search without `_type` takes only the parameters every resource has.
    let every_type;
    let types: &[String] = if query.types.is_empty() {
        every_type = vec!["Resource".to_owned()];
        &every_type
    } else {
        &query.types
    };
    for (name, value) in params.iter() {
        if RESULT_PARAMETERS.contains(&name) {
            continue;
        }
        match parse::clause(indexer, types, name, value)? {
            Some(clause) => query.clauses.push(clause),
            None if handling == Handling::Strict => {
                return Err(FhirError::BadRequest {
                    code: "not-supported",
                    diagnostics: format!(
                        "The search parameter '{name}' is not supported for resource type '{}'.",
                        types.join(", ")
                    ),
                    expression: None,
                })
            }
            None => ignored.push(name.to_owned()),
        }
    }
    Ok((query, ignored))
}

/// A query for a conditional interaction: strict, and it must select something.
pub(crate) fn conditional(resource_type: &str, params: &Params) -> Result<SearchQuery, FhirError> {
    let (query, _) = parse(resource_type, params, Handling::Strict)?;
    if query.clauses.is_empty() {
        return Err(FhirError::PreconditionFailed(format!(
            "Conditional operation on {resource_type} needs search criteria."
        )));
    }
    Ok(query)
}

/// `_sort=-date,name`: keys in order, `-` for descending; `_id`, `_lastUpdated` or a parameter of
/// a simple type that every searched type has.
fn sort(indexer: &Indexer, types: &[String], value: Option<&str>) -> Result<Vec<SortKey>, FhirError> {
    let Some(value) = value else { return Ok(Vec::new()) };
    let mut keys = Vec::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (descending, code) = item.strip_prefix('-').map_or((false, item), |rest| (true, rest));
        let by = match code {
            "_id" => SortBy::Id,
            "_lastUpdated" => SortBy::LastUpdated,
            _ => {
                let kinds: Vec<SearchParamType> = types
                    .iter()
                    .map(|t| indexer.search_param(t, code).filter(|_| indexer.is_indexed(t, code)).map(|d| d.kind))
                    .collect::<Option<_>>()
                    .unwrap_or_default();
                let kind = kinds.first().copied().filter(|k| kinds.iter().all(|other| other == k));
                match kind.and_then(parse::value_kind) {
                    Some(kind) if !types.is_empty() => SortBy::Param { param: code.to_owned(), kind },
                    _ => {
                        return Err(FhirError::bad_request(format!(
                            "_sort={code} is not supported: it must be _id, _lastUpdated or a search parameter of a \
                             simple type of {}.",
                            if types.is_empty() { "every resource type".to_owned() } else { types.join(", ") }
                        )))
                    }
                }
            }
        };
        keys.push(SortKey { by, descending });
    }
    Ok(keys)
}

/// `_list=id`: the resources a List names in its entries.
async fn list_clause(state: &AppState, types: &[String], id: &str) -> Result<Clause, FhirError> {
    if !fhir::is_valid_id(id) {
        return Err(FhirError::bad_request(format!("_list={id} is not a List id.")));
    }
    let list = state.store.read("List", id).await?.value.filter(|v| !v.deleted);
    let mut ids = Vec::new();
    if let Some(version) = list {
        let resource: serde_json::Value = serde_json::from_slice(&version.body).unwrap_or_default();
        for entry in resource["entry"].as_array().into_iter().flatten() {
            let reference = entry["item"]["reference"].as_str().unwrap_or("");
            let parsed = fhir::index::parse_reference("_list", reference);
            if let (Some(t), Some(id)) = (parsed.target_type, parsed.target_id) {
                if types.is_empty() || types.contains(&t) {
                    ids.push(id);
                }
            }
        }
    }
    Ok(Clause::Id(ids))
}

/// A search date: any FHIR date/dateTime precision, plus the `hh:mm` times and missing zones that
/// search values allow, as the range `[low, high)` its precision denotes.
pub(crate) fn search_date(text: &str) -> Option<(i64, i64)> {
    fhir::datetime::parse_search_datetime(text).ok().map(|dt| dt.range_micros())
}

#[cfg(test)]
mod tests;

//! search-type: `GET /{type}?…` and `POST /{type}/_search`
//! (<https://hl7.org/fhir/R4/http.html#search>).
//!
//! Selection: `_id`, `_lastUpdated`, and every token, date and reference parameter of the type
//! (references also with the `:[type]` modifier); compartment search (`GET /Patient/1/Observation`)
//! adds a compartment clause. Results: `_count` with continuation paging, `_total`,
//! `_summary=count`, `_include`/`_revinclude` and `_elements`.
//!
//! The same parsing serves the conditional interactions (`If-None-Exist`, conditional update and
//! delete), where it is strict: an unknown parameter there could widen the match and change the
//! wrong resource, so it is refused rather than ignored.

use axum::http::StatusCode;
use axum::response::Response;
use fhir::SearchParamType;
use fhirside_store::{Clause, DatePrefix, DateRange, Page, ReferenceValue, SearchQuery, TokenSystem, TokenValue};
use serde_json::json;

use crate::auth::DataAction;
use crate::bundle::BundleWriter;
use crate::error::{operation_outcome, FhirError};
use crate::negotiate::Handling;
use crate::params::Params;
use crate::response;
use crate::AppState;

use super::Call;

/// Parameters that control the result rather than select resources.
const RESULT_PARAMETERS: &[&str] =
    &["_count", "_format", "_pretty", "ct", "_total", "_summary", "_include", "_revinclude", "_elements"];

/// Most resources one `_include` or `_revinclude` adds to a page (Azure's default).
const INCLUDE_LIMIT: u32 = 1000;

pub(crate) async fn handle(state: &AppState, call: Call, resource_type: &str) -> Result<Response, FhirError> {
    search(state, call, resource_type, None).await
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
    search(state, call, resource_type, Some(clause)).await
}

async fn search(
    state: &AppState,
    call: Call,
    resource_type: &str,
    scope: Option<Clause>,
) -> Result<Response, FhirError> {
    call.authorize(DataAction::Read)?;
    let format = call.format()?;
    let handling = call.prefer()?.handling;
    let (mut query, ignored) = parse(resource_type, &call.params, handling)?;
    query.clauses.extend(scope);
    query.count = super::page_size(&call.params, state.config.default_page_size, state.config.max_page_size)?;
    // `_summary=count` and, as in Azure's service, `_count=0` ask for the total alone.
    let count_only = match call.params.get("_summary") {
        None | Some("false") => false,
        Some("count") => true,
        Some(other) => {
            return Err(FhirError::BadRequest {
                code: "not-supported",
                diagnostics: format!("_summary={other} is not supported yet; use count or false."),
                expression: None,
            })
        }
    } || call.params.get("_count") == Some("0");
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
        Some(token) => Some(
            Page::decode_cursor(token).ok_or_else(|| FhirError::bad_request("The continuation token is not valid."))?,
        ),
    };
    let outcome = state.store.search(resource_type, &query).await?;
    let page = outcome.value;
    let next = page.next.as_deref().map(|token| call.next_link(token));
    let includes = includes(state, &call.params, resource_type, &page.versions).await?;
    let mut bundle = BundleWriter::new("searchset", &call.self_link(), next.as_deref(), page.total);
    let elements = elements(resource_type, &call.params)?;
    for version in &page.versions {
        match &elements {
            Some(elements) => bundle.subsetted_entry(version, "match", elements),
            None => bundle.search_entry(version, "match"),
        }
    }
    for version in &includes {
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
    response::document(StatusCode::OK, bundle.finish(), format, outcome.cost)
}

/// `_elements`: the top-level elements of `resource_type` to return, each checked against the
/// definitions (choice elements by their base name, e.g. `value` for `valueQuantity`).
fn elements(resource_type: &str, params: &Params) -> Result<Option<Vec<String>>, FhirError> {
    let Some(list) = params.get("_elements") else { return Ok(None) };
    let definition = fhir::definitions().type_def(resource_type);
    let mut names = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let element = definition.and_then(|d| {
            d.elements.iter().find(|e| {
                let base = e.path.strip_suffix("[x]").unwrap_or(&e.path);
                !e.path.contains('.') && (base == name || (e.path.ends_with("[x]") && choice_suffix(name, base)))
            })
        });
        let Some(element) = element else {
            return Err(FhirError::bad_request(format!(
                "_elements names '{name}', which is not a top-level element of {resource_type}."
            )));
        };
        match element.path.strip_suffix("[x]") {
            // `value` asks for whichever `value[x]` the resource has.
            Some(base) if base == name => names.extend(element.types.iter().map(|t| {
                let mut code = t.code.clone();
                if let Some(first) = code.get_mut(..1) {
                    first.make_ascii_uppercase();
                }
                format!("{base}{code}")
            })),
            _ => names.push(name.to_owned()),
        }
    }
    Ok(Some(names))
}

/// Whether `name` is `base` followed by a type name (`valueQuantity` for `value[x]`).
fn choice_suffix(name: &str, base: &str) -> bool {
    name.strip_prefix(base).is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_uppercase()))
}

/// The resources `_include` and `_revinclude` add to a page of matches, each once and none that is
/// already a match.
async fn includes(
    state: &AppState,
    params: &Params,
    resource_type: &str,
    matches: &[fhirside_store::StoredVersion],
) -> Result<Vec<fhirside_store::StoredVersion>, FhirError> {
    let mut seen: std::collections::HashSet<(String, String)> =
        matches.iter().map(|v| (v.resource_type.clone(), v.id.clone())).collect();
    let mut added = Vec::new();
    for (name, value) in params.iter() {
        let reverse = match name {
            "_include" => false,
            "_revinclude" => true,
            _ => continue,
        };
        let mut parts = value.split(':');
        let (source_type, param, target_type) = (parts.next().unwrap_or(""), parts.next(), parts.next());
        let invalid = || FhirError::bad_request(format!("{name}={value} is not Type:parameter[:targetType]."));
        if !fhir::definitions().is_resource_type(source_type) || parts.next().is_some() {
            return Err(invalid());
        }
        let param = match param {
            Some("*") => None,
            Some(code)
                if fhir::index::is_indexed(source_type, code)
                    && fhir::definitions()
                        .search_param(source_type, code)
                        .is_some_and(|p| p.kind == SearchParamType::Reference) =>
            {
                Some(code.to_owned())
            }
            _ => return Err(invalid()),
        };
        if target_type.is_some_and(|t| !fhir::definitions().is_resource_type(t)) {
            return Err(invalid());
        }
        let query = fhirside_store::IncludeQuery {
            reverse,
            source_type: source_type.to_owned(),
            param,
            target_type: target_type.map(str::to_owned),
            matched_type: resource_type.to_owned(),
            matched_ids: matches.iter().map(|v| v.id.clone()).collect(),
            limit: INCLUDE_LIMIT,
        };
        for version in state.store.include(&query).await?.value {
            if seen.insert((version.resource_type.clone(), version.id.clone())) {
                added.push(version);
            }
        }
    }
    Ok(added)
}

/// Parses search parameters into a query; returns the names of unsupported parameters that were
/// ignored (only when `handling` is lenient).
pub(crate) fn parse(
    resource_type: &str,
    params: &Params,
    handling: Handling,
) -> Result<(SearchQuery, Vec<String>), FhirError> {
    let mut query = SearchQuery::default();
    let mut ignored = Vec::new();
    for (name, value) in params.iter() {
        if RESULT_PARAMETERS.contains(&name) {
            continue;
        }
        let clause = match name {
            "_id" => Some(Clause::Id(value.split(',').map(str::to_owned).collect())),
            "_lastUpdated" => {
                Some(Clause::LastUpdated(value.split(',').map(|v| date_range(name, v)).collect::<Result<_, _>>()?))
            }
            _ => indexed_clause(resource_type, name, value)?,
        };
        match clause {
            Some(clause) => query.clauses.push(clause),
            None if handling == Handling::Strict => {
                return Err(FhirError::BadRequest {
                    code: "not-supported",
                    diagnostics: format!(
                        "The search parameter '{name}' is not supported for resource type '{resource_type}'."
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

/// A clause on an indexed token or reference parameter, `name` possibly carrying a modifier
/// (`subject:Patient`); `None` when the parameter (or modifier) is not supported.
fn indexed_clause(resource_type: &str, name: &str, value: &str) -> Result<Option<Clause>, FhirError> {
    let (code, modifier) = name.split_once(':').map_or((name, None), |(c, m)| (c, Some(m)));
    if !fhir::index::is_indexed(resource_type, code) {
        return Ok(None);
    }
    let Some(definition) = fhir::definitions().search_param(resource_type, code) else { return Ok(None) };
    let param = code.to_owned();
    Ok(match (definition.kind, modifier) {
        (SearchParamType::Token, None) => Some(Clause::Token { param, values: value.split(',').map(token).collect() }),
        (SearchParamType::Date, None) => {
            let values = value.split(',').map(|v| date_range(code, v)).collect::<Result<_, _>>()?;
            Some(Clause::Date { param, values })
        }
        (SearchParamType::Reference, None) => {
            let values = value.split(',').map(|v| reference(v, None, &definition.target)).collect::<Result<_, _>>()?;
            Some(Clause::Reference { param, values })
        }
        (SearchParamType::Reference, Some(target)) if fhir::definitions().is_resource_type(target) => {
            let values =
                value.split(',').map(|v| reference(v, Some(target), &definition.target)).collect::<Result<_, _>>()?;
            Some(Clause::Reference { param, values })
        }
        _ => None,
    })
}

/// A reference search value: `Type/id`, `id` (typed by the modifier, or by the parameter when it has
/// a single target type), or an absolute URL (local when it is on this server's base).
fn reference(value: &str, typed: Option<&str>, targets: &[String]) -> Result<ReferenceValue, FhirError> {
    let base = crate::context::base_url();
    let local = value.strip_prefix(&base).map(|rest| rest.trim_start_matches('/')).unwrap_or(value);
    if local.contains("://") || local.starts_with("urn:") {
        return Ok(ReferenceValue::Url(value.to_owned()));
    }
    let segments: Vec<&str> = local.split('/').collect();
    let (target_type, id) = match segments.as_slice() {
        [t, id] | [t, id, "_history", _] => (Some((*t).to_owned()), *id),
        [id] => (typed.map(str::to_owned).or_else(|| (targets.len() == 1).then(|| targets[0].clone())), *id),
        _ => (None, ""),
    };
    if id.is_empty() || !fhir::is_valid_id(id) || typed.is_some_and(|t| target_type.as_deref() != Some(t)) {
        return Err(FhirError::bad_request(format!("'{value}' is not a valid reference search value.")));
    }
    if target_type.as_deref().is_some_and(|t| !fhir::definitions().is_resource_type(t)) {
        return Err(FhirError::bad_request(format!("'{value}' names an unknown resource type.")));
    }
    Ok(ReferenceValue::Local { target_type, id: id.to_owned() })
}

fn token(value: &str) -> TokenValue {
    match value.split_once('|') {
        None => TokenValue { system: TokenSystem::Any, code: Some(value.to_owned()) },
        Some(("", code)) => TokenValue { system: TokenSystem::None, code: Some(code.to_owned()) },
        Some((system, "")) => TokenValue { system: TokenSystem::Is(system.to_owned()), code: None },
        Some((system, code)) => TokenValue { system: TokenSystem::Is(system.to_owned()), code: Some(code.to_owned()) },
    }
}

/// A date search value with an optional prefix, as the range its precision denotes.
pub(crate) fn date_range(name: &str, value: &str) -> Result<DateRange, FhirError> {
    let prefixes = [
        ("eq", DatePrefix::Eq),
        ("ne", DatePrefix::Ne),
        ("gt", DatePrefix::Gt),
        ("lt", DatePrefix::Lt),
        ("ge", DatePrefix::Ge),
        ("le", DatePrefix::Le),
        ("sa", DatePrefix::Sa),
        ("eb", DatePrefix::Eb),
    ];
    let (prefix, rest) = prefixes
        .iter()
        .find_map(|(p, prefix)| value.strip_prefix(p).map(|rest| (*prefix, rest)))
        .unwrap_or((DatePrefix::Eq, value));
    let (low, high) = search_date(rest).ok_or_else(|| FhirError::BadRequest {
        code: "invalid",
        diagnostics: format!("The value '{value}' of '{name}' is not a valid date."),
        expression: None,
    })?;
    Ok(DateRange { prefix, low, high })
}

/// A search date: any FHIR date/dateTime precision, plus the `hh:mm` times and missing zones that
/// search values allow, as the range `[low, high)` its precision denotes.
pub(crate) fn search_date(text: &str) -> Option<(i64, i64)> {
    fhir::datetime::parse_search_datetime(text).ok().map(|dt| dt.range_micros())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        assert_eq!(token("a"), TokenValue { system: TokenSystem::Any, code: Some("a".into()) });
        assert_eq!(token("|a"), TokenValue { system: TokenSystem::None, code: Some("a".into()) });
        assert_eq!(token("s|"), TokenValue { system: TokenSystem::Is("s".into()), code: None });
        assert_eq!(token("s|a|b"), TokenValue { system: TokenSystem::Is("s".into()), code: Some("a|b".into()) });
    }

    #[test]
    fn date_ranges_follow_precision() {
        let year = date_range("_lastUpdated", "ge2020").unwrap();
        assert_eq!(year.prefix, DatePrefix::Ge);
        assert_eq!(year.high - year.low, 366 * 86_400 * 1_000_000);
        let minute = date_range("_lastUpdated", "2020-01-01T10:00Z").unwrap();
        assert_eq!(minute.high - minute.low, 60_000_000);
        assert!(date_range("_lastUpdated", "2020-13").is_err());
        assert!(date_range("_lastUpdated", "yesterday").is_err());
    }

    #[test]
    fn strict_refuses_unknown_parameters() {
        let params = Params(vec![("name".into(), "x".into())]);
        assert!(parse("Patient", &params, Handling::Strict).is_err());
        let (query, ignored) = parse("Patient", &params, Handling::Lenient).unwrap();
        assert!(query.clauses.is_empty());
        assert_eq!(ignored, vec!["name".to_owned()]);
        assert!(conditional("Patient", &Params::default()).is_err());
    }
}

//! search-type: `GET /{type}?…` and `POST /{type}/_search`
//! (<https://hl7.org/fhir/R4/http.html#search>).
//!
//! The parameters supported so far are `_id`, `_lastUpdated` and `identifier`, with `_count` and
//! continuation paging. The same parsing serves the conditional interactions (`If-None-Exist`,
//! conditional update and delete), where it is strict: an unknown parameter there could widen the
//! match and change the wrong resource, so it is refused rather than ignored.

use axum::http::StatusCode;
use axum::response::Response;
use fhirside_store::{Clause, DatePrefix, DateRange, Page, SearchQuery, TokenSystem, TokenValue};
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
const RESULT_PARAMETERS: &[&str] = &["_count", "_format", "_pretty", "ct"];

pub(crate) async fn handle(state: &AppState, call: Call, resource_type: &str) -> Result<Response, FhirError> {
    call.authorize(DataAction::Read)?;
    let format = call.format()?;
    let handling = call.prefer()?.handling;
    let (mut query, ignored) = parse(resource_type, &call.params, handling)?;
    query.count = super::page_size(&call.params, state.config.default_page_size, state.config.max_page_size)?;
    query.cursor = match call.params.get("ct") {
        None => None,
        Some(token) => Some(
            Page::decode_cursor(token).ok_or_else(|| FhirError::bad_request("The continuation token is not valid."))?,
        ),
    };
    let outcome = state.store.search(resource_type, &query).await?;
    let page = outcome.value;
    let next = page.next.as_ref().map(|token| {
        let rest = call.params.encode_without(&["ct"]);
        let sep = if rest.is_empty() { "" } else { "&" };
        format!("{}/{resource_type}?{rest}{sep}ct={token}", crate::context::base_url())
    });
    let mut bundle = BundleWriter::new("searchset", &call.self_link(), next.as_deref(), None);
    for version in &page.versions {
        bundle.search_entry(version, "match");
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
            "identifier" if fhir::definitions().search_param(resource_type, "identifier").is_some() => {
                Some(Clause::Token { param: "identifier".into(), values: value.split(',').map(token).collect() })
            }
            _ => None,
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

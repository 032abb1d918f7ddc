//! `GET /_audit`: reading the audit log back. Needs Fhirside's `audit` data action (the `Fhirside
//! Administrator` role); like every request, the query is itself audited (`OperationName` `audit`).
//!
//! Parameters (all optional, each at most once; any other is a `400`):
//!
//! | parameter | records whose… |
//! | --- | --- |
//! | `start` | `TimeGenerated` is at or after the start of this date-time (below) |
//! | `end` | `TimeGenerated` is before the end of this date-time at its precision |
//! | `caller` | `CallerIdentityObjectId`, or the `appid`/`azp` claim, is this |
//! | `resourceType` | `FhirResourceType` is this |
//! | `operation` | `OperationName` is this (`read`, `search-type`, …) |
//! | `result` | `ResultType` is `Started`, `Succeeded` or `Failed` |
//! | `correlationId` | `CorrelationId` is this |
//! | `_count` | at most this many records [default 100, at most 1000: larger values are clamped] |
//! | `_format` | `AuditEvent` for a FHIR Bundle (below); `json` for the default |
//!
//! `start` and `end` take RFC 3339 or a FHIR dateTime of any precision (`2026`, `2026-12`,
//! `2026-12-03`, `2026-12-03T10:00Z`; UTC when it has no zone): `end=2026-12-03` includes that day.
//!
//! Records come oldest first (in the order of the log); narrow a long range with `start`.
//!
//! The default answer is `application/json`: `{"value": [records as stored]}`. With
//! `_format=AuditEvent` (or `Accept: application/fhir+json`) it is a `searchset` Bundle of R4
//! `AuditEvent` resources ([`audit_event`]), whose `total` counts the records returned.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use fhirside_audit::{AuditRecord, Filter, ResultType};
use serde_json::{json, Value};

use crate::auth::{self, DataAction, Principal};
use crate::error::FhirError;
use crate::params::Params;
use crate::AppState;

use super::operation;

/// Records per answer when `_count` is absent.
const DEFAULT_COUNT: usize = 100;
/// Most records per answer.
const MAX_COUNT: usize = 1000;

const PARAMETERS: [&str; 9] =
    ["start", "end", "caller", "resourceType", "operation", "result", "correlationId", "_count", "_format"];

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/_audit", get(handle))
}

/// A parsed `GET /_audit`.
#[derive(Debug, PartialEq)]
struct AuditQuery {
    filter: Filter,
    count: usize,
    as_bundle: bool,
}

async fn handle(State(state): State<AppState>, request: Request) -> Result<Response, FhirError> {
    let principal = request.extensions().get::<Principal>().cloned();
    auth::authorize(&principal.ok_or(FhirError::Forbidden)?, DataAction::Audit)?;
    let query = parse(&Params::parse(request.uri().query()), request.headers())?;
    let log = state.audit.clone().ok_or_else(|| FhirError::BadRequest {
        code: "not-supported",
        diagnostics: "Auditing is off on this server (--no-audit).".into(),
        expression: None,
    })?;
    let AuditQuery { filter, count, as_bundle } = query;
    let mut records =
        log.query(filter, count).await.map_err(|e| FhirError::Internal(format!("reading the audit log: {e}")))?;
    if let Some(keyring) = state.keys.as_ref().and_then(fhirside_keys::KeyringCell::get) {
        records.iter_mut().for_each(|record| super::sealed::open(&keyring, record));
    }
    let (content_type, body) = if as_bundle {
        (crate::response::FHIR_JSON, bundle(&records))
    } else {
        ("application/json; charset=utf-8", json!({ "value": records }))
    };
    let mut response = (StatusCode::OK, body.to_string()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

fn parse(params: &Params, headers: &HeaderMap) -> Result<AuditQuery, FhirError> {
    for (i, (name, _)) in params.iter().enumerate() {
        if !PARAMETERS.contains(&name) {
            return Err(FhirError::bad_request(format!(
                "The parameter '{name}' is not supported by /_audit; use {}.",
                PARAMETERS.join(", ")
            )));
        }
        if params.iter().take(i).any(|(earlier, _)| earlier == name) {
            return Err(FhirError::bad_request(format!("The parameter '{name}' is given more than once.")));
        }
    }
    let text = |name: &str| params.get(name).map(str::to_owned);
    let result = match params.get("result") {
        None => None,
        Some(r) if r.eq_ignore_ascii_case("Started") => Some(ResultType::Started),
        Some(r) if r.eq_ignore_ascii_case("Succeeded") => Some(ResultType::Succeeded),
        Some(r) if r.eq_ignore_ascii_case("Failed") => Some(ResultType::Failed),
        Some(r) => {
            return Err(FhirError::bad_request(format!("result must be Started, Succeeded or Failed, not '{r}'.")))
        }
    };
    let filter = Filter {
        from: params.get("start").map(|t| bound("start", t, false)).transpose()?,
        to: params.get("end").map(|t| bound("end", t, true)).transpose()?,
        caller: text("caller"),
        resource_type: text("resourceType"),
        operation: text("operation"),
        result,
        correlation_id: text("correlationId"),
    };
    let count = match params.get("_count") {
        None => DEFAULT_COUNT,
        Some(n) => match n.parse::<usize>() {
            Ok(n) if n > 0 => n.min(MAX_COUNT),
            _ => return Err(FhirError::bad_request(format!("_count must be a positive integer, not '{n}'."))),
        },
    };
    let as_bundle = match params.get("_format") {
        Some(f) if f.eq_ignore_ascii_case("AuditEvent") => true,
        Some(f) if f.eq_ignore_ascii_case("json") || f.eq_ignore_ascii_case("application/json") => false,
        Some(f) => {
            return Err(FhirError::bad_request(format!("_format must be AuditEvent or json, not '{f}'.")));
        }
        None => headers.get(header::ACCEPT).and_then(|a| a.to_str().ok()).is_some_and(|a| {
            a.split(',').any(|range| range.split(';').next().unwrap_or("").trim() == "application/fhir+json")
        }),
    };
    Ok(AuditQuery { filter, count, as_bundle })
}

/// `start` → the start of the instant range the value covers; `end` → its (exclusive) end, so that
/// `end=2026-12-03` includes that day. As RFC 3339 in UTC, which the audit query compares.
fn bound(name: &str, text: &str, end: bool) -> Result<String, FhirError> {
    let value = fhir::datetime::parse_search_datetime(text).map_err(|e| {
        FhirError::bad_request(format!(
            "{name} must be an RFC 3339 date-time or a FHIR dateTime such as 2026-12-03, not '{text}' ({e})."
        ))
    })?;
    let (low, high) = value.range_micros();
    Ok(fhir::datetime::format_instant(if end { high } else { low }))
}

/// The records as a `searchset` Bundle of AuditEvents.
fn bundle(records: &[AuditRecord]) -> Value {
    json!({
        "resourceType": "Bundle",
        "id": crate::ids::new_id(),
        "meta": {"lastUpdated": fhirside_audit::timestamp_now()},
        "type": "searchset",
        "total": records.len(),
        "entry": records
            .iter()
            .map(|record| json!({"resource": audit_event(record), "search": {"mode": "match"}}))
            .collect::<Vec<_>>(),
    })
}

const RESTFUL_INTERACTION: &str = "http://hl7.org/fhir/restful-interaction";
/// The system of `AuditEvent.subtype` codings that carry an `OperationName` the FHIR code system
/// does not have (`conditional-create`, `everything`, `admin`, …).
pub(crate) const OPERATION_NAME_SYSTEM: &str = "urn:fhirside:audit:operation-name";

/// One record as an R4 AuditEvent (<https://hl7.org/fhir/R4/auditevent.html>): a DICOM `rest`
/// event whose subtype is the interaction, done by the caller (`agent`, from its object id and IP
/// address) on the resource the request URI names (`entity`, with the correlation id and the custom
/// audit headers as details), observed by Fhirside at `Location`. Its id is the record's sequence
/// number in the log.
pub(crate) fn audit_event(record: &AuditRecord) -> Value {
    let name = record.operation_name.as_str();
    let mut subtype = Vec::new();
    let restful = restful_interaction(name);
    if let Some(code) = restful {
        subtype.push(json!({"system": RESTFUL_INTERACTION, "code": code}));
    }
    if restful != Some(name) {
        subtype.push(json!({"system": OPERATION_NAME_SYSTEM, "code": name}));
    }
    let mut event = json!({
        "resourceType": "AuditEvent",
        "id": record.sequence.to_string(),
        "type": {
            "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
            "code": "rest",
            "display": "RESTful Operation",
        },
        "subtype": subtype,
        "action": action(name),
        "recorded": record.time_generated,
    });
    match (record.result_type, record.status_code) {
        (ResultType::Started, _) => event["outcomeDesc"] = json!("Started"),
        (result, status) => {
            let outcome = match status {
                Some(s) if s < 400 => "0",
                Some(s) if s >= 500 => "8",
                _ => "4",
            };
            event["outcome"] = json!(outcome);
            event["outcomeDesc"] = json!(match status {
                Some(status) => format!("{result:?} ({status})"),
                None => format!("{result:?} (not answered)"),
            });
        }
    }

    let claim = |name: &str| record.caller_identity.get(name).and_then(Value::as_str);
    let mut agent = json!({"requestor": true});
    if let Some(object_id) = &record.caller_identity_object_id {
        let mut identifier = json!({"value": object_id});
        if let Some(issuer) = &record.caller_identity_issuer {
            identifier["system"] = json!(issuer);
        }
        agent["who"] = json!({"identifier": identifier});
    }
    if let Some(app) = claim("appid").or_else(|| claim("azp")) {
        agent["altId"] = json!(app);
    }
    if let Some(name) = claim("preferred_username").or_else(|| claim("upn")).or_else(|| claim("unique_name")) {
        agent["name"] = json!(name);
    }
    if !record.caller_ip_address.is_empty() {
        agent["network"] = json!({"address": record.caller_ip_address, "type": "2"});
    }
    event["agent"] = json!([agent]);

    let mut source = json!({
        "observer": {"display": "Fhirside"},
        "type": [{
            "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
            "code": "4",
            "display": "Application Server",
        }],
    });
    if !record.location.is_empty() {
        source["site"] = json!(record.location);
    }
    event["source"] = source;

    let mut details = vec![json!({"type": "CorrelationId", "valueString": record.correlation_id})];
    for (key, value) in &record.properties {
        let value = value.as_str().map_or_else(|| value.to_string(), str::to_owned);
        details.push(json!({"type": key, "valueString": value}));
    }
    let mut entity = json!({"detail": details});
    if let Some(reference) = request_path(&record.request_uri).and_then(operation::resource_reference) {
        entity["what"] = json!({"reference": reference});
        entity["type"] = json!({
            "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
            "code": "2",
            "display": "System Object",
        });
    }
    event["entity"] = json!([entity]);
    event
}

/// The code of <http://hl7.org/fhir/restful-interaction> an `OperationName` is, or falls under.
fn restful_interaction(name: &str) -> Option<&str> {
    match name {
        "read" | "vread" | "update" | "patch" | "delete" | "history" | "history-instance" | "history-type"
        | "history-system" | "create" | "search" | "search-type" | "search-system" | "capabilities" | "transaction"
        | "batch" | "operation" => Some(name),
        "conditional-create" => Some("create"),
        "conditional-update" => Some("update"),
        "conditional-patch" => Some("patch"),
        "conditional-delete" => Some("delete"),
        "everything" | "validate" | "reindex" | "export" | "import" | "convert-data" | "member-match"
        | "purge-history" | "bulk-delete" | "bulk-update" | "expand" => Some("operation"),
        _ => None,
    }
}

/// `AuditEvent.action`: C create, R read, U update, D delete, E execute (operations, searches as
/// the R4 definition of `E` says, Bundles, the admin and audit APIs).
fn action(name: &str) -> &'static str {
    match name {
        "create" | "conditional-create" => "C",
        "read" | "vread" | "history" | "history-instance" | "history-type" | "history-system" | "capabilities" => "R",
        "update" | "conditional-update" | "patch" | "conditional-patch" => "U",
        "delete" | "conditional-delete" | "purge-history" | "bulk-delete" => "D",
        _ => "E",
    }
}

/// The path of an absolute request URI, without the query.
fn request_path(uri: &str) -> Option<&str> {
    let after_scheme = uri.split_once("://").map_or(uri, |(_, rest)| rest);
    let path = &after_scheme[after_scheme.find('/')?..];
    Some(path.split(['?', '#']).next().unwrap_or(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(operation: &str, result: ResultType, status: Option<u16>, uri: &str) -> AuditRecord {
        let mut properties = serde_json::Map::new();
        properties.insert("X-MS-AZUREFHIR-AUDIT-USERLOCATION".into(), json!("Building 7"));
        AuditRecord {
            time_generated: "2026-12-03T10:11:12.123456Z".into(),
            log_category: "AuditLogs".into(),
            operation_name: operation.into(),
            result_type: result,
            correlation_id: "client-123".into(),
            request_uri: uri.into(),
            fhir_resource_type: Some("Patient".into()),
            caller_identity: serde_json::from_value(json!({
                "iss": "https://localhost:8443/tenant/",
                "oid": "0b6a1c1e-0000-4000-8000-000000000001",
                "appid": "app-1",
            }))
            .unwrap(),
            caller_identity_issuer: Some("https://localhost:8443/tenant/".into()),
            caller_identity_object_id: Some("0b6a1c1e-0000-4000-8000-000000000001".into()),
            caller_ip_address: "127.0.0.1".into(),
            status_code: status,
            operation_duration: status.map(|_| 12),
            location: "local".into(),
            properties,
            sequence: 42,
            previous_hash: "x".into(),
            hash: "y".into(),
        }
    }

    fn errors(resource: &Value) -> Vec<String> {
        fhir::validate::validate_resource(resource)
            .into_iter()
            .filter(|i| matches!(i.severity, fhir::Severity::Error | fhir::Severity::Fatal))
            .map(|i| format!("{}: {}", i.expression, i.diagnostics))
            .collect()
    }

    #[test]
    fn a_read_as_an_audit_event() {
        let event = audit_event(&record(
            "read",
            ResultType::Succeeded,
            Some(200),
            "https://localhost:8443/Patient/1?_pretty=true",
        ));
        assert_eq!(errors(&event), Vec::<String>::new(), "{event:#}");
        let mut broken = event.clone();
        broken.as_object_mut().unwrap().remove("recorded");
        assert!(!errors(&broken).is_empty(), "the validator does check AuditEvents");
        assert_eq!(event["id"], "42");
        assert_eq!(event["type"]["code"], "rest");
        assert_eq!(event["subtype"], json!([{"system": RESTFUL_INTERACTION, "code": "read"}]));
        assert_eq!(event["action"], "R");
        assert_eq!(event["recorded"], "2026-12-03T10:11:12.123456Z");
        assert_eq!(event["outcome"], "0");
        let agent = &event["agent"][0];
        assert_eq!(agent["requestor"], true);
        assert_eq!(agent["who"]["identifier"]["value"], "0b6a1c1e-0000-4000-8000-000000000001");
        assert_eq!(agent["who"]["identifier"]["system"], "https://localhost:8443/tenant/");
        assert_eq!(agent["altId"], "app-1");
        assert_eq!(agent["network"], json!({"address": "127.0.0.1", "type": "2"}));
        assert_eq!(event["source"]["site"], "local");
        assert_eq!(event["source"]["observer"]["display"], "Fhirside");
        let entity = &event["entity"][0];
        assert_eq!(entity["what"]["reference"], "Patient/1");
        assert_eq!(
            entity["detail"],
            json!([
                {"type": "CorrelationId", "valueString": "client-123"},
                {"type": "X-MS-AZUREFHIR-AUDIT-USERLOCATION", "valueString": "Building 7"},
            ])
        );
    }

    #[test]
    fn other_records_as_audit_events() {
        let started = audit_event(&record("conditional-create", ResultType::Started, None, "https://h/Patient"));
        assert_eq!(errors(&started), Vec::<String>::new(), "{started:#}");
        assert_eq!(
            started["subtype"],
            json!([
                {"system": RESTFUL_INTERACTION, "code": "create"},
                {"system": OPERATION_NAME_SYSTEM, "code": "conditional-create"},
            ])
        );
        assert_eq!(started["action"], "C");
        assert!(started.get("outcome").is_none());
        assert_eq!(started["outcomeDesc"], "Started");
        assert!(started["entity"][0].get("what").is_none(), "a type names no resource");

        let failed =
            audit_event(&record("vread", ResultType::Failed, Some(404), "https://h/fhir/Patient/1/_history/2"));
        assert_eq!(errors(&failed), Vec::<String>::new(), "{failed:#}");
        assert_eq!(failed["outcome"], "4");
        assert_eq!(failed["outcomeDesc"], "Failed (404)");
        assert_eq!(failed["entity"][0]["what"]["reference"], "Patient/1/_history/2", "a base path is skipped");

        let broken = audit_event(&record("transaction", ResultType::Failed, Some(500), "https://h/"));
        assert_eq!((broken["outcome"].as_str(), broken["action"].as_str()), (Some("8"), Some("E")));
        let mut anonymous = record("admin", ResultType::Failed, Some(401), "https://h/_admin/apps");
        anonymous.caller_identity = Default::default();
        anonymous.caller_identity_issuer = None;
        anonymous.caller_identity_object_id = None;
        anonymous.caller_ip_address.clear();
        let anonymous = audit_event(&anonymous);
        assert_eq!(errors(&anonymous), Vec::<String>::new(), "{anonymous:#}");
        assert_eq!(anonymous["agent"], json!([{"requestor": true}]));
        assert_eq!(anonymous["subtype"], json!([{"system": OPERATION_NAME_SYSTEM, "code": "admin"}]));
        for (name, action) in [("delete", "D"), ("patch", "U"), ("search-type", "E"), ("everything", "E")] {
            assert_eq!(super::action(name), action, "{name}");
        }
    }

    #[test]
    fn the_bundle_is_valid() {
        let records = [
            record("read", ResultType::Started, None, "https://h/Patient/1"),
            record("read", ResultType::Succeeded, Some(200), "https://h/Patient/1"),
        ];
        let bundle = bundle(&records);
        assert_eq!(errors(&bundle), Vec::<String>::new(), "{bundle:#}");
        assert_eq!((bundle["type"].as_str(), bundle["total"].as_u64()), (Some("searchset"), Some(2)));
    }

    fn parsed(query: &str, accept: Option<&str>) -> Result<AuditQuery, String> {
        let mut headers = HeaderMap::new();
        if let Some(accept) = accept {
            headers.insert(header::ACCEPT, accept.parse().unwrap());
        }
        parse(&Params::parse(Some(query)), &headers).map_err(|e| {
            let (status, outcome) = e.status_and_outcome();
            format!("{} {}", status.as_u16(), outcome["issue"][0]["diagnostics"].as_str().unwrap())
        })
    }

    #[test]
    fn parameters() {
        let query = parsed(
            "start=2026-12-03&end=2026-12-03&caller=abc&resourceType=Patient&operation=read&result=failed&\
             correlationId=c1&_count=5000",
            None,
        )
        .unwrap();
        assert_eq!(
            query,
            AuditQuery {
                filter: Filter {
                    from: Some("2026-12-03T00:00:00.000000Z".into()),
                    to: Some("2026-12-04T00:00:00.000000Z".into()),
                    caller: Some("abc".into()),
                    resource_type: Some("Patient".into()),
                    operation: Some("read".into()),
                    result: Some(ResultType::Failed),
                    correlation_id: Some("c1".into()),
                },
                count: 1000,
                as_bundle: false,
            }
        );
        assert!(query.filter.validate().is_ok());
        let query = parsed("start=2026-12-03T10:00:00%2B01:00&end=2026", None).unwrap();
        assert_eq!(query.filter.from.as_deref(), Some("2026-12-03T09:00:00.000000Z"));
        assert_eq!(query.filter.to.as_deref(), Some("2027-01-01T00:00:00.000000Z"));
        assert_eq!(parsed("", None).unwrap().count, 100);
        assert!(parsed("_format=AuditEvent", None).unwrap().as_bundle);
        assert!(parsed("", Some("application/fhir+json")).unwrap().as_bundle);
        assert!(!parsed("", Some("application/json")).unwrap().as_bundle);
        assert!(!parsed("_format=json", Some("application/fhir+json")).unwrap().as_bundle);

        for (query, message) in [
            ("name=x", "The parameter 'name' is not supported"),
            ("operation=read&operation=create", "given more than once"),
            ("result=Maybe", "result must be Started, Succeeded or Failed"),
            ("start=yesterday", "start must be an RFC 3339 date-time"),
            ("end=2026-13", "end must be"),
            ("_count=0", "_count must be a positive integer"),
            ("_count=many", "_count must be"),
            ("_format=xml", "_format must be AuditEvent or json"),
        ] {
            let error = parsed(query, None).unwrap_err();
            assert!(error.starts_with("400 ") && error.contains(message), "{query}: {error}");
        }
    }
}

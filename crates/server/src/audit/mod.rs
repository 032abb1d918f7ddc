//! Audit: every request to the FHIR API leaves records in the audit log, with the fields of Azure's
//! `AuditLogs` (AZURE-COMPAT §4), written by [`fhirside_audit::AuditLog`].
//!
//! The step runs inside the context middleware ([`crate::context`]), after authentication, so it
//! knows the request id, the caller (or that authentication failed: a `401` is recorded as `Failed`
//! with an empty `CallerIdentity`) and, at the end, the status:
//!
//! 1. A `Started` record is appended **before** the interaction runs. If the log cannot take it,
//!    the request is answered `503` and not run: nothing happens unaudited. A request that changes
//!    nothing (`GET`/`HEAD`, but for `$export`, which starts a job) instead has its `Started`
//!    record written together with its outcome record, in one write, before its answer leaves: if
//!    that fails the answer is withheld (`503`), so no data is disclosed unaudited, and reads pay
//!    one write instead of two.
//! 2. The interaction runs (or the authentication or custom-header failure is answered).
//! 3. A `Succeeded` (status < 400) or `Failed` record, with `StatusCode` and `OperationDuration`,
//!    is appended before the response is returned. If that fails the response is replaced by a
//!    `500`; the interaction may already have taken effect, which is why its `Started` record was
//!    written first. A request abandoned before it is answered (the client went away) is recorded
//!    as `Failed` without a status.
//!
//! A record holds who called (only the token's identifying claims, [`fhirside_identity::validate::CALLER_CLAIMS`]; never the
//! token), from where (the TCP peer), what ([`operation`]), the request URI (credentials a client
//! put in its query redacted), the correlation id and the custom audit headers ([`headers`]) —
//! never a resource body, a secret or a token. The query string is kept as Azure keeps it: search
//! parameters can name a patient, so the audit log is as sensitive as the data it audits.
//!
//! Outside this step: CORS preflights answered by [`crate::cors`], and the built-in authority's
//! routes (`/{tenant}/oauth2/…`, discovery, JWKS), which sit beside the FHIR API and outside the
//! context middleware; token issuance is for the authority's own log, not recorded here for now.
//!
//! [`query`] serves `GET /_audit`.

mod headers;
pub(crate) mod operation;
pub(crate) mod query;
pub(crate) mod sealed;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::Request;
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use fhirside_audit::{AuditLog, AuditRecord, ResultType};
use serde_json::{Map, Value};

pub(crate) use headers::{MAX_HEADERS as MAX_AUDIT_HEADERS, MAX_LENGTH as MAX_AUDIT_HEADER_LENGTH};

use crate::auth::Principal;
use crate::error::FhirError;
use crate::listener::ClientAddr;
use crate::{context, AppState};

/// Runs `next` between the `Started` record and the outcome record (see the module doc).
/// `authenticated` is the result of authentication; a failure is answered, and audited, here.
pub(crate) async fn audited(
    state: &AppState,
    correlation_id: String,
    mut request: Request,
    authenticated: Result<Principal, FhirError>,
    next: Next,
) -> Response {
    let started = Instant::now();
    // Custom audit headers are checked whether or not auditing is on, so that a request's fate
    // does not depend on it.
    let properties = headers::collect(request.headers());
    let Some(log) = state.audit.clone() else {
        return match (authenticated, properties) {
            (Err(error), _) | (Ok(_), Err(error)) => error.into_response(),
            (Ok(principal), Ok(_)) => {
                request.extensions_mut().insert(principal);
                next.run(request).await
            }
        };
    };

    let operation = operation::classify(request.method(), request.uri().path(), request.headers());
    let (caller_identity, issuer, object_id) = caller(authenticated.as_ref().ok());
    let record = AuditRecord {
        time_generated: fhirside_audit::timestamp_now(),
        log_category: fhirside_audit::LOG_CATEGORY.to_owned(),
        operation_name: operation.name.to_owned(),
        result_type: ResultType::Started,
        correlation_id,
        request_uri: request_uri(&context::base_url(), request.uri().path(), request.uri().query()),
        fhir_resource_type: operation.resource_type,
        caller_identity,
        caller_identity_issuer: issuer,
        caller_identity_object_id: object_id,
        caller_ip_address: request
            .extensions()
            .get::<ClientAddr>()
            .map(|peer| peer.0.ip().to_canonical().to_string())
            .unwrap_or_default(),
        status_code: None,
        operation_duration: None,
        location: state.config.audit_location.clone(),
        properties: properties.as_ref().map(Map::clone).unwrap_or_default(),
        sequence: 0,
        previous_hash: String::new(),
        hash: String::new(),
    };
    let mut record = record;
    if let Some(keyring) = state.keys.as_ref().and_then(fhirside_keys::KeyringCell::get) {
        sealed::seal(&keyring, &mut record);
    }
    let read_only = matches!(*request.method(), Method::GET | Method::HEAD) && operation.name != "export";
    let unwritten_start = if read_only {
        Some(record.clone())
    } else {
        if let Err(error) = log.record_all(std::slice::from_ref(&record)).await {
            eprintln!("fhirside: request {} not run: the audit log refused its record: {error}", context::request_id());
            return FhirError::AuditUnavailable.into_response();
        }
        None
    };

    let mut pending = Pending { log: log.clone(), record: Some(record), unwritten_start, started };
    let response = match (authenticated, properties) {
        (Err(error), _) | (Ok(_), Err(error)) => error.into_response(),
        (Ok(principal), Ok(_)) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
    };
    let status = response.status().as_u16();
    let Some(record) = pending.finish(Some(status)) else { return response };
    if let Some(start) = pending.unwritten_start.take() {
        // A read: nothing changed, so an answer that cannot be audited is simply withheld.
        return match log.record_all(&[start, record]).await {
            Ok(_) => response,
            Err(error) => {
                eprintln!(
                    "fhirside: request {} answered 503: the audit log refused its records: {error}",
                    context::request_id()
                );
                FhirError::AuditUnavailable.into_response()
            }
        };
    }
    // The interaction has run: a write may already be committed. Its `Started` record is in the
    // log, so the attempt is on record even though its outcome cannot be.
    match log.record_all(&[record]).await {
        Ok(_) => response,
        Err(error) => {
            eprintln!(
                "fhirside: request {} answered 500: the audit log refused its outcome ({status}): {error}",
                context::request_id()
            );
            FhirError::AuditIncomplete.into_response()
        }
    }
}

/// The outcome record still to write. Dropped before [`Pending::finish`] (the request's future was
/// dropped: the client went away), it writes a `Failed` record without a status in the
/// background.
struct Pending {
    log: Arc<AuditLog>,
    record: Option<AuditRecord>,
    /// A read's `Started` record, written with the outcome.
    unwritten_start: Option<AuditRecord>,
    started: Instant,
}

impl Pending {
    /// The outcome record for `status`.
    fn finish(&mut self, status: Option<u16>) -> Option<AuditRecord> {
        let mut record = self.record.take()?;
        record.time_generated = fhirside_audit::timestamp_now();
        if let Some(name) = context::refined_operation() {
            record.operation_name = name.to_owned();
        }
        record.result_type = match status {
            Some(status) if status < 400 => ResultType::Succeeded,
            _ => ResultType::Failed,
        };
        record.status_code = status;
        record.operation_duration = Some(u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX));
        Some(record)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let Some(record) = self.finish(None) else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let log = self.log.clone();
        let records: Vec<AuditRecord> = self.unwritten_start.take().into_iter().chain([record]).collect();
        runtime.spawn(async move {
            let id = records[0].correlation_id.clone();
            if let Err(error) = log.record_all(&records).await {
                eprintln!("fhirside: the outcome of abandoned request (correlation id {id}) was not audited: {error}");
            }
        });
    }
}

/// Query parameters whose values are credentials: FHIR requests take none, but a client that puts
/// one in a URL anyway must not have it recorded.
const SECRET_PARAMETERS: [&str; 6] =
    ["access_token", "id_token", "refresh_token", "client_secret", "client_assertion", "password"];

/// `RequestUri`: the base URL, path and query as sent, but for the values of [`SECRET_PARAMETERS`].
fn request_uri(base: &str, path: &str, query: Option<&str>) -> String {
    let Some(query) = query else { return format!("{base}{path}") };
    let is_secret = |pair: &str| {
        let name = pair.split('=').next().unwrap_or("");
        SECRET_PARAMETERS.iter().any(|secret| name.eq_ignore_ascii_case(secret))
    };
    if !query.split('&').any(is_secret) {
        return format!("{base}{path}?{query}");
    }
    let redacted: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if is_secret(pair) => format!("{name}=REDACTED"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{base}{path}?{}", redacted.join("&"))
}

/// `CallerIdentity`, `CallerIdentityIssuer` and `CallerIdentityObjectId` from the caller's verified
/// claims; empty without a token (authentication off, `/metadata`, or a `401`).
fn caller(principal: Option<&Principal>) -> (Arc<Map<String, Value>>, Option<String>, Option<String>) {
    let Some(claims) = principal.and_then(|p| p.claims.as_ref()) else { return Default::default() };
    (claims.caller_identity().clone(), claims.str("iss").map(str::to_owned), claims.str("oid").map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    use axum::body::Body;
    use fhirside_audit::AuditConfig;
    use fhirside_store::{SqliteConfig, SqliteStore};
    use tower_service::Service;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("fhirside-audit-{name}-{}-{}", std::process::id(), crate::ids::new_id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    async fn send(
        router: &mut axum::Router,
        request: axum::http::Request<Body>,
    ) -> (u16, axum::http::HeaderMap, Value) {
        let response = router.call(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = crate::interaction::read_body(body, 1 << 20).await.unwrap();
        (parts.status.as_u16(), parts.headers, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    fn create_patient() -> axum::http::Request<Body> {
        axum::http::Request::post("/Patient")
            .header("content-type", "application/fhir+json")
            .header("x-request-id", "client-7")
            .header("X-MS-AZUREFHIR-AUDIT-Purpose", "treatment")
            .body(Body::from(r#"{"resourceType": "Patient", "name": [{"family": "Quonsetfield"}]}"#))
            .unwrap()
    }

    fn search_patients() -> axum::http::Request<Body> {
        axum::http::Request::get("/Patient?_summary=count").body(Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn each_request_is_recorded_started_then_succeeded() {
        let dir = temp_dir("recorded");
        let store = Arc::new(SqliteStore::open(&SqliteConfig::in_dir(&dir)).unwrap());
        let log = Arc::new(AuditLog::open(AuditConfig::new(dir.join("audit"))).unwrap());
        let state = AppState::new(crate::ServerConfig::default(), store.clone()).with_audit(log.clone());
        let mut router = crate::router(state);

        let (status, headers, _) = send(&mut router, create_patient()).await;
        assert_eq!(status, 201);
        assert_eq!(headers["x-correlation-id"], "client-7");
        let (status, headers, _) = send(&mut router, search_patients()).await;
        assert_eq!(status, 200);
        let generated = headers["x-correlation-id"].to_str().unwrap().to_owned();
        assert_eq!(generated, headers["x-request-id"].to_str().unwrap(), "without a client id, the request id");

        let records = log.query(fhirside_audit::Filter::default(), 10).await.unwrap();
        let summary: Vec<(&str, ResultType, Option<u16>, &str)> = records
            .iter()
            .map(|r| (r.operation_name.as_str(), r.result_type, r.status_code, r.correlation_id.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                ("create", ResultType::Started, None, "client-7"),
                ("create", ResultType::Succeeded, Some(201), "client-7"),
                ("search-type", ResultType::Started, None, generated.as_str()),
                ("search-type", ResultType::Succeeded, Some(200), generated.as_str()),
            ]
        );
        let created = &records[1];
        assert_eq!(created.request_uri, "https://localhost/Patient");
        assert_eq!(created.fhir_resource_type.as_deref(), Some("Patient"));
        assert_eq!(created.location, "local");
        assert_eq!(
            Value::Object(created.properties.clone()),
            serde_json::json!({"X-MS-AZUREFHIR-AUDIT-PURPOSE": "treatment"})
        );
        assert!(created.operation_duration.is_some());
        let files: String = std::fs::read_dir(dir.join("audit"))
            .unwrap()
            .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
            .collect();
        assert!(!files.contains("Quonsetfield"), "no resource content in the audit log");
        log.close();
        store.close();
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A router whose one handler closes the audit log while it runs.
    fn closing_router(dir: &std::path::Path, method: axum::http::Method) -> (axum::Router, Arc<SqliteStore>) {
        let store = Arc::new(SqliteStore::open(&SqliteConfig::in_dir(dir)).unwrap());
        let log = Arc::new(AuditLog::open(AuditConfig::new(dir.join("audit"))).unwrap());
        let state = AppState::new(crate::ServerConfig::default(), store.clone()).with_audit(log.clone());
        let handler = move || async move {
            log.close();
            "done"
        };
        let route = axum::routing::on(axum::routing::MethodFilter::try_from(method).unwrap(), handler);
        let router = axum::Router::new()
            .route("/Patient", route)
            .layer(axum::middleware::from_fn_with_state(state, crate::context::middleware));
        (router, store)
    }

    #[tokio::test]
    async fn an_outcome_the_log_cannot_record_is_a_500() {
        let dir = temp_dir("outcome");
        let (mut router, store) = closing_router(&dir, axum::http::Method::POST);
        let request = axum::http::Request::post("/Patient").body(Body::empty()).unwrap();
        let (status, _, outcome) = send(&mut router, request).await;
        assert_eq!(status, 500);
        assert_eq!(outcome["issue"][0]["code"], "exception");
        assert!(outcome["issue"][0]["diagnostics"].as_str().unwrap().contains("may have taken effect"));
        let records = fhirside_audit::query(&dir.join("audit"), &fhirside_audit::Filter::default(), 10).unwrap();
        let results: Vec<ResultType> = records.iter().map(|r| r.result_type).collect();
        assert_eq!(results, [ResultType::Started], "the attempt is on record");
        store.close();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_read_the_log_cannot_record_is_withheld() {
        let dir = temp_dir("withheld");
        let (mut router, store) = closing_router(&dir, axum::http::Method::GET);
        let request = axum::http::Request::get("/Patient").body(Body::empty()).unwrap();
        let (status, _, outcome) = send(&mut router, request).await;
        assert_eq!(status, 503, "the handler's answer is not sent: {outcome}");
        assert_eq!(outcome["issue"][0]["code"], "transient");
        let records = fhirside_audit::query(&dir.join("audit"), &fhirside_audit::Filter::default(), 10).unwrap();
        assert!(records.is_empty(), "a read's two records are written together or not at all: {records:?}");
        store.close();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_request_the_log_cannot_record_is_not_run() {
        let dir = temp_dir("unavailable");
        let store = Arc::new(SqliteStore::open(&SqliteConfig::in_dir(&dir)).unwrap());
        let log = Arc::new(AuditLog::open(AuditConfig::new(dir.join("audit"))).unwrap());
        log.close(); // Appends now fail.
        let state = AppState::new(crate::ServerConfig::default(), store.clone()).with_audit(log);
        let (status, headers, outcome) = send(&mut crate::router(state), create_patient()).await;
        assert_eq!(status, 503);
        assert_eq!(headers["x-correlation-id"], "client-7");
        assert_eq!(outcome["issue"][0]["code"], "transient");
        assert!(outcome["issue"][0]["diagnostics"].as_str().unwrap().contains("audit log is unavailable"));
        // Nothing was created: the same store, served without auditing, has no Patient.
        let unaudited = AppState::new(crate::ServerConfig::default(), store.clone());
        let (status, _, bundle) = send(&mut crate::router(unaudited), search_patients()).await;
        assert_eq!((status, bundle["total"].as_u64()), (200, Some(0)));
        store.close();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn request_uris() {
        let base = "https://fhir.example";
        assert_eq!(request_uri(base, "/Patient/1", None), "https://fhir.example/Patient/1");
        assert_eq!(
            request_uri(base, "/Observation", Some("code=1234-5&subject=Patient/1")),
            "https://fhir.example/Observation?code=1234-5&subject=Patient/1"
        );
        assert_eq!(
            request_uri(base, "/Patient", Some("name=x&Access_Token=eyJ.secret.sig&password=hunter2&_count=1")),
            "https://fhir.example/Patient?name=x&Access_Token=REDACTED&password=REDACTED&_count=1"
        );
    }

    #[test]
    fn caller_identity_holds_only_identifying_claims() {
        let claims: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "iss": "https://login.example/tenant/",
            "oid": "0b6a1c1e-0000-4000-8000-000000000001",
            "sub": "subject",
            "tid": "tenant",
            "appid": "app",
            "idtyp": "app",
            "aud": "https://fhir.example",
            "roles": ["globalReader"],
            "scp": "user/*.read",
            "exp": 1_900_000_000,
            "name": "Jane Example",
            "email": "jane@example.com"
        }))
        .unwrap();
        let principal = Principal {
            data_actions: crate::auth::DataActions::NONE,
            object_id: "0b6a1c1e-0000-4000-8000-000000000001".into(),
            claims: Some(Arc::new(fhirside_identity::validate::Claims::new(claims, 1_900_000_000))),
            smart: None,
        };
        let (identity, issuer, object_id) = caller(Some(&principal));
        let keys: Vec<&str> = identity.keys().map(String::as_str).collect();
        assert_eq!(keys, ["iss", "oid", "sub", "tid", "appid", "idtyp"]);
        assert_eq!(issuer.as_deref(), Some("https://login.example/tenant/"));
        assert_eq!(object_id.as_deref(), Some("0b6a1c1e-0000-4000-8000-000000000001"));
        let (identity, issuer, object_id) = caller(None);
        assert!(identity.is_empty() && issuer.is_none() && object_id.is_none());
    }
}

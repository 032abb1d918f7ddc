//! Building successful FHIR responses.
//!
//! A stored version's body is served as stored — no parse, no re-serialisation — unless the client
//! asked for `_pretty`. The headers are those of the FHIR RESTful API and Azure's service:
//! `ETag: W/"<versionId>"`, `Last-Modified`, `Location` (version-specific) on create, and
//! `x-ms-request-charge` on every response.

use axum::body::Body;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use fhirside_store::{Cost, StoredVersion};
use serde_json::json;

use crate::context;
use crate::error::{operation_outcome, FhirError};
use crate::negotiate::{Format, Return};

pub(crate) use crate::negotiate::FHIR_JSON;

static REQUEST_CHARGE: HeaderName = HeaderName::from_static("x-ms-request-charge");

/// Options for [`resource`].
pub(crate) struct ResourceResponse<'a> {
    pub status: StatusCode,
    pub version: &'a StoredVersion,
    pub format: Format,
    pub return_: Return,
    pub cost: Cost,
    /// Adds `Location` (create and update-as-create).
    pub location: bool,
}

/// The response for a single resource version.
pub(crate) fn resource(r: ResourceResponse<'_>) -> Result<Response, FhirError> {
    let v = r.version;
    let body = match r.return_ {
        Return::Minimal => Body::empty(),
        Return::Representation => json_body(&v.body, r.format.pretty)?,
        Return::OperationOutcome => {
            let text = if r.status == StatusCode::CREATED { "created" } else { "updated" };
            let outcome = operation_outcome(vec![json!({
                "severity": "information",
                "code": "informational",
                "diagnostics": format!("Resource {}/{} {text}, version {}.", v.resource_type, v.id, v.version),
            })]);
            Body::from(serde_json::to_vec(&outcome).map_err(|e| FhirError::Internal(e.to_string()))?)
        }
    };
    let mut response = Response::builder().status(r.status);
    let headers = response.headers_mut().expect("a fresh builder has headers");
    if r.return_ != Return::Minimal {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(r.format.content_type));
    }
    version_headers(headers, v);
    if r.location {
        let location = format!("{}/{}/{}/_history/{}", context::base_url(), v.resource_type, v.id, v.version);
        if let Ok(value) = HeaderValue::from_str(&location) {
            headers.insert(header::LOCATION, value);
        }
    }
    charge(headers, r.cost);
    response.body(body).map_err(|e| FhirError::Internal(e.to_string()))
}

/// `ETag` and `Last-Modified` of a version.
pub(crate) fn version_headers(headers: &mut axum::http::HeaderMap, v: &StoredVersion) {
    if let Ok(etag) = HeaderValue::from_str(&format!("W/\"{}\"", v.version)) {
        headers.insert(header::ETAG, etag);
    }
    if let Ok(date) = HeaderValue::from_str(&fhir::datetime::format_http_date(v.last_updated)) {
        headers.insert(header::LAST_MODIFIED, date);
    }
}

pub(crate) fn charge(headers: &mut axum::http::HeaderMap, cost: Cost) {
    headers.insert(REQUEST_CHARGE.clone(), HeaderValue::from(cost.request_charge()));
}

/// A JSON body, pretty-printed on request.
pub(crate) fn json_body(bytes: &bytes::Bytes, pretty: bool) -> Result<Body, FhirError> {
    if !pretty {
        return Ok(Body::from(bytes.clone()));
    }
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| FhirError::Internal(e.to_string()))?;
    Ok(Body::from(serde_json::to_vec_pretty(&value).map_err(|e| FhirError::Internal(e.to_string()))?))
}

/// A `200` response carrying a JSON document (a Bundle, a CapabilityStatement, an OperationOutcome).
pub(crate) fn document(
    status: StatusCode,
    body: bytes::Bytes,
    format: Format,
    cost: Cost,
) -> Result<Response, FhirError> {
    let mut response = Response::builder().status(status);
    let headers = response.headers_mut().expect("a fresh builder has headers");
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(format.content_type));
    charge(headers, cost);
    response.body(json_body(&body, format.pretty)?).map_err(|e| FhirError::Internal(e.to_string()))
}

/// `204 No Content` with optional version headers (deletes).
pub(crate) fn no_content(version: Option<&StoredVersion>, cost: Cost) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    if let Some(v) = version {
        version_headers(response.headers_mut(), v);
    }
    charge(response.headers_mut(), cost);
    response
}

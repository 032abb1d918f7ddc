//! read: `GET /{type}/{id}` (<https://hl7.org/fhir/R4/http.html#read>).
//!
//! `404` if the resource never existed, `410` with the deletion's `ETag` if its current version is
//! a deletion, `304` when `If-None-Match` names the current version or `If-Modified-Since` is not
//! older than it.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use fhirside_store::StoredVersion;

use crate::auth::DataAction;
use crate::error::FhirError;
use crate::negotiate::Return;
use crate::response::{self, ResourceResponse};
use crate::AppState;

use super::{parse_etag, Call};

pub(crate) async fn handle(state: &AppState, call: Call, resource_type: &str, id: &str) -> Result<Response, FhirError> {
    call.authorize(DataAction::Read)?;
    let format = call.format()?;
    let outcome = state.store.read(resource_type, id).await?;
    let version = match outcome.value {
        None => return Err(FhirError::NotFound { resource_type: resource_type.into(), id: id.into() }),
        Some(v) if v.deleted => {
            return Err(FhirError::Gone { resource_type: resource_type.into(), id: id.into(), version: v.version })
        }
        Some(v) => v,
    };
    if not_modified(&call, &version) {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        response::version_headers(response.headers_mut(), &version);
        response::charge(response.headers_mut(), outcome.cost);
        return Ok(response);
    }
    response::resource(ResourceResponse {
        status: StatusCode::OK,
        version: &version,
        format,
        return_: Return::Representation,
        cost: outcome.cost,
        location: false,
    })
}

/// `If-None-Match` takes precedence over `If-Modified-Since` (RFC 9110 §13.2.2).
fn not_modified(call: &Call, version: &StoredVersion) -> bool {
    if let Some(value) = call.headers.get(header::IF_NONE_MATCH) {
        let text = value.to_str().unwrap_or("");
        return text.trim() == "*" || text.split(',').any(|tag| parse_etag(tag) == Some(version.version));
    }
    if let Some(value) = call.headers.get(header::IF_MODIFIED_SINCE) {
        if let Some(since) = value.to_str().ok().and_then(parse_http_date) {
            // HTTP dates have whole seconds: compare at that precision.
            return version.last_updated.div_euclid(1_000_000) <= since.div_euclid(1_000_000);
        }
    }
    false
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) to microseconds since the epoch.
fn parse_http_date(text: &str) -> Option<i64> {
    let rest = text.trim().split_once(", ")?.1;
    let mut parts = rest.split(' ');
    let day: i64 = parts.next()?.parse().ok()?;
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let month_name = parts.next()?;
    let month = MONTHS.iter().position(|m| *m == month_name)? as i64 + 1;
    let year: i64 = parts.next()?.parse().ok()?;
    let mut clock = parts.next()?.split(':').map(|p| p.parse::<i64>().ok());
    let (h, m, s) = (clock.next()??, clock.next()??, clock.next()??);
    if parts.next()? != "GMT" || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    // Days from civil (proleptic Gregorian), as in Howard Hinnant's algorithm.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400) + h * 3600 + m * 60 + s) * 1_000_000)
}

#[cfg(test)]
mod tests {
    #[test]
    fn http_dates() {
        assert_eq!(super::parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(super::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784_111_777_000_000));
        assert_eq!(super::parse_http_date("Sun, 06 Nov 1994 08:49:37"), None);
        assert_eq!(super::parse_http_date("yesterday"), None);
    }
}

//! Per-request context: the request id, the correlation id, the FHIR base URL, and the headers
//! every response carries.
//!
//! The outermost middleware of the FHIR API. It gives each request a server-generated id (returned
//! as `X-Request-Id` and used as the `OperationOutcome.id` of errors) and a correlation id (the
//! client's `X-Correlation-Id`, else its `X-Request-Id`, when well-formed; else the request id),
//! always returned as `X-Correlation-Id`. It authenticates the caller (see [`crate::auth`]), runs
//! the request inside the audit step ([`crate::audit`]), and adds the security headers Azure's
//! service sends. The id and base URL live in a task-local so that the error mapping and the link
//! builders can reach them without threading them through every call.

use std::cell::Cell;

use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

use crate::{audit, auth, AppState};

pub(crate) struct RequestContext {
    pub request_id: String,
    /// Where the base URL comes from; formatted only when a link is built, which most reads never do.
    base: Base,
    /// The audit `OperationName`, when the interaction knows it better than the path does.
    operation: Cell<Option<&'static str>>,
}

enum Base {
    Configured(String),
    Host { scheme: &'static str, host: Option<HeaderValue> },
}

tokio::task_local! {
    static CONTEXT: RequestContext;
}

/// The current request's id ("" outside a request).
pub(crate) fn request_id() -> String {
    CONTEXT.try_with(|c| c.request_id.clone()).unwrap_or_default()
}

/// The FHIR base URL for links in the current request, without a trailing slash.
pub(crate) fn base_url() -> String {
    CONTEXT
        .try_with(|c| match &c.base {
            Base::Configured(base) => base.clone(),
            Base::Host { scheme, host } => {
                let host = host.as_ref().and_then(|h| h.to_str().ok()).unwrap_or("localhost");
                format!("{scheme}://{host}")
            }
        })
        .unwrap_or_default()
}

/// Names the current request's interaction for the audit record, when its path could not (a Bundle
/// posted to the base is a `batch` or a `transaction`).
pub(crate) fn refine_operation(name: &'static str) {
    let _ = CONTEXT.try_with(|c| c.operation.set(Some(name)));
}

/// The name given by [`refine_operation`], if any.
pub(crate) fn refined_operation() -> Option<&'static str> {
    CONTEXT.try_with(|c| c.operation.get()).ok().flatten()
}

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");
static X_REQUEST_CHARGE: HeaderName = HeaderName::from_static("x-ms-request-charge");

pub(crate) async fn middleware(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let request_id = crate::ids::new_id();
    let correlation_id = client_correlation_id(request.headers()).unwrap_or_else(|| request_id.clone());
    let base = match &state.config.base_url {
        Some(base) => Base::Configured(base.clone()),
        None => Base::Host {
            scheme: state.config.scheme,
            host: request.headers().get(header::HOST).filter(|h| h.to_str().is_ok_and(is_plausible_host)).cloned(),
        },
    };
    let context = RequestContext { request_id, base, operation: Cell::new(None) };
    let request_id_header = HeaderValue::from_str(&context.request_id).ok();
    let correlation_header = HeaderValue::from_str(&correlation_id).ok();

    let mut response = CONTEXT
        .scope(context, async move {
            let authenticated = auth::authenticate(&state, request.uri().path(), request.headers()).await;
            audit::audited(&state, correlation_id, request, authenticated, next).await
        })
        .await;

    let headers = response.headers_mut();
    if let Some(id) = request_id_header {
        headers.insert(X_REQUEST_ID.clone(), id);
    }
    if let Some(correlation) = correlation_header {
        headers.insert(X_CORRELATION_ID.clone(), correlation);
    }
    // Every response carries a request charge; interactions that touched the store set their own.
    if !headers.contains_key(&X_REQUEST_CHARGE) {
        headers.insert(X_REQUEST_CHARGE.clone(), HeaderValue::from_static("0"));
    }
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("SAMEORIGIN"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("frame-src 'self';"));
    response
}

/// The client's correlation id: `X-Correlation-Id`, else `X-Request-Id`, when it is at most 128
/// characters of `[A-Za-z0-9._:-]` (it is echoed in a header and recorded in the audit log).
fn client_correlation_id(headers: &axum::http::HeaderMap) -> Option<String> {
    [&X_CORRELATION_ID, &X_REQUEST_ID]
        .into_iter()
        .filter_map(|name| headers.get(name).and_then(|v| v.to_str().ok()))
        .find(|id| is_sane_correlation_id(id))
        .map(str::to_owned)
}

fn is_sane_correlation_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// A `Host` header is echoed into links, so only host[:port] characters are accepted.
fn is_plausible_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn correlation_id_from_the_client() {
        let headers = |pairs: &[(&'static str, &str)]| {
            let mut map = axum::http::HeaderMap::new();
            for (k, v) in pairs {
                map.insert(*k, v.parse().unwrap());
            }
            map
        };
        assert_eq!(client_correlation_id(&headers(&[])), None);
        assert_eq!(client_correlation_id(&headers(&[("x-request-id", "client-123")])).as_deref(), Some("client-123"));
        let both = headers(&[("x-request-id", "req"), ("x-correlation-id", "corr:1.2_3")]);
        assert_eq!(client_correlation_id(&both).as_deref(), Some("corr:1.2_3"), "X-Correlation-Id first");
        let bad_first = headers(&[("x-request-id", "req"), ("x-correlation-id", "has space")]);
        assert_eq!(client_correlation_id(&bad_first).as_deref(), Some("req"));
        assert_eq!(client_correlation_id(&headers(&[("x-request-id", &"a".repeat(128))])).map(|s| s.len()), Some(128));
        assert_eq!(client_correlation_id(&headers(&[("x-request-id", &"a".repeat(129))])), None);
        assert_eq!(client_correlation_id(&headers(&[("x-request-id", "<script>")])), None);
    }
}

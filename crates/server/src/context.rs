//! Per-request context: the request id, the FHIR base URL, and the headers every response carries.
//!
//! The outermost middleware. It gives each request a server-generated id (returned as
//! `X-Request-Id` and used as the `OperationOutcome.id` of errors), echoes the client's own
//! `X-Request-Id` as `X-Correlation-Id`, authenticates the caller (see [`crate::auth`]) and adds the
//! security headers Azure's service sends. The id and base URL live in a task-local so that the
//! error mapping and the link builders can reach them without threading them through every call.

use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::auth;
use crate::AppState;

pub(crate) struct RequestContext {
    pub request_id: String,
    /// Where the base URL comes from; formatted only when a link is built, which most reads never do.
    base: Base,
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

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");
static X_REQUEST_CHARGE: HeaderName = HeaderName::from_static("x-ms-request-charge");

pub(crate) async fn middleware(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let request_id = crate::ids::new_id();
    let correlation = request.headers().get(&X_REQUEST_ID).cloned();
    let base = match &state.config.base_url {
        Some(base) => Base::Configured(base.clone()),
        None => Base::Host {
            scheme: state.config.scheme,
            host: request.headers().get(header::HOST).filter(|h| h.to_str().is_ok_and(is_plausible_host)).cloned(),
        },
    };
    let context = RequestContext { request_id, base };
    let request_id_header = HeaderValue::from_str(&context.request_id).ok();

    let mut response = CONTEXT
        .scope(context, async move {
            match auth::authenticate(&state, request.uri().path(), request.headers()).await {
                Ok(principal) => {
                    request.extensions_mut().insert(principal);
                    next.run(request).await
                }
                Err(error) => error.into_response(),
            }
        })
        .await;

    let headers = response.headers_mut();
    if let Some(id) = request_id_header {
        headers.insert(X_REQUEST_ID.clone(), id);
    }
    if let Some(correlation) = correlation {
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

/// A `Host` header is echoed into links, so only host[:port] characters are accepted.
fn is_plausible_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

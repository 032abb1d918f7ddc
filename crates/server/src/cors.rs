//! Cross-origin resource sharing (CORS): which browser apps on other origins may call the API.
//!
//! Browsers let a page's script call another origin only when that origin's responses say so. The
//! policy is Azure's FHIR service's: one set of five settings for all origins ([`CorsConfig`]:
//! origins, headers, methods, max age, allow credentials), off unless configured.
//!
//! The middleware is the outermost layer, outside the context middleware and so outside
//! authentication, for two reasons: a browser never sends credentials with a preflight (`OPTIONS`
//! with `Origin` and `Access-Control-Request-Method`), so preflights must be answered without a
//! token; and errors such as a `401` must carry the CORS headers too, or the app cannot read them.
//! When CORS is not configured it does nothing: no CORS headers, and `OPTIONS` reaches the router.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use crate::config::CorsConfig;
use crate::AppState;

/// The response headers a browser app may read besides the CORS-safelisted ones. Azure's open-source
/// server exposes none (its policy sets no exposed headers); exposing these is our deliberate
/// choice, because a FHIR app needs them: the id and version of what it created (`Location`,
/// `ETag`), where an asynchronous job reports (`Content-Location`, `X-Progress`, `Retry-After`), the
/// ids to quote to support (`X-Request-Id`, `X-Correlation-Id`) and why a token was refused
/// (`WWW-Authenticate`).
const EXPOSED_HEADERS: &str =
    "Location, Content-Location, ETag, Last-Modified, X-Request-Id, X-Correlation-Id, Retry-After, X-Progress, \
     WWW-Authenticate";

/// Request headers a preflight may name without the policy listing them (as ASP.NET Core, which
/// Azure's service runs on, treats them).
const ALWAYS_ALLOWED_HEADERS: [&str; 4] = ["accept", "accept-language", "content-language", "origin"];

pub(crate) async fn middleware(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(cors) = state.config.cors.as_ref() else {
        return next.run(request).await;
    };
    if is_token_endpoint(request.uri().path()) {
        return next.run(request).await;
    }
    let origin = request.headers().get(header::ORIGIN).cloned();
    if let Some(origin) = &origin {
        if request.method() == Method::OPTIONS && request.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        {
            return preflight(cors, origin, request.headers());
        }
    }
    let mut response = next.run(request).await;
    decorate(cors, origin.as_ref(), response.headers_mut());
    response
}

/// The token endpoints answer their own preflights, open to every origin whatever the policy: a
/// browser SMART app (a public client with PKCE) redeems its code there, from its own origin, and
/// what it sends is a one-time code, not a credential a page on another origin could abuse.
fn is_token_endpoint(path: &str) -> bool {
    path.ends_with("/oauth2/v2.0/token") || path.ends_with("/oauth2/token") || path == "/AadSmartOnFhirProxy/token"
}

/// The answer to a preflight. A preflight that the policy refuses (origin, method or a header not
/// allowed) still gets `204`, only without `Access-Control-Allow-Origin`, so the browser blocks the
/// actual request. That is what ASP.NET Core's CORS middleware, and so Azure's service, answers; a
/// `403` with an OperationOutcome would tell the app nothing more, since the browser hides a failed
/// preflight's response from script either way.
fn preflight(cors: &CorsConfig, origin: &HeaderValue, request: &HeaderMap) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    headers.insert(
        header::VARY,
        HeaderValue::from_static("Origin, Access-Control-Request-Method, Access-Control-Request-Headers"),
    );
    let method = request.get(header::ACCESS_CONTROL_REQUEST_METHOD).and_then(|m| m.to_str().ok()).unwrap_or("");
    let requested_headers = request.get(header::ACCESS_CONTROL_REQUEST_HEADERS).cloned();
    let requested: Vec<String> = requested_headers
        .as_ref()
        .and_then(|h| h.to_str().ok())
        .map(|h| h.split(',').map(|n| n.trim().to_ascii_lowercase()).filter(|n| !n.is_empty()).collect())
        .unwrap_or_default();
    let allowed = allows_origin(cors, origin)
        && allows_method(cors, method)
        && requested.iter().all(|name| allows_header(cors, name));
    if !allowed {
        return response;
    }
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin_value(cors, origin));
    let methods = if cors.methods.iter().any(|m| m == "*") {
        HeaderValue::from_str(method).ok()
    } else {
        HeaderValue::from_str(&cors.methods.join(", ")).ok()
    };
    if let Some(methods) = methods {
        headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, methods);
    }
    // `*` is echoed as the headers asked for: with credentials, browsers take a literal `*` as a
    // header named "*".
    let allow_headers = if cors.headers.iter().any(|h| h == "*") {
        requested_headers.filter(|_| !requested.is_empty())
    } else if cors.headers.is_empty() {
        None
    } else {
        HeaderValue::from_str(&cors.headers.join(", ")).ok()
    };
    if let Some(allow_headers) = allow_headers {
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allow_headers);
    }
    if let Some(max_age) = cors.max_age {
        headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from(max_age));
    }
    if cors.allow_credentials {
        headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
    }
    response
}

/// The CORS headers of an actual (not preflight) response. A response that already says which
/// origin may read it (see [`add_open_cors_headers`]) is left as its handler made it.
fn decorate(cors: &CorsConfig, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
    // Whether the response carries CORS headers depends on `Origin`, so caches must key on it, even
    // for requests without one.
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    let Some(origin) = origin else { return };
    if headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN) || !allows_origin(cors, origin) {
        return;
    }
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin_value(cors, origin));
    if cors.allow_credentials {
        headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
    }
    headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(EXPOSED_HEADERS));
}

/// Opens a response to every origin, whatever the configured policy: for documents any browser app
/// must be able to read, such as SMART and OpenID Connect discovery (`/.well-known/…`). Sets
/// `Access-Control-Allow-Origin: *` (never with credentials), which the CORS middleware then leaves
/// alone. Such documents are fetched with plain `GET`s, which browsers send without a preflight.
pub fn add_open_cors_headers(headers: &mut HeaderMap) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
}

fn any_origin(cors: &CorsConfig) -> bool {
    cors.origins.iter().any(|o| o == "*")
}

fn allows_origin(cors: &CorsConfig, origin: &HeaderValue) -> bool {
    any_origin(cors) || origin.to_str().is_ok_and(|origin| cors.origins.iter().any(|o| o.eq_ignore_ascii_case(origin)))
}

fn allows_method(cors: &CorsConfig, method: &str) -> bool {
    !method.is_empty() && cors.methods.iter().any(|m| m == "*" || m.eq_ignore_ascii_case(method))
}

fn allows_header(cors: &CorsConfig, name: &str) -> bool {
    ALWAYS_ALLOWED_HEADERS.contains(&name) || cors.headers.iter().any(|h| h == "*" || h.eq_ignore_ascii_case(name))
}

/// `*` only when any origin is allowed and credentials are off (browsers refuse `*` with
/// credentials); otherwise the request's own origin.
fn allow_origin_value(cors: &CorsConfig, origin: &HeaderValue) -> HeaderValue {
    if any_origin(cors) && !cors.allow_credentials {
        HeaderValue::from_static("*")
    } else {
        origin.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(origins: &[&str], headers: &[&str], credentials: bool) -> CorsConfig {
        CorsConfig {
            origins: origins.iter().map(|s| s.to_string()).collect(),
            headers: headers.iter().map(|s| s.to_string()).collect(),
            methods: ["GET", "POST", "PUT"].map(String::from).to_vec(),
            max_age: Some(600),
            allow_credentials: credentials,
        }
    }

    fn request(method: &str, headers: Option<&str>) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(header::ACCESS_CONTROL_REQUEST_METHOD, HeaderValue::from_str(method).unwrap());
        if let Some(headers) = headers {
            map.insert(header::ACCESS_CONTROL_REQUEST_HEADERS, HeaderValue::from_str(headers).unwrap());
        }
        map
    }

    fn get(response: &Response, name: header::HeaderName) -> Option<&str> {
        response.headers().get(name).map(|v| v.to_str().unwrap())
    }

    fn app() -> HeaderValue {
        HeaderValue::from_static("https://app.example")
    }

    #[test]
    fn cors_preflight_from_an_allowed_origin() {
        let cors = config(&["https://app.example"], &["*"], true);
        let response = preflight(&cors, &app(), &request("PUT", Some("content-type,authorization")));
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert_eq!(get(&response, header::ACCESS_CONTROL_ALLOW_ORIGIN), Some("https://app.example"));
        assert_eq!(get(&response, header::ACCESS_CONTROL_ALLOW_METHODS), Some("GET, POST, PUT"));
        assert_eq!(get(&response, header::ACCESS_CONTROL_ALLOW_HEADERS), Some("content-type,authorization"));
        assert_eq!(get(&response, header::ACCESS_CONTROL_MAX_AGE), Some("600"));
        assert_eq!(get(&response, header::ACCESS_CONTROL_ALLOW_CREDENTIALS), Some("true"));
        assert!(get(&response, header::VARY).unwrap().starts_with("Origin"));
    }

    #[test]
    fn cors_preflight_refusals_carry_no_allow_origin() {
        let cors = config(&["https://app.example"], &["content-type"], false);
        let other = HeaderValue::from_static("https://evil.example");
        for (origin, method, headers) in [
            (&other, "GET", None),
            (&app(), "DELETE", None),
            (&app(), "GET", Some("content-type, x-custom")),
            (&app(), "", None),
        ] {
            let response = preflight(&cors, origin, &request(method, headers));
            assert_eq!(response.status(), StatusCode::NO_CONTENT);
            assert!(response.headers().get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none(), "{origin:?} {method}");
        }
        let response = preflight(&cors, &app(), &request("POST", Some("Content-Type, Accept")));
        assert_eq!(get(&response, header::ACCESS_CONTROL_ALLOW_HEADERS), Some("content-type"));
        assert!(response.headers().get(header::ACCESS_CONTROL_ALLOW_CREDENTIALS).is_none());
    }

    #[test]
    fn cors_any_origin_answers_star_only_without_credentials() {
        let cors = config(&["*"], &["*"], false);
        let response = preflight(&cors, &app(), &request("GET", None));
        assert_eq!(get(&response, header::ACCESS_CONTROL_ALLOW_ORIGIN), Some("*"));
        assert!(response.headers().get(header::ACCESS_CONTROL_ALLOW_HEADERS).is_none());
        let mut headers = HeaderMap::new();
        decorate(&cors, Some(&app()), &mut headers);
        assert_eq!(headers.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).unwrap(), "*");
    }

    #[test]
    fn cors_actual_responses() {
        let cors = config(&["https://app.example"], &["*"], false);
        let mut headers = HeaderMap::new();
        headers.insert(header::VARY, HeaderValue::from_static("Accept"));
        decorate(&cors, Some(&app()), &mut headers);
        assert_eq!(headers.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).unwrap(), "https://app.example");
        assert!(headers.get(header::ACCESS_CONTROL_EXPOSE_HEADERS).unwrap().to_str().unwrap().contains("ETag"));
        assert_eq!(headers.get_all(header::VARY).iter().collect::<Vec<_>>(), ["Accept", "Origin"]);
        assert!(headers.get(header::ACCESS_CONTROL_ALLOW_CREDENTIALS).is_none());

        let mut headers = HeaderMap::new();
        decorate(&cors, Some(&HeaderValue::from_static("https://evil.example")), &mut headers);
        assert!(headers.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
        assert!(headers.get(header::ACCESS_CONTROL_EXPOSE_HEADERS).is_none());

        // A handler that opened its response to every origin keeps it so.
        let mut headers = HeaderMap::new();
        add_open_cors_headers(&mut headers);
        decorate(&config(&["https://app.example"], &["*"], true), Some(&app()), &mut headers);
        assert_eq!(headers.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).unwrap(), "*");
        assert!(headers.get(header::ACCESS_CONTROL_ALLOW_CREDENTIALS).is_none());
    }
}

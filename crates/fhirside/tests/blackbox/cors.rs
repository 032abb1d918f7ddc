//! CORS, configured as in Azure's FHIR service: preflights answered without a token, actual
//! responses opened to the allowed origins, nothing at all when CORS is not configured.

use serde_json::json;

use crate::harness::{temp_dir, Response, Server};

const APP: &str = "https://app.example";

fn server(extra: &[&str]) -> Server {
    let mut args = vec!["--http"];
    args.extend_from_slice(extra);
    Server::start_in(&temp_dir("cors"), &args)
}

/// A browser's preflight: no `Authorization`, as browsers never send credentials with one.
fn preflight(server: &Server, path: &str, origin: &str, method: &str, headers: Option<&str>) -> Response {
    let mut request = vec![("origin", origin), ("access-control-request-method", method)];
    if let Some(headers) = headers {
        request.push(("access-control-request-headers", headers));
    }
    server.request("OPTIONS", path, &request, None)
}

fn vary_has_origin(response: &Response) -> bool {
    response.headers.iter().any(|(k, v)| k == "vary" && v.split(',').any(|v| v.trim().eq_ignore_ascii_case("origin")))
}

#[test]
fn preflight_from_an_allowed_origin_is_answered_without_a_token() {
    let server = server(&["--cors-origin", APP, "--cors-max-age", "600", "--cors-allow-credentials"]);
    for path in ["/Patient", "/Patient/123", "/metadata", "/"] {
        let response = preflight(&server, path, APP, "PUT", Some("authorization,content-type,if-match")).expect(204);
        assert_eq!(response.header("access-control-allow-origin"), Some(APP), "{path}");
        let methods = response.header("access-control-allow-methods").unwrap();
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
            assert!(methods.contains(method), "{methods}");
        }
        // Headers default to `*`, answered with the headers asked for.
        assert_eq!(response.header("access-control-allow-headers"), Some("authorization,content-type,if-match"));
        assert_eq!(response.header("access-control-max-age"), Some("600"));
        assert_eq!(response.header("access-control-allow-credentials"), Some("true"));
        assert!(vary_has_origin(&response));
    }
}

#[test]
fn preflight_outside_the_policy_gets_no_allow_origin() {
    let server = server(&["--cors-origin", APP, "--cors-method", "GET,POST", "--cors-header", "content-type"]);
    for (origin, method, headers) in [
        ("https://evil.example", "GET", None),
        ("http://app.example", "GET", None),
        (APP, "DELETE", None),
        (APP, "POST", Some("content-type,x-custom")),
    ] {
        let response = preflight(&server, "/Patient", origin, method, headers).expect(204);
        assert_eq!(response.header("access-control-allow-origin"), None, "{origin} {method} {headers:?}");
        assert_eq!(response.header("access-control-allow-methods"), None);
    }
    let response = preflight(&server, "/Patient", APP, "POST", Some("content-type")).expect(204);
    assert_eq!(response.header("access-control-allow-origin"), Some(APP));
    assert_eq!(response.header("access-control-allow-methods"), Some("GET, POST"));
    assert_eq!(response.header("access-control-allow-headers"), Some("content-type"));
    assert_eq!(response.header("access-control-allow-credentials"), None);
    assert_eq!(response.header("access-control-max-age"), None);
}

#[test]
fn responses_to_an_allowed_origin_can_be_read() {
    let server = server(&["--cors-origin", &format!("https://other.example,{APP}")]);
    let response = server.request("GET", "/metadata", &[("origin", APP)], None).expect(200);
    assert_eq!(response.header("access-control-allow-origin"), Some(APP));
    assert!(vary_has_origin(&response));
    let exposed = response.header("access-control-expose-headers").unwrap().to_ascii_lowercase();
    for name in
        ["location", "content-location", "etag", "last-modified", "x-request-id", "retry-after", "www-authenticate"]
    {
        assert!(exposed.split(',').any(|e| e.trim() == name), "{name} in {exposed}");
    }
    assert_eq!(response.header("access-control-allow-credentials"), None);

    // Writes and errors too: an app reads the Location of what it created and the OperationOutcome
    // of what failed.
    let patient = json!({"resourceType": "Patient", "gender": "female"});
    let response = server
        .request(
            "POST",
            "/Patient",
            &[("origin", APP), ("content-type", "application/fhir+json")],
            Some(patient.to_string().as_bytes()),
        )
        .expect(201);
    assert_eq!(response.header("access-control-allow-origin"), Some(APP));
    assert!(response.header("location").is_some());
    let response = server.request("GET", "/Patient/does-not-exist", &[("origin", APP)], None).expect(404);
    assert_eq!(response.header("access-control-allow-origin"), Some(APP));

    // Another origin gets the response, but nothing that lets a browser hand it to the script.
    let response = server.request("GET", "/metadata", &[("origin", "https://evil.example")], None).expect(200);
    assert_eq!(response.header("access-control-allow-origin"), None);
    assert_eq!(response.header("access-control-expose-headers"), None);
    // A request without `Origin` (not from a browser) still tells caches the answer depends on it.
    let response = server.get("/metadata").expect(200);
    assert_eq!(response.header("access-control-allow-origin"), None);
    assert!(vary_has_origin(&response));
}

#[test]
fn any_origin_is_answered_with_a_star() {
    let server = server(&["--cors-origin", "*"]);
    let response = server.request("GET", "/metadata", &[("origin", APP)], None).expect(200);
    assert_eq!(response.header("access-control-allow-origin"), Some("*"));
    let response = preflight(&server, "/Patient", "https://anyone.example", "DELETE", None).expect(204);
    assert_eq!(response.header("access-control-allow-origin"), Some("*"));
}

#[test]
fn without_cors_configured_there_are_no_cors_headers() {
    let server = server(&[]);
    let response = server.request("GET", "/metadata", &[("origin", APP)], None).expect(200);
    assert!(
        !response.headers.iter().any(|(k, _)| k.starts_with("access-control-")),
        "no CORS headers: {:?}",
        response.headers
    );
    // `OPTIONS` goes to the router as any other method it does not serve.
    let response = preflight(&server, "/Patient", APP, "GET", None);
    assert_ne!(response.status, 204);
    assert!(!response.headers.iter().any(|(k, _)| k.starts_with("access-control-")));
}

#[test]
fn invalid_cors_settings_refuse_to_start() {
    let refused = |args: &[&str], env: &[(&str, &str)]| {
        let base = ["--http", "--listen", "127.0.0.1:0", "--auth", "none"];
        crate::harness::serve_refused(&[&base[..], args].concat(), env)
    };
    let stderr = refused(&["--cors-origin", "*", "--cors-allow-credentials"], &[]);
    assert!(stderr.contains("credentials") && stderr.contains("'*'"), "{stderr}");
    let stderr = refused(&[], &[("FHIRSIDE_CORS_ORIGINS", "*"), ("FHIRSIDE_CORS_ALLOW_CREDENTIALS", "true")]);
    assert!(stderr.contains("credentials"), "{stderr}");
    // The environment variable is a comma-separated list: each origin is checked on its own.
    let stderr = refused(&[], &[("FHIRSIDE_CORS_ORIGINS", "https://app.example,app.example")]);
    assert!(stderr.contains("'app.example'"), "{stderr}");
    let stderr = refused(&["--cors-origin", "https://app.example/fhir"], &[]);
    assert!(stderr.contains("https://app.example/fhir"), "{stderr}");
}

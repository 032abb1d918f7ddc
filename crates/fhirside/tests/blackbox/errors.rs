//! Bad input of every kind gets an OperationOutcome with the right 4xx, and nothing is stored.

use serde_json::json;

use crate::harness::Server;

/// Method, path, body, expected status, expected issue code.
type Case<'a> = (&'a str, &'a str, Option<&'a [u8]>, u16, &'a str);

#[test]
fn bad_requests_get_operation_outcomes() {
    let server = Server::start_http();
    let json_ct = [("content-type", "application/fhir+json")];
    let cases: Vec<Case> = vec![
        ("GET", "/Foo/1", None, 400, "not-supported"),
        ("POST", "/Foo", Some(b"{}"), 400, "not-supported"),
        ("GET", "/Patient/1/_history/1/extra", None, 404, "not-found"),
        ("GET", "/no/such/route/here/at/all", None, 404, "not-found"),
        ("POST", "/Patient", Some(b"{not json"), 400, "structure"),
        ("POST", "/Patient", Some(b"[1,2]"), 400, "structure"),
        ("POST", "/Patient", Some(b""), 400, "invalid"),
        (
            "POST",
            "/Patient",
            Some(br#"{"resourceType":"Observation","status":"final","code":{"text":"x"}}"#),
            400,
            "invalid",
        ),
        ("POST", "/Patient", Some(br#"{"active":true}"#), 400, "required"),
        ("POST", "/Patient", Some(br#"{"resourceType":"Patient","activ":true}"#), 400, "structure"),
        ("POST", "/Patient", Some(br#"{"resourceType":"Patient","birthDate":"1970-13-01"}"#), 400, "value"),
        ("PATCH", "/Patient/1/_history", Some(b"[]"), 405, "not-supported"),
        ("GET", "/Patient/%FF", None, 400, "invalid"),
        ("GET", "/Patient/%FF/_history/1", None, 400, "invalid"),
        ("POST", "/Patient/1", Some(b"{}"), 405, "not-supported"),
    ];
    for (method, path, body, status, code) in cases {
        let response = server.request(method, path, &json_ct, body);
        assert_eq!(response.status, status, "{method} {path}: {}", String::from_utf8_lossy(&response.body));
        let outcome = response.json();
        assert_eq!(outcome["resourceType"], "OperationOutcome", "{method} {path}");
        assert_eq!(outcome["issue"][0]["code"], code, "{method} {path}: {outcome}");
        assert_eq!(outcome["id"].as_str(), response.header("x-request-id"), "the outcome id is the request id");
    }
    // None of that stored anything.
    let history = server.get("/_history").expect(200).json();
    assert!(history.get("entry").is_none(), "{history}");
}

#[test]
fn oversize_bodies_are_refused() {
    let data = crate::harness::temp_dir("oversize");
    let server = Server::start_in(&data, &["--http", "--max-body-bytes", "1000"]);
    let big = json!({"resourceType": "Patient", "name": [{"text": "x".repeat(2000)}]});
    let response = server.post_json("/Patient", &big).expect(413);
    assert_eq!(response.json()["issue"][0]["code"], "too-costly");
    server.post_json("/Patient", &json!({"resourceType": "Patient"})).expect(201);
}

#[test]
fn correlation_and_security_headers() {
    let server = Server::start_http();
    let response = server.request("GET", "/metadata", &[("x-request-id", "client-123")], None).expect(200);
    assert_eq!(response.header("x-correlation-id"), Some("client-123"));
    assert_ne!(response.header("x-request-id"), Some("client-123"));
    assert_eq!(response.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(response.header("x-frame-options"), Some("SAMEORIGIN"));
}

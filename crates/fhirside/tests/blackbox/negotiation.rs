//! `Accept`, `_format`, `Content-Type` and `_pretty`.

use serde_json::json;

use crate::harness::Server;

#[test]
fn formats() {
    let server = Server::start_http();
    let body = json!({"resourceType": "Patient", "active": true}).to_string();
    let created = server.post_json("/Patient", &json!({"resourceType": "Patient", "active": true})).expect(201).json();
    let path = format!("/Patient/{}", created["id"].as_str().unwrap());

    let plain = server.request("GET", &path, &[("accept", "application/json")], None).expect(200);
    assert_eq!(plain.header("content-type"), Some("application/json; charset=utf-8"));
    let xml = server.request("GET", &path, &[("accept", "application/fhir+xml")], None).expect(406);
    assert_eq!(xml.json()["resourceType"], "OperationOutcome");
    server.get(&format!("{path}?_format=xml")).expect(406);
    server.get(&format!("{path}?_format=json")).expect(200);
    server.request("GET", &path, &[("accept", "application/fhir+xml")], None).expect(406);

    let pretty = server.get(&format!("{path}?_pretty=true")).expect(200);
    assert!(String::from_utf8(pretty.body.clone()).unwrap().contains("\n  \"resourceType\""));
    assert_eq!(pretty.json(), created);

    server.request("POST", "/Patient", &[("content-type", "application/fhir+xml")], Some(body.as_bytes())).expect(415);
    server.request("POST", "/Patient", &[("content-type", "text/plain")], Some(body.as_bytes())).expect(415);
    server.request("POST", "/Patient", &[("content-type", "application/json")], Some(body.as_bytes())).expect(201);
}

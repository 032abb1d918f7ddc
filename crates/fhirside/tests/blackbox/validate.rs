//! `$validate` at type and instance level.

use serde_json::json;

use crate::harness::Server;

#[test]
fn validate_reports_without_storing() {
    let server = Server::start_http();
    let good = json!({"resourceType": "Patient", "gender": "male"});
    let ok = server.post_json("/Patient/$validate", &good).expect(200).json();
    assert_eq!(ok["issue"][0]["severity"], "information");

    let bad = json!({"resourceType": "Patient", "gender": "man", "foo": 1});
    let outcome = server.post_json("/Patient/$validate", &bad).expect(200).json();
    let issues = outcome["issue"].as_array().unwrap();
    assert!(issues.iter().any(|i| i["expression"][0] == "Patient.foo"), "{outcome}");
    assert!(issues.iter().any(|i| i["expression"][0] == "Patient.gender"), "{outcome}");

    let parameters = json!({"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": bad}, {"name": "mode", "valueCode": "create"}]});
    let via_parameters = server.post_json("/Patient/$validate", &parameters).expect(200).json();
    assert!(via_parameters["issue"].as_array().unwrap().len() >= 2);

    // Instance level: the id must match for an update.
    let update =
        server.post_json("/Patient/abc/$validate", &json!({"resourceType": "Patient", "id": "xyz"})).expect(200).json();
    assert!(update["issue"][0]["diagnostics"].as_str().unwrap().contains("'abc'"));
    let delete = json!({"resourceType": "Parameters", "parameter": [{"name": "mode", "valueCode": "delete"}]});
    let missing = server.post_json("/Patient/abc/$validate", &delete).expect(200).json();
    assert_eq!(missing["issue"][0]["code"], "not-found");

    server.post_json("/Patient/$validate", &json!({"resourceType": "Observation"})).expect(400);
    assert!(server.get("/_history").json().get("entry").is_none(), "$validate stores nothing");
}

//! PATCH with JSON Patch, on an instance and conditionally.

use serde_json::json;

use crate::harness::Server;

const JSON_PATCH: (&str, &str) = ("content-type", "application/json-patch+json");

#[test]
fn json_patch_updates_validates_and_locks() {
    let server = Server::start_http();
    let created = server
        .post_json(
            "/Patient",
            &json!({"resourceType": "Patient", "active": true, "identifier": [{"system": "urn:p", "value": "1"}],
                                       "name": [{"family": "Old"}]}),
        )
        .expect(201)
        .json();
    let path = format!("/Patient/{}", created["id"].as_str().unwrap());
    let patch = json!([{"op": "replace", "path": "/name/0/family", "value": "New"},
                       {"op": "add", "path": "/gender", "value": "female"},
                       {"op": "remove", "path": "/active"}]);
    let patched = server.request("PATCH", &path, &[JSON_PATCH], Some(patch.to_string().as_bytes())).expect(200);
    assert_eq!(patched.header("etag"), Some("W/\"2\""));
    let body = patched.json();
    assert_eq!(body["name"][0]["family"], "New");
    assert_eq!(body["gender"], "female");
    assert!(body.get("active").is_none());
    assert_eq!(server.get(&path).json(), body);

    // If-Match against the patched version.
    let again = json!([{"op": "replace", "path": "/gender", "value": "male"}]).to_string();
    server.request("PATCH", &path, &[JSON_PATCH, ("if-match", "W/\"1\"")], Some(again.as_bytes())).expect(412);
    server.request("PATCH", &path, &[JSON_PATCH, ("if-match", "W/\"2\"")], Some(again.as_bytes())).expect(200);

    // A result that is not a valid Patient, a failed test, a changed id: 422, nothing stored.
    let invalid = json!([{"op": "add", "path": "/gender", "value": "robot"}]).to_string();
    let refused = server.request("PATCH", &path, &[JSON_PATCH], Some(invalid.as_bytes())).expect(422);
    assert_eq!(refused.json()["issue"][0]["expression"][0], "Patient.gender");
    let failed_test = json!([{"op": "test", "path": "/gender", "value": "female"}]).to_string();
    server.request("PATCH", &path, &[JSON_PATCH], Some(failed_test.as_bytes())).expect(422);
    let new_id = json!([{"op": "replace", "path": "/id", "value": "other"}]).to_string();
    server.request("PATCH", &path, &[JSON_PATCH], Some(new_id.as_bytes())).expect(422);
    assert_eq!(server.get(&path).header("etag"), Some("W/\"3\""));

    // Malformed patches and media types.
    server.request("PATCH", &path, &[JSON_PATCH], Some(b"{\"op\":\"add\"}")).expect(400);
    server.request("PATCH", &path, &[JSON_PATCH], Some(b"[{\"op\":\"fly\",\"path\":\"/a\"}]")).expect(400);
    server.request("PATCH", &path, &[("content-type", "text/plain")], Some(b"[]")).expect(415);
    server.request("PATCH", "/Patient/missing", &[JSON_PATCH], Some(b"[]")).expect(404);
}

#[test]
fn conditional_patch() {
    let server = Server::start_http();
    server
        .post_json("/Patient", &json!({"resourceType": "Patient", "identifier": [{"system": "urn:p", "value": "c"}]}))
        .expect(201);
    let patch = json!([{"op": "add", "path": "/active", "value": true}]).to_string();
    let patched =
        server.request("PATCH", "/Patient?identifier=urn:p|c", &[JSON_PATCH], Some(patch.as_bytes())).expect(200);
    assert_eq!(patched.json()["active"], true);
    server.request("PATCH", "/Patient?identifier=urn:p|none", &[JSON_PATCH], Some(patch.as_bytes())).expect(404);
    server
        .post_json("/Patient", &json!({"resourceType": "Patient", "identifier": [{"system": "urn:p", "value": "c"}]}))
        .expect(201);
    server.request("PATCH", "/Patient?identifier=urn:p|c", &[JSON_PATCH], Some(patch.as_bytes())).expect(412);
    let deleted = server.post_json("/Patient", &json!({"resourceType": "Patient"})).expect(201).json();
    let path = format!("/Patient/{}", deleted["id"].as_str().unwrap());
    server.delete(&path).expect(204);
    server.request("PATCH", &path, &[JSON_PATCH], Some(patch.as_bytes())).expect(410);
}

#[test]
fn fhirpath_patch() {
    let server = Server::start_http();
    let created = server
        .post_json("/Patient", &json!({"resourceType": "Patient", "name": [{"family": "A", "given": ["x", "y"]}]}))
        .expect(201)
        .json();
    let path = format!("/Patient/{}", created["id"].as_str().unwrap());
    let parameters = json!({"resourceType": "Parameters", "parameter": [
        {"name": "operation", "part": [{"name": "type", "valueCode": "replace"},
            {"name": "path", "valueString": "Patient.name[0].family"}, {"name": "value", "valueString": "B"}]},
        {"name": "operation", "part": [{"name": "type", "valueCode": "delete"},
            {"name": "path", "valueString": "Patient.name[0].given[0]"}]}]});
    let patched = server
        .request("PATCH", &path, &[("content-type", "application/fhir+json")], Some(parameters.to_string().as_bytes()))
        .expect(200)
        .json();
    assert_eq!(patched["name"][0]["family"], "B");
    assert_eq!(patched["name"][0]["given"], json!(["y"]));
    let not_parameters = json!({"resourceType": "Patient"}).to_string();
    server
        .request("PATCH", &path, &[("content-type", "application/fhir+json")], Some(not_parameters.as_bytes()))
        .expect(400);
    let bad_path = json!({"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
        {"name": "type", "valueCode": "replace"}, {"name": "path", "valueString": "Patient.nothing"},
        {"name": "value", "valueString": "B"}]}]})
    .to_string();
    let refused =
        server.request("PATCH", &path, &[("content-type", "application/fhir+json")], Some(bad_path.as_bytes()));
    assert_eq!(refused.status, 422, "replace needs exactly one match: {}", String::from_utf8_lossy(&refused.body));
}

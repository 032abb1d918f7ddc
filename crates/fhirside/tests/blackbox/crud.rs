//! create, read, vread, update, delete and their headers.

use serde_json::json;

use crate::harness::{without_server_meta, Server};

fn patient() -> serde_json::Value {
    json!({"resourceType": "Patient", "active": true, "name": [{"family": "Chalmers", "given": ["Peter", "James"]}],
           "identifier": [{"system": "urn:test", "value": "crud-1"}], "birthDate": "1974-12-25"})
}

#[test]
fn resource_lifecycle() {
    let server = Server::start();
    let created = server.post_json("/Patient", &patient()).expect(201);
    let body = created.json();
    let id = body["id"].as_str().unwrap().to_owned();
    assert_eq!(body["meta"]["versionId"], "1");
    assert_eq!(created.header("etag"), Some("W/\"1\""));
    assert!(created.header("last-modified").unwrap().ends_with(" GMT"));
    assert_eq!(created.header("location").unwrap(), format!("{}/Patient/{id}/_history/1", server.base));
    assert!(created.header("x-ms-request-charge").unwrap().parse::<u64>().unwrap() > 0);
    assert!(created.header("x-request-id").is_some());
    assert_eq!(created.header("content-type"), Some("application/fhir+json; charset=utf-8"));
    assert_eq!(without_server_meta(body.clone()).as_object().unwrap().len(), patient().as_object().unwrap().len() + 1);

    let read = server.get(&format!("/Patient/{id}")).expect(200);
    assert_eq!(read.json(), body, "read returns what create returned");
    assert_eq!(read.header("etag"), Some("W/\"1\""));

    let mut changed = body.clone();
    changed["active"] = json!(false);
    let updated = server.put_json(&format!("/Patient/{id}"), &changed).expect(200);
    assert_eq!(updated.header("etag"), Some("W/\"2\""));
    assert_eq!(updated.json()["active"], false);
    assert!(updated.header("location").is_none());

    // Optimistic locking.
    let stale = server.request(
        "PUT",
        &format!("/Patient/{id}"),
        &[("content-type", "application/fhir+json"), ("if-match", "W/\"1\"")],
        Some(changed.to_string().as_bytes()),
    );
    assert_eq!(stale.status, 412);
    assert!(stale.diagnostics().contains("'1' did not match"), "{}", stale.diagnostics());
    server
        .request(
            "PUT",
            &format!("/Patient/{id}"),
            &[("content-type", "application/fhir+json"), ("if-match", "W/\"2\"")],
            Some(changed.to_string().as_bytes()),
        )
        .expect(200);

    let v1 = server.get(&format!("/Patient/{id}/_history/1")).expect(200);
    assert_eq!(v1.json()["active"], true);
    server.get(&format!("/Patient/{id}/_history/9")).expect(404);
    server.get(&format!("/Patient/{id}/_history/x")).expect(404);

    let deleted = server.delete(&format!("/Patient/{id}")).expect(204);
    assert_eq!(deleted.header("etag"), Some("W/\"4\""));
    let gone = server.get(&format!("/Patient/{id}")).expect(410);
    assert_eq!(gone.header("etag"), Some("W/\"4\""));
    assert_eq!(gone.json()["issue"][0]["code"], "deleted");
    server.get(&format!("/Patient/{id}/_history/4")).expect(410);
    server.get(&format!("/Patient/{id}/_history/3")).expect(200);
    // Deleting again changes nothing.
    server.delete(&format!("/Patient/{id}")).expect(204);
    server.get(&format!("/Patient/{id}/_history/5")).expect(404);

    // Updating a deleted resource brings it back as a new version: a create.
    let revived = server.put_json(&format!("/Patient/{id}"), &changed).expect(201);
    assert_eq!(revived.header("etag"), Some("W/\"5\""));
}

#[test]
fn update_as_create_and_id_rules() {
    let server = Server::start_http();
    let mut p = patient();
    p["id"] = json!("chosen-id.1");
    let created = server.put_json("/Patient/chosen-id.1", &p).expect(201);
    assert_eq!(created.header("location").unwrap(), format!("{}/Patient/chosen-id.1/_history/1", server.base));

    p["id"] = json!("other");
    let mismatch = server.put_json("/Patient/chosen-id.1", &p).expect(400);
    assert!(mismatch.diagnostics().contains("does not match"));
    let mut no_id = patient();
    no_id.as_object_mut().unwrap().remove("id");
    server.put_json("/Patient/chosen-id.1", &no_id).expect(400);
    let mut bad = patient();
    bad["id"] = json!("bad_id!");
    server.put_json("/Patient/bad_id!", &bad).expect(400);

    // The server assigns ids on create, whatever the body says.
    let mut with_id = patient();
    with_id["id"] = json!("ignored");
    let created = server.post_json("/Patient", &with_id).expect(201);
    assert_ne!(created.json()["id"], "ignored");
    server.get("/Patient/never-there").expect(404);
}

#[test]
fn prefer_return() {
    let server = Server::start_http();
    let minimal = server
        .request(
            "POST",
            "/Patient",
            &[("content-type", "application/fhir+json"), ("prefer", "return=minimal")],
            Some(patient().to_string().as_bytes()),
        )
        .expect(201);
    assert!(minimal.body.is_empty());
    assert!(minimal.header("location").is_some());
    assert_eq!(minimal.header("etag"), Some("W/\"1\""));
    let outcome = server
        .request(
            "POST",
            "/Patient",
            &[("content-type", "application/fhir+json"), ("prefer", "return=OperationOutcome")],
            Some(patient().to_string().as_bytes()),
        )
        .expect(201);
    assert_eq!(outcome.json()["resourceType"], "OperationOutcome");
    server
        .request(
            "POST",
            "/Patient",
            &[("content-type", "application/fhir+json"), ("prefer", "return=everything")],
            Some(patient().to_string().as_bytes()),
        )
        .expect(400);
}

#[test]
fn conditional_read_headers() {
    let server = Server::start_http();
    let created = server.post_json("/Patient", &patient()).expect(201);
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let path = format!("/Patient/{id}");
    let not_modified = server.request("GET", &path, &[("if-none-match", "W/\"1\"")], None).expect(304);
    assert!(not_modified.body.is_empty());
    assert_eq!(not_modified.header("etag"), Some("W/\"1\""));
    server.request("GET", &path, &[("if-none-match", "W/\"2\"")], None).expect(200);
    let last_modified = created.header("last-modified").unwrap().to_owned();
    server.request("GET", &path, &[("if-modified-since", &last_modified)], None).expect(304);
    server.request("GET", &path, &[("if-modified-since", "Mon, 01 Jan 2001 00:00:00 GMT")], None).expect(200);
}

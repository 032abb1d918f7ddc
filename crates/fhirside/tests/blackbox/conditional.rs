//! Conditional create, update and delete.

use serde_json::json;

use crate::harness::Server;

fn patient(value: &str) -> serde_json::Value {
    json!({"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": value}]})
}

#[test]
fn conditional_create() {
    let server = Server::start_http();
    let headers = [("content-type", "application/fhir+json"), ("if-none-exist", "identifier=urn:mrn|c1")];
    let first = server.request("POST", "/Patient", &headers, Some(patient("c1").to_string().as_bytes())).expect(201);
    let again = server.request("POST", "/Patient", &headers, Some(patient("c1").to_string().as_bytes())).expect(200);
    assert_eq!(first.json()["id"], again.json()["id"]);
    // A full URL-style criterion works too.
    server
        .request(
            "POST",
            "/Patient",
            &[("content-type", "application/fhir+json"), ("if-none-exist", "Patient?identifier=c1")],
            Some(patient("c1").to_string().as_bytes()),
        )
        .expect(200);
    // Two matches: 412 and nothing stored.
    server.post_json("/Patient", &patient("c1")).expect(201);
    let ambiguous =
        server.request("POST", "/Patient", &headers, Some(patient("c1").to_string().as_bytes())).expect(412);
    assert!(ambiguous.diagnostics().contains("not selective enough"));
    // Unknown parameters in a condition are refused, not ignored.
    server
        .request(
            "POST",
            "/Patient",
            &[("content-type", "application/fhir+json"), ("if-none-exist", "nonsense=1")],
            Some(patient("c2").to_string().as_bytes()),
        )
        .expect(400);
}

#[test]
fn concurrent_conditional_creates_make_one_resource() {
    let server = Server::start_http();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let mut client = server.client();
            std::thread::spawn(move || {
                client
                    .request(
                        "POST",
                        "/Patient",
                        &[("content-type", "application/fhir+json"), ("if-none-exist", "identifier=urn:mrn|race")],
                        Some(patient("race").to_string().as_bytes()),
                    )
                    .status
            })
        })
        .collect();
    let statuses: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 7, "{statuses:?}");
    let found = server.get("/Patient?identifier=urn:mrn|race").expect(200).json();
    assert_eq!(found["entry"].as_array().unwrap().len(), 1);
}

#[test]
fn conditional_update() {
    let server = Server::start_http();
    // No match: created.
    let created = server.put_json("/Patient?identifier=urn:mrn|u1", &patient("u1")).expect(201);
    let id = created.json()["id"].as_str().unwrap().to_owned();
    // One match: updated in place.
    let mut changed = patient("u1");
    changed["active"] = json!(true);
    let updated = server.put_json("/Patient?identifier=urn:mrn|u1", &changed).expect(200);
    assert_eq!(updated.json()["id"], id.as_str());
    assert_eq!(updated.header("etag"), Some("W/\"2\""));
    // A body id that disagrees with the match is refused.
    changed["id"] = json!("someone-else");
    server.put_json("/Patient?identifier=urn:mrn|u1", &changed).expect(400);
    // Several matches: 412.
    server.post_json("/Patient", &patient("u1")).expect(201);
    server.put_json("/Patient?identifier=urn:mrn|u1", &patient("u1")).expect(412);
    // No criteria at all.
    server.put_json("/Patient?_format=json", &patient("u1")).expect(412);
}

#[test]
fn conditional_delete() {
    let server = Server::start_http();
    for _ in 0..3 {
        server.post_json("/Patient", &patient("d1")).expect(201);
    }
    let one = server.post_json("/Patient", &patient("d2")).expect(201).json();
    let deleted = server.delete("/Patient?identifier=urn:mrn|d2").expect(204);
    assert_eq!(deleted.header("items-deleted"), Some("1"));
    server.get(&format!("/Patient/{}", one["id"].as_str().unwrap())).expect(410);
    // More matches than allowed: nothing is deleted.
    let refused = server.delete("/Patient?identifier=urn:mrn|d1").expect(412);
    assert!(refused.diagnostics().contains("not selective enough"));
    assert_eq!(server.get("/Patient?identifier=d1").json()["entry"].as_array().unwrap().len(), 3);
    server.delete("/Patient?identifier=urn:mrn|d1&_count=2").expect(412);
    let all = server.delete("/Patient?identifier=urn:mrn|d1&_count=3").expect(204);
    assert_eq!(all.header("items-deleted"), Some("3"));
    assert!(server.get("/Patient?identifier=d1").json().get("entry").is_none());
    server.delete("/Patient?identifier=urn:mrn|none").expect(204);
    server.delete("/Patient?identifier=x&_count=101").expect(400);
}

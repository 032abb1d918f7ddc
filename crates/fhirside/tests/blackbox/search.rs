//! The search parameters the core indexes (`_id`, `identifier`, `_lastUpdated`) and paging.

use serde_json::json;

use crate::harness::{match_ids as ids, Server};

#[test]
fn search_by_id_identifier_and_last_updated() {
    let server = Server::start_http();
    let a = server
        .post_json(
            "/Patient",
            &json!({"resourceType": "Patient",
        "identifier": [{"system": "urn:a", "value": "1"}, {"system": "urn:b", "value": "2"}]}),
        )
        .expect(201)
        .json();
    let b = server
        .post_json(
            "/Patient",
            &json!({"resourceType": "Patient",
        "identifier": [{"value": "1"}]}),
        )
        .expect(201)
        .json();
    let a_id = a["id"].as_str().unwrap().to_owned();
    let b_id = b["id"].as_str().unwrap().to_owned();

    let bundle = server.get(&format!("/Patient?_id={a_id}")).expect(200).json();
    assert_eq!(bundle["type"], "searchset");
    assert_eq!(ids(&bundle), vec![a_id.clone()]);
    assert_eq!(ids(&server.get(&format!("/Patient?_id={a_id},{b_id}")).json()).len(), 2);
    assert_eq!(ids(&server.get("/Patient?identifier=1").json()).len(), 2);
    assert_eq!(ids(&server.get("/Patient?identifier=urn:a|1").json()), vec![a_id.clone()]);
    assert_eq!(ids(&server.get("/Patient?identifier=%7C1").json()), vec![b_id.clone()]);
    assert_eq!(ids(&server.get("/Patient?identifier=urn:b%7C").json()), vec![a_id.clone()]);
    assert!(ids(&server.get("/Patient?identifier=urn:b|1").json()).is_empty());
    assert_eq!(ids(&server.get("/Patient?_lastUpdated=gt2000-01-01").json()).len(), 2);
    assert!(ids(&server.get("/Patient?_lastUpdated=lt2000-01-01").json()).is_empty());
    // POST _search with a form body.
    let posted = server
        .request(
            "POST",
            "/Patient/_search",
            &[("content-type", "application/x-www-form-urlencoded")],
            Some(format!("_id={b_id}").as_bytes()),
        )
        .expect(200)
        .json();
    assert_eq!(ids(&posted), vec![b_id.clone()]);
    // Deleted resources are not found.
    server.delete(&format!("/Patient/{b_id}")).expect(204);
    assert_eq!(ids(&server.get("/Patient?identifier=1").json()), vec![a_id]);
}

#[test]
fn unknown_parameters_are_reported_or_refused() {
    let server = Server::start_http();
    let lenient = server.get("/Patient?foo=bar").expect(200).json();
    let outcome = lenient["entry"].as_array().unwrap().iter().find(|e| e["search"]["mode"] == "outcome").unwrap();
    assert!(outcome["resource"]["issue"][0]["diagnostics"].as_str().unwrap().contains("'foo'"));
    server.request("GET", "/Patient?foo=bar", &[("prefer", "handling=strict")], None).expect(400);
    server.get("/Patient?_lastUpdated=2020-99").expect(400);
}

#[test]
fn search_pages_with_next_links() {
    let server = Server::start_http();
    for i in 0..25 {
        server.post_json("/Basic", &json!({"resourceType": "Basic", "code": {"text": format!("b{i}")}})).expect(201);
    }
    let mut path = "/Basic?_count=10".to_owned();
    let mut total = 0;
    loop {
        let page = server.get(&path).expect(200).json();
        total += ids(&page).len();
        match page["link"].as_array().unwrap().iter().find(|l| l["relation"] == "next") {
            Some(next) => path = next["url"].as_str().unwrap().strip_prefix(&server.base).unwrap().to_owned(),
            None => break,
        }
    }
    assert_eq!(total, 25);
    assert_eq!(ids(&server.get("/Basic").json()).len(), 10, "the default page size is 10");
    server.get("/Basic?_count=abc").expect(400);
    server.get("/Basic?ct=garbage").expect(400);
}

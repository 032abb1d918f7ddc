//! Instance, type and system history with paging, `_since` and `_at`.

use serde_json::{json, Value};

use crate::harness::Server;

fn entries(bundle: &Value) -> Vec<Value> {
    bundle.get("entry").and_then(Value::as_array).cloned().unwrap_or_default()
}

fn next_path(bundle: &Value, base: &str) -> Option<String> {
    bundle["link"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["relation"] == "next")
        .map(|l| l["url"].as_str().unwrap().strip_prefix(base).unwrap().to_owned())
}

#[test]
fn instance_history_keeps_every_version() {
    let server = Server::start_http();
    let created = server
        .post_json(
            "/Observation",
            &json!({"resourceType": "Observation", "status": "preliminary",
        "code": {"text": "weight"}}),
        )
        .expect(201)
        .json();
    let id = created["id"].as_str().unwrap();
    let mut v2 = created.clone();
    v2["status"] = json!("final");
    server.put_json(&format!("/Observation/{id}"), &v2).expect(200);
    server.delete(&format!("/Observation/{id}")).expect(204);

    let history = server.get(&format!("/Observation/{id}/_history")).expect(200).json();
    assert_eq!(history["type"], "history");
    let e = entries(&history);
    assert_eq!(e.len(), 3);
    assert_eq!(e[0]["request"]["method"], "DELETE");
    assert!(e[0].get("resource").is_none());
    assert_eq!(e[0]["response"]["status"], "204");
    assert_eq!(e[1]["resource"]["status"], "final");
    assert_eq!(e[1]["response"]["etag"], "W/\"2\"");
    assert_eq!(e[2]["request"]["method"], "POST");
    assert_eq!(e[2]["response"]["status"], "201");
    assert_eq!(e[2]["fullUrl"], format!("{}/Observation/{id}", server.base));
}

#[test]
fn type_and_system_history_page_and_filter() {
    let server = Server::start_http();
    for i in 0..5 {
        server
            .post_json(
                "/Patient",
                &json!({"resourceType": "Patient", "gender": if i % 2 == 0 { "male" } else { "female" }}),
            )
            .expect(201);
    }
    let middle =
        server.post_json("/Organization", &json!({"resourceType": "Organization", "name": "Acme"})).expect(201);
    let middle_time = middle.json()["meta"]["lastUpdated"].as_str().unwrap().to_owned();
    std::thread::sleep(std::time::Duration::from_millis(5));
    server.post_json("/Organization", &json!({"resourceType": "Organization", "name": "Later"})).expect(201);

    let patients = server.get("/Patient/_history").expect(200).json();
    assert_eq!(entries(&patients).len(), 5);

    // System history, two per page, walked with `next` links.
    let mut path = "/_history?_count=2".to_owned();
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = server.get(&path).expect(200).json();
        pages += 1;
        let e = entries(&page);
        assert!(e.len() <= 2);
        seen.extend(e.iter().map(|e| e["fullUrl"].as_str().unwrap().to_owned()));
        match next_path(&page, &server.base) {
            Some(next) => path = next,
            None => break,
        }
    }
    assert_eq!(seen.len(), 7);
    assert_eq!(pages, 4);
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 7, "pages neither repeat nor skip");

    let since = server.get(&format!("/_history?_since={}", middle_time.replace('+', "%2B"))).expect(200).json();
    assert_eq!(entries(&since).len(), 2);
    server.get("/_history?_since=not-a-date").expect(400);
}

#[test]
fn history_at_a_point_in_time() {
    let server = Server::start_http();
    let created =
        server.post_json("/Patient", &json!({"resourceType": "Patient", "gender": "male"})).expect(201).json();
    let id = created["id"].as_str().unwrap();
    let first_time = created["meta"]["lastUpdated"].as_str().unwrap().to_owned();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let mut v2 = created.clone();
    v2["gender"] = json!("female");
    server.put_json(&format!("/Patient/{id}"), &v2).expect(200);
    // At the first version's second, only version 1 was current.
    let second = &first_time[..19];
    let at = server.get(&format!("/Patient/{id}/_history?_at={second}Z")).expect(200).json();
    let e = entries(&at);
    assert_eq!(e.len(), 1, "{at}");
    assert_eq!(e[0]["resource"]["meta"]["versionId"], "1");
}

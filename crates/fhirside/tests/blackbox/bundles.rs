//! Batch and transaction Bundles: atomicity, ordering, references, per-entry conditions, limits.

use serde_json::{json, Value};

use crate::harness::Server;

fn statuses(response: &Value) -> Vec<String> {
    response["entry"].as_array().unwrap().iter().map(|e| e["response"]["status"].as_str().unwrap().to_owned()).collect()
}

fn count(server: &Server, resource_type: &str) -> usize {
    server.get(&format!("/{resource_type}?_count=1000")).expect(200).json()["entry"].as_array().map_or(0, Vec::len)
}

#[test]
fn transaction_rewrites_references_and_answers_in_order() {
    let server = Server::start_http();
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a",
         "resource": {"resourceType": "Observation", "status": "final", "code": {"text": "weight"},
                      "subject": {"reference": "urn:uuid:88f151c0-a954-468a-88bd-5ae15c08e059"},
                      "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\"><a href=\"urn:uuid:88f151c0-a954-468a-88bd-5ae15c08e059\">patient</a></div>"}},
         "request": {"method": "POST", "url": "Observation"}},
        {"fullUrl": "urn:uuid:88f151c0-a954-468a-88bd-5ae15c08e059",
         "resource": {"resourceType": "Patient", "identifier": [{"system": "urn:t", "value": "tx1"}]},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Patient", "id": "fixed", "active": true},
         "request": {"method": "PUT", "url": "Patient/fixed"}},
        {"request": {"method": "GET", "url": "Patient?identifier=urn:t|tx1"}}
    ]});
    let response = server.post_json("/", &bundle).expect(200).json();
    assert_eq!(response["type"], "transaction-response");
    assert_eq!(statuses(&response), ["201 Created", "201 Created", "201 Created", "200 OK"]);
    let entries = response["entry"].as_array().unwrap();
    let observation = &entries[0]["resource"];
    let patient_id = entries[1]["resource"]["id"].as_str().unwrap();
    assert_eq!(observation["subject"]["reference"], format!("Patient/{patient_id}"));
    assert!(observation["text"]["div"].as_str().unwrap().contains(&format!("href=\"Patient/{patient_id}\"")));
    assert!(entries[1]["response"]["location"].as_str().unwrap().ends_with("/_history/1"));
    assert_eq!(entries[1]["response"]["etag"], "W/\"1\"");
    // The GET ran after the writes, inside the transaction.
    assert_eq!(entries[3]["resource"]["total"], 1);
    server.get(&format!("/Patient/{patient_id}")).expect(200);
}

#[test]
fn a_failed_transaction_stores_nothing() {
    let server = Server::start_http();
    server
        .post_json("/Patient", &json!({"resourceType": "Patient", "identifier": [{"system": "urn:t", "value": "dup"}]}))
        .expect(201);
    server
        .post_json("/Patient", &json!({"resourceType": "Patient", "identifier": [{"system": "urn:t", "value": "dup"}]}))
        .expect(201);
    let good = json!({"resource": {"resourceType": "Organization", "name": "A"}, "request": {"method": "POST", "url": "Organization"}});
    let cases = [
        // A conditional reference that matches nothing.
        (
            json!({"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                "subject": {"reference": "Patient?identifier=urn:t|nobody"}}, "request": {"method": "POST", "url": "Observation"}}),
            400,
        ),
        // One that matches two.
        (
            json!({"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                "subject": {"reference": "Patient?identifier=urn:t|dup"}}, "request": {"method": "POST", "url": "Observation"}}),
            412,
        ),
        // An invalid resource.
        (
            json!({"resource": {"resourceType": "Organization", "nam": "B"}, "request": {"method": "POST", "url": "Organization"}}),
            400,
        ),
        // A version conflict.
        (
            json!({"resource": {"resourceType": "Patient", "id": "nope"}, "request": {"method": "PUT", "url": "Patient/nope", "ifMatch": "W/\"3\""}}),
            412,
        ),
        // A read of something missing.
        (json!({"request": {"method": "GET", "url": "Patient/missing"}}), 404),
    ];
    for (bad, status) in cases {
        let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [good.clone(), bad]});
        let response = server.post_json("/", &bundle);
        assert_eq!(response.status, status, "{}", String::from_utf8_lossy(&response.body));
        assert!(
            response.diagnostics().contains("Bundle.entry[1]"),
            "the outcome names the entry: {}",
            response.diagnostics()
        );
        assert_eq!(count(&server, "Organization"), 0, "nothing of a failed transaction is stored");
    }
}

#[test]
fn transaction_conditions_and_duplicates() {
    let server = Server::start_http();
    let create = |value: &str| {
        json!({"resource": {"resourceType": "Patient", "identifier": [{"system": "urn:c", "value": value}]},
        "request": {"method": "POST", "url": "Patient", "ifNoneExist": format!("identifier=urn:c|{value}")}})
    };
    let first = server
        .post_json("/", &json!({"resourceType": "Bundle", "type": "transaction", "entry": [create("a")]}))
        .expect(200)
        .json();
    assert_eq!(statuses(&first), ["201 Created"]);
    let again = server
        .post_json("/", &json!({"resourceType": "Bundle", "type": "transaction", "entry": [create("a")]}))
        .expect(200)
        .json();
    assert_eq!(statuses(&again), ["200 OK"]);
    assert_eq!(first["entry"][0]["resource"]["id"], again["entry"][0]["resource"]["id"]);

    let put = json!({"resource": {"resourceType": "Patient", "id": "same"}, "request": {"method": "PUT", "url": "Patient/same"}});
    let duplicate =
        server.post_json("/", &json!({"resourceType": "Bundle", "type": "transaction", "entry": [put.clone(), put]}));
    assert_eq!(duplicate.expect(400).json()["issue"][0]["expression"][0], "Bundle.entry[1]");

    // Deletes run before creates whatever their place in the Bundle.
    server.put_json("/Patient/gone", &json!({"resourceType": "Patient", "id": "gone"})).expect(201);
    let ordered = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "GET", "url": "Patient/gone"}},
        {"request": {"method": "DELETE", "url": "Patient/gone"}}]});
    let response = server.post_json("/", &ordered).expect(410);
    assert!(response.diagnostics().contains("Bundle.entry[0]"));
}

#[test]
fn batch_entries_succeed_or_fail_alone() {
    let server = Server::start_http();
    server.put_json("/Patient/p1", &json!({"resourceType": "Patient", "id": "p1"})).expect(201);
    let bundle = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": {"resourceType": "Patient", "active": true}, "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Patient", "activ": true}, "request": {"method": "POST", "url": "Patient"}},
        {"request": {"method": "GET", "url": "Patient/p1"}},
        {"request": {"method": "GET", "url": "Patient/p1", "ifNoneMatch": "W/\"1\""}},
        {"request": {"method": "GET", "url": "Patient/none"}},
        {"request": {"method": "DELETE", "url": "Patient/p1"}},
        {"resource": {"resourceType": "Patient", "id": "p2"}, "request": {"method": "PUT", "url": "Patient/p2", "ifMatch": "W/\"7\""}},
        {"request": {"method": "PATCH", "url": "Nope/1"}}
    ]});
    let response = server.post_json("/", &bundle).expect(200).json();
    assert_eq!(response["type"], "batch-response");
    assert_eq!(
        statuses(&response),
        [
            "201 Created",
            "400 Bad Request",
            "200 OK",
            "304 Not Modified",
            "404 Not Found",
            "204 No Content",
            "412 Precondition Failed",
            "400 Bad Request"
        ]
    );
    let outcome = &response["entry"][1]["response"]["outcome"];
    assert_eq!(outcome["resourceType"], "OperationOutcome");
    assert!(
        outcome["issue"][0]["expression"][0].as_str().unwrap().starts_with("Bundle.entry[1].resource"),
        "{outcome}"
    );
    server.get("/Patient/p1").expect(410);
}

#[test]
fn malformed_and_oversized_bundles() {
    let data = crate::harness::temp_dir("bundle-limit");
    let server = Server::start_in(&data, &["--http", "--max-bundle-entries", "2"]);
    let entry = json!({"resource": {"resourceType": "Basic", "code": {"text": "x"}}, "request": {"method": "POST", "url": "Basic"}});
    let big =
        json!({"resourceType": "Bundle", "type": "batch", "entry": [entry.clone(), entry.clone(), entry.clone()]});
    let refused = server.post_json("/", &big).expect(400);
    assert!(refused.diagnostics().contains("configured limit of 2"));
    server.post_json("/", &json!({"resourceType": "Bundle", "type": "collection"})).expect(400);
    server.post_json("/", &json!({"resourceType": "Patient"})).expect(400);
    server.request("POST", "/", &[("content-type", "application/fhir+json")], Some(b"{oops")).expect(400);
    let no_request = json!({"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": {"resourceType": "Basic", "code": {"text": "x"}}}]});
    server.post_json("/", &no_request).expect(400);
    let elsewhere = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Basic", "code": {"text": "x"}}, "request": {"method": "POST", "url": "https://other.example/Basic"}}]});
    server.post_json("/", &elsewhere).expect(400);
    assert_eq!(count(&server, "Basic"), 0);
}

#[test]
fn concurrent_transactions_on_the_same_resources_lose_nothing() {
    let server = Server::start_http();
    server
        .put_json("/Basic/shared", &json!({"resourceType": "Basic", "id": "shared", "code": {"text": "0"}}))
        .expect(201);
    // Each transaction reads the shared resource's version and writes it back with If-Match;
    // clients retry on 412, so every increment must land exactly once.
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let mut client = server.client();
            std::thread::spawn(move || {
                for _ in 0..10 {
                    loop {
                        let current = client.request("GET", "/Basic/shared", &[], None).json();
                        let version = current["meta"]["versionId"].as_str().unwrap().to_owned();
                        let n: u64 = current["code"]["text"].as_str().unwrap().parse().unwrap();
                        let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
                            {"resource": {"resourceType": "Basic", "id": "shared", "code": {"text": (n + 1).to_string()}},
                             "request": {"method": "PUT", "url": "Basic/shared", "ifMatch": format!("W/\"{version}\"")}},
                            {"resource": {"resourceType": "Basic", "code": {"text": "log"}}, "request": {"method": "POST", "url": "Basic"}}]});
                        let response = client.request("POST", "/", &[("content-type", "application/fhir+json")], Some(bundle.to_string().as_bytes()));
                        match response.status {
                            200 => break,
                            412 => continue,
                            other => panic!("{other}: {}", String::from_utf8_lossy(&response.body)),
                        }
                    }
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    let shared = server.get("/Basic/shared").expect(200).json();
    assert_eq!(shared["code"]["text"], "40");
    assert_eq!(count(&server, "Basic"), 41, "every committed transaction wrote both entries");
}

#[test]
fn patch_entries_in_a_transaction() {
    let server = Server::start_http();
    server.put_json("/Patient/pp", &json!({"resourceType": "Patient", "id": "pp", "gender": "male"})).expect(201);
    server.put_json("/Patient/fp", &json!({"resourceType": "Patient", "id": "fp"})).expect(201);
    // `[{"op":"add","path":"/active","value":true}]`, base64 in a Binary.
    let json_patch = json!({"resourceType": "Binary", "contentType": "application/json-patch+json",
                            "data": "W3sib3AiOiJhZGQiLCJwYXRoIjoiL2FjdGl2ZSIsInZhbHVlIjp0cnVlfV0="});
    let fhirpath_patch = json!({"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
        {"name": "type", "valueCode": "add"}, {"name": "path", "valueString": "Patient"},
        {"name": "name", "valueString": "birthDate"}, {"name": "value", "valueDate": "1970-01-01"}]}]});
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": json_patch, "request": {"method": "PATCH", "url": "Patient/pp", "ifMatch": "W/\"1\""}},
        {"resource": fhirpath_patch, "request": {"method": "PATCH", "url": "Patient/fp"}}]});
    let response = server.post_json("/", &bundle).expect(200).json();
    assert_eq!(statuses(&response), ["200 OK", "200 OK"]);
    assert_eq!(server.get("/Patient/pp").json()["active"], true);
    assert_eq!(server.get("/Patient/fp").json()["birthDate"], "1970-01-01");

    let wrong = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Basic", "code": {"text": "x"}}, "request": {"method": "PATCH", "url": "Patient/pp"}}]});
    server.post_json("/", &wrong).expect(400);
}

#[test]
fn references_to_a_conditional_create_point_at_its_match() {
    let server = Server::start_http();
    let existing = server
        .post_json(
            "/Patient",
            &json!({"resourceType": "Patient", "identifier": [{"system": "urn:m", "value": "known"}]}),
        )
        .expect(201)
        .json();
    server
        .post_json(
            "/Organization",
            &json!({"resourceType": "Organization", "identifier": [{"system": "urn:o", "value": "org"}]}),
        )
        .expect(201);
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:0c4a1e3e-2a6e-4f4e-9d1b-5c3f0b8a7d11",
         "resource": {"resourceType": "Patient", "identifier": [{"system": "urn:m", "value": "known"}]},
         "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:m|known"}},
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                      "subject": {"reference": "urn:uuid:0c4a1e3e-2a6e-4f4e-9d1b-5c3f0b8a7d11"},
                      "performer": [{"reference": "Organization?identifier=urn:o|org"}]},
         "request": {"method": "POST", "url": "Observation"}}]});
    let response = server.post_json("/", &bundle).expect(200).json();
    assert_eq!(statuses(&response), ["200 OK", "201 Created"]);
    let observation = &response["entry"][1]["resource"];
    assert_eq!(observation["subject"]["reference"], format!("Patient/{}", existing["id"].as_str().unwrap()));
    assert!(observation["performer"][0]["reference"].as_str().unwrap().starts_with("Organization/"));
    // The rewritten references are indexed: the observation is found through them.
    let found =
        server.get(&format!("/Observation?subject=Patient/{}", existing["id"].as_str().unwrap())).expect(200).json();
    assert_eq!(found["entry"].as_array().map_or(0, Vec::len), 1);
    let everything =
        server.get(&format!("/Patient/{}/$everything", existing["id"].as_str().unwrap())).expect(200).json();
    let types: Vec<&str> = everything["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["resourceType"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["Patient", "Organization", "Observation"],
        "the patient, what its compartment refers to, and its compartment"
    );
}

#[test]
fn an_identifier_equal_to_a_full_url_is_kept_so_conditional_creates_match_again() {
    let server = Server::start_http();
    // As in Synthea, whose DocumentReference identifiers are `urn:uuid:`s of the Bundle (there, the
    // DiagnosticReport's fullUrl): R4 replaces fullUrls in references and uri-typed elements, not in strings.
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:5d3f2a64-1c1e-4a8e-9a51-1b6f0f3c2a01",
         "resource": {"resourceType": "Patient", "identifier": [{"system": "urn:t", "value": "doc-owner"}]},
         "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:t|doc-owner"}},
        {"fullUrl": "urn:uuid:5d3f2a64-1c1e-4a8e-9a51-1b6f0f3c2a02",
         "resource": {"resourceType": "DocumentReference", "status": "current",
                      "identifier": [{"system": "urn:ietf:rfc:3986", "value": "urn:uuid:5d3f2a64-1c1e-4a8e-9a51-1b6f0f3c2a02"}],
                      "subject": {"reference": "urn:uuid:5d3f2a64-1c1e-4a8e-9a51-1b6f0f3c2a01"},
                      "content": [{"attachment": {"contentType": "text/plain", "data": "bm90ZQ=="}}]},
         "request": {"method": "POST", "url": "DocumentReference",
                     "ifNoneExist": "identifier=urn:ietf:rfc:3986|urn:uuid:5d3f2a64-1c1e-4a8e-9a51-1b6f0f3c2a02"}}
    ]});
    let response = server.post_json("/", &bundle).expect(200).json();
    assert_eq!(statuses(&response), ["201 Created", "201 Created"]);
    let patient_id = response["entry"][0]["resource"]["id"].as_str().unwrap().to_owned();
    let document_id = response["entry"][1]["resource"]["id"].as_str().unwrap().to_owned();
    let stored = server.get(&format!("/DocumentReference/{document_id}")).expect(200).json();
    assert_eq!(stored["identifier"][0]["value"], "urn:uuid:5d3f2a64-1c1e-4a8e-9a51-1b6f0f3c2a02");
    assert_eq!(stored["subject"]["reference"], format!("Patient/{patient_id}"));

    let again = server.post_json("/", &bundle).expect(200).json();
    assert_eq!(statuses(&again), ["200 OK", "200 OK"], "both conditional creates match what the first one made");
    assert_eq!(again["entry"][1]["resource"]["id"], document_id.as_str());
    assert_eq!(count(&server, "DocumentReference"), 1);
    assert_eq!(count(&server, "Patient"), 1);
}

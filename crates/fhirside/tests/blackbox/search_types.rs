//! Search by every parameter type and modifier, chaining, `_has`, sorting with keyset paging both
//! ways, system-level search, `_summary`, full text, and custom SearchParameters with `$reindex`:
//! a small, hand-made data set whose expected matches are evident from the resources themselves.

use serde_json::{json, Value};

use crate::harness::{match_ids as matches, Server};

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

fn put(server: &Server, resource: Value) {
    let path = format!("/{}/{}", resource["resourceType"].as_str().unwrap(), resource["id"].as_str().unwrap());
    let response = server.put_json(&path, &resource);
    assert!(response.status == 201 || response.status == 200, "{path}: {}", response.diagnostics());
}

fn search(server: &Server, path: &str) -> Vec<String> {
    sorted(matches(&server.get(path).expect(200).json()))
}

fn ids(list: &[&str]) -> Vec<String> {
    sorted(list.iter().map(|s| (*s).to_owned()).collect())
}

fn load(server: &Server) {
    put(server, json!({"resourceType": "Organization", "id": "o1", "name": "General Hospital"}));
    put(server, json!({"resourceType": "Organization", "id": "o2", "name": "Clinic Süd"}));
    put(
        server,
        json!({"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1980-05-01",
        "name": [{"family": "Müller", "given": ["Anna"]}], "managingOrganization": {"reference": "Organization/o1"},
        "identifier": [{"system": "urn:mrn", "value": "m1",
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}}],
        "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Anna likes sailing</div>"}}),
    );
    put(
        server,
        json!({"resourceType": "Patient", "id": "p2", "gender": "male", "birthDate": "1975",
        "name": [{"family": "Mullins", "given": ["Bob"]}], "managingOrganization": {"reference": "Organization/o2"}}),
    );
    put(
        server,
        json!({"resourceType": "Patient", "id": "p3", "gender": "male",
        "name": [{"family": "Smith", "given": ["Carl"]}]}),
    );
    let observation = |id: &str, patient: &str, code: &str, value: f64, unit: &str, date: &str| {
        json!({"resourceType": "Observation", "id": id, "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": format!("Test {code}")}]},
            "subject": {"reference": format!("Patient/{patient}")}, "effectiveDateTime": date,
            "valueQuantity": {"value": value, "system": "http://unitsofmeasure.org", "code": unit, "unit": unit}})
    };
    put(server, observation("ob1", "p1", "2339-0", 95.0, "mg/dL", "2020-01-10T10:00:00Z"));
    put(server, observation("ob2", "p1", "2339-0", 1.3, "g/L", "2021-03-01T08:00:00Z"));
    put(server, observation("ob3", "p2", "2339-0", 200.0, "mg/dL", "2019-07-15"));
    put(server, observation("ob4", "p3", "8302-2", 180.0, "cm", "2020-01-10"));
    put(
        server,
        json!({"resourceType": "Observation", "id": "bp1", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
        "subject": {"reference": "Patient/p2"},
        "component": [
            {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
             "valueQuantity": {"value": 150, "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
            {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
             "valueQuantity": {"value": 70, "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}]}),
    );
    put(
        server,
        json!({"resourceType": "RiskAssessment", "id": "r1", "status": "final",
        "subject": {"reference": "Patient/p1"}, "prediction": [{"probabilityDecimal": 0.25}]}),
    );
    put(server, json!({"resourceType": "Location", "id": "l1", "position": {"latitude": 52.52, "longitude": 13.40}}));
    put(server, json!({"resourceType": "Location", "id": "l2", "position": {"latitude": 48.14, "longitude": 11.58}}));
    put(
        server,
        json!({"resourceType": "ValueSet", "id": "v1", "status": "active",
        "url": "http://example.org/fhir/ValueSet/colors"}),
    );
}

#[test]
fn every_parameter_type_and_modifier() {
    let server = Server::start_http();
    load(&server);
    // string: starts-with, case- and accent-insensitive; :exact; :contains; :missing
    assert_eq!(search(&server, "/Patient?family=mul"), ids(&["p1", "p2"]));
    assert_eq!(search(&server, "/Patient?name=ANNA"), ids(&["p1"]));
    assert_eq!(search(&server, "/Patient?family:exact=Müller"), ids(&["p1"]));
    assert_eq!(search(&server, "/Patient?family:exact=muller"), ids(&[]));
    assert_eq!(search(&server, "/Patient?family:contains=LLI"), ids(&["p2"]));
    assert_eq!(search(&server, "/Organization?name=clinic%20sud"), ids(&["o2"]));
    // token: :not, :text, :in, :of-type, :missing
    assert_eq!(search(&server, "/Patient?gender:not=male"), ids(&["p1"]));
    assert_eq!(search(&server, "/Observation?code:text=test%208302"), ids(&["ob4"]));
    assert_eq!(
        search(&server, "/Patient?gender:in=http://hl7.org/fhir/ValueSet/administrative-gender"),
        ids(&["p1", "p2", "p3"])
    );
    assert_eq!(
        search(&server, "/Patient?identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|m1"),
        ids(&["p1"])
    );
    assert_eq!(search(&server, "/Patient?birthdate:missing=true"), ids(&["p3"]));
    assert_eq!(search(&server, "/Patient?birthdate:missing=false"), ids(&["p1", "p2"]));
    // date: precision ranges and prefixes
    assert_eq!(search(&server, "/Patient?birthdate=1980"), ids(&["p1"]));
    assert_eq!(search(&server, "/Patient?birthdate=lt1979"), ids(&["p2"]));
    assert_eq!(search(&server, "/Observation?date=2020-01-10"), ids(&["ob1", "ob4"]));
    assert_eq!(search(&server, "/Observation?date=ge2020&date=lt2021"), ids(&["ob1", "ob4"]));
    // number, with the precision of the search value
    assert_eq!(search(&server, "/RiskAssessment?probability=0.25"), ids(&["r1"]));
    assert_eq!(search(&server, "/RiskAssessment?probability=gt0.3"), ids(&[]));
    assert_eq!(search(&server, "/RiskAssessment?probability=ap0.24"), ids(&["r1"]));
    // quantity: with and without units; UCUM canonical comparison across mg/dL and g/L
    assert_eq!(search(&server, "/Observation?value-quantity=gt150"), ids(&["ob3", "ob4"]));
    assert_eq!(
        search(&server, "/Observation?value-quantity=gt100|http://unitsofmeasure.org|mg/dL"),
        ids(&["ob2", "ob3"]),
        "1.3 g/L is 130 mg/dL"
    );
    assert_eq!(search(&server, "/Observation?value-quantity=180||cm"), ids(&["ob4"]));
    // composite: both components on the same element
    assert_eq!(
        search(&server, "/Observation?component-code-value-quantity=http://loinc.org|8480-6$gt140"),
        ids(&["bp1"])
    );
    assert_eq!(search(&server, "/Observation?component-code-value-quantity=http://loinc.org|8462-4$gt140"), ids(&[]));
    // reference, uri, special
    assert_eq!(search(&server, "/Observation?subject=Patient/p1"), ids(&["ob1", "ob2"]));
    assert_eq!(search(&server, "/Observation?patient=p2&code=85354-9"), ids(&["bp1"]));
    assert_eq!(search(&server, "/ValueSet?url=http://example.org/fhir/ValueSet/colors"), ids(&["v1"]));
    assert_eq!(search(&server, "/ValueSet?url:below=http://example.org/fhir"), ids(&["v1"]));
    assert_eq!(search(&server, "/Location?near=52.5|13.4|10|km"), ids(&["l1"]));
    // malformed values are 400s with an OperationOutcome
    for bad in [
        "/Patient?birthdate=notadate",
        "/Patient?birthdate=xx1980",
        "/RiskAssessment?probability=high",
        "/Observation?value-quantity=5|mg",
        "/Observation?component-code-value-quantity=8480-6",
        "/Patient?family:below=x",
        "/Patient?gender:in=http://example.org/nope",
        "/Location?near=north",
    ] {
        let response = server.get(bad).expect(400);
        assert_eq!(response.json()["resourceType"], "OperationOutcome", "{bad}");
    }
}

#[test]
fn chains_reverse_chains_and_includes() {
    let server = Server::start_http();
    load(&server);
    assert_eq!(search(&server, "/Observation?subject:Patient.family=mul"), ids(&["ob1", "ob2", "ob3", "bp1"]));
    assert_eq!(search(&server, "/Observation?subject.gender=female"), ids(&["ob1", "ob2"]));
    assert_eq!(search(&server, "/Observation?subject:Patient.organization.name=general"), ids(&["ob1", "ob2"]));
    assert_eq!(search(&server, "/Patient?_has:Observation:patient:code=8302-2"), ids(&["p3"]));
    assert_eq!(
        search(&server, "/Organization?_has:Patient:organization:_has:Observation:patient:code=85354-9"),
        ids(&["o2"])
    );
    server.get("/Observation?code.name=x").expect(400);
    let bundle = server
        .get("/Observation?code=2339-0&_include=Observation:subject&_revinclude=RiskAssessment:subject")
        .expect(200)
        .json();
    let included: Vec<String> = sorted(
        bundle["entry"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["search"]["mode"] == "include")
            .map(|e| {
                format!("{}/{}", e["resource"]["resourceType"].as_str().unwrap(), e["resource"]["id"].as_str().unwrap())
            })
            .collect(),
    );
    assert_eq!(included, ["Patient/p1", "Patient/p2"], "revinclude of RiskAssessment applies to the Observations");
    let iterated = server
        .get("/Observation?code=2339-0&_include=Observation:subject&_include:iterate=Patient:organization")
        .expect(200)
        .json();
    let kinds: Vec<&str> = iterated["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["search"]["mode"] == "include")
        .map(|e| e["resource"]["resourceType"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.iter().filter(|k| **k == "Organization").count(), 2, "{kinds:?}");
}

#[test]
fn sort_and_page_both_ways() {
    let server = Server::start_http();
    load(&server);
    let order = |path: &str| matches(&server.get(path).expect(200).json());
    assert_eq!(order("/Patient?_sort=birthdate"), ["p2", "p1", "p3"], "missing values last");
    assert_eq!(order("/Patient?_sort=-birthdate"), ["p1", "p2", "p3"]);
    assert_eq!(order("/Patient?_sort=family"), ["p1", "p2", "p3"]);
    assert_eq!(order("/Observation?code=2339-0&_sort=-date"), ["ob2", "ob1", "ob3"]);
    assert_eq!(order("/Observation?_sort=date&_count=2"), ["ob3", "ob4"]);
    assert_eq!(order("/Patient?_sort=gender,-_id"), ["p1", "p3", "p2"]);
    server.get("/Patient?_sort=nonsense").expect(400);

    // Walk forward two at a time, then back: every match once each way, in order.
    let mut forward = Vec::new();
    let mut bundle = server.get("/Observation?_sort=-date&_count=2").expect(200).json();
    assert!(link(&bundle, "previous").is_none());
    loop {
        forward.extend(matches(&bundle));
        match link(&bundle, "next") {
            Some(next) => bundle = server.get(&path_of(&next)).expect(200).json(),
            None => break,
        }
    }
    // Descending by the end of each date's range: the day 2020-01-10 ends after 10:00 that day.
    assert_eq!(forward, ["ob2", "ob4", "ob1", "ob3", "bp1"]);
    let mut backward = Vec::new();
    loop {
        let mut page = matches(&bundle);
        page.extend(backward);
        backward = page;
        match link(&bundle, "previous") {
            Some(previous) => bundle = server.get(&path_of(&previous)).expect(200).json(),
            None => break,
        }
    }
    assert_eq!(backward, forward);
    server.get("/Observation?_sort=-date&ct=garbage").expect(400);
}

fn link(bundle: &Value, relation: &str) -> Option<String> {
    bundle["link"].as_array()?.iter().find(|l| l["relation"] == relation).map(|l| l["url"].as_str().unwrap().to_owned())
}

fn path_of(url: &str) -> String {
    let start = url.find("://").map(|i| i + 3).unwrap_or(0);
    url[start..].find('/').map(|i| url[start + i..].to_owned()).unwrap()
}

#[test]
fn system_search_summary_text_and_lists() {
    let server = Server::start_http();
    load(&server);
    assert_eq!(search(&server, "/?_type=Patient,Organization&_id=p1,o2"), ids(&["o2", "p1"]));
    let counted = server.get("/?_type=Patient,Organization&_summary=count").expect(200).json();
    assert_eq!(counted["total"], 5);
    assert_eq!(search(&server, "/Patient?_text=sailing"), ids(&["p1"]));
    assert_eq!(search(&server, "/Patient?_content=smith"), ids(&["p3"]));
    assert_eq!(search(&server, "/?_content=mullins"), ids(&["p2"]));
    let summary = server.get("/Patient?_id=p1&_summary=true").expect(200).json();
    let patient = &summary["entry"][0]["resource"];
    assert!(patient.get("text").is_none() && patient.get("name").is_some() && patient.get("gender").is_some());
    assert!(patient["meta"]["tag"].as_array().unwrap().iter().any(|t| t["code"] == "SUBSETTED"));
    let data = server.get("/Patient?_id=p1&_summary=data").expect(200).json();
    assert!(data["entry"][0]["resource"].get("text").is_none());
    let text = server.get("/Patient?_id=p1&_summary=text").expect(200).json();
    assert!(text["entry"][0]["resource"].get("text").is_some());
    assert!(text["entry"][0]["resource"].get("name").is_none());
    put(
        &server,
        json!({"resourceType": "List", "id": "list1", "status": "current", "mode": "working",
        "entry": [{"item": {"reference": "Patient/p2"}}, {"item": {"reference": "Patient/p3"}}]}),
    );
    assert_eq!(search(&server, "/Patient?_list=list1"), ids(&["p2", "p3"]));
    assert_eq!(search(&server, "/Patient?_list=list1&gender=female"), ids(&[]));
}

#[test]
fn custom_search_parameter_after_reindex() {
    let mut server = Server::start_http();
    load(&server);
    server.get("/Patient?nickname=bobby").expect(200); // unknown: ignored under lenient handling
    put(
        &server,
        json!({"resourceType": "Patient", "id": "p4",
        "name": [{"use": "nickname", "given": ["Bobby"]}, {"use": "official", "family": "Roberts"}]}),
    );
    put(
        &server,
        json!({"resourceType": "SearchParameter", "id": "nickname", "url": "http://example.org/sp/nickname",
        "name": "nickname", "status": "active", "description": "A patient's nickname", "code": "nickname",
        "base": ["Patient"], "type": "string", "expression": "Patient.name.where(use = 'nickname').given"}),
    );
    let started = server.post_json("/$reindex", &json!({"resourceType": "Parameters"})).expect(201);
    let location = started.header("content-location").unwrap().to_owned();
    let mut status = String::new();
    for _ in 0..200 {
        let job = server.get(&path_of(&location)).expect(200).json();
        status = job["parameter"].as_array().unwrap().iter().find(|p| p["name"] == "status").unwrap()["valueString"]
            .as_str()
            .unwrap()
            .to_owned();
        if status != "Queued" && status != "Running" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(status, "Completed");
    // Cancelling a job that ended leaves it as it ended; an unknown job is 404.
    let cancelled = server.delete(&path_of(&location)).expect(200).json();
    assert!(cancelled["parameter"].as_array().unwrap().iter().any(|p| p["valueString"] == "Completed"));
    server.delete("/_operations/reindex/no-such-job").expect(404);
    server.delete("/Patient/p4/_history").expect(405);
    let strict = [("prefer", "handling=strict")];
    let response = server.request("GET", "/Patient?nickname=bob", &strict, None).expect(200);
    assert_eq!(matches(&response.json()), ["p4"]);
    let statement = server.get("/metadata").expect(200).json();
    let patient =
        statement["rest"][0]["resource"].as_array().unwrap().iter().find(|r| r["type"] == "Patient").unwrap().clone();
    assert!(patient["searchParam"].as_array().unwrap().iter().any(|p| p["name"] == "nickname"));

    // The parameter survives a restart, and so do the index rows built for it.
    server.restart();
    let response = server.request("GET", "/Patient?nickname=bob", &strict, None).expect(200);
    assert_eq!(matches(&response.json()), ["p4"]);
    put(&server, json!({"resourceType": "Patient", "id": "p5", "name": [{"use": "nickname", "given": ["Bobbie"]}]}));
    let response = server.request("GET", "/Patient?nickname=bob", &strict, None).expect(200);
    assert_eq!(sorted(matches(&response.json())), ["p4", "p5"]);
}

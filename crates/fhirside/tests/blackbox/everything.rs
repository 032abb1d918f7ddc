//! `Patient/$everything`, compartment search, and token/reference search parameters.

use serde_json::{json, Value};

use crate::harness::Server;

fn ids(bundle: &Value) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            format!("{}/{}", e["resource"]["resourceType"].as_str().unwrap(), e["resource"]["id"].as_str().unwrap())
        })
        .collect()
}

fn create(server: &Server, resource: Value) -> String {
    let created =
        server.post_json(&format!("/{}", resource["resourceType"].as_str().unwrap()), &resource).expect(201).json();
    format!("{}/{}", created["resourceType"].as_str().unwrap(), created["id"].as_str().unwrap())
}

#[test]
fn everything_returns_the_compartment_and_what_it_refers_to() {
    let server = Server::start_http();
    let doctor = create(&server, json!({"resourceType": "Practitioner", "name": [{"family": "Who"}]}));
    let patient = create(&server, json!({"resourceType": "Patient", "generalPractitioner": [{"reference": doctor}]}));
    let other = create(&server, json!({"resourceType": "Patient"}));
    let encounter = create(
        &server,
        json!({"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"},
        "subject": {"reference": patient}}),
    );
    let weight = create(
        &server,
        json!({"resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]}, "subject": {"reference": patient},
        "encounter": {"reference": encounter}}),
    );
    let height = create(
        &server,
        json!({"resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]}, "subject": {"reference": patient}}),
    );
    create(
        &server,
        json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "subject": {"reference": other}}),
    );

    let everything = server.get(&format!("/{patient}/$everything")).expect(200).json();
    assert_eq!(everything["type"], "searchset");
    let mut found = ids(&everything);
    found.sort();
    let mut expected = vec![patient.clone(), doctor.clone(), encounter.clone(), weight.clone(), height.clone()];
    expected.sort();
    assert_eq!(found, expected);

    let only = server.get(&format!("/{patient}/$everything?_type=Observation")).expect(200).json();
    assert_eq!(ids(&only).len(), 2);
    // Paging walks every resource exactly once.
    let mut path = format!("/{patient}/$everything?_count=2");
    let mut paged = Vec::new();
    loop {
        let page = server.get(&path).expect(200).json();
        paged.extend(ids(&page));
        match page["link"].as_array().unwrap().iter().find(|l| l["relation"] == "next") {
            Some(next) => path = next["url"].as_str().unwrap().strip_prefix(&server.base).unwrap().to_owned(),
            None => break,
        }
    }
    paged.sort();
    assert_eq!(paged, expected);
    assert!(ids(&server.get(&format!("/{patient}/$everything?_since=2999-01-01")).json()).is_empty());
    // Type level: every patient's.
    assert_eq!(ids(&server.get("/Patient/$everything?_type=Patient").json()).len(), 2);
    server.get("/Patient/nobody/$everything").expect(404);
    server.get(&format!("/{patient}/$everything?_type=Nope")).expect(400);
    server.get("/Observation/x/$everything").expect(400);
    server.delete(&format!("/{other}")).expect(204);
    server.get(&format!("/{other}/$everything")).expect(410);
}

#[test]
fn token_reference_and_compartment_search() {
    let server = Server::start_http();
    let patient = create(&server, json!({"resourceType": "Patient", "gender": "female", "active": true}));
    let patient_id = patient.split('/').nth(1).unwrap().to_owned();
    create(&server, json!({"resourceType": "Patient", "gender": "male"}));
    let weight = create(
        &server,
        json!({"resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]}, "subject": {"reference": patient}}),
    );
    create(
        &server,
        json!({"resourceType": "Observation", "status": "amended",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]}, "subject": {"reference": patient}}),
    );

    assert_eq!(ids(&server.get("/Patient?gender=female").json()), std::slice::from_ref(&patient));
    assert_eq!(ids(&server.get("/Patient?active=true").json()), std::slice::from_ref(&patient));
    assert_eq!(ids(&server.get("/Observation?code=http://loinc.org|29463-7").json()), std::slice::from_ref(&weight));
    assert_eq!(ids(&server.get("/Observation?code=29463-7").json()), std::slice::from_ref(&weight));
    assert!(ids(&server.get("/Observation?code=http://snomed.info/sct|29463-7").json()).is_empty());
    assert_eq!(ids(&server.get("/Observation?status=final,amended").json()).len(), 2);
    assert_eq!(ids(&server.get(&format!("/Observation?subject={patient}")).json()).len(), 2);
    assert_eq!(ids(&server.get(&format!("/Observation?subject:Patient={patient_id}")).json()).len(), 2);
    assert_eq!(
        ids(&server.get(&format!("/Observation?patient={patient_id}")).json()).len(),
        2,
        "patient has one target type"
    );
    assert_eq!(
        ids(&server.get(&format!("/Observation?subject={}{patient}", server.base.clone() + "/")).json()).len(),
        2
    );
    assert_eq!(
        ids(&server.get(&format!("/Observation?subject={patient}&code=29463-7")).json()),
        std::slice::from_ref(&weight)
    );
    server.get("/Observation?subject=Nope/1").expect(400);

    // Compartment search.
    assert_eq!(ids(&server.get(&format!("/{patient}/Observation")).json()).len(), 2);
    assert_eq!(ids(&server.get(&format!("/{patient}/Observation?code=8302-2")).json()).len(), 1);
    assert!(ids(&server.get("/Patient/other/Observation").json()).is_empty());
    server.get(&format!("/{patient}/Organization")).expect(400);
}

#[test]
fn totals_summary_count_and_includes() {
    let server = Server::start_http();
    let org = create(&server, json!({"resourceType": "Organization", "name": "Clinic"}));
    let patient = create(&server, json!({"resourceType": "Patient", "managingOrganization": {"reference": org}}));
    let weight = create(
        &server,
        json!({"resourceType": "Observation", "status": "final", "code": {"text": "w"},
        "subject": {"reference": patient}}),
    );
    let height = create(
        &server,
        json!({"resourceType": "Observation", "status": "final", "code": {"text": "h"},
        "subject": {"reference": patient}}),
    );

    let total = server.get("/Observation?_total=accurate&_count=1").expect(200).json();
    assert_eq!(total["total"], 2);
    assert_eq!(total["entry"].as_array().unwrap().len(), 1);
    assert!(server.get("/Observation").json().get("total").is_none(), "no total unless asked");
    for path in ["/Observation?_summary=count", "/Observation?_count=0"] {
        let counted = server.get(path).expect(200).json();
        assert_eq!(counted["total"], 2, "{path}");
        assert!(counted.get("entry").is_none(), "{path}");
    }
    server.get("/Observation?_total=maybe").expect(400);
    server.get("/Observation?_summary=maybe").expect(400);

    let modes = |bundle: &Value| -> Vec<(String, String)> {
        bundle["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["search"]["mode"].as_str().unwrap().to_owned(),
                    format!(
                        "{}/{}",
                        e["resource"]["resourceType"].as_str().unwrap(),
                        e["resource"]["id"].as_str().unwrap()
                    ),
                )
            })
            .collect()
    };
    let included = server.get("/Observation?_include=Observation:subject").expect(200).json();
    assert_eq!(
        modes(&included),
        [("match".into(), weight.clone()), ("match".into(), height.clone()), ("include".into(), patient.clone())]
    );
    let typed = server.get("/Observation?_include=Observation:subject:Group").expect(200).json();
    assert_eq!(typed["entry"].as_array().unwrap().len(), 2, "no Group subjects");
    let all = server
        .get(&format!("/Patient?_id={}&_include=Patient:*", patient.split('/').nth(1).unwrap()))
        .expect(200)
        .json();
    assert_eq!(modes(&all), [("match".into(), patient.clone()), ("include".into(), org.clone())]);
    let reverse = server
        .get(&format!("/Patient?_id={}&_revinclude=Observation:subject", patient.split('/').nth(1).unwrap()))
        .expect(200)
        .json();
    assert_eq!(
        modes(&reverse),
        [("match".into(), patient.clone()), ("include".into(), weight.clone()), ("include".into(), height.clone())]
    );
    server.get("/Observation?_include=Observation:code").expect(400);
    server.get("/Observation?_include=Nope:subject").expect(400);
}

#[test]
fn elements_return_a_marked_subset() {
    let server = Server::start_http();
    create(
        &server,
        json!({"resourceType": "Observation", "status": "final", "code": {"text": "w"},
        "valueQuantity": {"value": 72.5, "unit": "kg"}, "issued": "2020-01-01T00:00:00Z"}),
    );
    let bundle = server.get("/Observation?_elements=status,value").expect(200).json();
    let resource = &bundle["entry"][0]["resource"];
    let mut keys: Vec<&str> = resource.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["id", "meta", "resourceType", "status", "valueQuantity"]);
    assert_eq!(resource["valueQuantity"]["value"], json!(72.5));
    let tags = resource["meta"]["tag"].as_array().unwrap();
    assert!(tags.iter().any(|t| t["code"] == "SUBSETTED"));
    server.get("/Observation?_elements=nonsense").expect(400);
    server.get("/Observation?_elements=code.text").expect(400);
}

#[test]
fn date_search_follows_precision_and_prefixes() {
    let server = Server::start_http();
    let born = create(&server, json!({"resourceType": "Patient", "birthDate": "1974-12-25"}));
    let younger = create(&server, json!({"resourceType": "Patient", "birthDate": "1980"}));
    let count = |query: &str| ids(&server.get(&format!("/Patient?{query}")).expect(200).json());
    assert_eq!(count("birthdate=1974-12-25"), std::slice::from_ref(&born));
    assert_eq!(count("birthdate=1974"), std::slice::from_ref(&born), "a year contains the day");
    assert_eq!(count("birthdate=1974-12"), std::slice::from_ref(&born));
    assert!(count("birthdate=1974-12-25T10:00:00Z").is_empty(), "a second does not contain a whole day");
    assert_eq!(count("birthdate=1980"), std::slice::from_ref(&younger));
    assert!(count("birthdate=1980-06").is_empty(), "a month does not contain the whole of 1980");
    assert_eq!(count("birthdate=gt1975"), std::slice::from_ref(&younger));
    assert_eq!(count("birthdate=lt1975"), std::slice::from_ref(&born));
    assert_eq!(count("birthdate=ge1974-12-25").len(), 2);
    assert_eq!(count("birthdate=le1974-12-25"), std::slice::from_ref(&born));
    assert_eq!(count("birthdate=sa1975"), std::slice::from_ref(&younger));
    assert_eq!(count("birthdate=eb1975"), std::slice::from_ref(&born));
    assert_eq!(count("birthdate=ne1974-12-25"), std::slice::from_ref(&younger));
    assert_eq!(count("birthdate=1974,1980").len(), 2, "values are OR-ed");
    assert!(count("birthdate=ge1970&birthdate=lt1975").contains(&born), "parameters are AND-ed");
    server.get("/Patient?birthdate=notadate").expect(400);
    server.get("/Patient?birthdate=xx2020").expect(400);

    // Periods: an encounter still open contains neither bound's complement.
    let open = create(
        &server,
        json!({"resourceType": "Encounter", "status": "in-progress", "class": {"code": "AMB"},
        "period": {"start": "2020-01-01T10:00:00Z"}}),
    );
    let closed = create(
        &server,
        json!({"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"},
        "period": {"start": "2019-03-01", "end": "2019-03-02"}}),
    );
    let encounters = |query: &str| ids(&server.get(&format!("/Encounter?{query}")).expect(200).json());
    assert_eq!(encounters("date=2019-03"), std::slice::from_ref(&closed));
    assert_eq!(encounters("date=gt2021"), std::slice::from_ref(&open), "an open end extends past any date");
    assert_eq!(encounters("date=lt2019-06"), std::slice::from_ref(&closed));
    assert!(encounters("date=2020").is_empty(), "an open period is not contained in 2020");
}

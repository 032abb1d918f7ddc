//! SMART on FHIR scopes on the FHIR API: each scope form against each interaction, inside and
//! outside the patient's compartment, for a caller holding the FHIR SMART User role; includes,
//! chains, `$everything` and Bundles; and the discovery document.
//!
//! Tokens are signed with the built-in authority's key, carrying the claims a SMART launch puts in
//! them (`scp`, `patient`, `fhirUser`); the launch itself is covered by `smart_app` and `authority`.

use serde_json::{json, Value};

use crate::harness::{jwt_claims, match_ids, Server};

const FHIR_JSON: &str = "application/fhir+json";
const CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/observation-category";
const PROBE: &str = "http://loinc.org|probe-1";

/// Two patients, each with Observations (one laboratory, one vital signs for A), a practitioner.
struct World {
    a: String,
    b: String,
    /// A's laboratory Observation, A's vital-signs Observation, B's laboratory Observation.
    a_lab: String,
    a_vital: String,
    b_lab: String,
    practitioner: String,
}

fn observation(patient: &str, category: &str, code: &str) -> Value {
    json!({
        "resourceType": "Observation", "status": "final",
        "category": [{"coding": [{"system": CATEGORY, "code": category}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": format!("Patient/{patient}")},
    })
}

fn create(server: &Server, token: &str, resource: &Value) -> String {
    let path = format!("/{}", resource["resourceType"].as_str().unwrap());
    let created = server.request_as(token, "POST", &path, Some((FHIR_JSON, resource))).expect(201);
    created.json()["id"].as_str().unwrap().to_owned()
}

fn world(server: &Server, admin: &str) -> World {
    let patient = |family: &str| json!({"resourceType": "Patient", "name": [{"family": family, "given": ["Test"]}]});
    let a = create(server, admin, &patient("Alpha"));
    let b = create(server, admin, &patient("Bravo"));
    World {
        a_lab: create(server, admin, &observation(&a, "laboratory", "probe-1")),
        a_vital: create(server, admin, &observation(&a, "vital-signs", "probe-1")),
        b_lab: create(server, admin, &observation(&b, "laboratory", "probe-1")),
        practitioner: create(server, admin, &json!({"resourceType": "Practitioner", "name": [{"family": "Who"}]})),
        a,
        b,
    }
}

/// A token like `template` (a real one from the authority) with SMART claims.
fn smart_token(
    server: &Server,
    template: &Value,
    scope: &str,
    patient: Option<&str>,
    fhir_user: Option<&str>,
) -> String {
    let mut claims = template.clone();
    claims["scp"] = json!(scope);
    if let Some(patient) = patient {
        claims["patient"] = json!(patient);
    }
    if let Some(user) = fhir_user {
        claims["fhirUser"] = json!(format!("{}/{user}", server.base));
    }
    server.sign_token(&claims)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// Read A's laboratory Observation.
    ReadIn,
    /// Read B's laboratory Observation.
    ReadOut,
    /// Read A's vital-signs Observation.
    ReadVital,
    /// Read Patient A.
    ReadPatient,
    /// Read the practitioner (in nobody's compartment).
    ReadPractitioner,
    /// `Observation?code=probe-1`: the number of matches.
    Search,
    CreateIn,
    CreateOut,
    UpdateIn,
    UpdateOut,
    DeleteIn,
    DeleteOut,
    CreatePractitioner,
}

use Op::*;

const OPS: [Op; 13] = [
    ReadIn,
    ReadOut,
    ReadVital,
    ReadPatient,
    ReadPractitioner,
    Search,
    CreateIn,
    CreateOut,
    UpdateIn,
    UpdateOut,
    DeleteIn,
    DeleteOut,
    CreatePractitioner,
];

/// A scope case: the token's `scp`, whether it carries patient A as context, and the expected
/// status per [`OPS`] (for `Search`, the number of matches, or 403).
struct Case {
    scope: &'static str,
    patient: bool,
    fhir_user: Option<&'static str>,
    expected: [u16; 13],
}

const F: u16 = 403;
const N: u16 = 404;

#[rustfmt::skip]
const CASES: &[Case] = &[
    //                                                                      rIn  rOut rVit rPat rPrac srch cIn  cOut uIn  uOut dIn  dOut cPrac
    Case { scope: "launch/patient patient/*.read", patient: true, fhir_user: None,
           expected:                                                       [200, N,   200, 200, 200, 2,   F,   F,   F,   F,   F,   F,   F] },
    Case { scope: "patient/Observation.read", patient: true, fhir_user: None,
           expected:                                                       [200, N,   200, F,   F,   2,   F,   F,   F,   F,   F,   F,   F] },
    Case { scope: "patient/Observation.rs", patient: true, fhir_user: None,
           expected:                                                       [200, N,   200, F,   F,   2,   F,   F,   F,   F,   F,   F,   F] },
    Case { scope: "patient/Observation.r", patient: true, fhir_user: None,
           expected:                                                       [200, N,   200, F,   F,   F,   F,   F,   F,   F,   F,   F,   F] },
    Case { scope: "patient/Observation.cruds patient/Practitioner.c", patient: true, fhir_user: None,
           expected:                                                       [200, N,   200, F,   F,   2,   201, F,   200, F,   204, F,   F] },
    Case { scope: "patient/*.write", patient: true, fhir_user: None,
           expected:                                                       [F,   F,   F,   F,   F,   F,   201, F,   200, F,   204, F,   F] },
    Case { scope: "patient/*.*", patient: true, fhir_user: None,
           expected:                                                       [200, N,   200, 200, 200, 2,   201, F,   200, F,   204, F,   F] },
    // Granular: laboratory Observations only.
    Case { scope: "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory",
           patient: true, fhir_user: None,
           expected:                                                       [200, N,   N,   F,   F,   1,   F,   F,   F,   F,   F,   F,   F] },
    Case { scope: "patient/Observation.cruds?category=laboratory", patient: true, fhir_user: None,
           expected:                                                       [200, N,   N,   F,   F,   1,   201, F,   200, F,   204, F,   F] },
    // As apps registered in Entra ID spell them.
    Case { scope: "patient.Observation.read patient%2FPatient.read", patient: true, fhir_user: None,
           expected:                                                       [200, N,   200, 200, F,   2,   F,   F,   F,   F,   F,   F,   F] },
    // No patient in context: patient/ scopes reach nothing.
    Case { scope: "patient/*.read", patient: false, fhir_user: Some("Practitioner/x"),
           expected:                                                       [F,   F,   F,   F,   F,   F,   F,   F,   F,   F,   F,   F,   F] },
    // A patient signed in as themselves: fhirUser gives the context.
    Case { scope: "patient/*.read", patient: false, fhir_user: Some("Patient/A"),
           expected:                                                       [200, N,   200, 200, 200, 2,   F,   F,   F,   F,   F,   F,   F] },
    // A clinician: user/ scopes reach everything of their types.
    Case { scope: "user/Observation.read", patient: false, fhir_user: Some("Practitioner/x"),
           expected:                                                       [200, 200, 200, F,   F,   3,   F,   F,   F,   F,   F,   F,   F] },
    Case { scope: "user/*.cruds", patient: false, fhir_user: Some("Practitioner/x"),
           expected:                                                       [200, 200, 200, 200, 200, 3,   201, 201, 200, 200, 204, 204, 201] },
    // A patient user's user/ scopes stay in their compartment.
    Case { scope: "user/*.read", patient: false, fhir_user: Some("Patient/A"),
           expected:                                                       [200, N,   200, 200, 200, 2,   F,   F,   F,   F,   F,   F,   F] },
    // Backend services.
    Case { scope: "system/*.read", patient: false, fhir_user: None,
           expected:                                                       [200, 200, 200, 200, 200, 3,   F,   F,   F,   F,   F,   F,   F] },
    Case { scope: "system/Observation.rs", patient: false, fhir_user: None,
           expected:                                                       [200, 200, 200, F,   F,   3,   F,   F,   F,   F,   F,   F,   F] },
    // Scopes that are not clinical grant nothing.
    Case { scope: "openid fhirUser launch/patient", patient: true, fhir_user: None,
           expected:                                                       [F,   F,   F,   F,   F,   F,   F,   F,   F,   F,   F,   F,   F] },
];

/// Runs `op`; returns the status (for `Search`, the number of matches when `200`).
fn perform(server: &Server, admin: &str, token: &str, w: &World, op: Op) -> (u16, String) {
    let fresh = |patient: &str| create(server, admin, &observation(patient, "laboratory", "probe-2"));
    let response = match op {
        ReadIn => server.request_as(token, "GET", &format!("/Observation/{}", w.a_lab), None),
        ReadOut => server.request_as(token, "GET", &format!("/Observation/{}", w.b_lab), None),
        ReadVital => server.request_as(token, "GET", &format!("/Observation/{}", w.a_vital), None),
        ReadPatient => server.request_as(token, "GET", &format!("/Patient/{}", w.a), None),
        ReadPractitioner => server.request_as(token, "GET", &format!("/Practitioner/{}", w.practitioner), None),
        Search => {
            let response = server.request_as(token, "GET", &format!("/Observation?code={PROBE}&_count=50"), None);
            if response.status == 200 {
                let ids = match_ids(&response.json());
                return (ids.len() as u16, format!("{ids:?}"));
            }
            response
        }
        CreateIn => server.request_as(
            token,
            "POST",
            "/Observation",
            Some((FHIR_JSON, &observation(&w.a, "laboratory", "probe-3"))),
        ),
        CreateOut => server.request_as(
            token,
            "POST",
            "/Observation",
            Some((FHIR_JSON, &observation(&w.b, "laboratory", "probe-3"))),
        ),
        UpdateIn | UpdateOut => {
            let patient = if op == UpdateIn { &w.a } else { &w.b };
            let id = fresh(patient);
            let mut body = observation(patient, "laboratory", "probe-2");
            body["id"] = json!(id);
            body["status"] = json!("amended");
            server.request_as(token, "PUT", &format!("/Observation/{id}"), Some((FHIR_JSON, &body)))
        }
        DeleteIn | DeleteOut => {
            let id = fresh(if op == DeleteIn { &w.a } else { &w.b });
            server.request_as(token, "DELETE", &format!("/Observation/{id}"), None)
        }
        CreatePractitioner => server.request_as(
            token,
            "POST",
            "/Practitioner",
            Some((FHIR_JSON, &json!({"resourceType": "Practitioner", "name": [{"family": "New"}]}))),
        ),
    };
    let text = String::from_utf8_lossy(&response.body).chars().take(300).collect();
    (response.status, text)
}

fn setup() -> (Server, String, Value, World) {
    let server = Server::start_secure(&[]);
    let (admin_id, admin_secret, _) = server.create_app("Setup", &["FHIR Data Contributor"]);
    let admin = server.token(&admin_id, &admin_secret);
    let (smart_id, smart_secret, _) = server.create_app("SMART app", &["FHIR SMART User"]);
    let template = jwt_claims(&server.token(&smart_id, &smart_secret));
    let world = world(&server, &admin);
    (server, admin, template, world)
}

#[test]
fn each_scope_form_against_each_interaction_inside_and_outside_the_compartment() {
    let (server, admin, template, w) = setup();
    let mut failures = Vec::new();
    for case in CASES {
        let fhir_user = case.fhir_user.map(|u| u.replace("Patient/A", &format!("Patient/{}", w.a)));
        let patient = case.patient.then_some(w.a.as_str());
        let token = smart_token(&server, &template, case.scope, patient, fhir_user.as_deref());
        for (op, expected) in OPS.iter().zip(case.expected) {
            let (got, body) = perform(&server, &admin, &token, &w, *op);
            if got != expected {
                failures.push(format!(
                    "{} (patient {}, fhirUser {:?}) / {op:?}: expected {expected}, got {got}: {body}",
                    case.scope, case.patient, case.fhir_user
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{} mismatches:\n  {}", failures.len(), failures.join("\n  "));
}

#[test]
fn a_refusal_says_which_scope_is_missing() {
    let (server, _, template, w) = setup();
    let token = smart_token(&server, &template, "patient/Observation.rs", Some(&w.a), None);
    let refused = server.request_as(&token, "GET", &format!("/Condition?patient={}", w.a), None).expect(403);
    let outcome = refused.json();
    assert_eq!(outcome["issue"][0]["code"], "forbidden");
    let diagnostics = outcome["issue"][0]["diagnostics"].as_str().unwrap();
    assert!(diagnostics.contains("search on Condition"), "{diagnostics}");

    let token = smart_token(&server, &template, "patient/*.read", None, None);
    let refused = server.request_as(&token, "GET", "/Observation", None).expect(403);
    let diagnostics = refused.json()["issue"][0]["diagnostics"].as_str().unwrap().to_owned();
    assert!(diagnostics.contains("need a patient in context"), "{diagnostics}");

    // A malformed clinical scope is the token's fault: 400, naming it.
    let token = smart_token(&server, &template, "patient/Unicorn.read", Some(&w.a), None);
    let refused = server.request_as(&token, "GET", "/Observation", None).expect(400);
    assert!(refused.diagnostics().contains("patient/Unicorn.read"), "{}", refused.diagnostics());
}

#[test]
fn includes_chains_and_everything_stay_in_the_compartment() {
    let (server, admin, template, w) = setup();
    let token = smart_token(&server, &template, "patient/*.read", Some(&w.a), None);
    let get = |path: &str| server.request_as(&token, "GET", path, None).expect(200).json();
    let entries = |bundle: &Value, mode: &str| -> Vec<String> {
        bundle["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["search"]["mode"] == mode)
            .map(|e| {
                format!("{}/{}", e["resource"]["resourceType"].as_str().unwrap(), e["resource"]["id"].as_str().unwrap())
            })
            .collect()
    };

    // `_include` follows references only into what the scopes reach.
    let bundle = get("/Observation?_include=Observation:subject&_count=50");
    let mut included = entries(&bundle, "include");
    included.sort();
    assert_eq!(included, [format!("Patient/{}", w.a)]);
    assert!(!entries(&bundle, "match").contains(&format!("Observation/{}", w.b_lab)));

    // `_revinclude` from Patient: A's Observations, never B's, and B itself is not a match.
    let bundle = get("/Patient?_revinclude=Observation:subject&_count=50");
    assert_eq!(entries(&bundle, "match"), [format!("Patient/{}", w.a)]);
    let mut revincluded = entries(&bundle, "include");
    revincluded.sort();
    let mut expected = vec![format!("Observation/{}", w.a_lab), format!("Observation/{}", w.a_vital)];
    expected.sort();
    assert_eq!(revincluded, expected);

    // A chain into another patient finds nothing; `_has` sees only A's Observations.
    assert!(match_ids(&get("/Observation?subject:Patient.family=Bravo")).is_empty());
    assert_eq!(match_ids(&get("/Observation?subject:Patient.family=Alpha&_count=50")).len(), 2);
    assert_eq!(match_ids(&get("/Patient?_has:Observation:subject:code=probe-1")), [w.a.as_str()]);
    // The system-wide search covers the types the scopes reach, within the compartment.
    let everything_a = match_ids(&get(&format!("/?_id={},{},{}", w.a, w.b, w.b_lab)));
    assert_eq!(everything_a, [w.a.as_str()]);

    // `$everything` on the patient in context only, and only what is theirs (plus what they cite).
    let bundle = get(&format!("/Patient/{}/$everything", w.a));
    let ids = match_ids(&bundle);
    assert!(ids.contains(&w.a) && ids.contains(&w.a_lab) && !ids.contains(&w.b_lab), "{ids:?}");
    server.request_as(&token, "GET", &format!("/Patient/{}/$everything", w.b), None).expect(403);
    server.request_as(&token, "GET", "/Patient/$everything", None).expect(403);

    // A compartment search of another patient is a search: it finds nothing of theirs.
    assert!(match_ids(&get(&format!("/Patient/{}/Observation", w.b))).is_empty());

    // History of another patient's Observation shows none of its versions.
    let history = get(&format!("/Observation/{}/_history", w.b_lab));
    assert!(history["entry"].as_array().is_none_or(Vec::is_empty), "{history}");

    // A write that would leave the compartment is refused, and nothing changes.
    let writer = smart_token(&server, &template, "patient/Observation.cruds", Some(&w.a), None);
    let mut moved = observation(&w.b, "laboratory", "probe-1");
    moved["id"] = json!(w.a_lab);
    server.request_as(&writer, "PUT", &format!("/Observation/{}", w.a_lab), Some((FHIR_JSON, &moved))).expect(403);
    let current = server.request_as(&admin, "GET", &format!("/Observation/{}", w.a_lab), None).expect(200).json();
    assert_eq!(current["meta"]["versionId"], "1");
    let patch = json!([{"op": "replace", "path": "/subject/reference", "value": format!("Patient/{}", w.b)}]);
    let path = format!("/Observation/{}", w.a_lab);
    server.request_as(&writer, "PATCH", &path, Some(("application/json-patch+json", &patch))).expect(403);
    // Conditional interactions match only within reach.
    let conditional = format!("/Observation?code={PROBE}&subject=Patient/{}", w.b);
    server.request_as(&writer, "DELETE", &conditional, None).expect(204);
    server.request_as(&admin, "GET", &format!("/Observation/{}", w.b_lab), None).expect(200);
}

#[test]
fn bundle_entries_are_held_to_the_same_scopes() {
    let (server, _, template, w) = setup();
    let token = smart_token(&server, &template, "patient/Observation.cruds", Some(&w.a), None);
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": format!("Observation/{}", w.a_lab)}},
        {"request": {"method": "GET", "url": format!("Observation/{}", w.b_lab)}},
        {"request": {"method": "POST", "url": "Observation"}, "resource": observation(&w.a, "laboratory", "probe-4")},
        {"request": {"method": "POST", "url": "Observation"}, "resource": observation(&w.b, "laboratory", "probe-4")},
        {"request": {"method": "GET", "url": format!("Observation?code={PROBE}")}},
        {"request": {"method": "DELETE", "url": format!("Observation/{}", w.b_lab)}},
        {"request": {"method": "GET", "url": format!("Patient/{}", w.a)}},
    ]});
    let response = server.request_as(&token, "POST", "/", Some((FHIR_JSON, &batch))).expect(200).json();
    let statuses: Vec<&str> =
        response["entry"].as_array().unwrap().iter().map(|e| e["response"]["status"].as_str().unwrap()).collect();
    let codes: Vec<&str> = statuses.iter().map(|s| s.split(' ').next().unwrap()).collect();
    assert_eq!(codes, ["200", "404", "201", "403", "200", "403", "403"], "{response}");
    let search = &response["entry"][4]["resource"];
    assert_eq!(search["entry"].as_array().map_or(0, Vec::len), 2, "{search}");

    // A transaction with one entry out of reach writes nothing.
    let transaction = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "POST", "url": "Observation"}, "resource": observation(&w.a, "laboratory", "probe-5")},
        {"request": {"method": "POST", "url": "Observation"}, "resource": observation(&w.b, "laboratory", "probe-5")},
    ]});
    server.request_as(&token, "POST", "/", Some((FHIR_JSON, &transaction))).expect(403);
    let found = server.request_as(&token, "GET", "/Observation?code=http://loinc.org|probe-5", None).expect(200);
    assert!(match_ids(&found.json()).is_empty());
}

#[test]
fn smart_configuration_is_public_and_names_the_authority() {
    let server = Server::start_secure(&[]);
    let response =
        server.request("GET", "/.well-known/smart-configuration", &[("origin", "https://app.example")], None);
    let response = response.expect(200);
    assert_eq!(response.header("access-control-allow-origin"), Some("*"));
    let config = response.json();
    let tenant = server.tenant.as_deref().unwrap();
    assert_eq!(config["authorization_endpoint"], format!("{}/{tenant}/oauth2/v2.0/authorize", server.base));
    assert_eq!(config["token_endpoint"], format!("{}/{tenant}/oauth2/v2.0/token", server.base));
    assert_eq!(config["code_challenge_methods_supported"], json!(["S256"]));
    let capabilities: Vec<&str> =
        config["capabilities"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    for needed in [
        "launch-ehr",
        "launch-standalone",
        "client-public",
        "client-confidential-symmetric",
        "client-confidential-asymmetric",
        "context-ehr-patient",
        "context-standalone-patient",
        "permission-v1",
        "permission-v2",
        "permission-patient",
        "permission-user",
        "sso-openid-connect",
    ] {
        assert!(capabilities.contains(&needed), "{needed} missing from {capabilities:?}");
    }
    assert!(config["scopes_supported"].as_array().unwrap().iter().any(|s| s == "launch/patient"));

    // The CapabilityStatement advertises SMART too.
    let metadata = server.get("/metadata").expect(200).json();
    let security = &metadata["rest"][0]["security"];
    assert!(security["service"][0]["coding"].as_array().unwrap().iter().any(|c| c["code"] == "SMART-on-FHIR"));
    let uris = &security["extension"][0]["extension"];
    assert!(uris.as_array().unwrap().iter().any(|u| u["url"] == "authorize"));
}

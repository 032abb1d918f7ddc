//! SMART launches over HTTP, as an app's browser and back end drive them: an EHR launch whose
//! context reaches the token response and survives a refresh, a standalone launch through the
//! patient picker, Azure's SMART proxy URLs, and a backend service with system scopes. The same
//! flows in a real browser with SMART's own client library are in `smart_app`.

use serde_json::{json, Value};

use crate::authority::{
    assertion_claims, form, hidden_inputs, jwt, pkce, redirect, sign_in, tenant, token_request, EcKey, Endpoint,
    ASSERTION_TYPE, FORM, PASSWORD,
};
use crate::harness::{match_ids, temp_dir, Server};
use fhirside_identity::b64;

const FHIR_JSON: &str = "application/fhir+json";
const APP: &str = "https://smart-app.example/callback";

struct Setup {
    server: Server,
    client_id: String,
    practitioner: String,
    a: String,
    b: String,
    a_observation: String,
    b_observation: String,
}

fn setup() -> Setup {
    let server = Server::start_secure(&[]);
    let (admin_id, admin_secret, _) = server.create_app("Setup", &["FHIR Data Contributor"]);
    let admin = server.token(&admin_id, &admin_secret);
    let create = |resource: Value| -> String {
        let path = format!("/{}", resource["resourceType"].as_str().unwrap());
        server.request_as(&admin, "POST", &path, Some((FHIR_JSON, &resource))).expect(201).json()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let practitioner = create(json!({"resourceType": "Practitioner", "name": [{"family": "Careful"}]}));
    let a = create(json!({"resourceType": "Patient", "name": [{"family": "Anders", "given": ["Ann"]}]}));
    let b = create(json!({"resourceType": "Patient", "name": [{"family": "Brook", "given": ["Bo"]}]}));
    let observation = |patient: &str| {
        json!({"resourceType": "Observation", "status": "final", "code": {"text": "pulse"},
               "subject": {"reference": format!("Patient/{patient}")}})
    };
    let a_observation = create(observation(&a));
    let b_observation = create(observation(&b));
    let fhir_user = format!("Practitioner/{practitioner}");
    server.admin(&[
        "user",
        "create",
        "--name",
        "alice@example.org",
        "--password",
        PASSWORD,
        "--fhir-user",
        &fhir_user,
        "--role",
        "FHIR SMART User",
    ]);
    let app = server.admin(&["app", "create", "--name", "SMART app", "--public", "--redirect-uri", APP]);
    let client_id = app["clientId"].as_str().unwrap().to_owned();
    Setup { server, client_id, practitioner, a, b, a_observation, b_observation }
}

/// Redeems `code` for tokens.
fn redeem(s: &Setup, code: &str, verifier: &str) -> Value {
    let pairs = [
        ("grant_type", "authorization_code"),
        ("client_id", s.client_id.as_str()),
        ("code", code),
        ("redirect_uri", APP),
        ("code_verifier", verifier),
    ];
    token_request(&s.server, Endpoint::V2, &pairs, &[]).expect(200).json()
}

fn get(s: &Setup, token: &str, path: &str) -> u16 {
    s.server.request_as(token, "GET", path, None).status
}

#[test]
fn an_ehr_launch_carries_its_context_into_the_token_and_the_scopes_hold() {
    let s = setup();
    let launch = b64::encode(
        json!({"patient": s.a, "encounter": "enc-1", "practitioner": s.practitioner,
               "need_patient_banner": false, "smart_style_url": "https://ehr.example/style.json"})
        .to_string(),
    );
    let (verifier, challenge) = pkce();
    let scope = "launch openid fhirUser patient/*.read offline_access";
    let params = [
        ("client_id", s.client_id.as_str()),
        ("response_type", "code"),
        ("redirect_uri", APP),
        ("scope", scope),
        ("state", "st-1"),
        ("aud", s.server.base.as_str()),
        ("launch", launch.as_str()),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    let (target, query) = redirect(&sign_in(&s.server, Endpoint::V2, &params, "alice@example.org", PASSWORD));
    assert_eq!((target.as_str(), query["state"].as_str()), (APP, "st-1"));
    let body = redeem(&s, &query["code"], &verifier);

    // The launch context, beside the tokens.
    assert_eq!(body["patient"], json!(s.a), "{body}");
    assert_eq!(body["encounter"], "enc-1");
    assert_eq!(body["practitioner"], json!(s.practitioner));
    assert_eq!(body["need_patient_banner"], false);
    assert_eq!(body["smart_style_url"], "https://ehr.example/style.json");
    assert_eq!(body["scope"], scope);
    assert!(body["refresh_token"].is_string(), "offline_access gives a refresh token: {body}");

    // The id token's fhirUser is the user's resource, and it resolves.
    let (_, id_claims) = jwt(body["id_token"].as_str().unwrap());
    let fhir_user = id_claims["fhirUser"].as_str().unwrap().to_owned();
    assert_eq!(fhir_user, format!("{}/Practitioner/{}", s.server.base, s.practitioner));
    let access = body["access_token"].as_str().unwrap().to_owned();
    let (_, access_claims) = jwt(&access);
    assert_eq!(access_claims["patient"], json!(s.a));
    assert_eq!(get(&s, &access, fhir_user.strip_prefix(&s.server.base).unwrap()), 200);

    // The patient in context and theirs: yes; another patient's: no.
    assert_eq!(get(&s, &access, &format!("/Patient/{}", s.a)), 200);
    assert_eq!(get(&s, &access, &format!("/Observation/{}", s.a_observation)), 200);
    assert_eq!(get(&s, &access, &format!("/Observation/{}", s.b_observation)), 404);
    let found = s.server.request_as(&access, "GET", "/Observation", None).expect(200).json();
    assert_eq!(match_ids(&found), [s.a_observation.as_str()]);

    // A refresh keeps the context.
    let pairs = [
        ("grant_type", "refresh_token"),
        ("client_id", s.client_id.as_str()),
        ("refresh_token", body["refresh_token"].as_str().unwrap()),
    ];
    let refreshed = token_request(&s.server, Endpoint::V2, &pairs, &[]).expect(200).json();
    assert_eq!(refreshed["patient"], json!(s.a));
    assert_eq!(refreshed["need_patient_banner"], false);
    let (_, claims) = jwt(refreshed["access_token"].as_str().unwrap());
    assert_eq!(claims["patient"], json!(s.a));

    // A launch value that is not a launch context goes back to the app as an error.
    let mut bad = params.to_vec();
    bad.retain(|(k, _)| *k != "launch");
    bad.push(("launch", "not base64 json"));
    let response = s.server.get(&format!("/{}/oauth2/v2.0/authorize?{}", tenant(&s.server), form(&bad)));
    let (target, query) = redirect(&response);
    assert_eq!((target.as_str(), query["error"].as_str()), (APP, "invalid_request"));
}

#[test]
fn a_standalone_launch_picks_the_patient_on_the_sign_in_page() {
    let s = setup();
    let (verifier, challenge) = pkce();
    let params = [
        ("client_id", s.client_id.as_str()),
        ("response_type", "code"),
        ("redirect_uri", APP),
        ("scope", "launch/patient openid fhirUser patient/*.read"),
        ("state", "st-2"),
        ("aud", s.server.base.as_str()),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    let path = format!("/{}/oauth2/v2.0/authorize", tenant(&s.server));
    let picker = sign_in(&s.server, Endpoint::V2, &params, "alice@example.org", PASSWORD).expect(200);
    let html = String::from_utf8(picker.body).unwrap();
    assert!(html.contains("Choose a patient"), "{html}");
    for (id, name) in [(&s.a, "Ann Anders"), (&s.b, "Bo Brook")] {
        assert!(html.contains(&format!("value=\"{id}\"")) && html.contains(name), "{id} {name} in {html}");
    }
    let fields = hidden_inputs(&html);
    assert!(fields.iter().all(|(k, _)| k != "passwd" && k != "login"), "the password never comes back: {fields:?}");

    // Searching by name narrows the list.
    let mut search = fields.clone();
    search.extend([("patient_filter".to_owned(), "Brook".to_owned()), ("action".to_owned(), "filter".to_owned())]);
    let filtered = s.server.request("POST", &path, &[FORM], Some(form(&search).as_bytes())).expect(200);
    let html = String::from_utf8(filtered.body).unwrap();
    assert!(html.contains(&format!("value=\"{}\"", s.b)) && !html.contains(&format!("value=\"{}\"", s.a)), "{html}");

    // Choosing B: the code's token is B's.
    let mut choose = hidden_inputs(&html);
    choose.push(("patient".to_owned(), s.b.clone()));
    let response = s.server.request("POST", &path, &[FORM], Some(form(&choose).as_bytes()));
    let (_, query) = redirect(&response);
    let body = redeem(&s, &query["code"], &verifier);
    assert_eq!(body["patient"], json!(s.b), "{body}");
    let access = body["access_token"].as_str().unwrap();
    assert_eq!(get(&s, access, &format!("/Observation/{}", s.b_observation)), 200);
    assert_eq!(get(&s, access, &format!("/Observation/{}", s.a_observation)), 404);

    // A forged sign-in token gets the sign-in page again, never a code.
    let mut forged = choose.clone();
    for (k, v) in forged.iter_mut() {
        if k == "signin" {
            v.push('x');
        }
    }
    let response = s.server.request("POST", &path, &[FORM], Some(form(&forged).as_bytes()));
    assert_eq!(response.status, 200, "{}", String::from_utf8_lossy(&response.body));
    assert!(response.header("location").is_none());
}

#[test]
fn azures_proxy_urls_complete_a_launch() {
    let s = setup();
    // As in Azure: the app registers the proxy's callback for its redirect URI.
    let callback = format!("{}/AadSmartOnFhirProxy/callback/{}", s.server.base, b64::encode(APP));
    let app = s.server.admin(&["app", "create", "--name", "Proxied", "--public", "--redirect-uri", &callback]);
    let client_id = app["clientId"].as_str().unwrap().to_owned();
    let launch = b64::encode(json!({"patient": s.a}).to_string());
    let (verifier, challenge) = pkce();
    let params = [
        ("client_id", client_id.as_str()),
        ("response_type", "code"),
        ("redirect_uri", APP),
        ("scope", "launch patient/*.read"),
        ("state", "app-state"),
        ("aud", s.server.base.as_str()),
        ("launch", launch.as_str()),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    let start = s.server.get(&format!("/AadSmartOnFhirProxy/authorize?{}", form(&params)));
    let (authorize, forwarded) = redirect(&start);
    assert_eq!(authorize, format!("{}/{}/oauth2/v2.0/authorize", s.server.base, tenant(&s.server)));
    assert_eq!(forwarded["redirect_uri"], callback);
    assert_ne!(forwarded["state"], "app-state", "the proxy wraps the state");

    let forwarded: Vec<(&str, &str)> = forwarded.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let signed_in = sign_in(&s.server, Endpoint::V2, &forwarded, "alice@example.org", PASSWORD);
    let (target, query) = redirect(&signed_in);
    assert_eq!(target, callback);
    let back = s.server.get(&format!(
        "{}?{}",
        target.strip_prefix(&s.server.base).unwrap(),
        form(&query.iter().collect::<Vec<_>>())
    ));
    let (target, query) = redirect(&back);
    assert_eq!((target.as_str(), query["state"].as_str()), (APP, "app-state"));

    let pairs = [
        ("grant_type", "authorization_code"),
        ("client_id", client_id.as_str()),
        ("code", query["code"].as_str()),
        ("redirect_uri", APP),
        ("code_verifier", verifier.as_str()),
    ];
    let body = s
        .server
        .request("POST", "/AadSmartOnFhirProxy/token", &[FORM], Some(form(&pairs).as_bytes()))
        .expect(200)
        .json();
    assert_eq!(body["patient"], json!(s.a), "{body}");
    assert_eq!(body["client_id"], json!(client_id));
    assert_eq!(get(&s, body["access_token"].as_str().unwrap(), &format!("/Patient/{}", s.a)), 200);
}

#[test]
fn a_backend_service_reads_with_system_scopes() {
    let s = setup();
    let key = EcKey::generate("backend-1");
    let dir = temp_dir("smart-jwks");
    let jwks = dir.join("jwks.json");
    std::fs::write(&jwks, json!({"keys": [key.jwk()]}).to_string()).unwrap();
    let app = s.server.admin(&[
        "app",
        "create",
        "--name",
        "Backend",
        "--service",
        "--jwks",
        jwks.to_str().unwrap(),
        "--role",
        "FHIR SMART User",
    ]);
    let client_id = app["clientId"].as_str().unwrap().to_owned();
    let endpoint = format!("{}/{}/oauth2/v2.0/token", s.server.base, tenant(&s.server));
    let assertion = key.sign(&assertion_claims(&client_id, &endpoint, 300));
    let pairs = [
        ("grant_type", "client_credentials"),
        ("client_id", client_id.as_str()),
        ("client_assertion_type", ASSERTION_TYPE),
        ("client_assertion", assertion.as_str()),
        ("scope", "system/Observation.rs"),
    ];
    let body = token_request(&s.server, Endpoint::V2, &pairs, &[]).expect(200).json();
    let access = body["access_token"].as_str().unwrap();
    assert_eq!(jwt(access).1["scp"], "system/Observation.rs");
    // Every patient's Observations, nothing else, and no writes.
    assert_eq!(get(&s, access, &format!("/Observation/{}", s.b_observation)), 200);
    let all = s.server.request_as(access, "GET", "/Observation", None).expect(200).json();
    assert_eq!(match_ids(&all).len(), 2);
    assert_eq!(get(&s, access, &format!("/Patient/{}", s.a)), 403);
    let observation = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}});
    s.server.request_as(access, "POST", "/Observation", Some((FHIR_JSON, &observation))).expect(403);
    let _ = std::fs::remove_dir_all(dir);
}

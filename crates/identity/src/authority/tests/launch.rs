//! The `launch` parameter and the patient picker of `launch/patient`.

use std::sync::Arc;

use base64::Engine;
use serde_json::{json, Value};

use super::*;
use crate::authority::launch::{decode_launch, PatientDirectory, SIGNIN_AUDIENCE};

const REDIRECT: &str = "http://127.0.0.1:9/app/index.html";
const PICKER_SCOPE: &str = "openid fhirUser launch/patient patient/*.read";

/// Patients by (id, name); the filter matches names case-insensitively.
struct Directory(Vec<(&'static str, &'static str)>);

impl PatientDirectory for Directory {
    fn patients(&self, filter: &str, limit: usize) -> Result<Vec<(String, String)>, String> {
        let filter = filter.to_lowercase();
        let matching = self.0.iter().filter(|(_, name)| name.to_lowercase().contains(&filter));
        Ok(matching.take(limit).map(|(id, name)| (id.to_string(), name.to_string())).collect())
    }

    fn exists(&self, id: &str) -> Result<bool, String> {
        Ok(self.0.iter().any(|(known, _)| *known == id))
    }
}

fn with_directory(name: &str) -> Fixture {
    let fixture = Fixture::new(name);
    fixture.authority.set_patient_directory(Arc::new(Directory(vec![("1", "Alice Smith"), ("2", "Bob <Jones>")])));
    fixture
}

fn page_of(outcome: &AuthorizeOutcome) -> &str {
    match outcome {
        AuthorizeOutcome::Page(html) => html,
        other => panic!("expected a page, got {other:?}"),
    }
}

/// The value of the hidden input `name` on a page.
fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).unwrap_or_else(|| panic!("no {name} in {html}")) + marker.len();
    html[start..].split('"').next().unwrap().to_owned()
}

fn with(params: &[(String, String)], extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut all = pairs(extra);
    all.extend(params.iter().cloned());
    all
}

#[test]
fn launch_values_decode_to_the_known_fields() {
    let standard = base64::engine::general_purpose::STANDARD.encode(r#"{"patient":"123","smart_style_url":"a?>"}"#);
    assert!(standard.contains('+') && standard.ends_with('='), "{standard}");
    let context = decode_launch(&standard).unwrap();
    assert_eq!(Value::Object(context), json!({"patient": "123", "smart_style_url": "a?>"}));
    // An unencoded `+` in a URL's query arrives as a space.
    assert_eq!(decode_launch(&standard.replace('+', " ")).unwrap()["patient"], "123");

    let azure = json!({
        "patient": "123", "encounter": "456", "practitioner": "789", "need_patient_banner": "true",
        "smart_style_url": "https://ehr.example/style.json", "intent": "reconcile", "tenant": "t1",
        "unknown": "dropped", "appContext": {"a": 1}
    });
    let context = decode_launch(&crate::b64::encode(azure.to_string())).unwrap();
    assert_eq!(context["need_patient_banner"], Value::Bool(true));
    assert_eq!(context["intent"], "reconcile");
    assert!(!context.contains_key("unknown") && !context.contains_key("appContext"));
    let numeric = decode_launch(&crate::b64::encode(r#"{"patient":7,"need_patient_banner":false}"#)).unwrap();
    assert_eq!(Value::Object(numeric), json!({"need_patient_banner": false}));
    assert!(decode_launch(&crate::b64::encode("{}")).unwrap().is_empty());

    for bad in ["opaque-ehr-launch-id", "%%%", &crate::b64::encode("[1,2]"), &crate::b64::encode("not json")] {
        assert!(decode_launch(bad).is_err(), "{bad}");
    }
}

#[test]
fn a_bad_launch_goes_back_to_the_client_before_sign_in() {
    let fixture = Fixture::new("bad-launch");
    let app = fixture.app(AppKind::Public, &[REDIRECT]);
    let params = with(&code_request(&app, REDIRECT, "launch patient/*.read"), &[("launch", "bm90IGpzb24")]);
    let query = redirect_query(&fixture.authorize(&params, None));
    assert_eq!(value(&query, "error"), Some("invalid_request"));
    assert!(value(&query, "error_description").unwrap().contains("launch"), "{query:?}");
    assert_eq!(value(&query, "state"), Some("app-state"));
}

#[test]
fn the_launch_context_reaches_the_token_response_and_the_access_token() {
    let fixture = Fixture::new("launch-context");
    let app = fixture.app(AppKind::Public, &[REDIRECT]);
    fixture.user("doc@example.org", Some("Practitioner/7"));
    let launch = json!({
        "patient": "123", "encounter": "456", "practitioner": "789", "need_patient_banner": true,
        "smart_style_url": "https://ehr.example/style.json", "extra": 1
    });
    let scope = "openid fhirUser launch launch/patient patient/*.read offline_access";
    let params = with(&code_request(&app, REDIRECT, scope), &[("launch", &crate::b64::encode(launch.to_string()))]);
    let code = code_of(&fixture.authorize(&params, Some("doc@example.org")));
    let response = fixture.redeem(&app, REDIRECT, &code);
    for (field, expected) in [
        ("patient", json!("123")),
        ("encounter", json!("456")),
        ("practitioner", json!("789")),
        ("need_patient_banner", json!(true)),
        ("smart_style_url", json!("https://ehr.example/style.json")),
        ("scope", json!(scope)),
    ] {
        assert_eq!(response[field], expected, "{field}");
    }
    assert!(response.get("extra").is_none());
    let access = access_claims(&response);
    assert_eq!(access["patient"], "123");
    assert_eq!(access["fhirUser"], "https://fhir.example/Practitioner/7");
    assert_eq!(access["scp"], "fhirUser launch launch/patient patient/*.read");

    // The refresh token keeps the context, and the banner flag stays a boolean.
    let refresh = form(&[
        ("grant_type", "refresh_token"),
        ("client_id", &app.client_id),
        ("refresh_token", response["refresh_token"].as_str().unwrap()),
    ]);
    let refreshed = fixture.authority.token(EndpointVersion::V2, &refresh, now()).unwrap();
    assert_eq!(refreshed["patient"], "123");
    assert_eq!(refreshed["need_patient_banner"], Value::Bool(true));
    assert_eq!(access_claims(&refreshed)["patient"], "123");
}

#[test]
fn the_picker_lists_filters_and_chooses_a_patient() {
    let fixture = with_directory("picker");
    let app = fixture.app(AppKind::Public, &[REDIRECT]);
    fixture.user("doc@example.org", Some("Practitioner/7"));
    let request = code_request(&app, REDIRECT, PICKER_SCOPE);

    let outcome = fixture.authorize(&request, Some("doc@example.org"));
    let html = page_of(&outcome);
    assert!(html.contains("<title>Choose a patient</title>") && html.contains("<form method=\"post\">"), "{html}");
    assert!(html.contains(&format!("name=\"client_id\" value=\"{}\"", app.client_id)));
    assert!(html.contains("name=\"state\" value=\"app-state\""));
    assert!(!html.contains("name=\"login\"") && !html.contains("name=\"passwd\""));
    assert!(html.contains("<input type=\"radio\" name=\"patient\" value=\"1\" id=\"patient-1\" checked>"), "{html}");
    assert!(html.contains("<label for=\"patient-1\">Alice Smith (1)</label>"));
    assert!(html.contains("<input type=\"radio\" name=\"patient\" value=\"2\" id=\"patient-2\">"));
    assert!(html.contains("<label for=\"patient-2\">Bob &lt;Jones&gt; (2)</label>"), "escaped");
    assert!(html.contains("name=\"patient_filter\""));
    assert!(html.contains("<button type=\"submit\" name=\"action\" value=\"filter\">Search</button>"));
    assert!(html.contains("<button type=\"submit\">Continue</button>"));
    let signin = hidden(html, "signin");
    let signin_claims = claims(&signin);
    assert_eq!(signin_claims["aud"], SIGNIN_AUDIENCE, "never an access token's audience");
    assert_eq!(signin_claims["azp"], app.client_id.as_str());
    let lifetime = signin_claims["exp"].as_i64().unwrap() - signin_claims["iat"].as_i64().unwrap();
    assert_eq!(lifetime, 600);

    // Search: the list narrows, the first match is checked, the sign-in token is kept.
    let filtered = fixture.authorize(
        &with(&request, &[("signin", &signin), ("action", "filter"), ("patient_filter", "bob"), ("patient", "1")]),
        None,
    );
    let html = page_of(&filtered);
    assert!(html.contains("id=\"patient-2\" checked>") && !html.contains("patient-1"), "{html}");
    assert!(html.contains("name=\"patient_filter\" type=\"text\" value=\"bob\""));
    assert_eq!(hidden(html, "signin"), signin);

    // A patient that does not exist is refused on the page.
    let unknown = fixture.authorize(&with(&request, &[("signin", &signin), ("patient", "999")]), None);
    assert!(page_of(&unknown).contains("Patient/999 was not found"));

    // Continue: no password again; the chosen patient is the context.
    let chosen = fixture.authorize(&with(&request, &[("signin", &signin), ("patient", "2")]), None);
    let query = redirect_query(&chosen);
    assert_eq!(value(&query, "state"), Some("app-state"));
    let response = fixture.redeem(&app, REDIRECT, &code_of(&chosen));
    assert_eq!(response["patient"], "2");
    assert_eq!(access_claims(&response)["patient"], "2");
}

#[test]
fn the_picker_takes_only_a_current_sign_in_of_the_same_client() {
    let fixture = with_directory("picker-signin");
    let app = fixture.app(AppKind::Public, &[REDIRECT]);
    let other = fixture.app(AppKind::Public, &[REDIRECT]);
    fixture.user("doc@example.org", None);
    let request = code_request(&app, REDIRECT, PICKER_SCOPE);
    let signin = hidden(page_of(&fixture.authorize(&request, Some("doc@example.org"))), "signin");
    let is_sign_in_page = |outcome: &AuthorizeOutcome| page_of(outcome).contains("<title>Sign in to Fhirside</title>");

    let elsewhere = code_request(&other, REDIRECT, PICKER_SCOPE);
    assert!(is_sign_in_page(&fixture.authorize(&with(&elsewhere, &[("signin", &signin), ("patient", "1")]), None)));
    let later = now() + 601;
    let late = fixture.authority.authorize(
        EndpointVersion::V2,
        &with(&request, &[("signin", &signin), ("patient", "1")]),
        None,
        later,
    );
    assert!(page_of(&late).contains("has expired"));
    let (head, _) = signin.rsplit_once('.').unwrap();
    let forged = format!("{head}.{}", crate::b64::encode([0u8; 256]));
    assert!(is_sign_in_page(&fixture.authorize(&with(&request, &[("signin", &forged), ("patient", "1")]), None)));
    // A sign-in post cannot choose a patient: the picker still comes.
    let smuggled = with(&request, &[("patient", "1")]);
    assert!(page_of(&fixture.authorize(&smuggled, Some("doc@example.org"))).contains("Choose a patient"));
}

#[test]
fn a_patient_user_is_their_own_context() {
    let fixture = Fixture::new("patient-user");
    let app = fixture.app(AppKind::Public, &[REDIRECT]);
    fixture.user("pat@example.org", Some("Patient/5"));
    // No directory is needed: the user is the patient.
    let code = code_of(&fixture.authorize(&code_request(&app, REDIRECT, PICKER_SCOPE), Some("pat@example.org")));
    let response = fixture.redeem(&app, REDIRECT, &code);
    assert_eq!(response["patient"], "5");
    let access = access_claims(&response);
    assert_eq!(
        (access["patient"].as_str(), access["fhirUser"].as_str()),
        (Some("5"), Some("https://fhir.example/Patient/5"))
    );
    assert_eq!(claims(response["id_token"].as_str().unwrap())["fhirUser"], "https://fhir.example/Patient/5");

    let other = crate::b64::encode(r#"{"patient":"6"}"#);
    let params = with(&code_request(&app, REDIRECT, PICKER_SCOPE), &[("launch", &other)]);
    let query = redirect_query(&fixture.authorize(&params, Some("pat@example.org")));
    assert_eq!(value(&query, "error"), Some("access_denied"));
}

#[test]
fn without_a_directory_the_picker_is_an_error_for_the_client() {
    let fixture = Fixture::new("no-directory");
    let app = fixture.app(AppKind::Public, &[REDIRECT]);
    fixture.user("doc@example.org", Some("Practitioner/7"));
    let query =
        redirect_query(&fixture.authorize(&code_request(&app, REDIRECT, PICKER_SCOPE), Some("doc@example.org")));
    assert_eq!(value(&query, "error"), Some("invalid_request"));
    assert!(value(&query, "error_description").unwrap().contains("no patient directory"), "{query:?}");
    // Without launch/patient nothing is needed.
    let code =
        code_of(&fixture.authorize(&code_request(&app, REDIRECT, "openid patient/*.read"), Some("doc@example.org")));
    let response = fixture.redeem(&app, REDIRECT, &code);
    assert!(response.get("patient").is_none() && access_claims(&response).get("patient").is_none());
}

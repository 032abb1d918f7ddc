//! Azure's SMART proxy: an app's round trip through authorize, callback and token.

use serde_json::json;

use super::*;

const APP_REDIRECT: &str = "http://127.0.0.1:9/app/index.html";

fn query_of(location: &str) -> Vec<(String, String)> {
    let query = location.split_once('?').map(|(_, q)| q).unwrap_or("");
    form_urlencoded::parse(query.as_bytes()).into_owned().collect()
}

#[test]
fn an_app_round_trips_through_the_proxy() {
    let fixture = Fixture::new("proxy");
    let authority = &fixture.authority;
    let callback = authority.proxy_callback_url(APP_REDIRECT);
    assert_eq!(callback, format!("{FHIR}/AadSmartOnFhirProxy/callback/{}", crate::b64::encode(APP_REDIRECT)));
    let app = fixture.app(AppKind::Public, &[&callback]);
    fixture.user("doc@example.org", Some("Practitioner/7"));
    let launch = crate::b64::encode(json!({"patient": "123", "need_patient_banner": true}).to_string());
    let mut request = code_request(&app, APP_REDIRECT, "launch patient/*.read");
    request.push(("launch".into(), launch.clone()));
    request.push(("response_mode".into(), "fragment".into()));

    // authorize → this authority's v2 endpoint, with the callback and a wrapped state.
    let location = authority.proxy_authorize(&request).unwrap();
    assert!(location.starts_with(&authority.authorization_endpoint(EndpointVersion::V2)), "{location}");
    let forwarded = query_of(&location);
    assert_eq!(value(&forwarded, "redirect_uri"), Some(callback.as_str()));
    assert_eq!(value(&forwarded, "launch"), Some(launch.as_str()));
    assert_eq!(value(&forwarded, "client_id"), Some(app.client_id.as_str()));
    assert_eq!(value(&forwarded, "response_mode"), None, "the callback reads its query");
    let state = crate::b64::decode(value(&forwarded, "state").unwrap()).unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&state).unwrap(), json!({"s": "app-state", "l": launch}));

    // The authority redirects to the callback, which hands the app a wrapped code and its state.
    let to_callback = fixture.authorize(&forwarded, Some("doc@example.org"));
    let AuthorizeOutcome::Redirect(at_callback) = &to_callback else { panic!("{to_callback:?}") };
    let encoded = at_callback.split_once('?').unwrap().0.rsplit('/').next().unwrap();
    let to_app = authority.proxy_callback(encoded, &query_of(at_callback)).unwrap();
    assert!(to_app.starts_with(&format!("{APP_REDIRECT}?")), "{to_app}");
    let returned = query_of(&to_app);
    assert_eq!(value(&returned, "state"), Some("app-state"));
    let wrapped = value(&returned, "code").unwrap();
    let inner = serde_json::from_slice::<Value>(&crate::b64::decode(wrapped).unwrap()).unwrap();
    assert_eq!(inner, json!({"code": code_of(&to_callback)}));

    // token: the app's own redirect URI and the wrapped code.
    let token = |code: &str| {
        let request = form(&[
            ("grant_type", "authorization_code"),
            ("client_id", &app.client_id),
            ("code", code),
            ("redirect_uri", APP_REDIRECT),
            ("code_verifier", VERIFIER),
        ]);
        authority.proxy_token(request, now())
    };
    let response = token(wrapped).unwrap();
    assert_eq!(response["client_id"], app.client_id.as_str());
    assert_eq!((response["patient"].as_str(), response["need_patient_banner"].as_bool()), (Some("123"), Some(true)));
    assert_eq!(access_claims(&response)["patient"], "123");
    assert_eq!(token(wrapped).unwrap_err().error, "invalid_grant", "codes are single-use");
    assert_eq!(token("not-a-wrapped-code").unwrap_err().error, "invalid_grant");
}

#[test]
fn the_proxy_refuses_what_it_cannot_decode_or_was_not_registered() {
    let fixture = Fixture::new("proxy-refusals");
    let authority = &fixture.authority;
    fixture.app(AppKind::Public, &[&authority.proxy_callback_url(APP_REDIRECT)]);
    let registered = crate::b64::encode(APP_REDIRECT);
    let state = crate::b64::encode(r#"{"s":"app-state","l":"e30"}"#);

    let no_redirect = authority.proxy_authorize(&pairs(&[("client_id", "x"), ("state", "s")])).unwrap_err();
    assert_eq!(no_redirect.error, "invalid_request");
    // Without a launch the state carries an empty one, as Azure's does.
    let location = authority.proxy_authorize(&pairs(&[("redirect_uri", APP_REDIRECT)])).unwrap();
    let state_sent = crate::b64::decode(value(&query_of(&location), "state").unwrap()).unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&state_sent).unwrap(), json!({"s": null, "l": "e30"}));

    let callback = |encoded: &str, params: &[(&str, &str)]| authority.proxy_callback(encoded, &pairs(params));
    for (encoded, params) in [
        ("%%%", vec![("code", "c"), ("state", state.as_str())]),
        (crate::b64::encode("https://evil.example/").as_str(), vec![("code", "c"), ("state", state.as_str())]),
        (registered.as_str(), vec![("code", "c"), ("state", "garbage")]),
        (registered.as_str(), vec![("state", state.as_str())]),
    ] {
        assert_eq!(callback(encoded, &params).unwrap_err().error, "invalid_request", "{encoded} {params:?}");
    }

    // Errors reach the app, with its state.
    let error = callback(&registered, &[("error", "access_denied"), ("error_description", "no"), ("state", &state)]);
    let returned = query_of(&error.unwrap());
    assert_eq!(value(&returned, "error"), Some("access_denied"));
    assert_eq!(value(&returned, "error_description"), Some("no"));
    assert_eq!(value(&returned, "state"), Some("app-state"));
}

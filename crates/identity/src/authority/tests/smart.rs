//! SMART's configuration document, backend services' system scopes and the token endpoint's CORS.

use axum::body::Body;
use axum::http::{header, StatusCode};
use serde_json::json;

use super::*;
use crate::authority::http;
use crate::jwt::JwkSet;
use crate::keys::SigningKey;

#[test]
fn the_smart_configuration_names_the_v2_endpoints_and_what_is_implemented() {
    let fixture = Fixture::new("smart-configuration");
    let authority = &fixture.authority;
    let config = authority.smart_configuration();
    let tenant = authority.tenant_id();
    assert_eq!(config["issuer"], format!("https://login.example/{tenant}/v2.0"));
    assert_eq!(config["jwks_uri"], format!("https://login.example/{tenant}/discovery/v2.0/keys"));
    assert_eq!(config["authorization_endpoint"], format!("https://login.example/{tenant}/oauth2/v2.0/authorize"));
    assert_eq!(config["token_endpoint"], format!("https://login.example/{tenant}/oauth2/v2.0/token"));
    assert_eq!(
        config["token_endpoint_auth_methods_supported"],
        json!(["client_secret_basic", "client_secret_post", "private_key_jwt", "none"])
    );
    assert_eq!(config["token_endpoint_auth_signing_alg_values_supported"], json!(["RS256", "RS384", "ES256", "ES384"]));
    assert_eq!(config["grant_types_supported"], json!(["authorization_code", "client_credentials", "refresh_token"]));
    assert_eq!(config["response_types_supported"], json!(["code"]));
    assert_eq!(config["code_challenge_methods_supported"], json!(["S256"]));
    let listed = |member: &str, names: &[&str]| {
        let values = config[member].as_array().unwrap();
        for name in names {
            assert!(values.contains(&json!(name)), "{member} lacks {name}");
        }
    };
    listed("scopes_supported", &["openid", "fhirUser", "launch", "launch/patient", "system/*.rs", "user/*.cruds"]);
    listed(
        "capabilities",
        &["launch-ehr", "launch-standalone", "client-public", "context-ehr-patient", "sso-openid-connect"],
    );
    assert_eq!(config["capabilities"].as_array().unwrap().len(), 18);
}

/// A backend service (private_key_jwt only) and an assertion for it.
fn backend_service(fixture: &Fixture) -> (App, SigningKey) {
    let key = SigningKey::generate(0).unwrap();
    let app = NewApp {
        display_name: "Backend".into(),
        kind: AppKind::Service,
        redirect_uris: vec![],
        jwks: Some(JwkSet { keys: vec![key.jwk()] }),
    };
    (fixture.authority.store.create_app(app, 0).unwrap(), key)
}

fn assertion(fixture: &Fixture, app: &App, key: &SigningKey) -> String {
    let now = now();
    key.sign(&json!({
        "iss": app.client_id, "sub": app.client_id, "aud": fixture.authority.token_endpoint(EndpointVersion::V2),
        "exp": now + 300, "iat": now, "jti": uuid::Uuid::new_v4().to_string()
    }))
}

fn client_credentials(fixture: &Fixture, app: &App, key: &SigningKey, scope: &str) -> TokenRequest {
    let assertion = assertion(fixture, app, key);
    form(&[
        ("grant_type", "client_credentials"),
        ("scope", scope),
        ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
        ("client_assertion", &assertion),
    ])
}

#[test]
fn client_credentials_take_smart_system_scopes() {
    let fixture = Fixture::new("system-scopes");
    let (app, key) = backend_service(&fixture);
    let token = |scope: &str| {
        let request = client_credentials(&fixture, &app, &key, scope);
        fixture.authority.token(EndpointVersion::V2, &request, now())
    };

    let response = token("system/*.read system/Observation.rs").unwrap();
    assert_eq!(response["scope"], "system/*.read system/Observation.rs");
    let access = access_claims(&response);
    assert_eq!(access["scp"], "system/*.read system/Observation.rs");
    assert_eq!(access["aud"], FHIR, "the canonical FHIR audience");
    assert_eq!(access["idtyp"], "app");

    let default = token(&format!("{FHIR}/.default")).unwrap();
    assert!(access_claims(&default).get("scp").is_none(), ".default grants roles, not scopes");
    assert!(default.get("scope").is_none());

    let mixed = token(&format!("system/*.read {FHIR}/.default")).unwrap_err();
    assert_eq!(mixed.error, "invalid_scope");
    assert_eq!(token("system/*.read patient/*.read").unwrap_err().error, "invalid_scope");
}

#[tokio::test]
async fn the_token_endpoint_is_open_to_browser_apps() {
    let preflight = http::token_preflight().await;
    assert_eq!(preflight.status(), StatusCode::NO_CONTENT);
    let headers = preflight.headers();
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_METHODS], "POST, OPTIONS");
    assert_eq!(headers[header::ACCESS_CONTROL_MAX_AGE], "86400");
    let allowed = headers[header::ACCESS_CONTROL_ALLOW_HEADERS].to_str().unwrap();
    for name in
        ["content-type", "authorization", "client-request-id", "x-client-sku", "x-client-last-telemetry", "accept"]
    {
        assert!(allowed.split(", ").any(|h| h == name), "{name} in {allowed}");
    }

    let fixture = Fixture::new("token-cors");
    let (app, key) = backend_service(&fixture);
    let post = |body: String| {
        axum::http::Request::builder()
            .method("POST")
            .uri("/oauth2/v2.0/token")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(body))
            .unwrap()
    };
    let redeem = |authority: Arc<Authority>| {
        move |request: TokenRequest, now: i64| authority.token(EndpointVersion::V2, &request, now)
    };
    let request = client_credentials(&fixture, &app, &key, "system/*.read");
    let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(request.params).finish();
    let ok = http::token_endpoint(post(body), redeem(fixture.authority.clone())).await;
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    assert_eq!(ok.headers()[header::CACHE_CONTROL], "no-store, no-cache");

    let refused = http::token_endpoint(post("grant_type=password".into()), redeem(fixture.authority.clone())).await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    assert_eq!(refused.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
}

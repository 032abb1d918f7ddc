//! The built-in authority (Microsoft Entra ID's shapes) seen from outside, over HTTPS: discovery,
//! the token endpoint's grants and errors, the sign-in page and the authorization code flow,
//! `private_key_jwt`, signing-key rotation, and a second Fhirside trusting the first as an external
//! OpenID Connect issuer.
//!
//! Every error is checked for Entra's shape: the status, `error`, the AADSTS number in
//! `error_codes` and at the start of `error_description`, and the trace lines that end it.

use std::collections::HashMap;
use std::path::PathBuf;

use fhirside_identity::b64;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{self, KeyPair};
use serde_json::{json, Value};

use crate::harness::{form_encode, temp_dir, Response, Server};

pub(crate) const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");
const REDIRECT_URI: &str = "https://app.example/cb";
pub(crate) const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
pub(crate) const PASSWORD: &str = "correct horse battery";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Endpoint {
    /// `/{tenant}/oauth2/…`
    V1,
    /// `/{tenant}/oauth2/v2.0/…`
    V2,
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

pub(crate) fn tenant(server: &Server) -> &str {
    server.tenant.as_deref().expect("authentication is on")
}

fn authority(server: &Server) -> &str {
    server.authority.as_deref().expect("authentication is on")
}

pub(crate) fn form<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", form_encode(k.as_ref()), form_encode(v.as_ref())))
        .collect::<Vec<_>>()
        .join("&")
}

/// Decodes `application/x-www-form-urlencoded` text (`+` is a space).
pub(crate) fn form_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).expect("percent escape"));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

fn token_path(server: &Server, endpoint: Endpoint) -> String {
    match endpoint {
        Endpoint::V1 => format!("/{}/oauth2/token", tenant(server)),
        Endpoint::V2 => format!("/{}/oauth2/v2.0/token", tenant(server)),
    }
}

fn authorize_path(server: &Server, endpoint: Endpoint) -> String {
    match endpoint {
        Endpoint::V1 => format!("/{}/oauth2/authorize", tenant(server)),
        Endpoint::V2 => format!("/{}/oauth2/v2.0/authorize", tenant(server)),
    }
}

/// POSTs a form to the token endpoint.
pub(crate) fn token_request(
    server: &Server,
    endpoint: Endpoint,
    pairs: &[(&str, &str)],
    headers: &[(&str, &str)],
) -> Response {
    let mut all = vec![FORM];
    all.extend_from_slice(headers);
    server.request("POST", &token_path(server, endpoint), &all, Some(form(pairs).as_bytes()))
}

/// The access token of a successful token response.
#[track_caller]
fn access_token(response: Response) -> String {
    response.expect(200).json()["access_token"].as_str().expect("an access_token").to_owned()
}

/// A JWT's header and claims, decoded (not verified).
#[track_caller]
pub(crate) fn jwt(token: &str) -> (Value, Value) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "not a compact JWT: {token}");
    let part = |p: &str| -> Value { serde_json::from_slice(&b64::decode(p).expect("base64url")).expect("JSON") };
    (part(parts[0]), part(parts[1]))
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn fhir_get(server: &Server, token: &str) -> Response {
    server.request("GET", "/Patient", &[("authorization", &bearer(token))], None)
}

fn fhir_post(server: &Server, token: &str) -> Response {
    let body = json!({"resourceType": "Patient", "name": [{"family": "Authority"}]}).to_string();
    server.request(
        "POST",
        "/Patient",
        &[("authorization", &bearer(token)), ("content-type", "application/fhir+json")],
        Some(body.as_bytes()),
    )
}

fn is_guid(text: &str) -> bool {
    text.len() == 36
        && text.char_indices().all(|(i, c)| if [8, 13, 18, 23].contains(&i) { c == '-' } else { c.is_ascii_hexdigit() })
}

/// Asserts an Entra error response and returns its body.
#[track_caller]
fn entra_error(response: Response, status: u16, error: &str, code: u32) -> Value {
    let text = String::from_utf8_lossy(&response.body).into_owned();
    assert_eq!(response.status, status, "{text}");
    assert!(
        response.header("content-type").is_some_and(|t| t.starts_with("application/json")),
        "{:?}",
        response.headers
    );
    assert_eq!(response.header("cache-control"), Some("no-store, no-cache"));
    let body = response.json();
    assert_eq!(body["error"], error, "{body}");
    assert_eq!(body["error_codes"], json!([code]), "{body}");
    let description = body["error_description"].as_str().expect("error_description");
    assert!(description.starts_with(&format!("AADSTS{code}: ")), "{description}");
    let trace_id = body["trace_id"].as_str().expect("trace_id");
    let correlation_id = body["correlation_id"].as_str().expect("correlation_id");
    let timestamp = body["timestamp"].as_str().expect("timestamp");
    assert!(
        description.ends_with(&format!(
            "\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {timestamp}"
        )),
        "{description:?}"
    );
    assert!(is_guid(trace_id), "{trace_id}");
    // "YYYY-MM-DD HH:MM:SSZ"
    let shape: String = timestamp.chars().map(|c| if c.is_ascii_digit() { 'd' } else { c }).collect();
    assert_eq!(shape, "dddd-dd-dd dd:dd:ddZ", "{timestamp}");
    let mut keys: Vec<&str> = body.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["correlation_id", "error", "error_codes", "error_description", "timestamp", "trace_id"]);
    body
}

/// Standard base64 with padding (HTTP Basic).
fn base64_standard(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn random_text(bytes: usize) -> String {
    let mut buf = vec![0; bytes];
    SystemRandom::new().fill(&mut buf).unwrap();
    b64::encode(buf)
}

/// Verifies an RS256 token with an RSA JWK (with ring, not with the server's own code).
#[track_caller]
fn verify_rs256(token: &str, jwk: &Value) {
    let (input, signature) = token.rsplit_once('.').unwrap();
    let n = b64::decode(jwk["n"].as_str().unwrap()).unwrap();
    let e = b64::decode(jwk["e"].as_str().unwrap()).unwrap();
    signature::RsaPublicKeyComponents { n, e }
        .verify(&signature::RSA_PKCS1_2048_8192_SHA256, input.as_bytes(), &b64::decode(signature).unwrap())
        .expect("the token verifies with the published key");
}

fn jwks(server: &Server, endpoint: Endpoint) -> Vec<Value> {
    let path = match endpoint {
        Endpoint::V1 => format!("/{}/discovery/keys", tenant(server)),
        Endpoint::V2 => format!("/{}/discovery/v2.0/keys", tenant(server)),
    };
    server.get(&path).expect(200).json()["keys"].as_array().unwrap().clone()
}

fn kids(keys: &[Value]) -> Vec<String> {
    keys.iter().map(|k| k["kid"].as_str().unwrap().to_owned()).collect()
}

fn write_jwks(keys: &[Value]) -> PathBuf {
    let path = temp_dir("jwks").join("jwks.json");
    std::fs::write(&path, json!({ "keys": keys }).to_string()).unwrap();
    path
}

// ---------------------------------------------------------------------------------------------
// 1. Discovery

#[test]
fn discovery_documents_and_the_signing_keys() {
    let server = Server::start_secure(&[]);
    let authority = authority(&server).to_owned();
    let tenant = tenant(&server).to_owned();
    assert!(is_guid(&tenant), "{tenant}");
    assert_eq!(authority, format!("{}/{tenant}", server.base));

    let v2 = server.get(&format!("/{tenant}/v2.0/.well-known/openid-configuration")).expect(200);
    assert_eq!(v2.header("cache-control"), Some("max-age=86400, private"));
    assert!(v2.header("content-type").unwrap().starts_with("application/json"));
    assert_eq!(v2.header("access-control-allow-origin"), Some("*"));
    let v2 = v2.json();
    assert_eq!(v2["issuer"], format!("{authority}/v2.0"));
    assert_eq!(v2["token_endpoint"], format!("{authority}/oauth2/v2.0/token"));
    assert_eq!(v2["authorization_endpoint"], format!("{authority}/oauth2/v2.0/authorize"));
    assert_eq!(v2["jwks_uri"], format!("{authority}/discovery/v2.0/keys"));
    assert_eq!(v2["scopes_supported"], json!(["openid", "profile", "email", "offline_access"]));
    assert_eq!(v2["id_token_signing_alg_values_supported"], json!(["RS256"]));
    assert_eq!(v2["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(v2["request_uri_parameter_supported"], false);
    for method in ["client_secret_post", "private_key_jwt", "client_secret_basic"] {
        assert!(v2["token_endpoint_auth_methods_supported"].as_array().unwrap().contains(&json!(method)), "{v2}");
    }
    for mode in ["query", "fragment", "form_post"] {
        assert!(v2["response_modes_supported"].as_array().unwrap().contains(&json!(mode)), "{v2}");
    }
    // MSAL takes the tenant from the token endpoint's first path segment.
    let token_endpoint = v2["token_endpoint"].as_str().unwrap();
    let path = token_endpoint.strip_prefix(&server.base).unwrap();
    assert_eq!(path.split('/').nth(1), Some(tenant.as_str()));

    let v1 = server.get(&format!("/{tenant}/.well-known/openid-configuration")).expect(200);
    assert_eq!(v1.header("cache-control"), Some("max-age=86400, private"));
    let v1 = v1.json();
    assert_eq!(v1["issuer"], format!("{authority}/"));
    assert_eq!(v1["token_endpoint"], format!("{authority}/oauth2/token"));
    assert_eq!(v1["authorization_endpoint"], format!("{authority}/oauth2/authorize"));
    assert_eq!(v1["jwks_uri"], format!("{authority}/discovery/keys"));
    assert_eq!(v1["scopes_supported"], json!(["openid"]));

    // Both key URIs publish one RSA key (public members only), with the discovery documents' caching.
    let keys = server.get(&format!("/{tenant}/discovery/v2.0/keys")).expect(200);
    assert_eq!(keys.header("cache-control"), Some("max-age=86400, private"));
    let keys = keys.json()["keys"].as_array().unwrap().clone();
    assert_eq!(keys, jwks(&server, Endpoint::V1));
    assert_eq!(keys.len(), 1, "{keys:?}");
    let key = &keys[0];
    assert_eq!(
        (key["kty"].as_str(), key["use"].as_str(), key["alg"].as_str()),
        (Some("RSA"), Some("sig"), Some("RS256"))
    );
    assert!(key["n"].is_string() && key["e"].is_string() && key["kid"].is_string(), "{key}");
    for private in ["d", "p", "q", "dp", "dq", "qi"] {
        assert!(key.get(private).is_none(), "the JWKS publishes '{private}': {key}");
    }

    // An issued token names that key and verifies with it.
    let (client_id, secret, _) = server.create_app("Discovery", &["FHIR Data Reader"]);
    let token = server.token(&client_id, &secret);
    let (header, _) = jwt(&token);
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["typ"], "JWT");
    assert_eq!(header["kid"], key["kid"]);
    assert_eq!(header["x5t"], key["x5t"]);
    verify_rs256(&token, key);
}

// ---------------------------------------------------------------------------------------------
// 2. client_credentials

#[test]
fn client_credentials_tokens_and_their_claims() {
    let server = Server::start_secure(&[]);
    let authority = authority(&server).to_owned();
    let (client_id, secret, object_id) = server.create_app("Daemon", &["FHIR Data Reader"]);
    let scope = format!("{}/.default", server.base);

    // v2, the secret in the body: Entra's v2 response, numbers as numbers.
    let before = now();
    let response = token_request(
        &server,
        Endpoint::V2,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &client_id),
            ("client_secret", &secret),
            ("scope", &scope),
        ],
        &[],
    )
    .expect(200);
    assert_eq!(response.header("cache-control"), Some("no-store, no-cache"));
    assert!(response.header("content-type").unwrap().starts_with("application/json"));
    let body = response.json();
    let mut keys: Vec<&str> = body.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["access_token", "expires_in", "ext_expires_in", "token_type"], "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3599);
    assert_eq!(body["ext_expires_in"], 3599);

    // The FHIR service's tokens are version 1.0 (as Azure's): iss is the v1 issuer, aud the resource.
    let token = body["access_token"].as_str().unwrap();
    let (header, claims) = jwt(token);
    assert_eq!(header["alg"], "RS256");
    assert_eq!(claims["iss"], format!("{authority}/"));
    assert_eq!(claims["aud"], server.base);
    assert_eq!(claims["appid"], client_id);
    assert_eq!(claims["appidacr"], "1");
    assert_eq!(claims["oid"], object_id);
    assert_eq!(claims["sub"], object_id);
    assert_eq!(claims["tid"], tenant(&server));
    assert_eq!(claims["ver"], "1.0");
    assert_eq!(claims["idtyp"], "app");
    assert!(claims["uti"].is_string(), "{claims}");
    // An RBAC role is not a claim (the service reads assignments); app-only tokens carry no scp.
    assert!(claims.get("roles").is_none() && claims.get("scp").is_none(), "{claims}");
    let iat = claims["iat"].as_i64().unwrap();
    assert!((before - 5..=now() + 5).contains(&iat), "iat {iat}");
    assert_eq!(claims["nbf"].as_i64(), Some(iat));
    assert_eq!(claims["exp"].as_i64(), Some(iat + 3599));
    // A reader: reads, cannot write.
    fhir_get(&server, token).expect(200);
    fhir_post(&server, token).expect(403);

    // HTTP Basic (each part form-encoded, RFC 6749 §2.3.1), with the OpenID Connect scopes MSAL-JS
    // sends alongside `.default`: tolerated, and no refresh or id token for an app.
    let basic = format!(
        "Basic {}",
        base64_standard(format!("{}:{}", form_encode(&client_id), form_encode(&secret)).as_bytes())
    );
    let response = token_request(
        &server,
        Endpoint::V2,
        &[("grant_type", "client_credentials"), ("scope", &format!("{scope} openid profile offline_access"))],
        &[("authorization", &basic)],
    )
    .expect(200);
    let body = response.json();
    assert!(body.get("refresh_token").is_none() && body.get("id_token").is_none(), "{body}");
    let (_, claims) = jwt(body["access_token"].as_str().unwrap());
    assert_eq!(claims["appid"], client_id);
    assert_eq!(claims["aud"], server.base);

    // v1 with `resource`: numbers as strings, the resource echoed.
    let before = now();
    let body = token_request(
        &server,
        Endpoint::V1,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &client_id),
            ("client_secret", &secret),
            ("resource", &server.base),
        ],
        &[],
    )
    .expect(200)
    .json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], "3599");
    assert_eq!(body["ext_expires_in"], "3599");
    assert_eq!(body["resource"], server.base);
    let not_before: i64 = body["not_before"].as_str().unwrap().parse().unwrap();
    assert!((before - 5..=now() + 5).contains(&not_before), "{body}");
    assert_eq!(body["expires_on"], (not_before + 3599).to_string());
    let token = body["access_token"].as_str().unwrap();
    let (_, claims) = jwt(token);
    assert_eq!(claims["iss"], format!("{authority}/"));
    assert_eq!(claims["aud"], server.base);
    assert_eq!(claims["ver"], "1.0");
    fhir_get(&server, token).expect(200);
}

#[test]
fn client_credentials_errors_in_entras_shape() {
    let server = Server::start_secure(&[]);
    let (client_id, secret, _) = server.create_app("Daemon", &["FHIR Data Reader"]);
    let public = server.admin(&["app", "create", "--name", "Portal", "--public", "--redirect-uri", REDIRECT_URI]);
    let public_id = public["clientId"].as_str().unwrap();
    let scope = format!("{}/.default", server.base);
    let grant = ("grant_type", "client_credentials");
    let v2 = |pairs: &[(&str, &str)]| token_request(&server, Endpoint::V2, pairs, &[]);
    let v1 = |pairs: &[(&str, &str)]| token_request(&server, Endpoint::V1, pairs, &[]);

    // The client: unknown, wrong secret, no credentials.
    let unknown = "11111111-2222-3333-4444-555555555555";
    let body = entra_error(
        v2(&[grant, ("client_id", unknown), ("client_secret", &secret), ("scope", &scope)]),
        400,
        "unauthorized_client",
        700016,
    );
    assert!(body["error_description"].as_str().unwrap().contains(unknown), "{body}");
    entra_error(
        v2(&[grant, ("client_id", &client_id), ("client_secret", "not-the-secret"), ("scope", &scope)]),
        401,
        "invalid_client",
        7000215,
    );
    // A wrong secret sharing the real one's first characters (its hint) goes through the slow check.
    let last = if secret.ends_with('x') { 'y' } else { 'x' };
    let near_miss = format!("{}{last}", &secret[..secret.len() - 1]);
    entra_error(
        v2(&[grant, ("client_id", &client_id), ("client_secret", &near_miss), ("scope", &scope)]),
        401,
        "invalid_client",
        7000215,
    );
    entra_error(v2(&[grant, ("client_id", &client_id), ("scope", &scope)]), 401, "invalid_client", 7000218);

    // The target: scope missing, without `/.default`, of an unknown resource, of two resources;
    // v1's `resource` missing or unknown; `resource` on v2.
    let with_secret = |extra: &[(&'static str, &str)]| -> Vec<(&str, String)> {
        let mut pairs = vec![("grant_type", "client_credentials".to_owned()), ("client_id", client_id.clone())];
        pairs.push(("client_secret", secret.clone()));
        pairs.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        pairs
    };
    let send = |endpoint: Endpoint, pairs: Vec<(&str, String)>| {
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        token_request(&server, endpoint, &pairs, &[])
    };
    let body = entra_error(send(Endpoint::V2, with_secret(&[])), 400, "invalid_request", 900144);
    assert!(body["error_description"].as_str().unwrap().contains("'scope'"), "{body}");
    let body = entra_error(
        send(Endpoint::V2, with_secret(&[("scope", &format!("{}/user_impersonation", server.base))])),
        400,
        "invalid_scope",
        1002012,
    );
    assert!(body["error_description"].as_str().unwrap().contains("/.default"), "{body}");
    entra_error(send(Endpoint::V2, with_secret(&[("scope", "openid profile")])), 400, "invalid_scope", 1002012);
    let body = entra_error(
        send(Endpoint::V2, with_secret(&[("scope", "https://elsewhere.example/.default")])),
        400,
        "invalid_resource",
        500011,
    );
    assert!(body["error_description"].as_str().unwrap().contains("https://elsewhere.example"), "{body}");
    entra_error(
        send(Endpoint::V2, with_secret(&[("scope", &format!("{scope} https://elsewhere.example/.default"))])),
        400,
        "invalid_scope",
        700022,
    );
    entra_error(
        send(Endpoint::V2, with_secret(&[("scope", &scope), ("resource", &server.base)])),
        400,
        "invalid_request",
        901002,
    );
    let body = entra_error(send(Endpoint::V1, with_secret(&[])), 400, "invalid_request", 900144);
    assert!(body["error_description"].as_str().unwrap().contains("'resource'"), "{body}");
    entra_error(
        send(Endpoint::V1, with_secret(&[("resource", "https://elsewhere.example")])),
        400,
        "invalid_resource",
        500011,
    );

    // The grant: unsupported, missing; a body that is not a form.
    let body = entra_error(
        v2(&[("grant_type", "password"), ("client_id", &client_id), ("scope", &scope)]),
        400,
        "unsupported_grant_type",
        70003,
    );
    assert!(body["error_description"].as_str().unwrap().contains("'password'"), "{body}");
    entra_error(v1(&[("client_id", &client_id), ("resource", &server.base)]), 400, "invalid_request", 900144);
    let json_body = json!({"grant_type": "client_credentials"}).to_string();
    entra_error(
        server.request(
            "POST",
            &token_path(&server, Endpoint::V2),
            &[("content-type", "application/json")],
            Some(json_body.as_bytes()),
        ),
        400,
        "invalid_request",
        900144,
    );

    // A public client has no credentials, so it cannot use client_credentials; presenting a
    // secret anyway is refused as such.
    entra_error(v2(&[grant, ("client_id", public_id), ("scope", &scope)]), 401, "invalid_client", 7000218);
    entra_error(
        v2(&[grant, ("client_id", public_id), ("client_secret", "anything"), ("scope", &scope)]),
        401,
        "invalid_client",
        700025,
    );

    // MSAL's client-request-id comes back as the correlation id.
    let correlation = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
    let body = entra_error(
        token_request(
            &server,
            Endpoint::V2,
            &[grant, ("client_id", unknown), ("scope", &scope)],
            &[("client-request-id", correlation)],
        ),
        400,
        "unauthorized_client",
        700016,
    );
    assert_eq!(body["correlation_id"], correlation);
}

#[test]
fn client_secrets_rotate_expire_and_can_be_removed() {
    let server = Server::start_secure(&[]);
    let (client_id, first, object_id) = server.create_app("Daemon", &["FHIR Data Reader"]);
    let scope = format!("{}/.default", server.base);
    let request = |secret: &str| {
        token_request(
            &server,
            Endpoint::V2,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &client_id),
                ("client_secret", secret),
                ("scope", &scope),
            ],
            &[],
        )
    };
    let first_key =
        server.admin(&["app", "secret", "list", "--app", &client_id])[0]["keyId"].as_str().unwrap().to_owned();

    // A second secret: both work.
    let added = server.admin(&["app", "secret", "add", "--app", &object_id, "--name", "rotation"]);
    let second = added["clientSecret"].as_str().unwrap().to_owned();
    access_token(request(&first));
    access_token(request(&second));

    // The first removed (by the CLI, while the server runs): refused as a wrong secret, though the
    // server verified it a moment ago; the second still works.
    server.admin(&["app", "secret", "remove", "--app", &client_id, "--key-id", &first_key]);
    entra_error(request(&first), 401, "invalid_client", 7000215);
    access_token(request(&second));

    // An expired secret (the CLI makes none, so the store directly): refused as expired.
    let store = server.identity_store();
    let t = now();
    let (_, expired) = store.add_secret(&client_id, "old", t - 200, t - 100).unwrap();
    let body = entra_error(request(&expired), 401, "invalid_client", 7000222);
    assert!(body["error_description"].as_str().unwrap().contains("expired"), "{body}");
    access_token(request(&second));
}

/// `--access-token-version 2` and `--token-lifetime`: v2 claims (`aud` the FHIR service's app id,
/// `azp`), whichever endpoint the client called.
#[test]
fn version_2_access_tokens_and_a_configured_lifetime() {
    let server = Server::start_secure(&["--access-token-version", "2", "--token-lifetime", "600"]);
    let authority = authority(&server).to_owned();
    let (client_id, secret, object_id) = server.create_app("Daemon", &["FHIR Data Reader"]);
    let scope = format!("{}/.default", server.base);
    let body = token_request(
        &server,
        Endpoint::V2,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &client_id),
            ("client_secret", &secret),
            ("scope", &scope),
        ],
        &[],
    )
    .expect(200)
    .json();
    assert_eq!(body["expires_in"], 600);
    let token = body["access_token"].as_str().unwrap();
    let (_, claims) = jwt(token);
    assert_eq!(claims["iss"], format!("{authority}/v2.0"));
    assert_eq!(claims["ver"], "2.0");
    assert_eq!(claims["azp"], client_id);
    assert_eq!(claims["azpacr"], "1");
    assert_eq!(claims["oid"], object_id);
    assert!(claims.get("appid").is_none(), "{claims}");
    let app_id = claims["aud"].as_str().unwrap().to_owned();
    assert!(is_guid(&app_id), "v2 aud is the API's client id: {claims}");
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 600);
    fhir_get(&server, token).expect(200);

    // The app id names the service too (`api://{id}/.default`, or as v1's resource).
    let token = access_token(token_request(
        &server,
        Endpoint::V2,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &client_id),
            ("client_secret", &secret),
            ("scope", &format!("api://{app_id}/.default")),
        ],
        &[],
    ));
    assert_eq!(jwt(&token).1["aud"], app_id);
    let body = token_request(
        &server,
        Endpoint::V1,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &client_id),
            ("client_secret", &secret),
            ("resource", &app_id),
        ],
        &[],
    )
    .expect(200)
    .json();
    assert_eq!(body["expires_in"], "600");
    let (_, claims) = jwt(body["access_token"].as_str().unwrap());
    assert_eq!((claims["aud"].as_str(), claims["ver"].as_str()), (Some(app_id.as_str()), Some("2.0")));
}

// ---------------------------------------------------------------------------------------------
// 3. Authorization code + PKCE

/// A PKCE verifier and its S256 challenge.
pub(crate) fn pkce() -> (String, String) {
    let verifier = random_text(32);
    let challenge = b64::encode(ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes()));
    (verifier, challenge)
}

pub(crate) fn authorize_get(server: &Server, endpoint: Endpoint, params: &[(&str, &str)]) -> Response {
    server.get(&format!("{}?{}", authorize_path(server, endpoint), form(params)))
}

/// The hidden fields of an HTML form, unescaped.
pub(crate) fn hidden_inputs(html: &str) -> Vec<(String, String)> {
    let unescape = |s: &str| {
        s.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&#39;", "'").replace("&amp;", "&")
    };
    let mut fields = Vec::new();
    for part in html.split("<input type=\"hidden\" ").skip(1) {
        let name = part.split("name=\"").nth(1).and_then(|r| r.split('"').next()).unwrap();
        let value = part.split("value=\"").nth(1).and_then(|r| r.split('"').next()).unwrap();
        fields.push((unescape(name), unescape(value)));
    }
    fields
}

/// Signs in as a browser would: GETs the authorization URL, then posts the page's form (its hidden
/// fields with the name and password) to the same endpoint.
pub(crate) fn sign_in(
    server: &Server,
    endpoint: Endpoint,
    params: &[(&str, &str)],
    login: &str,
    password: &str,
) -> Response {
    let page = authorize_get(server, endpoint, params).expect(200);
    let html = String::from_utf8(page.body).unwrap();
    let mut fields = hidden_inputs(&html);
    assert_eq!(fields.len(), params.len(), "every parameter travels in the form: {html}");
    fields.push(("login".into(), login.into()));
    fields.push(("passwd".into(), password.into()));
    server.request("POST", &authorize_path(server, endpoint), &[FORM], Some(form(&fields).as_bytes()))
}

/// The redirect's target (without its query) and query parameters.
#[track_caller]
pub(crate) fn redirect(response: &Response) -> (String, HashMap<String, String>) {
    assert_eq!(response.status, 302, "{}", String::from_utf8_lossy(&response.body));
    let location = response.header("location").expect("a Location");
    let (target, query) = location.split_once('?').unwrap_or((location, ""));
    let params = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (form_decode(k), form_decode(v))
        })
        .collect();
    (target.to_owned(), params)
}

fn create_user(server: &Server, roles: &[&str]) -> String {
    let mut args = vec!["user", "create", "--name", "alice@example.org", "--display-name", "Alice Example"];
    args.extend(["--password", PASSWORD]);
    for role in roles {
        args.extend(["--role", role]);
    }
    server.admin(&args)["objectId"].as_str().unwrap().to_owned()
}

#[test]
fn authorization_code_with_pkce_signs_a_user_in() {
    let server = Server::start_secure(&[]);
    let authority = authority(&server).to_owned();
    let user_id = create_user(&server, &["FHIR Data Reader"]);
    let app = server.admin(&["app", "create", "--name", "Portal", "--public", "--redirect-uri", REDIRECT_URI]);
    let client_id = app["clientId"].as_str().unwrap().to_owned();
    let scope = format!("openid profile offline_access {}/.default", server.base);
    let (verifier, challenge) = pkce();
    let params = [
        ("client_id", client_id.as_str()),
        ("response_type", "code"),
        ("redirect_uri", REDIRECT_URI),
        ("scope", &scope),
        ("state", "state-123"),
        ("nonce", "nonce-456"),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
    ];

    // The sign-in page: an accessible form, never framed.
    let page = authorize_get(&server, Endpoint::V2, &params).expect(200);
    assert!(page.header("content-type").unwrap().starts_with("text/html"));
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    assert!(page.header("content-security-policy").unwrap().contains("frame-ancestors 'none'"));
    assert_eq!(page.header("cache-control"), Some("no-store, no-cache"));
    let html = String::from_utf8(page.body).unwrap();
    for needle in [
        "<html lang=\"en\">",
        "<label for=\"login\">",
        "<label for=\"passwd\">",
        "autocomplete=\"username\"",
        "autocomplete=\"current-password\"",
        "type=\"password\"",
        "method=\"post\"",
    ] {
        assert!(html.contains(needle), "no {needle} in {html}");
    }
    assert!(!html.contains("AADSTS"), "{html}");

    // A wrong password: the page again, with AADSTS50126 and the name kept; no redirect.
    let wrong = sign_in(&server, Endpoint::V2, &params, "alice@example.org", "wrong password").expect(200);
    assert!(wrong.header("location").is_none());
    let html = String::from_utf8(wrong.body).unwrap();
    assert!(html.contains("AADSTS50126"), "{html}");
    assert!(html.contains("role=\"alert\""), "{html}");
    assert!(html.contains("value=\"alice@example.org\""), "{html}");

    // The right one: back to the redirect URI with a code and the state.
    let response = sign_in(&server, Endpoint::V2, &params, "alice@example.org", PASSWORD);
    assert_eq!(response.header("cache-control"), Some("no-store, no-cache"));
    let (target, query) = redirect(&response);
    assert_eq!(target, REDIRECT_URI);
    assert_eq!(query.get("state").map(String::as_str), Some("state-123"));
    assert!(!query.contains_key("error"), "{query:?}");
    let code = query["code"].clone();

    let redeem = |code: &str, verifier: &str| {
        token_request(
            &server,
            Endpoint::V2,
            &[
                ("grant_type", "authorization_code"),
                ("client_id", &client_id),
                ("code", code),
                ("redirect_uri", REDIRECT_URI),
                ("code_verifier", verifier),
            ],
            &[],
        )
    };
    let body = redeem(&code, &verifier).expect(200).json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3599);
    assert!(body["scope"].is_string(), "{body}");

    // The access token: a user's, with scp and the user's names.
    let access = body["access_token"].as_str().unwrap().to_owned();
    let (_, claims) = jwt(&access);
    assert_eq!(claims["idtyp"], "user");
    assert_eq!(claims["scp"], "user_impersonation");
    assert_eq!(claims["name"], "Alice Example");
    assert_eq!(claims["upn"], "alice@example.org");
    assert_eq!(claims["unique_name"], "alice@example.org");
    assert_eq!(claims["oid"], user_id);
    assert_ne!(claims["sub"], user_id, "a user's sub is pairwise");
    assert_eq!(claims["appid"], client_id);
    assert_eq!(claims["appidacr"], "0");
    assert_eq!(claims["aud"], server.base);
    assert_eq!(claims["iss"], format!("{authority}/"));
    fhir_get(&server, &access).expect(200);

    // The id token (openid was asked): for the client, with the nonce.
    let (_, id) = jwt(body["id_token"].as_str().expect("an id_token"));
    assert_eq!(id["aud"], client_id);
    assert_eq!(id["nonce"], "nonce-456");
    assert_eq!(id["iss"], format!("{authority}/v2.0"));
    assert_eq!(id["oid"], user_id);
    assert_eq!(id["preferred_username"], "alice@example.org");
    assert_eq!(id["tid"], tenant(&server));

    // A code is good once.
    entra_error(redeem(&code, &verifier), 400, "invalid_grant", 54005);

    // The refresh token (offline_access was asked) gives new tokens, once.
    let refresh = body["refresh_token"].as_str().expect("a refresh_token").to_owned();
    let refresh_with = |token: &str| {
        token_request(
            &server,
            Endpoint::V2,
            &[("grant_type", "refresh_token"), ("client_id", &client_id), ("refresh_token", token)],
            &[],
        )
    };
    let renewed = refresh_with(&refresh).expect(200).json();
    let new_access = renewed["access_token"].as_str().unwrap();
    let new_refresh = renewed["refresh_token"].as_str().expect("a new refresh_token");
    assert_ne!(new_access, access);
    assert_ne!(new_refresh, refresh);
    let (_, claims) = jwt(new_access);
    assert_eq!((claims["oid"].as_str(), claims["idtyp"].as_str()), (Some(user_id.as_str()), Some("user")));
    fhir_get(&server, new_access).expect(200);
    entra_error(refresh_with(&refresh), 400, "invalid_grant", 700084);
    refresh_with(new_refresh).expect(200);

    // Another sign-in, redeemed with the wrong verifier.
    let (target, query) = redirect(&sign_in(&server, Endpoint::V2, &params, "alice@example.org", PASSWORD));
    assert_eq!(target, REDIRECT_URI);
    let (other_verifier, _) = pkce();
    entra_error(redeem(&query["code"], &other_verifier), 400, "invalid_grant", 501481);

    // Without openid and offline_access: an access token only.
    let (verifier, challenge) = pkce();
    let fhir_only = format!("{}/.default", server.base);
    let params = [
        ("client_id", client_id.as_str()),
        ("response_type", "code"),
        ("redirect_uri", REDIRECT_URI),
        ("scope", &fhir_only),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
    ];
    let (_, query) = redirect(&sign_in(&server, Endpoint::V2, &params, "alice@example.org", PASSWORD));
    assert!(!query.contains_key("state"), "{query:?}");
    let body = redeem(&query["code"], &verifier).expect(200).json();
    assert!(body["access_token"].is_string(), "{body}");
    assert!(body.get("id_token").is_none() && body.get("refresh_token").is_none(), "{body}");
}

#[test]
fn authorization_errors_are_redirected_only_to_registered_uris() {
    let server = Server::start_secure(&[]);
    let app = server.admin(&["app", "create", "--name", "Portal", "--public", "--redirect-uri", REDIRECT_URI]);
    let client_id = app["clientId"].as_str().unwrap().to_owned();
    let (_, challenge) = pkce();
    let scope = format!("openid {}/.default", server.base);

    // A public client without PKCE: the error goes back to the (registered) client.
    let response = authorize_get(
        &server,
        Endpoint::V2,
        &[
            ("client_id", &client_id),
            ("response_type", "code"),
            ("redirect_uri", REDIRECT_URI),
            ("scope", &scope),
            ("state", "xyz"),
        ],
    );
    let (target, query) = redirect(&response);
    assert_eq!(target, REDIRECT_URI);
    assert_eq!(query["error"], "invalid_request");
    assert!(query["error_description"].starts_with("AADSTS9002325: "), "{query:?}");
    assert_eq!(query["state"], "xyz");
    assert!(!query.contains_key("code"));

    // A response type other than code, and a scope of an unknown resource: redirected too.
    let (_, query) = redirect(&authorize_get(
        &server,
        Endpoint::V2,
        &[
            ("client_id", &client_id),
            ("response_type", "token"),
            ("redirect_uri", REDIRECT_URI),
            ("scope", &scope),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ],
    ));
    assert_eq!(query["error"], "unsupported_response_type");
    assert!(query["error_description"].starts_with("AADSTS700054: "), "{query:?}");
    let (_, query) = redirect(&authorize_get(
        &server,
        Endpoint::V2,
        &[
            ("client_id", &client_id),
            ("response_type", "code"),
            ("redirect_uri", REDIRECT_URI),
            ("scope", "openid https://elsewhere.example/.default"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ],
    ));
    assert_eq!(query["error"], "invalid_scope");
    assert!(query["error_description"].starts_with("AADSTS70011: "), "{query:?}");

    // An unregistered redirect URI: an error page, never a redirect (that is how codes get stolen).
    let response = authorize_get(
        &server,
        Endpoint::V2,
        &[
            ("client_id", &client_id),
            ("response_type", "code"),
            ("redirect_uri", "https://attacker.example/cb"),
            ("scope", &scope),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ],
    );
    assert_eq!(response.status, 400);
    assert!(response.header("location").is_none());
    assert!(response.header("content-type").unwrap().starts_with("text/html"));
    let html = String::from_utf8(response.body).unwrap();
    assert!(html.contains("AADSTS50011"), "{html}");
    assert!(html.contains("<html lang=\"en\">"), "{html}");

    // An unknown client: an error page.
    let unknown = "11111111-2222-3333-4444-555555555555";
    let response = authorize_get(
        &server,
        Endpoint::V2,
        &[
            ("client_id", unknown),
            ("response_type", "code"),
            ("redirect_uri", REDIRECT_URI),
            ("scope", &scope),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ],
    );
    assert_eq!(response.status, 400);
    assert!(response.header("location").is_none());
    let html = String::from_utf8(response.body).unwrap();
    assert!(html.contains("AADSTS700016"), "{html}");

    // The same rules on the v1 endpoint.
    let response = authorize_get(
        &server,
        Endpoint::V1,
        &[("client_id", &client_id), ("response_type", "code"), ("redirect_uri", "https://attacker.example/cb")],
    );
    assert_eq!(response.status, 400);
    assert!(response.header("location").is_none());
}

#[test]
fn a_confidential_app_redeems_its_code_with_its_secret() {
    let server = Server::start_secure(&[]);
    let user_id = create_user(&server, &[]);
    let app = server.admin(&["app", "create", "--name", "Web app", "--redirect-uri", REDIRECT_URI]);
    let client_id = app["clientId"].as_str().unwrap().to_owned();
    let secret = app["clientSecret"].as_str().unwrap().to_owned();
    // A confidential client may sign in without PKCE; the v1 endpoint names the resource.
    let params = [
        ("client_id", client_id.as_str()),
        ("response_type", "code"),
        ("redirect_uri", REDIRECT_URI),
        ("resource", &server.base),
        ("state", "v1"),
    ];
    let (target, query) = redirect(&sign_in(&server, Endpoint::V1, &params, "alice@example.org", PASSWORD));
    assert_eq!(target, REDIRECT_URI);
    assert_eq!(query["state"], "v1");
    let code = query["code"].clone();
    let mut pairs = vec![
        ("grant_type", "authorization_code"),
        ("client_id", client_id.as_str()),
        ("code", &code),
        ("redirect_uri", REDIRECT_URI),
    ];

    // Without its secret: refused before the code is spent.
    entra_error(token_request(&server, Endpoint::V1, &pairs, &[]), 401, "invalid_client", 7000218);
    let mut wrong = pairs.clone();
    wrong.push(("client_secret", "not-the-secret"));
    entra_error(token_request(&server, Endpoint::V1, &wrong, &[]), 401, "invalid_client", 7000215);

    // With it: tokens, v1-shaped (a refresh token always, numbers as strings).
    pairs.push(("client_secret", &secret));
    let body = token_request(&server, Endpoint::V1, &pairs, &[]).expect(200).json();
    assert_eq!(body["expires_in"], "3599");
    assert_eq!(body["resource"], server.base);
    assert!(body["refresh_token"].is_string(), "{body}");
    let (_, claims) = jwt(body["access_token"].as_str().unwrap());
    assert_eq!(claims["oid"], user_id);
    assert_eq!(claims["appid"], client_id);
    assert_eq!(claims["appidacr"], "1");
    assert_eq!(claims["idtyp"], "user");
    // No role assignment: authenticated, but not allowed.
    fhir_get(&server, body["access_token"].as_str().unwrap()).expect(403);
}

// ---------------------------------------------------------------------------------------------
// 4. private_key_jwt

/// An EC P-384 key pair for ES384 client assertions.
pub(crate) struct EcKey {
    pair: signature::EcdsaKeyPair,
    kid: String,
}

impl EcKey {
    pub(crate) fn generate(kid: &str) -> EcKey {
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P384_SHA384_FIXED_SIGNING;
        let pkcs8 = signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let pair = signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
        EcKey { pair, kid: kid.to_owned() }
    }

    pub(crate) fn jwk(&self) -> Value {
        let point = self.pair.public_key().as_ref();
        assert_eq!((point.len(), point[0]), (97, 4), "an uncompressed P-384 point");
        json!({
            "kty": "EC",
            "crv": "P-384",
            "x": b64::encode(&point[1..49]),
            "y": b64::encode(&point[49..]),
            "kid": self.kid,
            "use": "sig",
        })
    }

    pub(crate) fn sign(&self, claims: &Value) -> String {
        let header = json!({"alg": "ES384", "typ": "JWT", "kid": self.kid});
        let input = format!("{}.{}", b64::encode(header.to_string()), b64::encode(claims.to_string()));
        let signature = self.pair.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
        format!("{input}.{}", b64::encode(signature.as_ref()))
    }
}

/// Client-assertion claims as MSAL and SMART backend services make them.
pub(crate) fn assertion_claims(client_id: &str, audience: &str, exp_in: i64) -> Value {
    let t = now();
    json!({
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "jti": random_text(16),
        "iat": t.min(t + exp_in - 60),
        "nbf": t.min(t + exp_in - 60),
        "exp": t + exp_in,
    })
}

fn assertion_request(server: &Server, endpoint: Endpoint, client_id: &str, assertion: &str) -> Response {
    let target = match endpoint {
        Endpoint::V1 => ("resource", server.base.clone()),
        Endpoint::V2 => ("scope", format!("{}/.default", server.base)),
    };
    token_request(
        server,
        endpoint,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", assertion),
            (target.0, &target.1),
        ],
        &[],
    )
}

#[test]
fn private_key_jwt_with_an_ec_key() {
    let server = Server::start_secure(&[]);
    let authority = authority(&server).to_owned();
    let key = EcKey::generate("backend-key-1");
    let jwks = write_jwks(&[key.jwk()]);
    let app = server.admin(&[
        "app",
        "create",
        "--name",
        "Backend",
        "--service",
        "--jwks",
        jwks.to_str().unwrap(),
        "--role",
        "FHIR Data Reader",
    ]);
    let _ = std::fs::remove_dir_all(jwks.parent().unwrap());
    assert!(app["clientSecret"].is_null(), "a service gets no secret: {app}");
    let client_id = app["clientId"].as_str().unwrap().to_owned();
    let endpoint = format!("{authority}/oauth2/v2.0/token");

    // A good assertion: a token that works on the FHIR API, marked as certificate-authenticated.
    let assertion = key.sign(&assertion_claims(&client_id, &endpoint, 300));
    let token = access_token(assertion_request(&server, Endpoint::V2, &client_id, &assertion));
    let (_, claims) = jwt(&token);
    assert_eq!(claims["appid"], client_id);
    assert_eq!(claims["appidacr"], "2");
    assert_eq!(claims["oid"], app["objectId"]);
    fhir_get(&server, &token).expect(200);
    fhir_post(&server, &token).expect(403);

    // The same assertion again: a replay.
    entra_error(assertion_request(&server, Endpoint::V2, &client_id, &assertion), 401, "invalid_client", 700025);

    // Addressed to another audience.
    let elsewhere = key.sign(&assertion_claims(&client_id, "https://elsewhere.example/token", 300));
    entra_error(assertion_request(&server, Endpoint::V2, &client_id, &elsewhere), 401, "invalid_client", 700023);

    // Expired (beyond the 5 minutes of clock skew).
    let expired = key.sign(&assertion_claims(&client_id, &endpoint, -600));
    entra_error(assertion_request(&server, Endpoint::V2, &client_id, &expired), 401, "invalid_client", 700024);

    // Signed by another key (claiming the registered key's kid).
    let forged = EcKey::generate("backend-key-1").sign(&assertion_claims(&client_id, &endpoint, 300));
    entra_error(assertion_request(&server, Endpoint::V2, &client_id, &forged), 401, "invalid_client", 700027);

    // Valid for longer than an hour; without a jti; signed with HMAC (the "key" being public).
    let too_long = key.sign(&assertion_claims(&client_id, &endpoint, 2 * 3600));
    entra_error(assertion_request(&server, Endpoint::V2, &client_id, &too_long), 401, "invalid_client", 700024);
    let mut claims = assertion_claims(&client_id, &endpoint, 300);
    claims.as_object_mut().unwrap().remove("jti");
    entra_error(
        assertion_request(&server, Endpoint::V2, &client_id, &key.sign(&claims)),
        401,
        "invalid_client",
        700025,
    );
    let header = b64::encode(json!({"alg": "HS256", "typ": "JWT", "kid": "backend-key-1"}).to_string());
    let payload = b64::encode(assertion_claims(&client_id, &endpoint, 300).to_string());
    let hmac = format!("{header}.{payload}.{}", random_text(32));
    entra_error(assertion_request(&server, Endpoint::V2, &client_id, &hmac), 401, "invalid_client", 700027);

    // Naming another client as issuer.
    let mut claims = assertion_claims(&client_id, &endpoint, 300);
    claims["iss"] = json!("11111111-2222-3333-4444-555555555555");
    entra_error(
        assertion_request(&server, Endpoint::V2, &client_id, &key.sign(&claims)),
        401,
        "invalid_client",
        700021,
    );

    // The v1 token endpoint takes an assertion addressed to it; without client_id the client is
    // the assertion's issuer.
    let v1 = key.sign(&assertion_claims(&client_id, &format!("{authority}/oauth2/token"), 300));
    let body = token_request(
        &server,
        Endpoint::V1,
        &[
            ("grant_type", "client_credentials"),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", &v1),
            ("resource", &server.base),
        ],
        &[],
    )
    .expect(200)
    .json();
    assert_eq!(jwt(body["access_token"].as_str().unwrap()).1["appid"], client_id);
}

#[test]
fn private_key_jwt_with_rsa_keys() {
    let server = Server::start_secure(&[]);
    let authority = authority(&server).to_owned();
    let endpoint = format!("{authority}/oauth2/v2.0/token");
    let key = fhirside_identity::keys::SigningKey::generate(now()).unwrap();
    // Registered without `alg`, so that the key may sign RS384 as well as RS256.
    let mut jwk = serde_json::to_value(key.jwk()).unwrap();
    jwk.as_object_mut().unwrap().remove("alg");
    let jwks = write_jwks(&[jwk]);
    // A confidential app (it has a secret too) may authenticate with a key instead.
    let app = server.admin(&[
        "app",
        "create",
        "--name",
        "Certificate app",
        "--jwks",
        jwks.to_str().unwrap(),
        "--role",
        "FHIR Data Reader",
    ]);
    let _ = std::fs::remove_dir_all(jwks.parent().unwrap());
    let client_id = app["clientId"].as_str().unwrap().to_owned();

    // RS256 with `kid` and `x5t`, as MSAL signs.
    let assertion = key.sign(&assertion_claims(&client_id, &endpoint, 600));
    let token = access_token(assertion_request(&server, Endpoint::V2, &client_id, &assertion));
    assert_eq!(jwt(&token).1["appidacr"], "2");
    fhir_get(&server, &token).expect(200);

    // RS384, the key named by `kid` only.
    let pair = signature::RsaKeyPair::from_pkcs8(&key.pkcs8).unwrap();
    let header = json!({"alg": "RS384", "typ": "JWT", "kid": key.kid});
    let claims = assertion_claims(&client_id, &endpoint, 300);
    let input = format!("{}.{}", b64::encode(header.to_string()), b64::encode(claims.to_string()));
    let mut sig = vec![0; pair.public().modulus_len()];
    pair.sign(&signature::RSA_PKCS1_SHA384, &SystemRandom::new(), input.as_bytes(), &mut sig).unwrap();
    let assertion = format!("{input}.{}", b64::encode(&sig));
    let token = access_token(assertion_request(&server, Endpoint::V2, &client_id, &assertion));
    fhir_get(&server, &token).expect(200);

    // A secret and an assertion together: one method only.
    let other = key.sign(&assertion_claims(&client_id, &endpoint, 300));
    entra_error(
        token_request(
            &server,
            Endpoint::V2,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &client_id),
                ("client_secret", app["clientSecret"].as_str().unwrap()),
                ("client_assertion_type", ASSERTION_TYPE),
                ("client_assertion", &other),
                ("scope", &format!("{}/.default", server.base)),
            ],
            &[],
        ),
        400,
        "invalid_request",
        50027,
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Another Fhirside trusting this authority as an external OpenID Connect issuer

#[test]
fn another_fhirside_trusts_the_authority_as_an_oidc_issuer() {
    // A: the authority; it issues tokens for its own service and for B's.
    let a = Server::start_secure(&["--audience", "https://fhir-a.example", "--audience", "https://fhir-b.example"]);
    let a_authority = authority(&a).to_owned();
    let (client_id, secret, object_id) = a.create_app("Reader of B", &["globalReader"]);
    let (admin_id, admin_secret, admin_oid) = a.create_app("Allowed on B", &[]);

    // B: trusts A by its authority URL only (v1 form: no /v2.0), finding the keys by discovery.
    let b = Server::launch(
        &temp_dir("oidc-b"),
        &[
            "--auth",
            "oidc",
            "--authority",
            &a_authority,
            "--authority-ca",
            a.ca.as_ref().unwrap().to_str().unwrap(),
            "--audience",
            "https://fhir-b.example",
            "--allowed-object-id",
            &admin_oid,
        ],
        None,
    );
    assert!(b.tenant.is_none(), "B has no authority of its own");
    let token_for = |client_id: &str, secret: &str, resource: &str| {
        access_token(token_request(
            &a,
            Endpoint::V1,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", client_id),
                ("client_secret", secret),
                ("resource", resource),
            ],
            &[],
        ))
    };

    // An A token for B carries the app role, which is all B knows of the caller: read, not write.
    let token = token_for(&client_id, &secret, "https://fhir-b.example");
    let (header, claims) = jwt(&token);
    assert_eq!(claims["aud"], "https://fhir-b.example");
    assert_eq!(claims["iss"], format!("{a_authority}/"));
    assert_eq!(claims["roles"], json!(["globalReader"]));
    fhir_get(&b, &token).expect(200);
    fhir_post(&b, &token).expect(403);

    // A token for A's own service is not for B; nor is no token.
    let for_a = token_for(&client_id, &secret, "https://fhir-a.example");
    assert_eq!(jwt(&for_a).1["aud"], "https://fhir-a.example");
    let refused = fhir_get(&b, &for_a).expect(401);
    let challenge = refused.header("www-authenticate").unwrap();
    assert!(challenge.contains(&format!("authorization_uri=\"{a_authority}\"")), "{challenge}");
    assert!(challenge.contains("resource_id=\"https://fhir-b.example\""), "{challenge}");
    b.get("/Patient").expect(401);

    // B's --allowed-object-id: an app with no role at all may write on B.
    let allowed = token_for(&admin_id, &admin_secret, "https://fhir-b.example");
    fhir_post(&b, &allowed).expect(201);

    // A rotates its signing key. A token signed before (never shown to B) and one signed after
    // (an unknown kid: B refetches A's keys) are both accepted.
    let before = token_for(&client_id, &secret, "https://fhir-b.example");
    let rotated = a.admin(&["authority", "rotate-key"]);
    assert_eq!(rotated["retiredKids"], json!([header["kid"]]));
    let after = token_for(&client_id, &secret, "https://fhir-b.example");
    assert_eq!(jwt(&after).0["kid"], rotated["kid"]);
    assert_ne!(rotated["kid"], header["kid"]);
    fhir_get(&b, &after).expect(200);
    fhir_get(&b, &before).expect(200);
    fhir_get(&b, &token).expect(200);

    // A role assigned on B's own data directory to the A-issued object id grants B's write.
    let assigned = b.admin(&["role", "assign", "--role", "FHIR Data Writer", "--assignee", &object_id]);
    assert_eq!(assigned["principalId"], object_id);
    crate::access::wait_for_external_changes();
    fhir_post(&b, &after).expect(201);
}

// ---------------------------------------------------------------------------------------------
// 6. Key rotation on the built-in authority

#[test]
fn key_rotation_keeps_issued_tokens_valid() {
    let server = Server::start_secure(&[]);
    let (client_id, secret, _) = server.create_app("Daemon", &["FHIR Data Reader"]);
    let used = server.token(&client_id, &secret);
    let unused = server.token(&client_id, &secret);
    let old_kid = jwt(&used).0["kid"].as_str().unwrap().to_owned();
    fhir_get(&server, &used).expect(200);

    let rotated = server.admin(&["authority", "rotate-key"]);
    let new_kid = rotated["kid"].as_str().unwrap().to_owned();
    assert_ne!(new_kid, old_kid);
    assert_eq!(rotated["retiredKids"], json!([old_kid]));

    // Tokens signed before still work, whether or not the service has seen them.
    fhir_get(&server, &used).expect(200);
    fhir_get(&server, &unused).expect(200);

    // New tokens are signed with the new key; both keys are published, the current one first.
    let fresh = server.token(&client_id, &secret);
    assert_eq!(jwt(&fresh).0["kid"], new_kid.as_str());
    fhir_get(&server, &fresh).expect(200);
    for endpoint in [Endpoint::V1, Endpoint::V2] {
        let keys = jwks(&server, endpoint);
        assert_eq!(kids(&keys), [new_kid.clone(), old_kid.clone()]);
        verify_rs256(&fresh, &keys[0]);
        verify_rs256(&unused, &keys[1]);
    }
}

//! Secrets, tokens and health data never reach the server's log: a full session (app and user
//! sign-ins, failed ones, the FHIR API with good and bad tokens, the admin API making secrets) is
//! run against a server whose whole output goes to a file, which must then contain none of the
//! client secrets, passwords, authorization codes, tokens (nor their signatures), `Authorization`
//! header values or the patient's name.

use fhirside_identity::b64;
use fhirside_identity::time;
use serde_json::{json, Value};

use crate::harness::{form_encode, jwt_claims, temp_dir, Response, Server};

const FORM: &str = "application/x-www-form-urlencoded";
const REDIRECT_URI: &str = "http://localhost:8080/callback";
const FAMILY: &str = "Quonsetfield";
const GIVEN: &str = "Zebediah";

/// Everything the log must not contain, with what it is.
#[derive(Default)]
struct Secrets(Vec<(String, String)>);

impl Secrets {
    fn add(&mut self, what: &str, value: &str) {
        assert!(value.len() >= 8, "{what} is too short to look for: {value:?}");
        self.0.push((what.to_owned(), value.to_owned()));
    }

    /// A JWT, its claims part and its signature part (the header is the same for every token of
    /// a key, and no secret).
    fn add_jwt(&mut self, what: &str, token: &str) {
        self.add(what, token);
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3, "{what} is not a JWT");
        self.add(&format!("{what} (claims)"), parts[1]);
        if !parts[2].is_empty() {
            self.add(&format!("{what} (signature)"), parts[2]);
        }
    }
}

/// Standard base64 with padding, for HTTP Basic credentials.
fn base64_standard(bytes: &[u8]) -> String {
    let mut text = b64::encode(bytes).replace('-', "+").replace('_', "/");
    text.push_str(&"=".repeat((4 - text.len() % 4) % 4));
    text
}

fn post_form(server: &Server, path: &str, form: &str, extra: &[(&str, &str)]) -> Response {
    let mut headers = vec![("content-type", FORM)];
    headers.extend_from_slice(extra);
    server.request("POST", path, &headers, Some(form.as_bytes()))
}

#[test]
fn secrets_tokens_and_patient_data_never_reach_the_log() {
    let log_dir = temp_dir("log-hygiene");
    let log_path = log_dir.join("server.log");
    let server = Server::launch(&temp_dir("data"), &[], Some(&log_path));
    let tenant = server.tenant.clone().unwrap();
    let (v2_token, v1_token) = (format!("/{tenant}/oauth2/v2.0/token"), format!("/{tenant}/oauth2/token"));
    let mut secrets = Secrets::default();

    // Apps from the CLI; tokens from both endpoints; failed attempts.
    let (writer_id, writer_secret, _) = server.create_app("Writer", &["FHIR Data Contributor"]);
    secrets.add("the writer's client secret", &writer_secret);
    let (admin_id, admin_secret, _) = server.create_app("Administrator", &["Fhirside Administrator"]);
    secrets.add("the administrator's client secret", &admin_secret);
    let writer = server.token(&writer_id, &writer_secret);
    secrets.add_jwt("a v2 access token", &writer);
    let form = format!(
        "grant_type=client_credentials&client_id={writer_id}&client_secret={}&resource={}",
        form_encode(&writer_secret),
        form_encode(&server.base)
    );
    let v1 = post_form(&server, &v1_token, &form, &[]).expect(200).json()["access_token"].as_str().unwrap().to_owned();
    secrets.add_jwt("a v1 access token", &v1);
    let wrong_secret = "Wr0ng~secret.value-4f1c9a7e2b";
    secrets.add("a wrong client secret", wrong_secret);
    for (path, scope) in [
        (&v2_token, format!("scope={}/.default", form_encode(&server.base))),
        (&v1_token, format!("resource={}", form_encode(&server.base))),
    ] {
        let form = format!(
            "grant_type=client_credentials&client_id={writer_id}&client_secret={}&{scope}",
            form_encode(wrong_secret)
        );
        let refused = post_form(&server, path, &form, &[]);
        assert!(matches!(refused.status, 400 | 401), "a wrong secret: {}", refused.status);
        // The same, as HTTP Basic credentials.
        let basic = format!("Basic {}", base64_standard(format!("{writer_id}:{wrong_secret}").as_bytes()));
        secrets.add("HTTP Basic credentials", basic.trim_start_matches("Basic "));
        let form = format!("grant_type=client_credentials&{scope}");
        let refused = post_form(&server, path, &form, &[("authorization", &basic)]);
        assert!(matches!(refused.status, 400 | 401), "a wrong secret (Basic): {}", refused.status);
    }
    let basic = format!("Basic {}", base64_standard(format!("{writer_id}:{}", form_encode(&writer_secret)).as_bytes()));
    secrets.add("HTTP Basic credentials", basic.trim_start_matches("Basic "));
    let form = format!("grant_type=client_credentials&scope={}/.default", form_encode(&server.base));
    let basic_token = post_form(&server, &v2_token, &form, &[("authorization", &basic)]).expect(200).json();
    secrets.add_jwt("an access token for Basic credentials", basic_token["access_token"].as_str().unwrap());

    // The FHIR API with good tokens, on a patient whose name must stay out of the log.
    let as_writer = |method: &str, path: &str, body: Option<&Value>| {
        server.request_as(&writer, method, path, body.map(|b| ("application/fhir+json", b)))
    };
    let patient =
        json!({"resourceType": "Patient", "name": [{"family": FAMILY, "given": [GIVEN]}], "birthDate": "1961-07-04"});
    let created = as_writer("POST", "/Patient", Some(&patient)).expect(201).json();
    let id = created["id"].as_str().unwrap().to_owned();
    as_writer("GET", &format!("/Patient/{id}"), None).expect(200);
    as_writer("GET", &format!("/Patient?name={FAMILY}&given={GIVEN}"), None).expect(200);
    let mut updated = created.clone();
    updated["gender"] = json!("male");
    as_writer("PUT", &format!("/Patient/{id}"), Some(&updated)).expect(200);
    let invalid =
        json!({"resourceType": "Patient", "name": [{"family": FAMILY}], "birthDate": format!("{GIVEN}-not-a-date")});
    as_writer("POST", "/Patient", Some(&invalid)).expect(400);
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "POST", "url": "Patient"}, "resource": patient},
        {"request": {"method": "GET", "url": format!("Patient?name={FAMILY}")}},
    ]});
    as_writer("POST", "/", Some(&bundle)).expect(200);
    server.request_as(&v1, "GET", &format!("/Patient/{id}"), None).expect(200);

    // … and with tokens the service refuses.
    let now = time::now();
    let claims = jwt_claims(&writer);
    let expired = server.sign_token(&json!({
        "aud": claims["aud"], "iss": claims["iss"], "oid": claims["oid"], "tid": claims["tid"],
        "iat": now - 7200, "nbf": now - 7200, "exp": now - 3600,
    }));
    secrets.add_jwt("an expired token", &expired);
    let tampered = {
        let parts: Vec<&str> = writer.split('.').collect();
        let mut changed = claims.clone();
        changed["roles"] = json!(["globalAdmin"]);
        format!("{}.{}.{}", parts[0], b64::encode(changed.to_string()), parts[2])
    };
    secrets.add_jwt("a tampered token", &tampered);
    let garbage = "opaque-garbage-token-7d0b3e1f95c2";
    secrets.add("a token that is not a JWT", garbage);
    for token in [&expired, &tampered, &garbage.to_owned()] {
        server.request_as(token, "GET", &format!("/Patient?name={FAMILY}"), None).expect(401);
        server.request_as(token, "POST", "/Patient", Some(("application/fhir+json", &patient))).expect(401);
    }
    server
        .request("GET", "/Patient", &[("authorization", &format!("Basic {}", base64_standard(b"alice:pw")))], None)
        .expect(401);

    // A user signs in (authorization code flow), first with a wrong password.
    let password = "Tr0ub4dor&3-horse-staple";
    let wrong_password = "hunter2-but-longer-0xBEEF";
    secrets.add("the user's password", password);
    secrets.add("a wrong password", wrong_password);
    server.admin(&[
        "user",
        "create",
        "--name",
        "alice@example.org",
        "--password",
        password,
        "--role",
        "FHIR Data Reader",
    ]);
    let (web_id, web_secret) = {
        let app = server.admin(&["app", "create", "--name", "Web", "--redirect-uri", REDIRECT_URI]);
        (app["clientId"].as_str().unwrap().to_owned(), app["clientSecret"].as_str().unwrap().to_owned())
    };
    secrets.add("the web app's client secret", &web_secret);
    let scope = format!("{}/user_impersonation openid profile offline_access", server.base);
    let authorize = format!(
        "/{tenant}/oauth2/v2.0/authorize?client_id={web_id}&response_type=code&redirect_uri={}&scope={}&state=st4te&nonce=n0nce",
        form_encode(REDIRECT_URI),
        form_encode(&scope)
    );
    server.get(&authorize).expect(200);
    let sign_in = |password: &str| {
        post_form(&server, &authorize, &format!("login=alice%40example.org&passwd={}", form_encode(password)), &[])
    };
    let failed = sign_in(wrong_password).expect(200);
    assert!(String::from_utf8_lossy(&failed.body).contains("AADSTS50126"), "a wrong password is refused");
    let signed_in = sign_in(password).expect(302);
    let location = signed_in.header("location").unwrap().to_owned();
    let code = location
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("code="))
        .unwrap_or_else(|| panic!("no code in {location}"))
        .to_owned();
    secrets.add("an authorization code", &code);
    let form = format!(
        "grant_type=authorization_code&client_id={web_id}&client_secret={}&code={code}&redirect_uri={}&scope={}",
        form_encode(&web_secret),
        form_encode(REDIRECT_URI),
        form_encode(&scope)
    );
    let tokens = post_form(&server, &v2_token, &form, &[]).expect(200).json();
    // The code again: refused (redeemed once).
    assert!(post_form(&server, &v2_token, &form, &[]).status >= 400);
    let user_token = tokens["access_token"].as_str().unwrap().to_owned();
    secrets.add_jwt("a user's access token", &user_token);
    secrets.add_jwt("an id token", tokens["id_token"].as_str().expect("an id token"));
    let refresh = tokens["refresh_token"].as_str().expect("a refresh token").to_owned();
    secrets.add("a refresh token", &refresh);
    server.request_as(&user_token, "GET", &format!("/Patient?name={FAMILY}"), None).expect(200);
    let form = format!(
        "grant_type=refresh_token&client_id={web_id}&client_secret={}&refresh_token={}&scope={}",
        form_encode(&web_secret),
        form_encode(&refresh),
        form_encode(&scope)
    );
    let refreshed = post_form(&server, &v2_token, &form, &[]).expect(200).json();
    secrets.add_jwt("a refreshed access token", refreshed["access_token"].as_str().unwrap());
    if let Some(refresh) = refreshed["refresh_token"].as_str() {
        secrets.add("a second refresh token", refresh);
    }
    if let Some(id_token) = refreshed["id_token"].as_str() {
        secrets.add_jwt("a second id token", id_token);
    }

    // The admin API creates secrets and users.
    let admin = server.token(&admin_id, &admin_secret);
    secrets.add_jwt("the administrator's token", &admin);
    let as_admin = |method: &str, path: &str, body: &Value| {
        server.request_as(&admin, method, path, Some(("application/json", body)))
    };
    let added = as_admin("POST", &format!("/_admin/apps/{writer_id}/secrets"), &json!({"displayName": "second"}))
        .expect(201)
        .json();
    let added_secret = added["secretText"].as_str().unwrap().to_owned();
    secrets.add("a secret added by the admin API", &added_secret);
    secrets.add_jwt("a token for the added secret", &server.token(&writer_id, &added_secret));
    let app = as_admin("POST", "/_admin/apps", &json!({"displayName": "By REST", "roles": ["FHIR Data Reader"]}))
        .expect(201)
        .json();
    secrets.add("a client secret made by the admin API", app["clientSecret"].as_str().unwrap());
    let user_password = "Another-s3cret-Passphrase";
    secrets.add("a password sent to the admin API", user_password);
    as_admin("POST", "/_admin/users", &json!({"userPrincipalName": "bob@example.org", "password": user_password}))
        .expect(201);
    // A failed admin call with a password in it.
    as_admin("POST", "/_admin/users", &json!({"userPrincipalName": "bob@example.org", "password": user_password}))
        .expect(409);

    drop(server);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let log = std::fs::read_to_string(&log_path).expect("read the log");
    assert!(log.contains("FHIR base URL"), "the server's standard output is in the log:\n{log}");
    assert!(log.contains("refused"), "refused tokens are logged (so the log checked is the real one):\n{log}");

    let mut found: Vec<&str> =
        secrets.0.iter().filter(|(_, value)| log.contains(value.as_str())).map(|(what, _)| what.as_str()).collect();
    for (what, value) in [("the patient's family name", FAMILY), ("the patient's given name", GIVEN)] {
        if log.contains(value) {
            found.push(what);
        }
    }
    for line in log.lines() {
        if line.to_ascii_lowercase().contains("authorization:") || line.contains("Bearer ey") {
            found.push("an Authorization header value");
        }
    }
    assert!(found.is_empty(), "the log contains {found:?}:\n{log}");
    let _ = std::fs::remove_dir_all(&log_dir);
}

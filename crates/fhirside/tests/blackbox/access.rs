//! Who may call the FHIR API, with authentication on (the built-in authority):
//! - every token the service must not trust is refused with `401`, Azure's body and a
//!   `WWW-Authenticate` challenge; `/metadata` needs no token;
//! - what each role may do, as one table of interaction × role (AZURE-COMPAT §1a–1c);
//! - removing a role assignment takes effect on the next request with the same token, and
//!   `--allowed-object-id` grants the FHIR data actions without a role;
//! - the admin REST API (`/_admin/…`) for app registrations, secrets, users and role assignments.

use fhirside_identity::b64;
use fhirside_identity::jwt;
use fhirside_identity::keys::SigningKey;
use fhirside_identity::time;
use serde_json::{json, Value};

use crate::harness::{admin_command, form_encode, jwt_claims, temp_dir, Response, Server};

const FHIR_JSON: &str = "application/fhir+json";
const JSON_PATCH: &str = "application/json-patch+json";

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The authority's current signing key, from the identity store.
fn server_key(server: &Server) -> SigningKey {
    let store = server.identity_store();
    store.signing_keys(0).unwrap().into_iter().next().expect("a signing key")
}

/// `claims` with some members replaced (`null` removes one).
fn with(claims: &Value, changes: Value) -> Value {
    let mut claims = claims.clone();
    for (k, v) in changes.as_object().unwrap() {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    claims
}

/// A compact JWT with any header and claims, signed by `sign` over the signing input.
fn jwt_with(header: &Value, claims: &Value, sign: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
    let input = jwt::signing_input(header, claims);
    let signature = sign(input.as_bytes());
    format!("{input}.{}", b64::encode(signature))
}

fn hs256(secret: &[u8]) -> impl FnOnce(&[u8]) -> Vec<u8> + '_ {
    move |input| {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
        ring::hmac::sign(&key, input).as_ref().to_vec()
    }
}

/// PEM (`RSA PUBLIC KEY`, PKCS#1) of a key's public half: the classic "HMAC secret" of the
/// RS256/HS256 confusion attack.
fn public_pem(key: &SigningKey) -> String {
    use ring::signature::KeyPair;
    let pair = ring::signature::RsaKeyPair::from_pkcs8(&key.pkcs8).unwrap();
    let mut text = b64::encode(pair.public_key().as_ref()).replace('-', "+").replace('_', "/");
    text.push_str(&"=".repeat((4 - text.len() % 4) % 4));
    let lines: Vec<&str> = text.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
    format!("-----BEGIN RSA PUBLIC KEY-----\n{}\n-----END RSA PUBLIC KEY-----\n", lines.join("\n"))
}

/// Asserts a `401` exactly as Azure's FHIR service sends it.
#[track_caller]
fn assert_unauthenticated(server: &Server, what: &str, response: &Response) {
    let body = String::from_utf8_lossy(&response.body);
    assert_eq!(response.status, 401, "{what}: expected 401, got {} {body}", response.status);
    assert!(
        response.header("content-type").is_some_and(|t| t.starts_with(FHIR_JSON)),
        "{what}: content type {:?}",
        response.header("content-type")
    );
    let json = response.json();
    assert_eq!(json["resourceType"], "OperationOutcome", "{what}: {body}");
    assert_eq!(json["id"].as_str(), response.header("x-request-id"), "{what}: the id is the request id: {body}");
    assert!(json["meta"]["lastUpdated"].is_string(), "{what}: {body}");
    assert_eq!(
        json["issue"],
        json!([{"severity": "error", "code": "login", "diagnostics": "Authentication failed."}]),
        "{what}: {body}"
    );
    assert_eq!(json.as_object().unwrap().len(), 4, "{what}: nothing more than resourceType, id, meta, issue: {body}");
    let challenge = response.header("www-authenticate").unwrap_or_else(|| panic!("{what}: no WWW-Authenticate"));
    let authority = server.authority.as_deref().unwrap();
    assert!(
        challenge.starts_with(&format!("Bearer authorization_uri=\"{authority}\"")),
        "{what}: challenge {challenge:?} does not name the authority {authority}"
    );
    assert!(challenge.contains(&format!("resource_id=\"{}\"", server.base)), "{what}: challenge {challenge:?}");
}

#[test]
fn tokens_the_service_cannot_trust_are_refused() {
    let server = Server::start_secure(&[]);
    let (client_id, secret, _) = server.create_app("Reader", &["FHIR Data Reader"]);
    let token = server.token(&client_id, &secret);
    let claims = jwt_claims(&token);
    let key = server_key(&server);
    let now = time::now();

    // /metadata needs no token; the rest of the FHIR API does.
    server.get("/metadata").expect(200);
    assert!(server.get("/metadata").header("www-authenticate").is_none());
    for (method, path) in
        [("GET", "/Patient"), ("GET", "/Patient/x"), ("GET", "/"), ("POST", "/Patient"), ("GET", "/_admin/apps")]
    {
        let response = server.request(method, path, &[], None);
        assert_unauthenticated(&server, &format!("{method} {path} without a token"), &response);
    }

    // Accepted: the authority's token; the same claims signed again (so the forgeries below differ
    // from a good token only in what each changes); lifetimes within the 5 minutes of clock skew.
    let accepted = [
        ("the authority's token", token.clone()),
        ("its claims signed again with the authority's key", key.sign(&claims)),
        (
            "expired 2 minutes ago (within the skew)",
            key.sign(&with(&claims, json!({"iat": now - 3720, "nbf": now - 3720, "exp": now - 120}))),
        ),
        (
            "valid in 2 minutes (within the skew)",
            key.sign(&with(&claims, json!({"iat": now + 120, "nbf": now + 120, "exp": now + 3720}))),
        ),
    ];
    for (what, token) in &accepted {
        let response = server.request("GET", "/Patient", &[("authorization", &bearer(token))], None);
        assert_eq!(response.status, 200, "{what}: {}", String::from_utf8_lossy(&response.body));
    }

    let header = |alg: &str, kid: &str| json!({"typ": "JWT", "alg": alg, "kid": kid, "x5t": kid});
    let (real_header, real_signature) = {
        let parts: Vec<&str> = token.split('.').collect();
        (parts[0].to_owned(), parts[2].to_owned())
    };
    let unknown_key = SigningKey::generate(now).unwrap();
    let jwks = server.get(&format!("/{}/discovery/v2.0/keys", server.tenant.as_deref().unwrap())).expect(200).body;
    let jwk = serde_json::to_vec(&key.jwk()).unwrap();
    let modulus = b64::decode(key.jwk().n.as_deref().unwrap()).unwrap();
    let pem = public_pem(&key);

    let mut refused: Vec<(String, String)> = vec![
        ("not a JWT".into(), "Bearer not-a-token".into()),
        ("three parts that are not JSON".into(), "Bearer aaaa.bbbb.cccc".into()),
        ("an empty bearer token".into(), "Bearer ".into()),
        ("the token under another scheme".into(), format!("Basic {token}")),
        (
            "expired (exp 10 minutes ago, beyond the skew)".into(),
            bearer(&key.sign(&with(&claims, json!({"iat": now - 4200, "nbf": now - 4200, "exp": now - 600})))),
        ),
        (
            "not yet valid (nbf in 10 minutes, beyond the skew)".into(),
            bearer(&key.sign(&with(&claims, json!({"iat": now, "nbf": now + 600, "exp": now + 4200})))),
        ),
        ("no exp".into(), bearer(&key.sign(&with(&claims, json!({"exp": null}))))),
        (
            "another tenant's issuer".into(),
            bearer(
                &key.sign(&with(
                    &claims,
                    json!({"iss": "https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/"}),
                )),
            ),
        ),
        ("no issuer".into(), bearer(&key.sign(&with(&claims, json!({"iss": null}))))),
        (
            "another audience".into(),
            bearer(&key.sign(&with(&claims, json!({"aud": "https://other.fhir.azurehealthcareapis.com"})))),
        ),
        ("no audience".into(), bearer(&key.sign(&with(&claims, json!({"aud": null}))))),
        (
            "a changed claim (roles added) under the original signature".into(),
            bearer(&format!(
                "{real_header}.{}.{real_signature}",
                b64::encode(with(&claims, json!({"roles": ["globalAdmin"]})).to_string())
            )),
        ),
        ("the signature removed".into(), bearer(&format!("{real_header}.{}.", token.split('.').nth(1).unwrap()))),
        ("signed by a key the server does not know".into(), bearer(&unknown_key.sign(&claims))),
        (
            "the authority's key under a kid it does not publish".into(),
            bearer(&SigningKey::from_pkcs8("no-such-kid".into(), now, None, key.pkcs8.clone()).unwrap().sign(&claims)),
        ),
        (
            "another RSA key under the authority's kid".into(),
            bearer(
                &SigningKey::from_pkcs8(key.kid.clone(), now, None, unknown_key.pkcs8.clone()).unwrap().sign(&claims),
            ),
        ),
    ];
    for alg in ["none", "None", "NONE", ""] {
        let unsigned = format!("{}.", jwt::signing_input(&header(alg, &key.kid), &claims));
        refused.push((format!("alg {alg:?} without a signature"), bearer(&unsigned)));
    }
    for (what, secret) in [("JWKS document", &jwks), ("JWK", &jwk), ("modulus", &modulus), ("PEM", &pem.into_bytes())] {
        let forged = jwt_with(&header("HS256", &key.kid), &claims, hs256(secret));
        refused.push((format!("HS256 with the public key's {what} as the HMAC secret"), bearer(&forged)));
    }
    let forged = jwt_with(&header("HS512", &key.kid), &claims, |input| {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA512, &modulus);
        ring::hmac::sign(&key, input).as_ref().to_vec()
    });
    refused.push(("HS512 with the public modulus as the HMAC secret".into(), bearer(&forged)));

    let mut client = server.client();
    for (what, authorization) in &refused {
        for (method, path) in [("GET", "/Patient"), ("GET", "/_admin/apps")] {
            let response = client.request(method, path, &[("authorization", authorization)], None);
            assert_unauthenticated(&server, &format!("{method} {path} with {what}"), &response);
        }
    }
    // None of the refusals disturbed the good token.
    client.request("GET", "/Patient", &[("authorization", &bearer(&token))], None).expect(200);
}

// --- The role table ---------------------------------------------------------------------------

const F: u16 = 403;

/// The roles, as the app's only role assignment. RBAC roles are evaluated by the service from the
/// caller's `oid`; `globalReader` and `globalAdmin` are app roles, which reach it as the token's
/// `roles` claim. Their data actions (AZURE-COMPAT §1a, §1b; Fhirside Administrator: `admin` and `audit`):
#[rustfmt::skip]
const ROLES: [&str; 10] = [
    "",                       // none
    "FHIR Data Reader",       // read
    "FHIR Data Writer",       // read write delete export resourceValidate reindex convertData editProfileDefinitions import
    "FHIR Data Contributor",  // * (every action but smart)
    "FHIR Data Exporter",     // read export
    "FHIR Data Importer",     // read import
    "FHIR SMART User",        // read smart: its token's clinical scopes decide, and a client-credentials token has none
    "Fhirside Administrator", // admin audit (Fhirside's own; `*` never includes them)
    "globalReader",           // read resourceValidate
    "globalAdmin",            // * (every action but smart)
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Interaction {
    Read,
    Vread,
    SearchType,
    SearchSystem,
    History,
    Create,
    ConditionalCreate,
    Update,
    ConditionalUpdate,
    Patch,
    ConditionalPatch,
    Delete,
    ConditionalDelete,
    /// The status of a read entry of a batch (the batch itself is `200`).
    BatchRead,
    /// The status of a create entry of the same batch.
    BatchCreate,
    /// A transaction with a create and a read: all or nothing.
    Transaction,
    Validate,
    Reindex,
    AdminApps,
}

use Interaction as I;

/// Expected status per role (columns in the order of [`ROLES`]); `F` = 403 Forbidden. Each row's
/// comment is what the interaction needs (AZURE-COMPAT §1c; "|" = any one suffices).
#[rustfmt::skip]
const TABLE: &[(Interaction, [u16; 10])] = &[
    //                      none Reader Writer Contrib Export Import SMART FsAdmin gReader gAdmin
    (I::Read,              [F,   200,   200,   200,    200,   200,   F,    F,      200,    200]), // read | readById
    (I::Vread,             [F,   200,   200,   200,    200,   200,   F,    F,      200,    200]), // read | readById
    (I::SearchType,        [F,   200,   200,   200,    200,   200,   F,    F,      200,    200]), // read | search
    (I::SearchSystem,      [F,   200,   200,   200,    200,   200,   F,    F,      200,    200]), // read | search
    (I::History,           [F,   200,   200,   200,    200,   200,   F,    F,      200,    200]), // read | search
    (I::Create,            [F,   F,     201,   201,    F,     F,     F,    F,      F,      201]), // write | create
    (I::ConditionalCreate, [F,   F,     201,   201,    F,     F,     F,    F,      F,      201]), // read+write | search+create
    (I::Update,            [F,   F,     200,   200,    F,     F,     F,    F,      F,      200]), // write | update
    (I::ConditionalUpdate, [F,   F,     200,   200,    F,     F,     F,    F,      F,      200]), // read+write | search+update
    (I::Patch,             [F,   F,     200,   200,    F,     F,     F,    F,      F,      200]), // read+write | update
    (I::ConditionalPatch,  [F,   F,     200,   200,    F,     F,     F,    F,      F,      200]), // read+write | search+update
    (I::Delete,            [F,   F,     204,   204,    F,     F,     F,    F,      F,      204]), // delete
    (I::ConditionalDelete, [F,   F,     204,   204,    F,     F,     F,    F,      F,      204]), // read+delete | search+delete
    (I::BatchRead,         [F,   200,   200,   200,    200,   200,   F,    F,      200,    200]), // as read, per entry
    (I::BatchCreate,       [F,   F,     201,   201,    F,     F,     F,    F,      F,      201]), // as create, per entry
    (I::Transaction,       [F,   F,     200,   200,    F,     F,     F,    F,      F,      200]), // every entry's
    (I::Validate,          [F,   F,     200,   200,    F,     F,     F,    F,      200,    200]), // resourceValidate
    (I::Reindex,           [F,   F,     201,   201,    F,     F,     F,    F,      F,      201]), // reindex
    (I::AdminApps,         [F,   F,     F,     F,      F,     F,     F,    200,    F,      F]),   // admin
];

/// The resources one role's interactions work on, made beforehand by a contributor.
struct Fixture {
    /// Read by every role.
    read_id: String,
    update_id: String,
    patch_id: String,
    delete_id: String,
    /// Identifier values for the conditional interactions.
    key: String,
}

const SYSTEM: &str = "urn:fhirside:access";

fn patient(identifier: &str) -> Value {
    json!({"resourceType": "Patient", "active": true, "identifier": [{"system": SYSTEM, "value": identifier}]})
}

/// What the interaction answered, and what is wrong with its `403` body, if anything.
fn perform(server: &Server, token: &str, interaction: Interaction, f: &Fixture) -> (u16, Option<String>) {
    let key = &f.key;
    let entry_status = |response: &Response, index: usize| -> (u16, Option<String>) {
        if response.status != 200 {
            return (response.status, Some(format!("the batch itself answered {}", response.status)));
        }
        let bundle = response.json();
        let entry = &bundle["entry"][index]["response"];
        let status = entry["status"].as_str().and_then(|s| s.split(' ').next()).and_then(|s| s.parse().ok());
        let status = status.unwrap_or_else(|| panic!("no status in entry {index}: {bundle}"));
        (status, (status == 403).then(|| forbidden_problem(&entry["outcome"], false)).flatten())
    };
    let response = match interaction {
        I::Read => server.request_as(token, "GET", &format!("/Patient/{}", f.read_id), None),
        I::Vread => server.request_as(token, "GET", &format!("/Patient/{}/_history/1", f.read_id), None),
        I::SearchType => server.request_as(token, "GET", &format!("/Patient?identifier={SYSTEM}|read"), None),
        I::SearchSystem => server.request_as(token, "GET", &format!("/?_type=Patient&_id={}", f.read_id), None),
        I::History => server.request_as(token, "GET", &format!("/Patient/{}/_history", f.read_id), None),
        I::Create => server.request_as(token, "POST", "/Patient", Some((FHIR_JSON, &patient(&format!("{key}-new"))))),
        I::ConditionalCreate => {
            let (bearer, criteria) = (bearer(token), format!("identifier={SYSTEM}|{key}-ccreate"));
            let headers =
                [("authorization", bearer.as_str()), ("content-type", FHIR_JSON), ("if-none-exist", criteria.as_str())];
            let body = patient(&format!("{key}-ccreate")).to_string();
            server.request("POST", "/Patient", &headers, Some(body.as_bytes()))
        }
        I::Update => {
            let mut body = patient(&format!("{key}-update"));
            body["id"] = json!(f.update_id);
            body["active"] = json!(false);
            server.request_as(token, "PUT", &format!("/Patient/{}", f.update_id), Some((FHIR_JSON, &body)))
        }
        I::ConditionalUpdate => {
            let body = with(&patient(&format!("{key}-cupdate")), json!({"active": false}));
            server.request_as(
                token,
                "PUT",
                &format!("/Patient?identifier={SYSTEM}|{key}-cupdate"),
                Some((FHIR_JSON, &body)),
            )
        }
        I::Patch => {
            let patch = json!([{"op": "add", "path": "/active", "value": false}]);
            server.request_as(token, "PATCH", &format!("/Patient/{}", f.patch_id), Some((JSON_PATCH, &patch)))
        }
        I::ConditionalPatch => {
            let patch = json!([{"op": "add", "path": "/active", "value": false}]);
            let path = format!("/Patient?identifier={SYSTEM}|{key}-cpatch");
            server.request_as(token, "PATCH", &path, Some((JSON_PATCH, &patch)))
        }
        I::Delete => server.request_as(token, "DELETE", &format!("/Patient/{}", f.delete_id), None),
        I::ConditionalDelete => {
            server.request_as(token, "DELETE", &format!("/Patient?identifier={SYSTEM}|{key}-cdelete"), None)
        }
        I::BatchRead | I::BatchCreate => {
            let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
                {"request": {"method": "GET", "url": format!("Patient/{}", f.read_id)}},
                {"request": {"method": "POST", "url": "Patient"}, "resource": patient(&format!("{key}-batch"))},
            ]});
            let response = server.request_as(token, "POST", "/", Some((FHIR_JSON, &batch)));
            return entry_status(&response, if interaction == I::BatchRead { 0 } else { 1 });
        }
        I::Transaction => {
            let transaction = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
                {"fullUrl": "urn:uuid:0c9e3c2e-3a1c-4a57-9d6f-5b0f8f2a1e01", "request": {"method": "POST", "url": "Patient"},
                 "resource": patient(&format!("{key}-transaction"))},
                {"request": {"method": "GET", "url": format!("Patient/{}", f.read_id)}},
            ]});
            let response = server.request_as(token, "POST", "/", Some((FHIR_JSON, &transaction)));
            let problem = (response.status == 403).then(|| forbidden_problem(&response.json(), false)).flatten();
            return (response.status, problem);
        }
        I::Validate => server.request_as(token, "POST", "/Patient/$validate", Some((FHIR_JSON, &patient("validate")))),
        I::Reindex => {
            server.request_as(token, "POST", "/$reindex", Some((FHIR_JSON, &json!({"resourceType": "Parameters"}))))
        }
        I::AdminApps => server.request_as(token, "GET", "/_admin/apps", None),
    };
    let problem = (response.status == 403).then(|| forbidden_problem(&response.json(), true)).flatten();
    (response.status, problem)
}

/// What is wrong with a `403` OperationOutcome, if anything. Bundle entries prefix the diagnostics
/// with the entry (`Bundle.entry[1]: Authorization failed.`).
fn forbidden_problem(outcome: &Value, exact: bool) -> Option<String> {
    let issues = outcome["issue"].as_array().map(Vec::as_slice).unwrap_or_default();
    let ok = outcome["resourceType"] == "OperationOutcome"
        && issues.len() == 1
        && issues[0]["severity"] == "error"
        && issues[0]["code"] == "forbidden"
        && issues[0]["diagnostics"].as_str().is_some_and(|d| {
            // A SMART caller's refusal names the scope it lacks.
            let smart = d.contains("The token's SMART scopes do not permit");
            if exact {
                d == "Authorization failed." || smart
            } else {
                d.ends_with("Authorization failed.") || smart
            }
        });
    (!ok).then(|| format!("not Azure's 403 (forbidden, \"Authorization failed.\"): {outcome}"))
}

#[test]
fn what_each_role_may_do() {
    let server = Server::start_secure(&[]);
    let (setup_id, setup_secret, _) = server.create_app("Setup", &["FHIR Data Contributor"]);
    let setup = server.token(&setup_id, &setup_secret);
    let create = |identifier: &str| -> String {
        let created =
            server.request_as(&setup, "POST", "/Patient", Some((FHIR_JSON, &patient(identifier)))).expect(201);
        created.json()["id"].as_str().unwrap().to_owned()
    };
    let read_id = create("read");

    let mut failures = Vec::new();
    let mut grid = Vec::new();
    for (column, role) in ROLES.iter().enumerate() {
        let roles: Vec<&str> = if role.is_empty() { vec![] } else { vec![role] };
        let (client_id, secret, _) = server.create_app(&format!("Role {column}"), &roles);
        let token = server.token(&client_id, &secret);
        // App roles travel in the token; RBAC roles stay with the service.
        let roles_claim = jwt_claims(&token)["roles"].clone();
        if role.starts_with("global") {
            assert_eq!(roles_claim, json!([role]), "{role}: the app role is in the token's roles claim");
        } else {
            assert!(roles_claim.is_null(), "{role:?}: an RBAC role is not in the token: {roles_claim}");
        }
        let key = format!("role{column}");
        for suffix in ["cupdate", "cpatch", "cdelete"] {
            create(&format!("{key}-{suffix}"));
        }
        let fixture = Fixture {
            read_id: read_id.clone(),
            update_id: create(&format!("{key}-update")),
            patch_id: create(&format!("{key}-patch")),
            delete_id: create(&format!("{key}-delete")),
            key,
        };
        let mut row = Vec::new();
        for (interaction, expected) in TABLE {
            let expected = expected[column];
            let (got, problem) = perform(&server, &token, *interaction, &fixture);
            let name = if role.is_empty() { "(no role)" } else { role };
            if got != expected {
                failures.push(format!("{name} / {interaction:?}: expected {expected}, got {got}"));
            } else if let Some(problem) = problem {
                failures.push(format!("{name} / {interaction:?}: {problem}"));
            }
            row.push((got, got == expected));
        }
        grid.push(row);
    }
    if !failures.is_empty() {
        let mut text = format!("{:<20}", "got (* = unexpected)");
        for role in ROLES {
            let short = role.trim_start_matches("FHIR ").trim_start_matches("Data ").replace("Administrator", "Admin");
            text.push_str(&format!(" {:>13}", if role.is_empty() { "(none)" } else { &short }));
        }
        for (i, (interaction, _)) in TABLE.iter().enumerate() {
            text.push_str(&format!("\n{:<20}", format!("{interaction:?}")));
            for row in &grid {
                let (got, ok) = row[i];
                text.push_str(&format!(" {:>13}", format!("{}{got}", if ok { "" } else { "*" })));
            }
        }
        panic!("{} authorization mismatches:\n  {}\n\n{text}", failures.len(), failures.join("\n  "));
    }
}

#[test]
fn removing_a_role_assignment_with_the_cli_takes_effect_within_a_tenth_of_a_second() {
    let server = Server::start_secure(&[]);
    let (client_id, secret, object_id) = server.create_app("Changing", &["FHIR Data Reader"]);
    let token = server.token(&client_id, &secret);
    server.request_as(&token, "GET", "/Patient", None).expect(200);
    server.request_as(&token, "POST", "/Patient", Some((FHIR_JSON, &patient("changing")))).expect(403);

    let assignments = server.admin(&["role", "list", "--assignee", &client_id]);
    let assignments = assignments.as_array().expect("a list of assignments");
    assert_eq!(assignments.len(), 1, "{assignments:?}");
    let id = assignments[0]["id"].as_str().expect("an assignment id");
    server.admin(&["role", "remove", "--id", id]);
    // The same token, no restart: refused once the server has looked for other processes'
    // changes, which it does at most every EXTERNAL_CHECK_MS (the admin API's changes apply at once).
    wait_for_external_changes();
    let refused = server.request_as(&token, "GET", "/Patient", None);
    assert_eq!(refused.status, 403, "after the removal: {}", String::from_utf8_lossy(&refused.body));
    assert_eq!(forbidden_problem(&refused.json(), true), None);

    // And an assignment added grants as soon, too.
    server.admin(&["role", "assign", "--role", "FHIR Data Writer", "--assignee", &object_id]);
    wait_for_external_changes();
    server.request_as(&token, "POST", "/Patient", Some((FHIR_JSON, &patient("changing")))).expect(201);
    server.request_as(&token, "GET", "/Patient", None).expect(200);
}

#[test]
fn allowed_object_ids_get_the_fhir_data_actions_without_a_role() {
    let dir = temp_dir("allowed-oid");
    let app = |name: &str| -> (String, String, String) {
        let output = admin_command(&dir, &["app", "create", "--name", name]);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let app: Value = serde_json::from_slice(&output.stdout).unwrap();
        let field = |k: &str| app[k].as_str().unwrap().to_owned();
        (field("clientId"), field("clientSecret"), field("objectId"))
    };
    let (allowed_id, allowed_secret, allowed_oid) = app("Allowed");
    let (other_id, other_secret, _) = app("Not allowed");
    let server = Server::launch(&dir, &["--allowed-object-id", &allowed_oid], None);

    let allowed = server.token(&allowed_id, &allowed_secret);
    let created = server.request_as(&allowed, "POST", "/Patient", Some((FHIR_JSON, &patient("allowed")))).expect(201);
    let id = created.json()["id"].as_str().unwrap().to_owned();
    server.request_as(&allowed, "GET", &format!("/Patient/{id}"), None).expect(200);
    let patch = json!([{"op": "add", "path": "/active", "value": false}]);
    server.request_as(&allowed, "PATCH", &format!("/Patient/{id}"), Some((JSON_PATCH, &patch))).expect(200);
    server.request_as(&allowed, "POST", "/Patient/$validate", Some((FHIR_JSON, &patient("v")))).expect(200);
    server.request_as(&allowed, "DELETE", &format!("/Patient/{id}"), None).expect(204);
    // FHIR data actions only: not Fhirside's admin API.
    server.request_as(&allowed, "GET", "/_admin/apps", None).expect(403);

    let other = server.token(&other_id, &other_secret);
    server.request_as(&other, "GET", "/Patient", None).expect(403);
}

// --- The admin REST API -----------------------------------------------------------------------

/// A token request for an app at the v2 endpoint (status and body, success or not).
fn token_response(server: &Server, client_id: &str, secret: &str) -> Response {
    let form = format!(
        "grant_type=client_credentials&client_id={client_id}&client_secret={}&scope={}/.default",
        form_encode(secret),
        form_encode(&server.base)
    );
    server.request(
        "POST",
        &format!("/{}/oauth2/v2.0/token", server.tenant.as_deref().unwrap()),
        &[("content-type", "application/x-www-form-urlencoded")],
        Some(form.as_bytes()),
    )
}

#[track_caller]
fn expect_outcome(response: Response, status: u16, code: &str) -> Value {
    let body = String::from_utf8_lossy(&response.body).into_owned();
    assert_eq!(response.status, status, "expected {status}: {body}");
    let json = response.json();
    assert_eq!(json["resourceType"], "OperationOutcome", "{body}");
    assert_eq!(json["issue"][0]["code"], code, "{body}");
    json
}

#[test]
fn the_admin_api_manages_apps_secrets_users_and_role_assignments() {
    let server = Server::start_secure(&[]);
    let (admin_id, admin_secret, _) = server.create_app("Administrator", &["Fhirside Administrator"]);
    let admin = server.token(&admin_id, &admin_secret);
    let call = |method: &str, path: &str, body: Option<&Value>| -> Response {
        server.request_as(&admin, method, path, body.map(|b| ("application/json", b)))
    };

    // An app with a role; its secret is shown once.
    let created =
        call("POST", "/_admin/apps", Some(&json!({"displayName": "Made by REST", "roles": ["FHIR Data Reader"]})))
            .expect(201);
    assert_eq!(created.header("cache-control"), Some("no-store"));
    let app = created.json();
    let (client_id, object_id) = (app["clientId"].as_str().unwrap(), app["objectId"].as_str().unwrap());
    let first_secret = app["clientSecret"].as_str().expect("the secret, once").to_owned();
    assert_eq!(app["roles"], json!(["FHIR Data Reader"]), "{app}");
    let token = server.token(client_id, &first_secret);
    server.request_as(&token, "GET", "/Patient", None).expect(200);
    server.request_as(&token, "POST", "/Patient", Some((FHIR_JSON, &patient("rest")))).expect(403);

    let read = call("GET", &format!("/_admin/apps/{client_id}"), None).expect(200).json();
    assert_eq!(read["objectId"], app["objectId"]);
    assert!(read.get("clientSecret").is_none(), "{read}");
    let listed = call("GET", "/_admin/apps", None).expect(200);
    assert!(!String::from_utf8_lossy(&listed.body).contains(&first_secret), "a listing shows no secret");
    let apps = listed.json()["value"].as_array().unwrap().clone();
    assert!(apps.iter().any(|a| a["clientId"] == client_id), "{apps:?}");

    // A second secret: its text once; listed without it; works; removed, no longer works.
    let added = call("POST", &format!("/_admin/apps/{client_id}/secrets"), Some(&json!({"displayName": "second"})))
        .expect(201)
        .json();
    let second_secret = added["secretText"].as_str().expect("secretText, once").to_owned();
    let key_id = added["keyId"].as_str().expect("keyId").to_owned();
    let listed = call("GET", &format!("/_admin/apps/{client_id}/secrets"), None).expect(200);
    let text = String::from_utf8_lossy(&listed.body).into_owned();
    assert!(!text.contains(&first_secret) && !text.contains(&second_secret), "secret values listed: {text}");
    let secrets = listed.json()["value"].as_array().unwrap().clone();
    assert_eq!(secrets.len(), 2, "{secrets:?}");
    assert!(secrets.iter().all(|s| s.get("secretText").is_none()), "{secrets:?}");
    assert!(secrets.iter().any(|s| s["keyId"] == key_id), "{secrets:?}");
    token_response(&server, client_id, &second_secret).expect(200);
    call("DELETE", &format!("/_admin/apps/{client_id}/secrets/{key_id}"), None).expect(204);
    let refused = token_response(&server, client_id, &second_secret);
    assert!(matches!(refused.status, 400 | 401), "a removed secret: {}", refused.status);
    assert_eq!(refused.json()["error"], "invalid_client");
    token_response(&server, client_id, &first_secret).expect(200);
    assert_eq!(
        call("GET", &format!("/_admin/apps/{client_id}/secrets"), None).expect(200).json()["value"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // A user, who can sign in (their password is never returned).
    let password = "Correct-Horse-7-Battery";
    let user = call(
        "POST",
        "/_admin/users",
        Some(&json!({"userPrincipalName": "alice@example.org", "password": password, "roles": ["FHIR Data Reader"]})),
    )
    .expect(201);
    assert!(!String::from_utf8_lossy(&user.body).contains(password));
    let user = user.json();
    assert_eq!(user["userPrincipalName"], "alice@example.org");
    assert_eq!(user["roles"], json!(["FHIR Data Reader"]));
    let user_id = user["objectId"].as_str().unwrap().to_owned();
    call("GET", &format!("/_admin/users/{user_id}"), None).expect(200);
    let users = call("GET", "/_admin/users", None).expect(200).json();
    assert!(users["value"].as_array().unwrap().iter().any(|u| u["objectId"] == user_id.as_str()), "{users}");

    // Role assignments: added, listed, effective at once for the app's existing token, removed.
    let assignment =
        call("POST", "/_admin/roleAssignments", Some(&json!({"role": "FHIR Data Writer", "principalId": object_id})))
            .expect(201)
            .json();
    let assignment_id = assignment["id"].as_str().expect("an assignment id").to_owned();
    assert_eq!(assignment["principalId"], object_id);
    server.request_as(&token, "POST", "/Patient", Some((FHIR_JSON, &patient("rest")))).expect(201);
    let listed = call("GET", &format!("/_admin/roleAssignments?principalId={object_id}"), None).expect(200).json();
    let mut roles: Vec<&str> =
        listed["value"].as_array().unwrap().iter().map(|a| a["role"].as_str().unwrap()).collect();
    roles.sort();
    assert_eq!(roles, ["FHIR Data Reader", "FHIR Data Writer"], "{listed}");
    let all = call("GET", "/_admin/roleAssignments", None).expect(200).json();
    assert!(all["value"].as_array().unwrap().len() >= 4, "admin, app (2), user: {all}");
    call("DELETE", &format!("/_admin/roleAssignments/{assignment_id}"), None).expect(204);
    server.request_as(&token, "POST", "/Patient", Some((FHIR_JSON, &patient("rest")))).expect(403);
    let definitions = call("GET", "/_admin/roleDefinitions", None).expect(200).json();
    let names: Vec<&str> = definitions["value"].as_array().unwrap().iter().filter_map(|d| d["name"].as_str()).collect();
    for role in ["FHIR Data Reader", "FHIR Data Contributor", "Fhirside Administrator", "globalAdmin"] {
        assert!(names.contains(&role), "{role} missing from {names:?}");
    }

    // Bad input: 400 with an OperationOutcome.
    let secrets_path = format!("/_admin/apps/{client_id}/secrets");
    let bad: [(&str, &[u8]); 8] = [
        ("/_admin/apps", b"not json"),
        ("/_admin/apps", br#"{"roles": []}"#),
        ("/_admin/apps", br#"{"displayName": "x", "colour": "blue"}"#),
        ("/_admin/apps", br#"{"displayName": "x", "roles": ["No Such Role"]}"#),
        ("/_admin/roleAssignments", br#"{"role": "No Such Role", "principalId": "x"}"#),
        ("/_admin/roleAssignments", br#"{"role": "FHIR Data Reader"}"#),
        ("/_admin/users", br#"{"userPrincipalName": "bob@example.org"}"#),
        (&secrets_path, br#"{"expiresInDays": 0}"#),
    ];
    let authorization = bearer(&admin);
    for (path, body) in bad {
        let headers = [("authorization", authorization.as_str()), ("content-type", "application/json")];
        let response = server.request("POST", path, &headers, Some(body));
        let what = format!("POST {path} {}", String::from_utf8_lossy(body));
        assert_eq!(response.status, 400, "{what}: {}", String::from_utf8_lossy(&response.body));
        assert_eq!(response.json()["resourceType"], "OperationOutcome", "{what}");
    }

    // Unknown ids: 404.
    let nobody = "00000000-0000-4000-8000-000000000000";
    for (method, path, body) in [
        ("GET", format!("/_admin/apps/{nobody}"), None),
        ("PATCH", format!("/_admin/apps/{nobody}"), Some(json!({"displayName": "x"}))),
        ("DELETE", format!("/_admin/apps/{nobody}"), None),
        ("POST", format!("/_admin/apps/{nobody}/secrets"), Some(json!({}))),
        ("DELETE", format!("/_admin/apps/{client_id}/secrets/{nobody}"), None),
        ("DELETE", format!("/_admin/apps/{client_id}/secrets/{key_id}"), None),
        ("GET", format!("/_admin/users/{nobody}"), None),
        ("DELETE", format!("/_admin/users/{nobody}"), None),
        ("DELETE", format!("/_admin/roleAssignments/{nobody}"), None),
        ("DELETE", format!("/_admin/roleAssignments/{assignment_id}"), None),
    ] {
        let response = call(method, &path, body.as_ref());
        assert_eq!(response.status, 404, "{method} {path}: {}", String::from_utf8_lossy(&response.body));
        expect_outcome(response, 404, "not-found");
    }

    // Callers without the admin data action: 403, whatever FHIR roles they hold.
    let (contributor_id, contributor_secret, _) = server.create_app("Contributor", &["FHIR Data Contributor"]);
    let (global_id, global_secret, _) = server.create_app("Global admin", &["globalAdmin"]);
    for (who, caller) in [
        ("a reader", token.clone()),
        ("a contributor", server.token(&contributor_id, &contributor_secret)),
        ("globalAdmin", server.token(&global_id, &global_secret)),
    ] {
        for (method, path, body) in [
            ("GET", "/_admin/apps".to_owned(), None),
            (
                "POST",
                "/_admin/apps".to_owned(),
                Some(json!({"displayName": "Sneaky", "roles": ["Fhirside Administrator"]})),
            ),
            ("GET", format!("/_admin/apps/{client_id}"), None),
            ("POST", format!("/_admin/apps/{client_id}/secrets"), Some(json!({}))),
            ("GET", format!("/_admin/apps/{client_id}/secrets"), None),
            ("GET", "/_admin/users".to_owned(), None),
            (
                "POST",
                "/_admin/users".to_owned(),
                Some(json!({"userPrincipalName": "eve@example.org", "password": "x"})),
            ),
            ("GET", "/_admin/roleAssignments".to_owned(), None),
            (
                "POST",
                "/_admin/roleAssignments".to_owned(),
                Some(json!({"role": "Fhirside Administrator", "principalId": object_id})),
            ),
            ("DELETE", format!("/_admin/users/{user_id}"), None),
            ("GET", "/_admin/roleDefinitions".to_owned(), None),
        ] {
            let response = server.request_as(&caller, method, &path, body.as_ref().map(|b| ("application/json", b)));
            assert_eq!(response.status, 403, "{who}: {method} {path}: {}", String::from_utf8_lossy(&response.body));
            assert_eq!(forbidden_problem(&response.json(), true), None, "{who}: {method} {path}");
        }
    }
    // Nothing they tried happened.
    let apps = call("GET", "/_admin/apps", None).expect(200).json();
    assert!(!apps["value"].as_array().unwrap().iter().any(|a| a["displayName"] == "Sneaky"), "{apps}");
    call("GET", &format!("/_admin/users/{user_id}"), None).expect(200);

    // The app and the user are deleted with their assignments.
    call("DELETE", &format!("/_admin/apps/{client_id}"), None).expect(204);
    call("DELETE", &format!("/_admin/users/{user_id}"), None).expect(204);
    call("GET", &format!("/_admin/apps/{client_id}"), None).expect(404);
    let left = call("GET", &format!("/_admin/roleAssignments?principalId={object_id}"), None);
    assert!(
        left.status == 404 || left.json()["value"].as_array().is_some_and(Vec::is_empty),
        "assignments of a deleted app: {}",
        String::from_utf8_lossy(&left.body)
    );
}

/// Long enough for the server to see a change the admin CLI made in another process.
pub fn wait_for_external_changes() {
    std::thread::sleep(std::time::Duration::from_millis(fhirside_identity::store::EXTERNAL_CHECK_MS + 50));
}

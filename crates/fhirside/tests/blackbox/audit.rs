//! The audit log (`<data dir>/audit/audit-YYYY-MM-DD.jsonl`, AZURE-COMPAT §4), from outside: the
//! real binary over HTTPS with authentication on.
//!
//! - every field of both records (`Started`, then `Succeeded`/`Failed`) of each interaction;
//! - the custom audit headers (`X-MS-AZUREFHIR-AUDIT-*`) at and past their limits;
//! - the hash chain: `fhirside audit verify` finds an edited, a deleted and a torn line, a line
//!   edited with its hash recomputed, and a missing day file; concurrent requests (with either
//!   `--audit-sync`) make one intact chain;
//! - `GET /_audit`: its filters, the AuditEvent Bundle, and who may read it;
//! - no resource content, token or secret in the audit files (nor in the server's output with
//!   `--audit-stdout`);
//! - a request whose record cannot be written is not run (`503`), whether the day's file cannot be
//!   opened or the disk is full (a tmpfs mounted on the audit directory: the test needs root, as
//!   these tests run in CI), and the log recovers once it can write again.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Map, Value};

use crate::harness::{admin_command, jwt_claims, temp_dir, Response, Server};

const FHIR_JSON: &str = "application/fhir+json";
const JSON_PATCH: &str = "application/json-patch+json";
const FORM: &str = "application/x-www-form-urlencoded";
const SYSTEM: &str = "urn:fhirside:audit";

/// The members of every stored record, in order (Azure's fields, then the chain).
const RECORD_FIELDS: [&str; 18] = [
    "TimeGenerated",
    "LogCategory",
    "OperationName",
    "ResultType",
    "CorrelationId",
    "RequestUri",
    "FhirResourceType",
    "CallerIdentity",
    "CallerIdentityIssuer",
    "CallerIdentityObjectId",
    "CallerIPAddress",
    "StatusCode",
    "OperationDuration",
    "Location",
    "Properties",
    "Sequence",
    "PreviousHash",
    "Hash",
];

/// The token claims that identify a caller; `CallerIdentity` holds those of the token, no other.
const IDENTIFYING_CLAIMS: [&str; 10] =
    ["iss", "oid", "sub", "tid", "appid", "azp", "idtyp", "upn", "unique_name", "preferred_username"];

/// An app of the built-in authority with a token.
struct Caller {
    client_id: String,
    secret: String,
    object_id: String,
    token: String,
}

impl Caller {
    fn new(server: &Server, name: &str, roles: &[&str]) -> Caller {
        let (client_id, secret, object_id) = server.create_app(name, roles);
        let token = server.token(&client_id, &secret);
        Caller { client_id, secret, object_id, token }
    }

    /// The `CallerIdentity` its records must carry: the identifying claims of its token.
    fn identity(&self) -> Value {
        let claims = jwt_claims(&self.token);
        let identity: Map<String, Value> = claims
            .as_object()
            .unwrap()
            .iter()
            .filter(|(name, _)| IDENTIFYING_CLAIMS.contains(&name.as_str()))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        Value::Object(identity)
    }
}

/// One request: `token` as a bearer token, `headers`, and a body of a content type.
fn send(
    server: &Server,
    token: Option<&str>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, &[u8])>,
) -> Response {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut all: Vec<(&str, &str)> = headers.to_vec();
    if let Some(bearer) = &bearer {
        all.push(("authorization", bearer));
    }
    if let Some((content_type, _)) = body {
        all.push(("content-type", content_type));
    }
    server.request(method, path, &all, body.map(|(_, b)| b))
}

fn audit_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("audit")
}

/// Waits until the server has moved every record from its journal to the day files, which it
/// does within a few milliseconds of answering: the journal is all zeros when nothing is pending.
fn settled(data_dir: &Path) {
    let journal = audit_dir(data_dir).join("journal");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::read(&journal).is_ok_and(|bytes| bytes.iter().any(|&b| b != 0)) {
        assert!(std::time::Instant::now() < deadline, "the journal still holds records after 10 s");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// The day files of the audit directory, oldest first, once every record is in them.
fn audit_files(data_dir: &Path) -> Vec<PathBuf> {
    settled(data_dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(audit_dir(data_dir))
        .expect("the audit directory exists")
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with("audit-") && name.ends_with(".jsonl") && p.is_file()
        })
        .collect();
    files.sort();
    files
}

/// Every record, in the order of the log.
fn records(data_dir: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    for file in audit_files(data_dir) {
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.is_empty() || text.ends_with('\n'), "{} ends in an incomplete line", file.display());
        for (i, line) in text.lines().enumerate() {
            let record: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}:{}: not JSON ({e}): {line}", file.display(), i + 1));
            out.push(record);
        }
    }
    out
}

/// The records of one correlation id, in the order of the log.
fn records_of(data_dir: &Path, correlation_id: &str) -> Vec<Value> {
    records(data_dir).into_iter().filter(|r| r["CorrelationId"] == correlation_id).collect()
}

/// `2026-05-01T12:34:56.123456Z`: RFC 3339, UTC, microseconds (fixed width, so that the text
/// order is the time order).
fn is_timestamp(text: &str) -> bool {
    let b = text.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    b.len() == 27
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'.'
        && digits(20..26)
        && b[26] == b'Z'
}

/// The members of a stored record are exactly Azure's fields and the chain, in order.
#[track_caller]
fn assert_record_shape(record: &Value) {
    let keys: BTreeSet<&str> = record.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, BTreeSet::from(RECORD_FIELDS), "the members of {record}");
}

/// `fhirside audit verify --data-dir DIR --output json`: its exit code and report.
fn verify(data_dir: &Path) -> (i32, Value) {
    let output = admin_command(data_dir, &["audit", "verify"]);
    let code = output.status.code().expect("verify exited");
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "verify: not JSON ({e}): {} {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (code, report)
}

/// `fhirside audit verify --data-dir DIR` for people: its exit code and output.
fn verify_text(data_dir: &Path) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_fhirside"))
        .args(["audit", "verify", "--data-dir"])
        .arg(data_dir)
        .output()
        .expect("run fhirside");
    (output.status.code().unwrap(), String::from_utf8_lossy(&output.stdout).into_owned())
}

fn patient(identifier: &str) -> Value {
    json!({"resourceType": "Patient", "active": true, "identifier": [{"system": SYSTEM, "value": identifier}]})
}

fn create(server: &Server, caller: &Caller, resource: &Value) -> String {
    let path = format!("/{}", resource["resourceType"].as_str().unwrap());
    let body = resource.to_string();
    let response =
        send(server, Some(&caller.token), "POST", &path, &[], Some((FHIR_JSON, body.as_bytes()))).expect(201);
    response.json()["id"].as_str().unwrap().to_owned()
}

/// Who sends a request of the table.
#[derive(Clone, Copy, PartialEq)]
enum Who {
    Contributor,
    Reader,
    Nobody,
}

/// How the request names its correlation id.
#[derive(Clone, Copy, PartialEq)]
enum Sends {
    XRequestId,
    XCorrelationId,
    /// No id: the record's `CorrelationId` is the server's request id.
    Nothing,
    /// An `X-Request-Id` the server does not take (a space in it): as `Nothing`.
    Malformed,
}

struct Case {
    name: &'static str,
    who: Who,
    sends: Sends,
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Option<(&'static str, Vec<u8>)>,
    status: u16,
    /// `OperationName` of the `Started` record and of the outcome (they differ only for a Bundle
    /// posted to the base, named `bundle-post` until its type is read).
    operation: (&'static str, &'static str),
    resource_type: Option<String>,
}

fn case(
    name: &'static str,
    who: Who,
    method: &'static str,
    path: String,
    status: u16,
    operation: &'static str,
) -> Case {
    let resource_type = path
        .trim_start_matches('/')
        .split(['/', '?'])
        .next()
        .filter(|t| t.starts_with(|c: char| c.is_ascii_uppercase()))
        .map(str::to_owned);
    Case {
        name,
        who,
        sends: Sends::XRequestId,
        method,
        path,
        headers: Vec::new(),
        body: None,
        status,
        operation: (operation, operation),
        resource_type,
    }
}

impl Case {
    fn body(mut self, content_type: &'static str, body: &Value) -> Case {
        self.body = Some((content_type, body.to_string().into_bytes()));
        self
    }

    fn form(mut self, body: &str) -> Case {
        self.body = Some((FORM, body.as_bytes().to_vec()));
        self
    }

    fn header(mut self, name: &'static str, value: &str) -> Case {
        self.headers.push((name, value.to_owned()));
        self
    }

    fn sends(mut self, sends: Sends) -> Case {
        self.sends = sends;
        self
    }

    fn resource_type(mut self, resource_type: &str) -> Case {
        self.resource_type = Some(resource_type.to_owned());
        self
    }

    fn started_as(mut self, started: &'static str) -> Case {
        self.operation.0 = started;
        self
    }
}

#[test]
fn each_interaction_is_recorded_with_every_field() {
    let server = Server::start_secure(&[]);
    let contributor = Caller::new(&server, "Audit contributor", &["FHIR Data Contributor"]);
    let reader = Caller::new(&server, "Audit reader", &["FHIR Data Reader"]);

    let p1 = create(&server, &contributor, &patient("p1"));
    let doomed = create(&server, &contributor, &patient("doomed"));
    create(&server, &contributor, &patient("cdelete"));
    let observation = json!({"resourceType": "Observation", "status": "final", "code": {"text": "weight"},
        "subject": {"reference": format!("Patient/{p1}")}});
    create(&server, &contributor, &observation);

    let mut updated = patient("p1");
    updated["id"] = json!(p1);
    updated["active"] = json!(false);
    let transaction = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:0c9e3c2e-3a1c-4a57-9d6f-5b0f8f2a1e01", "resource": patient("tx"),
         "request": {"method": "POST", "url": "Patient"}},
    ]});
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": format!("Patient/{p1}")}},
    ]});
    let patch = json!([{"op": "replace", "path": "/active", "value": true}]);

    use Who::{Contributor as C, Nobody as N, Reader as R};
    let cases = vec![
        case("create", C, "POST", "/Patient".into(), 201, "create").body(FHIR_JSON, &patient("created")),
        case("conditional create", C, "POST", "/Patient".into(), 201, "conditional-create")
            .body(FHIR_JSON, &patient("ccreate"))
            .header("if-none-exist", &format!("identifier={SYSTEM}|ccreate"))
            .sends(Sends::XCorrelationId),
        case("read", C, "GET", format!("/Patient/{p1}"), 200, "read"),
        case("vread", C, "GET", format!("/Patient/{p1}/_history/1"), 200, "vread"),
        case("update", C, "PUT", format!("/Patient/{p1}"), 200, "update").body(FHIR_JSON, &updated),
        case(
            "conditional update",
            C,
            "PUT",
            format!("/Patient?identifier={SYSTEM}|cupdate"),
            201,
            "conditional-update",
        )
        .body(FHIR_JSON, &patient("cupdate")),
        case("patch", C, "PATCH", format!("/Patient/{p1}"), 200, "patch").body(JSON_PATCH, &patch),
        case("delete", C, "DELETE", format!("/Patient/{doomed}"), 204, "delete"),
        case(
            "conditional delete",
            C,
            "DELETE",
            format!("/Patient?identifier={SYSTEM}|cdelete"),
            204,
            "conditional-delete",
        ),
        case("search-type GET", C, "GET", format!("/Patient?identifier={SYSTEM}|p1&_count=5"), 200, "search-type")
            .sends(Sends::Nothing),
        case("search-type POST", C, "POST", "/Patient/_search".into(), 200, "search-type").form(&format!("_id={p1}")),
        case("search-system", C, "GET", "/?_type=Patient&_count=1".into(), 200, "search-system"),
        case("compartment search", C, "GET", format!("/Patient/{p1}/Observation"), 200, "search")
            .resource_type("Observation"),
        case("history-instance", C, "GET", format!("/Patient/{p1}/_history"), 200, "history-instance"),
        case("history-type", C, "GET", "/Patient/_history?_count=2".into(), 200, "history-type"),
        case("history-system", C, "GET", "/_history".into(), 200, "history-system"),
        case("transaction", C, "POST", "/".into(), 200, "transaction")
            .body(FHIR_JSON, &transaction)
            .started_as("bundle-post"),
        case("batch", C, "POST", "/".into(), 200, "batch").body(FHIR_JSON, &batch).started_as("bundle-post"),
        case("$validate", C, "POST", "/Patient/$validate".into(), 200, "validate").body(FHIR_JSON, &patient("v")),
        case("$everything", C, "GET", format!("/Patient/{p1}/$everything"), 200, "everything"),
        case("capabilities", N, "GET", "/metadata".into(), 200, "capabilities"),
        case("401 without a token", N, "GET", format!("/Patient/{p1}"), 401, "read"),
        case("403 for a reader writing", R, "POST", "/Patient".into(), 403, "create")
            .body(FHIR_JSON, &patient("forbidden")),
        case("404", R, "GET", "/Patient/nobody-here".into(), 404, "read").sends(Sends::Malformed),
    ];

    for (i, case) in cases.iter().enumerate() {
        let what = case.name;
        let sent_id = format!("audit-case-{i}");
        let mut headers: Vec<(&str, &str)> = case.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        match case.sends {
            Sends::XRequestId => headers.push(("x-request-id", &sent_id)),
            Sends::XCorrelationId => headers.push(("x-correlation-id", &sent_id)),
            Sends::Nothing => {}
            Sends::Malformed => headers.push(("x-request-id", "not taken")),
        }
        let caller = match case.who {
            Who::Contributor => Some(&contributor),
            Who::Reader => Some(&reader),
            Who::Nobody => None,
        };
        let body = case.body.as_ref().map(|(t, b)| (*t, b.as_slice()));
        let response = send(&server, caller.map(|c| c.token.as_str()), case.method, &case.path, &headers, body);
        assert_eq!(
            response.status,
            case.status,
            "{what}: {} {}: {}",
            case.method,
            case.path,
            String::from_utf8_lossy(&response.body)
        );
        let correlation_id = match case.sends {
            Sends::Nothing | Sends::Malformed => response.header("x-request-id").expect("X-Request-Id").to_owned(),
            _ => sent_id.clone(),
        };
        assert_eq!(response.header("x-correlation-id"), Some(correlation_id.as_str()), "{what}: X-Correlation-Id");

        let found = records_of(&server.data_dir, &correlation_id);
        assert_eq!(found.len(), 2, "{what}: two records for {correlation_id}: {found:#?}");
        let (started, outcome) = (&found[0], &found[1]);
        assert_eq!(started["ResultType"], "Started", "{what}: {started}");
        assert_eq!(started["StatusCode"], Value::Null, "{what}: {started}");
        assert_eq!(started["OperationDuration"], Value::Null, "{what}: {started}");
        let result = if case.status < 400 { "Succeeded" } else { "Failed" };
        assert_eq!(outcome["ResultType"], result, "{what}: {outcome}");
        assert_eq!(outcome["StatusCode"], case.status, "{what}: {outcome}");
        assert!(outcome["OperationDuration"].is_u64(), "{what}: OperationDuration of {outcome}");
        assert_eq!(started["OperationName"], case.operation.0, "{what}: {started}");
        assert_eq!(outcome["OperationName"], case.operation.1, "{what}: {outcome}");

        let (identity, issuer, object_id) = match caller {
            // A `401` has no verified caller: nothing of whatever was sent is recorded.
            Some(caller) if case.status != 401 => {
                let identity = caller.identity();
                let claims = jwt_claims(&caller.token);
                (identity, claims["iss"].clone(), json!(caller.object_id))
            }
            _ => (json!({}), Value::Null, Value::Null),
        };
        for record in [started, outcome] {
            assert_record_shape(record);
            assert_eq!(record["LogCategory"], "AuditLogs", "{what}");
            assert_eq!(record["Location"], "local", "{what}");
            assert_eq!(record["CorrelationId"], correlation_id, "{what}");
            assert_eq!(record["RequestUri"], format!("{}{}", server.base, case.path), "{what}");
            assert_eq!(record["FhirResourceType"], json!(case.resource_type), "{what}: {record}");
            assert_eq!(record["CallerIdentity"], identity, "{what}: CallerIdentity");
            assert_eq!(record["CallerIdentityIssuer"], issuer, "{what}");
            assert_eq!(record["CallerIdentityObjectId"], object_id, "{what}");
            assert_eq!(record["CallerIPAddress"], "127.0.0.1", "{what}");
            assert_eq!(record["Properties"], json!({}), "{what}");
            let time = record["TimeGenerated"].as_str().unwrap();
            assert!(is_timestamp(time), "{what}: TimeGenerated {time}");
        }
        assert!(started["TimeGenerated"].as_str() <= outcome["TimeGenerated"].as_str(), "{what}: times");
        if let Some(caller) = caller.filter(|_| case.status != 401) {
            let identity = started["CallerIdentity"].as_object().unwrap();
            for claim in ["iss", "oid", "tid", "sub", "idtyp"] {
                assert!(identity.contains_key(claim), "{what}: {claim} in CallerIdentity {identity:?}");
            }
            assert!(identity.contains_key("appid") || identity.contains_key("azp"), "{what}: the app in {identity:?}");
            assert_eq!(identity["oid"], caller.object_id.as_str());
            // What the token says beyond who the caller is stays out (it has these claims).
            let claims = jwt_claims(&caller.token);
            for claim in ["aud", "exp", "iat", "nbf", "ver", "uti"] {
                assert!(claims.get(claim).is_some(), "{what}: the token has {claim}: {claims}");
                assert!(!identity.contains_key(claim), "{what}: {claim} in CallerIdentity {identity:?}");
            }
            assert!(!identity.values().any(|v| v.as_str() == Some(caller.token.as_str())), "{what}: the token");
        }
    }

    // The whole log: one chain in time order, every record of the same shape.
    let all = records(&server.data_dir);
    for (i, record) in all.iter().enumerate() {
        assert_record_shape(record);
        assert_eq!(record["Sequence"], i as u64 + 1, "{record}");
        if i > 0 {
            assert_eq!(record["PreviousHash"], all[i - 1]["Hash"], "{record}");
            assert!(
                all[i - 1]["TimeGenerated"].as_str() <= record["TimeGenerated"].as_str(),
                "TimeGenerated increases: {} then {}",
                all[i - 1],
                record
            );
        }
    }
    // The stored member order is Azure's field order, then the chain.
    let first_line = std::fs::read_to_string(&audit_files(&server.data_dir)[0]).unwrap();
    let first_line = first_line.lines().next().unwrap();
    let mut at = 0;
    for field in RECORD_FIELDS {
        let found = first_line[at..].find(&format!("\"{field}\":")).unwrap_or_else(|| panic!("{field} in order"));
        at += found + 1;
    }
}

/// Sends `GET /Patient?_count=1` as `caller` with `headers`; returns the response and its records.
fn search_with(server: &Server, caller: &Caller, id: &str, headers: &[(&str, &str)]) -> (Response, Vec<Value>) {
    let mut all = headers.to_vec();
    all.push(("x-request-id", id));
    let response = send(server, Some(&caller.token), "GET", "/Patient?_count=1", &all, None);
    let found = records_of(&server.data_dir, id);
    (response, found)
}

/// Asserts a `431` with Azure's issue and message, and its records (`Started`, then `Failed` 431).
#[track_caller]
fn assert_431(response: &Response, found: &[Value], message: &str) {
    assert_eq!(response.status, 431, "{}", String::from_utf8_lossy(&response.body));
    let outcome = response.json();
    assert_eq!(outcome["resourceType"], "OperationOutcome");
    assert_eq!(outcome["issue"][0]["code"], "invalid");
    assert_eq!(outcome["issue"][0]["diagnostics"], message);
    let results: Vec<(&Value, &Value)> = found.iter().map(|r| (&r["ResultType"], &r["StatusCode"])).collect();
    assert_eq!(results, [(&json!("Started"), &Value::Null), (&json!("Failed"), &json!(431))], "{found:#?}");
}

#[test]
fn custom_audit_headers_are_recorded_within_their_limits() {
    // Also: a configured `Location`.
    let server = Server::start_secure(&["--audit-location", "westeurope"]);
    let reader = Caller::new(&server, "Audit headers", &["FHIR Data Reader"]);

    let (response, found) = search_with(&server, &reader, "one", &[("X-MS-AZUREFHIR-AUDIT-USERID", "alice")]);
    response.expect(200);
    assert_eq!(found.len(), 2);
    for record in &found {
        assert_eq!(record["Properties"], json!({"X-MS-AZUREFHIR-AUDIT-USERID": "alice"}), "{record}");
        assert_eq!(record["Location"], "westeurope", "{record}");
    }

    // The same header twice (in any case): one property, the values joined.
    let headers = [("X-MS-AZUREFHIR-AUDIT-Purpose", "treatment"), ("x-ms-azurefhir-audit-purpose", "billing")];
    let (response, found) = search_with(&server, &reader, "twice", &headers);
    response.expect(200);
    assert_eq!(found[1]["Properties"], json!({"X-MS-AZUREFHIR-AUDIT-PURPOSE": "treatment, billing"}));

    // 10 distinct headers are allowed; an 11th is a 431.
    let names: Vec<String> = (0..11).map(|i| format!("X-MS-AZUREFHIR-AUDIT-H{i}")).collect();
    let eleven: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
    let (response, found) = search_with(&server, &reader, "ten", &eleven[..10]);
    response.expect(200);
    let properties = found[1]["Properties"].as_object().unwrap();
    assert_eq!(properties.len(), 10, "{properties:?}");
    assert!((0..10).all(|i| properties[&format!("X-MS-AZUREFHIR-AUDIT-H{i}")] == "v"), "{properties:?}");
    let (response, found) = search_with(&server, &reader, "eleven", &eleven);
    assert_431(
        &response,
        &found,
        "The maximum number of custom audit headers allowed is 10. The number of custom audit headers supplied is 11.",
    );
    // Repeating one of ten does not make it eleven.
    let mut repeated = eleven[..10].to_vec();
    repeated.push(("x-ms-azurefhir-audit-h0", "again"));
    search_with(&server, &reader, "ten-repeated", &repeated).0.expect(200);

    // A value of 2048 characters is allowed; 2049 is a 431 naming the header.
    let at_limit = "a".repeat(2048);
    let (response, found) = search_with(&server, &reader, "long", &[("X-MS-AZUREFHIR-AUDIT-Long", &at_limit)]);
    response.expect(200);
    assert_eq!(found[1]["Properties"]["X-MS-AZUREFHIR-AUDIT-LONG"], at_limit.as_str());
    let past_limit = "a".repeat(2049);
    let (response, found) = search_with(&server, &reader, "too-long", &[("X-MS-AZUREFHIR-AUDIT-Long", &past_limit)]);
    // HTTP/1.1 header names reach the server in lower case, so the message names the header so.
    assert_431(
        &response,
        &found,
        "The maximum length of a custom audit header value is 2048. The supplied custom audit header \
         'X-MS-AZUREFHIR-AUDIT-LONG' has length of 2049.",
    );
    for record in &found {
        assert_eq!(record["Properties"], json!({}), "a refused header is not recorded: {record}");
        assert_eq!(record["OperationName"], "search-type");
        assert_eq!(record["CallerIdentityObjectId"], reader.object_id.as_str());
    }

    // Values are HTML-encoded: markup never reaches the log as markup.
    let script = "<script>alert('x')</script> & \"more\"";
    let (response, found) = search_with(&server, &reader, "markup", &[("X-MS-AZUREFHIR-AUDIT-Note", script)]);
    response.expect(200);
    assert_eq!(
        found[1]["Properties"]["X-MS-AZUREFHIR-AUDIT-NOTE"],
        "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;more&quot;",
        "{}",
        found[1]
    );
    for file in audit_files(&server.data_dir) {
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(!text.contains("<script>"), "{} holds markup", file.display());
    }
}

/// `Hash` of a record: base64url(SHA-256(PreviousHash + "\n" + the line with an empty `Hash`)).
fn chain_hash(previous_hash: &str, canonical_line: &str) -> String {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    context.update(previous_hash.as_bytes());
    context.update(b"\n");
    context.update(canonical_line.as_bytes());
    fhirside_identity::b64::encode(context.finish().as_ref())
}

/// Rewrites line `number` (1-based) of `file` with `change`; `None` deletes it.
fn rewrite_line(file: &Path, number: usize, change: impl FnOnce(&str) -> Option<String>) {
    let text = std::fs::read_to_string(file).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    match change(&lines[number - 1]) {
        Some(line) => lines[number - 1] = line,
        None => {
            lines.remove(number - 1);
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    std::fs::write(file, out).unwrap();
}

#[test]
fn verify_finds_an_edited_a_deleted_and_a_torn_line() {
    let mut server = Server::start_secure(&["--audit-sync", "always"]);
    let contributor = Caller::new(&server, "Audit chain", &["FHIR Data Contributor"]);
    for i in 0..4 {
        let id = create(&server, &contributor, &patient(&format!("chain-{i}")));
        send(&server, Some(&contributor.token), "GET", &format!("/Patient/{id}"), &[], None).expect(200);
    }
    server.kill();
    let data_dir = server.data_dir.clone();
    let files = audit_files(&data_dir);
    assert_eq!(files.len(), 1, "{files:?}");
    let file = &files[0];
    let pristine = std::fs::read(file).unwrap();
    let total = records(&data_dir).len();
    assert_eq!(total, 16, "8 requests, 2 records each");

    let (code, report) = verify(&data_dir);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["intact"], true);
    assert_eq!(report["files"], 1);
    assert_eq!(report["records"], total);
    assert_eq!(report["first_sequence"], 1);
    assert_eq!(report["last_sequence"], total);
    assert_eq!(report["first_broken"], Value::Null);
    assert_eq!(report["last_hash"], records(&data_dir)[total - 1]["Hash"]);
    let (code, text) = verify_text(&data_dir);
    assert_eq!(code, 0);
    assert!(text.starts_with(&format!("audit trail intact: 1 file, {total} records")), "{text}");

    // An edited field of a middle line: line 8 is the outcome of a read (StatusCode 200).
    rewrite_line(file, 8, |line| {
        assert!(line.contains(r#""StatusCode":200"#), "{line}");
        Some(line.replace(r#""StatusCode":200"#, r#""StatusCode":201"#))
    });
    let (code, report) = verify(&data_dir);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(report["intact"], false);
    let broken = &report["first_broken"];
    assert_eq!(broken["file"], file.to_str().unwrap(), "{report:#}");
    assert_eq!(
        (&broken["line"], &broken["sequence"], &broken["kind"]),
        (&json!(8), &json!(8), &json!("hash-mismatch"))
    );
    assert_eq!(report["records"], 7, "the records before it verify");
    assert_eq!(report["last_sequence"], 7);
    let (code, text) = verify_text(&data_dir);
    assert_eq!(code, 1);
    assert!(text.contains(&format!("BROKEN at {}:8 (sequence 8)", file.display())), "{text}");

    // A deleted middle line: the next one (now line 8, sequence 9) shows the gap.
    std::fs::write(file, &pristine).unwrap();
    assert_eq!(verify(&data_dir).0, 0, "restored");
    rewrite_line(file, 8, |_| None);
    let (code, report) = verify(&data_dir);
    assert_eq!(code, 1, "{report:#}");
    let broken = &report["first_broken"];
    assert_eq!(broken["file"], file.to_str().unwrap());
    assert_eq!((&broken["line"], &broken["sequence"], &broken["kind"]), (&json!(8), &json!(9), &json!("sequence-gap")));
    assert!(broken["reason"].as_str().unwrap().contains("record 8 is missing"), "{report:#}");

    // An edited line whose hash is recomputed (the chain's formula is public): the line itself now
    // verifies, but the next record's PreviousHash names the original.
    std::fs::write(file, &pristine).unwrap();
    rewrite_line(file, 8, |line| {
        let edited = line.replace(r#""StatusCode":200"#, r#""StatusCode":201"#);
        let record: Value = serde_json::from_str(&edited).unwrap();
        let (head, _) = edited.rsplit_once(r#""Hash":""#).unwrap();
        let canonical = format!(r#"{head}"Hash":""}}"#);
        let hash = chain_hash(record["PreviousHash"].as_str().unwrap(), &canonical);
        Some(format!(r#"{head}"Hash":"{hash}"}}"#))
    });
    let (code, report) = verify(&data_dir);
    assert_eq!(code, 1, "{report:#}");
    let broken = &report["first_broken"];
    let found = (&broken["line"], &broken["sequence"], &broken["kind"]);
    assert_eq!(found, (&json!(9), &json!(9), &json!("previous-hash-mismatch")), "{report:#}");
    assert_eq!(report["records"], 8, "the forged line itself verifies");

    // A torn last line (a write cut short).
    std::fs::write(file, &pristine[..pristine.len() - 40]).unwrap();
    let (code, report) = verify(&data_dir);
    assert_eq!(code, 1, "{report:#}");
    let broken = &report["first_broken"];
    assert_eq!((&broken["line"], &broken["kind"]), (&json!(total), &json!("torn-final-line")), "{report:#}");
    assert_eq!(report["records"], total - 1);

    // Intact again.
    std::fs::write(file, &pristine).unwrap();
    let (code, report) = verify(&data_dir);
    assert_eq!((code, &report["records"]), (0, &json!(total)), "{report:#}");

    // The chain runs across day files: split into three, it verifies; without the middle file,
    // the first record of the next one shows the gap; without the oldest, the trail starts after
    // a retention cut.
    let lines: Vec<&str> = std::str::from_utf8(&pristine).unwrap().lines().collect();
    let older =
        [audit_dir(&data_dir).join("audit-2025-01-01.jsonl"), audit_dir(&data_dir).join("audit-2025-01-02.jsonl")];
    let write = |path: &Path, lines: &[&str]| std::fs::write(path, format!("{}\n", lines.join("\n"))).unwrap();
    write(&older[0], &lines[..5]);
    write(&older[1], &lines[5..10]);
    write(file, &lines[10..]);
    let (code, report) = verify(&data_dir);
    assert_eq!((code, &report["files"], &report["records"]), (0, &json!(3), &json!(total)), "{report:#}");
    let middle = std::fs::read(&older[1]).unwrap();
    std::fs::remove_file(&older[1]).unwrap();
    let (code, report) = verify(&data_dir);
    assert_eq!(code, 1, "{report:#}");
    let broken = &report["first_broken"];
    assert_eq!(broken["file"], file.to_str().unwrap());
    assert_eq!(
        (&broken["line"], &broken["sequence"], &broken["kind"]),
        (&json!(1), &json!(11), &json!("sequence-gap"))
    );
    assert!(broken["reason"].as_str().unwrap().contains("records 6 to 10 are missing"), "{report:#}");
    std::fs::write(&older[1], middle).unwrap();
    std::fs::remove_file(&older[0]).unwrap();
    let (code, report) = verify(&data_dir);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!((&report["starts_after_retention"], &report["first_sequence"]), (&json!(true), &json!(6)));
    std::fs::remove_file(&older[1]).unwrap();
    std::fs::write(file, &pristine).unwrap();

    // A server started on a torn trail sets the torn line aside and continues the chain from the
    // last complete record.
    std::fs::write(file, &pristine[..pristine.len() - 40]).unwrap();
    server.restart();
    send(&server, Some(&server.token(&contributor.client_id, &contributor.secret)), "GET", "/Patient", &[], None)
        .expect(200);
    server.kill();
    let torn = audit_dir(&data_dir).join(format!("{}.torn", file.file_name().unwrap().to_str().unwrap()));
    assert!(torn.is_file(), "the torn line is kept aside in {}", torn.display());
    let (code, report) = verify(&data_dir);
    assert_eq!((code, &report["records"]), (0, &json!(total + 1)), "{report:#}");
    let after = records(&data_dir);
    assert_eq!(after[total - 1]["PreviousHash"], after[total - 2]["Hash"]);
    assert_eq!(after[total - 1]["Sequence"], total as u64);
}

#[test]
fn concurrent_requests_make_one_chain() {
    for sync in ["always", "interval"] {
        let mut server = Server::start_secure(&["--audit-sync", sync]);
        let writer = Caller::new(&server, "Audit crowd", &["FHIR Data Contributor"]);
        std::thread::scope(|scope| {
            for t in 0..6 {
                let (server, token) = (&server, writer.token.as_str());
                scope.spawn(move || {
                    let mut client = server.client();
                    let bearer = format!("Bearer {token}");
                    for i in 0..8 {
                        let id = format!("crowd-{t}-{i}");
                        let headers = [("authorization", bearer.as_str()), ("x-request-id", id.as_str())];
                        let (method, path, body) = if i % 2 == 0 {
                            ("POST", "/Patient", Some(patient(&id).to_string()))
                        } else {
                            ("GET", "/Patient?_count=5", None)
                        };
                        let mut all = headers.to_vec();
                        if body.is_some() {
                            all.push(("content-type", FHIR_JSON));
                        }
                        let response = client.request(method, path, &all, body.as_deref().map(str::as_bytes));
                        assert!(response.status == 200 || response.status == 201, "{sync} {id}: {}", response.status);
                    }
                });
            }
        });
        let all = records(&server.data_dir);
        assert_eq!(all.len(), 6 * 8 * 2, "{sync}");
        for t in 0..6 {
            for i in 0..8 {
                let id = format!("crowd-{t}-{i}");
                let mine: Vec<&Value> = all.iter().filter(|r| r["CorrelationId"] == id.as_str()).collect();
                let results: Vec<&Value> = mine.iter().map(|r| &r["ResultType"]).collect();
                assert_eq!(results, [&json!("Started"), &json!("Succeeded")], "{sync} {id}");
            }
        }
        server.kill();
        let (code, report) = verify(&server.data_dir);
        assert_eq!((code, &report["records"]), (0, &json!(all.len())), "{sync}: {report:#}");
    }
}

/// `GET /_audit` as `caller` with a query; the JSON body on 200.
fn audit_query(server: &Server, caller: &Caller, query: &str) -> Response {
    send(server, Some(&caller.token), "GET", &format!("/_audit?{query}"), &[], None)
}

/// The `value` records of a `GET /_audit` answer.
#[track_caller]
fn values(response: Response) -> Vec<Value> {
    let response = response.expect(200);
    assert!(response.header("content-type").unwrap().starts_with("application/json"));
    response.json()["value"].as_array().unwrap().clone()
}

fn correlation_ids(records: &[Value]) -> BTreeSet<String> {
    records.iter().map(|r| r["CorrelationId"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn get_audit_filters_the_log_for_administrators() {
    let server = Server::start_secure(&[]);
    let admin = Caller::new(&server, "Audit admin", &["Fhirside Administrator"]);
    let contributor = Caller::new(&server, "Audit writer", &["FHIR Data Contributor"]);
    let reader = Caller::new(&server, "Audit viewer", &["FHIR Data Reader"]);

    let p = create(&server, &contributor, &patient("q"));
    let observation = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}});
    let body = observation.to_string();
    let ids = [("x-request-id", "obs-create")];
    send(&server, Some(&contributor.token), "POST", "/Observation", &ids, Some((FHIR_JSON, body.as_bytes())))
        .expect(201);
    let path = format!("/Patient/{p}");
    send(&server, Some(&reader.token), "GET", &path, &[("x-request-id", "reader-read")], None).expect(200);
    send(&server, Some(&reader.token), "GET", "/Patient/nobody", &[("x-request-id", "reader-404")], None).expect(404);
    let log = records(&server.data_dir);
    let read = records_of(&server.data_dir, "reader-read");

    // Everything so far, oldest first, as stored.
    let all = values(audit_query(&server, &admin, "_count=1000"));
    assert_eq!(all[..log.len()], log[..]);
    // A read's own records are written together with its answer, so the query does not see itself.
    assert_eq!(all.len(), log.len(), "nothing but what was there");

    // _count: the oldest records.
    assert_eq!(values(audit_query(&server, &admin, "_count=3")), log[..3]);

    // start and end: the reader's read alone, by its own times (end is inclusive at its precision).
    let (start, end) = (read[0]["TimeGenerated"].as_str().unwrap(), read[1]["TimeGenerated"].as_str().unwrap());
    let found = values(audit_query(&server, &admin, &format!("start={start}&end={end}")));
    assert_eq!(found, read, "start={start} end={end}");
    let today = &start[..10];
    assert!(values(audit_query(&server, &admin, &format!("start={today}&end={today}"))).len() > log.len());
    assert!(values(audit_query(&server, &admin, "end=2000-01-01")).is_empty());
    assert!(values(audit_query(&server, &admin, "start=2999")).is_empty());

    // caller: by object id and by client id.
    let by_oid = values(audit_query(&server, &admin, &format!("caller={}", reader.object_id)));
    assert_eq!(correlation_ids(&by_oid), BTreeSet::from(["reader-read".to_owned(), "reader-404".to_owned()]));
    assert!(by_oid.iter().all(|r| r["CallerIdentityObjectId"] == reader.object_id.as_str()));
    assert_eq!(values(audit_query(&server, &admin, &format!("caller={}", reader.client_id))), by_oid);

    // resourceType, operation, result, correlationId.
    let observations = values(audit_query(&server, &admin, "resourceType=Observation"));
    assert_eq!(correlation_ids(&observations), BTreeSet::from(["obs-create".to_owned()]));
    let reads = values(audit_query(&server, &admin, "operation=read"));
    assert_eq!(correlation_ids(&reads), BTreeSet::from(["reader-read".to_owned(), "reader-404".to_owned()]));
    assert!(reads.iter().all(|r| r["OperationName"] == "read"));
    let failed = values(audit_query(&server, &admin, "result=Failed"));
    assert_eq!(correlation_ids(&failed), BTreeSet::from(["reader-404".to_owned()]));
    assert_eq!(failed[0]["StatusCode"], 404);
    let started = values(audit_query(&server, &admin, "result=Started&operation=create"));
    assert_eq!(started.len(), 2, "two creates: {started:#?}");
    assert_eq!(values(audit_query(&server, &admin, "correlationId=reader-read")), read);
    let combined = format!("caller={}&operation=read&result=Succeeded", reader.object_id);
    assert_eq!(values(audit_query(&server, &admin, &combined)), read[1..]);

    // Unknown or bad parameters.
    for query in ["name=x", "result=Maybe", "start=yesterday", "_count=0"] {
        let response = audit_query(&server, &admin, query);
        assert_eq!(response.status, 400, "{query}: {}", String::from_utf8_lossy(&response.body));
        assert_eq!(response.json()["resourceType"], "OperationOutcome", "{query}");
    }

    // As FHIR AuditEvents.
    let bundle = audit_query(&server, &admin, "correlationId=reader-read&_format=AuditEvent").expect(200);
    assert!(bundle.header("content-type").unwrap().starts_with(FHIR_JSON));
    let bundle = bundle.json();
    assert_eq!(
        (&bundle["resourceType"], &bundle["type"], &bundle["total"]),
        (&json!("Bundle"), &json!("searchset"), &json!(2))
    );
    let events: Vec<&Value> = bundle["entry"].as_array().unwrap().iter().map(|e| &e["resource"]).collect();
    let iss = jwt_claims(&reader.token)["iss"].clone();
    for (event, record) in events.iter().zip(&read) {
        assert_eq!(event["resourceType"], "AuditEvent");
        assert_eq!(event["id"], record["Sequence"].to_string());
        assert_eq!(event["type"]["system"], "http://terminology.hl7.org/CodeSystem/audit-event-type");
        assert_eq!(event["type"]["code"], "rest");
        assert_eq!(event["subtype"], json!([{"system": "http://hl7.org/fhir/restful-interaction", "code": "read"}]));
        assert_eq!(event["action"], "R");
        assert_eq!(event["recorded"], record["TimeGenerated"]);
        let agent = &event["agent"][0];
        assert_eq!(agent["requestor"], true);
        assert_eq!(agent["who"]["identifier"], json!({"system": iss, "value": reader.object_id}));
        assert_eq!(agent["altId"], reader.client_id.as_str());
        assert_eq!(agent["network"], json!({"address": "127.0.0.1", "type": "2"}));
        let entity = &event["entity"][0];
        assert_eq!(entity["what"]["reference"], format!("Patient/{p}"));
        assert!(entity["detail"]
            .as_array()
            .unwrap()
            .contains(&json!({"type": "CorrelationId", "valueString": "reader-read"})));
        assert_eq!(event["source"]["site"], "local");
    }
    assert_eq!(events[0].get("outcome"), None, "Started: no outcome yet");
    assert_eq!(events[0]["outcomeDesc"], "Started");
    assert_eq!(events[1]["outcome"], "0");
    let not_found = audit_query(&server, &admin, "correlationId=reader-404&result=Failed&_format=AuditEvent").json();
    assert_eq!(not_found["entry"][0]["resource"]["outcome"], "4");
    let created = audit_query(&server, &admin, "correlationId=obs-create&_format=AuditEvent").json();
    assert_eq!(created["entry"][1]["resource"]["action"], "C");
    assert_eq!(
        created["entry"][1]["resource"]["entity"][0].get("what"),
        None,
        "a type-level request names no resource"
    );

    // Only administrators: the FHIR roles, even `*`, do not include it.
    for (who, caller) in [("a contributor", &contributor), ("a reader", &reader)] {
        let response = send(&server, Some(&caller.token), "GET", "/_audit", &[("x-request-id", "peek")], None);
        assert_eq!(response.status, 403, "{who}: {}", String::from_utf8_lossy(&response.body));
        assert_eq!(response.json()["issue"][0]["code"], "forbidden");
    }
    let peeks = records_of(&server.data_dir, "peek");
    assert_eq!(peeks.len(), 4);
    assert!(peeks.iter().all(|r| r["OperationName"] == "audit"));
    assert_eq!(peeks[1]["StatusCode"], 403);
    send(&server, None, "GET", "/_audit", &[], None).expect(401);
}

#[test]
fn no_resource_content_tokens_or_secrets_in_the_audit_log() {
    const FAMILY: &str = "Quillfeatherxyz";
    const GIVEN: &str = "Zebulonqwerty";
    let data_dir = temp_dir("data");
    let log = temp_dir("log").join("server.log");
    // `--audit-stdout`: the records also go to the server's output, which is searched too.
    let mut server = Server::launch(&data_dir, &["--audit-stdout"], Some(&log));
    let writer = Caller::new(&server, "Audit hygiene", &["FHIR Data Contributor"]);
    let token = writer.token.as_str();
    let mut person = patient("hygiene");
    person["name"] = json!([{"family": FAMILY, "given": [GIVEN]}]);
    person["birthDate"] = json!("1931-02-28");
    let body = person.to_string();

    let created = send(&server, Some(token), "POST", "/Patient", &[], Some((FHIR_JSON, body.as_bytes()))).expect(201);
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let mut updated = person.clone();
    updated["id"] = json!(id);
    updated["name"][0]["given"] = json!([GIVEN, "Secondnameqwerty"]);
    let updated = updated.to_string();
    send(&server, Some(token), "PUT", &format!("/Patient/{id}"), &[], Some((FHIR_JSON, updated.as_bytes())))
        .expect(200);
    let patch = json!([{"op": "add", "path": "/name/0/prefix", "value": ["Patchprefixqwerty"]}]).to_string();
    send(&server, Some(token), "PATCH", &format!("/Patient/{id}"), &[], Some((JSON_PATCH, patch.as_bytes())))
        .expect(200);
    let bundle = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": person, "request": {"method": "POST", "url": "Patient"}},
    ]})
    .to_string();
    send(&server, Some(token), "POST", "/", &[], Some((FHIR_JSON, bundle.as_bytes()))).expect(200);
    send(&server, Some(token), "POST", "/Patient/$validate", &[], Some((FHIR_JSON, body.as_bytes()))).expect(200);
    send(&server, Some(token), "GET", &format!("/Patient/{id}"), &[], None).expect(200);
    // A bad token and a token in the query are not recorded either.
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let tampered = format!("{signed}.{}", "A".repeat(signature.len()));
    send(&server, Some(&tampered), "GET", &format!("/Patient/{id}"), &[], None).expect(401);
    let leaky = format!("/Patient/{id}?access_token={token}");
    let leaked = send(&server, Some(token), "GET", &leaky, &[("x-request-id", "leaky")], None);
    let leaky_records = records_of(&server.data_dir, "leaky");
    assert_eq!(leaky_records.len(), 2, "status {}", leaked.status);
    assert_eq!(leaky_records[0]["RequestUri"], format!("{}/Patient/{id}?access_token=REDACTED", server.base));

    let forbidden = [
        ("the family name", FAMILY),
        ("the given name", GIVEN),
        ("the second given name", "Secondnameqwerty"),
        ("the patched prefix", "Patchprefixqwerty"),
        ("the birth date", "1931-02-28"),
        ("the access token", token),
        ("the access token's signature", signature),
        ("the tampered token", &tampered),
        ("the client secret", writer.secret.as_str()),
        ("a bearer header", "Bearer "),
    ];
    let mut searched = 0;
    for entry in std::fs::read_dir(audit_dir(&data_dir)).unwrap() {
        let path = entry.unwrap().path();
        let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
        searched += text.lines().count();
        for (what, value) in forbidden {
            assert!(!text.contains(value), "{} contains {what}", path.display());
        }
    }
    assert!(searched >= 16, "{searched} lines searched");
    server.kill();
    let output = std::fs::read_to_string(&log).unwrap();
    assert!(output.contains(r#""LogCategory":"AuditLogs""#), "--audit-stdout echoes the records: {output}");
    for (what, value) in forbidden {
        assert!(!output.contains(value), "the server's output contains {what}");
    }
    let _ = std::fs::remove_dir_all(log.parent().unwrap());
}

/// Today's audit file name (UTC).
fn todays_file(data_dir: &Path) -> PathBuf {
    let today = &fhirside_audit::timestamp_now()[..10];
    audit_dir(data_dir).join(format!("audit-{today}.jsonl"))
}

/// Asserts the `503` of a request the audit log refused: not run.
#[track_caller]
fn assert_refused(response: &Response) {
    assert_eq!(response.status, 503, "{}", String::from_utf8_lossy(&response.body));
    let outcome = response.json();
    assert_eq!(outcome["resourceType"], "OperationOutcome");
    assert_eq!(outcome["issue"][0]["code"], "transient");
    assert_eq!(
        outcome["issue"][0]["diagnostics"],
        "The audit log is unavailable, so the request was not processed; retry it later."
    );
}

/// How many Patients have this identifier.
fn count_patients(server: &Server, caller: &Caller, identifier: &str) -> usize {
    let path = format!("/Patient?identifier={SYSTEM}|{identifier}");
    let bundle = send(server, Some(&caller.token), "GET", &path, &[], None).expect(200).json();
    bundle["entry"].as_array().map_or(0, Vec::len)
}

#[test]
fn a_request_whose_record_cannot_be_written_is_not_run() {
    // `always`: each record is in its day file (and synced) before the request goes on.
    let mut server = Server::start_secure(&["--audit-sync", "always"]);
    let writer = Caller::new(&server, "Audit refused", &["FHIR Data Contributor"]);
    // The log opens the day's file at its first record. Nothing has been recorded yet (apps are
    // made on the data directory, tokens by the authority beside the FHIR API), so a directory in
    // its place makes the first append fail, even for root.
    let file = todays_file(&server.data_dir);
    assert!(!file.exists(), "no record yet");
    std::fs::create_dir(&file).unwrap();

    let body = patient("refused").to_string();
    let headers = [("x-request-id", "refused")];
    let response = send(&server, Some(&writer.token), "POST", "/Patient", &headers, Some((FHIR_JSON, body.as_bytes())));
    assert_refused(&response);
    assert_eq!(response.header("x-correlation-id"), Some("refused"));
    // Reads are refused too: nothing runs unaudited.
    assert_refused(&send(&server, Some(&writer.token), "GET", "/Patient", &[], None));

    // Once the log can write again, it does, and the refused create never happened.
    std::fs::remove_dir(&file).unwrap();
    assert_eq!(count_patients(&server, &writer, "refused"), 0, "the refused create was not run");
    assert!(records_of(&server.data_dir, "refused").is_empty(), "a refused request has no record");
    send(&server, Some(&writer.token), "POST", "/Patient", &headers, Some((FHIR_JSON, body.as_bytes()))).expect(201);
    assert_eq!(count_patients(&server, &writer, "refused"), 1);
    server.kill();
    assert_eq!(verify(&server.data_dir).0, 0);
}

#[test]
fn records_wait_in_the_journal_until_their_day_file_can_be_written() {
    // `interval` (the default): an append is in the journal, a file of reserved blocks, when the
    // request goes on; the writer thread moves it to the day file, and keeps it until it can.
    let mut server = Server::start_secure(&[]);
    let writer = Caller::new(&server, "Audit waits", &["FHIR Data Contributor"]);
    let file = todays_file(&server.data_dir);
    assert!(!file.exists(), "no record yet");
    std::fs::create_dir(&file).unwrap();

    let body = patient("waiting").to_string();
    let headers = [("x-request-id", "waiting")];
    send(&server, Some(&writer.token), "POST", "/Patient", &headers, Some((FHIR_JSON, body.as_bytes()))).expect(201);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(file.is_dir(), "nothing could be written to the day file");

    std::fs::remove_dir(&file).unwrap();
    let waited = records_of(&server.data_dir, "waiting");
    let results: Vec<&str> = waited.iter().map(|r| r["ResultType"].as_str().unwrap()).collect();
    assert_eq!(results, ["Started", "Succeeded"], "the records reached the day file once it could be written");
    server.kill();
    let (code, report) = verify(&server.data_dir);
    assert_eq!(code, 0, "{report:#}");
}

#[test]
fn records_a_crash_left_in_the_journal_are_chained_at_the_next_start() {
    // The day file cannot be written (a directory stands in its place), so the records of the
    // requests answered meanwhile wait in the journal, numbered but not chained, when the server
    // is killed. The next start chains them after the day files' last record and writes them.
    let mut server = Server::start_secure(&[]);
    let writer = Caller::new(&server, "Audit crash", &["FHIR Data Contributor"]);
    let file = todays_file(&server.data_dir);
    std::fs::create_dir(&file).unwrap();
    let body = patient("crash").to_string();
    let id = {
        let headers = [("x-request-id", "crash-create")];
        let response =
            send(&server, Some(&writer.token), "POST", "/Patient", &headers, Some((FHIR_JSON, body.as_bytes())));
        response.expect(201).json()["id"].as_str().unwrap().to_owned()
    };
    for i in 0..5 {
        let request_id = format!("crash-read-{i}");
        let headers = [("x-request-id", request_id.as_str())];
        send(&server, Some(&writer.token), "GET", &format!("/Patient/{id}"), &headers, None).expect(200);
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(file.is_dir(), "nothing could be written to the day file");
    let journal = std::fs::read(audit_dir(&server.data_dir).join("journal")).unwrap();
    assert!(journal.iter().any(|&b| b != 0), "the records are in the journal");

    server.kill();
    std::fs::remove_dir(&file).unwrap();
    server.restart();
    let all = records(&server.data_dir);
    let ids: Vec<&str> = all.iter().map(|r| r["CorrelationId"].as_str().unwrap()).collect();
    let mut expected = vec!["crash-create".to_owned(); 2];
    for i in 0..5 {
        expected.extend([format!("crash-read-{i}"), format!("crash-read-{i}")]);
    }
    assert_eq!(ids, expected, "every answered request's records, in the order they were numbered");
    for (n, record) in all.iter().enumerate() {
        assert_record_shape(record);
        assert_eq!(record["Sequence"], n as u64 + 1);
        assert_eq!(record["ResultType"], if n % 2 == 0 { "Started" } else { "Succeeded" });
    }
    // The chain goes on from the recovered records (a token's audience is the base URL, whose
    // port changed).
    let token = server.token(&writer.client_id, &writer.secret);
    let headers = [("x-request-id", "after-crash")];
    send(&server, Some(&token), "GET", &format!("/Patient/{id}"), &headers, None).expect(200);
    let after = records_of(&server.data_dir, "after-crash");
    assert_eq!(after[0]["Sequence"], 13);
    assert_eq!(after[0]["PreviousHash"], all[11]["Hash"]);
    server.kill();
    let (code, report) = verify(&server.data_dir);
    assert_eq!((code, &report["records"]), (0, &json!(14)), "{report:#}");
}

/// A small tmpfs mounted on a directory, unmounted (lazily: the server may still hold its files)
/// and removed with the data directory when dropped.
struct Tmpfs {
    mount_point: PathBuf,
    data_dir: PathBuf,
}

impl Tmpfs {
    fn mount(mount_point: &Path, data_dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(mount_point).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(mount_point)
            .stderr(std::process::Stdio::null())
            .status();
        match status {
            Ok(status) if status.success() => {
                Some(Tmpfs { mount_point: mount_point.to_owned(), data_dir: data_dir.to_owned() })
            }
            _ => None,
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount_point).status();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// Fills the file system of `path` with a file there until it refuses (`ENOSPC`).
fn fill(path: &Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![b'x'; 4096];
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "filling {}: {e}", path.display());
                break;
            }
        }
    }
}

#[test]
fn a_full_disk_refuses_requests_until_the_log_can_write_again() {
    full_disk(&[]);
}

#[test]
fn a_full_disk_refuses_requests_until_the_log_can_write_again_with_sync_always() {
    // The other writer: a thread that writes and syncs batches (group commit).
    full_disk(&["--audit-sync", "always"]);
}

/// The audit directory on its own small file system, filled while the server has its file open:
/// the append itself fails (ENOSPC), which permissions cannot do to root.
fn full_disk(args: &[&str]) {
    let data_dir = temp_dir("data");
    // CI runs as root, so a failed mount is a broken test set-up, not a reason to pass.
    // Room for the journal (4 MiB, reserved at start) and as much again for the day files.
    let Some(_tmpfs) = Tmpfs::mount(&audit_dir(&data_dir), &data_dir, "12m") else {
        panic!("cannot mount a tmpfs on the audit directory (the test needs root)");
    };
    let always = args.contains(&"always");
    let mut server = Server::launch(&data_dir, args, None);
    let writer = Caller::new(&server, "Audit disk", &["FHIR Data Contributor"]);
    create(&server, &writer, &patient("before"));

    let filler = audit_dir(&data_dir).join("filler");
    fill(&filler);
    // The day's file may still have room in its last page: short records (`/metadata` without a
    // token) use it up until one cannot be written; a create's record is longer. With `interval`
    // they first fill the journal (its blocks were reserved at start), some thousands of
    // requests, which the file system has room for once the filler goes.
    let mut refused = None;
    let mut answered = 0;
    for _ in 0..5000 {
        let response = send(&server, None, "GET", "/metadata", &[], None);
        if response.status >= 500 {
            refused = Some(response.status);
            break;
        }
        assert_eq!(response.status, 200);
        answered += 1;
    }
    assert!(matches!(refused, Some(500 | 503)), "the full disk refused a record: {refused:?}");
    if !always {
        assert!(answered > 100, "the journal took the records while the disk was full: {answered}");
    }

    let body = patient("disk-full").to_string();
    let headers = [("x-request-id", "disk-full")];
    let response = send(&server, Some(&writer.token), "POST", "/Patient", &headers, Some((FHIR_JSON, body.as_bytes())));
    assert_refused(&response);

    // Room again: the log reopens its file, cut back to its last complete line, and goes on; the
    // records the journal held reach it first.
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(count_patients(&server, &writer, "disk-full"), 0, "the refused create was not run");
    assert!(records_of(&data_dir, "disk-full").is_empty());
    send(&server, Some(&writer.token), "POST", "/Patient", &headers, Some((FHIR_JSON, body.as_bytes()))).expect(201);
    assert_eq!(records_of(&data_dir, "disk-full").len(), 2);
    let metadata = records(&data_dir).iter().filter(|r| r["OperationName"] == "capabilities").count();
    assert!(metadata >= answered, "every answered request is on record: {metadata} of {answered}");
    server.kill();
    let (code, report) = verify(&data_dir);
    assert_eq!(code, 0, "the chain survived the failed writes: {report:#}");
    assert_eq!(report["records"], records(&data_dir).len());
}

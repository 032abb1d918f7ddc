//! Replicas on one PostgreSQL database behave as one service: a write through one is read through
//! the other at once, version checks and conditional creates hold across them, a background job
//! whose replica is killed is finished by another, with nothing lost or done twice, and the
//! built-in authority is one tenant whose tokens, apps and roles every replica shares.
//!
//! These tests always run on PostgreSQL (`FHIRSIDE_TEST_POSTGRES`, default
//! `postgres://root@127.0.0.1:5432/test`), whatever `FHIRSIDE_TEST_BACKEND` says: replicas need
//! it. They fail when it is missing.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{database_for, temp_dir, Server};

fn postgres() -> String {
    std::env::var("FHIRSIDE_TEST_POSTGRES").unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".into())
}

/// A database schema of its own for one test.
fn shared_database(name: &str) -> String {
    database_for(&postgres(), &temp_dir(name))
}

/// A replica on `database`: plain HTTP, no authentication, leases of 2 s so that a dead replica's
/// job is resumed soon.
fn replica(database: &str, env: &[(&str, &str)]) -> Server {
    let args = ["--auth", "none", "--http", "--database", database, "--job-lease-seconds", "2"];
    Server::launch_with_env(&temp_dir("replica"), &args, env, None)
}

/// One number from the database.
fn sql_count(database: &str, query: &str) -> i64 {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(database, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        client.query_one(query, &[]).await.unwrap().get::<_, i64>(0)
    })
}

fn total(server: &Server, query: &str) -> u64 {
    server.get(&format!("{query}&_summary=count")).expect(200).json()["total"].as_u64().unwrap()
}

#[test]
fn replicas_share_reads_versions_and_conditional_creates() {
    let database = shared_database("replicas");
    let (a, b) = (replica(&database, &[]), replica(&database, &[]));

    // A write through one replica is read through the other at once.
    let created = a.post_json("/Patient", &json!({"resourceType": "Patient", "name": [{"family": "Ng"}]})).expect(201);
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let read = b.get(&format!("/Patient/{id}")).expect(200);
    assert_eq!(read.json(), created.json());
    assert_eq!(total(&b, "/Patient?family=ng"), 1);

    // Optimistic locking across replicas: version 1 can be replaced once, through either.
    let body = json!({"resourceType": "Patient", "id": id, "name": [{"family": "Ng", "given": ["Ada"]}]});
    let update = |server: &Server| {
        server.request(
            "PUT",
            &format!("/Patient/{id}"),
            &[("content-type", "application/fhir+json"), ("if-match", "W/\"1\"")],
            Some(body.to_string().as_bytes()),
        )
    };
    assert_eq!(update(&b).status, 200);
    assert_eq!(update(&a).status, 412, "a stale If-Match is refused by the other replica too");
    assert_eq!(a.get(&format!("/Patient/{id}/_history")).expect(200).json()["entry"].as_array().unwrap().len(), 2);

    // Conditional creates racing on both replicas create one resource.
    let creates: Vec<_> = (0..8)
        .map(|n| {
            let server = if n % 2 == 0 { &a } else { &b };
            let client = server.client();
            std::thread::spawn(move || {
                let mut client = client;
                let body = json!({"resourceType": "Patient", "identifier": [{"system": "urn:race", "value": "r1"}]});
                client
                    .request(
                        "POST",
                        "/Patient",
                        &[("content-type", "application/fhir+json"), ("if-none-exist", "identifier=urn:race|r1")],
                        Some(body.to_string().as_bytes()),
                    )
                    .status
            })
        })
        .collect();
    let mut statuses: Vec<u16> = creates.into_iter().map(|t| t.join().unwrap()).collect();
    statuses.sort();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 200, 200, 201]);
    assert_eq!(total(&a, "/Patient?identifier=urn:race|r1"), 1);
    assert_eq!(total(&b, "/Patient?identifier=urn:race|r1"), 1);
}

/// Patients in a transaction bundle, with a nickname each, numbered from `first`.
fn patients(first: usize, count: usize) -> Value {
    let entries: Vec<Value> = (first..first + count)
        .map(|n| {
            json!({"request": {"method": "POST", "url": "Patient"},
                "resource": {"resourceType": "Patient",
                    "identifier": [{"system": "urn:replicas", "value": format!("p{n}")}],
                    "name": [{"use": "nickname", "given": [format!("Nick{n}")]}]}})
        })
        .collect();
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
}

fn job_status(server: &Server, location: &str) -> (String, u64) {
    let job = server.get(location).expect(200).json();
    let value = |name: &str| job["parameter"].as_array().unwrap().iter().find(|p| p["name"] == name).unwrap().clone();
    (
        value("status")["valueString"].as_str().unwrap().to_owned(),
        value("resourcesSuccessfullyReindexed")["valueDecimal"].as_u64().unwrap(),
    )
}

#[test]
fn a_killed_replicas_job_is_resumed_by_another() {
    let database = shared_database("jobs");
    // Small reindex batches, so that the job is still running when its replica is killed.
    let env = [("FHIRSIDE_REINDEX_BATCH", "20")];
    let (mut a, mut b) = (replica(&database, &env), replica(&database, &env));

    // Writes through both replicas at once.
    let writers: Vec<_> = [(&a, 0), (&b, 1)]
        .into_iter()
        .map(|(server, side)| {
            let mut client = server.client();
            std::thread::spawn(move || {
                for bundle in 0..4 {
                    let body = patients((side * 4 + bundle) * 250, 250).to_string();
                    let response = client.request(
                        "POST",
                        "/",
                        &[("content-type", "application/fhir+json"), ("prefer", "return=minimal")],
                        Some(body.as_bytes()),
                    );
                    assert_eq!(response.status, 200, "{}", response.diagnostics());
                }
            })
        })
        .collect();
    writers.into_iter().for_each(|w| w.join().unwrap());
    assert_eq!(total(&a, "/Patient?identifier=urn:replicas|"), 2000);
    assert_eq!(total(&b, "/Patient?identifier=urn:replicas|"), 2000);

    // Only `a` runs the job at first: `b` stops, and comes back once the job is under way.
    b.kill();
    a.put_json(
        "/SearchParameter/nickname",
        &json!({"resourceType": "SearchParameter", "id": "nickname", "url": "http://example.org/sp/nickname",
            "name": "nickname", "status": "active", "description": "A patient's nickname", "code": "nickname",
            "base": ["Patient"], "type": "string", "expression": "Patient.name.where(use = 'nickname').given"}),
    )
    .expect(201);
    let started = a.post_json("/$reindex", &json!({"resourceType": "Parameters"})).expect(201);
    let location = started.header("content-location").unwrap().split_once("/_operations").unwrap().1.to_owned();
    let location = format!("/_operations{location}");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (status, count) = job_status(&a, &location);
        assert!(
            status == "Queued" || status == "Running",
            "the job ended before its replica could be killed: {status}"
        );
        if count >= 100 {
            break;
        }
        assert!(Instant::now() < deadline, "the job made no progress");
        std::thread::sleep(Duration::from_millis(10));
    }
    let c = replica(&database, &env);
    a.kill();

    // `c` takes the job over once the lease runs out, and finishes it from the checkpoint.
    let deadline = Instant::now() + Duration::from_secs(180);
    let count = loop {
        let (status, count) = job_status(&c, &location);
        match status.as_str() {
            "Completed" => break count,
            "Queued" | "Running" => {}
            other => panic!("the job ended {other}"),
        }
        assert!(Instant::now() < deadline, "the job was not resumed");
        std::thread::sleep(Duration::from_millis(100));
    };
    let id = location.rsplit('/').next().unwrap();
    assert_eq!(sql_count(&database, &format!("SELECT attempts FROM job WHERE id = '{id}'")), 2, "leased twice");
    // Every live resource reindexed once: the patients and the SearchParameter.
    assert_eq!(count, 2001);
    assert_eq!(
        sql_count(&database, "SELECT count(*) FROM string_index WHERE param = 'nickname'"),
        2000,
        "one nickname row per patient, none lost or doubled"
    );
    let strict = [("prefer", "handling=strict")];
    let found = c.request("GET", "/Patient?nickname=nick1999&_summary=count", &strict, None).expect(200);
    assert_eq!(found.json()["total"], 1);
    assert_eq!(total(&c, "/Patient?nickname=nick"), 2000);
}

/// A replica with the built-in authority. Replicas behind one load balancer share its public URL
/// (`--base-url`), which is the tokens' issuer and audience whichever replica issues them.
fn authority_replica(database: &str) -> Server {
    let args = ["--http", "--database", database, "--base-url", "http://fhir.replicas.test"];
    Server::launch(&temp_dir("authority-replica"), &args, None)
}

const FHIR_JSON: &str = "application/fhir+json";

#[test]
fn replicas_share_one_built_in_authority() {
    let database = shared_database("identity");
    let (a, b) = (authority_replica(&database), authority_replica(&database));
    assert_eq!(a.tenant, b.tenant, "one tenant");
    let tenant = a.tenant.clone().unwrap();
    let keys =
        |server: &Server| server.get(&format!("/{tenant}/discovery/v2.0/keys")).expect(200).json()["keys"].clone();
    assert_eq!(keys(&a), keys(&b), "one signing key");

    // An app registered with A's CLI gets a token from A that B accepts, with the role it has.
    let (reader_id, reader_secret, reader_oid) = a.create_app("Reader", &["FHIR Data Reader"]);
    let token = a.token(&reader_id, &reader_secret);
    let patient = json!({"resourceType": "Patient", "name": [{"family": "Ng"}]});
    b.request_as(&token, "GET", "/Patient", None).expect(200);
    b.request_as(&token, "POST", "/Patient", Some((FHIR_JSON, &patient))).expect(403);

    // An app and a role created through B's admin API work on A.
    let (admin_id, admin_secret, _) = a.create_app("Admin", &["Fhirside Administrator"]);
    let admin = b.token(&admin_id, &admin_secret);
    let created = b
        .request_as(
            &admin,
            "POST",
            "/_admin/apps",
            Some(("application/json", &json!({"displayName": "Writer", "roles": ["FHIR Data Contributor"]}))),
        )
        .expect(201)
        .json();
    let field = |k: &str| created[k].as_str().unwrap_or_else(|| panic!("no {k} in {created}")).to_owned();
    let writer = a.token(&field("clientId"), &field("clientSecret"));
    a.request_as(&writer, "POST", "/Patient", Some((FHIR_JSON, &patient))).expect(201);
    let assignment = json!({"role": "FHIR Data Writer", "principalId": reader_oid});
    b.request_as(&admin, "POST", "/_admin/roleAssignments", Some(("application/json", &assignment))).expect(201);
    crate::access::wait_for_external_changes();
    a.request_as(&token, "POST", "/Patient", Some((FHIR_JSON, &patient))).expect(201);

    // A key rotated by the CLI signs the next tokens of both replicas.
    let rotated = b.admin(&["authority", "rotate-key"]);
    crate::access::wait_for_external_changes();
    let kid = |token: &str| {
        let header = fhirside_identity::b64::decode(token.split('.').next().unwrap()).unwrap();
        serde_json::from_slice::<Value>(&header).unwrap()["kid"].clone()
    };
    for server in [&a, &b] {
        let fresh = server.token(&reader_id, &reader_secret);
        assert_eq!(kid(&fresh), rotated["kid"]);
        server.request_as(&fresh, "GET", "/Patient", None).expect(200);
    }
    b.request_as(&token, "GET", "/Patient", None).expect(200);
}

/// Runs SQL on the database (to tamper with the trail).
fn sql(database: &str, statement: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(database, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        client.batch_execute(statement).await.unwrap();
    })
}

/// `fhirside audit verify --database <database> --output json`: exit code and report.
fn verify_database(database: &str) -> (i32, Value) {
    let output = crate::harness::admin_command_on(&temp_dir("verify"), Some(database), &["audit", "verify"]);
    let report = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("verify: not JSON ({e}): {}", String::from_utf8_lossy(&output.stderr)));
    (output.status.code().unwrap(), report)
}

#[test]
fn replicas_write_one_audit_chain_in_the_database() {
    let database = shared_database("audit");
    let (a, b) = (replica(&database, &[]), replica(&database, &[]));

    // Requests through both replicas at once: reads, creates and a failure.
    let workers: Vec<_> = (0..6)
        .map(|n| {
            let mut client = if n % 2 == 0 { a.client() } else { b.client() };
            std::thread::spawn(move || {
                for i in 0..10 {
                    let body = json!({"resourceType": "Patient", "name": [{"family": format!("Audit{n}x{i}")}]});
                    let headers = [("content-type", FHIR_JSON), ("x-request-id", "replicated")];
                    assert_eq!(
                        client.request("POST", "/Patient", &headers, Some(body.to_string().as_bytes())).status,
                        201
                    );
                    assert_eq!(client.request("GET", "/Patient?_count=1", &[], None).status, 200);
                }
                assert_eq!(client.request("GET", "/Patient/missing", &[], None).status, 404);
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }

    // One chain: every request's two records, in order, whichever replica wrote them.
    let (code, report) = verify_database(&database);
    assert_eq!((code, report["intact"].clone()), (0, json!(true)), "{report}");
    let stored = sql_count(&database, "SELECT count(*) FROM audit_record");
    assert_eq!(report["records"].as_i64(), Some(stored));
    assert!(stored >= 6 * 21 * 2, "{stored} records");
    assert_eq!(report["first_sequence"], 1, "{report}");

    // Either replica finds what the other recorded.
    let found = |server: &Server, query: &str| -> Vec<Value> {
        let response = server.get(&format!("/_audit?{query}")).expect(200).json();
        response["value"].as_array().unwrap().clone()
    };
    let creates = found(&b, "operation=create&result=Succeeded&_count=1000");
    assert_eq!(creates.len(), 60);
    assert!(creates.iter().all(|r| r["CorrelationId"] == "replicated" && r["StatusCode"] == 201));
    let failed = found(&a, "result=Failed&resourceType=Patient");
    assert_eq!(failed.len(), 6, "{failed:#?}");
    assert!(failed.iter().all(|r| r["StatusCode"] == 404 && r["OperationName"] == "read"));
    let sequences: Vec<u64> = creates.iter().map(|r| r["Sequence"].as_u64().unwrap()).collect();
    assert!(sequences.windows(2).all(|w| w[0] < w[1]), "chain order");

    // An edited line, then a filter column changed to hide a record, are found.
    let tampered = sequences[3];
    sql(
        &database,
        &format!("UPDATE audit_record SET line = replace(line, '\"StatusCode\":201', '\"StatusCode\":200') WHERE sequence = {tampered}"),
    );
    let (code, report) = verify_database(&database);
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["first_broken"]["kind"], "hash-mismatch");
    assert_eq!(report["first_broken"]["sequence"], tampered);
    assert_eq!(report["last_sequence"], tampered - 1);
    sql(
        &database,
        &format!("UPDATE audit_record SET line = replace(line, '\"StatusCode\":200', '\"StatusCode\":201') WHERE sequence = {tampered}"),
    );
    sql(&database, &format!("UPDATE audit_record SET operation_name = 'read' WHERE sequence = {}", sequences[5]));
    let (code, report) = verify_database(&database);
    assert_eq!((code, report["first_broken"]["kind"].clone()), (1, json!("column-mismatch")), "{report}");
    assert_eq!(report["first_broken"]["sequence"], sequences[5]);
    // A deleted record breaks the sequence.
    sql(&database, &format!("UPDATE audit_record SET operation_name = 'create' WHERE sequence = {}", sequences[5]));
    sql(&database, &format!("DELETE FROM audit_record WHERE sequence = {}", sequences[7]));
    let (code, report) = verify_database(&database);
    assert_eq!((code, report["first_broken"]["kind"].clone()), (1, json!("sequence-gap")), "{report}");
    assert_eq!(report["first_broken"]["sequence"], sequences[7] + 1);
}

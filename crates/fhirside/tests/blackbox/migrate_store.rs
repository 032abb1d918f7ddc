//! `fhirside migrate-store`: an embedded installation moved to PostgreSQL serves the same
//! resources, versions and history, and searches at once, custom SearchParameters included; its
//! identity moves too, so the tenant is the same and an app's secret still gets a token.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{json, Value};

use crate::harness::{admin_command_on, database_for, match_ids, temp_dir, Response, Server};

/// The PostgreSQL server the suite uses, whatever backend the other tests run on.
fn postgres_base() -> String {
    std::env::var("FHIRSIDE_TEST_POSTGRES").unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".into())
}

fn migrate(from: &Path, to: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fhirside"))
        .args(["migrate-store", "--from"])
        .arg(from)
        .args(["--to", to])
        .output()
        .expect("run fhirside migrate-store")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// What a read must carry over unchanged: the status, the version headers and the exact bytes.
fn same_read(a: &Response, b: &Response, what: &str) {
    assert_eq!(a.status, b.status, "{what}");
    for header in ["etag", "last-modified"] {
        assert_eq!(a.header(header), b.header(header), "{what}: {header}");
    }
    assert_eq!(text(&a.body), text(&b.body), "{what}: body");
}

/// A history bundle's entries without what depends on the server's address.
fn history_entries(bundle: &Value) -> Vec<Value> {
    bundle["entry"]
        .as_array()
        .unwrap_or_else(|| panic!("no entries: {bundle}"))
        .iter()
        .map(|e| json!({"resource": e.get("resource"), "method": e["request"]["method"], "url": e["request"]["url"]}))
        .collect()
}

/// One count from the target database, outside the server.
fn query_count(url: &str, sql: &str, param: &str) -> i64 {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        client.query_one(sql, &[&param]).await.unwrap().get(0)
    })
}

const STRICT: [(&str, &str); 1] = [("prefer", "handling=strict")];

#[test]
fn moved_store_serves_the_same_versions_and_searches() {
    let source_dir = temp_dir("migrate-source");
    // `--database ""`: the embedded store even when the suite runs on PostgreSQL.
    let mut source = Server::start_in(&source_dir, &["--http", "--database", ""]);
    let p1 = json!({"resourceType": "Patient", "id": "p1", "name": [{"family": "Chalmers"}]});
    source.put_json("/Patient/p1", &p1).expect(201);
    let p1 = json!({"resourceType": "Patient", "id": "p1", "name": [{"family": "Chalmers", "given": ["Peter"]},
        {"use": "nickname", "given": ["Pete"]}]});
    source.put_json("/Patient/p1", &p1).expect(200);
    let created = source.post_json("/Patient", &json!({"resourceType": "Patient", "name": [{"family": "Windsor"}]}));
    let p2 = created.expect(201).json()["id"].as_str().unwrap().to_owned();
    source
        .put_json(
            "/Observation/o1",
            &json!({"resourceType": "Observation", "id": "o1", "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                "subject": {"reference": "Patient/p1"}}),
        )
        .expect(201);
    source.put_json("/Patient/gone", &json!({"resourceType": "Patient", "id": "gone"})).expect(201);
    source.delete("/Patient/gone").expect(204);
    // A custom parameter the source never reindexed with, and a retired one: the move indexes
    // with the first and not the second.
    for (id, status, code) in [("nickname", "active", "nickname"), ("old-alias", "retired", "alias")] {
        source
            .put_json(
                &format!("/SearchParameter/{id}"),
                &json!({"resourceType": "SearchParameter", "id": id, "url": format!("http://example.org/sp/{id}"),
                    "name": code, "status": status, "description": "test", "code": code, "base": ["Patient"],
                    "type": "string", "expression": "Patient.name.where(use = 'nickname').given"}),
            )
            .expect(201);
    }
    let paths = [
        "/Patient/p1".to_owned(),
        format!("/Patient/{p2}"),
        "/Observation/o1".to_owned(),
        "/Patient/p1/_history/1".to_owned(),
        "/Patient/gone/_history/1".to_owned(),
    ];
    let before: Vec<Response> = paths.iter().map(|p| source.get(p).expect(200)).collect();
    let history_before = history_entries(&source.get("/Patient/p1/_history").expect(200).json());
    // Identity, made with the CLI on the source's data directory (its server runs without
    // authentication, so the CLI creates the identity store).
    let cli = |args: &[&str]| -> Value {
        let output = admin_command_on(&source_dir, None, args);
        assert!(output.status.success(), "{args:?}: {}", text(&output.stderr));
        serde_json::from_slice(&output.stdout).unwrap()
    };
    let app = cli(&["app", "create", "--name", "Daemon", "--role", "FHIR Data Reader"]);
    let tenant = cli(&["tenant", "show"])["tenantId"].as_str().unwrap().to_owned();
    let system_history_before = history_entries(&source.get("/_history?_count=100").expect(200).json());

    // The target: a schema of its own, named after the directory of the server that will use it.
    let served_dir = temp_dir("migrate-served");
    let target = database_for(&postgres_base(), &served_dir);
    let refused = migrate(&source_dir, &target);
    assert!(!refused.status.success(), "migrate-store ran beside a running server");
    assert!(text(&refused.stderr).contains("in use by another fhirside process"), "{}", text(&refused.stderr));

    source.kill();
    let moved = migrate(&source_dir, &target);
    assert!(moved.status.success(), "migrate-store failed: {}", text(&moved.stderr));
    let summary = text(&moved.stdout);
    assert!(summary.contains("moved 8 versions (5 current resources)"), "{summary}");
    assert!(
        summary.contains(&format!("identity moved: tenant {tenant}, signing keys 1, apps 1 (client secrets 1)")),
        "{summary}"
    );
    assert!(summary.contains("audit/ stays in"), "{summary}");
    assert!(text(&moved.stderr).contains("copied 8 of 8 versions"), "{}", text(&moved.stderr));
    // Index rows for the active custom parameter, none for the retired one (a store searched
    // before its index is built cannot filter SearchParameters by status).
    let rows = |param: &str| query_count(&target, "SELECT count(*) FROM string_index WHERE param = $1", param);
    assert_eq!((rows("nickname"), rows("alias")), (1, 0));

    let server = Server::start_in(&served_dir, &["--http", "--database", &target]);
    for (path, old) in paths.iter().zip(&before) {
        same_read(old, &server.get(path), path);
    }
    assert_eq!(server.get("/Patient/gone").status, 410);
    assert_eq!(history_entries(&server.get("/Patient/p1/_history").expect(200).json()), history_before);
    assert_eq!(history_entries(&server.get("/_history?_count=100").expect(200).json()), system_history_before);
    let search = |path: &str| match_ids(&server.request("GET", path, &STRICT, None).expect(200).json());
    assert_eq!(search("/Patient?family=chalmers"), ["p1"]);
    assert_eq!(search("/Observation?subject=Patient/p1&code=http://loinc.org|8867-4"), ["o1"]);
    assert_eq!(search("/Patient?nickname=pete"), ["p1"]);
    assert_eq!(search("/Patient?name=windsor"), [p2.as_str()]);
    assert_eq!(server.request("GET", "/Patient?alias=pete", &STRICT, None).status, 400, "a retired parameter");

    // The moved store takes new versions where the old ones end.
    let updated = server.put_json("/Patient/p1", &json!({"resourceType": "Patient", "id": "p1"})).expect(200);
    assert_eq!(updated.json()["meta"]["versionId"], "3");

    // A server with the built-in authority on the moved store is the same tenant, and the app's
    // secret gets a token that reads what moved.
    let secured = Server::launch(&temp_dir("migrate-secured"), &["--http", "--database", &target], None);
    assert_eq!(secured.tenant.as_deref(), Some(tenant.as_str()));
    let token = secured.token(app["clientId"].as_str().unwrap(), app["clientSecret"].as_str().unwrap());
    secured.request_as(&token, "GET", "/Patient/p1", None).expect(200);

    // A target that holds resources is refused, and left as it was.
    let again = migrate(&source_dir, &target);
    assert!(!again.status.success(), "migrate-store copied into a store with resources");
    assert!(text(&again.stderr).contains("already holds resources"), "{}", text(&again.stderr));
    assert_eq!(server.get("/Patient/p1").expect(200).json()["meta"]["versionId"], "3");
}

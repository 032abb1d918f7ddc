//! Upgrading a database written before shard keys (schema version 2) to the current schema: every
//! row is placed on its resource's shard by the compartments its index had, and the data reads,
//! searches and takes writes as before (against the real server, as in `tests.rs`).

use serde_json::json;

use super::tests::Scratch;
use super::{pool, schema, PostgresStore};
use crate::index::{CompartmentEntry, IndexEntries, ReferenceEntry, TokenEntry};
use crate::query::{
    Clause, EverythingQuery, HistoryQuery, HistoryScope, IncludeQuery, ReferenceValue, SearchQuery, StringMatch,
    TokenSystem, TokenValue, Value,
};
use crate::{ResourceStore, Unstamped, WriteOp, WriteResult};

/// What the previous build wrote for: Patients p1 and p2; Observation o1 (two versions, in p1's
/// compartment); o2, in the compartments of both patients; Organization org1; Observation o3,
/// deleted (its marker is current, with no index rows); Encounter e1 in p2's, with full text.
/// Row ids are 1… in insertion order (a fresh identity column); index rows are the current
/// versions'.
const OLD_DATA: &str = r#"
    INSERT INTO resource (type, id, version, last_updated, valid_to, deleted, method, body) VALUES
        ('Patient', 'p1', 1, 1000, NULL, 0, 1, '{"resourceType":"Patient","id":"p1"}'),
        ('Patient', 'p2', 1, 1001, NULL, 0, 1, '{"resourceType":"Patient","id":"p2"}'),
        ('Observation', 'o1', 1, 1002, 1005, 0, 1, '{"resourceType":"Observation","id":"o1","status":"preliminary"}'),
        ('Observation', 'o1', 2, 1005, NULL, 0, 2, '{"resourceType":"Observation","id":"o1","status":"final"}'),
        ('Observation', 'o2', 1, 1006, NULL, 0, 1, '{"resourceType":"Observation","id":"o2"}'),
        ('Organization', 'org1', 1, 1007, NULL, 0, 1, '{"resourceType":"Organization","id":"org1"}'),
        ('Observation', 'o3', 1, 1008, 1009, 0, 1, '{"resourceType":"Observation","id":"o3"}'),
        ('Observation', 'o3', 2, 1009, NULL, 1, 3, NULL),
        ('Encounter', 'e1', 1, 1010, NULL, 0, 1, '{"resourceType":"Encounter","id":"e1"}');
    INSERT INTO string_index (rid, param, normalized, exact) VALUES
        (1, 'name', 'chalmers', 'Chalmers'), (2, 'name', 'windsor', 'Windsor'), (6, 'name', 'acme', 'ACME');
    INSERT INTO token_index (rid, param, system, code) VALUES
        (4, 'code', 'http://loinc.org', '8480-6'), (5, 'code', 'http://loinc.org', '8480-6');
    INSERT INTO reference_index (rid, param, target_type, target_id) VALUES
        (4, 'subject', 'Patient', 'p1'), (5, 'subject', 'Patient', 'p1'), (5, 'performer', 'Patient', 'p2'),
        (5, 'performer', 'Organization', 'org1'), (9, 'subject', 'Patient', 'p2');
    INSERT INTO compartment_index (rid, compartment, id) VALUES
        (4, 'Patient', 'p1'), (5, 'Patient', 'p1'), (5, 'Patient', 'p2'), (9, 'Patient', 'p2'),
        (9, 'Encounter', 'e1');
    INSERT INTO text_index (rid, narrative, content) VALUES
        (9, to_tsvector('simple', 'emergency visit'), to_tsvector('simple', 'emergency visit'));
"#;

fn ids(versions: &[crate::StoredVersion]) -> Vec<String> {
    let mut ids: Vec<String> = versions.iter().map(|v| format!("{}/{}", v.resource_type, v.id)).collect();
    ids.sort();
    ids
}

fn search(types: &[&str], clauses: Vec<Clause>) -> SearchQuery {
    SearchQuery { types: types.iter().map(|t| (*t).to_owned()).collect(), clauses, count: 50, ..Default::default() }
}

fn code(code: &str) -> Clause {
    Clause::Match {
        param: "code".into(),
        values: vec![Value::Token(TokenValue { system: TokenSystem::Any, code: Some(code.into()) })],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_from_before_shard_keys_upgrades() {
    let scratch = Scratch::new().await;
    let mut conn = pool::connect(&scratch.config.connect, &Default::default()).await.unwrap();
    schema::migrate_to(&mut conn, 2).await.unwrap();
    conn.batch(OLD_DATA).await.unwrap();

    let store = PostgresStore::open(&scratch.config).await.unwrap();
    let status = super::schema_status(&scratch.config).await.unwrap();
    assert_eq!((status.current, status.pending.len()), (status.newest, 0));

    // Each resource's versions on the shard its current version's compartments give it.
    let placed: Vec<(String, String, i64, String)> = conn
        .query("SELECT type, id, version, shard_key FROM resource ORDER BY rid", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3)))
        .collect();
    let expected = [
        ("Patient", "p1", 1, "p1"),
        ("Patient", "p2", 1, "p2"),
        ("Observation", "o1", 1, "p1"),
        ("Observation", "o1", 2, "p1"),
        ("Observation", "o2", 1, "Observation/o2"),
        ("Organization", "org1", 1, "Organization/org1"),
        ("Observation", "o3", 1, "Observation/o3"),
        ("Observation", "o3", 2, "Observation/o3"),
        ("Encounter", "e1", 1, "p2"),
    ];
    let expected: Vec<(String, String, i64, String)> =
        expected.iter().map(|(t, i, v, s)| ((*t).into(), (*i).into(), *v, (*s).into())).collect();
    assert_eq!(placed, expected);
    let keys = conn.query_one("SELECT count(*) FROM resource_key", &[]).await.unwrap().get::<_, i64>(0);
    assert_eq!(keys, 7);
    // Index rows follow their resource.
    let strays = conn
        .query_one(
            "SELECT (SELECT count(*) FROM token_index x JOIN resource r ON r.rid = x.rid WHERE x.shard_key <> r.shard_key)
                  + (SELECT count(*) FROM compartment_index x JOIN resource r ON r.rid = x.rid
                     WHERE x.shard_key <> r.shard_key)
                  + (SELECT count(*) FROM text_index WHERE shard_key <> 'p2')",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(strays, 0);

    // Reads by id, vread and history.
    assert_eq!(store.read("Observation", "o1").await.unwrap().value.unwrap().version, 2);
    let v1 = store.vread("Observation", "o1", 1).await.unwrap().value.unwrap();
    assert_eq!(&v1.body[..], br#"{"resourceType":"Observation","id":"o1","status":"preliminary"}"#);
    assert!(store.read("Observation", "o3").await.unwrap().value.unwrap().deleted);
    let history = store
        .history(
            &HistoryScope::Instance("Observation".into(), "o3".into()),
            &HistoryQuery { count: 10, ..Default::default() },
        )
        .await
        .unwrap()
        .value;
    assert_eq!(history.versions.iter().map(|v| v.version).collect::<Vec<_>>(), [2, 1]);
    assert!(store.read("Observation", "nope").await.unwrap().value.is_none());

    // Searches: a token, a compartment, a chain, full text, and the total.
    let mut by_code = search(&["Observation"], vec![code("8480-6")]);
    by_code.total = true;
    let found = store.search(&by_code).await.unwrap().value;
    assert_eq!((ids(&found.versions), found.total), (vec!["Observation/o1".into(), "Observation/o2".into()], Some(2)));
    let p2 = search(&[], vec![Clause::Compartment { compartment: "Patient".into(), id: "p2".into() }]);
    assert_eq!(ids(&store.search(&p2).await.unwrap().value.versions), ["Encounter/e1", "Observation/o2"]);
    let chain = Clause::Chain {
        param: "subject".into(),
        target_types: vec!["Patient".into()],
        clauses: vec![Clause::Match {
            param: "name".into(),
            values: vec![Value::String { value: "chal".into(), matching: StringMatch::StartsWith }],
        }],
    };
    let chained = store.search(&search(&["Observation"], vec![chain])).await.unwrap().value;
    assert_eq!(ids(&chained.versions), ["Observation/o1", "Observation/o2"]);
    let text = Clause::Text { narrative: true, words: vec!["emergency".into()] };
    assert_eq!(ids(&store.search(&search(&["Encounter"], vec![text])).await.unwrap().value.versions), ["Encounter/e1"]);

    // _include and _revinclude across shards, and $everything.
    let include = IncludeQuery {
        reverse: false,
        source_type: "Observation".into(),
        param: Some("performer".into()),
        target_type: None,
        matched_type: "Observation".into(),
        matched_ids: vec!["o2".into()],
        limit: 100,
    };
    assert_eq!(ids(&store.include(&include).await.unwrap().value), ["Organization/org1", "Patient/p2"]);
    let revinclude = IncludeQuery {
        reverse: true,
        source_type: "Observation".into(),
        param: Some("subject".into()),
        target_type: None,
        matched_type: "Patient".into(),
        matched_ids: vec!["p1".into()],
        limit: 100,
    };
    assert_eq!(ids(&store.include(&revinclude).await.unwrap().value), ["Observation/o1", "Observation/o2"]);
    let everything = store
        .everything("Patient", Some("p1"), &EverythingQuery { count: 50, ..Default::default() })
        .await
        .unwrap()
        .value;
    assert_eq!(
        ids(&everything.versions),
        ["Observation/o1", "Observation/o2", "Organization/org1", "Patient/p1", "Patient/p2"]
    );

    // Writes go on: an update that moves o1 to p2's compartment keeps it on p1's shard, where its
    // history is, and a new resource goes to its patient's shard.
    let moved = IndexEntries {
        tokens: vec![TokenEntry { param: "code".into(), system: None, code: "8480-6".into() }],
        references: vec![ReferenceEntry {
            param: "subject".into(),
            target_type: Some("Patient".into()),
            target_id: Some("p2".into()),
            url: None,
        }],
        compartments: vec![CompartmentEntry { compartment: "Patient".into(), id: "p2".into() }],
        ..IndexEntries::default()
    };
    let observation = || Unstamped::new(json!({"resourceType": "Observation"}).as_object().unwrap().clone());
    let update = WriteOp::Update {
        resource_type: "Observation".into(),
        id: "o1".into(),
        resource: observation(),
        index: moved.clone(),
        if_match: Some(2),
    };
    let WriteResult::Updated(v3) = store.write(update).await.unwrap().value else { panic!("an update") };
    assert_eq!(v3.version, 3);
    let create = WriteOp::Create {
        resource_type: "Observation".into(),
        id: "o4".into(),
        resource: observation(),
        index: moved,
        if_none_exist: None,
    };
    store.write(create).await.unwrap();
    let shards: Vec<(String, String)> = conn
        .query("SELECT id, shard_key FROM resource WHERE id IN ('o1', 'o4') AND valid_to IS NULL ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(shards, [("o1".to_owned(), "p1".to_owned()), ("o4".to_owned(), "p2".to_owned())]);
    let p2_now = store.search(&p2).await.unwrap().value;
    assert_eq!(ids(&p2_now.versions), ["Encounter/e1", "Observation/o1", "Observation/o2", "Observation/o4"]);
    let history = store
        .history(
            &HistoryScope::Instance("Observation".into(), "o1".into()),
            &HistoryQuery { count: 10, ..Default::default() },
        )
        .await
        .unwrap()
        .value;
    assert_eq!(history.versions.iter().map(|v| v.version).collect::<Vec<_>>(), [3, 2, 1]);
    let reference = Clause::Match {
        param: "subject".into(),
        values: vec![Value::Reference(ReferenceValue::Local { target_type: Some("Patient".into()), id: "p2".into() })],
    };
    let referring = store.search(&search(&["Observation"], vec![reference])).await.unwrap().value;
    assert_eq!(ids(&referring.versions), ["Observation/o1", "Observation/o4"]);

    drop((store, conn));
    scratch.drop_schema().await;
}

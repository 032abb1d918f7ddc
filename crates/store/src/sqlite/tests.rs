//! Search on the SQLite backend with enough data for both clause forms: a code on more resources
//! than `read::DENSE` (tested per resource) and one on a few (collected), with paging in both
//! directions.

use serde_json::json;

use super::{SqliteConfig, SqliteStore};
use crate::index::{IndexEntries, TokenEntry};
use crate::query::{Clause, Cursor, SearchQuery, TokenSystem, TokenValue, Value};
use crate::sql::{self, Dialect};
use crate::{ResourceStore, Unstamped, WriteOp};

fn code(code: &str) -> Clause {
    Clause::Match {
        param: "code".into(),
        values: vec![Value::Token(TokenValue { system: TokenSystem::Any, code: Some(code.into()) })],
    }
}

fn store() -> SqliteStore {
    store_named("search")
}

/// A new store in a directory of its own (tests may share a process).
fn store_named(name: &str) -> SqliteStore {
    let dir = std::env::temp_dir().join(format!("fhirside-store-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    SqliteStore::open(&SqliteConfig::in_dir(&dir)).unwrap()
}

#[tokio::test(flavor = "current_thread")]
async fn frequent_and_rare_codes_page_completely_both_ways() {
    let store = store();
    let mut writes = Vec::new();
    for i in 0..10_500 {
        let mut tokens = vec![TokenEntry { param: "code".into(), system: None, code: "frequent".into() }];
        if i % 2000 == 7 {
            tokens.push(TokenEntry { param: "code".into(), system: None, code: "rare".into() });
        }
        let resource = json!({"resourceType": "Basic", "code": {"text": "x"}});
        let op = WriteOp::Create {
            resource_type: "Basic".into(),
            id: format!("b{i:04}"),
            resource: Unstamped::new(resource.as_object().unwrap().clone()),
            index: IndexEntries { tokens, ..IndexEntries::default() },
            if_none_exist: None,
        };
        writes.push(store.write(op));
    }
    for write in writes {
        write.await.unwrap();
    }

    // The frequent code reaches the probe's cap and is tested per resource; the rare one is collected.
    let frequent = sql::compile_search(
        Dialect::Sqlite,
        &SearchQuery { types: vec!["Basic".into()], clauses: vec![code("frequent")], ..SearchQuery::default() },
        10,
        &[Some(sql::Form::Probe)],
    );
    assert!(frequent.sql.contains("EXISTS"));
    assert!(sql::compile_probe(&code("rare"), 1000).is_some());

    for (value, expected) in [("frequent", 10_500), ("rare", 6)] {
        let mut query = SearchQuery {
            types: vec!["Basic".into()],
            clauses: vec![code(value)],
            count: 100,
            total: true,
            ..SearchQuery::default()
        };
        let mut seen = Vec::new();
        let mut last_previous = None;
        loop {
            let page = store.search(&query).await.unwrap().value;
            assert_eq!(page.total, Some(expected));
            seen.extend(page.versions.iter().map(|v| v.id.clone()));
            last_previous = page.previous.clone().or(last_previous);
            match page.next.as_deref().and_then(Cursor::decode) {
                Some(cursor) => query.cursor = Some(cursor),
                None => break,
            }
        }
        let mut unique = seen.clone();
        unique.sort();
        unique.dedup();
        assert_eq!((seen.len(), unique.len()), (expected as usize, expected as usize), "{value}");
        if expected > 100 {
            // One page back from the last page is the page before it.
            query.cursor = Cursor::decode(last_previous.as_deref().unwrap());
            let page = store.search(&query).await.unwrap().value;
            let back: Vec<String> = page.versions.iter().map(|v| v.id.clone()).collect();
            assert_eq!(back, seen[10_300..10_400]);
        }
    }
    store.close();
}

/// Every statement shape the compiler makes parses, binds its parameters and runs on the schema.
#[test]
fn compiled_statements_run() {
    let mut conn = rusqlite::Connection::open_in_memory().unwrap();
    super::schema::migrate(&mut conn).unwrap();
    for (name, compiled) in sql::tests::statements(Dialect::Sqlite) {
        let mut stmt = conn.prepare(&compiled.sql).unwrap_or_else(|e| panic!("{name}: {e} in {}", compiled.sql));
        let mut rows = stmt.query(rusqlite::params_from_iter(compiled.params.iter())).unwrap();
        while rows.next().unwrap_or_else(|e| panic!("{name}: {e} in {}", compiled.sql)).is_some() {}
    }
}

/// Migration 8 moves each index table's rows into its `rid`-ordered table, numbering the rows of a
/// version (repeated values included) and keeping every column; searches then find them through
/// both the value indexes and the primary key.
#[test]
fn index_rows_survive_the_move_to_rid_ordered_tables() {
    let mut conn = rusqlite::Connection::open_in_memory().unwrap();
    super::schema::migrate_to(&mut conn, 7).unwrap();
    conn.execute_batch(
        "INSERT INTO token_index (rid, param, system, code, grp) VALUES
            (2, 'code', 'http://loinc.org', '1234-5', 0), (1, 'code', NULL, 'x', 0),
            (2, 'code', 'http://loinc.org', '1234-5', 0), (2, 'combo-code', NULL, 'y', 1);
        INSERT INTO date_index (rid, param, low, high, grp) VALUES (1, 'date', 10, 20, 0);
        INSERT INTO reference_index (rid, param, target_type, target_id, url, grp) VALUES
            (1, 'subject', 'Patient', 'p1', NULL, 0), (1, 'subject', NULL, NULL, 'http://x/Patient/9', 0);
        INSERT INTO string_index (rid, param, grp, normalized, exact) VALUES (3, 'name', 0, 'eve', 'Eve');
        INSERT INTO number_index (rid, param, grp, value) VALUES (3, 'probability', 0, 0.5);
        INSERT INTO quantity_index (rid, param, grp, system, code, low, high, canonical_unit, canonical_low,
            canonical_high) VALUES (3, 'value-quantity', 0, 'http://unitsofmeasure.org', 'mg', 1.5, 2.5, 'g', 0.0015, 0.0025);
        INSERT INTO uri_index (rid, param, grp, uri) VALUES (3, 'url', 0, 'http://example.org/a');
        INSERT INTO compartment_index (rid, compartment, id) VALUES (1, 'Patient', 'p1'), (1, 'Patient', 'p1');",
    )
    .unwrap();
    super::schema::migrate(&mut conn).unwrap();
    let rows = |sql: &str| -> Vec<String> {
        let mut stmt = conn.prepare(sql).unwrap();
        let columns = stmt.column_count();
        stmt.query_map([], |row| {
            Ok((0..columns)
                .map(|i| match row.get_ref(i).unwrap() {
                    rusqlite::types::ValueRef::Null => "-".to_owned(),
                    rusqlite::types::ValueRef::Integer(v) => v.to_string(),
                    rusqlite::types::ValueRef::Real(v) => v.to_string(),
                    rusqlite::types::ValueRef::Text(v) => String::from_utf8_lossy(v).into_owned(),
                    rusqlite::types::ValueRef::Blob(_) => "blob".to_owned(),
                })
                .collect::<Vec<_>>()
                .join(" "))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    };
    assert_eq!(
        rows("SELECT rid, param, grp, n, system, code FROM token_index ORDER BY rid, param, grp, n"),
        [
            "1 code 0 1 - x",
            "2 code 0 1 http://loinc.org 1234-5",
            "2 code 0 2 http://loinc.org 1234-5",
            "2 combo-code 1 3 - y"
        ]
    );
    assert_eq!(rows("SELECT rid, param, grp, n, low, high FROM date_index"), ["1 date 0 1 10 20"]);
    assert_eq!(
        rows("SELECT rid, param, grp, n, target_type, target_id, url FROM reference_index ORDER BY n"),
        ["1 subject 0 1 Patient p1 -", "1 subject 0 2 - - http://x/Patient/9"]
    );
    assert_eq!(rows("SELECT rid, param, grp, n, normalized, exact FROM string_index"), ["3 name 0 1 eve Eve"]);
    assert_eq!(rows("SELECT rid, param, grp, n, value FROM number_index"), ["3 probability 0 1 0.5"]);
    assert_eq!(
        rows(
            "SELECT rid, param, grp, n, system, code, low, high, canonical_unit, canonical_low, canonical_high \
              FROM quantity_index"
        ),
        ["3 value-quantity 0 1 http://unitsofmeasure.org mg 1.5 2.5 g 0.0015 0.0025"]
    );
    assert_eq!(rows("SELECT rid, param, grp, n, uri FROM uri_index"), ["3 url 0 1 http://example.org/a"]);
    assert_eq!(
        rows("SELECT rid, compartment, n, id FROM compartment_index ORDER BY n"),
        ["1 Patient 1 p1", "1 Patient 2 p1"]
    );
    // No table keeps a row id, and no table of the old layout is left behind.
    let tables = rows("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE '%index%' ORDER BY name");
    assert!(tables.iter().all(|t| !t.ends_with("_old")), "{tables:?}");
    for table in super::schema::INDEX_TABLES {
        let error = conn.prepare(&format!("SELECT rowid FROM {table}")).err();
        assert!(error.is_some(), "{table} still has a row id");
    }
    // Both ways into the moved rows: a value index, and the primary key the probes name.
    assert_eq!(
        rows("SELECT rid FROM token_index INDEXED BY token_index_value WHERE param = 'code' AND code = '1234-5'"),
        ["2", "2"]
    );
    assert_eq!(
        rows("SELECT code FROM token_index INDEXED BY sqlite_autoindex_token_index_1 WHERE rid = 1 AND param = 'code'"),
        ["x"]
    );
}

#[tokio::test(flavor = "current_thread")]
async fn job_table_protocol() {
    let store = store_named("jobs");
    crate::jobs::tests::protocol(store.jobs()).await;
}

/// A job left running by a process that died is queued again when the store reopens, with its
/// checkpoint, rather than waiting for its lease to run out.
#[tokio::test(flavor = "current_thread")]
async fn a_reopened_store_resumes_running_jobs_at_once() {
    let dir = std::env::temp_dir().join(format!("fhirside-store-test-{}-resume", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let hour = std::time::Duration::from_secs(3600);
    {
        let store = SqliteStore::open(&SqliteConfig::in_dir(&dir)).unwrap();
        let job = crate::NewJob { id: "j".into(), kind: "reindex".into(), definition: "{}".into(), singleton: true };
        store.jobs().enqueue(&job).await.unwrap();
        store.jobs().lease(&["reindex"], "gone", hour).await.unwrap().unwrap();
        assert!(store.jobs().renew("j", "gone", hour, Some("{\"after\":5}")).await.unwrap());
    }
    let store = SqliteStore::open(&SqliteConfig::in_dir(&dir)).unwrap();
    let job = store.jobs().lease(&["reindex"], "next", hour).await.unwrap().expect("leased again at once");
    assert_eq!((job.attempts, job.checkpoint.as_deref()), (2, Some("{\"after\":5}")));
    assert!(!store.jobs().renew("j", "gone", hour, None).await.unwrap());
}

/// The deferrable indexes are exactly the index tables' value indexes, as the migrations define
/// them: building them from the list after a bulk load restores the schema a migration made.
#[test]
fn deferrable_indexes_are_the_value_indexes_the_migrations_make() {
    let mut conn = rusqlite::Connection::open_in_memory().unwrap();
    super::schema::migrate(&mut conn).unwrap();
    let normalize = |sql: &str| sql.split_whitespace().collect::<Vec<_>>().join(" ").replace("IF NOT EXISTS ", "");
    let mut migrated: Vec<(String, String)> = conn
        .prepare(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL \
             AND tbl_name IN (SELECT value FROM json_each(?1)) ORDER BY name",
        )
        .unwrap()
        .query_map([serde_json::to_string(super::schema::INDEX_TABLES).unwrap()], |row| {
            Ok((row.get(0)?, normalize(&row.get::<_, String>(1)?)))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut listed: Vec<(String, String)> = super::schema::DEFERRABLE_INDEXES
        .iter()
        .map(|create| (super::schema::index_name(create).to_owned(), normalize(create)))
        .collect();
    migrated.sort();
    listed.sort();
    assert_eq!(listed, migrated);
}

fn basic(id: &str, code_value: &str) -> WriteOp {
    let resource = json!({"resourceType": "Basic", "code": {"text": "x"}});
    WriteOp::Create {
        resource_type: "Basic".into(),
        id: id.into(),
        resource: Unstamped::new(resource.as_object().unwrap().clone()),
        index: IndexEntries {
            tokens: vec![TokenEntry { param: "code".into(), system: None, code: code_value.into() }],
            ..IndexEntries::default()
        },
        if_none_exist: None,
    }
}

async fn count(store: &SqliteStore, value: &str) -> u64 {
    let query =
        SearchQuery { types: vec!["Basic".into()], clauses: vec![code(value)], total: true, ..SearchQuery::default() };
    store.search(&query).await.unwrap().value.total.unwrap()
}

fn value_indexes(store: &SqliteStore) -> i64 {
    store
        .with_reader(|conn| {
            Ok(conn.query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name IN \
                 ('token_index_value', 'date_index_low', 'reference_index_target', 'uri_index_value')",
                [],
                |row| row.get(0),
            )?)
        })
        .unwrap()
}

/// A bulk load into an empty store drops the value indexes and builds them when it ends; searches
/// find the same rows with and without them. A store with resources keeps its indexes.
#[tokio::test(flavor = "current_thread")]
async fn a_bulk_load_into_an_empty_store_defers_its_value_indexes() {
    let store = store_named("bulk-load");
    let deferred = store.begin_bulk_load().await.unwrap().value;
    assert!(deferred);
    assert_eq!(value_indexes(&store), 0);
    // A second load joins the first.
    assert!(store.begin_bulk_load().await.unwrap().value);
    for i in 0..300 {
        store.write(basic(&format!("b{i}"), if i % 3 == 0 { "three" } else { "other" })).await.unwrap();
    }
    assert_eq!(count(&store, "three").await, 100);
    store.end_bulk_load(deferred).await.unwrap();
    assert_eq!(value_indexes(&store), 4);
    assert_eq!(count(&store, "three").await, 100);

    assert!(!store.begin_bulk_load().await.unwrap().value, "the store holds resources");
    assert_eq!(value_indexes(&store), 4);
    store.end_bulk_load(false).await.unwrap();
    assert_eq!(value_indexes(&store), 4);
    store.close();
}

/// A load that a crash interrupted leaves its indexes unbuilt; the next open builds them.
#[tokio::test(flavor = "current_thread")]
async fn indexes_a_crashed_bulk_load_deferred_are_built_at_open() {
    let dir = std::env::temp_dir().join(format!("fhirside-store-test-{}-bulk-crash", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    {
        let store = SqliteStore::open(&SqliteConfig::in_dir(&dir)).unwrap();
        assert!(store.begin_bulk_load().await.unwrap().value);
        store.write(basic("a", "three")).await.unwrap();
        assert_eq!(value_indexes(&store), 0);
    }
    let store = SqliteStore::open(&SqliteConfig::in_dir(&dir)).unwrap();
    assert_eq!(value_indexes(&store), 4);
    assert_eq!(count(&store, "three").await, 1);
    store.close();
}

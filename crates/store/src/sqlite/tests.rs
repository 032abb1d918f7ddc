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

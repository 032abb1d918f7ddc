//! The PostgreSQL backend against a real server: `FHIRSIDE_TEST_POSTGRES` (default
//! `postgres://root@127.0.0.1:5432/test`). Each test works in a schema of its own, dropped at the
//! end. These tests fail, never skip, when the server is missing: CI starts one.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::json;

use super::{PostgresConfig, PostgresStore};
use crate::index::{IndexEntries, StringEntry, TokenEntry};
use crate::query::{Clause, HistoryQuery, HistoryScope, SearchQuery, SortBy, SortKey, StringMatch, Value, ValueKind};
use crate::query::{Cursor, TokenSystem, TokenValue};
use crate::{ResourceStore, StoreError, Unstamped, WriteOp, WriteResult};

pub(crate) fn base_url() -> String {
    std::env::var("FHIRSIDE_TEST_POSTGRES").unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".to_owned())
}

/// A schema of its own for one test, dropped when the guard goes.
pub(super) struct Scratch {
    schema: String,
    pub(super) config: PostgresConfig,
}

impl Scratch {
    pub(super) async fn new() -> Scratch {
        static N: AtomicUsize = AtomicUsize::new(0);
        let schema = format!("fhirside_store_test_{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let admin = PostgresConfig::from_url(&base_url()).unwrap();
        let mut conn = super::pool::connect(&admin.connect, &Default::default())
            .await
            .expect("PostgreSQL at FHIRSIDE_TEST_POSTGRES");
        conn.batch(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}")).await.unwrap();
        let separator = if base_url().contains('?') { '&' } else { '?' };
        let url = format!("{}{separator}options=-csearch_path%3D{schema}", base_url());
        Scratch { schema, config: PostgresConfig::from_url(&url).unwrap() }
    }

    pub(super) async fn drop_schema(self) {
        let admin = PostgresConfig::from_url(&base_url()).unwrap();
        if let Ok(mut conn) = super::pool::connect(&admin.connect, &Default::default()).await {
            let _ = conn.batch(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema)).await;
        }
    }
}

fn patient(family: &str) -> Unstamped {
    Unstamped::new(json!({"resourceType": "Patient", "name": [{"family": family}]}).as_object().unwrap().clone())
}

fn name_index(family: &str, code: &str) -> IndexEntries {
    IndexEntries {
        strings: vec![StringEntry { param: "name".into(), normalized: family.to_lowercase(), exact: family.into() }],
        tokens: vec![TokenEntry { param: "identifier".into(), system: Some("urn:x".into()), code: code.into() }],
        ..IndexEntries::default()
    }
}

fn identifier(code: &str) -> Clause {
    Clause::Match {
        param: "identifier".into(),
        values: vec![Value::Token(TokenValue { system: TokenSystem::Is("urn:x".into()), code: Some(code.into()) })],
    }
}

fn create(id: &str, family: &str, code: &str) -> WriteOp {
    WriteOp::Create {
        resource_type: "Patient".into(),
        id: id.into(),
        resource: patient(family),
        index: name_index(family, code),
        if_none_exist: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_history_and_preconditions() {
    let scratch = Scratch::new().await;
    let store = PostgresStore::open(&scratch.config).await.unwrap();
    let created = store.write(create("p1", "Chalmers", "1")).await.unwrap().value;
    let WriteResult::Created(v1) = created else { panic!("{created:?}") };
    assert_eq!(v1.version, 1);
    let body: serde_json::Value = serde_json::from_slice(&v1.body).unwrap();
    assert_eq!(body["id"], "p1");
    assert_eq!(body["meta"]["versionId"], "1");

    let update = |if_match| WriteOp::Update {
        resource_type: "Patient".into(),
        id: "p1".into(),
        resource: patient("Chalmers-Smith"),
        index: name_index("Chalmers-Smith", "1"),
        if_match,
    };
    let WriteResult::Updated(v2) = store.write(update(Some(1))).await.unwrap().value else { panic!() };
    assert_eq!(v2.version, 2);
    assert!(v2.last_updated > v1.last_updated);
    // A stale If-Match is refused and writes nothing.
    let stale = store.write(update(Some(1))).await.unwrap_err();
    assert!(matches!(stale, StoreError::VersionConflict { expected: 1, current: Some(2) }), "{stale:?}");

    let read = store.read("Patient", "p1").await.unwrap().value.unwrap();
    assert_eq!(read.version, 2);
    assert_eq!(store.vread("Patient", "p1", 1).await.unwrap().value.unwrap().body, v1.body);

    let WriteResult::Deleted(deleted) = store
        .write(WriteOp::Delete { resource_type: "Patient".into(), id: "p1".into(), if_match: None })
        .await
        .unwrap()
        .value
    else {
        panic!()
    };
    assert_eq!(deleted[0].version, 3);
    assert!(store.read("Patient", "p1").await.unwrap().value.unwrap().deleted);

    let history = store
        .history(
            &HistoryScope::Instance("Patient".into(), "p1".into()),
            &HistoryQuery { count: 2, ..Default::default() },
        )
        .await
        .unwrap()
        .value;
    assert_eq!(history.versions.iter().map(|v| v.version).collect::<Vec<_>>(), [3, 2]);
    let cursor = crate::Page::decode_history_cursor(history.next.as_deref().unwrap()).unwrap();
    let rest = store
        .history(
            &HistoryScope::Instance("Patient".into(), "p1".into()),
            &HistoryQuery { count: 2, cursor: Some(cursor), ..Default::default() },
        )
        .await
        .unwrap()
        .value;
    assert_eq!(rest.versions.iter().map(|v| v.version).collect::<Vec<_>>(), [1]);
    // Search sees neither the deleted resource nor the index rows of its old versions.
    let found = store
        .search(&SearchQuery {
            types: vec!["Patient".into()],
            clauses: vec![identifier("1")],
            count: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .value;
    assert!(found.versions.is_empty());
    drop(store);
    scratch.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_conditional_creates_make_one_resource() {
    let scratch = Scratch::new().await;
    // Two stores on one database: two replicas.
    let a = Arc::new(PostgresStore::open(&scratch.config).await.unwrap());
    let b = Arc::new(PostgresStore::open(&scratch.config).await.unwrap());
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let query =
                SearchQuery { types: vec!["Patient".into()], clauses: vec![identifier("race")], ..Default::default() };
            let op = WriteOp::Create {
                resource_type: "Patient".into(),
                id: format!("r{i}"),
                resource: patient("Race"),
                index: name_index("Race", "race"),
                if_none_exist: Some(query),
            };
            store.write(op).await.unwrap().value
        }));
    }
    let mut created = 0;
    for task in tasks {
        if let WriteResult::Created(_) = task.await.unwrap() {
            created += 1;
        }
    }
    assert_eq!(created, 1);
    let query = SearchQuery {
        types: vec!["Patient".into()],
        clauses: vec![identifier("race")],
        count: 10,
        total: true,
        ..Default::default()
    };
    assert_eq!(a.search(&query).await.unwrap().value.total, Some(1));
    drop((a, b));
    scratch.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sorted_search_pages_both_ways_and_transactions_roll_back() {
    let scratch = Scratch::new().await;
    let store = PostgresStore::open(&scratch.config).await.unwrap();
    let families = ["Zeta", "alpha", "Ägir", "beta", "Gamma", "delta", "epsilon"];
    for (i, family) in families.iter().enumerate() {
        store.write(create(&format!("s{i}"), family, "sorted")).await.unwrap();
    }
    let mut query = SearchQuery {
        types: vec!["Patient".into()],
        clauses: vec![identifier("sorted")],
        sort: vec![SortKey { by: SortBy::Param { param: "name".into(), kind: ValueKind::String }, descending: false }],
        count: 3,
        ..Default::default()
    };
    let mut seen = Vec::new();
    let mut pages = Vec::new();
    loop {
        let page = store.search(&query).await.unwrap().value;
        seen.extend(page.versions.iter().map(|v| v.id.clone()));
        pages.push(page.versions.iter().map(|v| v.id.clone()).collect::<Vec<_>>());
        match page.next {
            Some(next) => query.cursor = Cursor::decode(&next),
            None => {
                // And back from the last page to the one before it.
                let previous = page.previous.expect("a previous page");
                query.cursor = Cursor::decode(&previous);
                let back = store.search(&query).await.unwrap().value;
                assert_eq!(back.versions.iter().map(|v| v.id.clone()).collect::<Vec<_>>(), pages[pages.len() - 2]);
                break;
            }
        }
    }
    // Bytewise order of the normalised names, as on the embedded store.
    let mut expected: Vec<(String, String)> =
        families.iter().enumerate().map(|(i, f)| (f.to_lowercase(), format!("s{i}"))).collect();
    expected.sort();
    assert_eq!(seen, expected.into_iter().map(|(_, id)| id).collect::<Vec<_>>());

    // Starts-with on the normalised value, through the U+10FFFF range.
    let prefix = SearchQuery {
        types: vec!["Patient".into()],
        clauses: vec![Clause::Match {
            param: "name".into(),
            values: vec![Value::String { value: "de".into(), matching: StringMatch::StartsWith }],
        }],
        count: 10,
        ..Default::default()
    };
    assert_eq!(store.search(&prefix).await.unwrap().value.versions.len(), 1);

    // Transaction work that fails leaves nothing behind.
    let failed = store
        .transaction(Box::new(|tx| {
            tx.write(create("t1", "Inside", "tx"))?;
            assert_eq!(tx.read("Patient", "t1")?.map(|v| v.version), Some(1));
            Err(StoreError::RolledBack)
        }))
        .await;
    assert!(matches!(failed, Err(StoreError::RolledBack)));
    assert!(store.read("Patient", "t1").await.unwrap().value.is_none());
    drop(store);
    scratch.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_recorded_once() {
    let scratch = Scratch::new().await;
    let before = super::schema_status(&scratch.config).await.unwrap();
    assert_eq!(before.current, 0);
    assert!(!before.pending.is_empty());
    // Several processes starting together: each migrates under the lock, one does the work.
    let (x, y) = tokio::join!(super::migrate(&scratch.config), super::migrate(&scratch.config));
    assert_eq!(x.unwrap().current, before.newest);
    assert_eq!(y.unwrap().current, before.newest);
    let after = super::schema_status(&scratch.config).await.unwrap();
    assert!(after.pending.is_empty());
    scratch.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_table_protocol() {
    let scratch = Scratch::new().await;
    let store = PostgresStore::open(&scratch.config).await.unwrap();
    crate::jobs::tests::protocol(store.jobs()).await;
    drop(store);
    scratch.drop_schema().await;
}

/// Replicas polling together each lease a different job, and every job exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_leases_never_share_a_job() {
    let scratch = Scratch::new().await;
    let store = Arc::new(PostgresStore::open(&scratch.config).await.unwrap());
    for n in 0..40 {
        let job =
            crate::NewJob { id: format!("j{n:02}"), kind: "work".into(), definition: "{}".into(), singleton: false };
        store.jobs().enqueue(&job).await.unwrap();
    }
    let workers = (0..4).map(|w| {
        let store = store.clone();
        tokio::spawn(async move {
            let owner = format!("w{w}");
            let mut mine = Vec::new();
            while let Some(job) =
                store.jobs().lease(&["work"], &owner, std::time::Duration::from_secs(60)).await.unwrap()
            {
                assert!(store.jobs().finish(&job.id, &owner, crate::JobEnd::Completed { result: "{}" }).await.unwrap());
                mine.push(job.id);
            }
            mine
        })
    });
    let mut all = Vec::new();
    for worker in workers.collect::<Vec<_>>() {
        all.extend(worker.await.unwrap());
    }
    all.sort();
    let expected: Vec<String> = (0..40).map(|n| format!("j{n:02}")).collect();
    assert_eq!(all, expected, "each job leased by exactly one worker");
    drop(store);
    scratch.drop_schema().await;
}

/// Every statement the compiler makes for PostgreSQL (the same set SQLite's test runs) prepares
/// and runs against the migrated schema, with its parameters bound as the store binds them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiled_statements_run() {
    let scratch = Scratch::new().await;
    let store = PostgresStore::open(&scratch.config).await.unwrap();
    let mut conn = store.pool.get().await.unwrap();
    for (name, compiled) in crate::sql::tests::statements(crate::sql::Dialect::Postgres) {
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            compiled.params.iter().map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
        if let Err(error) = conn.query(&compiled.sql, &params).await {
            panic!("{name}: {error} in {}", compiled.sql);
        }
    }
    drop(conn);
    drop(store);
    scratch.drop_schema().await;
}

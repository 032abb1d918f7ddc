//! A load into an empty PostgreSQL database without its search-only indexes (`deferred.rs`).

use super::deferred::INDEXES;
use super::load_tests::{scenario, search_answers};
use super::tests::Scratch;
use super::{pool, PostgresStore};
use crate::ResourceStore;

/// The definitions (`pg_get_indexdef`) of the deferrable indexes present, by name.
async fn definitions(scratch: &Scratch) -> Vec<(String, String)> {
    let mut conn = pool::connect(&scratch.config.connect, &Default::default()).await.unwrap();
    let names: Vec<&str> = INDEXES.iter().map(|(name, _)| *name).collect();
    let rows = conn
        .query(
            "SELECT indexname::text, indexdef FROM pg_indexes WHERE schemaname = current_schema() \
             AND indexname = ANY($1) ORDER BY indexname",
            &[&names],
        )
        .await
        .unwrap();
    rows.iter().map(|row| (row.get(0), row.get(1))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_into_an_empty_database_defers_the_search_indexes_and_builds_them_as_migrated() {
    let scratch = Scratch::new().await;
    let store = PostgresStore::open(&scratch.config).await.unwrap();
    // What the migrations made, which the deferred statements must make again.
    let migrated = definitions(&scratch).await;
    assert_eq!(migrated.len(), INDEXES.len(), "every deferrable index exists after migrating: {migrated:?}");

    assert!(store.begin_bulk_load().await.unwrap().value);
    assert!(definitions(&scratch).await.is_empty());
    // Searches are right without the indexes (the scenario checks its answers itself, in
    // load_tests), and the same after they are built.
    let during = scenario(&store).await;
    store.end_bulk_load(true).await.unwrap();
    assert_eq!(definitions(&scratch).await, migrated);
    assert_eq!(during[11..21], search_answers(&store).await[..]);

    // A database with resources keeps its indexes.
    assert!(!store.begin_bulk_load().await.unwrap().value);
    assert_eq!(definitions(&scratch).await, migrated);
    drop(store);
    scratch.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_after_an_interrupted_load_builds_what_is_missing() {
    let scratch = Scratch::new().await;
    let store = PostgresStore::open(&scratch.config).await.unwrap();
    let migrated = definitions(&scratch).await;
    assert!(store.begin_bulk_load().await.unwrap().value);
    // The load stops here, as if the process died: no end_bulk_load.
    drop(store);
    assert!(definitions(&scratch).await.is_empty());
    let store = PostgresStore::open(&scratch.config).await.unwrap();
    assert_eq!(definitions(&scratch).await, migrated);
    drop(store);
    scratch.drop_schema().await;
}

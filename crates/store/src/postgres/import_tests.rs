//! Moving an embedded store to PostgreSQL: versions exported from SQLite and imported keep their
//! history, bodies and timestamps (against the real server, as in `tests.rs`).

use serde_json::json;

use super::tests::Scratch;
use super::PostgresStore;
use crate::index::{CompartmentEntry, IndexEntries};
use crate::query::{HistoryQuery, HistoryScope};
use crate::sqlite::{SqliteConfig, SqliteExport, SqliteStore};
use crate::{ResourceStore, StoreError, StoredVersion, Unstamped, WriteOp, WriteResult};

fn patient(family: &str) -> Unstamped {
    Unstamped::new(json!({"resourceType": "Patient", "name": [{"family": family}]}).as_object().unwrap().clone())
}

fn put(id: &str, family: &str) -> WriteOp {
    WriteOp::Update {
        resource_type: "Patient".into(),
        id: id.into(),
        resource: patient(family),
        index: IndexEntries::default(),
        if_match: None,
    }
}

/// An Observation in the compartments of `patients`.
fn observation(id: &str, patients: &[&str]) -> WriteOp {
    let compartments =
        patients.iter().map(|p| CompartmentEntry { compartment: "Patient".into(), id: (*p).into() }).collect();
    WriteOp::Update {
        resource_type: "Observation".into(),
        id: id.into(),
        resource: Unstamped::new(json!({"resourceType": "Observation"}).as_object().unwrap().clone()),
        index: IndexEntries { compartments, ..IndexEntries::default() },
        if_match: None,
    }
}

/// Every version of `Patient/id`, newest first.
async fn history(store: &dyn ResourceStore, id: &str) -> Vec<StoredVersion> {
    let scope = HistoryScope::Instance("Patient".into(), id.into());
    store.history(&scope, &HistoryQuery { count: 100, ..Default::default() }).await.unwrap().value.versions
}

fn same(a: &StoredVersion, b: &StoredVersion) {
    assert_eq!((&a.resource_type, &a.id, a.version), (&b.resource_type, &b.id, b.version));
    assert_eq!(a.last_updated, b.last_updated, "{}/{} v{}", a.resource_type, a.id, a.version);
    assert_eq!((a.deleted, a.method), (b.deleted, b.method));
    assert_eq!(a.body, b.body, "{}/{} v{}: stored bytes", a.resource_type, a.id, a.version);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_keeps_every_version() {
    let dir = std::env::temp_dir().join(format!("fhirside-import-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let source = SqliteStore::open(&SqliteConfig::in_dir(&dir)).unwrap();
    for op in [put("p1", "Chalmers"), put("p2", "Windsor"), put("p1", "Chalmers-Smith"), put("p3", "Gone")] {
        source.write(op).await.unwrap();
    }
    for id in ["p2", "p3"] {
        let delete = WriteOp::Delete { resource_type: "Patient".into(), id: id.into(), if_match: None };
        source.write(delete).await.unwrap();
    }
    source.write(put("p2", "Windsor again")).await.unwrap();
    // Placed on the target by the compartments of their current versions.
    for op in [observation("o1", &["p1"]), observation("o1", &["p1", "p1"]), observation("o2", &["p1", "p2"])] {
        source.write(op).await.unwrap();
    }
    let mut expected = Vec::new();
    for id in ["p1", "p2", "p3"] {
        expected.push((id, history(&source, id).await));
    }
    source.close();
    drop(source);

    let export = SqliteExport::open(&dir).unwrap();
    // The data directory's lock is held: a second reader (or a server) is refused.
    assert!(matches!(SqliteExport::open(&dir), Err(StoreError::Conflict(_))));
    let counts = export.counts().unwrap();
    assert_eq!((counts.versions, counts.live), (10, 4));

    let scratch = Scratch::new().await;
    let target = PostgresStore::open(&scratch.config).await.unwrap();
    let importer = target.begin_import().await.unwrap();
    let (mut after, mut copied) = (0, 0);
    loop {
        // Small batches, so that paging through the source is exercised.
        let batch = export.versions_after(after, 3).unwrap();
        let Some(&(last, _)) = batch.last() else { break };
        after = last;
        copied += importer.import_versions(batch.into_iter().map(|(_, v)| v).collect()).await.unwrap();
    }
    assert_eq!(copied, 10);
    drop(export);
    let placed: Vec<(String, i64, String)> = target
        .pool
        .get()
        .await
        .unwrap()
        .query("SELECT id, version, shard_key FROM resource WHERE type = 'Observation' ORDER BY id, version", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    let expected_placement = [("o1", 1, "p1"), ("o1", 2, "p1"), ("o2", 1, "Observation/o2")];
    assert_eq!(placed, expected_placement.map(|(id, v, s)| (id.to_owned(), v, s.to_owned())));
    assert_eq!(target.read("Observation", "o2").await.unwrap().value.unwrap().version, 1);

    for (id, versions) in &expected {
        let moved = history(&target, id).await;
        assert_eq!(moved.len(), versions.len(), "history of Patient/{id}");
        for (a, b) in moved.iter().zip(versions) {
            same(a, b);
            let vread = target.vread("Patient", id, b.version).await.unwrap().value.unwrap();
            same(&vread, b);
        }
        let current = target.read("Patient", id).await.unwrap().value.unwrap();
        same(&current, &versions[0]);
    }
    assert!(target.read("Patient", "p3").await.unwrap().value.unwrap().deleted);

    // The moved store takes new versions where the old ones end.
    let WriteResult::Updated(next) = target.write(put("p1", "Chalmers-Jones")).await.unwrap().value else {
        panic!("expected an update")
    };
    assert_eq!(next.version, 3);
    assert!(next.last_updated > expected[0].1[0].last_updated);

    // A store that holds resources is refused.
    let refused = target.begin_import().await.err().expect("a second import is refused");
    assert!(matches!(&refused, StoreError::Conflict(m) if m.contains("empty")), "{refused}");

    drop(target);
    scratch.drop_schema().await;
    let _ = std::fs::remove_dir_all(&dir);
}

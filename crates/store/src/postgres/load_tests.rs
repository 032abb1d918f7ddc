//! `import_batch` on PostgreSQL (set-based, `load.rs`) against the one-line-at-a-time default the
//! embedded store uses: the same batches give the same results, versions and search answers.

use serde_json::json;

use super::tests::Scratch;
use super::PostgresStore;
use crate::index::{CompartmentEntry, IndexEntries, StringEntry, TextEntry, TokenEntry};
use crate::query::{Clause, HistoryQuery, HistoryScope, SearchQuery, StringMatch, TokenSystem, TokenValue, Value};
use crate::sqlite::{SqliteConfig, SqliteStore};
use crate::{ImportLine, ImportedMeta, ResourceStore, StoreError, Unstamped, WriteResult};

/// An Observation of `patient` with `code` (a token) and `note` (a string and its full text).
fn line(id: &str, patient: &str, code: &str, note: &str, keep: Option<(u64, i64)>) -> ImportLine {
    let resource = json!({
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "urn:codes", "code": code}]},
        "subject": {"reference": format!("Patient/{patient}")},
        "note": [{"text": note}],
    });
    ImportLine {
        resource_type: "Observation".into(),
        id: id.into(),
        resource: Unstamped::new(resource.as_object().unwrap().clone()),
        index: IndexEntries {
            tokens: vec![TokenEntry { param: "code".into(), system: Some("urn:codes".into()), code: code.into() }],
            strings: vec![StringEntry { param: "note".into(), normalized: note.to_lowercase(), exact: note.into() }],
            compartments: vec![CompartmentEntry { compartment: "Patient".into(), id: patient.into() }],
            text: Some(TextEntry { narrative: String::new(), content: note.to_lowercase() }),
            ..IndexEntries::default()
        },
        keep: keep.map(|(version, at)| ImportedMeta { version: Some(version), last_updated: Some(at) }),
        soft_deleted: false,
    }
}

fn patient(id: &str, family: &str) -> ImportLine {
    let resource = json!({"resourceType": "Patient", "name": [{"family": family}]});
    ImportLine {
        resource_type: "Patient".into(),
        id: id.into(),
        resource: Unstamped::new(resource.as_object().unwrap().clone()),
        index: IndexEntries {
            strings: vec![StringEntry {
                param: "name".into(),
                normalized: family.to_lowercase(),
                exact: family.into(),
            }],
            compartments: vec![CompartmentEntry { compartment: "Patient".into(), id: id.into() }],
            ..IndexEntries::default()
        },
        keep: None,
        soft_deleted: false,
    }
}

/// Each result as a comparable line: the kind and version, or the refusal.
fn summary(results: Vec<Result<WriteResult, StoreError>>) -> Vec<String> {
    results
        .into_iter()
        .map(|result| match result {
            Ok(WriteResult::Created(v)) => format!("created {}/{} v{}", v.resource_type, v.id, v.version),
            Ok(WriteResult::Updated(v)) => format!("updated {}/{} v{}", v.resource_type, v.id, v.version),
            Ok(WriteResult::Unchanged(v)) => format!("unchanged {}/{} v{}", v.resource_type, v.id, v.version),
            Ok(other) => format!("{other:?}"),
            Err(error) => format!("refused: {error}"),
        })
        .collect()
}

/// Ids (sorted) of the current Observations matching one clause.
async fn ids(store: &dyn ResourceStore, clause: Clause) -> Vec<String> {
    let query =
        SearchQuery { types: vec!["Observation".into()], clauses: vec![clause], count: 100, ..Default::default() };
    let mut ids: Vec<String> = store.search(&query).await.unwrap().value.versions.into_iter().map(|v| v.id).collect();
    ids.sort();
    ids
}

fn code(code: &str) -> Clause {
    Clause::Match {
        param: "code".into(),
        values: vec![Value::Token(TokenValue { system: TokenSystem::Is("urn:codes".into()), code: Some(code.into()) })],
    }
}

fn note(text: &str) -> Clause {
    Clause::Match {
        param: "note".into(),
        values: vec![Value::String { value: text.into(), matching: StringMatch::Exact }],
    }
}

fn words(word: &str) -> Clause {
    Clause::Text { narrative: false, words: vec![word.into()] }
}

fn in_compartment(patient: &str) -> Clause {
    Clause::Compartment { compartment: "Patient".into(), id: patient.into() }
}

/// The searches of [`scenario`] and their answers, one line each.
pub(super) async fn search_answers(store: &dyn ResourceStore) -> Vec<String> {
    let mut answers = Vec::new();
    for clause in [code("hr"), code("bp"), code("rr"), note("standing"), note("sitting"), note("lying")] {
        answers.push(format!("{clause:?} -> {:?}", ids(store, clause.clone()).await));
    }
    for clause in [words("asleep"), words("run"), in_compartment("p1"), in_compartment("p2")] {
        answers.push(format!("{clause:?} -> {:?}", ids(store, clause.clone()).await));
    }
    answers
}

/// Three batches on `store`; returns every answer that must agree between stores.
pub(super) async fn scenario(store: &dyn ResourceStore) -> Vec<String> {
    let t = 1_700_000_000_000_000;
    let mut answers = Vec::new();
    // New resources, one of them twice (its second version replaces the first within the batch).
    let first = vec![
        patient("p1", "Chalmers"),
        line("o1", "p1", "hr", "resting", None),
        line("o2", "p1", "bp", "standing", Some((1, t))),
        line("o2", "p1", "bp", "sitting", Some((2, t + 10))),
        line("o3", "p2", "hr", "after run", None),
    ];
    answers.extend(summary(store.import_batch(first).await.unwrap().value));
    // Existing resources: unchanged, updated, a refused older version, and one line out of order.
    let second = vec![
        line("o1", "p1", "hr", "resting", None),
        line("o3", "p2", "rr", "asleep", None),
        line("o2", "p1", "bp", "lying", Some((1, t + 20))),
        line("o2", "p1", "bp", "lying", Some((3, t + 5))),
        line("o2", "p1", "bp", "lying", Some((4, t + 30))),
        line("o4", "p2", "hr", "walking", None),
    ];
    answers.extend(summary(store.import_batch(second).await.unwrap().value));
    answers.extend(summary(store.import_batch(Vec::new()).await.unwrap().value));

    answers.extend(search_answers(store).await);
    let scope = HistoryScope::Instance("Observation".into(), "o2".into());
    let history = store.history(&scope, &HistoryQuery { count: 10, ..Default::default() }).await.unwrap().value;
    let versions: Vec<(u64, i64)> = history.versions.iter().map(|v| (v.version, v.last_updated)).collect();
    answers.push(format!("o2 history {versions:?}"));
    let o3 = store.read("Observation", "o3").await.unwrap().value.unwrap();
    answers.push(format!("o3 v{} {}", o3.version, String::from_utf8_lossy(&o3.body).contains("asleep")));
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_writes_what_the_lines_would_one_by_one() {
    let dir = std::env::temp_dir().join(format!("fhirside-store-load-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let embedded = scenario(&SqliteStore::open(&SqliteConfig::in_dir(&dir)).unwrap()).await;

    let scratch = Scratch::new().await;
    let store = PostgresStore::open(&scratch.config).await.unwrap();
    let postgres = scenario(&store).await;
    // Ended versions keep no index rows (searches would skip them anyway; the space would leak).
    let mut conn = super::pool::connect(&scratch.config.connect, &Default::default()).await.unwrap();
    let count = "SELECT (SELECT count(*) FROM string_index WHERE param = 'note'), \
                 (SELECT count(*) FROM token_index WHERE param = 'code'), (SELECT count(*) FROM text_index), \
                 (SELECT count(*) FROM compartment_index), (SELECT count(*) FROM resource_key)";
    let row = conn.query_one(count, &[]).await.unwrap();
    let counts: Vec<i64> = (0..5).map(|i| row.get(i)).collect();
    // Four current Observations; their compartments and the Patient's own; five resources.
    assert_eq!(counts, [4, 4, 4, 5, 5]);
    drop(conn);
    drop(store);
    scratch.drop_schema().await;
    let _ = std::fs::remove_dir_all(&dir);

    assert_eq!(postgres, embedded);
    // What the scenario means, so that two stores agreeing on a mistake still fail.
    let expected_results = [
        "created Patient/p1 v1",
        "created Observation/o1 v1",
        "created Observation/o2 v1",
        "updated Observation/o2 v2",
        "created Observation/o3 v1",
        "unchanged Observation/o1 v1",
        "updated Observation/o3 v2",
    ];
    assert_eq!(postgres[..7], expected_results);
    assert!(postgres[7].starts_with("refused: Observation/o2 already has version 2"), "{}", postgres[7]);
    assert!(postgres[8].starts_with("refused: Observation/o2: the imported lastUpdated"), "{}", postgres[8]);
    assert_eq!(postgres[9..11], ["updated Observation/o2 v4", "created Observation/o4 v1"]);
    let searches: Vec<&str> = postgres[11..21].iter().map(|a| a.rsplit(" -> ").next().unwrap()).collect();
    assert_eq!(
        searches,
        [
            r#"["o1", "o4"]"#,
            r#"["o2"]"#,
            r#"["o3"]"#,
            "[]",
            "[]",
            r#"["o2"]"#,
            r#"["o3"]"#,
            "[]",
            r#"["o1", "o2"]"#,
            r#"["o3", "o4"]"#,
        ]
    );
    let t = 1_700_000_000_000_000i64;
    assert_eq!(postgres[21], format!("o2 history [(4, {}), (2, {}), (1, {t})]", t + 30, t + 10));
    assert_eq!(postgres[22], "o3 v2 true");
}

/// Two batches sharing resources in opposite orders, at once, many times: the locks are taken in
/// one order, so neither deadlocks, and every resource ends with one version per batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_batches_on_the_same_resources_do_not_deadlock() {
    let scratch = Scratch::new().await;
    let store = std::sync::Arc::new(PostgresStore::open(&scratch.config).await.unwrap());
    let ids: Vec<String> = (0..50).map(|i| format!("o{i}")).collect();
    for round in 0..5 {
        let batch = |reverse: bool, tag: &str| {
            let mut lines: Vec<ImportLine> =
                ids.iter().map(|id| line(id, "p1", "hr", &format!("{tag} {round}"), None)).collect();
            if reverse {
                lines.reverse();
            }
            lines
        };
        let (a, b) = (batch(false, "a"), batch(true, "b"));
        let (sa, sb) = (store.clone(), store.clone());
        let (ra, rb) = tokio::join!(
            tokio::spawn(async move { sa.import_batch(a).await }),
            tokio::spawn(async move { sb.import_batch(b).await })
        );
        for results in [ra.unwrap().unwrap().value, rb.unwrap().unwrap().value] {
            assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
        }
    }
    for id in &ids {
        assert_eq!(store.read("Observation", id).await.unwrap().value.unwrap().version, 10, "{id}");
    }
    drop(store);
    scratch.drop_schema().await;
}

/// The halves a batch is written in share no resource and keep each resource's lines in order.
#[test]
fn halves_keep_a_resource_together_and_in_order() {
    let lines: Vec<ImportLine> =
        (0..200).map(|i| line(&format!("o{}", i % 40), "p1", "hr", &format!("v{i}"), None)).collect();
    let [(first_at, first), (second_at, second)] = super::load::halves(lines);
    assert!(!first.is_empty() && !second.is_empty());
    assert_eq!(first_at.len() + second_at.len(), 200);
    for (positions, half) in [(&first_at, &first), (&second_at, &second)] {
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "positions in batch order");
        for (at, line) in positions.iter().zip(half.iter()) {
            assert_eq!(line.id, format!("o{}", at % 40));
        }
    }
    let ids = |half: &[ImportLine]| half.iter().map(|l| l.id.clone()).collect::<std::collections::HashSet<_>>();
    assert!(ids(&first).is_disjoint(&ids(&second)));
}

/// A soft-deleted line (an export's deleted resource): its version, then a deletion marker; the
/// same line again is unchanged. The same on both stores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soft_deleted_line_is_stored_then_deleted_once() {
    let t = 1_700_000_000_000_000;
    async fn run(store: &dyn ResourceStore, t: i64) -> Vec<String> {
        let soft = || ImportLine { soft_deleted: true, ..line("o9", "p1", "hr", "before deletion", Some((2, t))) };
        let mut answers = summary(store.import_batch(vec![soft()]).await.unwrap().value);
        answers.extend(summary(store.import_batch(vec![soft(), soft()]).await.unwrap().value));
        let current = store.read("Observation", "o9").await.unwrap().value.unwrap();
        answers.push(format!("current v{} deleted {}", current.version, current.deleted));
        let scope = HistoryScope::Instance("Observation".into(), "o9".into());
        let history = store.history(&scope, &HistoryQuery { count: 10, ..Default::default() }).await.unwrap().value;
        answers.push(format!("{:?}", history.versions.iter().map(|v| (v.version, v.deleted)).collect::<Vec<_>>()));
        answers.push(format!("{:?}", ids(store, code("hr")).await));
        answers
    }
    let dir = std::env::temp_dir().join(format!("fhirside-store-soft-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let embedded = run(&SqliteStore::open(&SqliteConfig::in_dir(&dir)).unwrap(), t).await;
    let scratch = Scratch::new().await;
    let store = PostgresStore::open(&scratch.config).await.unwrap();
    let postgres = run(&store, t).await;
    drop(store);
    scratch.drop_schema().await;
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(postgres, embedded);
    assert_eq!(
        postgres,
        [
            "created Observation/o9 v2",
            "unchanged Observation/o9 v3",
            "unchanged Observation/o9 v3",
            "current v3 deleted true",
            "[(3, true), (2, false)]",
            "[]",
        ]
    );
}

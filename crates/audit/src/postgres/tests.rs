//! The PostgreSQL trail, on the machine's PostgreSQL (`FHIRSIDE_TEST_POSTGRES`, default
//! `postgres://root@127.0.0.1:5432/test`), each test in a schema of its own. They fail, not skip,
//! when it is missing.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::{timestamp, AuditLog, ResultType};

fn base_url() -> String {
    std::env::var("FHIRSIDE_TEST_POSTGRES").unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".into())
}

/// A fresh schema; returns its URL and a statement runner on it.
async fn scratch(name: &str) -> (String, Client) {
    let schema = format!("fhirside_audit_test_{name}_{}", std::process::id());
    let admin = connect(&parse_url(&base_url()).unwrap()).await.unwrap();
    admin.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}")).await.unwrap();
    let separator = if base_url().contains('?') { '&' } else { '?' };
    let url = format!("{}{separator}options=-csearch_path%3D{schema}", base_url());
    let client = connect(&parse_url(&url).unwrap()).await.unwrap();
    (url, client)
}

fn config(url: &str) -> PostgresAuditConfig {
    PostgresAuditConfig {
        url: url.to_owned(),
        retention_days: 30,
        stdout: false,
        sync: SyncPolicy::Interval(Duration::from_secs(1)),
    }
}

fn record(operation: &str, result: ResultType, caller: Option<&str>, days_ago: u64) -> AuditRecord {
    let mut caller_identity = serde_json::Map::new();
    if let Some(app) = caller {
        caller_identity.insert("appid".into(), app.into());
    }
    AuditRecord {
        time_generated: timestamp(std::time::SystemTime::now() - Duration::from_secs(days_ago * 86_400)),
        log_category: crate::LOG_CATEGORY.into(),
        operation_name: operation.into(),
        result_type: result,
        correlation_id: format!("{operation}-{days_ago}"),
        request_uri: "https://fhir.example/Patient".into(),
        fhir_resource_type: Some("Patient".into()),
        caller_identity: caller_identity.into(),
        caller_identity_issuer: None,
        caller_identity_object_id: None,
        caller_ip_address: "127.0.0.1".into(),
        status_code: None,
        operation_duration: None,
        location: "local".into(),
        properties: Default::default(),
        sequence: 0,
        previous_hash: String::new(),
        hash: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_make_one_chain_that_queries_filter() {
    let (url, _) = scratch("chain").await;
    let (a, b) = (
        Arc::new(AuditLog::open_postgres(config(&url)).unwrap()),
        Arc::new(AuditLog::open_postgres(config(&url)).unwrap()),
    );
    let mut tasks = Vec::new();
    for n in 0..40u64 {
        let log = if n % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let result = if n % 4 == 1 { ResultType::Failed } else { ResultType::Succeeded };
            let caller = if n % 5 == 0 { Some("app-5") } else { None };
            log.append_all(vec![
                record("read", ResultType::Started, caller, n % 3),
                record("read", result, caller, n % 3),
            ])
            .await
            .unwrap()
        }));
    }
    let mut stored = Vec::new();
    for task in tasks {
        let pair = task.await.unwrap();
        assert_eq!(pair[1].sequence, pair[0].sequence + 1, "a request's records are adjacent");
        assert_eq!(pair[1].previous_hash, pair[0].hash);
        stored.extend(pair);
    }
    let mut sequences: Vec<u64> = stored.iter().map(|r| r.sequence).collect();
    sequences.sort();
    assert_eq!(sequences, (1..=80).collect::<Vec<u64>>());
    a.close();
    assert!(a.append(record("read", ResultType::Started, None, 0)).await.is_err(), "a closed log refuses");

    let report = tokio::task::spawn_blocking(move || verify(&url)).await.unwrap().unwrap();
    assert!(report.intact(), "{report:?}");
    assert_eq!((report.records, report.first_sequence, report.last_sequence), (80, Some(1), Some(80)));

    let all = b.query(Filter::default(), 1000).await.unwrap();
    assert_eq!(all.iter().map(|r| r.sequence).collect::<Vec<_>>(), (1..=80).collect::<Vec<u64>>());
    let failed = b.query(Filter { result: Some(ResultType::Failed), ..Filter::default() }, 1000).await.unwrap();
    assert_eq!(failed.len(), 10);
    let by_app = b.query(Filter { caller: Some("app-5".into()), ..Filter::default() }, 1000).await.unwrap();
    assert_eq!(by_app.len(), 16);
    let today = crate::timestamp(std::time::SystemTime::now() - Duration::from_secs(3600));
    let recent = b.query(Filter { from: Some(today), ..Filter::default() }, 1000).await.unwrap();
    assert_eq!(recent.len(), 28, "the records of the requests made 0 days ago");
    assert_eq!(b.query(Filter::default(), 5).await.unwrap().len(), 5);
    let bad = b.query(Filter { to: Some("yesterday".into()), ..Filter::default() }, 10).await;
    assert!(matches!(bad, Err(AuditError::Io(e)) if e.kind() == std::io::ErrorKind::InvalidInput));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_old_records_and_verify_says_so() {
    let (url, client) = scratch("retention").await;
    let log = AuditLog::open_postgres(config(&url)).unwrap();
    log.append_all(vec![
        record("read", ResultType::Started, None, 40),
        record("read", ResultType::Succeeded, None, 40),
    ])
    .await
    .unwrap();
    log.append(record("create", ResultType::Started, None, 0)).await.unwrap();
    log.close();
    assert_eq!(count(&client).await, 3);
    // Opening applies the retention (30 days): the two old records go, the chain's end stays.
    let log = AuditLog::open_postgres(config(&url)).unwrap();
    assert_eq!(count(&client).await, 1);
    let next = log.append(record("create", ResultType::Succeeded, None, 0)).await.unwrap();
    assert_eq!(next.sequence, 4);
    log.close();
    let report = tokio::task::spawn_blocking(move || verify(&url)).await.unwrap().unwrap();
    assert!(report.intact() && report.starts_after_retention, "{report:?}");
    assert_eq!(report.first_sequence, Some(3));
}

async fn count(client: &Client) -> i64 {
    client.query_one("SELECT count(*) FROM audit_record", &[]).await.unwrap().get::<_, i64>(0)
}

#[test]
fn an_unreachable_database_refuses_to_open() {
    let config = config("postgres://root@127.0.0.1:1/test?connect_timeout=2");
    assert!(AuditLog::open_postgres(config).is_err());
}

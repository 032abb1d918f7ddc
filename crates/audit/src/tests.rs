//! End-to-end tests of the public API: append, verify, query, rotation, retention, failures.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::*;

/// A directory removed when dropped.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(name: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("fhirside-audit-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn record(time: &str, operation: &str) -> AuditRecord {
    let claims: Map<String, Value> =
        json!({"oid": "o-1", "iss": "https://issuer/", "appid": "app-1"}).as_object().unwrap().clone();
    AuditRecord {
        time_generated: time.into(),
        log_category: LOG_CATEGORY.into(),
        operation_name: operation.into(),
        result_type: ResultType::Started,
        correlation_id: "c-1".into(),
        request_uri: "https://localhost/Patient/1".into(),
        fhir_resource_type: Some("Patient".into()),
        caller_identity: claims.into(),
        caller_identity_issuer: Some("https://issuer/".into()),
        caller_identity_object_id: Some("o-1".into()),
        caller_ip_address: "127.0.0.1".into(),
        status_code: None,
        operation_duration: None,
        location: "local".into(),
        properties: Map::new(),
        sequence: 0,
        previous_hash: String::new(),
        hash: String::new(),
    }
}

fn config(dir: &Path) -> AuditConfig {
    AuditConfig { dir: dir.join("audit"), ..AuditConfig::new("unused") }
}

fn open(dir: &Path) -> AuditLog {
    AuditLog::open(config(dir)).unwrap()
}

fn audit_file(dir: &Path, day: &str) -> PathBuf {
    dir.join("audit").join(format!("audit-{day}.jsonl"))
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap().lines().map(str::to_owned).collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
}

async fn append_n(log: &AuditLog, time: &str, n: usize) -> Vec<AuditRecord> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(log.append(record(time, &format!("op-{i}"))).await.unwrap());
    }
    out
}

fn broken(dir: &Path) -> BrokenLink {
    let report = verify(&dir.join("audit")).unwrap();
    report.first_broken.clone().unwrap_or_else(|| panic!("expected a broken link: {report:?}"))
}

#[tokio::test]
async fn append_then_verify() {
    let tmp = TempDir::new("append");
    let log = open(tmp.path());
    let stored = append_n(&log, "2024-03-01T10:00:00.000001Z", 5).await;
    for (i, r) in stored.iter().enumerate() {
        assert_eq!(r.sequence, i as u64 + 1);
        assert_eq!(r.hash.len(), 43);
        let before = if i == 0 { "" } else { stored[i - 1].hash.as_str() };
        assert_eq!(r.previous_hash, before);
        assert_eq!(r.operation_name, format!("op-{i}"));
    }
    // The stored line is the record's serialization; the hash is of it with Hash emptied.
    log.flush().unwrap();
    let file = audit_file(tmp.path(), "2024-03-01");
    let text = lines(&file);
    assert_eq!(text.len(), 5);
    for (line, r) in text.iter().zip(&stored) {
        assert_eq!(*line, serde_json::to_string(r).unwrap());
        let unhashed = line.replace(&format!("\"Hash\":\"{}\"", r.hash), "\"Hash\":\"\"");
        assert_eq!(r.hash, chain::hash(&r.previous_hash, &[unhashed.as_bytes()]));
    }
    drop(log);
    let report = verify(&tmp.path().join("audit")).unwrap();
    assert!(report.intact(), "{report:?}");
    assert_eq!((report.files, report.records), (1, 5));
    assert_eq!(report.first_sequence, Some(1));
    assert_eq!(report.last_sequence, Some(5));
    assert_eq!(report.last_hash.as_deref(), Some(stored[4].hash.as_str()));
    assert!(!report.starts_after_retention);

    // A new process continues the chain.
    let log = open(tmp.path());
    let next = log.append(record("2024-03-01T11:00:00.000001Z", "read")).await.unwrap();
    assert_eq!(next.sequence, 6);
    assert_eq!(next.previous_hash, stored[4].hash);
    log.close();
    assert!(log.append(record("2024-03-01T11:00:00.000001Z", "read")).await.is_err(), "closed");
    let report = verify(&tmp.path().join("audit")).unwrap();
    assert!(report.intact());
    assert_eq!(report.records, 6);
}

#[tokio::test]
async fn file_modes() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = TempDir::new("modes");
    let log = open(tmp.path());
    append_n(&log, "2024-03-01T10:00:00.000001Z", 1).await;
    log.flush().unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&tmp.path().join("audit")), 0o700);
    assert_eq!(mode(&audit_file(tmp.path(), "2024-03-01")), 0o600);
    assert_eq!(mode(&tmp.path().join("audit/journal")), 0o600);
}

#[tokio::test]
async fn a_second_writer_is_refused() {
    let tmp = TempDir::new("lock");
    let _log = open(tmp.path());
    assert!(AuditLog::open(config(tmp.path())).is_err());
}

#[tokio::test]
async fn edited_line_is_reported() {
    let tmp = TempDir::new("edit");
    let log = open(tmp.path());
    append_n(&log, "2024-03-01T10:00:00.000001Z", 5).await;
    drop(log);
    let file = audit_file(tmp.path(), "2024-03-01");
    let mut text = lines(&file);
    text[2] = text[2].replace("\"OperationName\":\"op-2\"", "\"OperationName\":\"op-X\"");
    write_lines(&file, &text);
    let link = broken(tmp.path());
    assert_eq!((link.file, link.line, link.sequence, link.kind), (file.clone(), 3, Some(3), BreakKind::HashMismatch));
    let report = verify(&tmp.path().join("audit")).unwrap();
    assert_eq!(report.records, 2);

    // Even a change that keeps the JSON's meaning (reformatting) is an edit.
    let mut text = lines(&file);
    text[2] = text[2].replace("\"OperationName\":\"op-X\"", "\"OperationName\":\"op-2\"");
    write_lines(&file, &text);
    assert!(verify(&tmp.path().join("audit")).unwrap().intact());
    text[2] = text[2].replace("\"OperationName\":", "\"OperationName\": ");
    write_lines(&file, &text);
    assert_eq!(broken(tmp.path()).kind, BreakKind::HashMismatch);

    // Re-hashing the edited line moves the break to the next one.
    let mut text = lines(&file);
    let edited: AuditRecord = serde_json::from_str(&text[2]).unwrap();
    let (head, _) = chain::split_hash(text[2].as_bytes()).unwrap();
    let rehashed = chain::hash(&edited.previous_hash, &[head, b"\"}"]);
    text[2] = format!("{}{rehashed}\"}}", std::str::from_utf8(head).unwrap());
    write_lines(&file, &text);
    let link = broken(tmp.path());
    assert_eq!((link.line, link.kind), (4, BreakKind::PreviousHashMismatch));

    // Garbage.
    text[1] = "not json".into();
    write_lines(&file, &text);
    let link = broken(tmp.path());
    assert_eq!((link.line, link.sequence, link.kind), (2, None, BreakKind::Unparsable));
}

#[tokio::test]
async fn deleted_line_is_reported_at_the_next() {
    let tmp = TempDir::new("delete");
    let log = open(tmp.path());
    append_n(&log, "2024-03-01T10:00:00.000001Z", 5).await;
    drop(log);
    let file = audit_file(tmp.path(), "2024-03-01");
    let mut text = lines(&file);
    text.remove(2);
    write_lines(&file, &text);
    let link = broken(tmp.path());
    assert_eq!((link.line, link.sequence, link.kind), (3, Some(4), BreakKind::SequenceGap));
    assert!(link.reason.contains("record 3 is missing"), "{}", link.reason);

    // Deleting the first line looks like a chain that starts after retention.
    let mut text = lines(&file);
    text.remove(0);
    write_lines(&file, &text);
    let link = broken(tmp.path());
    assert_eq!((link.line, link.kind), (2, BreakKind::SequenceGap));
}

#[tokio::test]
async fn rotation_across_days_and_a_deleted_middle_file() {
    let tmp = TempDir::new("rotate");
    let log = open(tmp.path());
    let mut stored = append_n(&log, "2024-03-01T23:59:59.999999Z", 2).await;
    stored.extend(append_n(&log, "2024-03-02T00:00:00.000000Z", 2).await);
    // A request that started before midnight and finished after a record of the new day: the
    // chain does not go back to the old file.
    stored.push(log.append(record("2024-03-01T23:59:59.999998Z", "late")).await.unwrap());
    stored.extend(append_n(&log, "2024-03-03T08:00:00+02:00", 2).await); // 06:00 UTC
    stored.extend(append_n(&log, "2024-03-03T23:30:00-01:00", 1).await); // 00:30 UTC on the 4th
    drop(log);
    let audit = tmp.path().join("audit");
    assert_eq!(lines(&audit_file(tmp.path(), "2024-03-01")).len(), 2);
    assert_eq!(lines(&audit_file(tmp.path(), "2024-03-02")).len(), 3);
    assert_eq!(lines(&audit_file(tmp.path(), "2024-03-03")).len(), 2);
    assert_eq!(lines(&audit_file(tmp.path(), "2024-03-04")).len(), 1);
    assert_eq!(stored[2].previous_hash, stored[1].hash, "the first record of a day links to the day before");
    let report = verify(&audit).unwrap();
    assert!(report.intact(), "{report:?}");
    assert_eq!((report.files, report.records), (4, 8));

    std::fs::remove_file(audit_file(tmp.path(), "2024-03-02")).unwrap();
    let link = broken(tmp.path());
    assert_eq!(
        (link.file, link.line, link.sequence, link.kind),
        (audit_file(tmp.path(), "2024-03-03"), 1, Some(6), BreakKind::SequenceGap)
    );
}

#[tokio::test]
async fn torn_last_line_is_reported_then_moved_aside() {
    let tmp = TempDir::new("torn");
    let log = open(tmp.path());
    let stored = append_n(&log, "2024-03-01T10:00:00.000001Z", 3).await;
    drop(log);
    let file = audit_file(tmp.path(), "2024-03-01");
    let full = serde_json::to_string(&record("2024-03-01T10:00:00.000001Z", "cut")).unwrap();
    let torn = &full[..full.len() / 2];
    let mut content = std::fs::read(&file).unwrap();
    content.extend_from_slice(torn.as_bytes());
    std::fs::write(&file, &content).unwrap();
    let link = broken(tmp.path());
    assert_eq!((link.file.clone(), link.line, link.kind), (file.clone(), 4, BreakKind::TornFinalLine));

    // The next open moves the torn bytes to the side file and continues from the last record.
    let log = open(tmp.path());
    let side = tmp.path().join("audit/audit-2024-03-01.jsonl.torn");
    assert_eq!(log.recovered_torn_tail(), Some(side.as_path()));
    assert_eq!(std::fs::read_to_string(&side).unwrap(), format!("{torn}\n"));
    let next = log.append(record("2024-03-01T10:00:01.000001Z", "read")).await.unwrap();
    assert_eq!((next.sequence, next.previous_hash.as_str()), (4, stored[2].hash.as_str()));
    drop(log);
    assert!(verify(&tmp.path().join("audit")).unwrap().intact());

    // A torn line that ends an older file is reported as incomplete.
    let mut content = std::fs::read(&file).unwrap();
    content.extend_from_slice(b"{\"Tim");
    std::fs::write(&file, &content).unwrap();
    std::fs::write(audit_file(tmp.path(), "2024-03-02"), "").unwrap();
    let link = broken(tmp.path());
    assert_eq!((link.line, link.kind), (5, BreakKind::IncompleteLine));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_make_one_chain() {
    concurrent_appends(SyncPolicy::Interval(std::time::Duration::from_millis(1))).await;
    concurrent_appends(SyncPolicy::Always).await;
}

async fn concurrent_appends(sync: SyncPolicy) {
    let tmp = TempDir::new("concurrent");
    let log = Arc::new(AuditLog::open(AuditConfig { sync, ..config(tmp.path()) }).unwrap());
    let mut tasks = Vec::new();
    // Half the tasks append (the chain members come back), half record (with `Interval`, their
    // entries are chained later, by the writer thread), so both kinds interleave in one chain.
    for t in 0..40 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for i in 0..50 {
                let time = if i < 25 { "2024-03-01T23:59:59.000000Z" } else { "2024-03-02T00:00:01.000000Z" };
                let r = record(time, &format!("t{t}-{i}"));
                if t % 2 == 0 {
                    out.push(log.append(r).await.unwrap());
                } else {
                    log.record_all(&[r]).await.unwrap();
                }
            }
            out
        }));
    }
    let mut appended = Vec::new();
    for task in tasks {
        appended.extend(task.await.unwrap());
    }
    drop(log);
    let report = verify(&tmp.path().join("audit")).unwrap();
    assert!(report.intact(), "{report:?}");
    assert_eq!(report.records, 2000);
    let stored: Vec<AuditRecord> = ["2024-03-01", "2024-03-02"]
        .iter()
        .flat_map(|day| lines(&audit_file(tmp.path(), day)))
        .map(|line| serde_json::from_str(&line).unwrap())
        .collect();
    assert_eq!(stored.iter().map(|r| r.sequence).collect::<Vec<_>>(), (1..=2000).collect::<Vec<_>>());
    let mut names: Vec<&str> = stored.iter().map(|r| r.operation_name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), 2000, "every record once");
    assert_eq!(appended.len(), 1000);
    for r in &appended {
        assert_eq!(&stored[r.sequence as usize - 1], r, "an appended record is stored as it was returned");
    }
}

/// Threads append while the writer thread moves the journal's lines out without the lock, more
/// lines than the journal holds: appends that find it full wait for the day files, and the chain
/// comes out whole and in order.
#[test]
fn appends_go_on_while_the_writer_thread_writes_the_journal_out() {
    const THREADS: usize = 4;
    const EACH: usize = 5_000;
    let tmp = TempDir::new("lent");
    let log = Arc::new(open(tmp.path()));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
                // Long records, so that the lines overrun the journal several times.
                let padding = "x".repeat(800);
                for i in 0..EACH {
                    let mut r = record("2024-03-01T12:00:00.000000Z", &format!("t{t}-{i}"));
                    r.request_uri = format!("https://localhost/Patient?name={padding}");
                    runtime.block_on(log.record_all(&[r])).unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    drop(log);
    let report = verify(&tmp.path().join("audit")).unwrap();
    assert!(report.intact(), "{report:?}");
    assert_eq!(report.records, (THREADS * EACH) as u64);
    let lines = lines(&audit_file(tmp.path(), "2024-03-01"));
    assert_eq!(lines.len(), THREADS * EACH);
    assert!(lines.len() * lines[0].len() > 3 * crate::journal::SIZE, "the journal filled several times");
}

#[tokio::test]
async fn write_failures_are_errors_until_writes_work_again() {
    for sync in [SyncPolicy::Always, SyncPolicy::Interval(std::time::Duration::from_secs(1))] {
        write_failures(sync).await;
    }
}

async fn write_failures(sync: SyncPolicy) {
    let tmp = TempDir::new("fail");
    // A directory that cannot be created.
    std::fs::write(tmp.path().join("file"), "").unwrap();
    assert!(AuditLog::open(AuditConfig::new(tmp.path().join("file/audit"))).is_err());

    let log = AuditLog::open(AuditConfig { sync, ..config(tmp.path()) }).unwrap();
    append_n(&log, "2024-03-01T10:00:00.000001Z", 2).await;
    log.flush().unwrap();
    let is_enospc = |e: &AuditError| matches!(e, AuditError::Io(io) if io.raw_os_error() == Some(libc::ENOSPC));

    // The disk is full (the day's file is /dev/full).
    let full = audit_file(tmp.path(), "2024-03-02");
    std::os::unix::fs::symlink("/dev/full", &full).unwrap();
    if sync == SyncPolicy::Always {
        for _ in 0..3 {
            let e = log.append(record("2024-03-02T10:00:00.000001Z", "read")).await.unwrap_err();
            assert!(is_enospc(&e), "{e}");
        }
    } else {
        // A record waits in the journal (whose blocks are reserved) until the file takes it.
        log.record_all(&[record("2024-03-02T10:00:00.000001Z", "read")]).await.unwrap();
        let e = log.flush().unwrap_err();
        assert!(is_enospc(&e), "{e}");
        // An append, which writes at once, fails, and the recorded line stays in the journal.
        let e = log.append(record("2024-03-02T10:00:00.000002Z", "read")).await.unwrap_err();
        assert!(is_enospc(&e), "{e}");
    }
    std::fs::remove_file(&full).unwrap();
    if sync == SyncPolicy::Always {
        let r = log.append(record("2024-03-02T10:00:00.000001Z", "read")).await.unwrap();
        assert_eq!(r.sequence, 3, "failed appends take no sequence number");
    }
    log.flush().unwrap();
    assert_eq!(lines(&full).len(), 1);

    // The directory is gone: a new day's file cannot be created.
    let audit = tmp.path().join("audit");
    let moved = tmp.path().join("moved");
    std::fs::rename(&audit, &moved).unwrap();
    if sync == SyncPolicy::Always {
        assert!(log.append(record("2024-03-03T10:00:00.000001Z", "read")).await.is_err());
        assert!(log.append(record("2024-03-03T10:00:01.000001Z", "read")).await.is_err());
    } else {
        log.record_all(&[record("2024-03-03T10:00:00.000001Z", "read")]).await.unwrap();
        assert!(log.flush().is_err());
    }
    std::fs::rename(&moved, &audit).unwrap();
    let r = log.append(record("2024-03-03T10:00:02.000001Z", "read")).await.unwrap();
    assert_eq!(r.sequence, if sync == SyncPolicy::Always { 4 } else { 5 });
    drop(log);
    let report = verify(&audit).unwrap();
    assert!(report.intact(), "{report:?}");
    assert_eq!(report.records, r.sequence);
}

#[tokio::test]
async fn a_failed_write_leaves_no_partial_line() {
    for sync in [SyncPolicy::Always, SyncPolicy::Interval(std::time::Duration::from_secs(1))] {
        failed_write_leaves_no_partial_line(sync).await;
    }
}

async fn failed_write_leaves_no_partial_line(sync: SyncPolicy) {
    let tmp = TempDir::new("partial");
    let log = AuditLog::open(AuditConfig { sync, ..config(tmp.path()) }).unwrap();
    append_n(&log, "2024-03-01T10:00:00.000001Z", 2).await;
    log.flush().unwrap();
    let file = audit_file(tmp.path(), "2024-03-01");
    let before = std::fs::read(&file).unwrap();
    log.files().inject_short_write();
    if sync == SyncPolicy::Always {
        let e = log.append(record("2024-03-01T10:00:01.000001Z", "read")).await.unwrap_err();
        assert!(e.to_string().contains("injected"), "{e}");
        assert_eq!(std::fs::read(&file).unwrap(), before, "the half-written line was cut off");
    } else {
        // The record is in the journal; the move to the day file fails (here or on the writer
        // thread, whichever comes first), is cut back, and is tried again.
        log.record_all(&[record("2024-03-01T10:00:01.000001Z", "read")]).await.unwrap();
        let mut attempts = 0;
        while let Err(e) = log.flush() {
            assert!(e.to_string().contains("injected"), "{e}");
            attempts += 1;
            assert!(attempts < 3, "only the injected write fails");
        }
    }
    let r = log.append(record("2024-03-01T10:00:02.000001Z", "read")).await.unwrap();
    drop(log);
    let report = verify(&tmp.path().join("audit")).unwrap();
    assert!(report.intact(), "{report:?}");
    assert_eq!(report.records, r.sequence);
}

#[tokio::test]
async fn records_a_crash_left_in_the_journal_reach_the_day_files() {
    // The journal holds entries, lines that wait for their `PreviousHash` and `Hash`.
    let entry = |line: &str| line[..line.find(r#","PreviousHash""#).unwrap()].to_owned();
    crash_left_in_the_journal(entry).await;
    // An earlier version's journal held whole chained lines.
    crash_left_in_the_journal(str::to_owned).await;
}

async fn crash_left_in_the_journal(as_journaled: fn(&str) -> String) {
    let tmp = TempDir::new("journal-recovery");
    let log = open(tmp.path());
    let stored = append_n(&log, "2024-03-01T10:00:00.000001Z", 5).await;
    drop(log);
    // As if the process had died with the last three records in the journal only: cut them off
    // the day file and put them in the journal, among zeros and a fragment of an older line.
    let file = audit_file(tmp.path(), "2024-03-01");
    let all = lines(&file);
    write_lines(&file, &all[..2]);
    let mut journal = vec![0u8; crate::journal::SIZE];
    let mut at = 1000;
    let fragment = format!("{}\n", &all[0][40..]);
    journal[at..at + fragment.len()].copy_from_slice(fragment.as_bytes());
    at += fragment.len();
    for line in all[2..].iter().rev() {
        // Out of order in the ring (a wrap); recovery orders them by sequence.
        let line = format!("{}\n", as_journaled(line));
        journal[at..at + line.len()].copy_from_slice(line.as_bytes());
        at += line.len();
    }
    std::fs::write(tmp.path().join("audit/journal"), &journal).unwrap();

    let log = open(tmp.path());
    assert_eq!(log.recovered_from_journal(), 3);
    assert_eq!(lines(&file), all, "the day file is whole again, in chain order");
    let next = log.append(record("2024-03-01T10:00:01.000001Z", "read")).await.unwrap();
    assert_eq!((next.sequence, next.previous_hash.as_str()), (6, stored[4].hash.as_str()));
    drop(log);
    let report = verify(&tmp.path().join("audit")).unwrap();
    assert!(report.intact() && report.records == 6, "{report:?}");
    // Nothing is recovered twice.
    let log = open(tmp.path());
    assert_eq!(log.recovered_from_journal(), 0);
}

/// A broker's batch audits a thousand messages at once: more than the journal holds. It goes to
/// the day file directly, after what the journal held, in chain order.
#[tokio::test]
async fn a_batch_larger_than_the_journal_is_written_whole_in_order() {
    let tmp = TempDir::new("journal-overflow");
    let log = open(tmp.path());
    let first = append_n(&log, "2024-03-01T10:00:00.000001Z", 3).await;
    let mut big = Vec::new();
    let mut bytes = 0;
    while bytes <= 2 * crate::journal::SIZE {
        let mut r = record("2024-03-01T10:00:01.000001Z", "medtech-ingest");
        r.request_uri = format!("mqtt://127.0.0.1:1883/devices/{}/{}", big.len(), "x".repeat(400));
        bytes += r.request_uri.len() + 300;
        big.push(r);
    }
    let count = big.len() as u64;
    let stored = log.append_all(big.clone()).await.unwrap();
    assert_eq!(stored.len() as u64, count);
    assert_eq!(stored[0].previous_hash, first[2].hash);
    assert!(stored.windows(2).all(|w| w[1].sequence == w[0].sequence + 1 && w[1].previous_hash == w[0].hash));
    // Recorded without the chain members, it goes the same way, after what the journal holds.
    log.record_all(&[record("2024-03-01T10:00:01.500000Z", "read")]).await.unwrap();
    log.record_all(&big).await.unwrap();
    let after = log.append(record("2024-03-01T10:00:02.000001Z", "read")).await.unwrap();
    assert_eq!(after.sequence, 3 + 2 * count + 2);
    drop(log);
    let report = verify(&tmp.path().join("audit")).unwrap();
    assert!(report.intact() && report.records == 3 + 2 * count + 2, "{report:?}");
    let lines = lines(&audit_file(tmp.path(), "2024-03-01"));
    let operation = |line: &String| serde_json::from_str::<AuditRecord>(line).unwrap().operation_name;
    assert_eq!(operation(&lines[3 + count as usize]), "read", "the journal's record before the batch");
}

#[tokio::test]
async fn always_sync_and_stdout() {
    let tmp = TempDir::new("always");
    let log = AuditLog::open(AuditConfig { sync: SyncPolicy::Always, stdout: true, ..config(tmp.path()) }).unwrap();
    append_n(&log, "2024-03-01T10:00:00.000001Z", 3).await;
    drop(log);
    assert_eq!(verify(&tmp.path().join("audit")).unwrap().records, 3);
}

#[tokio::test]
async fn invalid_time_generated_is_refused() {
    let tmp = TempDir::new("invalid");
    let log = open(tmp.path());
    let e = log.append(record("yesterday", "read")).await.unwrap_err();
    assert!(matches!(&e, AuditError::Io(io) if io.kind() == std::io::ErrorKind::InvalidInput), "{e}");
    let ok = log.append(record(&timestamp_now(), "read")).await.unwrap();
    assert_eq!(ok.sequence, 1);
}

#[test]
fn timestamps() {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_micros(1_709_287_200_123_456);
    assert_eq!(timestamp(t), "2024-03-01T10:00:00.123456Z");
    let now = timestamp_now();
    assert_eq!(now.len(), 27);
    assert!(parse_time(&now).is_some());
    // The digit-by-digit form agrees with the general formatter, at the edges of each field.
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
    for micros in [0, 1, 951_782_399_999_999, 1_709_287_200_000_001, 4_102_444_799_999_999] {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_micros(micros);
        let expected = time::OffsetDateTime::from(t).format(&format).unwrap();
        assert_eq!(timestamp(t), expected);
    }
    // The day of a `TimeGenerated`: the server's own form read directly, any other RFC 3339
    // parsed, anything else refused.
    let day = |text: &str| crate::day_of_time(text).map(|d| d.to_string());
    assert_eq!(day("2024-03-01T23:59:59.999999Z").as_deref(), Some("2024-03-01"));
    assert_eq!(day("2024-03-01T23:30:00-02:00").as_deref(), Some("2024-03-02"));
    assert_eq!(day("2024-03-01T24:00:00.000000Z"), None);
    assert_eq!(day("2024-02-30T10:00:00.000000Z"), None);
    assert_eq!(day("2024-03-01Tab:00:00.000000Z"), None);
    assert_eq!(day("yesterday"), None);
}

#[tokio::test]
async fn retention_deletes_old_files_and_the_chain_still_verifies() {
    let tmp = TempDir::new("retention");
    let log = AuditLog::open(AuditConfig { retention_days: 2, ..config(tmp.path()) }).unwrap();
    for day in 1..=5 {
        append_n(&log, &format!("2020-01-0{day}T12:00:00.000000Z"), 2).await;
    }
    drop(log);
    let audit = tmp.path().join("audit");
    let mut names: Vec<String> =
        std::fs::read_dir(&audit).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(
        names,
        ["LOCK", "audit-2020-01-03.jsonl", "audit-2020-01-04.jsonl", "audit-2020-01-05.jsonl", "journal"]
    );
    let report = verify(&audit).unwrap();
    assert!(report.intact(), "{report:?}");
    assert!(report.starts_after_retention);
    assert_eq!((report.files, report.records, report.first_sequence), (3, 6, Some(5)));

    // At open, retention counts from today, but keeps the newest file (the chain continues there).
    let log = AuditLog::open(AuditConfig { retention_days: 30, ..config(tmp.path()) }).unwrap();
    let next = log.append(record("2020-01-05T13:00:00.000000Z", "read")).await.unwrap();
    assert_eq!(next.sequence, 11);
    drop(log);
    let report = verify(&audit).unwrap();
    assert!(report.intact(), "{report:?}");
    assert_eq!((report.files, report.records, report.first_sequence), (1, 3, Some(9)));
}

#[tokio::test]
async fn genesis_must_be_sequence_one() {
    let tmp = TempDir::new("genesis");
    let log = open(tmp.path());
    append_n(&log, "2024-03-01T10:00:00.000001Z", 1).await;
    drop(log);
    let file = audit_file(tmp.path(), "2024-03-01");
    let mut text = lines(&file);
    let mut r: AuditRecord = serde_json::from_str(&text[0]).unwrap();
    r.sequence = 7;
    r.hash.clear();
    let unhashed = serde_json::to_string(&r).unwrap();
    r.hash = chain::hash("", &[unhashed.as_bytes()]);
    text[0] = serde_json::to_string(&r).unwrap();
    write_lines(&file, &text);
    assert_eq!(broken(tmp.path()).kind, BreakKind::BadGenesis);
}

#[tokio::test]
async fn query_filters_and_limit() {
    let tmp = TempDir::new("query");
    let log = open(tmp.path());
    let mut app2 = record("2024-03-02T10:00:00.000000Z", "search-type");
    std::sync::Arc::make_mut(&mut app2.caller_identity).insert("appid".into(), json!("app-2"));
    app2.caller_identity_object_id = Some("o-2".into());
    app2.fhir_resource_type = Some("Observation".into());
    app2.result_type = ResultType::Failed;
    app2.status_code = Some(404);
    let mut azp = record("2024-03-03T10:00:00.000000Z", "create");
    azp.caller_identity = json!({"azp": "spa-1"}).as_object().unwrap().clone().into();
    azp.caller_identity_object_id = None;
    azp.result_type = ResultType::Succeeded;
    azp.correlation_id = "c-9".into();
    for r in [
        record("2024-03-01T10:00:00.000000Z", "read"),
        record("2024-03-01T23:00:00.000000Z", "read"),
        app2,
        azp,
        record("2024-03-04T00:00:00.000000Z", "read"),
    ] {
        log.append(r).await.unwrap();
    }
    drop(log);
    let audit = tmp.path().join("audit");
    let seqs = |filter: Filter, limit: usize| -> Vec<u64> {
        query(&audit, &filter, limit).unwrap().iter().map(|r| r.sequence).collect()
    };
    let s = |v: &str| Some(v.to_owned());
    assert_eq!(seqs(Filter::default(), 100), [1, 2, 3, 4, 5]);
    assert_eq!(seqs(Filter::default(), 2), [1, 2], "oldest first, limited");
    assert_eq!(seqs(Filter::default(), 0), [0u64; 0]);
    assert_eq!(seqs(Filter { from: s("2024-03-01T23:00:00Z"), ..Default::default() }, 100), [2, 3, 4, 5]);
    assert_eq!(seqs(Filter { from: s("2024-03-01T23:00:00.000001Z"), ..Default::default() }, 100), [3, 4, 5]);
    assert_eq!(seqs(Filter { to: s("2024-03-04"), ..Default::default() }, 100), [1, 2, 3, 4], "to is exclusive");
    assert_eq!(
        seqs(
            Filter { from: s("2024-03-02T00:00:00+01:00"), to: s("2024-03-03T12:00:00+01:00"), ..Default::default() },
            100
        ),
        [2, 3, 4]
    );
    assert_eq!(seqs(Filter { caller: s("o-1"), ..Default::default() }, 100), [1, 2, 5]);
    assert_eq!(seqs(Filter { caller: s("app-2"), ..Default::default() }, 100), [3]);
    assert_eq!(seqs(Filter { caller: s("spa-1"), ..Default::default() }, 100), [4]);
    assert_eq!(seqs(Filter { caller: s("app-1"), ..Default::default() }, 100), [1, 2, 5]);
    assert_eq!(seqs(Filter { resource_type: s("Observation"), ..Default::default() }, 100), [3]);
    assert_eq!(seqs(Filter { operation: s("read"), ..Default::default() }, 100), [1, 2, 5]);
    assert_eq!(seqs(Filter { operation: s("rea"), ..Default::default() }, 100), [0u64; 0]);
    assert_eq!(seqs(Filter { result: Some(ResultType::Failed), ..Default::default() }, 100), [3]);
    assert_eq!(seqs(Filter { result: Some(ResultType::Started), ..Default::default() }, 100), [1, 2, 5]);
    assert_eq!(seqs(Filter { correlation_id: s("c-9"), ..Default::default() }, 100), [4]);
    assert_eq!(seqs(Filter { operation: s("read"), from: s("2024-03-01T12:00:00Z"), ..Default::default() }, 1), [2]);
    let bad = Filter { from: s("last tuesday"), ..Default::default() };
    assert!(bad.validate().unwrap_err().contains("from"));
    assert!(query(&audit, &bad, 10).is_err());
    assert!(query(&tmp.path().join("none"), &Filter::default(), 10).unwrap().is_empty());

    // Only the files of the range are read: an unreadable earlier file does not matter.
    std::os::unix::fs::symlink("/proc/self/mem", audit.join("audit-2024-02-01.jsonl")).unwrap();
    assert!(query(&audit, &Filter::default(), 100).is_err(), "reading /proc/self/mem at 0 fails");
    assert_eq!(seqs(Filter { from: s("2024-03-04"), ..Default::default() }, 100), [5]);
    assert_eq!(seqs(Filter { from: s("2024-03-01"), ..Default::default() }, 100), [1, 2, 3, 4, 5]);
}

#[test]
fn record_json_uses_azure_names() {
    let mut r = record("2024-03-01T10:00:00.000001Z", "read");
    r.status_code = Some(200);
    let v: Value = serde_json::to_value(&r).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "TimeGenerated",
            "LogCategory",
            "OperationName",
            "ResultType",
            "CorrelationId",
            "RequestUri",
            "FhirResourceType",
            "CallerIdentity",
            "CallerIdentityIssuer",
            "CallerIdentityObjectId",
            "CallerIPAddress",
            "StatusCode",
            "OperationDuration",
            "Location",
            "Properties",
            "Sequence",
            "PreviousHash",
            "Hash"
        ]
    );
    assert_eq!(v["ResultType"], "Started");
}

#[tokio::test]
async fn interval_sync_runs_in_the_background() {
    let tmp = TempDir::new("interval");
    let interval = std::time::Duration::from_millis(20);
    let log = AuditLog::open(AuditConfig { sync: SyncPolicy::Interval(interval), ..config(tmp.path()) }).unwrap();
    append_n(&log, "2024-03-01T10:00:00.000001Z", 3).await;
    log.flush().unwrap();
    assert!(log.files().unsynced(), "written, not yet synced");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while log.files().unsynced() && std::time::Instant::now() < deadline {
        std::thread::sleep(interval);
    }
    assert!(!log.files().unsynced(), "synced by the background thread");
}

/// Once synced, the day file's pages leave the page cache, but for the last mebibyte: the trail
/// is written once and read rarely, and must not crowd out the store's pages.
#[tokio::test]
async fn synced_lines_leave_the_page_cache() {
    // Beside the test binary, on a disk-backed filesystem (a tmpfs keeps every page in memory).
    let dir = std::env::current_exe().unwrap().parent().unwrap().join("audit-page-cache");
    let _ = std::fs::remove_dir_all(&dir);
    let tmp = TempDir(dir);
    std::fs::create_dir_all(tmp.path()).unwrap();
    let interval = std::time::Duration::from_millis(20);
    let log = AuditLog::open(AuditConfig { sync: SyncPolicy::Interval(interval), ..config(tmp.path()) }).unwrap();
    let records: Vec<AuditRecord> =
        (0..20_000).map(|i| record("2024-03-01T10:00:00.000001Z", &format!("op-{i}"))).collect();
    log.append_all(records).await.unwrap();
    log.flush().unwrap();
    let path = audit_file(tmp.path(), "2024-03-01");
    let size = std::fs::metadata(&path).unwrap().len() as usize;
    assert!(size > 10 << 20, "{size} bytes written");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut cached = usize::MAX;
    while std::time::Instant::now() < deadline {
        std::thread::sleep(interval);
        cached = resident_bytes(&path);
        if !log.files().unsynced() && cached <= 3 << 20 {
            break;
        }
    }
    // The last mebibyte or two stay (see `CachedPages`), and a page or so under writeback.
    assert!(cached <= 3 << 20, "{cached} of {size} bytes still cached");
    // The pages come back from disk when the trail is read.
    assert_eq!(verify(&tmp.path().join("audit")).unwrap().records, 20_000);
}

/// How much of `path` is in the page cache (`mincore` over a mapping of it).
fn resident_bytes(path: &Path) -> usize {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path).unwrap();
    let size = file.metadata().unwrap().len() as usize;
    // SAFETY: sysconf only reads its argument.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap();
    let mut resident = vec![0u8; size.div_ceil(page)];
    // SAFETY: a private read-only mapping of `size` bytes of an open file, unmapped before return;
    // `resident` holds one byte per page of it, as mincore requires.
    unsafe {
        let map = libc::mmap(std::ptr::null_mut(), size, libc::PROT_READ, libc::MAP_PRIVATE, file.as_raw_fd(), 0);
        assert_ne!(map, libc::MAP_FAILED);
        assert_eq!(libc::mincore(map, size, resident.as_mut_ptr()), 0);
        libc::munmap(map, size);
    }
    resident.iter().filter(|&&b| b & 1 == 1).count() * page
}

#[test]
fn the_log_is_shareable_and_append_is_send() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>(_: &T) {}
    send_sync::<AuditLog>();
    let tmp = TempDir::new("send");
    let log = open(tmp.path());
    let future = log.append(record("2024-03-01T10:00:00.000001Z", "read"));
    send(&future);
}

#[tokio::test]
async fn records_appended_together_are_adjacent_in_either_sync_mode() {
    for sync in [SyncPolicy::Interval(std::time::Duration::from_secs(1)), SyncPolicy::Always] {
        let tmp = TempDir::new("append-all");
        let log = AuditLog::open(AuditConfig { sync, ..config(tmp.path()) }).unwrap();
        append_n(&log, "2024-03-01T10:00:00.000001Z", 1).await;
        let pair = vec![record("2024-03-01T10:00:01.000001Z", "read"), record("2024-03-01T10:00:02.000001Z", "read")];
        let stored = log.append_all(pair).await.unwrap();
        assert_eq!(stored.iter().map(|r| r.sequence).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(stored[1].previous_hash, stored[0].hash);
        // Across midnight, each record goes to its day's file and the chain still holds.
        let across = vec![record("2024-03-01T23:59:59.999999Z", "read"), record("2024-03-02T00:00:00.000001Z", "read")];
        let stored = log.append_all(across).await.unwrap();
        assert_eq!(stored.iter().map(|r| r.sequence).collect::<Vec<_>>(), [4, 5]);
        // Recorded without the chain members: adjacent too, and across midnight as well.
        let pair = [record("2024-03-02T10:00:01.000001Z", "read-a"), record("2024-03-02T10:00:02.000001Z", "read-b")];
        log.record_all(&pair).await.unwrap();
        let late = [record("2024-03-02T23:59:59.999999Z", "late"), record("2024-03-03T00:00:00.000001Z", "early")];
        log.record_all(&late).await.unwrap();
        log.close();
        assert_eq!(lines(&audit_file(tmp.path(), "2024-03-01")).len(), 4);
        let second = lines(&audit_file(tmp.path(), "2024-03-02"));
        let operations: Vec<String> =
            second.iter().map(|line| serde_json::from_str::<AuditRecord>(line).unwrap().operation_name).collect();
        assert_eq!(operations, ["read", "read-a", "read-b", "late"]);
        assert_eq!(lines(&audit_file(tmp.path(), "2024-03-03")).len(), 1);
        let report = verify(&tmp.path().join("audit")).unwrap();
        assert!(report.intact(), "{report:?}");
        assert_eq!(report.records, 9);
    }
}

//! The audit trail in PostgreSQL, for servers on `--database`: one chain for every replica.
//!
//! `audit_record` holds each record's line exactly as hashed (the line a file would hold) beside
//! the columns that [`PgLog::query`] filters on; `audit_chain` holds the chain's end in one row.
//! Each replica's writer thread takes every record queued while it was busy as one batch and, in
//! one transaction, locks the chain's row (`FOR UPDATE`), chains the batch after it, inserts the
//! rows and moves the end. Replicas therefore take turns per batch, not per record, and the chain
//! has no gaps: a batch that fails rolls back whole and every append in it fails.
//!
//! Durability follows [`SyncPolicy`]: `Always` commits synchronously (the WAL is flushed before an
//! append returns); `Interval` sets `synchronous_commit = off` on the writer's session, so a commit
//! survives the server process at once and a database crash after PostgreSQL's WAL writer delay,
//! as a file line survives the process at once and the machine after the next `fdatasync`.

use std::path::PathBuf;
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls};

use crate::log::{head, Link};
use crate::query::Filter;
use crate::verify::{check, finish, BreakKind, BrokenLink, VerifyReport};
use crate::{chain, AuditError, AuditRecord, SyncPolicy};

/// The most records one transaction writes.
const MAX_BATCH: usize = 1024;

/// How often the writer deletes records past the retention.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// Rows read per round trip by [`verify`].
const VERIFY_PAGE: i64 = 5000;

/// What `fhirside audit verify` names as the "file" of a broken row.
pub const TABLE: &str = "audit_record";

/// Each entry migrates from version `i` to `i + 1`. Forward-only.
const MIGRATIONS: &[&str] = &[
    // 1: the records and the chain's end.
    r#"CREATE TABLE audit_record (
        sequence BIGINT PRIMARY KEY,
        time_generated TIMESTAMPTZ NOT NULL,
        operation_name TEXT NOT NULL,
        result_type TEXT NOT NULL,
        correlation_id TEXT NOT NULL,
        fhir_resource_type TEXT,
        caller_object_id TEXT,
        caller_app_id TEXT,
        line TEXT NOT NULL
    );
    CREATE INDEX audit_record_time ON audit_record (time_generated);
    CREATE INDEX audit_record_correlation ON audit_record (correlation_id);
    CREATE TABLE audit_chain (
        id INT PRIMARY KEY CHECK (id = 1),
        sequence BIGINT NOT NULL,
        hash TEXT NOT NULL
    );
    INSERT INTO audit_chain (id, sequence, hash) VALUES (1, 0, '');"#,
];

/// One advisory lock per schema, so that replicas starting together migrate once.
const LOCK: &str = "SELECT pg_advisory_lock(hashtextextended('fhirside-audit-migrate:' || current_schema(), 0))";
const UNLOCK: &str = "SELECT pg_advisory_unlock(hashtextextended('fhirside-audit-migrate:' || current_schema(), 0))";

const INSERT: &str = "INSERT INTO audit_record (sequence, time_generated, operation_name, result_type, \
    correlation_id, fhir_resource_type, caller_object_id, caller_app_id, line)
    SELECT s, t::timestamptz, o, r, c, f, co, ca, l
    FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[])
        AS u (s, t, o, r, c, f, co, ca, l)";

/// How the PostgreSQL trail writes.
#[derive(Debug, Clone)]
pub struct PostgresAuditConfig {
    /// `postgres://…`, as for the resource store.
    pub url: String,
    /// Records older than this many days are deleted (at open, then hourly).
    pub retention_days: u32,
    /// Also print each record's line to standard output.
    pub stdout: bool,
    pub sync: SyncPolicy,
}

/// The trail being written to PostgreSQL (behind [`crate::AuditLog`]).
pub(crate) struct PgLog {
    sender: mpsc::UnboundedSender<Message>,
    thread: Mutex<Option<JoinHandle<()>>>,
    connect: tokio_postgres::Config,
}

type Reply = oneshot::Sender<Result<Vec<Link>, AuditError>>;

enum Message {
    /// Records to write adjacent in the chain.
    Append {
        records: Vec<Row>,
        reply: Reply,
    },
    Close {
        done: std::sync::mpsc::SyncSender<()>,
    },
}

/// A record ready to chain: its line without the chain members, and its filter columns.
struct Row {
    head: Vec<u8>,
    time_generated: String,
    operation_name: String,
    result_type: String,
    correlation_id: String,
    fhir_resource_type: Option<String>,
    caller_object_id: Option<String>,
    caller_app_id: Option<String>,
}

impl PgLog {
    /// Connects, migrates the tables (under an advisory lock), applies the retention and starts
    /// the writer thread. Blocks until the database answered.
    pub(crate) fn open(config: PostgresAuditConfig) -> Result<PgLog, AuditError> {
        let connect = parse_url(&config.url)?;
        let (sender, receiver) = mpsc::unbounded_channel();
        let (ready, started) = std::sync::mpsc::sync_channel(1);
        let writer_connect = connect.clone();
        let thread = std::thread::Builder::new().name("audit-postgres".into()).spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = ready.send(Err(AuditError::Io(e)));
                    return;
                }
            };
            runtime.block_on(async move {
                let mut writer = Writer { connect: writer_connect, config, client: None, retained: None };
                let opened = async {
                    let client = writer.connection().await?;
                    migrate(client).await?;
                    writer.apply_retention().await
                };
                match opened.await {
                    Ok(()) => {
                        let _ = ready.send(Ok(()));
                        writer.run(receiver).await;
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                    }
                }
            });
        })?;
        match started.recv() {
            Ok(Ok(())) => Ok(PgLog { sender, thread: Mutex::new(Some(thread)), connect }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => Err(AuditError::Corrupt("the audit writer thread stopped while opening".into())),
        }
    }

    /// Chains and commits `records` adjacent in the trail; returns them as stored.
    pub(crate) async fn append_all(&self, records: Vec<AuditRecord>) -> Result<Vec<AuditRecord>, AuditError> {
        let links = self.commit(&records).await?;
        Ok(records.into_iter().zip(links).map(|(record, link)| crate::log::linked(record, link)).collect())
    }

    /// Chains and commits `records` adjacent in the trail.
    pub(crate) async fn record_all(&self, records: &[AuditRecord]) -> Result<(), AuditError> {
        self.commit(records).await.map(drop)
    }

    /// Chains and commits `records` adjacent in the trail, in one transaction; their links.
    async fn commit(&self, records: &[AuditRecord]) -> Result<Vec<Link>, AuditError> {
        let mut rows = Vec::with_capacity(records.len());
        for record in records {
            let (_, head) = head(record)?;
            rows.push(Row {
                head,
                time_generated: record.time_generated.clone(),
                operation_name: record.operation_name.clone(),
                result_type: format!("{:?}", record.result_type),
                correlation_id: record.correlation_id.clone(),
                fhir_resource_type: record.fhir_resource_type.clone(),
                caller_object_id: record.caller_identity_object_id.clone(),
                caller_app_id: app_id(record),
            });
        }
        let (reply, answer) = oneshot::channel();
        self.sender.send(Message::Append { records: rows, reply }).map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    /// Commits what is queued and stops the writer; later appends fail. Blocks until done.
    pub(crate) fn close(&self) {
        let (done, wait) = std::sync::mpsc::sync_channel(1);
        if self.sender.send(Message::Close { done }).is_ok() {
            let _ = wait.recv();
        }
        let handle = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }

    /// The records that match, oldest first, at most `limit`, on a connection of its own.
    pub(crate) async fn query(&self, filter: &Filter, limit: usize) -> Result<Vec<AuditRecord>, AuditError> {
        let (from, to) = filter.range().map_err(AuditError::invalid)?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let client = connect(&self.connect).await?;
        let mut conditions: Vec<String> = Vec::new();
        let mut params: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
        let mut add = |condition: &str, value: Box<dyn ToSql + Sync + Send>| {
            params.push(value);
            conditions.push(condition.replace('$', &format!("${}", params.len())));
        };
        if let Some(from) = from {
            add("time_generated >= $::text::timestamptz", Box::new(crate::format_time(from)));
        }
        if let Some(to) = to {
            add("time_generated < $::text::timestamptz", Box::new(crate::format_time(to)));
        }
        if let Some(operation) = &filter.operation {
            add("operation_name = $", Box::new(operation.clone()));
        }
        if let Some(resource_type) = &filter.resource_type {
            add("fhir_resource_type = $", Box::new(resource_type.clone()));
        }
        if let Some(result) = filter.result {
            add("result_type = $", Box::new(format!("{result:?}")));
        }
        if let Some(correlation_id) = &filter.correlation_id {
            add("correlation_id = $", Box::new(correlation_id.clone()));
        }
        if let Some(caller) = &filter.caller {
            add("(caller_object_id = $ OR caller_app_id = $)", Box::new(caller.clone()));
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        params.push(Box::new(limit));
        let sql = format!(
            "SELECT line FROM audit_record {} ORDER BY sequence LIMIT ${}",
            if conditions.is_empty() { String::new() } else { format!("WHERE {}", conditions.join(" AND ")) },
            params.len()
        );
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect();
        let rows = client.query(&sql, &refs).await.map_err(database)?;
        rows.iter()
            .map(|row| {
                let line: &str = row.get(0);
                serde_json::from_str(line).map_err(|e| AuditError::Corrupt(format!("a stored audit line: {e}")))
            })
            .collect()
    }
}

impl Drop for PgLog {
    fn drop(&mut self) {
        self.close();
    }
}

/// The writer thread's state.
struct Writer {
    connect: tokio_postgres::Config,
    config: PostgresAuditConfig,
    /// `None` before the first batch and after a failure (the next batch reconnects).
    client: Option<Client>,
    /// When the retention last ran.
    retained: Option<Instant>,
}

impl Writer {
    async fn run(&mut self, mut receiver: mpsc::UnboundedReceiver<Message>) {
        let mut batch = Vec::new();
        loop {
            let first = match tokio::time::timeout(RETENTION_EVERY, receiver.recv()).await {
                Ok(Some(first)) => first,
                Ok(None) => return,
                Err(_) => {
                    let _ = self.apply_retention().await;
                    continue;
                }
            };
            batch.push(first);
            let mut records = batch.iter().map(message_len).sum::<usize>();
            while records < MAX_BATCH {
                match receiver.try_recv() {
                    Ok(message) => {
                        records += message_len(&message);
                        batch.push(message);
                    }
                    Err(_) => break,
                }
            }
            let mut close = None;
            let mut appends = Vec::with_capacity(batch.len());
            for message in batch.drain(..) {
                match message {
                    Message::Close { done } if close.is_none() => close = Some(done),
                    Message::Close { .. } => {}
                    Message::Append { reply, .. } if close.is_some() => {
                        let _ = reply.send(Err(closed()));
                    }
                    Message::Append { records, reply } => appends.push((records, reply)),
                }
            }
            if !appends.is_empty() {
                self.commit(appends).await;
            }
            if let Some(done) = close {
                // Appends queued after the close request fail.
                receiver.close();
                while let Ok(message) = receiver.try_recv() {
                    if let Message::Append { reply, .. } = message {
                        let _ = reply.send(Err(closed()));
                    }
                }
                let _ = done.send(());
                return;
            }
            if self.retained.is_none_or(|at| at.elapsed() >= RETENTION_EVERY) {
                let _ = self.apply_retention().await;
            }
        }
    }

    /// Writes one batch and answers its appends.
    async fn commit(&mut self, appends: Vec<(Vec<Row>, Reply)>) {
        let result = match self.connection().await {
            Ok(client) => write_batch(client, &appends).await,
            Err(e) => Err(e),
        };
        match result {
            Ok((links, lines)) => {
                if self.config.stdout {
                    use std::io::Write;
                    let mut out = std::io::stdout().lock();
                    for line in &lines {
                        let _ = out.write_all(line.as_bytes());
                        let _ = out.write_all(b"\n");
                    }
                }
                for ((_, reply), links) in appends.into_iter().zip(links) {
                    let _ = reply.send(Ok(links));
                }
            }
            Err(error) => {
                // The connection may be broken: the next batch opens a new one.
                self.client = None;
                for (_, reply) in appends {
                    let _ = reply.send(Err(error.duplicate()));
                }
            }
        }
    }

    /// The writer's connection, opened (with its session settings) if there is none.
    async fn connection(&mut self) -> Result<&mut Client, AuditError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            let client = connect(&self.connect).await?;
            if matches!(self.config.sync, SyncPolicy::Interval(_)) {
                client.batch_execute("SET synchronous_commit = off").await.map_err(database)?;
            }
            self.client = Some(client);
        }
        Ok(self.client.as_mut().expect("just set"))
    }

    /// Deletes the records older than the retention. The chain's end stays: the oldest remaining
    /// record then links to one that is gone, which `verify` reports as the retention's mark.
    async fn apply_retention(&mut self) -> Result<(), AuditError> {
        self.retained = Some(Instant::now());
        let days = i32::try_from(self.config.retention_days).unwrap_or(i32::MAX);
        let client = self.connection().await?;
        client
            .execute("DELETE FROM audit_record WHERE time_generated < now() - make_interval(days => $1)", &[&days])
            .await
            .map_err(database)?;
        Ok(())
    }
}

fn message_len(message: &Message) -> usize {
    match message {
        Message::Append { records, .. } => records.len(),
        Message::Close { .. } => 0,
    }
}

/// One transaction: lock the chain's end, chain the rows after it, insert them, move the end.
/// Returns each append's links, and the lines written.
async fn write_batch(
    client: &mut Client,
    appends: &[(Vec<Row>, Reply)],
) -> Result<(Vec<Vec<Link>>, Vec<String>), AuditError> {
    let tx = client.transaction().await.map_err(database)?;
    let end =
        tx.query_one("SELECT sequence, hash FROM audit_chain WHERE id = 1 FOR UPDATE", &[]).await.map_err(database)?;
    let mut sequence: i64 = end.get(0);
    let mut hash: String = end.get(1);
    let count: usize = appends.iter().map(|(rows, _)| rows.len()).sum();
    let mut columns = Columns::with_capacity(count);
    let mut links = Vec::with_capacity(appends.len());
    let mut buf = Vec::with_capacity(1024);
    for (rows, _) in appends {
        let mut append_links = Vec::with_capacity(rows.len());
        for row in rows {
            sequence += 1;
            buf.clear();
            let next_hash = chain::append_line(&mut buf, &row.head, sequence as u64, &hash);
            let line = String::from_utf8(buf.clone())
                .map_err(|_| AuditError::invalid("an audit record is not UTF-8".into()))?;
            columns.push(sequence, row, line);
            let previous_hash = std::mem::replace(&mut hash, next_hash.clone());
            append_links.push(Link { sequence: sequence as u64, previous_hash, hash: next_hash });
        }
        links.push(append_links);
    }
    tx.execute(
        INSERT,
        &[
            &columns.sequence,
            &columns.time_generated,
            &columns.operation_name,
            &columns.result_type,
            &columns.correlation_id,
            &columns.fhir_resource_type,
            &columns.caller_object_id,
            &columns.caller_app_id,
            &columns.line,
        ],
    )
    .await
    .map_err(database)?;
    tx.execute("UPDATE audit_chain SET sequence = $1, hash = $2 WHERE id = 1", &[&sequence, &hash])
        .await
        .map_err(database)?;
    tx.commit().await.map_err(database)?;
    Ok((links, columns.line))
}

/// The batch as column arrays, for one `INSERT … SELECT FROM UNNEST`.
struct Columns {
    sequence: Vec<i64>,
    time_generated: Vec<String>,
    operation_name: Vec<String>,
    result_type: Vec<String>,
    correlation_id: Vec<String>,
    fhir_resource_type: Vec<Option<String>>,
    caller_object_id: Vec<Option<String>>,
    caller_app_id: Vec<Option<String>>,
    line: Vec<String>,
}

impl Columns {
    fn with_capacity(n: usize) -> Columns {
        Columns {
            sequence: Vec::with_capacity(n),
            time_generated: Vec::with_capacity(n),
            operation_name: Vec::with_capacity(n),
            result_type: Vec::with_capacity(n),
            correlation_id: Vec::with_capacity(n),
            fhir_resource_type: Vec::with_capacity(n),
            caller_object_id: Vec::with_capacity(n),
            caller_app_id: Vec::with_capacity(n),
            line: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, sequence: i64, row: &Row, line: String) {
        self.sequence.push(sequence);
        self.time_generated.push(row.time_generated.clone());
        self.operation_name.push(row.operation_name.clone());
        self.result_type.push(row.result_type.clone());
        self.correlation_id.push(row.correlation_id.clone());
        self.fhir_resource_type.push(row.fhir_resource_type.clone());
        self.caller_object_id.push(row.caller_object_id.clone());
        self.caller_app_id.push(row.caller_app_id.clone());
        self.line.push(line);
    }
}

/// The `appid` (v1 tokens) or `azp` (v2) claim, which [`Filter::caller`] also matches.
fn app_id(record: &AuditRecord) -> Option<String> {
    ["appid", "azp"].iter().find_map(|claim| record.caller_identity.get(*claim)?.as_str().map(str::to_owned))
}

/// Re-walks the chain stored in the database (`fhirside audit verify --database`), as
/// [`crate::verify`] walks the files; also checks that each row's filter columns agree with its
/// hashed line. Builds its own runtime: call it outside one.
pub fn verify(url: &str) -> Result<VerifyReport, AuditError> {
    let config = parse_url(url)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let client = connect(&config).await?;
        let exists: bool =
            client.query_one("SELECT to_regclass('audit_record') IS NOT NULL", &[]).await.map_err(database)?.get(0);
        if !exists {
            return Err(AuditError::Io(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the database has no audit trail (no audit_record table)",
            )));
        }
        // One "file": the table.
        let mut report = VerifyReport { files: 1, ..VerifyReport::empty() };
        let mut previous: Option<(u64, String)> = None;
        let mut after = i64::MIN;
        let mut number = 0;
        loop {
            let rows = client
                .query(
                    "SELECT sequence, time_generated = (line::json ->> 'TimeGenerated')::timestamptz, \
                     operation_name, result_type, correlation_id, fhir_resource_type, caller_object_id, line \
                     FROM audit_record WHERE sequence > $1 ORDER BY sequence LIMIT $2",
                    &[&after, &VERIFY_PAGE],
                )
                .await
                .map_err(database)?;
            let Some(last) = rows.last() else { break };
            after = last.get(0);
            for row in &rows {
                number += 1;
                let line: &str = row.get(7);
                let broken = |sequence, kind, reason: String| BrokenLink {
                    file: PathBuf::from(TABLE),
                    line: number,
                    sequence,
                    kind,
                    reason,
                };
                let checked = match check(line.as_bytes(), previous.as_ref()) {
                    Ok(checked) => checked,
                    Err((sequence, kind, reason)) => {
                        report.first_broken = Some(broken(sequence, kind, reason));
                        return Ok(finish(report, previous));
                    }
                };
                if let Some(reason) = column_mismatch(row, line) {
                    report.first_broken = Some(broken(Some(checked.sequence), BreakKind::ColumnMismatch, reason));
                    return Ok(finish(report, previous));
                }
                if previous.is_none() {
                    report.first_sequence = Some(checked.sequence);
                    report.starts_after_retention = !checked.previous_hash.is_empty();
                }
                report.records += 1;
                previous = Some((checked.sequence, checked.hash));
            }
        }
        Ok(finish(report, previous))
    })
}

/// Why a row's filter columns disagree with its (verified) line, if they do.
fn column_mismatch(row: &tokio_postgres::Row, line: &str) -> Option<String> {
    let record: AuditRecord = serde_json::from_str(line).ok()?;
    let sequence: i64 = row.get(0);
    let same_time: Option<bool> = row.get(1);
    let differs = |column: &str| Some(format!("the row's {column} column differs from its hashed record"));
    if u64::try_from(sequence).ok() != Some(record.sequence) {
        return differs("sequence");
    }
    if same_time != Some(true) {
        return differs("time_generated");
    }
    if row.get::<_, &str>(2) != record.operation_name {
        return differs("operation_name");
    }
    if row.get::<_, &str>(3) != format!("{:?}", record.result_type) {
        return differs("result_type");
    }
    if row.get::<_, &str>(4) != record.correlation_id {
        return differs("correlation_id");
    }
    if row.get::<_, Option<&str>>(5) != record.fhir_resource_type.as_deref() {
        return differs("fhir_resource_type");
    }
    if row.get::<_, Option<&str>>(6) != record.caller_identity_object_id.as_deref() {
        return differs("caller_object_id");
    }
    None
}

/// Brings the tables to the newest schema, refusing one written by a newer Fhirside.
async fn migrate(client: &mut Client) -> Result<(), AuditError> {
    client.batch_execute(LOCK).await.map_err(database)?;
    let result = migrate_locked(client).await;
    let _ = client.batch_execute(UNLOCK).await;
    result
}

async fn migrate_locked(client: &mut Client) -> Result<(), AuditError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS audit_migration (
                version INT PRIMARY KEY,
                applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
            )",
        )
        .await
        .map_err(database)?;
    let current: i32 =
        client.query_one("SELECT COALESCE(max(version), 0) FROM audit_migration", &[]).await.map_err(database)?.get(0);
    let newest = MIGRATIONS.len() as i32;
    if current > newest {
        return Err(AuditError::Corrupt(format!(
            "the database's audit tables have schema version {current}, newer than this build's {newest}; \
             upgrade Fhirside instead of downgrading it"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let version = i as i32 + 1;
        let tx = client.transaction().await.map_err(database)?;
        tx.batch_execute(sql).await.map_err(database)?;
        tx.execute("INSERT INTO audit_migration (version) VALUES ($1)", &[&version]).await.map_err(database)?;
        tx.commit().await.map_err(database)?;
    }
    Ok(())
}

fn parse_url(url: &str) -> Result<tokio_postgres::Config, AuditError> {
    let mut config: tokio_postgres::Config =
        url.parse().map_err(|e| AuditError::invalid(format!("invalid PostgreSQL URL: {e}")))?;
    if config.get_application_name().is_none() {
        config.application_name("fhirside-audit");
    }
    Ok(config)
}

/// A connection whose I/O runs on the current runtime.
async fn connect(config: &tokio_postgres::Config) -> Result<Client, AuditError> {
    let (client, connection) = config.connect(NoTls).await.map_err(database)?;
    tokio::spawn(async move {
        // Ends when the client is dropped, or with the error its next query reports.
        let _ = connection.await;
    });
    Ok(client)
}

fn database(e: tokio_postgres::Error) -> AuditError {
    AuditError::Io(std::io::Error::other(format!("PostgreSQL: {e}")))
}

fn closed() -> AuditError {
    AuditError::Io(std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the audit log is closed"))
}

#[cfg(test)]
mod tests;

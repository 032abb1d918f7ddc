//! The job table in the embedded store.
//!
//! Job calls are rare (a worker polls about once a second) and must not queue behind resource
//! writes, so they use a connection of their own rather than the writer thread; SQLite serialises
//! the two writers, and the busy timeout covers the writer's short commits. Calls run on a
//! blocking thread so that waiting for that lock never stalls a request's task.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::jobs::{millis, JobEnd, JobFuture, JobQueue, JobRecord, JobStatus, NewJob, MAX_ATTEMPTS};
use crate::model::StoreError;

const COLUMNS: &str = "id, kind, status, definition, checkpoint, result, error, attempts, created, updated";

pub(super) struct SqliteJobs {
    conn: Arc<Mutex<Connection>>,
}

impl SqliteJobs {
    pub(super) fn open(path: &Path) -> Result<SqliteJobs, StoreError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(Duration::from_secs(30))?;
        // One process serves a data directory (its lock guarantees it), so a job still marked
        // running was left by a process that is gone: it resumes from its checkpoint at once
        // instead of after its lease.
        conn.execute(
            "UPDATE job SET status = 'queued', owner = NULL, lease_until = NULL WHERE status = 'running'",
            [],
        )?;
        Ok(SqliteJobs { conn: Arc::new(Mutex::new(conn)) })
    }

    /// Runs `f` with the connection on a blocking thread.
    fn run<'a, T: Send + 'static>(
        &'a self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> JobFuture<'a, T> {
        let conn = self.conn.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || f(&mut conn.lock().unwrap_or_else(|e| e.into_inner())))
                .await
                .map_err(|e| StoreError::Backend(format!("job table call failed: {e}")))?
        })
    }
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, millis)
}

fn record(row: &Row) -> rusqlite::Result<(JobRecord, String)> {
    let status: String = row.get(2)?;
    Ok((
        JobRecord {
            id: row.get(0)?,
            kind: row.get(1)?,
            status: JobStatus::Queued,
            definition: row.get(3)?,
            checkpoint: row.get(4)?,
            result: row.get(5)?,
            error: row.get(6)?,
            attempts: row.get(7)?,
            created: row.get(8)?,
            updated: row.get(9)?,
        },
        status,
    ))
}

fn with_status(found: Option<(JobRecord, String)>) -> Result<Option<JobRecord>, StoreError> {
    found.map(|(job, status)| Ok(JobRecord { status: JobStatus::from_db(&status)?, ..job })).transpose()
}

fn get(conn: &Connection, id: &str) -> Result<Option<JobRecord>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM job WHERE id = ?1");
    with_status(conn.query_row(&sql, [id], record).optional()?)
}

impl JobQueue for SqliteJobs {
    fn enqueue<'a>(&'a self, job: &'a NewJob) -> JobFuture<'a, JobRecord> {
        let job = job.clone();
        self.run(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let now = now();
            let sql = format!(
                "INSERT INTO job (id, kind, status, singleton, definition, created, updated)
                 VALUES (?1, ?2, 'queued', ?3, ?4, ?5, ?5)
                 ON CONFLICT (kind) WHERE singleton AND status IN ('queued', 'running') DO NOTHING
                 RETURNING {COLUMNS}"
            );
            let inserted =
                tx.query_row(&sql, params![job.id, job.kind, job.singleton, job.definition, now], record).optional()?;
            let found = match inserted {
                Some(found) => Some(found),
                None => {
                    let sql = format!(
                        "SELECT {COLUMNS} FROM job WHERE kind = ?1 AND singleton AND status IN ('queued', 'running')"
                    );
                    tx.query_row(&sql, [&job.kind], record).optional()?
                }
            };
            tx.commit()?;
            with_status(found)?.ok_or_else(|| StoreError::Backend("the job was neither queued nor found".into()))
        })
    }

    fn job<'a>(&'a self, id: &'a str) -> JobFuture<'a, Option<JobRecord>> {
        let id = id.to_owned();
        self.run(move |conn| get(conn, &id))
    }

    fn active<'a>(&'a self, kind: &'a str) -> JobFuture<'a, i64> {
        let kind = kind.to_owned();
        self.run(move |conn| {
            Ok(conn.query_row(
                "SELECT count(*) FROM job WHERE kind = ?1 AND status IN ('queued', 'running')",
                [&kind],
                |row| row.get(0),
            )?)
        })
    }

    fn lease<'a>(&'a self, kinds: &'a [&'a str], owner: &'a str, lease: Duration) -> JobFuture<'a, Option<JobRecord>> {
        let kinds: Vec<String> = kinds.iter().map(|k| (*k).to_owned()).collect();
        let owner = owner.to_owned();
        self.run(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let now = now();
            tx.execute(
                "UPDATE job SET status = 'failed', owner = NULL, lease_until = NULL, updated = ?1,
                     error = 'the job stopped its worker ' || attempts || ' times; it was given up'
                 WHERE status = 'running' AND lease_until < ?1 AND attempts >= ?2",
                params![now, MAX_ATTEMPTS],
            )?;
            let sql = format!(
                "UPDATE job SET status = 'running', owner = ?1, lease_until = ?2 + ?3,
                     attempts = attempts + 1, updated = ?2
                 WHERE id = (SELECT id FROM job WHERE kind IN (SELECT value FROM json_each(?4))
                               AND (status = 'queued' OR (status = 'running' AND lease_until < ?2))
                             ORDER BY created, id LIMIT 1)
                 RETURNING {COLUMNS}"
            );
            let kinds = serde_json::to_string(&kinds).unwrap_or_default();
            let leased = tx.query_row(&sql, params![owner, now, millis(lease), kinds], record).optional()?;
            tx.commit()?;
            with_status(leased)
        })
    }

    fn renew<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
        lease: Duration,
        checkpoint: Option<&'a str>,
    ) -> JobFuture<'a, bool> {
        let (id, owner, checkpoint) = (id.to_owned(), owner.to_owned(), checkpoint.map(str::to_owned));
        self.run(move |conn| {
            let now = now();
            let changed = conn.execute(
                "UPDATE job SET lease_until = ?1 + ?2, checkpoint = coalesce(?3, checkpoint), updated = ?1
                 WHERE id = ?4 AND owner = ?5 AND status = 'running'",
                params![now, millis(lease), checkpoint, id, owner],
            )?;
            Ok(changed == 1)
        })
    }

    fn finish<'a>(&'a self, id: &'a str, owner: &'a str, end: JobEnd<'a>) -> JobFuture<'a, bool> {
        let (status, result, error) = match end {
            JobEnd::Completed { result } => ("completed", Some(result.to_owned()), None),
            JobEnd::Failed { error } => ("failed", None, Some(error.to_owned())),
        };
        let (id, owner) = (id.to_owned(), owner.to_owned());
        self.run(move |conn| {
            let changed = conn.execute(
                "UPDATE job SET status = ?1, result = ?2, error = ?3, owner = NULL, lease_until = NULL, updated = ?4
                 WHERE id = ?5 AND owner = ?6 AND status = 'running'",
                params![status, result, error, now(), id, owner],
            )?;
            Ok(changed == 1)
        })
    }

    fn cancel<'a>(&'a self, id: &'a str) -> JobFuture<'a, Option<JobRecord>> {
        let id = id.to_owned();
        self.run(move |conn| {
            conn.execute(
                "UPDATE job SET status = 'cancelled', owner = NULL, lease_until = NULL, updated = ?1
                 WHERE id = ?2 AND status IN ('queued', 'running')",
                params![now(), id],
            )?;
            get(conn, &id)
        })
    }

    fn ended_before<'a>(&'a self, kind: &'a str, age: Duration, limit: u32) -> JobFuture<'a, Vec<JobRecord>> {
        let kind = kind.to_owned();
        self.run(move |conn| {
            let sql = format!(
                "SELECT {COLUMNS} FROM job WHERE kind = ?1 AND status IN ('completed', 'failed', 'cancelled')
                 AND updated < ?2 ORDER BY updated LIMIT ?3"
            );
            let mut statement = conn.prepare(&sql)?;
            let rows = statement
                .query_map(params![kind, now() - millis(age), limit], record)?
                .collect::<Result<Vec<_>, _>>()?;
            rows.into_iter().filter_map(|row| with_status(Some(row)).transpose()).collect()
        })
    }

    fn remove<'a>(&'a self, id: &'a str) -> JobFuture<'a, bool> {
        let id = id.to_owned();
        self.run(move |conn| {
            let removed = conn
                .execute("DELETE FROM job WHERE id = ?1 AND status IN ('completed', 'failed', 'cancelled')", [&id])?;
            Ok(removed > 0)
        })
    }
}

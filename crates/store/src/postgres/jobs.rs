//! The job table on PostgreSQL. Each call is one statement in its own transaction; the lease's
//! `FOR UPDATE SKIP LOCKED` lets replicas poll at the same moment without waiting for one another
//! or leasing the same job. Times come from the database's clock.

use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::Row;

use super::pool::Pool;
use crate::jobs::{millis, JobEnd, JobFuture, JobQueue, JobRecord, JobStatus, NewJob, MAX_ATTEMPTS};
use crate::model::StoreError;

const COLUMNS: &str = "id, kind, status, definition, checkpoint, result, error, attempts, created, updated";

/// The database's clock in milliseconds; `clock_timestamp()` rather than `now()`, which is the
/// transaction's start.
const NOW: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

pub(super) struct PostgresJobs {
    pool: Arc<Pool>,
}

impl PostgresJobs {
    pub(super) fn new(pool: Arc<Pool>) -> PostgresJobs {
        PostgresJobs { pool }
    }
}

fn record(row: &Row) -> Result<JobRecord, StoreError> {
    Ok(JobRecord {
        id: row.try_get(0)?,
        kind: row.try_get(1)?,
        status: JobStatus::from_db(row.try_get(2)?)?,
        definition: row.try_get(3)?,
        checkpoint: row.try_get(4)?,
        result: row.try_get(5)?,
        error: row.try_get(6)?,
        attempts: row.try_get(7)?,
        created: row.try_get(8)?,
        updated: row.try_get(9)?,
    })
}

impl JobQueue for PostgresJobs {
    fn enqueue<'a>(&'a self, job: &'a NewJob) -> JobFuture<'a, JobRecord> {
        Box::pin(async move {
            let mut conn = self.pool.get().await?;
            let insert = format!(
                "INSERT INTO job (id, kind, status, singleton, definition, created, updated)
                 VALUES ($1, $2, 'queued', $3, $4, {NOW}, {NOW})
                 ON CONFLICT (kind) WHERE singleton AND status IN ('queued', 'running') DO NOTHING
                 RETURNING {COLUMNS}"
            );
            let active =
                format!("SELECT {COLUMNS} FROM job WHERE kind = $1 AND singleton AND status IN ('queued', 'running')");
            // The active singleton can end between the conflict and the select: then try again.
            for _ in 0..3 {
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
                    [&job.id, &job.kind, &job.singleton, &job.definition];
                if let Some(row) = conn.query_opt(&insert, &params).await? {
                    return record(&row);
                }
                if let Some(row) = conn.query_opt(&active, &[&job.kind]).await? {
                    return record(&row);
                }
            }
            Err(StoreError::Conflict(format!("a '{}' job keeps starting and ending; try again", job.kind)))
        })
    }

    fn job<'a>(&'a self, id: &'a str) -> JobFuture<'a, Option<JobRecord>> {
        Box::pin(async move {
            let sql = format!("SELECT {COLUMNS} FROM job WHERE id = $1");
            self.pool.get().await?.query_opt(&sql, &[&id]).await?.as_ref().map(record).transpose()
        })
    }

    fn active<'a>(&'a self, kind: &'a str) -> JobFuture<'a, i64> {
        Box::pin(async move {
            let sql = "SELECT count(*) FROM job WHERE kind = $1 AND status IN ('queued', 'running')";
            Ok(self.pool.get().await?.query_one(sql, &[&kind]).await?.try_get(0)?)
        })
    }

    fn lease<'a>(&'a self, kinds: &'a [&'a str], owner: &'a str, lease: Duration) -> JobFuture<'a, Option<JobRecord>> {
        Box::pin(async move {
            let mut conn = self.pool.get().await?;
            let give_up = format!(
                "UPDATE job SET status = 'failed', owner = NULL, lease_until = NULL, updated = {NOW},
                     error = 'the job stopped its worker ' || attempts || ' times; it was given up'
                 WHERE status = 'running' AND lease_until < {NOW} AND attempts >= $1"
            );
            conn.execute(&give_up, &[&MAX_ATTEMPTS]).await?;
            let lease_sql = format!(
                "UPDATE job SET status = 'running', owner = $1, lease_until = {NOW} + $2,
                     attempts = attempts + 1, updated = {NOW}
                 WHERE id = (SELECT id FROM job WHERE kind = ANY($3)
                               AND (status = 'queued' OR (status = 'running' AND lease_until < {NOW}))
                             ORDER BY created, id LIMIT 1
                             FOR UPDATE SKIP LOCKED)
                 RETURNING {COLUMNS}"
            );
            let kinds: Vec<&str> = kinds.to_vec();
            let row = conn.query_opt(&lease_sql, &[&owner, &millis(lease), &kinds]).await?;
            row.as_ref().map(record).transpose()
        })
    }

    fn renew<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
        lease: Duration,
        checkpoint: Option<&'a str>,
    ) -> JobFuture<'a, bool> {
        Box::pin(async move {
            let sql = format!(
                "UPDATE job SET lease_until = {NOW} + $1, checkpoint = coalesce($2, checkpoint), updated = {NOW}
                 WHERE id = $3 AND owner = $4 AND status = 'running'"
            );
            let changed = self.pool.get().await?.execute(&sql, &[&millis(lease), &checkpoint, &id, &owner]).await?;
            Ok(changed == 1)
        })
    }

    fn finish<'a>(&'a self, id: &'a str, owner: &'a str, end: JobEnd<'a>) -> JobFuture<'a, bool> {
        Box::pin(async move {
            let (status, result, error) = match end {
                JobEnd::Completed { result } => ("completed", Some(result), None),
                JobEnd::Failed { error } => ("failed", None, Some(error)),
            };
            let sql = format!(
                "UPDATE job SET status = $1, result = $2, error = $3, owner = NULL, lease_until = NULL,
                     updated = {NOW}
                 WHERE id = $4 AND owner = $5 AND status = 'running'"
            );
            let changed = self.pool.get().await?.execute(&sql, &[&status, &result, &error, &id, &owner]).await?;
            Ok(changed == 1)
        })
    }

    fn cancel<'a>(&'a self, id: &'a str) -> JobFuture<'a, Option<JobRecord>> {
        Box::pin(async move {
            let mut conn = self.pool.get().await?;
            let sql = format!(
                "UPDATE job SET status = 'cancelled', owner = NULL, lease_until = NULL, updated = {NOW}
                 WHERE id = $1 AND status IN ('queued', 'running')"
            );
            conn.execute(&sql, &[&id]).await?;
            let sql = format!("SELECT {COLUMNS} FROM job WHERE id = $1");
            conn.query_opt(&sql, &[&id]).await?.as_ref().map(record).transpose()
        })
    }

    fn ended_before<'a>(&'a self, kind: &'a str, age: Duration, limit: u32) -> JobFuture<'a, Vec<JobRecord>> {
        Box::pin(async move {
            let sql = format!(
                "SELECT {COLUMNS} FROM job WHERE kind = $1 AND status IN ('completed', 'failed', 'cancelled')
                 AND updated < {NOW} - $2 ORDER BY updated LIMIT $3"
            );
            let rows = self.pool.get().await?.query(&sql, &[&kind, &millis(age), &i64::from(limit)]).await?;
            rows.iter().map(record).collect()
        })
    }

    fn remove<'a>(&'a self, id: &'a str) -> JobFuture<'a, bool> {
        Box::pin(async move {
            let sql = "DELETE FROM job WHERE id = $1 AND status IN ('completed', 'failed', 'cancelled')";
            Ok(self.pool.get().await?.execute(sql, &[&id]).await? > 0)
        })
    }
}

//! The job table: background work that any replica can run.
//!
//! A job is a row with a kind (`reindex`, later `export`, `import`, relay deliveries…), a JSON
//! definition and a status. A worker *leases* a queued job for a while; while it works it renews
//! the lease and records a checkpoint (JSON the job's handler understands), and it ends the job
//! with a result or an error. A worker that dies stops renewing: once its lease has run out,
//! another worker leases the job again and resumes from the last checkpoint. A job's handler must
//! therefore be idempotent from a checkpoint on (reindexing a batch twice writes the same rows).
//!
//! Every call that changes a running job names the worker (`owner`) and succeeds only while that
//! worker holds the lease, so a worker whose lease was taken over, or whose job was cancelled,
//! finds out at its next renewal and stops.
//!
//! On PostgreSQL the lease is `SELECT … FOR UPDATE SKIP LOCKED`, so replicas polling together each
//! get a different job and never wait for each other; times come from the database's clock, so
//! replicas' clocks need not agree. The embedded store runs the same protocol in its own file.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::model::StoreError;

#[cfg(test)]
pub(crate) mod tests;

/// A boxed future of a job-table call.
pub type JobFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Leases taken over this many times are given up: the job failed, probably by crashing its
/// worker, and retrying it forever would crash them all in turn.
pub const MAX_ATTEMPTS: i64 = 5;

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    Queued,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub(crate) fn from_db(value: &str) -> Result<JobStatus, StoreError> {
        Ok(match value {
            "queued" => JobStatus::Queued,
            "running" => JobStatus::Running,
            "completed" => JobStatus::Completed,
            "failed" => JobStatus::Failed,
            "cancelled" => JobStatus::Cancelled,
            other => return Err(StoreError::Backend(format!("unknown job status '{other}' in the job table"))),
        })
    }

    /// True once the job will not run again.
    pub fn is_final(self) -> bool {
        matches!(self, JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled)
    }
}

/// A job to queue.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Chosen by the caller (the server's ids are UUIDs); the status URL carries it.
    pub id: String,
    pub kind: String,
    /// JSON the kind's handler understands.
    pub definition: String,
    /// At most one queued or running job of this kind: queuing another returns the active one.
    pub singleton: bool,
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    pub id: String,
    pub kind: String,
    pub status: JobStatus,
    pub definition: String,
    /// The handler's last checkpoint (JSON), from which a resumed job continues.
    pub checkpoint: Option<String>,
    /// The handler's result (JSON) once completed.
    pub result: Option<String>,
    pub error: Option<String>,
    /// How many times the job has been leased.
    pub attempts: i64,
    /// Milliseconds since the epoch.
    pub created: i64,
    pub updated: i64,
}

/// How a job ended.
#[derive(Debug, Clone, Copy)]
pub enum JobEnd<'a> {
    Completed { result: &'a str },
    Failed { error: &'a str },
}

/// The job table of a store.
pub trait JobQueue: Send + Sync {
    /// Queues a job. For a singleton kind with a job already queued or running, returns that one.
    fn enqueue<'a>(&'a self, job: &'a NewJob) -> JobFuture<'a, JobRecord>;

    /// A job by id.
    fn job<'a>(&'a self, id: &'a str) -> JobFuture<'a, Option<JobRecord>>;

    /// How many jobs of `kind` are queued or running (what a limit on concurrent exports counts).
    fn active<'a>(&'a self, kind: &'a str) -> JobFuture<'a, i64>;

    /// Leases the oldest job of one of `kinds` that is queued, or running with an expired lease,
    /// to `owner` for `lease`. Expired jobs that used up [`MAX_ATTEMPTS`] are failed instead.
    fn lease<'a>(&'a self, kinds: &'a [&'a str], owner: &'a str, lease: Duration) -> JobFuture<'a, Option<JobRecord>>;

    /// Extends `owner`'s lease and, when given, records a checkpoint. `false` when the lease is no
    /// longer `owner`'s (it expired and was taken over, or the job was cancelled).
    fn renew<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
        lease: Duration,
        checkpoint: Option<&'a str>,
    ) -> JobFuture<'a, bool>;

    /// Ends a job `owner` holds. `false` when the lease is no longer `owner`'s.
    fn finish<'a>(&'a self, id: &'a str, owner: &'a str, end: JobEnd<'a>) -> JobFuture<'a, bool>;

    /// Cancels a queued or running job (its worker stops at its next renewal) and returns it;
    /// a job that already ended is returned unchanged. `None` for an unknown id.
    fn cancel<'a>(&'a self, id: &'a str) -> JobFuture<'a, Option<JobRecord>>;

    /// Jobs of `kind` that ended (completed, failed or cancelled) more than `age` ago, oldest
    /// first, at most `limit`: what expires.
    fn ended_before<'a>(&'a self, kind: &'a str, age: Duration, limit: u32) -> JobFuture<'a, Vec<JobRecord>>;

    /// Forgets a job that has ended (a bulk export its client is done with); `false` when there
    /// is no such ended job.
    fn remove<'a>(&'a self, id: &'a str) -> JobFuture<'a, bool>;
}

pub(crate) fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

//! [`AuditLog`]: the trail a server writes, in daily files or in PostgreSQL.

use std::path::{Path, PathBuf};

use crate::log::FileLog;
use crate::postgres::{PgLog, PostgresAuditConfig};
use crate::query::Filter;
use crate::{AuditConfig, AuditError, AuditRecord};

/// The audit trail being written: share it in an `Arc`.
///
/// On the embedded store it is the day files of a directory ([`AuditLog::open`]); on PostgreSQL,
/// tables that every replica appends to, one chain for all ([`AuditLog::open_postgres`]). Either
/// way an append returns once its records are in the trail, or an error.
pub struct AuditLog {
    sink: Sink,
}

enum Sink {
    Files { log: FileLog, dir: PathBuf },
    Postgres(PgLog),
}

impl AuditLog {
    /// Opens the audit directory (see [`crate`] for the files).
    pub fn open(config: AuditConfig) -> Result<AuditLog, AuditError> {
        let dir = config.dir.clone();
        Ok(AuditLog { sink: Sink::Files { log: FileLog::open(config)?, dir } })
    }

    /// Connects to PostgreSQL and creates or migrates the audit tables (see [`crate::postgres`]).
    /// Blocks until the database answered.
    pub fn open_postgres(config: PostgresAuditConfig) -> Result<AuditLog, AuditError> {
        Ok(AuditLog { sink: Sink::Postgres(PgLog::open(config)?) })
    }

    /// Chains and writes a record; returns it as stored (with `sequence`, `previous_hash`, `hash`).
    /// An error means the record is not in the trail (disk full, permissions, database down,
    /// closed log, or a `TimeGenerated` that is not RFC 3339): the caller fails the request.
    pub async fn append(&self, record: AuditRecord) -> Result<AuditRecord, AuditError> {
        match &self.sink {
            Sink::Files { log, .. } => log.append(record).await,
            Sink::Postgres(log) => {
                let mut stored = log.append_all(vec![record]).await?;
                stored.pop().ok_or_else(|| AuditError::Corrupt("the database stored no record".into()))
            }
        }
    }

    /// Chains and writes several records one after the other, adjacent in the trail, in one write
    /// (one transaction on PostgreSQL). An error means not all of them are in the trail.
    pub async fn append_all(&self, records: Vec<AuditRecord>) -> Result<Vec<AuditRecord>, AuditError> {
        match &self.sink {
            Sink::Files { log, .. } => log.append_all(records).await,
            Sink::Postgres(log) => log.append_all(records).await,
        }
    }

    /// Writes several records one after the other, adjacent in the trail, without returning
    /// their chain members: the way to audit a request. In the day files, the writer thread
    /// chains them when it moves them out of the journal; an error means not all of them are in
    /// the trail.
    pub async fn record_all(&self, records: &[AuditRecord]) -> Result<(), AuditError> {
        match &self.sink {
            Sink::Files { log, .. } => log.record_all(records).await,
            Sink::Postgres(log) => log.record_all(records).await,
        }
    }

    /// The records that match, oldest first (in chain order), at most `limit`.
    pub async fn query(&self, filter: Filter, limit: usize) -> Result<Vec<AuditRecord>, AuditError> {
        match &self.sink {
            Sink::Files { log, dir } => {
                // Lines still in the journal (appended within the last ten milliseconds) first.
                log.flush_pending()?;
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || crate::query(&dir, &filter, limit))
                    .await
                    .map_err(|e| AuditError::Io(std::io::Error::other(e.to_string())))?
            }
            Sink::Postgres(log) => log.query(&filter, limit).await,
        }
    }

    /// Writes what is queued and stops; later appends fail. Blocks until done.
    pub fn close(&self) {
        match &self.sink {
            Sink::Files { log, .. } => log.close(),
            Sink::Postgres(log) => log.close(),
        }
    }

    /// Where the trail is, for the start-up banner.
    pub fn describe(&self) -> String {
        match &self.sink {
            Sink::Files { dir, .. } => dir.display().to_string(),
            Sink::Postgres(_) => {
                format!("PostgreSQL, table {} (one chain for every replica)", crate::postgres::TABLE)
            }
        }
    }

    /// The side file that received a torn final line found at open (after a crash), if any: worth a
    /// warning in the server's log.
    pub fn recovered_torn_tail(&self) -> Option<&Path> {
        match &self.sink {
            Sink::Files { log, .. } => log.recovered_torn_tail(),
            Sink::Postgres(_) => None,
        }
    }

    /// How many records the open moved from the journal to the day files: records of requests
    /// answered just before a crash, which had not reached the day files yet.
    pub fn recovered_from_journal(&self) -> usize {
        match &self.sink {
            Sink::Files { log, .. } => log.recovered(),
            Sink::Postgres(_) => 0,
        }
    }

    /// Moves the records appended so far to where readers of the trail find them (the day files;
    /// on PostgreSQL they are there already). Appends do it on their own within ten milliseconds.
    pub fn flush(&self) -> Result<(), AuditError> {
        match &self.sink {
            Sink::Files { log, .. } => log.flush_pending(),
            Sink::Postgres(_) => Ok(()),
        }
    }

    /// Tests: the file writer, to inject failures.
    #[cfg(test)]
    pub(crate) fn files(&self) -> &FileLog {
        match &self.sink {
            Sink::Files { log, .. } => log,
            Sink::Postgres(_) => panic!("not a file log"),
        }
    }
}

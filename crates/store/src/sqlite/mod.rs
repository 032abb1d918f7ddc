//! The embedded backend: one SQLite database file in WAL mode.
//!
//! Writes are serialised through one writer thread ([`writer`]) that commits them in groups, so
//! that many concurrent requests share one fsync while each still gets its own outcome. Reads use a
//! pool of read-only connections and run on the calling thread: a lookup by primary key on a warm
//! page cache takes microseconds, less than handing it to another thread would. Current versions
//! read by id are also kept in a bounded in-memory cache ([`cache`]).

mod cache;
mod checkpoint;
mod export;
mod jobs;
mod read;
mod schema;
#[cfg(test)]
mod tests;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};

use rusqlite::{Connection, OpenFlags};

pub use export::{ExportCounts, RawVersion, SqliteExport};

use crate::index::IndexEntries;
use crate::model::{ImportLine, StoreError, WriteOp, WriteResult};
use crate::query::{HistoryQuery, HistoryScope, Page, SearchQuery, SnapshotQuery};
use crate::seal::Seal;
use crate::{Outcome, ResourceStore, StoreFuture, StoredVersion};

/// The writer's page cache, in KiB (negative, as `PRAGMA cache_size` takes it). The writer touches
/// index pages all over the file: 64 MiB keeps them from being spilled to the WAL before commit.
const WRITER_CACHE_KIB: i64 = -65_536;

/// The writer's page cache while it builds indexes, in KiB. SQLite's sorter sorts runs of up to
/// the cache's size and merges them; with `PRAGMA threads` and temporary files it sorts each run on
/// a helper thread while the writer goes on scanning the table, but the last run of an index on
/// the writer thread. Small runs leave the writer little of the sorting: Synthea-120's deferred
/// indexes built in 1.55-1.6 s with 2 MiB runs, 1.7 s with 4 MiB, 1.8 s with 16 MiB and 2.2-2.3 s
/// in one run in memory (the same database, rebuilt five ways, twice each); 512 KiB and 1 MiB
/// runs were no faster than 2 MiB.
const BUILD_CACHE_KIB: i64 = -2_048;

/// Switches the connection between building indexes (`true`) and its ordinary work. SQLite's sorter
/// uses no helper thread while temporary files are kept in memory (`temp_store = MEMORY`), which
/// ordinary work wants for its savepoint journals; the runs of a build go to temporary files,
/// which stay in the page cache. Only outside a transaction.
fn sort_in_files(conn: &Connection, building: bool) -> rusqlite::Result<()> {
    if building {
        conn.pragma_update(None, "temp_store", "FILE")?;
        conn.pragma_update(None, "cache_size", BUILD_CACHE_KIB)
    } else {
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        conn.pragma_update(None, "cache_size", WRITER_CACHE_KIB)
    }
}

/// WAL pages past which a commit checkpoints on the writer thread (see `SqliteStore::open`).
const WAL_AUTOCHECKPOINT_PAGES: i64 = 8192;

/// Settings of the embedded store.
#[derive(Debug, Clone)]
pub struct SqliteConfig {
    /// The database file.
    pub path: PathBuf,
    /// Most writes committed in one transaction.
    pub max_group: usize,
    /// Memory for cached current versions (read-by-id); 0 turns the cache off.
    pub cache_bytes: usize,
    /// Encryption at rest of bodies: the installation's keyring, when it has one.
    pub seal: Seal,
}

impl SqliteConfig {
    pub fn in_dir(data_dir: &Path) -> SqliteConfig {
        SqliteConfig {
            path: data_dir.join("fhirside.db"),
            max_group: 256,
            cache_bytes: 64 << 20,
            seal: Seal::default(),
        }
    }
}

/// The SQLite implementation of [`ResourceStore`].
pub struct SqliteStore {
    path: PathBuf,
    readers: Mutex<Vec<Connection>>,
    writer: Mutex<Option<mpsc::Sender<writer::Job>>>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    cache: Arc<cache::VersionCache>,
    checkpointer: Mutex<Option<checkpoint::Checkpointer>>,
    jobs: jobs::SqliteJobs,
    seal: Seal,
}

impl SqliteStore {
    /// Opens (creating and migrating if needed) the database and starts its writer thread.
    pub fn open(config: &SqliteConfig) -> Result<SqliteStore, StoreError> {
        let mut conn = Connection::open(&config.path)?;
        // WAL lets readers proceed while the writer commits; FULL makes every acknowledged commit
        // survive power loss, and group commit keeps that affordable.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "OFF")?;
        // Checkpoints mostly run on their own thread (below), concurrently with commits. Those can
        // fall behind a steady stream of writes, and only a checkpoint that catches up lets the WAL
        // start over; the writer's own checkpoint, at a higher threshold than SQLite's default,
        // guarantees that and keeps the WAL bounded.
        conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        // Building an index sorts its rows: with a helper thread (see `sort_in_files`), migrations
        // and the indexes below are built faster.
        conn.pragma_update(None, "threads", 2i64)?;
        sort_in_files(&conn, true)?;
        schema::migrate(&mut conn)?;
        // A bulk load that a crash interrupted left its deferred indexes unbuilt.
        schema::build_deferred(&conn)?;
        sort_in_files(&conn, false)?;
        let jobs = jobs::SqliteJobs::open(&config.path)?;
        let checkpointer = checkpoint::spawn(&config.path)?;
        let cache = Arc::new(cache::VersionCache::new(config.cache_bytes));
        let (sender, thread) = writer::spawn(conn, config.max_group, cache.clone(), config.seal.clone())?;
        Ok(SqliteStore {
            path: config.path.clone(),
            readers: Mutex::new(Vec::new()),
            writer: Mutex::new(Some(sender)),
            writer_thread: Mutex::new(Some(thread)),
            cache,
            checkpointer: Mutex::new(Some(checkpointer)),
            jobs,
            seal: config.seal.clone(),
        })
    }

    /// Stops accepting writes, lets the writer finish what it has, and waits for it.
    pub fn close(&self) {
        self.writer.lock().unwrap().take();
        if let Some(thread) = self.writer_thread.lock().unwrap().take() {
            let _ = thread.join();
        }
        if let Some(checkpointer) = self.checkpointer.lock().unwrap().take() {
            checkpointer.stop();
        }
    }

    fn submit(&self, job: writer::Job) -> Result<(), StoreError> {
        let sender = self.writer.lock().unwrap().clone().ok_or(StoreError::Unavailable)?;
        sender.send(job).map_err(|_| StoreError::Unavailable)
    }

    fn with_reader<T>(&self, f: impl FnOnce(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let pooled = self.readers.lock().unwrap().pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => open_reader(&self.path)?,
        };
        let result = f(&conn);
        self.readers.lock().unwrap().push(conn);
        result
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.close();
    }
}

fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    conn.pragma_update(None, "cache_size", -16_384i64)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

impl ResourceStore for SqliteStore {
    fn read<'a>(&'a self, resource_type: &'a str, id: &'a str) -> StoreFuture<'a, Option<StoredVersion>> {
        let result = match self.cache.get(resource_type, id) {
            // The charge is the same as for a database read: it must not depend on cache state.
            Ok(version) => Ok(Outcome { cost: read::cost_of(std::slice::from_ref(&version)), value: Some(version) }),
            Err(miss) => {
                self.with_reader(|conn| read::current(conn, &self.seal, resource_type, id)).inspect(|outcome| {
                    if let Some(version) = &outcome.value {
                        self.cache.fill(miss, version);
                    }
                })
            }
        };
        Box::pin(std::future::ready(result))
    }

    fn vread<'a>(
        &'a self,
        resource_type: &'a str,
        id: &'a str,
        version: u64,
    ) -> StoreFuture<'a, Option<StoredVersion>> {
        let result = self.with_reader(|conn| read::version(conn, &self.seal, resource_type, id, version));
        Box::pin(std::future::ready(result))
    }

    fn write(&self, op: WriteOp) -> StoreFuture<'_, WriteResult> {
        self.queue(|reply| writer::Job::Write { op: Box::new(op), reply })
    }

    fn transaction(&self, work: crate::TransactionWork) -> StoreFuture<'_, ()> {
        self.queue(|reply| writer::Job::Transaction { work, durable: true, reply })
    }

    /// The batch commits without waiting for the disk (`synchronous = NORMAL` for its group, when
    /// no other job in the group needs more): the job's checkpoint, committed after it with a sync
    /// of the same write-ahead log, makes it durable. An import commits tens of megabytes a second,
    /// and syncing each batch kept the writer waiting on the disk.
    fn import_batch(&self, lines: Vec<ImportLine>) -> StoreFuture<'_, Vec<Result<WriteResult, StoreError>>> {
        let (work, results) = crate::import_work(lines);
        let stored = self.queue(|reply| writer::Job::Transaction { work, durable: false, reply });
        Box::pin(async move {
            let cost = stored.await?.cost;
            Ok(Outcome { value: results.take()?, cost })
        })
    }

    fn history<'a>(&'a self, scope: &'a HistoryScope, query: &'a HistoryQuery) -> StoreFuture<'a, Page> {
        let result = self.with_reader(|conn| read::history(conn, &self.seal, scope, query));
        Box::pin(std::future::ready(result))
    }

    fn everything<'a>(
        &'a self,
        compartment: &'a str,
        id: Option<&'a str>,
        query: &'a crate::EverythingQuery,
    ) -> StoreFuture<'a, Page> {
        let result = self.with_reader(|conn| read::everything(conn, &self.seal, compartment, id, query));
        Box::pin(std::future::ready(result))
    }

    fn include<'a>(&'a self, query: &'a crate::IncludeQuery) -> StoreFuture<'a, Vec<StoredVersion>> {
        let result = self.with_reader(|conn| read::include(conn, &self.seal, query));
        Box::pin(std::future::ready(result))
    }

    fn search<'a>(&'a self, query: &'a SearchQuery) -> StoreFuture<'a, Page> {
        let result = self.with_reader(|conn| {
            let (page, cost) = read::search(conn, &self.seal, query)?;
            Ok(Outcome { value: page, cost })
        });
        Box::pin(std::future::ready(result))
    }

    fn live_after(&self, after: i64, limit: u32) -> StoreFuture<'_, Vec<(i64, StoredVersion)>> {
        let result = self.with_reader(|conn| {
            let rows = read::live_after(conn, &self.seal, after, limit)?;
            let cost = read::cost_of(&rows.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>());
            Ok(Outcome { value: rows, cost })
        });
        Box::pin(std::future::ready(result))
    }

    fn snapshot<'a>(&'a self, query: &'a SnapshotQuery) -> StoreFuture<'a, Vec<(i64, StoredVersion)>> {
        let result = self.with_reader(|conn| {
            let rows = read::snapshot(conn, &self.seal, query)?;
            let cost = read::cost_of(&rows.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>());
            Ok(Outcome { value: rows, cost })
        });
        Box::pin(std::future::ready(result))
    }

    fn reindex(&self, rows: Vec<(i64, IndexEntries)>) -> StoreFuture<'_, ()> {
        self.maintain(writer::Maintenance::Reindex(rows))
    }

    fn setting<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<String>> {
        let result =
            self.with_reader(|conn| Ok(Outcome { value: read::setting(conn, key)?, cost: Default::default() }));
        Box::pin(std::future::ready(result))
    }

    fn set_setting(&self, key: &str, value: &str) -> StoreFuture<'_, ()> {
        self.maintain(writer::Maintenance::SetSetting { key: key.to_owned(), value: value.to_owned() })
    }

    fn begin_bulk_load(&self) -> StoreFuture<'_, bool> {
        self.queue(|reply| writer::Job::BulkLoad { step: writer::BulkLoadStep::Begin, reply })
    }

    fn end_bulk_load(&self, deferred: bool) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            if deferred {
                for create in schema::DEFERRABLE_INDEXES {
                    self.queue(|reply| writer::Job::BulkLoad { step: writer::BulkLoadStep::Build(create), reply })
                        .await?;
                }
                self.queue(|reply| writer::Job::BulkLoad { step: writer::BulkLoadStep::Finish, reply }).await?;
            }
            Ok(Outcome { value: (), cost: Default::default() })
        })
    }

    fn jobs(&self) -> &dyn crate::JobQueue {
        &self.jobs
    }
}

impl SqliteStore {
    fn maintain(&self, work: writer::Maintenance) -> StoreFuture<'_, ()> {
        self.queue(|reply| writer::Job::Maintain { work, reply })
    }

    /// Hands a job to the writer and answers with its result after the group commit. The job is
    /// queued now, not on first poll: a caller that starts several writes before awaiting any of
    /// them gets them into one group commit.
    fn queue<T: Send + 'static>(
        &self,
        job: impl FnOnce(tokio::sync::oneshot::Sender<Result<Outcome<T>, StoreError>>) -> writer::Job,
    ) -> StoreFuture<'_, T> {
        let (reply, receive) = tokio::sync::oneshot::channel();
        let queued = self.submit(job(reply));
        Box::pin(async move {
            queued?;
            receive.await.map_err(|_| StoreError::Unavailable)?
        })
    }
}

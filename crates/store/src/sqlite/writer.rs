//! The writer thread and group commit.
//!
//! All writes funnel into one thread holding the only read-write connection. It takes whatever
//! jobs are waiting (up to `max_group`), runs each inside its own SAVEPOINT within one transaction,
//! commits once, and only then answers the callers. A job that fails rolls back to its savepoint
//! without disturbing the others; if the commit itself fails, every job in the group is told so,
//! and none of them was acknowledged. One fsync is thus shared by a whole group, which is what lets
//! `synchronous = FULL` keep up with many concurrent clients.

use std::sync::{mpsc, Arc};

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::index::IndexEntries;
use crate::model::{Cost, Outcome, StoreError, StoredVersion, WriteOp, WriteResult};
use crate::query::SearchQuery;
use crate::seal::Seal;
use crate::write::{self, NewVersion, Rows};
use crate::{Transaction, TransactionWork};

use super::cache::VersionCache;
use super::{read, schema};

pub(super) enum Job {
    Write {
        op: Box<WriteOp>,
        reply: oneshot::Sender<Result<Outcome<WriteResult>, StoreError>>,
    },
    Transaction {
        work: TransactionWork,
        /// Whether the commit must reach the disk before the reply; see [`Job::durable`].
        durable: bool,
        reply: oneshot::Sender<Result<Outcome<()>, StoreError>>,
    },
    Maintain {
        work: Maintenance,
        reply: oneshot::Sender<Result<Outcome<()>, StoreError>>,
    },
    /// A step of a bulk load; see [`BulkLoadStep`].
    BulkLoad {
        step: BulkLoadStep,
        reply: oneshot::Sender<Result<Outcome<bool>, StoreError>>,
    },
}

impl Job {
    /// Whether the job's commit must reach the disk before it is answered. Not for an import's
    /// batches and a bulk load's index builds: the job's checkpoint and its end, durable commits
    /// to the same write-ahead log, make them durable after the fact, and a crash before then
    /// loses only work that is done again (the import resumes from its checkpoint; missing
    /// deferred indexes are built at open).
    fn durable(&self) -> bool {
        match self {
            Job::Transaction { durable, .. } => *durable,
            Job::BulkLoad { step: BulkLoadStep::Build(_), .. } => false,
            _ => true,
        }
    }
}

/// The steps of a bulk load, each in a group of its own.
pub(super) enum BulkLoadStep {
    /// Defers the value indexes if it can; answers whether they are deferred.
    Begin,
    /// Builds one deferred index (its `CREATE INDEX IF NOT EXISTS`). One at a time, so that other
    /// writers (a job renewing its lease) get their turn between them.
    Build(&'static str),
    /// The indexes are built: the writer checkpoints at the ordinary threshold again.
    Finish,
}

/// Writes that are not resource versions.
pub(super) enum Maintenance {
    /// New index rows for current versions, by row id.
    Reindex(Vec<(i64, IndexEntries)>),
    SetSetting {
        key: String,
        value: String,
    },
}

/// A job's result, waiting for the group's commit before it is sent.
enum Done {
    Write(oneshot::Sender<Result<Outcome<WriteResult>, StoreError>>, Result<Outcome<WriteResult>, StoreError>),
    Transaction(oneshot::Sender<Result<Outcome<()>, StoreError>>, Result<Outcome<()>, StoreError>),
    BulkLoad(oneshot::Sender<Result<Outcome<bool>, StoreError>>, Result<Outcome<bool>, StoreError>),
}

/// How a job's writes are kept apart from the rest of its group's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Isolation {
    /// In a savepoint: a failure undoes only this job.
    Savepoint,
    /// The only job of its group: a failure rolls back the group's transaction.
    Alone,
}

impl Done {
    fn failed(&self) -> bool {
        match self {
            Done::Write(_, result) => result.is_err(),
            Done::Transaction(_, result) => result.is_err(),
            Done::BulkLoad(_, result) => result.is_err(),
        }
    }

    fn send(self) {
        match self {
            Done::Write(reply, result) => drop(reply.send(result)),
            Done::Transaction(reply, result) => drop(reply.send(result)),
            Done::BulkLoad(reply, result) => drop(reply.send(result)),
        }
    }

    /// Replaces the result with a failure of the whole group.
    fn fail(self, message: &str) {
        match self {
            Done::Write(reply, _) => drop(reply.send(Err(StoreError::Backend(message.to_owned())))),
            Done::Transaction(reply, _) => drop(reply.send(Err(StoreError::Backend(message.to_owned())))),
            Done::BulkLoad(reply, _) => drop(reply.send(Err(StoreError::Backend(message.to_owned())))),
        }
    }
}

/// WAL pages (of 4 KiB) past which a commit of a bulk load checkpoints on the writer thread.
const BULK_LOAD_WAL_AUTOCHECKPOINT_PAGES: i64 = 65_536;

pub(super) fn spawn(
    conn: Connection,
    max_group: usize,
    cache: Arc<VersionCache>,
    seal: Seal,
) -> Result<(mpsc::Sender<Job>, std::thread::JoinHandle<()>), StoreError> {
    let last_updated: i64 =
        conn.query_row("SELECT coalesce(max(last_updated), 0) FROM resource", [], |row| row.get(0))?;
    let (sender, receiver) = mpsc::channel::<Job>();
    let thread = std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || {
            let mut writer = Writer { conn, last_updated, cache, touched: Vec::new(), seal, synchronous_full: true };
            writer.run(receiver, max_group.max(1));
        })
        .map_err(|e| StoreError::Backend(e.to_string()))?;
    Ok((sender, thread))
}

struct Writer {
    conn: Connection,
    /// The newest `lastUpdated` handed out: each version gets a strictly later one, so history
    /// order is total even when the clock stands still or steps back.
    last_updated: i64,
    /// The read cache, and the resources this group wrote, to invalidate once it has committed.
    cache: Arc<VersionCache>,
    touched: Vec<(String, String)>,
    /// Seals bodies on their way in and opens them for the reads writes depend on.
    seal: Seal,
    /// Whether `synchronous` is FULL (as the store opens it) rather than NORMAL.
    synchronous_full: bool,
}

impl Writer {
    fn run(&mut self, receiver: mpsc::Receiver<Job>, max_group: usize) {
        let mut group = Vec::with_capacity(max_group);
        while let Ok(first) = receiver.recv() {
            group.push(first);
            while group.len() < max_group {
                match receiver.try_recv() {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
            self.commit_group(&mut group);
        }
    }

    fn commit_group(&mut self, group: &mut Vec<Job>) {
        let builds = group.iter().any(|job| matches!(job, Job::BulkLoad { step: BulkLoadStep::Build(_), .. }));
        // Outside the transaction, where SQLite allows the change (`super::sort_in_files`). These
        // settings only make the build, or ordinary writes, faster: should one not take, the work
        // is done all the same.
        if builds {
            let _ = super::sort_in_files(&self.conn, true);
        }
        self.commit_group_of(group);
        if builds {
            let _ = super::sort_in_files(&self.conn, false);
        }
    }

    fn commit_group_of(&mut self, group: &mut Vec<Job>) {
        let durable = group.iter().any(Job::durable);
        if let Err(error) = self.synchronous(durable).and_then(|()| self.conn.execute_batch("BEGIN IMMEDIATE")) {
            let message = error.to_string();
            for job in group.drain(..) {
                match job {
                    Job::Write { reply, .. } => drop(reply.send(Err(StoreError::Backend(message.clone())))),
                    Job::Transaction { reply, .. } | Job::Maintain { reply, .. } => {
                        drop(reply.send(Err(StoreError::Backend(message.clone()))))
                    }
                    Job::BulkLoad { reply, .. } => drop(reply.send(Err(StoreError::Backend(message.clone())))),
                }
            }
            return;
        }
        let clock_before = self.last_updated;
        // A job alone in its group needs no savepoint: if it fails, the whole transaction is rolled
        // back instead. That spares the savepoint journal on every write of a lone client.
        let isolation = if group.len() == 1 { Isolation::Alone } else { Isolation::Savepoint };
        let done: Vec<Done> = group
            .drain(..)
            .map(|job| match job {
                Job::Write { op, reply } => {
                    Done::Write(reply, self.isolated(isolation, |writer, cost| write::apply(writer, *op, cost)))
                }
                Job::Transaction { work, reply, .. } => Done::Transaction(
                    reply,
                    self.isolated(isolation, |writer, cost| work(&mut InTransaction { writer, cost })),
                ),
                Job::Maintain { work, reply } => Done::Transaction(
                    reply,
                    self.isolated(isolation, |writer, cost| match work {
                        Maintenance::Reindex(rows) => writer.reindex(rows, cost),
                        Maintenance::SetSetting { key, value } => writer.set_setting(&key, &value),
                    }),
                ),
                Job::BulkLoad { step, reply } => Done::BulkLoad(
                    reply,
                    self.isolated(isolation, |writer, _| match step {
                        BulkLoadStep::Begin => writer.begin_bulk_load(),
                        BulkLoadStep::Build(create) => {
                            writer.conn.execute_batch(create)?;
                            Ok(true)
                        }
                        BulkLoadStep::Finish => {
                            writer.conn.pragma_update(None, "wal_autocheckpoint", super::WAL_AUTOCHECKPOINT_PAGES)?;
                            Ok(false)
                        }
                    }),
                ),
            })
            .collect();
        let lone_failure = isolation == Isolation::Alone && done.iter().any(Done::failed);
        let committed = if lone_failure {
            self.conn.execute_batch("ROLLBACK").map(|()| self.last_updated = clock_before)
        } else {
            self.conn.execute_batch("COMMIT")
        };
        // Before anyone hears back: a client must read its own write, never a cached older version.
        self.cache.invalidate(self.touched.iter().map(|(t, id)| (t.as_str(), id.as_str())));
        self.touched.clear();
        if let Err(error) = committed {
            let _ = self.conn.execute_batch("ROLLBACK");
            self.last_updated = clock_before;
            let message = error.to_string();
            done.into_iter().for_each(|d| d.fail(&message));
            return;
        }
        done.into_iter().for_each(Done::send);
    }

    /// Sets `synchronous` to FULL for a group that must reach the disk, NORMAL for one that may
    /// wait for a later sync ([`Job::durable`]), when it is not that already. A durable group
    /// fails if FULL cannot be set; a relaxed one goes on at FULL if NORMAL cannot, only slower.
    fn synchronous(&mut self, full: bool) -> rusqlite::Result<()> {
        if self.synchronous_full != full {
            match self.conn.pragma_update(None, "synchronous", if full { "FULL" } else { "NORMAL" }) {
                Ok(()) => self.synchronous_full = full,
                Err(error) if full => return Err(error),
                Err(_) => {}
            }
        }
        Ok(())
    }

    fn isolated<T>(
        &mut self,
        isolation: Isolation,
        f: impl FnOnce(&mut Writer, &mut Cost) -> Result<T, StoreError>,
    ) -> Result<Outcome<T>, StoreError> {
        match isolation {
            Isolation::Savepoint => self.in_savepoint(f),
            Isolation::Alone => {
                let mut cost = Cost::default();
                f(self, &mut cost).map(|value| Outcome { value, cost })
            }
        }
    }

    /// Runs one job inside its own savepoint, so that its failure undoes only its own writes.
    fn in_savepoint<T>(
        &mut self,
        f: impl FnOnce(&mut Writer, &mut Cost) -> Result<T, StoreError>,
    ) -> Result<Outcome<T>, StoreError> {
        self.conn.execute_batch("SAVEPOINT op")?;
        let mut cost = Cost::default();
        match f(self, &mut cost) {
            Ok(value) => {
                self.conn.execute_batch("RELEASE op")?;
                Ok(Outcome { value, cost })
            }
            Err(error) => {
                self.conn.execute_batch("ROLLBACK TO op; RELEASE op")?;
                Err(error)
            }
        }
    }

    fn tick(&mut self) -> i64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0);
        self.last_updated = now.max(self.last_updated + 1);
        self.last_updated
    }

    /// Ends the current version at `valid_to` and drops its index rows.
    fn retire_row(&self, rid: i64, valid_to: i64) -> Result<(), StoreError> {
        self.conn.prepare_cached("UPDATE resource SET valid_to = ?2 WHERE rid = ?1")?.execute((rid, valid_to))?;
        self.drop_index(rid)
    }

    fn drop_index(&self, rid: i64) -> Result<(), StoreError> {
        for table in schema::INDEX_TABLES {
            self.conn.prepare_cached(&format!("DELETE FROM {table} WHERE rid = ?1"))?.execute([rid])?;
        }
        self.conn.prepare_cached("DELETE FROM text_index WHERE rowid = ?1")?.execute([rid])?;
        Ok(())
    }

    fn write_index(&self, rid: i64, index: &IndexEntries) -> Result<(), StoreError> {
        let mut n = 0;
        self.insert_rows(rid, 0, index, &mut n)?;
        for (group, composite) in index.composites.iter().enumerate() {
            self.insert_rows(rid, group as i64 + 1, composite, &mut n)?;
        }
        if !index.compartments.is_empty() {
            let mut stmt = self
                .conn
                .prepare_cached("INSERT INTO compartment_index (rid, compartment, n, id) VALUES (?1, ?2, ?3, ?4)")?;
            for (c, n) in index.compartments.iter().zip(1i64..) {
                stmt.execute((rid, &c.compartment, n, &c.id))?;
            }
        }
        if let Some(text) = &index.text {
            self.conn
                .prepare_cached("INSERT INTO text_index (rowid, narrative, content) VALUES (?1, ?2, ?3)")?
                .execute((rid, &text.narrative, &text.content))?;
        }
        Ok(())
    }

    /// The parameter rows of `index` (not its composites, compartments or text) in group `grp`,
    /// numbered on from `n`.
    fn insert_rows(&self, rid: i64, grp: i64, index: &IndexEntries, n: &mut i64) -> Result<(), StoreError> {
        if !index.tokens.is_empty() {
            let mut stmt = self.conn.prepare_cached(
                "INSERT INTO token_index (rid, param, grp, n, system, code) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for t in &index.tokens {
                stmt.execute((rid, &t.param, grp, next(n), &t.system, &t.code))?;
            }
        }
        if !index.dates.is_empty() {
            let mut stmt = self.conn.prepare_cached(
                "INSERT INTO date_index (rid, param, grp, n, low, high) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for d in &index.dates {
                stmt.execute((rid, &d.param, grp, next(n), d.low, d.high))?;
            }
        }
        if !index.references.is_empty() {
            let mut stmt = self.conn.prepare_cached(
                "INSERT INTO reference_index (rid, param, grp, n, target_type, target_id, url) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for r in &index.references {
                stmt.execute((rid, &r.param, grp, next(n), &r.target_type, &r.target_id, &r.url))?;
            }
        }
        if !index.strings.is_empty() {
            let mut stmt = self.conn.prepare_cached(
                "INSERT INTO string_index (rid, param, grp, n, normalized, exact) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for s in &index.strings {
                stmt.execute((rid, &s.param, grp, next(n), &s.normalized, &s.exact))?;
            }
        }
        if !index.numbers.is_empty() {
            let mut stmt = self
                .conn
                .prepare_cached("INSERT INTO number_index (rid, param, grp, n, value) VALUES (?1, ?2, ?3, ?4, ?5)")?;
            for v in &index.numbers {
                stmt.execute((rid, &v.param, grp, next(n), v.value))?;
            }
        }
        if !index.quantities.is_empty() {
            let mut stmt = self.conn.prepare_cached(
                "INSERT INTO quantity_index (rid, param, grp, n, system, code, low, high, \
                 canonical_unit, canonical_low, canonical_high) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?;
            for q in &index.quantities {
                let canonical = q.canonical.as_ref();
                stmt.execute((
                    rid,
                    &q.param,
                    grp,
                    next(n),
                    &q.system,
                    &q.code,
                    q.low,
                    q.high,
                    canonical.map(|c| &c.unit),
                    canonical.map(|c| c.low),
                    canonical.map(|c| c.high),
                ))?;
            }
        }
        if !index.uris.is_empty() {
            let mut stmt = self
                .conn
                .prepare_cached("INSERT INTO uri_index (rid, param, grp, n, uri) VALUES (?1, ?2, ?3, ?4, ?5)")?;
            for u in &index.uris {
                stmt.execute((rid, &u.param, grp, next(n), &u.uri))?;
            }
        }
        Ok(())
    }

    /// Replaces the index rows of versions that are still current; a version replaced since its
    /// rows were computed keeps the newer version's rows.
    fn reindex(&mut self, rows: Vec<(i64, IndexEntries)>, cost: &mut Cost) -> Result<(), StoreError> {
        for (rid, index) in rows {
            let current: bool = self
                .conn
                .prepare_cached("SELECT count(*) FROM resource WHERE rid = ?1 AND valid_to IS NULL AND deleted = 0")?
                .query_row([rid], |row| row.get::<_, i64>(0))?
                == 1;
            if current {
                self.drop_index(rid)?;
                self.write_index(rid, &index)?;
                cost.rows_written += index.len() as u64;
            }
        }
        Ok(())
    }

    /// Defers the value indexes if the store holds no resources, or if another load already did.
    /// Concurrent loads are not counted: the first to end builds the indexes, and the others go on
    /// at the ordinary pace.
    fn begin_bulk_load(&mut self) -> Result<bool, StoreError> {
        let deferred: bool = self.conn.query_row(
            "SELECT NOT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'token_index_value')",
            [],
            |row| row.get(0),
        )?;
        if deferred {
            return Ok(true);
        }
        let empty: bool = self.conn.query_row("SELECT NOT EXISTS (SELECT 1 FROM resource)", [], |row| row.get(0))?;
        if empty {
            schema::defer(&self.conn)?;
            // A load commits tens of MB a second: at the ordinary threshold many commits would
            // checkpoint on this thread, the load's bottleneck, while the checkpoint thread can
            // copy the pages on another core (about 5 % of an import's time). The WAL may grow to
            // this size meanwhile (256 MiB), and keeps that size on disk until the store closes.
            self.conn.pragma_update(None, "wal_autocheckpoint", BULK_LOAD_WAL_AUTOCHECKPOINT_PAGES)?;
        }
        Ok(empty)
    }

    fn set_setting(&mut self, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO setting (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = ?2",
            )?
            .execute((key, value))?;
        Ok(())
    }

    fn insert(&mut self, v: &NewVersion<'_>) -> Result<i64, StoreError> {
        let body = v.body.map(|body| self.seal.seal(v.resource_type, v.id, v.version, body));
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO resource (type, id, version, last_updated, valid_to, deleted, method, body) \
             VALUES (?1, ?2, ?3, ?4, NULL, ?5, ?6, ?7)",
        )?;
        stmt.execute((
            v.resource_type,
            v.id,
            v.version as i64,
            v.last_updated,
            v.body.is_none() as i64,
            v.method.to_db(),
            body.as_deref(),
        ))?;
        self.touched.push((v.resource_type.to_owned(), v.id.to_owned()));
        Ok(self.conn.last_insert_rowid())
    }
}

/// The next `n` of a version's parameter rows: with `rid`, `param` and `grp` it makes each row's
/// key unique, including for values a resource repeats. One count serves every table.
fn next(last: &mut i64) -> i64 {
    *last += 1;
    *last
}

/// The writer is the only one: it needs no locks, and its clock is already strictly increasing
/// across the store.
impl Rows for Writer {
    type Key = i64;

    fn lock_resource(&mut self, _resource_type: &str, _id: &str) -> Result<(), StoreError> {
        Ok(())
    }

    fn lock_query(&mut self, _resource_type: &str, _query: &SearchQuery) -> Result<(), StoreError> {
        Ok(())
    }

    fn current(&mut self, resource_type: &str, id: &str) -> Result<Option<(i64, StoredVersion)>, StoreError> {
        read::current_with_rid(&self.conn, &self.seal, resource_type, id)
    }

    fn matches(&mut self, query: &SearchQuery, limit: u32) -> Result<(Vec<StoredVersion>, bool), StoreError> {
        let (rows, more) = read::search_rids(&self.conn, &self.seal, query, limit)?;
        Ok((rows.into_iter().map(|(_, version)| version).collect(), more))
    }

    fn next_timestamp(&mut self, _previous: Option<i64>) -> Result<i64, StoreError> {
        Ok(self.tick())
    }

    fn retire(&mut self, rid: &i64, valid_to: i64) -> Result<(), StoreError> {
        self.retire_row(*rid, valid_to)
    }

    fn insert_version(
        &mut self,
        version: &NewVersion<'_>,
        _previous: Option<&i64>,
        index: &IndexEntries,
    ) -> Result<(), StoreError> {
        let rid = self.insert(version)?;
        self.write_index(rid, index)
    }
}

/// The [`Transaction`] handed to transaction work: the writer, inside the work's savepoint.
struct InTransaction<'w> {
    writer: &'w mut Writer,
    cost: &'w mut Cost,
}

impl Transaction for InTransaction<'_> {
    fn search(&mut self, query: &SearchQuery, limit: u32) -> Result<Vec<StoredVersion>, StoreError> {
        let (rows, _) = read::search_rows(&self.writer.conn, &self.writer.seal, query, limit)?;
        self.cost.rows_read += rows.len().max(1) as u64;
        Ok(rows.into_iter().map(|row| row.version).collect())
    }

    fn read(&mut self, resource_type: &str, id: &str) -> Result<Option<StoredVersion>, StoreError> {
        let outcome = read::current(&self.writer.conn, &self.writer.seal, resource_type, id)?;
        self.cost.add(outcome.cost);
        Ok(outcome.value)
    }

    fn vread(&mut self, resource_type: &str, id: &str, version: u64) -> Result<Option<StoredVersion>, StoreError> {
        let outcome = read::version(&self.writer.conn, &self.writer.seal, resource_type, id, version)?;
        self.cost.add(outcome.cost);
        Ok(outcome.value)
    }

    fn write(&mut self, op: WriteOp) -> Result<WriteResult, StoreError> {
        write::apply(&mut *self.writer, op, self.cost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only an import's batches and a bulk load's index builds may leave their sync to a later
    /// durable commit; a group with any other job in it is synced (`Writer::synchronous`).
    #[test]
    fn only_import_batches_and_index_builds_wait_for_a_later_sync() {
        let transaction =
            |durable| Job::Transaction { work: Box::new(|_| Ok(())), durable, reply: oneshot::channel().0 };
        let step = |step| Job::BulkLoad { step, reply: oneshot::channel().0 };
        assert!(!transaction(false).durable());
        assert!(!step(BulkLoadStep::Build("CREATE INDEX …")).durable());
        assert!(transaction(true).durable());
        assert!(step(BulkLoadStep::Begin).durable(), "it drops indexes");
        assert!(step(BulkLoadStep::Finish).durable(), "it makes the builds before it durable");
        let write = Job::Maintain {
            work: Maintenance::SetSetting { key: "k".into(), value: "v".into() },
            reply: oneshot::channel().0,
        };
        assert!(write.durable());
    }
}

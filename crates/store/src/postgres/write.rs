//! Writes on PostgreSQL: one database transaction per write or transaction work, on a blocking
//! thread so that the synchronous [`Transaction`] interface can drive an async connection.
//!
//! Several replicas write concurrently, so what a write depends on is read under a transaction-
//! scoped advisory lock: one per resource (`If-Match`, the next version number) and one per
//! conditional query (two racing conditional creates: the second waits, then finds the first's
//! resource). READ COMMITTED gives each statement a fresh snapshot, so the reads after a lock see
//! everything committed by the transaction that held it. A deadlock between two transactions that
//! lock the same resources in opposite orders is detected by PostgreSQL; the loser fails with a
//! conflict (`StoreError::Conflict`) and nothing of it is written.
//!
//! Every statement on a version names its shard key with its row id ([`RowKey`]), so that on Citus
//! it runs on the one shard that holds the version and its index rows. A new resource is placed by
//! its compartments (`crate::shard`) and recorded in `resource_key`; its later versions stay where
//! its first went.

use tokio::runtime::Handle;
use tokio_postgres::types::ToSql;

use super::index_rows::{self, IndexArrays};
use super::pool::Conn;
use super::read;
use crate::index::IndexEntries;
use crate::model::{Cost, StoreError, StoredVersion, WriteOp, WriteResult};
use crate::query::SearchQuery;
use crate::shard;
use crate::write::{self, NewVersion, Rows};
use crate::Transaction;

/// A transaction in progress on one connection, driven from a blocking thread.
pub(super) struct SyncTx<'c> {
    pub(super) conn: &'c mut Conn,
    pub(super) handle: &'c Handle,
    /// The database's clock when the last lock was granted (microseconds since the epoch).
    now: i64,
    /// The newest `lastUpdated` this transaction handed out.
    last: i64,
}

impl<'c> SyncTx<'c> {
    pub(super) fn new(conn: &'c mut Conn, handle: &'c Handle) -> SyncTx<'c> {
        SyncTx { conn, handle, now: 0, last: 0 }
    }

    /// Takes a transaction-scoped advisory lock on `key` and reads the database clock once it is
    /// granted: a version stamped with that time is later than whatever the lock's previous holder
    /// wrote.
    fn lock(&mut self, key: &str) -> Result<(), StoreError> {
        let row = self.handle.block_on(self.conn.query_one(
            "SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint \
             FROM (SELECT pg_advisory_xact_lock(hashtextextended($1, 0))) AS locked",
            &[&key],
        ))?;
        self.now = row.try_get(0)?;
        Ok(())
    }

    /// Writes the index rows of the version at `key`.
    fn index_rows(&mut self, key: &RowKey, index: &IndexEntries) -> Result<(), StoreError> {
        let arrays = IndexArrays::of(index);
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&key.shard_key, &key.rid];
        params.extend(arrays.params());
        self.handle.block_on(self.conn.execute(index_rows::insert_index(), &params))?;
        Ok(())
    }

    /// New index rows for the versions (by row id) that are still current and live. The versions
    /// are found by row id first (one query over every shard), then each is locked and rewritten
    /// on its shard.
    fn replace_index(&mut self, rows: Vec<(i64, IndexEntries)>, cost: &mut Cost) -> Result<(), StoreError> {
        let rids: Vec<i64> = rows.iter().map(|(rid, _)| *rid).collect();
        let located = self.handle.block_on(self.conn.query(
            "SELECT rid, shard_key FROM resource WHERE rid = ANY($1) AND valid_to IS NULL AND deleted = 0",
            &[&rids],
        ))?;
        let mut shards = std::collections::HashMap::with_capacity(located.len());
        for row in &located {
            shards.insert(row.try_get::<_, i64>(0)?, row.try_get::<_, String>(1)?);
        }
        for (rid, index) in rows {
            let Some(shard_key) = shards.remove(&rid) else { continue };
            let key = RowKey { shard_key, rid };
            let current = self.handle.block_on(self.conn.query_opt(
                "SELECT 1 FROM resource WHERE shard_key = $1 AND rid = $2 AND valid_to IS NULL AND deleted = 0 \
                 FOR UPDATE",
                &[&key.shard_key, &key.rid],
            ))?;
            if current.is_some() {
                self.handle.block_on(self.conn.execute(index_rows::DROP_INDEX, &[&key.shard_key, &key.rid]))?;
                self.index_rows(&key, &index)?;
                cost.rows_written += index.len() as u64;
            }
        }
        Ok(())
    }
}

/// The key of the advisory lock that serialises the writes to one resource.
pub(super) fn resource_lock(resource_type: &str, id: &str) -> String {
    format!("resource:{resource_type}/{id}")
}

/// Where a version's row is: its shard key and row id (unique by itself; the shard key routes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RowKey {
    pub shard_key: String,
    pub rid: i64,
}

impl Rows for SyncTx<'_> {
    type Key = RowKey;

    fn lock_resource(&mut self, resource_type: &str, id: &str) -> Result<(), StoreError> {
        self.lock(&resource_lock(resource_type, id))
    }

    fn lock_query(&mut self, resource_type: &str, query: &SearchQuery) -> Result<(), StoreError> {
        // The query's debug form is deterministic for one build, which is what replicas run.
        self.lock(&format!("query:{resource_type}:{query:?}"))
    }

    fn current(&mut self, resource_type: &str, id: &str) -> Result<Option<(RowKey, StoredVersion)>, StoreError> {
        let found = self.handle.block_on(read::current_located(self.conn, resource_type, id))?;
        Ok(found.map(|(shard_key, rid, version)| (RowKey { shard_key, rid }, version)))
    }

    fn matches(&mut self, query: &SearchQuery, limit: u32) -> Result<(Vec<StoredVersion>, bool), StoreError> {
        let (rows, more) = self.handle.block_on(read::search_rows(self.conn, query, limit))?;
        Ok((rows.into_iter().map(|row| row.version).collect(), more))
    }

    fn next_timestamp(&mut self, previous: Option<i64>) -> Result<i64, StoreError> {
        if self.now == 0 {
            // No lock taken yet (creates take none): the transaction's first write reads the clock.
            let row = self.handle.block_on(
                self.conn.query_one("SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint", &[]),
            )?;
            self.now = row.try_get(0)?;
        }
        let floor = previous.map_or(self.last, |p| p.max(self.last));
        self.last = self.now.max(floor + 1);
        Ok(self.last)
    }

    fn retire(&mut self, key: &RowKey, valid_to: i64) -> Result<(), StoreError> {
        self.handle.block_on(self.conn.execute(index_rows::RETIRE, &[&key.shard_key, &key.rid, &valid_to]))?;
        Ok(())
    }

    fn insert_version(
        &mut self,
        v: &NewVersion<'_>,
        previous: Option<&RowKey>,
        index: &IndexEntries,
    ) -> Result<(), StoreError> {
        let (shard_key, sql) = match previous {
            Some(previous) => (previous.shard_key.clone(), index_rows::insert_version()),
            None => (shard::key_of(v.resource_type, v.id, index), index_rows::insert_resource()),
        };
        let (version, deleted, method) = (v.version as i64, i16::from(v.body.is_none()), v.method.to_db() as i16);
        let arrays = IndexArrays::of(index);
        let body = v.body.map(|body| self.conn.seal.seal(v.resource_type, v.id, v.version, body));
        let body = body.as_deref();
        let mut params: Vec<&(dyn ToSql + Sync)> =
            vec![&shard_key, &v.resource_type, &v.id, &version, &v.last_updated, &deleted, &method, &body];
        params.extend(arrays.params());
        self.handle.block_on(self.conn.query_one(sql, &params))?;
        Ok(())
    }
}

/// The [`Transaction`] handed to transaction work.
pub(super) struct InTransaction<'t, 'c> {
    pub(super) tx: &'t mut SyncTx<'c>,
    pub(super) cost: &'t mut Cost,
}

impl Transaction for InTransaction<'_, '_> {
    fn search(&mut self, query: &SearchQuery, limit: u32) -> Result<Vec<StoredVersion>, StoreError> {
        let (rows, _) = self.tx.handle.block_on(read::search_rows(self.tx.conn, query, limit))?;
        self.cost.rows_read += rows.len().max(1) as u64;
        Ok(rows.into_iter().map(|row| row.version).collect())
    }

    fn read(&mut self, resource_type: &str, id: &str) -> Result<Option<StoredVersion>, StoreError> {
        let outcome = self.tx.handle.block_on(read::current(self.tx.conn, resource_type, id))?;
        self.cost.add(outcome.cost);
        Ok(outcome.value)
    }

    fn vread(&mut self, resource_type: &str, id: &str, version: u64) -> Result<Option<StoredVersion>, StoreError> {
        let outcome = self.tx.handle.block_on(read::version(self.tx.conn, resource_type, id, version))?;
        self.cost.add(outcome.cost);
        Ok(outcome.value)
    }

    fn write(&mut self, op: WriteOp) -> Result<WriteResult, StoreError> {
        write::apply(&mut *self.tx, op, self.cost)
    }
}

/// Maintenance writes: new index rows for current versions, and settings.
pub(super) fn reindex(tx: &mut SyncTx<'_>, rows: Vec<(i64, IndexEntries)>, cost: &mut Cost) -> Result<(), StoreError> {
    tx.replace_index(rows, cost)
}

pub(super) fn set_setting(tx: &mut SyncTx<'_>, key: &str, value: &str) -> Result<(), StoreError> {
    tx.handle.block_on(tx.conn.execute(
        "INSERT INTO setting (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        &[&key, &value],
    ))?;
    Ok(())
}

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

use tokio::runtime::Handle;
use tokio_postgres::types::ToSql;

use super::pool::Conn;
use super::read;
use crate::index::IndexEntries;
use crate::model::{Cost, StoreError, StoredVersion, WriteOp, WriteResult};
use crate::query::SearchQuery;
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

    fn index_rows(&mut self, rid: i64, index: &IndexEntries) -> Result<(), StoreError> {
        let rows = IndexArrays::of(index);
        let text = index.text.as_ref();
        let params: [&(dyn ToSql + Sync); 37] = [
            &rid,
            &rows.token.grp,
            &rows.token.param,
            &rows.token.system,
            &rows.token.code,
            &rows.date.grp,
            &rows.date.param,
            &rows.date.low,
            &rows.date.high,
            &rows.reference.grp,
            &rows.reference.param,
            &rows.reference.target_type,
            &rows.reference.target_id,
            &rows.reference.url,
            &rows.string.grp,
            &rows.string.param,
            &rows.string.normalized,
            &rows.string.exact,
            &rows.number.grp,
            &rows.number.param,
            &rows.number.value,
            &rows.quantity.grp,
            &rows.quantity.param,
            &rows.quantity.system,
            &rows.quantity.code,
            &rows.quantity.low,
            &rows.quantity.high,
            &rows.quantity.canonical_unit,
            &rows.quantity.canonical_low,
            &rows.quantity.canonical_high,
            &rows.compartment,
            &rows.compartment_id,
            &text.map(|t| t.narrative.as_str()),
            &text.map(|t| t.content.as_str()),
            &rows.uri.grp,
            &rows.uri.param,
            &rows.uri.uri,
        ];
        self.handle.block_on(self.conn.execute(INSERT_INDEX, &params))?;
        Ok(())
    }

    fn replace_index(&mut self, rows: Vec<(i64, IndexEntries)>, cost: &mut Cost) -> Result<(), StoreError> {
        for (rid, index) in rows {
            let current = self.handle.block_on(self.conn.query_opt(
                "SELECT 1 FROM resource WHERE rid = $1 AND valid_to IS NULL AND deleted = 0 FOR UPDATE",
                &[&rid],
            ))?;
            if current.is_some() {
                self.handle.block_on(self.conn.execute(DROP_INDEX, &[&rid]))?;
                self.index_rows(rid, &index)?;
                cost.rows_written += index.len() as u64;
            }
        }
        Ok(())
    }
}

/// Every index row of a version in one statement: one array per column, unnested per table.
/// Empty arrays insert nothing, so the statement is the same for every resource.
const INSERT_INDEX: &str = "WITH
 t AS (INSERT INTO token_index (rid, grp, param, system, code)
       SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[])),
 d AS (INSERT INTO date_index (rid, grp, param, low, high)
       SELECT $1, * FROM unnest($6::bigint[], $7::text[], $8::bigint[], $9::bigint[])),
 r AS (INSERT INTO reference_index (rid, grp, param, target_type, target_id, url)
       SELECT $1, * FROM unnest($10::bigint[], $11::text[], $12::text[], $13::text[], $14::text[])),
 s AS (INSERT INTO string_index (rid, grp, param, normalized, exact)
       SELECT $1, * FROM unnest($15::bigint[], $16::text[], $17::text[], $18::text[])),
 n AS (INSERT INTO number_index (rid, grp, param, value)
       SELECT $1, * FROM unnest($19::bigint[], $20::text[], $21::float8[])),
 q AS (INSERT INTO quantity_index (rid, grp, param, system, code, low, high, canonical_unit, canonical_low, canonical_high)
       SELECT $1, * FROM unnest($22::bigint[], $23::text[], $24::text[], $25::text[], $26::float8[], $27::float8[],
                                $28::text[], $29::float8[], $30::float8[])),
 c AS (INSERT INTO compartment_index (rid, compartment, id)
       SELECT $1, * FROM unnest($31::text[], $32::text[])),
 u AS (INSERT INTO uri_index (rid, grp, param, uri)
       SELECT $1, * FROM unnest($35::bigint[], $36::text[], $37::text[]))
 INSERT INTO text_index (rid, narrative, content)
 SELECT $1, to_tsvector('simple', $33::text), to_tsvector('simple', $34::text) WHERE $33::text IS NOT NULL";

/// Drops every index row of a version in one statement.
const DROP_INDEX: &str = "WITH
 t AS (DELETE FROM token_index WHERE rid = $1),
 d AS (DELETE FROM date_index WHERE rid = $1),
 r AS (DELETE FROM reference_index WHERE rid = $1),
 s AS (DELETE FROM string_index WHERE rid = $1),
 n AS (DELETE FROM number_index WHERE rid = $1),
 q AS (DELETE FROM quantity_index WHERE rid = $1),
 c AS (DELETE FROM compartment_index WHERE rid = $1),
 u AS (DELETE FROM uri_index WHERE rid = $1)
 DELETE FROM text_index WHERE rid = $1";

/// [`DROP_INDEX`] that also ends the version (`$2` is its `valid_to`): one round trip.
static RETIRE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

#[derive(Default)]
struct Tokens {
    grp: Vec<i64>,
    param: Vec<String>,
    system: Vec<Option<String>>,
    code: Vec<String>,
}
#[derive(Default)]
struct Dates {
    grp: Vec<i64>,
    param: Vec<String>,
    low: Vec<i64>,
    high: Vec<i64>,
}
#[derive(Default)]
struct References {
    grp: Vec<i64>,
    param: Vec<String>,
    target_type: Vec<Option<String>>,
    target_id: Vec<Option<String>>,
    url: Vec<Option<String>>,
}
#[derive(Default)]
struct Strings {
    grp: Vec<i64>,
    param: Vec<String>,
    normalized: Vec<String>,
    exact: Vec<String>,
}
#[derive(Default)]
struct Numbers {
    grp: Vec<i64>,
    param: Vec<String>,
    value: Vec<f64>,
}
#[derive(Default)]
struct Quantities {
    grp: Vec<i64>,
    param: Vec<String>,
    system: Vec<Option<String>>,
    code: Vec<Option<String>>,
    low: Vec<f64>,
    high: Vec<f64>,
    canonical_unit: Vec<Option<String>>,
    canonical_low: Vec<Option<f64>>,
    canonical_high: Vec<Option<f64>>,
}

#[derive(Default)]
struct Uris {
    grp: Vec<i64>,
    param: Vec<String>,
    uri: Vec<String>,
}

/// A version's index rows as columns, composites' components in groups numbered from 1.
#[derive(Default)]
struct IndexArrays {
    token: Tokens,
    date: Dates,
    reference: References,
    string: Strings,
    number: Numbers,
    quantity: Quantities,
    uri: Uris,
    compartment: Vec<String>,
    compartment_id: Vec<String>,
}

impl IndexArrays {
    fn of(index: &IndexEntries) -> IndexArrays {
        let mut arrays = IndexArrays::default();
        arrays.add(0, index);
        for (group, composite) in index.composites.iter().enumerate() {
            arrays.add(group as i64 + 1, composite);
        }
        for c in &index.compartments {
            arrays.compartment.push(c.compartment.clone());
            arrays.compartment_id.push(c.id.clone());
        }
        arrays
    }

    fn add(&mut self, grp: i64, index: &IndexEntries) {
        for t in &index.tokens {
            self.token.grp.push(grp);
            self.token.param.push(t.param.clone());
            self.token.system.push(t.system.clone());
            self.token.code.push(t.code.clone());
        }
        for d in &index.dates {
            self.date.grp.push(grp);
            self.date.param.push(d.param.clone());
            self.date.low.push(d.low);
            self.date.high.push(d.high);
        }
        for r in &index.references {
            self.reference.grp.push(grp);
            self.reference.param.push(r.param.clone());
            self.reference.target_type.push(r.target_type.clone());
            self.reference.target_id.push(r.target_id.clone());
            self.reference.url.push(r.url.clone());
        }
        for s in &index.strings {
            self.string.grp.push(grp);
            self.string.param.push(s.param.clone());
            self.string.normalized.push(s.normalized.clone());
            self.string.exact.push(s.exact.clone());
        }
        for n in &index.numbers {
            self.number.grp.push(grp);
            self.number.param.push(n.param.clone());
            self.number.value.push(n.value);
        }
        for q in &index.quantities {
            let canonical = q.canonical.as_ref();
            self.quantity.grp.push(grp);
            self.quantity.param.push(q.param.clone());
            self.quantity.system.push(q.system.clone());
            self.quantity.code.push(q.code.clone());
            self.quantity.low.push(q.low);
            self.quantity.high.push(q.high);
            self.quantity.canonical_unit.push(canonical.map(|c| c.unit.clone()));
            self.quantity.canonical_low.push(canonical.map(|c| c.low));
            self.quantity.canonical_high.push(canonical.map(|c| c.high));
        }
        for u in &index.uris {
            self.uri.grp.push(grp);
            self.uri.param.push(u.param.clone());
            self.uri.uri.push(u.uri.clone());
        }
    }
}

impl Rows for SyncTx<'_> {
    fn lock_resource(&mut self, resource_type: &str, id: &str) -> Result<(), StoreError> {
        self.lock(&format!("resource:{resource_type}/{id}"))
    }

    fn lock_query(&mut self, resource_type: &str, query: &SearchQuery) -> Result<(), StoreError> {
        // The query's debug form is deterministic for one build, which is what replicas run.
        self.lock(&format!("query:{resource_type}:{query:?}"))
    }

    fn current(&mut self, resource_type: &str, id: &str) -> Result<Option<(i64, StoredVersion)>, StoreError> {
        self.handle.block_on(read::current_with_rid(self.conn, resource_type, id))
    }

    fn matches(&mut self, query: &SearchQuery, limit: u32) -> Result<(Vec<(i64, StoredVersion)>, bool), StoreError> {
        self.handle.block_on(read::search_rids(self.conn, query, limit))
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

    fn retire(&mut self, rid: i64, valid_to: i64) -> Result<(), StoreError> {
        let retire = RETIRE.get_or_init(|| {
            DROP_INDEX.replacen(
                "WITH\n",
                "WITH\n v AS (UPDATE resource SET valid_to = $2::bigint WHERE rid = $1),\n",
                1,
            )
        });
        self.handle.block_on(self.conn.execute(retire, &[&rid, &valid_to]))?;
        Ok(())
    }

    fn insert_version(&mut self, v: &NewVersion<'_>) -> Result<i64, StoreError> {
        let row = self.handle.block_on(self.conn.query_one(
            "INSERT INTO resource (type, id, version, last_updated, valid_to, deleted, method, body) \
             VALUES ($1, $2, $3, $4, NULL, $5, $6, $7) RETURNING rid",
            &[
                &v.resource_type,
                &v.id,
                &(v.version as i64),
                &v.last_updated,
                &i16::from(v.body.is_none()),
                &(v.method.to_db() as i16),
                &v.body,
            ],
        ))?;
        Ok(row.try_get(0)?)
    }

    fn insert_index(&mut self, rid: i64, index: &IndexEntries) -> Result<(), StoreError> {
        self.index_rows(rid, index)
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

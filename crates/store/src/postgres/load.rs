//! A `$import` batch on PostgreSQL, written set-based: a handful of statements for a thousand
//! lines instead of four round trips per line.
//!
//! 1. Every resource of the batch is locked with the advisory lock a single write takes
//!    ([`write::resource_lock`]), in one statement, in the order of the locks' keys so that two
//!    batches sharing resources wait for each other instead of deadlocking.
//! 2. Their current versions are read in two statements (`resource_key`, then `resource`).
//! 3. Each line is decided by the same logic as every other write (`crate::write::apply`), run
//!    against a [`Plan`] that answers from what step 2 read and collects rows instead of writing
//!    them. A resource imported twice in one batch sees its own earlier version.
//! 4. The rows go in: the retired versions ended in one statement; row ids for the new versions
//!    taken from the `resource` sequence; then `resource_key`, the versions and every index row in
//!    one more.
//!
//! Refused lines write nothing, as `write::apply` decides everything before it touches a row.

use std::collections::HashMap;

use tokio_postgres::types::ToSql;

use super::index_rows::{self, BatchArrays};
use super::read;
use super::write::{resource_lock, RowKey, SyncTx};
use crate::index::IndexEntries;
use crate::model::{Cost, ImportLine, StoreError, StoredVersion, WriteOp, WriteResult};
use crate::query::SearchQuery;
use crate::seal::Seal;
use crate::shard;
use crate::write::{self, NewVersion, Rows};

/// Takes the locks (`$1`, their keys) in key order and reads the clock once they are granted.
const LOCK: &str = "SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint
 FROM (SELECT count(*) FROM (SELECT pg_advisory_xact_lock(h) FROM (
       SELECT DISTINCT hashtextextended(k, 0) AS h FROM unnest($1::text[]) AS k ORDER BY h) AS sorted) AS locks) AS locked";

/// The shard keys of resources (`$1` types, `$2` ids) that were written before.
/// Each is a lookup of its own (`LATERAL`): a plain join may be planned, and its plan cached, as a
/// scan of the whole table while the table is still small.
const SHARDS: &str = "SELECT u.t, u.i, k.shard_key FROM unnest($1::text[], $2::text[]) AS u(t, i)
 CROSS JOIN LATERAL (SELECT shard_key FROM resource_key WHERE type = u.t AND id = u.i) AS k";

/// Ends versions (`$1` shard keys, `$2` row ids, `$3` their `valid_to`) and drops their index rows.
const RETIRE: &str = "WITH
 v AS (UPDATE resource SET valid_to = u.vt FROM (SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[])) AS u(s, r, vt)
       WHERE resource.shard_key = u.s AND resource.rid = u.r),
 o AS (SELECT * FROM unnest($1::text[], $2::bigint[]) AS o(s, r)),
 t AS (DELETE FROM token_index x USING o WHERE x.shard_key = o.s AND x.rid = o.r),
 d AS (DELETE FROM date_index x USING o WHERE x.shard_key = o.s AND x.rid = o.r),
 r AS (DELETE FROM reference_index x USING o WHERE x.shard_key = o.s AND x.rid = o.r),
 s AS (DELETE FROM string_index x USING o WHERE x.shard_key = o.s AND x.rid = o.r),
 n AS (DELETE FROM number_index x USING o WHERE x.shard_key = o.s AND x.rid = o.r),
 q AS (DELETE FROM quantity_index x USING o WHERE x.shard_key = o.s AND x.rid = o.r),
 c AS (DELETE FROM compartment_index x USING o WHERE x.shard_key = o.s AND x.rid = o.r),
 u AS (DELETE FROM uri_index x USING o WHERE x.shard_key = o.s AND x.rid = o.r),
 f AS (DELETE FROM text_index x USING o WHERE x.shard_key = o.s AND x.rid = o.r)
 SELECT 1";

/// Row ids for `$1` new versions.
const ROW_IDS: &str = "SELECT nextval(pg_get_serial_sequence('resource', 'rid')) FROM generate_series(1, $1::int)";

/// The new versions (`$1` to `$10`), the new resources' `resource_key` rows (`$11` to `$13`) and
/// every index row (from `$14`), in one statement.
fn insert() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        format!(
            "WITH
 v AS (INSERT INTO resource (rid, shard_key, type, id, version, last_updated, valid_to, deleted, method, body)
       OVERRIDING SYSTEM VALUE
       SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[],
                            $7::bigint[], $8::int2[], $9::int2[], $10::bytea[])),
 k AS (INSERT INTO resource_key (type, id, shard_key) SELECT * FROM unnest($11::text[], $12::text[], $13::text[])),
{}
 SELECT 1",
            index_rows::batch_index_ctes(14)
        )
    })
}

/// The lines split in two by resource (a hash of type and id), each half with the lines' positions
/// in the batch. Two halves share no resource, so they can be written at once without waiting for
/// each other's locks, and the lines of one resource keep their order.
pub(super) fn halves(lines: Vec<ImportLine>) -> [(Vec<usize>, Vec<ImportLine>); 2] {
    use std::hash::{Hash, Hasher};
    let mut halves: [(Vec<usize>, Vec<ImportLine>); 2] = Default::default();
    for (at, line) in lines.into_iter().enumerate() {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (&line.resource_type, &line.id).hash(&mut hasher);
        let half = &mut halves[(hasher.finish() & 1) as usize];
        half.0.push(at);
        half.1.push(line);
    }
    halves
}

/// Imports `lines` inside the caller's transaction; see the module's description.
pub(super) fn import_batch(
    tx: &mut SyncTx<'_>,
    lines: Vec<ImportLine>,
    cost: &mut Cost,
) -> Result<Vec<Result<WriteResult, StoreError>>, StoreError> {
    if lines.is_empty() {
        return Ok(Vec::new());
    }
    let locks: Vec<String> = lines.iter().map(|l| resource_lock(&l.resource_type, &l.id)).collect();
    let now: i64 = tx.handle.block_on(tx.conn.query_one(LOCK, &[&locks]))?.try_get(0)?;
    let mut plan = Plan {
        now,
        last: 0,
        current: current_versions(tx, &lines)?,
        retired: Vec::new(),
        new: Vec::new(),
        seal: tx.conn.seal.clone(),
    };
    let mut results = Vec::with_capacity(lines.len());
    for line in lines {
        match write::apply(&mut plan, WriteOp::Import(line), cost) {
            Err(error) if !error.refuses_one_line() => return Err(error),
            result => results.push(result),
        }
    }
    plan.write(tx)?;
    Ok(results)
}

/// Current versions by type and id, with where their rows are.
type Current = HashMap<(String, String), (Located, StoredVersion)>;

/// The current versions of the lines' resources.
fn current_versions(tx: &mut SyncTx<'_>, lines: &[ImportLine]) -> Result<Current, StoreError> {
    // A Patient's shard key is its own id; the others' are recorded in `resource_key`.
    let (mut shard_keys, mut types, mut ids) = (Vec::new(), Vec::new(), Vec::new());
    let (mut other_types, mut other_ids) = (Vec::new(), Vec::new());
    for line in lines {
        if line.resource_type == shard::PATIENT {
            shard_keys.push(line.id.as_str());
            types.push(line.resource_type.as_str());
            ids.push(line.id.as_str());
        } else {
            other_types.push(line.resource_type.as_str());
            other_ids.push(line.id.as_str());
        }
    }
    let found = if other_types.is_empty() {
        Vec::new()
    } else {
        tx.handle.block_on(tx.conn.query(SHARDS, &[&other_types, &other_ids]))?
    };
    let recorded: Vec<(String, String, String)> = found
        .iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))
        .collect::<Result<_, StoreError>>()?;
    for (resource_type, id, shard_key) in &recorded {
        shard_keys.push(shard_key);
        types.push(resource_type);
        ids.push(id);
    }
    // The columns `read::version_row` reads, then the shard key; one lookup each, as in `SHARDS`.
    let sql = "SELECT r.rid, r.id, r.version, r.last_updated, r.deleted, r.method, r.body, r.type, r.shard_key
 FROM unnest($1::text[], $2::text[], $3::text[]) AS u(s, t, i)
 CROSS JOIN LATERAL (SELECT * FROM resource WHERE shard_key = u.s AND type = u.t AND id = u.i AND valid_to IS NULL) AS r";
    let rows = tx.handle.block_on(tx.conn.query(sql, &[&shard_keys, &types, &ids]))?;
    let mut current = HashMap::with_capacity(rows.len());
    for row in &rows {
        let shard_key: String = row.try_get(8)?;
        let (rid, version) = read::version_row(&tx.conn.seal, row)?;
        let key = (version.resource_type.clone(), version.id.clone());
        current.insert(key, (Located::Stored(RowKey { shard_key, rid }), version));
    }
    Ok(current)
}

/// Where a version of the batch is: already stored, or among the batch's new versions.
#[derive(Debug, Clone)]
pub(super) enum Located {
    Stored(RowKey),
    New(usize),
}

/// A version the batch inserts.
struct NewRow {
    shard_key: String,
    resource_type: String,
    id: String,
    version: i64,
    last_updated: i64,
    valid_to: Option<i64>,
    method: i16,
    /// `None` for a deletion marker (a soft-deleted import's).
    body: Option<Vec<u8>>,
    /// Whether the version is its resource's first (whose `resource_key` row is new too).
    first: bool,
    index: IndexEntries,
}

/// The batch's rows, decided line by line before any is written.
struct Plan {
    /// The database's clock once the batch's locks were granted (microseconds since the epoch).
    now: i64,
    /// The newest `lastUpdated` handed out.
    last: i64,
    current: Current,
    /// Stored versions to end: where, and when.
    retired: Vec<(RowKey, i64)>,
    new: Vec<NewRow>,
    /// Seals the new versions' bodies.
    seal: Seal,
}

impl Rows for Plan {
    type Key = Located;

    /// Every resource of the batch was locked before the plan began.
    fn lock_resource(&mut self, _resource_type: &str, _id: &str) -> Result<(), StoreError> {
        Ok(())
    }

    fn lock_query(&mut self, _resource_type: &str, _query: &SearchQuery) -> Result<(), StoreError> {
        Err(StoreError::Backend("an import batch holds only imports".into()))
    }

    fn current(&mut self, resource_type: &str, id: &str) -> Result<Option<(Located, StoredVersion)>, StoreError> {
        Ok(self.current.get(&(resource_type.to_owned(), id.to_owned())).cloned())
    }

    fn matches(&mut self, _query: &SearchQuery, _limit: u32) -> Result<(Vec<StoredVersion>, bool), StoreError> {
        Err(StoreError::Backend("an import batch holds only imports".into()))
    }

    fn next_timestamp(&mut self, previous: Option<i64>) -> Result<i64, StoreError> {
        let floor = previous.map_or(self.last, |p| p.max(self.last));
        self.last = self.now.max(floor + 1);
        Ok(self.last)
    }

    fn retire(&mut self, key: &Located, valid_to: i64) -> Result<(), StoreError> {
        match key {
            Located::Stored(key) => self.retired.push((key.clone(), valid_to)),
            Located::New(i) => {
                // Replaced within the batch: it goes in already ended, without index rows.
                self.new[*i].valid_to = Some(valid_to);
                self.new[*i].index = IndexEntries::default();
            }
        }
        Ok(())
    }

    fn insert_version(
        &mut self,
        v: &NewVersion<'_>,
        previous: Option<&Located>,
        index: &IndexEntries,
    ) -> Result<(), StoreError> {
        let shard_key = match previous {
            Some(Located::Stored(key)) => key.shard_key.clone(),
            Some(Located::New(i)) => self.new[*i].shard_key.clone(),
            None => shard::key_of(v.resource_type, v.id, index),
        };
        let version = i64::try_from(v.version).map_err(|_| {
            StoreError::Invalid(format!("{}/{}: version {} is out of range", v.resource_type, v.id, v.version))
        })?;
        let stored = StoredVersion {
            resource_type: v.resource_type.to_owned(),
            id: v.id.to_owned(),
            version: v.version,
            last_updated: v.last_updated,
            deleted: v.body.is_none(),
            method: v.method,
            body: v.body.map(|b| b.to_vec().into()).unwrap_or_default(),
        };
        let key = (stored.resource_type.clone(), stored.id.clone());
        self.current.insert(key, (Located::New(self.new.len()), stored));
        self.new.push(NewRow {
            shard_key,
            resource_type: v.resource_type.to_owned(),
            id: v.id.to_owned(),
            version,
            last_updated: v.last_updated,
            valid_to: None,
            method: v.method.to_db() as i16,
            body: v.body.map(|body| self.seal.seal(v.resource_type, v.id, v.version, body).into_owned()),
            first: previous.is_none(),
            index: index.clone(),
        });
        Ok(())
    }
}

impl Plan {
    /// Writes what the lines decided.
    fn write(self, tx: &mut SyncTx<'_>) -> Result<(), StoreError> {
        if !self.retired.is_empty() {
            let shard_keys: Vec<&str> = self.retired.iter().map(|(key, _)| key.shard_key.as_str()).collect();
            let rids: Vec<i64> = self.retired.iter().map(|(key, _)| key.rid).collect();
            let valid_to: Vec<i64> = self.retired.iter().map(|(_, at)| *at).collect();
            tx.handle.block_on(tx.conn.execute(RETIRE, &[&shard_keys, &rids, &valid_to]))?;
        }
        if self.new.is_empty() {
            return Ok(());
        }
        let count = i32::try_from(self.new.len()).map_err(|_| StoreError::Invalid("the batch is too large".into()))?;
        let rows = tx.handle.block_on(tx.conn.query(ROW_IDS, &[&count]))?;
        let rids: Vec<i64> = rows.iter().map(|row| row.try_get(0)).collect::<Result<_, _>>()?;
        let mut columns = Columns::default();
        let mut index = BatchArrays::default();
        for (row, rid) in self.new.into_iter().zip(&rids) {
            index.push(&row.shard_key, *rid, &row.index);
            columns.push(row);
        }
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![
            &rids,
            &columns.shard_key,
            &columns.resource_type,
            &columns.id,
            &columns.version,
            &columns.last_updated,
            &columns.valid_to,
            &columns.deleted,
            &columns.method,
            &columns.body,
            &columns.first_type,
            &columns.first_id,
            &columns.first_shard_key,
        ];
        params.extend(index.params());
        tx.handle.block_on(tx.conn.execute(insert(), &params))?;
        Ok(())
    }
}

/// The new versions as one array per column of `resource`, and the new resources' keys.
#[derive(Default)]
struct Columns {
    shard_key: Vec<String>,
    resource_type: Vec<String>,
    id: Vec<String>,
    version: Vec<i64>,
    last_updated: Vec<i64>,
    valid_to: Vec<Option<i64>>,
    deleted: Vec<i16>,
    method: Vec<i16>,
    body: Vec<Option<Vec<u8>>>,
    first_type: Vec<String>,
    first_id: Vec<String>,
    first_shard_key: Vec<String>,
}

impl Columns {
    fn push(&mut self, row: NewRow) {
        if row.first {
            self.first_type.push(row.resource_type.clone());
            self.first_id.push(row.id.clone());
            self.first_shard_key.push(row.shard_key.clone());
        }
        self.shard_key.push(row.shard_key);
        self.resource_type.push(row.resource_type);
        self.id.push(row.id);
        self.version.push(row.version);
        self.last_updated.push(row.last_updated);
        self.valid_to.push(row.valid_to);
        self.deleted.push(i16::from(row.body.is_none()));
        self.method.push(row.method);
        self.body.push(row.body);
    }
}

//! Copying versions exported from an embedded store into PostgreSQL (`fhirside migrate-store`).
//!
//! Versions are inserted as they were stored — version numbers, `lastUpdated`, `valid_to`,
//! deletion markers and the exact body bytes — so history, vread and ETags carry over unchanged.
//! Row ids are the target's own, assigned in the source's row id order. Index rows are not copied:
//! they are derived from the bodies, and the caller rebuilds them with the search parameters in
//! force once every version is in.
//!
//! Each resource is placed on its shard (`crate::shard`) by the Patient compartments of its current
//! version in the source's index, all its versions together, as a write would have placed them.

use super::PostgresStore;
use crate::model::StoreError;
use crate::seal::Seal;
use crate::shard;
use crate::sqlite::RawVersion;

/// Every version of a batch in one statement (one transaction): one array per column, inserted
/// in array order so that the target's row ids follow the source's, and each resource's
/// `resource_key` (once: its versions may span batches). Returns how many versions it inserted.
const INSERT_VERSIONS: &str = "WITH
 k AS (INSERT INTO resource_key (type, id, shard_key)
       SELECT DISTINCT t, i, s FROM unnest($1::text[], $2::text[], $9::text[]) AS u(t, i, s)
       ON CONFLICT (type, id) DO NOTHING),
 r AS (INSERT INTO resource (shard_key, type, id, version, last_updated, valid_to, deleted, method, body)
       SELECT s, t, i, v, l, vt, d, m, b
       FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::int2[], $7::int2[],
                   $8::bytea[], $9::text[])
            WITH ORDINALITY AS u(t, i, v, l, vt, d, m, b, s, n)
       ORDER BY n
       RETURNING 1)
 SELECT count(*) FROM r";

/// An import into a store that held no resources when it began; see [`PostgresStore::begin_import`].
pub struct Importer<'a> {
    store: &'a PostgresStore,
}

impl PostgresStore {
    /// Starts an import, refusing a store that already holds resources: versions copied next to
    /// others would collide with them (or silently mix two installations' histories).
    pub async fn begin_import(&self) -> Result<Importer<'_>, StoreError> {
        let row = self.pool.get().await?.query_one("SELECT EXISTS (SELECT 1 FROM resource)", &[]).await?;
        if row.try_get::<_, bool>(0)? {
            return Err(StoreError::Conflict(
                "the target database already holds resources; `fhirside migrate-store` copies into an empty \
                 store only (use a new database or schema, or drop this one's tables first)"
                    .into(),
            ));
        }
        Ok(Importer { store: self })
    }
}

impl Importer<'_> {
    /// Inserts one batch of versions atomically, preserving every column; returns how many.
    pub async fn import_versions(&self, batch: Vec<RawVersion>) -> Result<u64, StoreError> {
        if batch.is_empty() {
            return Ok(0);
        }
        let mut columns = Columns::with_capacity(batch.len());
        let mut conn = self.store.pool.get().await?;
        for version in batch {
            columns.push(&conn.seal, version)?;
        }
        let row = conn
            .query_one(
                INSERT_VERSIONS,
                &[
                    &columns.resource_type,
                    &columns.id,
                    &columns.version,
                    &columns.last_updated,
                    &columns.valid_to,
                    &columns.deleted,
                    &columns.method,
                    &columns.body,
                    &columns.shard_key,
                ],
            )
            .await?;
        Ok(row.try_get::<_, i64>(0)? as u64)
    }
}

/// A batch as one array per column of `resource`.
struct Columns {
    resource_type: Vec<String>,
    id: Vec<String>,
    version: Vec<i64>,
    last_updated: Vec<i64>,
    valid_to: Vec<Option<i64>>,
    deleted: Vec<i16>,
    method: Vec<i16>,
    body: Vec<Option<Vec<u8>>>,
    shard_key: Vec<String>,
}

impl Columns {
    fn with_capacity(n: usize) -> Columns {
        Columns {
            resource_type: Vec::with_capacity(n),
            id: Vec::with_capacity(n),
            version: Vec::with_capacity(n),
            last_updated: Vec::with_capacity(n),
            valid_to: Vec::with_capacity(n),
            deleted: Vec::with_capacity(n),
            method: Vec::with_capacity(n),
            body: Vec::with_capacity(n),
            shard_key: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, seal: &Seal, v: RawVersion) -> Result<(), StoreError> {
        let version = i64::try_from(v.version).map_err(|_| {
            StoreError::Invalid(format!("{}/{}: version {} is out of range", v.resource_type, v.id, v.version))
        })?;
        let patients = v.patient_compartments.iter().map(String::as_str);
        self.shard_key.push(shard::key(&v.resource_type, &v.id, patients));
        self.body.push(v.body.as_deref().map(|body| seal.seal(&v.resource_type, &v.id, v.version, body).into_owned()));
        self.resource_type.push(v.resource_type);
        self.id.push(v.id);
        self.version.push(version);
        self.last_updated.push(v.last_updated);
        self.valid_to.push(v.valid_to);
        self.deleted.push(i16::from(v.deleted));
        self.method.push(v.method.to_db() as i16);
        Ok(())
    }
}

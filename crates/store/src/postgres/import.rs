//! Copying versions exported from an embedded store into PostgreSQL (`fhirside migrate-store`).
//!
//! Versions are inserted as they were stored — version numbers, `lastUpdated`, `valid_to`,
//! deletion markers and the exact body bytes — so history, vread and ETags carry over unchanged.
//! Row ids are the target's own, assigned in the source's row id order. Index rows are not copied:
//! they are derived from the bodies, and the caller rebuilds them with the search parameters in
//! force once every version is in.

use super::PostgresStore;
use crate::model::StoreError;
use crate::sqlite::RawVersion;

/// Every version of a batch in one statement (one transaction): one array per column, inserted
/// in array order so that the target's row ids follow the source's.
const INSERT_VERSIONS: &str = "INSERT INTO resource (type, id, version, last_updated, valid_to, deleted, method, body)
 SELECT t, i, v, l, vt, d, m, b
 FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::int2[], $7::int2[], $8::bytea[])
      WITH ORDINALITY AS u(t, i, v, l, vt, d, m, b, n)
 ORDER BY n";

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
        for version in batch {
            columns.push(version)?;
        }
        let mut conn = self.store.pool.get().await?;
        conn.execute(
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
            ],
        )
        .await
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
        }
    }

    fn push(&mut self, v: RawVersion) -> Result<(), StoreError> {
        let version = i64::try_from(v.version).map_err(|_| {
            StoreError::Invalid(format!("{}/{}: version {} is out of range", v.resource_type, v.id, v.version))
        })?;
        self.resource_type.push(v.resource_type);
        self.id.push(v.id);
        self.version.push(version);
        self.last_updated.push(v.last_updated);
        self.valid_to.push(v.valid_to);
        self.deleted.push(i16::from(v.deleted));
        self.method.push(v.method.to_db() as i16);
        self.body.push(v.body);
        Ok(())
    }
}

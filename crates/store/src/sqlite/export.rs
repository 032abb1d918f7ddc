//! Reading every stored version out of an embedded store, for `fhirside migrate-store`.
//!
//! The export opens the data directory's database read-only and never migrates it: a migration is
//! something the operator may want to undo by keeping the embedded installation, so it must leave
//! the source exactly as it was. It takes the data directory's lock (the one `fhirside serve` holds
//! for its life) and keeps it until dropped, so that no server writes while versions are copied and
//! the rows read in batches form one consistent snapshot.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use super::SqliteConfig;
use crate::model::{Method, StoreError};

/// One stored version with every column the store keeps for it, index rows aside (they are
/// derived from the body and rebuilt by the target).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawVersion {
    pub resource_type: String,
    pub id: String,
    pub version: u64,
    /// `meta.lastUpdated`, microseconds since the epoch.
    pub last_updated: i64,
    /// The next version's `lastUpdated`; `None` for the current version.
    pub valid_to: Option<i64>,
    pub deleted: bool,
    pub method: Method,
    /// The served JSON bytes, exactly as stored; `None` for a deletion marker.
    pub body: Option<Vec<u8>>,
    /// Patients in whose compartments the resource's current version is, as the source's index has
    /// them: one, two when there are several (which is all the placement rule asks), or none. A
    /// sharded target places every version of the resource by them.
    pub patient_compartments: Vec<String>,
}

/// A read-only view of a data directory's resource store, holding its lock.
pub struct SqliteExport {
    conn: Connection,
    /// Held, not read: the data directory's lock, released when the export is dropped.
    _lock: File,
}

/// What an embedded store holds, to report progress against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportCounts {
    /// Every version, deletion markers included.
    pub versions: u64,
    /// Resources whose current version is not a deletion.
    pub live: u64,
}

impl SqliteExport {
    /// Opens the resource database of `data_dir` read-only, after taking the directory's lock.
    /// Fails if a server (or another command) holds the lock, or if there is no store there.
    pub fn open(data_dir: &Path) -> Result<SqliteExport, StoreError> {
        let path = SqliteConfig::in_dir(data_dir).path;
        if !path.is_file() {
            return Err(StoreError::Invalid(format!(
                "{} has no embedded resource store ({} not found)",
                data_dir.display(),
                path.display()
            )));
        }
        let lock = lock_data_dir(data_dir)?;
        let conn =
            Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        let has_resources: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'resource')",
            [],
            |row| row.get(0),
        )?;
        if !has_resources {
            return Err(StoreError::Invalid(format!("{} is not a Fhirside resource store", path.display())));
        }
        Ok(SqliteExport { conn, _lock: lock })
    }

    /// How many versions and live resources the store holds.
    pub fn counts(&self) -> Result<ExportCounts, StoreError> {
        let (versions, live): (i64, i64) = self.conn.query_row(
            "SELECT count(*), count(*) FILTER (WHERE valid_to IS NULL AND deleted = 0) FROM resource",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        Ok(ExportCounts { versions: versions as u64, live: live as u64 })
    }

    /// Up to `limit` versions with a row id after `after_rid`, in row id order (the order they were
    /// written), each with its row id so that the caller can ask for the next batch.
    pub fn versions_after(&self, after_rid: i64, limit: u32) -> Result<Vec<(i64, RawVersion)>, StoreError> {
        let mut statement = self.conn.prepare_cached(
            "SELECT r.rid, r.type, r.id, r.version, r.last_updated, r.valid_to, r.deleted, r.method, r.body,
                    (SELECT min(c.id) FROM resource cur JOIN compartment_index c ON c.rid = cur.rid
                     WHERE cur.type = r.type AND cur.id = r.id AND cur.valid_to IS NULL AND c.compartment = 'Patient'),
                    (SELECT max(c.id) FROM resource cur JOIN compartment_index c ON c.rid = cur.rid
                     WHERE cur.type = r.type AND cur.id = r.id AND cur.valid_to IS NULL AND c.compartment = 'Patient')
             FROM resource r WHERE r.rid > ?1 ORDER BY r.rid LIMIT ?2",
        )?;
        let rows = statement.query_map([after_rid, i64::from(limit)], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                RawVersion {
                    resource_type: row.get(1)?,
                    id: row.get(2)?,
                    version: row.get::<_, i64>(3)? as u64,
                    last_updated: row.get(4)?,
                    valid_to: row.get(5)?,
                    deleted: row.get::<_, i64>(6)? != 0,
                    method: Method::from_db(row.get(7)?),
                    body: row.get(8)?,
                    patient_compartments: match (row.get::<_, Option<String>>(9)?, row.get::<_, Option<String>>(10)?) {
                        (Some(low), Some(high)) if low != high => vec![low, high],
                        (Some(low), _) => vec![low],
                        _ => Vec::new(),
                    },
                },
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// Takes the exclusive lock `fhirside serve` holds on `<data dir>/LOCK` (an `flock`, which is what
/// `File::try_lock` takes on Unix), without waiting.
fn lock_data_dir(data_dir: &Path) -> Result<File, StoreError> {
    let path: PathBuf = data_dir.join("LOCK");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::Invalid(format!("cannot open {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(StoreError::Conflict(format!(
            "{} is in use by another fhirside process (is `fhirside serve` running on it?); stop it first",
            data_dir.display()
        ))),
        Err(TryLockError::Error(e)) => Err(StoreError::Invalid(format!("cannot lock {}: {e}", path.display()))),
    }
}

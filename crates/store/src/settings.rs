//! A store's settings read and written on their own, without opening the store: what an
//! administrative command needs while a server may be running on the same store
//! (`fhirside keys`). Opening a [`crate::SqliteStore`] would start a second writer and could
//! build indexes a running bulk load deferred; this touches the `setting` table alone.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::model::StoreError;
use crate::postgres::PostgresConfig;

/// Which store's settings.
pub enum SettingsOf<'a> {
    /// The embedded store of a data directory, which a server must have created.
    Embedded(&'a Path),
    Postgres(&'a PostgresConfig),
}

/// The value of `key`, if set; `None` also when the store has not been created yet.
pub async fn read_setting(store: SettingsOf<'_>, key: &str) -> Result<Option<String>, StoreError> {
    match store {
        SettingsOf::Embedded(data_dir) => {
            // No store yet (a command run before any server): nothing is set.
            if !crate::SqliteConfig::in_dir(data_dir).path.exists() {
                return Ok(None);
            }
            let conn = open(data_dir)?;
            Ok(conn.query_row("SELECT value FROM setting WHERE key = ?1", [key], |row| row.get(0)).optional()?)
        }
        SettingsOf::Postgres(config) => crate::postgres::read_setting(config, key).await,
    }
}

/// Sets `key` to `value`, in one statement: a running server sees the old value or the new one.
pub async fn write_setting(store: SettingsOf<'_>, key: &str, value: &str) -> Result<(), StoreError> {
    match store {
        SettingsOf::Embedded(data_dir) => {
            let conn = open(data_dir)?;
            conn.execute(
                "INSERT INTO setting (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = ?2",
                (key, value),
            )?;
            Ok(())
        }
        SettingsOf::Postgres(config) => crate::postgres::write_setting(config, key, value).await,
    }
}

/// Sets `key` to `value` unless it is set already, and returns what is stored then: `value`, or
/// what another process stored first (two replicas starting together agree on one).
pub async fn create_setting(store: SettingsOf<'_>, key: &str, value: &str) -> Result<String, StoreError> {
    match store {
        SettingsOf::Embedded(data_dir) => {
            let conn = open(data_dir)?;
            conn.execute(
                "INSERT INTO setting (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
                (key, value),
            )?;
            Ok(conn.query_row("SELECT value FROM setting WHERE key = ?1", [key], |row| row.get(0))?)
        }
        SettingsOf::Postgres(config) => crate::postgres::create_setting(config, key, value).await,
    }
}

fn open(data_dir: &Path) -> Result<Connection, StoreError> {
    let path = crate::SqliteConfig::in_dir(data_dir).path;
    // Not SQLITE_OPEN_CREATE: a command pointed at the wrong directory must not leave a database.
    let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|e| StoreError::Invalid(format!("no embedded store at {}: {e}", path.display())))?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    Ok(conn)
}

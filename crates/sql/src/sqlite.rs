//! A store's embedded backend: one SQLite file in the data directory, in WAL mode with
//! `synchronous=FULL` (a write is on disk before it is answered), which the server and the admin
//! CLI's processes open at the same time.

use std::path::Path;
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, TransactionBehavior};

use crate::{Db, Dialect, Error, Result, Row, Value};

/// Opens (creating and migrating if needed) `file_name` in `data_dir`. Each of `migrations` takes
/// the schema from version `i` to `i + 1` (SQLite's `user_version`); forward-only.
pub fn open(data_dir: &Path, file_name: &str, migrations: &[&str]) -> Result<Connection> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| Error::Database(format!("cannot create {}: {e}", data_dir.display())))?;
    let path = data_dir.join(file_name);
    // The stores keep private keys and client secrets: the file is readable by its owner only.
    // SQLite gives the WAL and shared-memory files the database file's permissions.
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::Database(format!("cannot open {}: {e}", path.display())))?;
    }
    let mut conn = Connection::open(&path)?;
    conn.busy_timeout(Duration::from_millis(5000))?;
    // Switching a new file to WAL needs an exclusive lock for a moment; another process opening
    // the same new file can make it fail with "busy" rather than wait, so retry briefly.
    let mut attempt = 0;
    loop {
        match conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get::<_, String>(0)) {
            Ok(_) => break,
            Err(e) if is_busy(&e) && attempt < 100 => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e.into()),
        }
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    migrate(&mut conn, file_name, migrations)?;
    Ok(conn)
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
}

/// Brings the database to the newest schema, refusing one written by a newer Fhirside. Runs in an
/// IMMEDIATE transaction, so that two processes opening a new file at once migrate it once.
fn migrate(conn: &mut Connection, file_name: &str, migrations: &[&str]) -> Result<()> {
    let newest = migrations.len() as i64;
    let current: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if current == newest {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current: i64 = tx.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if current > newest {
        return Err(Error::Database(format!(
            "{file_name} has schema version {current}, newer than this build's {newest}; \
             upgrade Fhirside instead of downgrading it"
        )));
    }
    for sql in migrations.iter().skip(current as usize) {
        tx.execute_batch(sql)?;
    }
    tx.pragma_update(None, "user_version", newest)?;
    tx.commit()?;
    Ok(())
}

/// Runs `f` in an IMMEDIATE transaction (the write lock taken up front, so that a read-then-write
/// never fails half-way for another process's write) and commits it. `f` returns the store's own
/// error, which a failure here becomes too.
pub fn write<T, E: From<Error>>(
    conn: &mut Connection,
    f: impl FnOnce(&mut dyn Db) -> std::result::Result<T, E>,
) -> std::result::Result<T, E> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(Error::from)?;
    // Dropping `tx` on an error (or a panic) rolls it back.
    let value = f(&mut SqliteDb(&tx))?;
    tx.commit().map_err(Error::from)?;
    Ok(value)
}

/// A connection, or a transaction (which dereferences to one), as a [`Db`]. Statements are
/// prepared once per connection (rusqlite's statement cache).
pub struct SqliteDb<'a>(pub &'a Connection);

impl Db for SqliteDb<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        let mut statement = self.0.prepare_cached(sql)?;
        Ok(statement.execute(rusqlite::params_from_iter(params))? as u64)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        let mut statement = self.0.prepare_cached(sql)?;
        let columns = statement.column_count();
        let mut rows = statement.query(rusqlite::params_from_iter(params))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let values = (0..columns).map(|i| value(row.get_ref(i)?, i)).collect::<Result<Vec<_>>>()?;
            out.push(Row(values));
        }
        Ok(out)
    }
}

/// A column's value. The stores keep no real numbers: one is refused rather than rounded.
fn value(column: ValueRef<'_>, i: usize) -> Result<Value> {
    Ok(match column {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(n) => Value::Integer(n),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        ValueRef::Real(r) => return Err(Error::Database(format!("unexpected real number {r} in column {i}"))),
    })
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Integer(n) => ToSqlOutput::Borrowed(ValueRef::Integer(*n)),
            Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Value::Blob(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
        })
    }
}

#[cfg(test)]
mod tests;

//! The identity store's embedded backend: `identity.db` in the data directory, one connection in
//! WAL mode shared by the server and the admin CLI's processes.

use std::path::Path;
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, TransactionBehavior};

use super::sql::{for_sqlite, Db, Dialect, Row, Value};
use super::{IdentityError, Result, FILE_NAME};

/// Each entry migrates from version `i` to `i + 1`. Forward-only.
const MIGRATIONS: &[&str] = &[
    // 1: the whole identity model.
    r#"CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
    CREATE TABLE signing_keys (
        kid TEXT PRIMARY KEY,
        created_at INTEGER NOT NULL,
        retired_at INTEGER,
        pkcs8 BLOB NOT NULL
    );
    -- At most one current (unretired) key.
    CREATE UNIQUE INDEX signing_keys_current ON signing_keys ((retired_at IS NULL)) WHERE retired_at IS NULL;
    CREATE TABLE apps (
        object_id TEXT PRIMARY KEY,
        client_id TEXT NOT NULL UNIQUE,
        display_name TEXT NOT NULL,
        kind TEXT NOT NULL,
        redirect_uris TEXT NOT NULL,
        jwks TEXT,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE secrets (
        key_id TEXT PRIMARY KEY,
        app_object_id TEXT NOT NULL REFERENCES apps (object_id) ON DELETE CASCADE,
        display_name TEXT NOT NULL,
        hint TEXT NOT NULL,
        hash TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
    );
    CREATE INDEX secrets_app ON secrets (app_object_id);
    CREATE TABLE users (
        object_id TEXT PRIMARY KEY,
        upn TEXT NOT NULL UNIQUE COLLATE NOCASE,
        display_name TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        fhir_user TEXT,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE role_assignments (
        id TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        role_definition_id TEXT NOT NULL,
        principal_id TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        UNIQUE (role, principal_id)
    );
    CREATE INDEX role_assignments_principal ON role_assignments (principal_id);
    CREATE TABLE codes (
        hash TEXT PRIMARY KEY,
        "grant" TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        used_at INTEGER
    ) WITHOUT ROWID;
    CREATE INDEX codes_expiry ON codes (expires_at);
    CREATE TABLE refresh_tokens (
        hash TEXT PRIMARY KEY,
        "grant" TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        used_at INTEGER
    ) WITHOUT ROWID;
    CREATE INDEX refresh_tokens_expiry ON refresh_tokens (expires_at);"#,
];

/// Opens (creating and migrating if needed) `identity.db` in `data_dir`.
pub(super) fn open(data_dir: &Path) -> Result<Connection> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| IdentityError::Database(format!("cannot create {}: {e}", data_dir.display())))?;
    let path = data_dir.join(FILE_NAME);
    // The file holds the authority's private keys: readable by its owner only. SQLite gives the
    // WAL and shared-memory files the database file's permissions.
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| IdentityError::Database(format!("cannot open {}: {e}", path.display())))?;
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
    migrate(&mut conn)?;
    Ok(conn)
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
}

/// Brings the database to the newest schema, refusing one written by a newer Fhirside. Runs in an
/// IMMEDIATE transaction, so that two processes opening a new file at once migrate it once.
fn migrate(conn: &mut Connection) -> Result<()> {
    let newest = MIGRATIONS.len() as i64;
    let current: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if current == newest {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current: i64 = tx.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if current > newest {
        return Err(IdentityError::Database(format!(
            "{FILE_NAME} has schema version {current}, newer than this build's {newest}; \
             upgrade Fhirside instead of downgrading it"
        )));
    }
    for sql in MIGRATIONS.iter().skip(current as usize) {
        tx.execute_batch(sql)?;
    }
    tx.pragma_update(None, "user_version", newest)?;
    tx.commit()?;
    Ok(())
}

/// Runs `f` in an IMMEDIATE transaction (the write lock taken up front, so that a read-then-write
/// never fails half-way for another process's write) and commits it.
pub(super) fn write<T>(conn: &mut Connection, f: impl FnOnce(&mut dyn Db) -> Result<T>) -> Result<T> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Dropping `tx` on an error (or a panic) rolls it back.
    let value = f(&mut SqliteDb(&tx))?;
    tx.commit()?;
    Ok(value)
}

/// `PRAGMA data_version`: moves when another connection commits.
pub(super) fn data_version(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("PRAGMA data_version", [], |row| row.get(0))?)
}

/// A connection, or a transaction (which dereferences to one), as a [`Db`].
pub(super) struct SqliteDb<'a>(pub(super) &'a Connection);

impl Db for SqliteDb<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        let mut statement = self.0.prepare_cached(&for_sqlite(sql))?;
        Ok(statement.execute(rusqlite::params_from_iter(params))? as u64)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        let mut statement = self.0.prepare_cached(&for_sqlite(sql))?;
        let columns = statement.column_count();
        let mut rows = statement.query(rusqlite::params_from_iter(params))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let values = (0..columns)
                .map(|i| {
                    Ok(match row.get_ref(i)? {
                        ValueRef::Null => Value::Null,
                        ValueRef::Integer(n) => Value::Integer(n),
                        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
                        ValueRef::Real(r) => {
                            return Err(IdentityError::Database(format!("unexpected real number {r} in column {i}")))
                        }
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            out.push(Row(values));
        }
        Ok(out)
    }
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

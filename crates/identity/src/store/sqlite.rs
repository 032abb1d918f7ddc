//! The identity store's embedded backend: `identity.db` in the data directory, one connection in
//! WAL mode shared by the server and the admin CLI's processes.
//!
//! The store's statements name tables as PostgreSQL does, where they share a schema with the
//! resource store (`identity_apps`); here they run without the prefix, because `identity.db` holds
//! nothing else and its tables had their names before PostgreSQL did. Insertion order is `rowid`:
//! SQLite's own, and a column of that name on PostgreSQL.

use std::borrow::Cow;
use std::path::Path;

use fhirside_sql::{Db, Dialect, Row, SqliteDb, Value};
use rusqlite::Connection;

use super::{Result, FILE_NAME};

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
    Ok(fhirside_sql::sqlite::open(data_dir, FILE_NAME, MIGRATIONS)?)
}

/// Runs `f` on the connection, outside a transaction.
pub(super) fn read<T>(conn: &Connection, f: impl FnOnce(&mut dyn Db) -> Result<T>) -> Result<T> {
    f(&mut Unprefixed(&mut SqliteDb(conn)))
}

/// Runs `f` in an IMMEDIATE transaction (the write lock taken up front, so that a read-then-write
/// never fails half-way for another process's write) and commits it.
pub(super) fn write<T>(conn: &mut Connection, f: impl FnOnce(&mut dyn Db) -> Result<T>) -> Result<T> {
    fhirside_sql::sqlite::write(conn, |db| f(&mut Unprefixed(db)))
}

/// `PRAGMA data_version`: moves when another connection commits.
pub(super) fn data_version(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("PRAGMA data_version", [], |row| row.get(0))?)
}

/// A connection that runs the store's statements with `identity.db`'s table names.
struct Unprefixed<'a>(&'a mut dyn Db);

impl Db for Unprefixed<'_> {
    fn dialect(&self) -> Dialect {
        self.0.dialect()
    }

    fn execute(&mut self, sql: &str, params: &[Value]) -> fhirside_sql::Result<u64> {
        self.0.execute(&unprefixed(sql), params)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> fhirside_sql::Result<Vec<Row>> {
        self.0.query(&unprefixed(sql), params)
    }
}

/// The statement with table names without the `identity_` prefix.
fn unprefixed(sql: &str) -> Cow<'_, str> {
    if sql.contains("identity_") {
        Cow::Owned(sql.replace("identity_", ""))
    } else {
        Cow::Borrowed(sql)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_lose_their_prefix() {
        let sql = r#"UPDATE identity_codes SET used_at = ?2 WHERE hash = ?1 RETURNING "grant""#;
        assert_eq!(unprefixed(sql), r#"UPDATE codes SET used_at = ?2 WHERE hash = ?1 RETURNING "grant""#);
        assert!(matches!(unprefixed("SELECT 1"), Cow::Borrowed(_)));
    }
}

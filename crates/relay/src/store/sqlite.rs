//! The relay's embedded backend: `relay.db` in the data directory, in WAL mode with
//! `synchronous=FULL`, so that a message is on disk before `POST …/messages` answers. The server
//! and the `fhirside relay` CLI share it, as they share `identity.db`.

use std::path::Path;
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, TransactionBehavior};

use super::sql::{Db, Row, Value};
use crate::{RelayError, Result};

pub const FILE_NAME: &str = "relay.db";

/// Each entry migrates from version `i` to `i + 1`. Forward-only.
const MIGRATIONS: &[&str] = &[
    // 1: environments, credentials, destinations, sources, messages and their deliveries.
    r#"CREATE TABLE relay_environments (
        id TEXT PRIMARY KEY,
        organization INTEGER NOT NULL,
        name TEXT NOT NULL,
        flag TEXT NOT NULL,
        UNIQUE (organization, flag)
    );
    CREATE TABLE relay_credentials (
        id TEXT PRIMARY KEY,
        environment_id TEXT NOT NULL REFERENCES relay_environments (id),
        fields TEXT NOT NULL,
        secrets TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE INDEX relay_credentials_environment ON relay_credentials (environment_id);
    CREATE TABLE relay_destinations (
        id TEXT PRIMARY KEY,
        environment_id TEXT NOT NULL REFERENCES relay_environments (id),
        name TEXT NOT NULL,
        kind TEXT NOT NULL,
        endpoint TEXT,
        verification_token TEXT,
        auth_credential TEXT REFERENCES relay_credentials (id),
        cloud TEXT,
        setup_state TEXT,
        verified INTEGER NOT NULL,
        verification_error TEXT,
        verified_at INTEGER,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE INDEX relay_destinations_environment ON relay_destinations (environment_id);
    CREATE TABLE relay_sources (
        id TEXT PRIMARY KEY,
        environment_id TEXT NOT NULL REFERENCES relay_environments (id),
        name TEXT NOT NULL,
        key_hash TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE relay_messages (
        id TEXT PRIMARY KEY,
        environment_id TEXT NOT NULL,
        source_id TEXT NOT NULL,
        body TEXT NOT NULL,
        patient_key TEXT,
        received_at INTEGER NOT NULL
    );
    -- One per message and destination (Redox's log). `seq` orders a patient's deliveries.
    CREATE TABLE relay_deliveries (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        message_id TEXT NOT NULL REFERENCES relay_messages (id),
        destination_id TEXT NOT NULL,
        patient_key TEXT,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        round_attempts INTEGER NOT NULL,
        next_at INTEGER NOT NULL,
        lease_owner TEXT,
        lease_until INTEGER,
        error TEXT,
        outcome TEXT,
        updated_at INTEGER NOT NULL
    );
    CREATE INDEX relay_deliveries_due ON relay_deliveries (state, next_at);
    CREATE INDEX relay_deliveries_order ON relay_deliveries (destination_id, patient_key, state);
    CREATE INDEX relay_deliveries_message ON relay_deliveries (message_id);
    CREATE TABLE relay_attempts (
        delivery_id TEXT NOT NULL,
        n INTEGER NOT NULL,
        at INTEGER NOT NULL,
        status TEXT NOT NULL,
        http_status INTEGER,
        error TEXT,
        PRIMARY KEY (delivery_id, n)
    );"#,
];

/// Opens (creating and migrating if needed) `relay.db` in `data_dir`.
pub fn open(data_dir: &Path) -> Result<Connection> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| RelayError::Database(format!("cannot create {}: {e}", data_dir.display())))?;
    let path = data_dir.join(FILE_NAME);
    // The file holds client secrets: readable by its owner only.
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| RelayError::Database(format!("cannot open {}: {e}", path.display())))?;
    }
    let mut conn = Connection::open(&path)?;
    conn.busy_timeout(Duration::from_millis(5000))?;
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

fn migrate(conn: &mut Connection) -> Result<()> {
    let newest = MIGRATIONS.len() as i64;
    let current: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if current == newest {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current: i64 = tx.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if current > newest {
        return Err(RelayError::Database(format!(
            "{FILE_NAME} has schema version {current}, newer than this build's {newest}; upgrade Fhirside instead"
        )));
    }
    for sql in MIGRATIONS.iter().skip(current as usize) {
        tx.execute_batch(sql)?;
    }
    tx.pragma_update(None, "user_version", newest)?;
    tx.commit()?;
    Ok(())
}

/// Runs `f` in an IMMEDIATE transaction and commits it.
pub fn write<T>(conn: &mut Connection, f: impl FnOnce(&mut dyn Db) -> Result<T>) -> Result<T> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let value = f(&mut SqliteDb(&tx))?;
    tx.commit()?;
    Ok(value)
}

/// A connection, or a transaction (which dereferences to one), as a [`Db`].
pub struct SqliteDb<'a>(pub &'a Connection);

impl Db for SqliteDb<'_> {
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
            let values = (0..columns)
                .map(|i| {
                    Ok(match row.get_ref(i)? {
                        ValueRef::Null => Value::Null,
                        ValueRef::Integer(n) => Value::Integer(n),
                        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                        other => {
                            return Err(RelayError::Database(format!(
                                "unexpected {:?} in column {i}",
                                other.data_type()
                            )))
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
        })
    }
}

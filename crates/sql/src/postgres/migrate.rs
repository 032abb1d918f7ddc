//! A store's tables in the shared database and their migrations.

use super::session::Session;
use crate::{Result, Value};

/// A store's tables in a shared PostgreSQL database, beside the resource store's: all named
/// `<prefix>_*`, two of them made and kept by this plumbing rather than by the store's migrations:
/// - `<prefix>_migration`, the ledger of the migrations applied;
/// - `<prefix>_version`, one row that every write transaction bumps first: its row lock makes
///   writers take turns across replicas (as SQLite's IMMEDIATE transactions do across processes),
///   so that a read-then-write inside one is safe under READ COMMITTED; and the number it holds
///   tells a replica that another one wrote.
pub struct Tables {
    /// A plain SQL identifier (`identity`, `relay`): it is written into statements as it is.
    pub prefix: &'static str,
    /// Applied in order of `version`; forward-only.
    pub migrations: &'static [Migration],
}

/// A migration: what it does and its SQL.
pub struct Migration {
    pub version: i64,
    pub description: &'static str,
    pub sql: &'static str,
}

/// Brings the tables to this build's schema under the migration lock, refusing a database
/// migrated by a newer build. One lock per store and schema (as the resource store's), so that
/// replicas starting together migrate once and installations in other schemas do not wait.
pub(super) fn migrate(session: &mut Session) -> Result<()> {
    let lock_key = format!("hashtextextended('fhirside-{}-migrate:' || current_schema(), 0)", session.tables.prefix);
    session.batch(&format!("SELECT pg_advisory_lock({lock_key})"))?;
    let result = migrate_locked(session);
    // The lock is the session's: if it cannot be released, the connection goes, and the lock
    // with it.
    if session.batch(&format!("SELECT pg_advisory_unlock({lock_key})")).is_err() {
        session.disconnect();
    }
    result
}

fn migrate_locked(session: &mut Session) -> Result<()> {
    let Tables { prefix, migrations } = *session.tables;
    // `IF NOT EXISTS`, and the row only where there is none: a database set up before keeps
    // its ledger and its version (earlier builds made the version row in their first migration).
    session.batch(&format!(
        "CREATE TABLE IF NOT EXISTS {prefix}_migration \
             (version BIGINT PRIMARY KEY, description TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now());
         CREATE TABLE IF NOT EXISTS {prefix}_version \
             (one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one), version BIGINT NOT NULL);
         INSERT INTO {prefix}_version (version) SELECT 0 WHERE NOT EXISTS (SELECT FROM {prefix}_version);"
    ))?;
    let current = session.query(false, &format!("SELECT coalesce(max(version), 0) FROM {prefix}_migration"), &[])?;
    let current = current.first().map(|row| row.int(0)).transpose()?.unwrap_or(0);
    let newest = migrations.last().map_or(0, |m| m.version);
    if current > newest {
        return Err(crate::Error::Database(format!(
            "the database's {prefix} tables have schema version {current}, newer than this build's {newest}; \
             upgrade Fhirside instead of downgrading it"
        )));
    }
    let record = format!("INSERT INTO {prefix}_migration (version, description) VALUES (?1, ?2)");
    for migration in migrations.iter().filter(|m| m.version > current) {
        session.batch("BEGIN")?;
        session.in_transaction = true;
        let applied = session.batch(migration.sql).and_then(|()| {
            session.execute(true, &record, &[Value::Integer(migration.version), Value::from(migration.description)])
        });
        match applied {
            Ok(_) => session.commit()?,
            Err(e) => {
                session.rollback();
                return Err(e);
            }
        }
    }
    Ok(())
}

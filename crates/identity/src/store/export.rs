//! Moving an installation's identity to PostgreSQL (`fhirside migrate-store`): the tenant id and
//! settings, the signing keys, apps with their secrets' hashes and public keys, users with their
//! password hashes, and role assignments — so that tokens already issued stay valid and every
//! app's credentials keep working.
//!
//! One-time codes and refresh tokens are not moved: a code lives minutes, and a user whose refresh
//! token was issued by the old store signs in again.

use fhirside_sql::{Db, PgConnection, Row};

use super::rows::{self, APP_COLUMNS, ASSIGNMENT_COLUMNS};
use super::{IdentityError, IdentityStore, Result};

/// What is copied: each table with its columns (read and written in that order) and the order its
/// rows are copied in, so that lists keep their order on the target.
const TABLES: &[(&str, &str, &str)] = &[
    ("identity_settings", "key, value", "key"),
    ("identity_signing_keys", "kid, created_at, retired_at, pkcs8", "created_at, kid"),
    ("identity_apps", APP_COLUMNS, "created_at, rowid"),
    (
        "identity_secrets",
        "key_id, app_object_id, display_name, hint, hash, created_at, expires_at",
        "created_at, rowid",
    ),
    ("identity_users", "object_id, upn, display_name, password_hash, fhir_user, created_at", "created_at, rowid"),
    ("identity_role_assignments", ASSIGNMENT_COLUMNS, "created_at, rowid"),
];

/// An installation's identity as stored, read from one consistent state of its store.
pub struct IdentityExport {
    tenant_id: String,
    /// The rows of each of [`TABLES`], in its order.
    tables: Vec<Vec<Row>>,
}

/// How many of each thing an export holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ImportCounts {
    pub signing_keys: usize,
    pub apps: usize,
    pub secrets: usize,
    pub users: usize,
    pub role_assignments: usize,
}

impl IdentityExport {
    pub fn tenant_id(&self) -> &str {
        &self.tenant_id
    }

    pub fn counts(&self) -> ImportCounts {
        let count = |table: &str| {
            TABLES.iter().zip(&self.tables).find(|((name, _, _), _)| *name == table).map_or(0, |(_, rows)| rows.len())
        };
        ImportCounts {
            signing_keys: count("identity_signing_keys"),
            apps: count("identity_apps"),
            secrets: count("identity_secrets"),
            users: count("identity_users"),
            role_assignments: count("identity_role_assignments"),
        }
    }
}

impl IdentityStore {
    /// Everything the identity store holds but one-time codes and refresh tokens. Read inside a
    /// write transaction, so that no other process changes the store half-way through.
    pub fn export(&self) -> Result<IdentityExport> {
        let tables = self.write(|db| {
            TABLES
                .iter()
                .map(|(table, columns, order)| {
                    Ok(db.query(&format!("SELECT {columns} FROM {table} ORDER BY {order}"), &[])?)
                })
                .collect::<Result<Vec<_>>>()
        })?;
        Ok(IdentityExport { tenant_id: self.tenant_id.clone(), tables })
    }
}

/// The identity tables of a PostgreSQL database, as the target of an [`IdentityExport`].
pub struct IdentityImport {
    conn: PgConnection,
}

impl IdentityImport {
    /// Connects to the database at `url` and brings its identity tables to this build's schema.
    pub fn connect(url: &str) -> Result<IdentityImport> {
        Ok(IdentityImport { conn: super::postgres::open(url)? })
    }

    /// Why `export` cannot be imported here, if it cannot: the target holds apps, users or role
    /// assignments already, or another tenant. Changes nothing.
    pub fn check(&self, export: &IdentityExport) -> Result<()> {
        self.conn.read(|db| refusal(db, export))
    }

    /// Copies `export` in one transaction (checked again inside it). The target's signing keys, if
    /// any, are replaced by the export's; its settings take the export's values.
    pub fn import(&self, export: &IdentityExport) -> Result<ImportCounts> {
        self.conn.write(|db| -> Result<()> {
            refusal(db, export)?;
            db.execute("DELETE FROM identity_signing_keys", &[])?;
            for ((table, columns, _), rows) in TABLES.iter().zip(&export.tables) {
                let width = columns.split(',').count();
                let values = (1..=width).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ");
                let upsert = match *table {
                    "identity_settings" => " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    _ => "",
                };
                let sql = format!("INSERT INTO {table} ({columns}) VALUES ({values}){upsert}");
                for row in rows {
                    db.execute(&sql, &row.0)?;
                }
            }
            Ok(())
        })?;
        Ok(export.counts())
    }
}

fn refusal(db: &mut dyn Db, export: &IdentityExport) -> Result<()> {
    for (table, what) in
        [("identity_apps", "apps"), ("identity_users", "users"), ("identity_role_assignments", "role assignments")]
    {
        let held = db.query_one(&format!("SELECT count(*) FROM {table}"), &[])?.int(0)?;
        if held > 0 {
            return Err(IdentityError::Conflict(format!(
                "the target's identity tables already hold {held} {what}: identity moves only to a database \
                 without apps, users or role assignments"
            )));
        }
    }
    match rows::tenant(db)? {
        Some(tenant) if tenant != export.tenant_id => Err(IdentityError::Conflict(format!(
            "the target already has another tenant ({tenant}) than the source ({})",
            export.tenant_id
        ))),
        _ => Ok(()),
    }
}

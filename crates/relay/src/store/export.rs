//! Moving an installation's relay state to PostgreSQL (`fhirside migrate-store`): environments,
//! credentials (with their secrets), destinations, sources, messages, deliveries and attempts, so
//! that queued messages are delivered from the new store. Leases are not moved: the worker that
//! held them is gone with the embedded installation.

use fhirside_sql::Value;

use super::RelayStore;
use crate::{RelayError, Result};

/// Each table with its columns (read and written in that order) and the order its rows are copied
/// in, so that lists and the delivery queue keep their order on the target.
const TABLES: &[(&str, &str, &str)] = &[
    ("relay_environments", "id, organization, name, flag", "rowid"),
    ("relay_credentials", "id, environment_id, fields, secrets, created_at, updated_at", "rowid"),
    (
        "relay_destinations",
        "id, environment_id, name, kind, endpoint, verification_token, auth_credential, cloud, setup_state, \
         verified, verification_error, verified_at, created_at, updated_at",
        "rowid",
    ),
    ("relay_sources", "id, environment_id, name, key_hash, created_at", "rowid"),
    ("relay_messages", "id, environment_id, source_id, body, patient_key, received_at", "rowid"),
    (
        "relay_deliveries",
        "id, message_id, destination_id, patient_key, state, attempts, round_attempts, next_at, error, outcome, \
         updated_at",
        "seq",
    ),
    ("relay_attempts", "delivery_id, n, at, status, http_status, error", "rowid"),
];

/// How many messages and deliveries were moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MoveCounts {
    pub destinations: usize,
    pub messages: usize,
    pub pending: usize,
}

impl RelayStore {
    /// Whether the store holds no relay state (no environment was ever listed).
    pub fn is_empty(&self) -> Result<bool> {
        self.read(|db| Ok(db.query_opt("SELECT id FROM relay_environments LIMIT 1", &[])?.is_none()))
    }

    /// Copies everything from this (embedded) store into `target`, which must hold no relay state
    /// yet, in one transaction on the target.
    pub fn move_to(&self, target: &RelayStore) -> Result<MoveCounts> {
        let tables: Vec<Vec<Vec<Value>>> = self.read(|db| {
            TABLES
                .iter()
                .map(|(table, columns, order)| {
                    Ok(db
                        .query(&format!("SELECT {columns} FROM {table} ORDER BY {order}"), &[])?
                        .into_iter()
                        .map(|r| r.0)
                        .collect())
                })
                .collect::<Result<_>>()
        })?;
        target.write(|db| {
            if db.query_opt("SELECT id FROM relay_environments LIMIT 1", &[])?.is_some() {
                return Err(RelayError::Conflict("the target already holds relay state".into()));
            }
            for ((table, columns, _), rows) in TABLES.iter().zip(&tables) {
                let slots: Vec<String> = (1..=columns.split(',').count()).map(|i| format!("?{i}")).collect();
                let sql = format!("INSERT INTO {table} ({columns}) VALUES ({})", slots.join(", "));
                for row in rows {
                    db.execute(&sql, row)?;
                }
            }
            Ok(())
        })?;
        let count = |i: usize| tables[i].len();
        let pending = tables[5].iter().filter(|row| row.get(4) == Some(&Value::Text("pending".into()))).count();
        Ok(MoveCounts { destinations: count(2), messages: count(4), pending })
    }
}

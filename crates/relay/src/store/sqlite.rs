//! The relay's embedded backend: `relay.db` in the data directory, in WAL mode with
//! `synchronous=FULL`, so that a message is on disk before `POST …/messages` answers. The server
//! and the `fhirside relay` CLI share it, as they share `identity.db`.

use std::path::Path;

use rusqlite::Connection;

use crate::Result;

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
    Ok(fhirside_sql::sqlite::open(data_dir, FILE_NAME, MIGRATIONS)?)
}

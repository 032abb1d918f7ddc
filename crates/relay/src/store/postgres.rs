//! The relay's state on PostgreSQL, for replicas that share one database: tables named `relay_*`
//! beside the resource store's, with migrations of their own, reached through
//! [`fhirside_sql::PgConnection`]'s session thread as the identity store's are. Write transactions
//! first bump the one row of `relay_version`, whose lock makes writers take turns across replicas,
//! so read-then-write operations are safe under READ COMMITTED.

use fhirside_sql::{Migration, PgConnection, Tables};

use crate::Result;

const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "environments, credentials, destinations, sources, messages, deliveries, attempts",
    sql: r#"
    CREATE TABLE relay_environments (
        id TEXT PRIMARY KEY,
        organization BIGINT NOT NULL,
        name TEXT NOT NULL,
        flag TEXT NOT NULL,
        UNIQUE (organization, flag)
    );
    CREATE TABLE relay_credentials (
        id TEXT PRIMARY KEY,
        environment_id TEXT NOT NULL REFERENCES relay_environments (id),
        fields TEXT NOT NULL,
        secrets TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
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
        verified BIGINT NOT NULL,
        verification_error TEXT,
        verified_at BIGINT,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
    );
    CREATE INDEX relay_destinations_environment ON relay_destinations (environment_id);
    CREATE TABLE relay_sources (
        id TEXT PRIMARY KEY,
        environment_id TEXT NOT NULL REFERENCES relay_environments (id),
        name TEXT NOT NULL,
        key_hash TEXT NOT NULL UNIQUE,
        created_at BIGINT NOT NULL
    );
    CREATE TABLE relay_messages (
        id TEXT PRIMARY KEY,
        environment_id TEXT NOT NULL,
        source_id TEXT NOT NULL,
        body TEXT NOT NULL,
        patient_key TEXT,
        received_at BIGINT NOT NULL
    );
    CREATE TABLE relay_deliveries (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        message_id TEXT NOT NULL REFERENCES relay_messages (id),
        destination_id TEXT NOT NULL,
        patient_key TEXT,
        state TEXT NOT NULL,
        attempts BIGINT NOT NULL,
        round_attempts BIGINT NOT NULL,
        next_at BIGINT NOT NULL,
        lease_owner TEXT,
        lease_until BIGINT,
        error TEXT,
        outcome TEXT,
        updated_at BIGINT NOT NULL
    );
    CREATE INDEX relay_deliveries_due ON relay_deliveries (state, next_at);
    CREATE INDEX relay_deliveries_order ON relay_deliveries (destination_id, patient_key, state);
    CREATE INDEX relay_deliveries_message ON relay_deliveries (message_id);
    CREATE TABLE relay_attempts (
        delivery_id TEXT NOT NULL,
        n BIGINT NOT NULL,
        at BIGINT NOT NULL,
        status TEXT NOT NULL,
        http_status BIGINT,
        error TEXT,
        PRIMARY KEY (delivery_id, n)
    );
    "#,
}];

const TABLES: Tables = Tables { prefix: "relay", migrations: MIGRATIONS };

/// Connects to the database at `url` and migrates the relay tables.
pub(super) fn open(url: &str) -> Result<PgConnection> {
    Ok(PgConnection::open(url, &TABLES)?)
}

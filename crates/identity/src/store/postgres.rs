//! The identity store on PostgreSQL, for replicas that share one database: tables named
//! `identity_*` beside the resource store's, with migrations of their own, reached through
//! [`fhirside_sql::PgConnection`]'s session thread (its module says why a thread).
//!
//! Write transactions first bump the one row of `identity_version`: its row lock makes writers
//! take turns across replicas (as SQLite's IMMEDIATE transactions do across processes), so a
//! read-then-write inside one is safe under READ COMMITTED; and the number it holds is what
//! [`super::IdentityStore::data_version`] polls to notice other replicas' changes.

use fhirside_sql::{Migration, PgConnection, Tables};

use super::Result;

const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "tenant settings, signing keys, apps, secrets, users, role assignments, codes, refresh tokens",
    // `rowid` is the insertion order that SQLite's tables have implicitly (lists are ordered by
    // creation time, then by it). User names are unique and found regardless of case, as SQLite's
    // NOCASE column does, through an index on lower(upn).
    sql: r#"
    CREATE TABLE identity_settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE identity_signing_keys (
        kid TEXT PRIMARY KEY,
        created_at BIGINT NOT NULL,
        retired_at BIGINT,
        pkcs8 BYTEA NOT NULL
    );
    CREATE UNIQUE INDEX identity_signing_keys_current ON identity_signing_keys ((retired_at IS NULL))
        WHERE retired_at IS NULL;
    CREATE TABLE identity_apps (
        rowid BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
        object_id TEXT PRIMARY KEY,
        client_id TEXT NOT NULL UNIQUE,
        display_name TEXT NOT NULL,
        kind TEXT NOT NULL,
        redirect_uris TEXT NOT NULL,
        jwks TEXT,
        created_at BIGINT NOT NULL
    );
    CREATE TABLE identity_secrets (
        rowid BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
        key_id TEXT PRIMARY KEY,
        app_object_id TEXT NOT NULL REFERENCES identity_apps (object_id) ON DELETE CASCADE,
        display_name TEXT NOT NULL,
        hint TEXT NOT NULL,
        hash TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL
    );
    CREATE INDEX identity_secrets_app ON identity_secrets (app_object_id);
    CREATE TABLE identity_users (
        rowid BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
        object_id TEXT PRIMARY KEY,
        upn TEXT NOT NULL,
        display_name TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        fhir_user TEXT,
        created_at BIGINT NOT NULL
    );
    CREATE UNIQUE INDEX identity_users_upn ON identity_users (lower(upn));
    CREATE TABLE identity_role_assignments (
        rowid BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
        id TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        role_definition_id TEXT NOT NULL,
        principal_id TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        UNIQUE (role, principal_id)
    );
    CREATE INDEX identity_role_assignments_principal ON identity_role_assignments (principal_id);
    CREATE TABLE identity_codes (
        hash TEXT PRIMARY KEY,
        "grant" TEXT NOT NULL,
        expires_at BIGINT NOT NULL,
        used_at BIGINT
    );
    CREATE INDEX identity_codes_expiry ON identity_codes (expires_at);
    CREATE TABLE identity_refresh_tokens (
        hash TEXT PRIMARY KEY,
        "grant" TEXT NOT NULL,
        expires_at BIGINT NOT NULL,
        used_at BIGINT
    );
    CREATE INDEX identity_refresh_tokens_expiry ON identity_refresh_tokens (expires_at);
    "#,
}];

const TABLES: Tables = Tables { prefix: "identity", migrations: MIGRATIONS };

/// Connects to the database at `url` and migrates the identity tables.
pub(super) fn open(url: &str) -> Result<PgConnection> {
    Ok(PgConnection::open(url, &TABLES)?)
}

/// The number every write transaction bumps.
pub(super) fn data_version(conn: &PgConnection) -> Result<i64> {
    conn.read(|db| Ok(db.query_one("SELECT version FROM identity_version", &[])?.int(0)?))
}

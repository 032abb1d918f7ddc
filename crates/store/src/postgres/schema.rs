//! The PostgreSQL schema, as numbered forward-only migrations.
//!
//! The layout is the embedded store's (one row per resource version, the current one with a NULL
//! `valid_to`; one index table per kind of value whose rows point at the current version's `rid`),
//! in PostgreSQL's types: `BIGINT` for every integer the store binds as `i64`, `DOUBLE PRECISION`
//! for numbers, `tsvector` for full text, and the `"C"` collation on text so that comparisons and
//! sort order are bytewise, as in SQLite — the string prefix match is a range ending in U+10FFFF,
//! which only a bytewise collation keeps correct and indexable.
//!
//! Replicas that start together must not migrate twice: [`migrate`] holds a session advisory lock
//! (one per schema) while it applies what is missing, each migration in its own transaction with
//! its row in `fhirside_migration`, and then, on a Citus database, distributes the tables
//! (`citus.rs`).

use super::citus::{self, Distribution};
use super::pool::Conn;
use crate::model::StoreError;

/// A migration: what it does (for `fhirside db status`) and its SQL.
pub struct Migration {
    pub version: i64,
    pub description: &'static str,
    sql: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "resources with history, search index tables, full text, settings",
        sql: r#"
    CREATE TABLE resource (
        rid BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        type TEXT COLLATE "C" NOT NULL,
        id TEXT COLLATE "C" NOT NULL,
        version BIGINT NOT NULL,
        last_updated BIGINT NOT NULL,
        valid_to BIGINT,
        deleted SMALLINT NOT NULL,
        method SMALLINT NOT NULL,
        body BYTEA
    );
    CREATE UNIQUE INDEX resource_version ON resource (type, id, version);
    CREATE UNIQUE INDEX resource_current ON resource (type, id) WHERE valid_to IS NULL;
    CREATE INDEX resource_live ON resource (type, rid) WHERE valid_to IS NULL AND deleted = 0;
    CREATE INDEX resource_system_history ON resource (last_updated, rid);
    CREATE INDEX resource_type_history ON resource (type, last_updated, rid);

    CREATE TABLE token_index (
        rid BIGINT NOT NULL, param TEXT COLLATE "C" NOT NULL, grp BIGINT NOT NULL DEFAULT 0,
        system TEXT COLLATE "C", code TEXT COLLATE "C" NOT NULL
    );
    CREATE INDEX token_index_value ON token_index (param, code, system, rid);
    CREATE INDEX token_index_rid ON token_index (rid, param, grp);

    CREATE TABLE date_index (
        rid BIGINT NOT NULL, param TEXT COLLATE "C" NOT NULL, grp BIGINT NOT NULL DEFAULT 0,
        low BIGINT NOT NULL, high BIGINT NOT NULL
    );
    CREATE INDEX date_index_low ON date_index (param, low, high, rid);
    CREATE INDEX date_index_rid ON date_index (rid, param, grp);

    CREATE TABLE reference_index (
        rid BIGINT NOT NULL, param TEXT COLLATE "C" NOT NULL, grp BIGINT NOT NULL DEFAULT 0,
        target_type TEXT COLLATE "C", target_id TEXT COLLATE "C", url TEXT COLLATE "C"
    );
    CREATE INDEX reference_index_target ON reference_index (target_id, target_type, param, rid);
    CREATE INDEX reference_index_url ON reference_index (url, param) WHERE url IS NOT NULL;
    CREATE INDEX reference_index_rid ON reference_index (rid, param, grp);

    CREATE TABLE string_index (
        rid BIGINT NOT NULL, param TEXT COLLATE "C" NOT NULL, grp BIGINT NOT NULL DEFAULT 0,
        normalized TEXT COLLATE "C" NOT NULL, exact TEXT COLLATE "C" NOT NULL
    );
    CREATE INDEX string_index_value ON string_index (param, normalized, rid);
    CREATE INDEX string_index_rid ON string_index (rid, param, grp);

    CREATE TABLE number_index (
        rid BIGINT NOT NULL, param TEXT COLLATE "C" NOT NULL, grp BIGINT NOT NULL DEFAULT 0,
        value DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX number_index_value ON number_index (param, value, rid);
    CREATE INDEX number_index_rid ON number_index (rid, param, grp);

    CREATE TABLE quantity_index (
        rid BIGINT NOT NULL, param TEXT COLLATE "C" NOT NULL, grp BIGINT NOT NULL DEFAULT 0,
        system TEXT COLLATE "C", code TEXT COLLATE "C",
        low DOUBLE PRECISION NOT NULL, high DOUBLE PRECISION NOT NULL,
        canonical_unit TEXT COLLATE "C", canonical_low DOUBLE PRECISION, canonical_high DOUBLE PRECISION
    );
    CREATE INDEX quantity_index_value ON quantity_index (param, code, low, high, rid);
    CREATE INDEX quantity_index_canonical ON quantity_index (param, canonical_unit, canonical_low, canonical_high, rid)
        WHERE canonical_unit IS NOT NULL;
    CREATE INDEX quantity_index_rid ON quantity_index (rid, param, grp);

    CREATE TABLE uri_index (
        rid BIGINT NOT NULL, param TEXT COLLATE "C" NOT NULL, grp BIGINT NOT NULL DEFAULT 0,
        uri TEXT COLLATE "C" NOT NULL
    );
    CREATE INDEX uri_index_value ON uri_index (param, uri, rid);
    CREATE INDEX uri_index_rid ON uri_index (rid, param, grp);

    CREATE TABLE compartment_index (
        rid BIGINT NOT NULL, compartment TEXT COLLATE "C" NOT NULL, id TEXT COLLATE "C" NOT NULL
    );
    CREATE INDEX compartment_index_member ON compartment_index (id, compartment, rid);
    CREATE INDEX compartment_index_rid ON compartment_index (rid);

    CREATE TABLE text_index (rid BIGINT PRIMARY KEY, narrative TSVECTOR NOT NULL, content TSVECTOR NOT NULL);
    CREATE INDEX text_index_narrative ON text_index USING GIN (narrative);
    CREATE INDEX text_index_content ON text_index USING GIN (content);

    CREATE TABLE setting (key TEXT COLLATE "C" PRIMARY KEY, value TEXT NOT NULL);
    "#,
    },
    Migration {
        version: 2,
        description: "the job table that replicas lease background work from",
        sql: r#"
    CREATE TABLE job (
        id TEXT COLLATE "C" PRIMARY KEY,
        kind TEXT COLLATE "C" NOT NULL,
        status TEXT COLLATE "C" NOT NULL,
        singleton BOOLEAN NOT NULL DEFAULT FALSE,
        definition TEXT NOT NULL,
        checkpoint TEXT,
        result TEXT,
        error TEXT,
        owner TEXT,
        lease_until BIGINT,
        attempts BIGINT NOT NULL DEFAULT 0,
        created BIGINT NOT NULL,
        updated BIGINT NOT NULL
    );
    CREATE INDEX job_ready ON job (kind, created) WHERE status IN ('queued', 'running');
    CREATE UNIQUE INDEX job_singleton ON job (kind) WHERE singleton AND status IN ('queued', 'running');
    "#,
    },
    Migration {
        version: 3,
        description: "shard keys: resource_key, and shard_key on resource and every index table (for Citus)",
        sql: SHARD_KEYS,
    },
];

/// Migration 3: every row of `resource` and of the index tables carries its resource's shard key
/// (`crate::shard`), and every unique key includes it, as Citus requires of distributed tables;
/// `resource_key` finds a resource's shard by `Type/id` and keeps `Type/id` unique across shards.
///
/// An existing database is placed by what its index says now: each resource by the Patient
/// compartments of its current version (the rule of `shard::key`, in SQL), every version of it on
/// that shard. The changed tables lose their indexes first, so that the backfill does not maintain
/// them row by row, and get them back at the end. The primary key is `(shard_key, rid)`; a plain
/// index on `rid` alone keeps walks in row id order (a reindex; a search merging a clause's row ids
/// with the type's resources) costed as before, since the planner trusts the order of a
/// multi-column index less. The unique keys on `Type/id` put the shard key last, so that chains,
/// includes and `$everything`, which find targets by `Type/id` on every shard, read them too. Value
/// indexes and `resource_live` carry the shard key as an included column, so that a clause still
/// collects, and a count still walks, `(shard_key, rid)` pairs from an index alone.
const SHARD_KEYS: &str = r#"
    CREATE TABLE resource_key (
        type TEXT COLLATE "C" NOT NULL,
        id TEXT COLLATE "C" NOT NULL,
        shard_key TEXT COLLATE "C" NOT NULL,
        PRIMARY KEY (type, id)
    );
    INSERT INTO resource_key (type, id, shard_key)
    SELECT r.type, r.id, CASE WHEN r.type = 'Patient' THEN r.id ELSE coalesce(p.patient, r.type || '/' || r.id) END
    FROM resource r
    LEFT JOIN (SELECT rid, min(id) AS patient FROM compartment_index WHERE compartment = 'Patient'
               GROUP BY rid HAVING count(DISTINCT id) = 1) p ON p.rid = r.rid
    WHERE r.valid_to IS NULL;

    ALTER TABLE resource DROP CONSTRAINT resource_pkey;
    DROP INDEX resource_version, resource_current, resource_live, resource_system_history, resource_type_history;
    ALTER TABLE resource ADD COLUMN shard_key TEXT COLLATE "C";
    UPDATE resource r SET shard_key = k.shard_key FROM resource_key k WHERE k.type = r.type AND k.id = r.id;
    ALTER TABLE resource ALTER COLUMN shard_key SET NOT NULL;
    ALTER TABLE resource ADD PRIMARY KEY (shard_key, rid);
    CREATE INDEX resource_rid ON resource (rid);
    CREATE UNIQUE INDEX resource_version ON resource (type, id, version, shard_key);
    CREATE UNIQUE INDEX resource_current ON resource (type, id, shard_key) WHERE valid_to IS NULL;
    CREATE INDEX resource_live ON resource (type, rid) INCLUDE (shard_key) WHERE valid_to IS NULL AND deleted = 0;
    CREATE INDEX resource_system_history ON resource (last_updated, rid);
    CREATE INDEX resource_type_history ON resource (type, last_updated, rid);

    DROP INDEX token_index_value, token_index_rid, date_index_low, date_index_rid,
        reference_index_target, reference_index_url, reference_index_rid, string_index_value, string_index_rid,
        number_index_value, number_index_rid, quantity_index_value, quantity_index_canonical, quantity_index_rid,
        uri_index_value, uri_index_rid, compartment_index_member, compartment_index_rid,
        text_index_narrative, text_index_content;
    ALTER TABLE text_index DROP CONSTRAINT text_index_pkey;
    DO $$
    DECLARE
        t TEXT;
    BEGIN
        FOREACH t IN ARRAY ARRAY['token_index', 'date_index', 'reference_index', 'string_index', 'number_index',
                                 'quantity_index', 'uri_index', 'compartment_index', 'text_index'] LOOP
            EXECUTE format('ALTER TABLE %I ADD COLUMN shard_key TEXT COLLATE "C"', t);
            EXECUTE format('UPDATE %I x SET shard_key = r.shard_key FROM resource r WHERE r.rid = x.rid', t);
            -- Rows of a version that no longer exists cannot be placed; no search reaches them.
            EXECUTE format('DELETE FROM %I WHERE shard_key IS NULL', t);
            EXECUTE format('ALTER TABLE %I ALTER COLUMN shard_key SET NOT NULL', t);
        END LOOP;
    END
    $$;
    ALTER TABLE text_index ADD PRIMARY KEY (shard_key, rid);
    CREATE INDEX text_index_narrative ON text_index USING GIN (narrative);
    CREATE INDEX text_index_content ON text_index USING GIN (content);
    CREATE INDEX token_index_value ON token_index (param, code, system, rid) INCLUDE (shard_key);
    CREATE INDEX token_index_rid ON token_index (rid, param, grp);
    CREATE INDEX date_index_low ON date_index (param, low, high, rid) INCLUDE (shard_key);
    CREATE INDEX date_index_rid ON date_index (rid, param, grp);
    CREATE INDEX reference_index_target ON reference_index (target_id, target_type, param, rid) INCLUDE (shard_key);
    CREATE INDEX reference_index_url ON reference_index (url, param) WHERE url IS NOT NULL;
    CREATE INDEX reference_index_rid ON reference_index (rid, param, grp);
    CREATE INDEX string_index_value ON string_index (param, normalized, rid) INCLUDE (shard_key);
    CREATE INDEX string_index_rid ON string_index (rid, param, grp);
    CREATE INDEX number_index_value ON number_index (param, value, rid) INCLUDE (shard_key);
    CREATE INDEX number_index_rid ON number_index (rid, param, grp);
    CREATE INDEX quantity_index_value ON quantity_index (param, code, low, high, rid) INCLUDE (shard_key);
    CREATE INDEX quantity_index_canonical ON quantity_index (param, canonical_unit, canonical_low, canonical_high, rid)
        INCLUDE (shard_key) WHERE canonical_unit IS NOT NULL;
    CREATE INDEX quantity_index_rid ON quantity_index (rid, param, grp);
    CREATE INDEX uri_index_value ON uri_index (param, uri, rid) INCLUDE (shard_key);
    CREATE INDEX uri_index_rid ON uri_index (rid, param, grp);
    CREATE INDEX compartment_index_member ON compartment_index (id, compartment, rid) INCLUDE (shard_key);
    CREATE INDEX compartment_index_rid ON compartment_index (rid);
"#;

/// Where a database's schema stands relative to this build.
#[derive(Debug, Clone)]
pub struct SchemaStatus {
    /// The newest migration applied (0 for an empty database).
    pub current: i64,
    /// The newest migration this build knows.
    pub newest: i64,
    /// Migrations this build would apply, oldest first.
    pub pending: Vec<(i64, &'static str)>,
    /// Whether the database is Citus, and which tables are distributed.
    pub distribution: Distribution,
}

const LEDGER: &str = "CREATE TABLE IF NOT EXISTS fhirside_migration (
    version BIGINT PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)";

/// One advisory lock per schema, so that installations in different schemas of one database do
/// not wait for each other.
const LOCK: &str = "SELECT pg_advisory_lock(hashtextextended('fhirside-migrate:' || current_schema(), 0))";
const UNLOCK: &str = "SELECT pg_advisory_unlock(hashtextextended('fhirside-migrate:' || current_schema(), 0))";

pub(super) async fn status(conn: &mut Conn) -> Result<SchemaStatus, StoreError> {
    let exists = conn.query_one("SELECT to_regclass('fhirside_migration') IS NOT NULL", &[]).await?.get::<_, bool>(0);
    let current = if exists {
        conn.query_one("SELECT coalesce(max(version), 0) FROM fhirside_migration", &[]).await?.get::<_, i64>(0)
    } else {
        0
    };
    let newest = MIGRATIONS.last().map_or(0, |m| m.version);
    let pending = MIGRATIONS.iter().filter(|m| m.version > current).map(|m| (m.version, m.description)).collect();
    let distribution = citus::inspect(conn).await?;
    Ok(SchemaStatus { current, newest, pending, distribution })
}

/// Applies the missing migrations under the migration lock and returns the resulting status.
/// A database migrated by a newer build is refused.
pub(super) async fn migrate(conn: &mut Conn) -> Result<SchemaStatus, StoreError> {
    conn.batch(LOCK).await?;
    let result = migrate_locked(conn).await;
    // The lock is the session's: a failed unlock would keep other replicas waiting, so the
    // connection is not reused in that case.
    if conn.batch(UNLOCK).await.is_err() {
        conn.poisoned = true;
    }
    result
}

async fn migrate_locked(conn: &mut Conn) -> Result<SchemaStatus, StoreError> {
    apply(conn, i64::MAX).await?;
    citus::distribute(conn).await?;
    status(conn).await
}

/// A database as an older build left it, for the upgrade test: the migrations up to `version`.
#[cfg(test)]
pub(super) async fn migrate_to(conn: &mut Conn, version: i64) -> Result<(), StoreError> {
    apply(conn, version).await
}

/// Applies the missing migrations up to `target`, each in its own transaction.
async fn apply(conn: &mut Conn, target: i64) -> Result<(), StoreError> {
    conn.batch(LEDGER).await?;
    let before = status(conn).await?;
    if before.current > before.newest {
        return Err(StoreError::Backend(format!(
            "the database has schema version {}, newer than this build's {}; \
             upgrade Fhirside instead of downgrading it",
            before.current, before.newest
        )));
    }
    for migration in MIGRATIONS.iter().filter(|m| m.version > before.current && m.version <= target) {
        conn.batch("BEGIN").await?;
        let applied = async {
            conn.batch(migration.sql).await?;
            conn.execute(
                "INSERT INTO fhirside_migration (version, description) VALUES ($1, $2)",
                &[&migration.version, &migration.description],
            )
            .await?;
            conn.batch("COMMIT").await
        }
        .await;
        if let Err(error) = applied {
            let _ = conn.batch("ROLLBACK").await;
            return Err(StoreError::Backend(format!("migration {} failed: {error}", migration.version)));
        }
    }
    Ok(())
}

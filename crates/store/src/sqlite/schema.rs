//! The SQLite schema, as numbered forward-only migrations.
//!
//! The layout is the one the PostgreSQL backend will share: one row per resource version, the
//! current version being the one whose `valid_to` is NULL, and one index table per search
//! parameter type whose rows point at the current version's `rid`. `valid_to` (the `lastUpdated`
//! of the version that replaced this one) makes `_at` history queries a range test instead of a
//! self-join. Here the index tables are `WITHOUT ROWID`, ordered by `rid`, so that a version's rows
//! are found without a separate `rid` index; PostgreSQL keeps heap tables with one.

use rusqlite::Connection;

use crate::StoreError;

/// Each entry migrates from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: resources with history, and token index rows.
    "CREATE TABLE resource (
        rid INTEGER PRIMARY KEY,
        type TEXT NOT NULL,
        id TEXT NOT NULL,
        version INTEGER NOT NULL,
        last_updated INTEGER NOT NULL,
        valid_to INTEGER,
        deleted INTEGER NOT NULL,
        method INTEGER NOT NULL,
        body BLOB
    );
    CREATE UNIQUE INDEX resource_version ON resource (type, id, version);
    CREATE UNIQUE INDEX resource_current ON resource (type, id) WHERE valid_to IS NULL;
    CREATE INDEX resource_live ON resource (type, rid) WHERE valid_to IS NULL AND deleted = 0;
    CREATE INDEX resource_system_history ON resource (last_updated, rid);
    CREATE INDEX resource_type_history ON resource (type, last_updated, rid);
    CREATE TABLE token_index (
        rid INTEGER NOT NULL,
        param TEXT NOT NULL,
        system TEXT,
        code TEXT NOT NULL
    );
    CREATE INDEX token_index_value ON token_index (param, code, system);
    CREATE INDEX token_index_rid ON token_index (rid);",
    // 2: reference parameters and compartment membership. Resources stored before this version have
    // no rows here until they are written again.
    "CREATE TABLE reference_index (
        rid INTEGER NOT NULL,
        param TEXT NOT NULL,
        target_type TEXT,
        target_id TEXT,
        url TEXT
    );
    CREATE INDEX reference_index_target ON reference_index (target_id, target_type, param);
    CREATE INDEX reference_index_url ON reference_index (url, param) WHERE url IS NOT NULL;
    CREATE INDEX reference_index_rid ON reference_index (rid);
    CREATE TABLE compartment_index (
        rid INTEGER NOT NULL,
        compartment TEXT NOT NULL,
        id TEXT NOT NULL
    );
    CREATE INDEX compartment_index_member ON compartment_index (id, compartment);
    CREATE INDEX compartment_index_rid ON compartment_index (rid);",
    // 3: date parameters, as the interval each value covers. Resources stored before this version
    // have no rows here until they are written again.
    "CREATE TABLE date_index (
        rid INTEGER NOT NULL,
        param TEXT NOT NULL,
        low INTEGER NOT NULL,
        high INTEGER NOT NULL
    );
    CREATE INDEX date_index_low ON date_index (param, low);
    CREATE INDEX date_index_rid ON date_index (rid);",
    // 4: the remaining parameter types, composite groups (`grp`, 0 outside composites), full text,
    // and settings such as the fingerprint of the search parameters the index was built with (a
    // mismatch at startup rebuilds the index, which also fills these tables for older rows).
    "ALTER TABLE token_index ADD COLUMN grp INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE date_index ADD COLUMN grp INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE reference_index ADD COLUMN grp INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE string_index (
        rid INTEGER NOT NULL,
        param TEXT NOT NULL,
        grp INTEGER NOT NULL DEFAULT 0,
        normalized TEXT NOT NULL,
        exact TEXT NOT NULL
    );
    CREATE INDEX string_index_value ON string_index (param, normalized);
    CREATE INDEX string_index_rid ON string_index (rid);
    CREATE TABLE number_index (
        rid INTEGER NOT NULL,
        param TEXT NOT NULL,
        grp INTEGER NOT NULL DEFAULT 0,
        value REAL NOT NULL
    );
    CREATE INDEX number_index_value ON number_index (param, value);
    CREATE INDEX number_index_rid ON number_index (rid);
    CREATE TABLE quantity_index (
        rid INTEGER NOT NULL,
        param TEXT NOT NULL,
        grp INTEGER NOT NULL DEFAULT 0,
        system TEXT,
        code TEXT,
        low REAL NOT NULL,
        high REAL NOT NULL,
        canonical_unit TEXT,
        canonical_low REAL,
        canonical_high REAL
    );
    CREATE INDEX quantity_index_value ON quantity_index (param, code, low);
    CREATE INDEX quantity_index_canonical ON quantity_index (param, canonical_unit, canonical_low)
        WHERE canonical_unit IS NOT NULL;
    CREATE INDEX quantity_index_rid ON quantity_index (rid);
    CREATE TABLE uri_index (
        rid INTEGER NOT NULL,
        param TEXT NOT NULL,
        grp INTEGER NOT NULL DEFAULT 0,
        uri TEXT NOT NULL
    );
    CREATE INDEX uri_index_value ON uri_index (param, uri);
    CREATE INDEX uri_index_rid ON uri_index (rid);
    CREATE VIRTUAL TABLE text_index USING fts5(
        narrative, content, content = '', contentless_delete = 1, detail = column,
        tokenize = 'unicode61 remove_diacritics 2'
    );
    CREATE TABLE setting (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;",
    // 5: value indexes that cover `rid`. Collecting the matches of a clause then reads the index
    // alone; without `rid` in it, each entry costs a lookup of its table row (for 12,000 matches,
    // 25 ms instead of 0.4 ms).
    "DROP INDEX token_index_value;
    CREATE INDEX token_index_value ON token_index (param, code, system, rid);
    DROP INDEX date_index_low;
    CREATE INDEX date_index_low ON date_index (param, low, high, rid);
    DROP INDEX reference_index_target;
    CREATE INDEX reference_index_target ON reference_index (target_id, target_type, param, rid);
    DROP INDEX compartment_index_member;
    CREATE INDEX compartment_index_member ON compartment_index (id, compartment, rid);
    DROP INDEX string_index_value;
    CREATE INDEX string_index_value ON string_index (param, normalized, rid);
    DROP INDEX number_index_value;
    CREATE INDEX number_index_value ON number_index (param, value, rid);
    DROP INDEX quantity_index_value;
    CREATE INDEX quantity_index_value ON quantity_index (param, code, low, high, rid);
    DROP INDEX quantity_index_canonical;
    CREATE INDEX quantity_index_canonical ON quantity_index (param, canonical_unit, canonical_low, canonical_high, rid)
        WHERE canonical_unit IS NOT NULL;
    DROP INDEX uri_index_value;
    CREATE INDEX uri_index_value ON uri_index (param, uri, rid);",
    // 6: row id indexes that cover the values too. Probes (`EXISTS … WHERE rid = r.rid`), sort keys
    // and composite joins then read one index entry per value instead of also its table row.
    "DROP INDEX token_index_rid;
    CREATE INDEX token_index_rid ON token_index (rid, param, grp, code, system);
    DROP INDEX date_index_rid;
    CREATE INDEX date_index_rid ON date_index (rid, param, grp, low, high);
    DROP INDEX reference_index_rid;
    CREATE INDEX reference_index_rid ON reference_index (rid, param, grp, target_type, target_id);
    DROP INDEX string_index_rid;
    CREATE INDEX string_index_rid ON string_index (rid, param, grp, normalized);
    DROP INDEX number_index_rid;
    CREATE INDEX number_index_rid ON number_index (rid, param, grp, value);
    DROP INDEX quantity_index_rid;
    CREATE INDEX quantity_index_rid ON quantity_index (rid, param, grp, low, high, code, system);
    DROP INDEX uri_index_rid;
    CREATE INDEX uri_index_rid ON uri_index (rid, param, grp, uri);",
    // 7: the job table (`crate::jobs`); times are milliseconds since the epoch.
    "CREATE TABLE job (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        status TEXT NOT NULL,
        singleton INTEGER NOT NULL DEFAULT 0,
        definition TEXT NOT NULL,
        checkpoint TEXT,
        result TEXT,
        error TEXT,
        owner TEXT,
        lease_until INTEGER,
        attempts INTEGER NOT NULL DEFAULT 0,
        created INTEGER NOT NULL,
        updated INTEGER NOT NULL
    );
    CREATE INDEX job_ready ON job (kind, created) WHERE status IN ('queued', 'running');
    CREATE UNIQUE INDEX job_singleton ON job (kind) WHERE singleton AND status IN ('queued', 'running');",
    // 8: index tables clustered by row id (`WITHOUT ROWID`, keyed by `rid`, then `param` and `grp`,
    // then `n`, unique among a version's rows; this migration numbers them per table). Each value
    // was stored twice, in the table and in its covering `rid` index; now the table is that index.
    // A write inserts into one B-tree instead of two: loading Synthea-120 writes a fifth fewer bytes
    // and its inserts take a tenth less time. The value indexes are made again as before.
    "ALTER TABLE token_index RENAME TO token_index_old;
    CREATE TABLE token_index (
        rid INTEGER NOT NULL, param TEXT NOT NULL, grp INTEGER NOT NULL DEFAULT 0, n INTEGER NOT NULL,
        system TEXT, code TEXT NOT NULL,
        PRIMARY KEY (rid, param, grp, n)
    ) WITHOUT ROWID;
    INSERT INTO token_index (rid, param, grp, n, system, code)
        SELECT rid, param, grp, row_number() OVER (PARTITION BY rid ORDER BY rowid), system, code FROM token_index_old;
    DROP TABLE token_index_old;
    CREATE INDEX token_index_value ON token_index (param, code, system, rid);

    ALTER TABLE date_index RENAME TO date_index_old;
    CREATE TABLE date_index (
        rid INTEGER NOT NULL, param TEXT NOT NULL, grp INTEGER NOT NULL DEFAULT 0, n INTEGER NOT NULL,
        low INTEGER NOT NULL, high INTEGER NOT NULL,
        PRIMARY KEY (rid, param, grp, n)
    ) WITHOUT ROWID;
    INSERT INTO date_index (rid, param, grp, n, low, high)
        SELECT rid, param, grp, row_number() OVER (PARTITION BY rid ORDER BY rowid), low, high FROM date_index_old;
    DROP TABLE date_index_old;
    CREATE INDEX date_index_low ON date_index (param, low, high, rid);

    ALTER TABLE reference_index RENAME TO reference_index_old;
    CREATE TABLE reference_index (
        rid INTEGER NOT NULL, param TEXT NOT NULL, grp INTEGER NOT NULL DEFAULT 0, n INTEGER NOT NULL,
        target_type TEXT, target_id TEXT, url TEXT,
        PRIMARY KEY (rid, param, grp, n)
    ) WITHOUT ROWID;
    INSERT INTO reference_index (rid, param, grp, n, target_type, target_id, url)
        SELECT rid, param, grp, row_number() OVER (PARTITION BY rid ORDER BY rowid), target_type, target_id, url
        FROM reference_index_old;
    DROP TABLE reference_index_old;
    CREATE INDEX reference_index_target ON reference_index (target_id, target_type, param, rid);
    CREATE INDEX reference_index_url ON reference_index (url, param) WHERE url IS NOT NULL;

    ALTER TABLE string_index RENAME TO string_index_old;
    CREATE TABLE string_index (
        rid INTEGER NOT NULL, param TEXT NOT NULL, grp INTEGER NOT NULL DEFAULT 0, n INTEGER NOT NULL,
        normalized TEXT NOT NULL, exact TEXT NOT NULL,
        PRIMARY KEY (rid, param, grp, n)
    ) WITHOUT ROWID;
    INSERT INTO string_index (rid, param, grp, n, normalized, exact)
        SELECT rid, param, grp, row_number() OVER (PARTITION BY rid ORDER BY rowid), normalized, exact FROM string_index_old;
    DROP TABLE string_index_old;
    CREATE INDEX string_index_value ON string_index (param, normalized, rid);

    ALTER TABLE number_index RENAME TO number_index_old;
    CREATE TABLE number_index (
        rid INTEGER NOT NULL, param TEXT NOT NULL, grp INTEGER NOT NULL DEFAULT 0, n INTEGER NOT NULL,
        value REAL NOT NULL,
        PRIMARY KEY (rid, param, grp, n)
    ) WITHOUT ROWID;
    INSERT INTO number_index (rid, param, grp, n, value)
        SELECT rid, param, grp, row_number() OVER (PARTITION BY rid ORDER BY rowid), value FROM number_index_old;
    DROP TABLE number_index_old;
    CREATE INDEX number_index_value ON number_index (param, value, rid);

    ALTER TABLE quantity_index RENAME TO quantity_index_old;
    CREATE TABLE quantity_index (
        rid INTEGER NOT NULL, param TEXT NOT NULL, grp INTEGER NOT NULL DEFAULT 0, n INTEGER NOT NULL,
        system TEXT, code TEXT, low REAL NOT NULL, high REAL NOT NULL,
        canonical_unit TEXT, canonical_low REAL, canonical_high REAL,
        PRIMARY KEY (rid, param, grp, n)
    ) WITHOUT ROWID;
    INSERT INTO quantity_index (rid, param, grp, n, system, code, low, high, canonical_unit, canonical_low, canonical_high)
        SELECT rid, param, grp, row_number() OVER (PARTITION BY rid ORDER BY rowid), system, code, low, high,
            canonical_unit, canonical_low, canonical_high
        FROM quantity_index_old;
    DROP TABLE quantity_index_old;
    CREATE INDEX quantity_index_value ON quantity_index (param, code, low, high, rid);
    CREATE INDEX quantity_index_canonical ON quantity_index (param, canonical_unit, canonical_low, canonical_high, rid)
        WHERE canonical_unit IS NOT NULL;

    ALTER TABLE uri_index RENAME TO uri_index_old;
    CREATE TABLE uri_index (
        rid INTEGER NOT NULL, param TEXT NOT NULL, grp INTEGER NOT NULL DEFAULT 0, n INTEGER NOT NULL,
        uri TEXT NOT NULL,
        PRIMARY KEY (rid, param, grp, n)
    ) WITHOUT ROWID;
    INSERT INTO uri_index (rid, param, grp, n, uri)
        SELECT rid, param, grp, row_number() OVER (PARTITION BY rid ORDER BY rowid), uri FROM uri_index_old;
    DROP TABLE uri_index_old;
    CREATE INDEX uri_index_value ON uri_index (param, uri, rid);

    ALTER TABLE compartment_index RENAME TO compartment_index_old;
    CREATE TABLE compartment_index (
        rid INTEGER NOT NULL, compartment TEXT NOT NULL, n INTEGER NOT NULL, id TEXT NOT NULL,
        PRIMARY KEY (rid, compartment, n)
    ) WITHOUT ROWID;
    INSERT INTO compartment_index (rid, compartment, n, id)
        SELECT rid, compartment, row_number() OVER (PARTITION BY rid ORDER BY rowid), id FROM compartment_index_old;
    DROP TABLE compartment_index_old;
    CREATE INDEX compartment_index_member ON compartment_index (id, compartment, rid);",
];

/// Every table whose rows belong to one resource version by `rid`.
pub(super) const INDEX_TABLES: &[&str] = &[
    "token_index",
    "date_index",
    "reference_index",
    "string_index",
    "number_index",
    "quantity_index",
    "uri_index",
    "compartment_index",
];

/// The index tables' value indexes, as the migrations leave them: what searches look values up in.
/// An `InitialLoad` into an empty store drops them and builds them again when it ends
/// ([`build_deferred`]), since appending rows and sorting once is several times cheaper than
/// inserting each row into these B-trees at random places. The tables themselves stay ordered by
/// `rid` (migration 8): writes that replace a version find its rows through that order.
pub(super) const DEFERRABLE_INDEXES: &[&str] = &[
    "CREATE INDEX IF NOT EXISTS token_index_value ON token_index (param, code, system, rid)",
    "CREATE INDEX IF NOT EXISTS date_index_low ON date_index (param, low, high, rid)",
    "CREATE INDEX IF NOT EXISTS reference_index_target ON reference_index (target_id, target_type, param, rid)",
    "CREATE INDEX IF NOT EXISTS reference_index_url ON reference_index (url, param) WHERE url IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS compartment_index_member ON compartment_index (id, compartment, rid)",
    "CREATE INDEX IF NOT EXISTS string_index_value ON string_index (param, normalized, rid)",
    "CREATE INDEX IF NOT EXISTS number_index_value ON number_index (param, value, rid)",
    "CREATE INDEX IF NOT EXISTS quantity_index_value ON quantity_index (param, code, low, high, rid)",
    "CREATE INDEX IF NOT EXISTS quantity_index_canonical ON quantity_index \
     (param, canonical_unit, canonical_low, canonical_high, rid) WHERE canonical_unit IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS uri_index_value ON uri_index (param, uri, rid)",
];

/// The name of a [`DEFERRABLE_INDEXES`] statement's index.
pub(super) fn index_name(create: &str) -> &str {
    create.trim_start_matches("CREATE INDEX IF NOT EXISTS ").split(' ').next().unwrap_or_default()
}

/// Drops the deferrable indexes.
pub(super) fn defer(conn: &Connection) -> Result<(), StoreError> {
    for create in DEFERRABLE_INDEXES {
        conn.execute_batch(&format!("DROP INDEX IF EXISTS {}", index_name(create)))?;
    }
    Ok(())
}

/// Builds whichever deferrable indexes are missing: at the end of a bulk load, and at every open,
/// for a load that a crash interrupted.
pub(super) fn build_deferred(conn: &Connection) -> Result<(), StoreError> {
    for create in DEFERRABLE_INDEXES {
        conn.execute_batch(create)?;
    }
    Ok(())
}

/// Brings the database to the newest schema, refusing one written by a newer Fhirside.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    migrate_to(conn, MIGRATIONS.len())
}

/// Brings the database to schema version `version` (tests start older databases with it).
pub(super) fn migrate_to(conn: &mut Connection, version: usize) -> Result<(), StoreError> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    let newest = MIGRATIONS.len() as i64;
    if current > newest {
        return Err(StoreError::Backend(format!(
            "the database has schema version {current}, newer than this build's {newest}; \
             upgrade Fhirside instead of downgrading it"
        )));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().take(version).skip(current as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", index as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

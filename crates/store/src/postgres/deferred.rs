//! A load into an empty PostgreSQL database without the indexes only searches read.
//!
//! The index tables' value indexes and the two full-text (GIN) indexes were most of PostgreSQL's
//! work during an import: a B-tree insert at a random place per index row, and a GIN insert per
//! word; `resource`'s two history indexes add two more per version. A load's own statements never
//! read them (it finds current versions through `resource`'s keys, and ends versions through the
//! `rid` indexes, which stay), so a load into an empty
//! database drops them ([`defer`]) and builds them with one sort each at the end ([`build`]).
//! Searches meanwhile are correct, only slower. Every [`crate::PostgresStore::open`] builds what
//! is missing, so a load that a crash interrupted leaves nothing behind but a slower start.
//!
//! Another replica's load still running when one ends finds the indexes back, and goes on
//! correctly at the ordinary speed: replicas keep no shared count of loads in progress.

use super::pool::Conn;
use crate::model::StoreError;

/// The deferrable indexes: each one's name and the statement that builds it, as the migrations
/// make it.
pub(super) const INDEXES: [(&str, &str); 14] = [
    ("text_index_narrative", "CREATE INDEX IF NOT EXISTS text_index_narrative ON text_index USING GIN (narrative)"),
    ("text_index_content", "CREATE INDEX IF NOT EXISTS text_index_content ON text_index USING GIN (content)"),
    (
        "token_index_value",
        "CREATE INDEX IF NOT EXISTS token_index_value ON token_index (param, code, system, rid) INCLUDE (shard_key)",
    ),
    (
        "date_index_low",
        "CREATE INDEX IF NOT EXISTS date_index_low ON date_index (param, low, high, rid) INCLUDE (shard_key)",
    ),
    (
        "reference_index_target",
        "CREATE INDEX IF NOT EXISTS reference_index_target ON reference_index (target_id, target_type, param, rid) \
         INCLUDE (shard_key)",
    ),
    (
        "reference_index_url",
        "CREATE INDEX IF NOT EXISTS reference_index_url ON reference_index (url, param) WHERE url IS NOT NULL",
    ),
    (
        "string_index_value",
        "CREATE INDEX IF NOT EXISTS string_index_value ON string_index (param, normalized, rid) INCLUDE (shard_key)",
    ),
    (
        "number_index_value",
        "CREATE INDEX IF NOT EXISTS number_index_value ON number_index (param, value, rid) INCLUDE (shard_key)",
    ),
    (
        "quantity_index_value",
        "CREATE INDEX IF NOT EXISTS quantity_index_value ON quantity_index (param, code, low, high, rid) \
         INCLUDE (shard_key)",
    ),
    (
        "quantity_index_canonical",
        "CREATE INDEX IF NOT EXISTS quantity_index_canonical ON quantity_index (param, canonical_unit, \
         canonical_low, canonical_high, rid) INCLUDE (shard_key) WHERE canonical_unit IS NOT NULL",
    ),
    (
        "uri_index_value",
        "CREATE INDEX IF NOT EXISTS uri_index_value ON uri_index (param, uri, rid) INCLUDE (shard_key)",
    ),
    (
        "compartment_index_member",
        "CREATE INDEX IF NOT EXISTS compartment_index_member ON compartment_index (id, compartment, rid) \
         INCLUDE (shard_key)",
    ),
    ("resource_system_history", "CREATE INDEX IF NOT EXISTS resource_system_history ON resource (last_updated, rid)"),
    ("resource_type_history", "CREATE INDEX IF NOT EXISTS resource_type_history ON resource (type, last_updated, rid)"),
];

/// Drops the deferrable indexes if the database holds no resource; returns whether it did.
pub(super) async fn defer(conn: &mut Conn) -> Result<bool, StoreError> {
    conn.batch("BEGIN").await?;
    let deferred = async {
        // The lock keeps a first write from slipping in between the look and the drop.
        conn.batch("LOCK TABLE resource IN SHARE ROW EXCLUSIVE MODE").await?;
        let empty = !conn.query_one("SELECT EXISTS (SELECT 1 FROM resource)", &[]).await?.get::<_, bool>(0);
        if empty {
            let names: Vec<&str> = INDEXES.iter().map(|(name, _)| *name).collect();
            conn.batch(&format!("DROP INDEX IF EXISTS {}", names.join(", "))).await?;
        }
        conn.batch("COMMIT").await?;
        Ok::<bool, StoreError>(empty)
    }
    .await;
    if deferred.is_err() {
        let _ = conn.batch("ROLLBACK").await;
    }
    deferred
}

/// Builds whichever deferrable index is missing, one at a time, with the memory a sort of a large
/// table wants.
pub(super) async fn build(conn: &mut Conn) -> Result<(), StoreError> {
    let present: Vec<String> = conn
        .query("SELECT indexname::text FROM pg_indexes WHERE schemaname = current_schema()", &[])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let missing: Vec<&str> =
        INDEXES.iter().filter(|(name, _)| !present.iter().any(|p| p == name)).map(|(_, create)| *create).collect();
    if missing.is_empty() {
        return Ok(());
    }
    conn.batch("SET maintenance_work_mem = '256MB'").await?;
    for create in missing {
        conn.batch(create).await?;
    }
    conn.batch("RESET maintenance_work_mem").await?;
    Ok(())
}

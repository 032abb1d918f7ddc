//! The queries that follow references from a set of resources: `$everything` and `_include`.
//!
//! A reference may lead to another shard, so on PostgreSQL (which may be Citus) the targets are
//! never joined to the rows that refer to them: they are an uncorrelated `(type, id) IN (SELECT …)`
//! that Citus computes first and hands to every shard, while a resource meets its own index rows
//! by shard key and row id. SQLite keeps its joins, whose order the `CROSS JOIN`s fix.

use crate::query::{EverythingQuery, IncludeQuery};

use super::{Compiled, Dialect, Param};

/// `$everything` for `compartment/id` (or, without an id, for every resource of that type): the
/// focal resources, their compartments' members, and every resource one of those refers to, as one
/// set of row ids joined back to current versions.
pub(crate) fn compile_everything(
    dialect: Dialect,
    compartment: &str,
    id: Option<&str>,
    query: &EverythingQuery,
    limit: u32,
) -> Compiled {
    if dialect == Dialect::Postgres {
        return everything_sharded(compartment, id, query, limit);
    }
    // Without an id, `?2` (NULL) still appears so that both shapes take the same two leading
    // parameters; cast, because PostgreSQL cannot tell the type of a parameter only tested for NULL.
    let (focal, member) = match id {
        Some(_) => (
            "SELECT rid FROM resource WHERE type = ?1 AND id = ?2 AND valid_to IS NULL AND deleted = 0",
            "SELECT c.rid FROM compartment_index c WHERE c.id = ?2 AND c.compartment = ?1",
        ),
        None => (
            "SELECT rid FROM resource WHERE type = ?1 AND valid_to IS NULL AND deleted = 0 \
             AND CAST(?2 AS TEXT) IS NULL",
            "SELECT c.rid FROM compartment_index c WHERE c.compartment = ?1",
        ),
    };
    let sql = format!(
        "WITH focal(rid) AS ({focal}),
         members(rid) AS (SELECT rid FROM focal UNION {member}),
         everything(rid) AS (
            SELECT rid FROM members
            UNION SELECT t.rid FROM reference_index x
                JOIN resource t ON t.type = x.target_type AND t.id = x.target_id AND t.valid_to IS NULL
                WHERE x.rid IN (SELECT rid FROM members) AND x.target_id IS NOT NULL)
         SELECT r.rid, r.id, r.version, r.last_updated, r.deleted, r.method, r.body, r.type
         FROM everything e JOIN resource r ON r.rid = e.rid
         WHERE r.deleted = 0 AND EXISTS (SELECT 1 FROM focal)"
    );
    let params = vec![Param::Text(compartment.to_owned()), id.map_or(Param::Null, |id| Param::Text(id.to_owned()))];
    everything_filters(dialect, sql, params, query, limit)
}

/// `$everything` on PostgreSQL: the same sets, named by shard key and row id, and the resources the
/// members refer to found by `Type/id` wherever they are.
fn everything_sharded(compartment: &str, id: Option<&str>, query: &EverythingQuery, limit: u32) -> Compiled {
    let (focal, member) = match id {
        Some(_) => (
            "SELECT shard_key, rid FROM resource WHERE type = ?1 AND id = ?2 AND valid_to IS NULL AND deleted = 0",
            "SELECT c.shard_key, c.rid FROM compartment_index c WHERE c.id = ?2 AND c.compartment = ?1",
        ),
        None => (
            "SELECT shard_key, rid FROM resource WHERE type = ?1 AND valid_to IS NULL AND deleted = 0 \
             AND CAST(?2 AS TEXT) IS NULL",
            "SELECT c.shard_key, c.rid FROM compartment_index c WHERE c.compartment = ?1",
        ),
    };
    let sql = format!(
        "WITH focal(shard_key, rid) AS ({focal}),
         members(shard_key, rid) AS (SELECT shard_key, rid FROM focal UNION {member}),
         everything(shard_key, rid) AS (
            SELECT shard_key, rid FROM members
            UNION SELECT t.shard_key, t.rid FROM resource t
                WHERE t.valid_to IS NULL AND (t.type, t.id) IN (
                    SELECT x.target_type, x.target_id FROM reference_index x
                    WHERE (x.shard_key, x.rid) IN (SELECT shard_key, rid FROM members) AND x.target_id IS NOT NULL))
         SELECT r.rid, r.id, r.version, r.last_updated, r.deleted, r.method, r.body, r.type
         FROM everything e JOIN resource r ON r.shard_key = e.shard_key AND r.rid = e.rid
         WHERE r.deleted = 0 AND EXISTS (SELECT 1 FROM focal)"
    );
    let params = vec![Param::Text(compartment.to_owned()), id.map_or(Param::Null, |id| Param::Text(id.to_owned()))];
    everything_filters(Dialect::Postgres, sql, params, query, limit)
}

/// The `_type`, `_since`, cursor and limit of an `$everything` page, on the final `r`.
fn everything_filters(
    dialect: Dialect,
    mut sql: String,
    mut params: Vec<Param>,
    query: &EverythingQuery,
    limit: u32,
) -> Compiled {
    if query.types.as_ref().is_some_and(Vec::is_empty) {
        // PostgreSQL has no empty `IN ()`; it matches nothing in SQLite.
        sql.push_str(" AND FALSE");
    } else if let Some(types) = &query.types {
        sql.push_str(" AND r.type IN (");
        for (i, t) in types.iter().enumerate() {
            sql.push_str(if i == 0 { "?" } else { ", ?" });
            params.push(Param::Text(t.clone()));
        }
        sql.push(')');
    }
    if let Some(since) = query.since {
        sql.push_str(" AND r.last_updated >= ?");
        params.push(Param::Integer(since));
    }
    if let Some(cursor) = query.cursor {
        sql.push_str(" AND r.rid > ?");
        params.push(Param::Integer(cursor));
    }
    sql.push_str(" ORDER BY r.rid LIMIT ?");
    params.push(Param::Integer(i64::from(limit)));
    Compiled::new(dialect, sql, params)
}

/// The resources `_include` (targets of the matches' references) or `_revinclude` (resources whose
/// references point at the matches) adds, current and live, each once. An empty `source_type` in
/// a `_revinclude` means any type (`_revinclude=*`). `CROSS JOIN` fixes the join order: from the
/// page's few matches through the reference index, never from a scan of every resource of the
/// source type, which the planner may otherwise prefer for the sake of the `ORDER BY`. PostgreSQL
/// has no such `CROSS JOIN … ON` (it plans joins by its statistics) and its rows may be on several
/// shards: it has a form of its own ([`include_sharded`]).
///
/// `query.matched_ids` must not be empty (PostgreSQL has no empty `IN ()`): with no matches there
/// is nothing to include, and callers answer without a query.
pub(crate) fn compile_include(dialect: Dialect, query: &IncludeQuery) -> Compiled {
    debug_assert!(!query.matched_ids.is_empty(), "an include for no matches");
    if dialect == Dialect::Postgres {
        return include_sharded(query);
    }
    let join = "CROSS JOIN";
    let mut params = Vec::new();
    let (returned, mut sql) = if query.reverse {
        let mut sql = format!(
            "SELECT DISTINCT s.rid, s.id, s.version, s.last_updated, s.deleted, s.method, s.body, s.type \
             FROM reference_index x {join} resource s ON s.rid = x.rid \
             WHERE s.valid_to IS NULL AND s.deleted = 0",
        );
        if !query.source_type.is_empty() {
            sql.push_str(" AND s.type = ?");
            params.push(Param::Text(query.source_type.clone()));
        }
        sql.push_str(" AND x.target_type = ? AND x.target_id IN (");
        ("s", sql)
    } else {
        params.push(Param::Text(query.source_type.clone()));
        (
            "t",
            format!(
                "SELECT DISTINCT t.rid, t.id, t.version, t.last_updated, t.deleted, t.method, t.body, t.type \
                 FROM resource s {join} reference_index x ON x.rid = s.rid \
                 {join} resource t ON t.type = x.target_type AND t.id = x.target_id \
                 WHERE s.type = ? AND s.valid_to IS NULL AND t.valid_to IS NULL AND t.deleted = 0 \
                 AND s.type = ? AND s.id IN (",
            ),
        )
    };
    push_matches_and_filters(query, &mut sql, &mut params);
    sql.push_str(&format!(" ORDER BY {returned}.rid LIMIT ?"));
    params.push(Param::Integer(i64::from(query.limit)));
    Compiled::new(dialect, sql, params)
}

/// The end of an include's inner condition: the matches' type and ids (closing the `IN` list), and
/// the reference parameter and target type when the include names them.
fn push_matches_and_filters(query: &IncludeQuery, sql: &mut String, params: &mut Vec<Param>) {
    params.push(Param::Text(query.matched_type.clone()));
    for (i, id) in query.matched_ids.iter().enumerate() {
        sql.push_str(if i == 0 { "?" } else { ", ?" });
        params.push(Param::Text(id.clone()));
    }
    sql.push(')');
    if let Some(param) = &query.param {
        sql.push_str(" AND x.param = ?");
        params.push(Param::Text(param.clone()));
    }
    if let Some(target_type) = &query.target_type {
        sql.push_str(" AND x.target_type = ?");
        params.push(Param::Text(target_type.clone()));
    }
}

/// `_include` and `_revinclude` on PostgreSQL. A `_revinclude` finds the referring resources' index
/// rows (`x`) by the matches' `Type/id` and meets each resource on its shard; an `_include` lists
/// the matches' targets by `Type/id` and reads them wherever they are. Each resource is in the
/// result once without `DISTINCT`: a resource has one current version.
fn include_sharded(query: &IncludeQuery) -> Compiled {
    let mut params = Vec::new();
    let mut sql = String::from(
        "SELECT r.rid, r.id, r.version, r.last_updated, r.deleted, r.method, r.body, r.type \
         FROM resource r WHERE r.valid_to IS NULL AND r.deleted = 0",
    );
    if query.reverse {
        if !query.source_type.is_empty() {
            sql.push_str(" AND r.type = ?");
            params.push(Param::Text(query.source_type.clone()));
        }
        sql.push_str(
            " AND (r.shard_key, r.rid) IN (SELECT x.shard_key, x.rid FROM reference_index x \
             WHERE x.target_type = ? AND x.target_id IN (",
        );
    } else {
        sql.push_str(
            " AND (r.type, r.id) IN (SELECT x.target_type, x.target_id \
             FROM resource s JOIN reference_index x ON x.shard_key = s.shard_key AND x.rid = s.rid \
             WHERE s.valid_to IS NULL AND s.type = ? AND s.type = ? AND s.id IN (",
        );
        params.push(Param::Text(query.source_type.clone()));
    }
    push_matches_and_filters(query, &mut sql, &mut params);
    sql.push_str(") ORDER BY r.rid LIMIT ?");
    params.push(Param::Integer(i64::from(query.limit)));
    Compiled::new(Dialect::Postgres, sql, params)
}

//! Compiles a [`SearchQuery`] to SQLite SQL.

use rusqlite::types::Value as SqlValue;

use crate::query::{
    Clause, DatePrefix, DateRange, EverythingQuery, IncludeQuery, ReferenceValue, SearchQuery, TokenSystem,
};

/// A WHERE fragment over `resource r` and its parameters.
pub(super) struct Compiled {
    pub sql: String,
    pub params: Vec<SqlValue>,
}

/// `SELECT … FROM resource r WHERE` current, live resources of `resource_type` matching `query`,
/// in `rid` order, after the cursor, at most `limit` rows.
pub(super) fn compile_search(resource_type: &str, query: &SearchQuery, limit: u32) -> Compiled {
    let mut compiled = compile_matches(
        "SELECT r.rid, r.id, r.version, r.last_updated, r.deleted, r.method, r.body FROM resource r",
        resource_type,
        query,
    );
    let (sql, params) = (&mut compiled.sql, &mut compiled.params);
    if let Some(cursor) = query.cursor {
        sql.push_str(" AND r.rid > ?");
        params.push(SqlValue::Integer(cursor));
    }
    sql.push_str(" ORDER BY r.rid LIMIT ?");
    params.push(SqlValue::Integer(i64::from(limit)));
    compiled
}

/// `SELECT count(*)` of every match of `query`, ignoring paging.
pub(super) fn compile_count(resource_type: &str, query: &SearchQuery) -> Compiled {
    compile_matches("SELECT count(*) FROM resource r", resource_type, query)
}

/// `select` over current, live resources of `resource_type` matching every clause.
fn compile_matches(select: &str, resource_type: &str, query: &SearchQuery) -> Compiled {
    let mut sql = format!("{select} WHERE r.type = ? AND r.valid_to IS NULL AND r.deleted = 0");
    let mut params = vec![SqlValue::Text(resource_type.to_owned())];
    for clause in &query.clauses {
        sql.push_str(" AND (");
        push_clause(&mut sql, &mut params, clause);
        sql.push(')');
    }
    Compiled { sql, params }
}

fn push_clause(sql: &mut String, params: &mut Vec<SqlValue>, clause: &Clause) {
    match clause {
        Clause::Id(ids) => {
            sql.push_str("r.id IN (");
            for (i, id) in ids.iter().enumerate() {
                sql.push_str(if i == 0 { "?" } else { ", ?" });
                params.push(SqlValue::Text(id.clone()));
            }
            sql.push(')');
        }
        Clause::LastUpdated(ranges) => {
            for (i, range) in ranges.iter().enumerate() {
                if i > 0 {
                    sql.push_str(" OR ");
                }
                push_date_range(sql, params, "r.last_updated", range);
            }
        }
        Clause::Token { param, values } => {
            // Driven from the index: the planner finds the matching rows by (param, code) first.
            sql.push_str("r.rid IN (SELECT t.rid FROM token_index t WHERE t.param = ? AND (");
            params.push(SqlValue::Text(param.clone()));
            for (i, value) in values.iter().enumerate() {
                if i > 0 {
                    sql.push_str(" OR ");
                }
                sql.push('(');
                let mut first = true;
                let mut and = |sql: &mut String| {
                    if !first {
                        sql.push_str(" AND ");
                    }
                    first = false;
                };
                match &value.system {
                    TokenSystem::Any => {}
                    TokenSystem::None => {
                        and(sql);
                        sql.push_str("t.system IS NULL");
                    }
                    TokenSystem::Is(system) => {
                        and(sql);
                        sql.push_str("t.system = ?");
                        params.push(SqlValue::Text(system.clone()));
                    }
                }
                if let Some(code) = &value.code {
                    and(sql);
                    sql.push_str("t.code = ?");
                    params.push(SqlValue::Text(code.clone()));
                }
                if first {
                    sql.push_str("1 = 1");
                }
                sql.push(')');
            }
            sql.push_str("))");
        }
        Clause::Date { param, values } => {
            sql.push_str("r.rid IN (SELECT d.rid FROM date_index d WHERE d.param = ? AND (");
            params.push(SqlValue::Text(param.clone()));
            for (i, range) in values.iter().enumerate() {
                if i > 0 {
                    sql.push_str(" OR ");
                }
                push_range_comparison(sql, params, range);
            }
            sql.push_str("))");
        }
        Clause::Reference { param, values } => {
            sql.push_str("r.rid IN (SELECT x.rid FROM reference_index x WHERE x.param = ? AND (");
            params.push(SqlValue::Text(param.clone()));
            for (i, value) in values.iter().enumerate() {
                if i > 0 {
                    sql.push_str(" OR ");
                }
                match value {
                    ReferenceValue::Local { target_type: Some(t), id } => {
                        sql.push_str("(x.target_id = ? AND x.target_type = ?)");
                        params.push(SqlValue::Text(id.clone()));
                        params.push(SqlValue::Text(t.clone()));
                    }
                    ReferenceValue::Local { target_type: None, id } => {
                        sql.push_str("x.target_id = ?");
                        params.push(SqlValue::Text(id.clone()));
                    }
                    ReferenceValue::Url(url) => {
                        sql.push_str("x.url = ?");
                        params.push(SqlValue::Text(url.clone()));
                    }
                }
            }
            sql.push_str("))");
        }
        Clause::Compartment { compartment, id } => {
            sql.push_str("r.rid IN (SELECT c.rid FROM compartment_index c WHERE c.id = ? AND c.compartment = ?)");
            params.push(SqlValue::Text(id.clone()));
            params.push(SqlValue::Text(compartment.clone()));
        }
    }
}

/// Compares a stored interval `[d.low, d.high)` with a search value's interval by the prefix, as
/// R4 defines it for ranges (search.html#prefix): `eq` — the value contains the stored range; `gt` —
/// the stored range extends after the value; `ge` — `gt` or `eq`; `sa` — starts after it; and so on.
fn push_range_comparison(sql: &mut String, params: &mut Vec<SqlValue>, range: &DateRange) {
    let (low, high) = (SqlValue::Integer(range.low), SqlValue::Integer(range.high));
    let (text, values): (&str, Vec<SqlValue>) = match range.prefix {
        DatePrefix::Eq => ("(d.low >= ? AND d.high <= ?)", vec![low, high]),
        DatePrefix::Ne => ("NOT (d.low >= ? AND d.high <= ?)", vec![low, high]),
        DatePrefix::Gt => ("d.high > ?", vec![high]),
        DatePrefix::Lt => ("d.low < ?", vec![low]),
        DatePrefix::Ge => ("(d.high > ? OR (d.low >= ? AND d.high <= ?))", vec![high.clone(), low, high]),
        DatePrefix::Le => ("(d.low < ? OR (d.low >= ? AND d.high <= ?))", vec![low.clone(), low, high]),
        DatePrefix::Sa => ("d.low >= ?", vec![high]),
        DatePrefix::Eb => ("d.high <= ?", vec![low]),
    };
    sql.push_str(text);
    params.extend(values);
}

/// Applies a date prefix to a column holding an instant: the instant is compared with the range
/// `[low, high)` that the search value denotes at its precision.
fn push_date_range(sql: &mut String, params: &mut Vec<SqlValue>, column: &str, range: &DateRange) {
    let mut bound = |sql: &mut String, op: &str, value: i64| {
        sql.push_str(column);
        sql.push_str(op);
        params.push(SqlValue::Integer(value));
    };
    match range.prefix {
        DatePrefix::Eq => {
            sql.push('(');
            bound(sql, " >= ?", range.low);
            sql.push_str(" AND ");
            bound(sql, " < ?", range.high);
            sql.push(')');
        }
        DatePrefix::Ne => {
            sql.push('(');
            bound(sql, " < ?", range.low);
            sql.push_str(" OR ");
            bound(sql, " >= ?", range.high);
            sql.push(')');
        }
        DatePrefix::Gt | DatePrefix::Sa => bound(sql, " >= ?", range.high),
        DatePrefix::Lt | DatePrefix::Eb => bound(sql, " < ?", range.low),
        DatePrefix::Ge => bound(sql, " >= ?", range.low),
        DatePrefix::Le => bound(sql, " < ?", range.high),
    }
}

/// `$everything` for `compartment/id` (or, without an id, for every resource of that type): the
/// focal resources, their compartments' members, and every resource one of those refers to, as one
/// set of row ids joined back to current versions.
pub(super) fn compile_everything(compartment: &str, id: Option<&str>, query: &EverythingQuery, limit: u32) -> Compiled {
    let (focal, member) = match id {
        Some(_) => (
            "SELECT rid FROM resource WHERE type = ?1 AND id = ?2 AND valid_to IS NULL AND deleted = 0",
            "SELECT c.rid FROM compartment_index c WHERE c.id = ?2 AND c.compartment = ?1",
        ),
        None => (
            "SELECT rid FROM resource WHERE type = ?1 AND valid_to IS NULL AND deleted = 0 AND ?2 IS NULL",
            "SELECT c.rid FROM compartment_index c WHERE c.compartment = ?1",
        ),
    };
    let mut sql = format!(
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
    let mut params =
        vec![SqlValue::Text(compartment.to_owned()), id.map_or(SqlValue::Null, |id| SqlValue::Text(id.to_owned()))];
    if let Some(types) = &query.types {
        sql.push_str(" AND r.type IN (");
        for (i, t) in types.iter().enumerate() {
            sql.push_str(if i == 0 { "?" } else { ", ?" });
            params.push(SqlValue::Text(t.clone()));
        }
        sql.push(')');
    }
    if let Some(since) = query.since {
        sql.push_str(" AND r.last_updated >= ?");
        params.push(SqlValue::Integer(since));
    }
    if let Some(cursor) = query.cursor {
        sql.push_str(" AND r.rid > ?");
        params.push(SqlValue::Integer(cursor));
    }
    sql.push_str(" ORDER BY r.rid LIMIT ?");
    params.push(SqlValue::Integer(i64::from(limit)));
    Compiled { sql, params }
}

/// The resources `_include` (targets of the matches' references) or `_revinclude` (resources whose
/// references point at the matches) adds, current and live, each once.
pub(super) fn compile_include(query: &IncludeQuery) -> Compiled {
    let (returned, mut sql) = if query.reverse {
        (
            "s",
            String::from(
                "SELECT DISTINCT s.rid, s.id, s.version, s.last_updated, s.deleted, s.method, s.body, s.type \
                 FROM reference_index x JOIN resource s ON s.rid = x.rid \
                 WHERE s.type = ? AND s.valid_to IS NULL AND s.deleted = 0 \
                 AND x.target_type = ? AND x.target_id IN (",
            ),
        )
    } else {
        (
            "t",
            String::from(
                "SELECT DISTINCT t.rid, t.id, t.version, t.last_updated, t.deleted, t.method, t.body, t.type \
                 FROM resource s JOIN reference_index x ON x.rid = s.rid \
                 JOIN resource t ON t.type = x.target_type AND t.id = x.target_id \
                 WHERE s.type = ? AND s.valid_to IS NULL AND t.valid_to IS NULL AND t.deleted = 0 \
                 AND s.type = ? AND s.id IN (",
            ),
        )
    };
    let mut params = vec![SqlValue::Text(query.source_type.clone()), SqlValue::Text(query.matched_type.clone())];
    for (i, id) in query.matched_ids.iter().enumerate() {
        sql.push_str(if i == 0 { "?" } else { ", ?" });
        params.push(SqlValue::Text(id.clone()));
    }
    sql.push(')');
    if let Some(param) = &query.param {
        sql.push_str(" AND x.param = ?");
        params.push(SqlValue::Text(param.clone()));
    }
    if let Some(target_type) = &query.target_type {
        sql.push_str(" AND x.target_type = ?");
        params.push(SqlValue::Text(target_type.clone()));
    }
    sql.push_str(&format!(" ORDER BY {returned}.rid LIMIT ?"));
    params.push(SqlValue::Integer(i64::from(query.limit)));
    Compiled { sql, params }
}

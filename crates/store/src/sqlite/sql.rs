//! Compiles a [`SearchQuery`] to SQLite SQL.

use rusqlite::types::Value as SqlValue;

use crate::query::{Clause, DatePrefix, DateRange, SearchQuery, TokenSystem};

/// A WHERE fragment over `resource r` and its parameters.
pub(super) struct Compiled {
    pub sql: String,
    pub params: Vec<SqlValue>,
}

/// `SELECT … FROM resource r WHERE` current, live resources of `resource_type` matching `query`,
/// in `rid` order, after the cursor, at most `limit` rows.
pub(super) fn compile_search(resource_type: &str, query: &SearchQuery, limit: u32) -> Compiled {
    let mut sql = String::from(
        "SELECT r.rid, r.id, r.version, r.last_updated, r.deleted, r.method, r.body FROM resource r \
         WHERE r.type = ? AND r.valid_to IS NULL AND r.deleted = 0",
    );
    let mut params = vec![SqlValue::Text(resource_type.to_owned())];
    for clause in &query.clauses {
        sql.push_str(" AND (");
        push_clause(&mut sql, &mut params, clause);
        sql.push(')');
    }
    if let Some(cursor) = query.cursor {
        sql.push_str(" AND r.rid > ?");
        params.push(SqlValue::Integer(cursor));
    }
    sql.push_str(" ORDER BY r.rid LIMIT ?");
    params.push(SqlValue::Integer(i64::from(limit)));
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
            sql.push_str("EXISTS (SELECT 1 FROM token_index t WHERE t.rid = r.rid AND t.param = ? AND (");
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
    }
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

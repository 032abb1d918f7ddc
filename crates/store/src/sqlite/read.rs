//! Queries shared by the read pool and the writer (which runs conditional matches inside its
//! transaction).

use bytes::Bytes;
use rusqlite::types::{ToSqlOutput, Value as SqlValue, ValueRef};
use rusqlite::{params_from_iter, Connection, OptionalExtension, Row, ToSql};

use crate::model::{Cost, Method, Outcome, StoreError, StoredVersion};
use crate::query::{HistoryQuery, HistoryScope, KeyValue, Page, SearchQuery, SnapshotQuery};
use crate::seal::Seal;
use crate::sql::{self, Dialect, Param, SearchRow};

impl ToSql for Param {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Param::Null => ValueRef::Null,
            Param::Integer(i) => ValueRef::Integer(*i),
            Param::Real(f) => ValueRef::Real(*f),
            Param::Text(t) => ValueRef::Text(t.as_bytes()),
        }))
    }
}

/// A sort key column as read back, for the cursor. A value SQLite stores as a blob is no sort key
/// this store writes; it reads as missing.
fn key_value(value: SqlValue) -> KeyValue {
    match value {
        SqlValue::Integer(i) => KeyValue::Integer(i),
        SqlValue::Real(f) => KeyValue::Real(f),
        SqlValue::Text(t) => KeyValue::Text(t),
        SqlValue::Null | SqlValue::Blob(_) => KeyValue::Null,
    }
}

/// The columns [`version_row`] reads, in its order.
macro_rules! version_columns {
    () => {
        "rid, id, version, last_updated, deleted, method, body"
    };
}

/// Maps a row of `version_columns!()`.
fn version_row(seal: &Seal, resource_type: &str, row: &Row<'_>) -> rusqlite::Result<(i64, StoredVersion)> {
    let id: String = row.get(1)?;
    let version = row.get::<_, i64>(2)? as u64;
    let body = match row.get::<_, Option<Vec<u8>>>(6)? {
        Some(stored) => Some(
            seal.open(resource_type, &id, version, stored)
                .map_err(|e| rusqlite::Error::FromSqlConversionFailure(6, rusqlite::types::Type::Blob, Box::new(e)))?,
        ),
        None => None,
    };
    Ok((
        row.get(0)?,
        StoredVersion {
            resource_type: resource_type.to_owned(),
            id,
            version,
            last_updated: row.get(3)?,
            deleted: row.get::<_, i64>(4)? != 0,
            method: Method::from_db(row.get(5)?),
            body: body.map(Bytes::from).unwrap_or_default(),
        },
    ))
}

pub(super) use crate::sql::cost_of;

/// The current version (possibly a deletion marker) with its row id.
pub(super) fn current_with_rid(
    conn: &Connection,
    seal: &Seal,
    resource_type: &str,
    id: &str,
) -> Result<Option<(i64, StoredVersion)>, StoreError> {
    let mut stmt = conn.prepare_cached(concat!(
        "SELECT ",
        version_columns!(),
        " FROM resource WHERE type = ?1 AND id = ?2 AND valid_to IS NULL"
    ))?;
    Ok(stmt.query_row((resource_type, id), |row| version_row(seal, resource_type, row)).optional()?)
}

pub(super) fn current(
    conn: &Connection,
    seal: &Seal,
    resource_type: &str,
    id: &str,
) -> Result<Outcome<Option<StoredVersion>>, StoreError> {
    let found = current_with_rid(conn, seal, resource_type, id)?.map(|(_, v)| v);
    let cost = cost_of(found.as_slice());
    Ok(Outcome { value: found, cost })
}

pub(super) fn version(
    conn: &Connection,
    seal: &Seal,
    resource_type: &str,
    id: &str,
    version: u64,
) -> Result<Outcome<Option<StoredVersion>>, StoreError> {
    let mut stmt = conn.prepare_cached(concat!(
        "SELECT ",
        version_columns!(),
        " FROM resource WHERE type = ?1 AND id = ?2 AND version = ?3"
    ))?;
    let found = stmt
        .query_row((resource_type, id, version as i64), |row| version_row(seal, resource_type, row))
        .optional()?
        .map(|(_, v)| v);
    let cost = cost_of(found.as_slice());
    Ok(Outcome { value: found, cost })
}

/// One page of search results: `query.count` rows at most, with cursors for the pages after and
/// before it when they exist.
pub(super) fn search(conn: &Connection, seal: &Seal, query: &SearchQuery) -> Result<(Page, Cost), StoreError> {
    let (rows, more) =
        if query.count == 0 { (Vec::new(), false) } else { search_rows(conn, seal, query, query.count)? };
    let (versions, next, previous) = sql::search_page(query, rows, more);
    let mut cost = cost_of(&versions);
    let total = if query.total {
        let compiled = sql::compile_count(Dialect::Sqlite, query);
        let n: i64 = conn
            .prepare_cached(&compiled.sql)?
            .query_row(params_from_iter(compiled.params.iter()), |row| row.get(0))?;
        cost.rows_read += n as u64;
        Some(n as u64)
    } else {
        None
    };
    Ok((Page { versions, next, previous, total }, cost))
}

/// Up to `limit` matches in the query's order (reversed for a backward cursor), and whether more
/// exist.
pub(super) fn search_rows(
    conn: &Connection,
    seal: &Seal,
    query: &SearchQuery,
    limit: u32,
) -> Result<(Vec<SearchRow>, bool), StoreError> {
    let forms = forms(conn, query)?;
    let compiled = sql::compile_search(Dialect::Sqlite, query, limit.saturating_add(1), &forms);
    let mut stmt = conn.prepare_cached(&compiled.sql)?;
    let keys = query.sort.len();
    let mut rows = stmt
        .query_map(params_from_iter(compiled.params.iter()), |row| {
            let resource_type: String = row.get(7)?;
            let (rid, version) = version_row(seal, &resource_type, row)?;
            let keys = (0..keys).map(|i| row.get::<_, SqlValue>(8 + i).map(key_value)).collect::<Result<_, _>>()?;
            Ok(SearchRow { rid, version, keys })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    Ok((rows, more))
}

/// Index rows past which a clause is tested per resource rather than collected (see
/// `sql::compile_probe`).
/// Collecting reads the covering value index (well under a microsecond a row) into a temporary
/// set; a probe walk tests each resource of the type (several microseconds) and is the longer the
/// rarer the matches. On Synthea-120 and ten times its size the two cross between 5,000 and
/// 20,000 matches.
const DENSE: u32 = 10_000;

/// The form of each top-level clause of an unsorted search, from a bounded count of its rows. A
/// sorted search needs every match anyway, so collecting stays best for it.
fn forms(conn: &Connection, query: &SearchQuery) -> Result<Vec<Option<sql::Form>>, StoreError> {
    if !query.sort.is_empty() || query.clauses.len() > 8 {
        return Ok(Vec::new());
    }
    let mut forms = Vec::with_capacity(query.clauses.len());
    for clause in &query.clauses {
        let form = match sql::compile_probe(clause, DENSE) {
            Some(probe) => {
                let rows: i64 = conn
                    .prepare_cached(&probe.sql)?
                    .query_row(params_from_iter(probe.params.iter()), |row| row.get(0))?;
                (rows >= i64::from(DENSE)).then_some(sql::Form::Probe)
            }
            None => None,
        };
        forms.push(form);
    }
    Ok(forms)
}

/// Up to `limit` matches with their row ids, and whether more exist.
pub(super) fn search_rids(
    conn: &Connection,
    seal: &Seal,
    query: &SearchQuery,
    limit: u32,
) -> Result<(Vec<(i64, StoredVersion)>, bool), StoreError> {
    let (rows, more) = search_rows(conn, seal, query, limit)?;
    Ok((rows.into_iter().map(|row| (row.rid, row.version)).collect(), more))
}

/// Current, live versions after row id `after`, in row id order: the input of a reindex.
pub(super) fn live_after(
    conn: &Connection,
    seal: &Seal,
    after: i64,
    limit: u32,
) -> Result<Vec<(i64, StoredVersion)>, StoreError> {
    typed_versions(
        conn,
        seal,
        "SELECT rid, id, version, last_updated, deleted, method, body, type FROM resource \
         WHERE rid > ?1 AND valid_to IS NULL AND deleted = 0 ORDER BY rid LIMIT ?2",
        &[Param::Integer(after), Param::Integer(i64::from(limit))],
    )
}

pub(super) fn snapshot(
    conn: &Connection,
    seal: &Seal,
    query: &SnapshotQuery,
) -> Result<Vec<(i64, StoredVersion)>, StoreError> {
    let compiled = sql::compile_snapshot(Dialect::Sqlite, query);
    typed_versions(conn, seal, &compiled.sql, &compiled.params)
}

pub(super) fn setting(conn: &Connection, key: &str) -> Result<Option<String>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT value FROM setting WHERE key = ?1")?
        .query_row([key], |row| row.get(0))
        .optional()?)
}

pub(super) fn history(
    conn: &Connection,
    seal: &Seal,
    scope: &HistoryScope,
    query: &HistoryQuery,
) -> Result<Outcome<Page>, StoreError> {
    let mut sql =
        String::from("SELECT rid, id, version, last_updated, deleted, method, body, type FROM resource WHERE 1 = 1");
    let mut params: Vec<Param> = Vec::new();
    match scope {
        HistoryScope::System => {}
        HistoryScope::Type(t) => {
            sql.push_str(" AND type = ?");
            params.push(Param::Text(t.clone()));
        }
        HistoryScope::Instance(t, id) => {
            sql.push_str(" AND type = ? AND id = ?");
            params.push(Param::Text(t.clone()));
            params.push(Param::Text(id.clone()));
        }
    }
    if let Some(since) = query.since {
        sql.push_str(" AND last_updated >= ?");
        params.push(Param::Integer(since));
    }
    if let Some((low, high)) = query.at {
        sql.push_str(" AND last_updated < ? AND (valid_to IS NULL OR valid_to > ?)");
        params.push(Param::Integer(high));
        params.push(Param::Integer(low));
    }
    if let Some((t, rid)) = query.cursor {
        sql.push_str(" AND (last_updated, rid) < (?, ?)");
        params.push(Param::Integer(t));
        params.push(Param::Integer(rid));
    }
    sql.push_str(" ORDER BY last_updated DESC, rid DESC LIMIT ?");
    params.push(Param::Integer(i64::from(query.count) + 1));

    let rows = typed_versions(conn, seal, &sql, &params)?;
    Ok(sql::keyset_page(rows, query.count, |rid, v| Page::encode_history_cursor(v.last_updated, rid)))
}

pub(super) fn everything(
    conn: &Connection,
    seal: &Seal,
    compartment: &str,
    id: Option<&str>,
    query: &crate::query::EverythingQuery,
) -> Result<Outcome<Page>, StoreError> {
    let compiled = sql::compile_everything(Dialect::Sqlite, compartment, id, query, query.count.saturating_add(1));
    let rows = typed_versions(conn, seal, &compiled.sql, &compiled.params)?;
    Ok(sql::keyset_page(rows, query.count, |rid, _| Page::encode_cursor(rid)))
}

pub(super) fn include(
    conn: &Connection,
    seal: &Seal,
    query: &crate::query::IncludeQuery,
) -> Result<Outcome<Vec<StoredVersion>>, StoreError> {
    if query.matched_ids.is_empty() {
        return Ok(Outcome { value: Vec::new(), cost: Cost::default() });
    }
    let compiled = sql::compile_include(Dialect::Sqlite, query);
    let versions: Vec<StoredVersion> =
        typed_versions(conn, seal, &compiled.sql, &compiled.params)?.into_iter().map(|(_, v)| v).collect();
    let cost = cost_of(&versions);
    Ok(Outcome { value: versions, cost })
}

/// Runs a query whose rows are [`version_row`]'s columns followed by `type`.
fn typed_versions(
    conn: &Connection,
    seal: &Seal,
    sql: &str,
    params: &[Param],
) -> Result<Vec<(i64, StoredVersion)>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt
        .query_map(params_from_iter(params.iter()), |row| {
            let resource_type: String = row.get(7)?;
            version_row(seal, &resource_type, row)
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

//! Reads on PostgreSQL: the same queries as the embedded store's, compiled for this dialect.
//!
//! A read of one resource (read, vread, its history) first finds the resource's shard key, then
//! names it in the query, which on Citus is then a router query to the one shard that holds the
//! resource. Searches, `$everything` and includes run on every shard (`crate::sql`).

use bytes::Bytes;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Row;

use super::pool::Conn;
use crate::model::{Cost, Method, Outcome, StoreError, StoredVersion};
use crate::query::{EverythingQuery, HistoryQuery, HistoryScope, IncludeQuery, KeyValue, Page, SearchQuery};
use crate::seal::Seal;
use crate::shard;
use crate::sql::{self, Dialect, Param, SearchRow};

/// The columns [`version_row`] reads, in its order, then `type`.
macro_rules! columns {
    () => {
        "rid, id, version, last_updated, deleted, method, body, type"
    };
}

/// Maps a row of `columns!()` (or the search compiler's, which has the same order).
pub(super) fn version_row(seal: &Seal, row: &Row) -> Result<(i64, StoredVersion), StoreError> {
    let resource_type: String = row.try_get(7)?;
    let id: String = row.try_get(1)?;
    let version = row.try_get::<_, i64>(2)? as u64;
    let body = match row.try_get::<_, Option<Vec<u8>>>(6)? {
        Some(stored) => Some(seal.open(&resource_type, &id, version, stored)?),
        None => None,
    };
    Ok((
        row.try_get(0)?,
        StoredVersion {
            resource_type,
            id,
            version,
            last_updated: row.try_get(3)?,
            deleted: row.try_get::<_, i16>(4)? != 0,
            method: Method::from_db(i64::from(row.try_get::<_, i16>(5)?)),
            body: body.map(Bytes::from).unwrap_or_default(),
        },
    ))
}

fn versions(seal: &Seal, rows: &[Row]) -> Result<Vec<(i64, StoredVersion)>, StoreError> {
    rows.iter().map(|row| version_row(seal, row)).collect()
}

pub(super) use crate::sql::cost_of;

fn bound(params: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

pub(super) async fn compiled_versions(
    conn: &mut Conn,
    compiled: &sql::Compiled,
) -> Result<Vec<(i64, StoredVersion)>, StoreError> {
    let rows = conn.query(&compiled.sql, &bound(&compiled.params)).await?;
    versions(&conn.seal, &rows)
}

/// The shard key of `resource_type/id`, or `None` if it was never written. A Patient's is its own
/// id (`crate::shard`), which saves the lookup in `resource_key` for the most read type.
pub(super) async fn shard_of(conn: &mut Conn, resource_type: &str, id: &str) -> Result<Option<String>, StoreError> {
    if resource_type == shard::PATIENT {
        return Ok(Some(id.to_owned()));
    }
    let row = conn
        .query_opt("SELECT shard_key FROM resource_key WHERE type = $1 AND id = $2", &[&resource_type, &id])
        .await?;
    Ok(match row {
        Some(row) => Some(row.try_get(0)?),
        None => None,
    })
}

/// The current version (possibly a deletion marker) with its shard key and row id: found in
/// `resource_key`, then read on its shard.
pub(super) async fn current_located(
    conn: &mut Conn,
    resource_type: &str,
    id: &str,
) -> Result<Option<(String, i64, StoredVersion)>, StoreError> {
    let Some(shard_key) = shard_of(conn, resource_type, id).await? else { return Ok(None) };
    let sql = concat!(
        "SELECT ",
        columns!(),
        " FROM resource WHERE shard_key = $1 AND type = $2 AND id = $3 AND valid_to IS NULL"
    );
    match conn.query_opt(sql, &[&shard_key, &resource_type, &id]).await? {
        Some(row) => {
            let (rid, version) = version_row(&conn.seal, &row)?;
            Ok(Some((shard_key, rid, version)))
        }
        None => Ok(None),
    }
}

pub(super) async fn current(
    conn: &mut Conn,
    resource_type: &str,
    id: &str,
) -> Result<Outcome<Option<StoredVersion>>, StoreError> {
    let found = current_located(conn, resource_type, id).await?.map(|(_, _, v)| v);
    let cost = cost_of(found.as_slice());
    Ok(Outcome { value: found, cost })
}

pub(super) async fn version(
    conn: &mut Conn,
    resource_type: &str,
    id: &str,
    version: u64,
) -> Result<Outcome<Option<StoredVersion>>, StoreError> {
    let sql = concat!(
        "SELECT ",
        columns!(),
        " FROM resource WHERE shard_key = $1 AND type = $2 AND id = $3 AND version = $4"
    );
    let found = match shard_of(conn, resource_type, id).await? {
        Some(shard_key) => match conn.query_opt(sql, &[&shard_key, &resource_type, &id, &(version as i64)]).await? {
            Some(row) => Some(version_row(&conn.seal, &row)?.1),
            None => None,
        },
        None => None,
    };
    let cost = cost_of(found.as_slice());
    Ok(Outcome { value: found, cost })
}

/// One page of search results, with cursors for the pages after and before it when they exist.
pub(super) async fn search(conn: &mut Conn, query: &SearchQuery) -> Result<Outcome<Page>, StoreError> {
    let (rows, more) =
        if query.count == 0 { (Vec::new(), false) } else { search_rows(conn, query, query.count).await? };
    let (versions, next, previous) = sql::search_page(query, rows, more);
    let mut cost = cost_of(&versions);
    let total = if query.total {
        let compiled = sql::compile_count(Dialect::Postgres, query);
        let n: i64 = conn.query_one(&compiled.sql, &bound(&compiled.params)).await?.try_get(0)?;
        cost.rows_read += n as u64;
        Some(n as u64)
    } else {
        None
    };
    Ok(Outcome { value: Page { versions, next, previous, total }, cost })
}

/// Up to `limit` matches in the query's order (reversed for a backward cursor), and whether more
/// exist. PostgreSQL's planner has statistics, so every clause keeps its default form.
pub(super) async fn search_rows(
    conn: &mut Conn,
    query: &SearchQuery,
    limit: u32,
) -> Result<(Vec<SearchRow>, bool), StoreError> {
    let compiled = sql::compile_search(Dialect::Postgres, query, limit.saturating_add(1), &[]);
    let rows = conn.query(&compiled.sql, &bound(&compiled.params)).await?;
    let keys = query.sort.len();
    let mut found = Vec::with_capacity(rows.len());
    for row in &rows {
        let (rid, version) = version_row(&conn.seal, row)?;
        let keys = (0..keys).map(|i| key_value(row, 8 + i)).collect::<Result<_, _>>()?;
        found.push(SearchRow { rid, version, keys });
    }
    let more = found.len() > limit as usize;
    found.truncate(limit as usize);
    Ok((found, more))
}

/// A sort key column as a cursor value, by the column's type.
fn key_value(row: &Row, index: usize) -> Result<KeyValue, StoreError> {
    let column_type = row.columns()[index].type_().clone();
    Ok(match column_type {
        Type::INT8 => row.try_get::<_, Option<i64>>(index)?.map_or(KeyValue::Null, KeyValue::Integer),
        Type::INT4 => row.try_get::<_, Option<i32>>(index)?.map_or(KeyValue::Null, |i| KeyValue::Integer(i.into())),
        Type::INT2 => row.try_get::<_, Option<i16>>(index)?.map_or(KeyValue::Null, |i| KeyValue::Integer(i.into())),
        Type::FLOAT8 => row.try_get::<_, Option<f64>>(index)?.map_or(KeyValue::Null, KeyValue::Real),
        _ => row.try_get::<_, Option<String>>(index)?.map_or(KeyValue::Null, KeyValue::Text),
    })
}

/// Current, live versions after row id `after`, in row id order: the input of a reindex.
pub(super) async fn live_after(
    conn: &mut Conn,
    after: i64,
    limit: u32,
) -> Result<Vec<(i64, StoredVersion)>, StoreError> {
    let sql = concat!(
        "SELECT ",
        columns!(),
        " FROM resource WHERE rid > $1 AND valid_to IS NULL AND deleted = 0 ORDER BY rid LIMIT $2"
    );
    let rows = conn.query(sql, &[&after, &i64::from(limit)]).await?;
    versions(&conn.seal, &rows)
}

pub(super) async fn setting(conn: &mut Conn, key: &str) -> Result<Option<String>, StoreError> {
    match conn.query_opt("SELECT value FROM setting WHERE key = $1", &[&key]).await? {
        Some(row) => Ok(Some(row.try_get(0)?)),
        None => Ok(None),
    }
}

pub(super) async fn history(
    conn: &mut Conn,
    scope: &HistoryScope,
    query: &HistoryQuery,
) -> Result<Outcome<Page>, StoreError> {
    let mut sql = String::from(concat!("SELECT ", columns!(), " FROM resource WHERE TRUE"));
    let mut params: Vec<Param> = Vec::new();
    let mut bind = |sql: &mut String, text: &str, value: Param| {
        params.push(value);
        sql.push_str(&text.replace('#', &format!("${}", params.len())));
    };
    match scope {
        HistoryScope::System => {}
        HistoryScope::Type(t) => bind(&mut sql, " AND type = #", Param::Text(t.clone())),
        HistoryScope::Instance(t, id) => {
            // Every version of a resource is on the shard of its first.
            let Some(shard_key) = shard_of(conn, t, id).await? else {
                return Ok(sql::keyset_page(Vec::new(), query.count, |_, _| String::new()));
            };
            bind(&mut sql, " AND shard_key = #", Param::Text(shard_key));
            bind(&mut sql, " AND type = #", Param::Text(t.clone()));
            bind(&mut sql, " AND id = #", Param::Text(id.clone()));
        }
    }
    if let Some(since) = query.since {
        bind(&mut sql, " AND last_updated >= #", Param::Integer(since));
    }
    if let Some((low, high)) = query.at {
        bind(&mut sql, " AND last_updated < #", Param::Integer(high));
        bind(&mut sql, " AND (valid_to IS NULL OR valid_to > #)", Param::Integer(low));
    }
    if let Some((t, rid)) = query.cursor {
        bind(&mut sql, " AND (last_updated, rid) < (#", Param::Integer(t));
        bind(&mut sql, ", #)", Param::Integer(rid));
    }
    bind(&mut sql, " ORDER BY last_updated DESC, rid DESC LIMIT #", Param::Integer(i64::from(query.count) + 1));
    let rows = compiled_versions(conn, &sql::Compiled { sql, params }).await?;
    Ok(sql::keyset_page(rows, query.count, |rid, v| Page::encode_history_cursor(v.last_updated, rid)))
}

pub(super) async fn everything(
    conn: &mut Conn,
    compartment: &str,
    id: Option<&str>,
    query: &EverythingQuery,
) -> Result<Outcome<Page>, StoreError> {
    let compiled = sql::compile_everything(Dialect::Postgres, compartment, id, query, query.count.saturating_add(1));
    let rows = compiled_versions(conn, &compiled).await?;
    Ok(sql::keyset_page(rows, query.count, |rid, _| Page::encode_cursor(rid)))
}

pub(super) async fn include(conn: &mut Conn, query: &IncludeQuery) -> Result<Outcome<Vec<StoredVersion>>, StoreError> {
    if query.matched_ids.is_empty() {
        return Ok(Outcome { value: Vec::new(), cost: Cost::default() });
    }
    let compiled = sql::compile_include(Dialect::Postgres, query);
    let versions: Vec<StoredVersion> = compiled_versions(conn, &compiled).await?.into_iter().map(|(_, v)| v).collect();
    let cost = cost_of(&versions);
    Ok(Outcome { value: versions, cost })
}

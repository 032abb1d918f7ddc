//! Compiles store queries to SQLite SQL.
//!
//! [`Builder`] accumulates SQL text and its bound parameters side by side, and hands out fresh
//! table aliases so that nested clauses (chains, `_has`, composites) never capture each other's
//! rows. `clause.rs` turns clauses and values into conditions; `related.rs` holds the queries for
//! `$everything` and `_include`.

mod clause;
mod related;

use rusqlite::types::Value as SqlValue;

pub(in crate::sqlite) use clause::Form;
pub(in crate::sqlite) use related::{compile_everything, compile_include};

use crate::query::{Clause, Cursor, KeyValue, SearchQuery, SortBy, SortKey, ValueKind};

/// SQL text with its parameters.
pub(super) struct Compiled {
    pub sql: String,
    pub params: Vec<SqlValue>,
}

#[derive(Default)]
pub(super) struct Builder {
    sql: String,
    params: Vec<SqlValue>,
    aliases: u32,
}

impl Builder {
    fn push(&mut self, text: &str) {
        self.sql.push_str(text);
    }

    /// Binds the value of a `?` already in the text.
    fn bind(&mut self, value: SqlValue) {
        self.params.push(value);
    }

    fn bind_text(&mut self, text: &str) {
        self.bind(SqlValue::Text(text.to_owned()));
    }

    /// A `?` and its value.
    fn placeholder(&mut self, value: SqlValue) {
        self.sql.push('?');
        self.params.push(value);
    }

    fn placeholder_text(&mut self, text: &str) {
        self.placeholder(SqlValue::Text(text.to_owned()));
    }

    /// A table alias not used elsewhere in the statement.
    fn alias(&mut self) -> String {
        self.aliases += 1;
        format!("a{}", self.aliases)
    }

    /// `item, item, …`
    fn list<T>(&mut self, items: impl Iterator<Item = T>, mut each: impl FnMut(&mut Builder, T)) {
        for (i, item) in items.enumerate() {
            if i > 0 {
                self.push(", ");
            }
            each(self, item);
        }
    }

    /// `(item) OR (item) …`, or a false condition when there are no items.
    fn any<T>(&mut self, items: impl Iterator<Item = T>, mut each: impl FnMut(&mut Builder, T)) {
        let mut empty = true;
        self.push("(");
        for (i, item) in items.enumerate() {
            if i > 0 {
                self.push(" OR ");
            }
            empty = false;
            self.push("(");
            each(self, item);
            self.push(")");
        }
        if empty {
            self.push("0");
        }
        self.push(")");
    }

    fn finish(self) -> Compiled {
        Compiled { sql: self.sql, params: self.params }
    }
}

/// The columns a search returns, in the order `read::version_row` and `typed_versions` expect.
const COLUMNS: &str = "r.rid, r.id, r.version, r.last_updated, r.deleted, r.method, r.body, r.type";

/// A page of matches of `query`: after (or, for a backward cursor, before) the cursor, in sort
/// order, at most `limit` rows. Sort key values follow the version columns as `k0`, `k1`, ….
///
/// Without `_sort` the order is the row id, which a plain index range serves. With sort keys the
/// matches are wrapped in a subquery computing each key, and the cursor becomes a keyset condition
/// on the keys and the row id — no OFFSET, so late pages cost what early ones do.
///
/// `forms` overrides the form of top-level clauses (see [`compile_probe`]).
pub(super) fn compile_search(query: &SearchQuery, limit: u32, forms: &[Option<Form>]) -> Compiled {
    let mut b = Builder::default();
    let backward = query.cursor.as_ref().is_some_and(|c| c.backward);
    if query.sort.is_empty() {
        b.push(&format!("SELECT {COLUMNS} FROM resource r WHERE "));
        b.live_matches_as("r", &query.types, &query.clauses, forms);
        if let Some(cursor) = &query.cursor {
            b.push(if backward { " AND r.rid < " } else { " AND r.rid > " });
            b.placeholder(SqlValue::Integer(cursor.rid));
        }
        b.push(if backward { " ORDER BY r.rid DESC LIMIT " } else { " ORDER BY r.rid LIMIT " });
        b.placeholder(SqlValue::Integer(i64::from(limit)));
        return b.finish();
    }
    b.push(&format!("SELECT * FROM (SELECT {COLUMNS}"));
    for (i, key) in query.sort.iter().enumerate() {
        b.push(", ");
        sort_expression(&mut b, key);
        b.push(&format!(" AS k{i}"));
    }
    b.push(" FROM resource r WHERE ");
    b.live_matches_as("r", &query.types, &query.clauses, forms);
    b.push(")");
    if let Some(cursor) = &query.cursor {
        b.push(" WHERE ");
        keyset(&mut b, &query.sort, cursor);
    }
    b.push(" ORDER BY ");
    for (i, key) in query.sort.iter().enumerate() {
        // Missing values last whichever the direction; a backward page reads the order reversed.
        let descending = key.descending != backward;
        let nulls = if backward { "FIRST" } else { "LAST" };
        b.push(&format!("k{i} {} NULLS {nulls}, ", if descending { "DESC" } else { "ASC" }));
    }
    b.push(if backward { "rid DESC LIMIT " } else { "rid ASC LIMIT " });
    b.placeholder(SqlValue::Integer(i64::from(limit)));
    b.finish()
}

/// Rows strictly after the cursor in sort order (before it, for a backward cursor): for some key
/// `i`, keys `0..i` equal the cursor's and key `i` comes after it; or all keys equal and the row
/// id is greater.
fn keyset(b: &mut Builder, sort: &[SortKey], cursor: &Cursor) {
    b.push("(");
    for i in 0..=sort.len() {
        if i > 0 {
            b.push(" OR ");
        }
        b.push("(1");
        for (j, key) in cursor.keys.iter().enumerate().take(i) {
            b.push(" AND ");
            match key {
                KeyValue::Null => b.push(&format!("k{j} IS NULL")),
                value => {
                    b.push(&format!("k{j} = "));
                    b.placeholder(sql_value(value));
                }
            }
        }
        b.push(" AND ");
        match sort.get(i) {
            Some(key) => {
                let value = cursor.keys.get(i).unwrap_or(&KeyValue::Null);
                // "After" in the page's direction; missing values sort last.
                let greater = key.descending == cursor.backward;
                match (value, cursor.backward) {
                    (KeyValue::Null, false) => b.push("0"),
                    (KeyValue::Null, true) => b.push(&format!("k{i} IS NOT NULL")),
                    (value, backward) => {
                        b.push(&format!("(k{i} {} ", if greater { ">" } else { "<" }));
                        b.placeholder(sql_value(value));
                        if !backward {
                            b.push(&format!(" OR k{i} IS NULL"));
                        }
                        b.push(")");
                    }
                }
            }
            None => {
                b.push(if cursor.backward { "rid < " } else { "rid > " });
                b.placeholder(SqlValue::Integer(cursor.rid));
            }
        }
        b.push(")");
    }
    b.push(")");
}

fn sql_value(key: &KeyValue) -> SqlValue {
    match key {
        KeyValue::Null => SqlValue::Null,
        KeyValue::Integer(i) => SqlValue::Integer(*i),
        KeyValue::Real(f) => SqlValue::Real(*f),
        KeyValue::Text(t) => SqlValue::Text(t.clone()),
    }
}

pub(super) fn key_value(value: SqlValue) -> KeyValue {
    match value {
        SqlValue::Integer(i) => KeyValue::Integer(i),
        SqlValue::Real(f) => KeyValue::Real(f),
        SqlValue::Text(t) => KeyValue::Text(t),
        SqlValue::Null | SqlValue::Blob(_) => KeyValue::Null,
    }
}

/// A sort key of resource `r`: a column, or the smallest (ascending) or largest (descending)
/// indexed value of the parameter.
fn sort_expression(b: &mut Builder, key: &SortKey) {
    let (table, column) = match &key.by {
        SortBy::Id => return b.push("r.id"),
        SortBy::LastUpdated => return b.push("r.last_updated"),
        SortBy::Param { kind, .. } => match (kind, key.descending) {
            (ValueKind::Token, _) => ("token_index", "code"),
            (ValueKind::Date, false) => ("date_index", "low"),
            (ValueKind::Date, true) => ("date_index", "high"),
            (ValueKind::Reference, _) => ("reference_index", "coalesce(target_type || '/' || target_id, url)"),
            (ValueKind::String, _) => ("string_index", "normalized"),
            (ValueKind::Number, _) => ("number_index", "value"),
            (ValueKind::Quantity, false) => ("quantity_index", "coalesce(canonical_low, low)"),
            (ValueKind::Quantity, true) => ("quantity_index", "coalesce(canonical_high, high)"),
            (ValueKind::Uri, _) => ("uri_index", "uri"),
        },
    };
    let SortBy::Param { param, .. } = &key.by else { return };
    let aggregate = if key.descending { "max" } else { "min" };
    let s = b.alias();
    // Through the row id index: a value index would be scanned whole for every match.
    b.push(&format!(
        "(SELECT {aggregate}({column}) FROM {table} {s} INDEXED BY {table}_rid WHERE {s}.rid = r.rid AND {s}.param = "
    ));
    b.placeholder_text(param);
    b.push(")");
}

/// `SELECT count(*)` of every match of `query`, ignoring paging.
pub(super) fn compile_count(query: &SearchQuery) -> Compiled {
    let mut b = Builder::default();
    b.push("SELECT count(*) FROM resource r WHERE ");
    b.live_matches("r", &query.types, &query.clauses);
    b.finish()
}

/// Counts, up to `cap`, the index rows a top-level clause would collect — for a clause whose
/// default form is to collect them. A search for one page then probes instead when the count
/// reaches the cap: walking the resources in page order finds a page of a frequent code sooner than
/// collecting its tens of thousands of row ids. `None` for clauses that are not measured.
///
/// References and chains are never switched: what refers to one resource was mostly written
/// together (one patient's bundle), so its matches sit in one stretch of row ids, and a walk in
/// row id order would cross everything before that stretch to reach them. Their match counts are
/// bounded by one resource's data anyway.
pub(super) fn compile_probe(clause: &Clause, cap: u32) -> Option<Compiled> {
    // A composite is measured by its first component alone: collecting it costs a join per row of
    // that component (every systolic pressure, say), however few of them the second one keeps.
    let measured = match clause {
        Clause::Match { values, .. } => {
            Builder::default_form(clause) == Form::Collect && !values.iter().any(|v| v.kind() == ValueKind::Reference)
        }
        Clause::Composite { param, values } => match values.as_slice() {
            [components] => {
                let first = components.first()?.clone();
                return compile_probe(&Clause::Match { param: format!("{param}$0"), values: vec![first] }, cap);
            }
            _ => false,
        },
        _ => false,
    };
    if !measured {
        return None;
    }
    let mut b = Builder::default();
    b.push("SELECT count(*) FROM (");
    b.rows(clause, false);
    b.push(" LIMIT ");
    b.placeholder(SqlValue::Integer(i64::from(cap)));
    b.push(")");
    Some(b.finish())
}

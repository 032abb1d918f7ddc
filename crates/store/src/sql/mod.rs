//! Compiles store queries to SQL, for SQLite or PostgreSQL.
//!
//! [`Builder`] accumulates SQL text and its bound parameters side by side, and hands out fresh
//! table aliases so that nested clauses (chains, `_has`, composites) never capture each other's
//! rows. `clause.rs` turns clauses and values into conditions; `related.rs` holds the queries for
//! `$everything` and `_include`.
//!
//! Both backends share one compiler so that a search means the same on either; the [`Dialect`]
//! decides only spelling and hints. The text is written with SQLite's `?` / `?N` placeholders and,
//! for PostgreSQL, renumbered to `$N` at the end ([`Compiled::new`]), so the clauses need not know
//! how many parameters came before them. That pass relies on no generated string literal holding a
//! `?` (it skips quoted text anyway, as SQLite does).

mod clause;
mod related;
#[cfg(test)]
mod shard_check;
mod snapshot;
#[cfg(test)]
pub(crate) mod tests;

pub(crate) use clause::Form;
pub(crate) use related::{compile_everything, compile_include};
pub(crate) use snapshot::compile_snapshot;

use crate::query::{Clause, Cursor, KeyValue, SearchQuery, SortBy, SortKey, ValueKind};

/// The SQL dialect a query is compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// SQLite (3.30 or later, for `NULLS LAST`): `?` placeholders, FTS5 full text, `INDEXED BY` hints.
    Sqlite,
    /// PostgreSQL 15: `$N` placeholders, `tsvector` full text, no planner hints.
    Postgres,
}

/// A bound parameter, in the types both databases share. Integers are bound as 64-bit (`BIGINT`
/// columns), reals as doubles, text as text; `Null` only where the SQL casts it to a type.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Param {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
}

/// SQL text with its parameters.
pub(crate) struct Compiled {
    pub sql: String,
    pub params: Vec<Param>,
}

impl Compiled {
    /// The statement in `dialect`'s placeholders, from text written with SQLite's.
    fn new(dialect: Dialect, sql: String, params: Vec<Param>) -> Compiled {
        let sql = match dialect {
            Dialect::Sqlite => {
                debug_assert_eq!(numbered(&sql).1, params.len(), "placeholders and parameters differ: {sql}");
                sql
            }
            Dialect::Postgres => {
                let (numbered, count) = numbered(&sql);
                debug_assert_eq!(count, params.len(), "placeholders and parameters differ: {sql}");
                numbered
            }
        };
        Compiled { sql, params }
    }
}

/// `sql` with PostgreSQL's `$N` for SQLite's placeholders, and the number of parameters it takes.
/// SQLite's rule: `?N` is parameter N, a bare `?` the one after the largest number used so far.
/// Quoted text (string literals, identifiers) is copied as it is.
fn numbered(sql: &str) -> (String, usize) {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut largest = 0usize;
    let mut quote = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            // A doubled quote inside quoted text closes and reopens it: the same text either way.
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '?') => {
                let mut digits = String::new();
                while let Some(d) = chars.next_if(char::is_ascii_digit) {
                    digits.push(d);
                }
                let n = if digits.is_empty() { largest + 1 } else { digits.parse().unwrap_or(0) };
                largest = largest.max(n);
                out.push_str(&format!("${n}"));
                continue;
            }
            _ => {}
        }
        out.push(c);
    }
    (out, largest)
}

struct Builder {
    dialect: Dialect,
    sql: String,
    params: Vec<Param>,
    aliases: u32,
}

impl Builder {
    fn new(dialect: Dialect) -> Builder {
        Builder { dialect, sql: String::new(), params: Vec::new(), aliases: 0 }
    }

    fn push(&mut self, text: &str) {
        self.sql.push_str(text);
    }

    /// Binds the value of a `?` already in the text.
    fn bind(&mut self, value: Param) {
        self.params.push(value);
    }

    fn bind_text(&mut self, text: &str) {
        self.bind(Param::Text(text.to_owned()));
    }

    /// A `?` and its value.
    fn placeholder(&mut self, value: Param) {
        self.sql.push('?');
        self.params.push(value);
    }

    fn placeholder_text(&mut self, text: &str) {
        self.placeholder(Param::Text(text.to_owned()));
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
            self.push("FALSE");
        }
        self.push(")");
    }

    fn finish(self) -> Compiled {
        Compiled::new(self.dialect, self.sql, self.params)
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
pub(crate) fn compile_search(dialect: Dialect, query: &SearchQuery, limit: u32, forms: &[Option<Form>]) -> Compiled {
    let mut b = Builder::new(dialect);
    let backward = query.cursor.as_ref().is_some_and(|c| c.backward);
    if query.sort.is_empty() {
        b.push(&format!("SELECT {COLUMNS} FROM resource r WHERE "));
        b.live_matches_as("r", &query.types, &query.clauses, forms);
        if let Some(cursor) = &query.cursor {
            b.push(if backward { " AND r.rid < " } else { " AND r.rid > " });
            b.placeholder(Param::Integer(cursor.rid));
        }
        b.push(if backward { " ORDER BY r.rid DESC LIMIT " } else { " ORDER BY r.rid LIMIT " });
        b.placeholder(Param::Integer(i64::from(limit)));
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
    // PostgreSQL requires a derived table to be named.
    b.push(") AS q");
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
    b.placeholder(Param::Integer(i64::from(limit)));
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
        b.push("(TRUE");
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
                    (KeyValue::Null, false) => b.push("FALSE"),
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
                b.placeholder(Param::Integer(cursor.rid));
            }
        }
        b.push(")");
    }
    b.push(")");
}

fn sql_value(key: &KeyValue) -> Param {
    match key {
        KeyValue::Null => Param::Null,
        KeyValue::Integer(i) => Param::Integer(*i),
        KeyValue::Real(f) => Param::Real(*f),
        KeyValue::Text(t) => Param::Text(t.clone()),
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
    // Through the table's row id order: a value index would be scanned whole for every match.
    let hint = match b.dialect {
        Dialect::Sqlite => format!(" INDEXED BY sqlite_autoindex_{table}_1"),
        Dialect::Postgres => String::new(),
    };
    b.push(&format!(
        "(SELECT {aggregate}({column}) FROM {table} {s}{hint} WHERE {} AND {s}.param = ",
        b.same_row(&s, "r")
    ));
    b.placeholder_text(param);
    // Citus pushes an aggregate in a correlated subquery down to the shards when it is grouped by
    // the distribution column; correlated on the shard key, that is one group, as without it.
    b.push(
        match b.dialect {
            Dialect::Sqlite => ")".to_owned(),
            Dialect::Postgres => format!(" GROUP BY {s}.shard_key)"),
        }
        .as_str(),
    );
}

/// `SELECT count(*)` of every match of `query`, ignoring paging.
pub(crate) fn compile_count(dialect: Dialect, query: &SearchQuery) -> Compiled {
    let mut b = Builder::new(dialect);
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
///
/// SQLite only: PostgreSQL estimates from its column statistics how many rows a value matches, and
/// turns either form into the join that suits.
pub(crate) fn compile_probe(clause: &Clause, cap: u32) -> Option<Compiled> {
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
    let mut b = Builder::new(Dialect::Sqlite);
    b.push("SELECT count(*) FROM (");
    b.rows(clause, false);
    b.push(" LIMIT ");
    b.placeholder(Param::Integer(i64::from(cap)));
    b.push(") AS q");
    Some(b.finish())
}

/// One match of a search, with its row id and sort key values (for the cursor).
pub(crate) struct SearchRow {
    pub rid: i64,
    pub version: crate::model::StoredVersion,
    pub keys: Vec<KeyValue>,
}

/// A page from the rows a search read for `query` (one more than asked, `more`, tells whether
/// further rows exist): in the usual order, with the cursors of the pages after and before it.
/// A backward page was read in reverse order. Going forward there is a previous page whenever the
/// page did not start at the beginning; going backward there is a next page, the one we came from.
pub(crate) fn search_page(
    query: &SearchQuery,
    mut rows: Vec<SearchRow>,
    more: bool,
) -> (Vec<crate::model::StoredVersion>, Option<String>, Option<String>) {
    let backward = query.cursor.as_ref().is_some_and(|c| c.backward);
    if backward {
        rows.reverse();
    }
    let (has_next, has_previous) = if backward { (true, more) } else { (more, query.cursor.is_some()) };
    let cursor = |row: &SearchRow, backward| Cursor { keys: row.keys.clone(), rid: row.rid, backward }.encode();
    let next = if has_next { rows.last().map(|row| cursor(row, false)) } else { None };
    let previous = if has_previous { rows.first().map(|row| cursor(row, true)) } else { None };
    (rows.into_iter().map(|row| row.version).collect(), next, previous)
}

/// What reading `versions` costs: a row each (at least one, for the lookup) and their bytes.
pub(crate) fn cost_of(versions: &[crate::model::StoredVersion]) -> crate::model::Cost {
    crate::model::Cost {
        rows_read: versions.len().max(1) as u64,
        bytes_read: versions.iter().map(|v| v.body.len() as u64).sum(),
        ..crate::model::Cost::default()
    }
}

/// A history or `$everything` page from up to `count + 1` rows: the first `count`, and a cursor
/// (made by `cursor`) when there were more.
pub(crate) fn keyset_page(
    mut rows: Vec<(i64, crate::model::StoredVersion)>,
    count: u32,
    cursor: impl Fn(i64, &crate::model::StoredVersion) -> String,
) -> crate::model::Outcome<crate::query::Page> {
    let more = rows.len() > count as usize;
    rows.truncate(count as usize);
    let next = if more { rows.last().map(|(rid, v)| cursor(*rid, v)) } else { None };
    let versions: Vec<crate::model::StoredVersion> = rows.into_iter().map(|(_, v)| v).collect();
    let cost = cost_of(&versions);
    crate::model::Outcome { value: crate::query::Page { versions, next, previous: None, total: None }, cost }
}

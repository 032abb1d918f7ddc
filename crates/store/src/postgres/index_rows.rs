//! A version's index rows on PostgreSQL: the statements that insert, drop and replace them, and the
//! arrays they bind.
//!
//! Every index row of a version goes in with one statement: one array per column, unnested per
//! table, each table's insert a CTE (empty arrays insert nothing, so the statement is the same for
//! every resource). The same CTEs follow the insert of a new version in the statement that writes
//! it, taking its row id from the version's `RETURNING`, so that a write is one round trip for the
//! version and all its rows. Every row carries the version's shard key; the statements name it, so
//! that on Citus each runs on the version's shard. Their modifications are CTEs under a `SELECT`,
//! the form in which Citus runs them all (the `INSERT … SELECT`s through the coordinator, which
//! routes the rows to the version's shard).

use std::sync::OnceLock;

use tokio_postgres::types::ToSql;

use crate::index::IndexEntries;

/// The arrays an index statement binds, in the order of [`index_ctes`]' placeholders.
pub(super) const ARRAYS: usize = 36;

/// An index table: its CTE's name, its name, and its columns after `(shard_key, rid)` with their
/// array types.
type Table = (&'static str, &'static str, &'static [(&'static str, &'static str)]);

/// The index tables whose rows come from arrays, in the order their arrays are bound: the CTE's
/// name, the table, and its columns after `(shard_key, rid)` with their array types. The full-text
/// table (`x`, `text_index`) follows them; its two values are turned into `tsvector`s.
const TABLES: [Table; 8] = [
    ("t", "token_index", &[("grp", "bigint"), ("param", "text"), ("system", "text"), ("code", "text")]),
    ("d", "date_index", &[("grp", "bigint"), ("param", "text"), ("low", "bigint"), ("high", "bigint")]),
    (
        "r",
        "reference_index",
        &[("grp", "bigint"), ("param", "text"), ("target_type", "text"), ("target_id", "text"), ("url", "text")],
    ),
    ("s", "string_index", &[("grp", "bigint"), ("param", "text"), ("normalized", "text"), ("exact", "text")]),
    ("n", "number_index", &[("grp", "bigint"), ("param", "text"), ("value", "float8")]),
    (
        "q",
        "quantity_index",
        &[
            ("grp", "bigint"),
            ("param", "text"),
            ("system", "text"),
            ("code", "text"),
            ("low", "float8"),
            ("high", "float8"),
            ("canonical_unit", "text"),
            ("canonical_low", "float8"),
            ("canonical_high", "float8"),
        ],
    ),
    ("c", "compartment_index", &[("compartment", "text"), ("id", "text")]),
    ("u", "uri_index", &[("grp", "bigint"), ("param", "text"), ("uri", "text")]),
];

/// `table (shard_key, rid, columns…)` and the list `$n::type[], …` of the arrays from `$first`.
fn insert_into(table: &str, columns: &[(&str, &str)], first: usize) -> (String, String) {
    let names: Vec<&str> = columns.iter().map(|(name, _)| *name).collect();
    let arrays: Vec<String> =
        columns.iter().enumerate().map(|(i, (_, kind))| format!("${}::{kind}[]", first + i)).collect();
    (format!("{table} (shard_key, rid, {})", names.join(", ")), arrays.join(", "))
}

/// The CTEs (`t AS (…), d AS (…), …`) that insert a version's index rows: `shard` and `rid` are the
/// SQL of its shard key and row id, `from` a relation they read (the version's `RETURNING`), and
/// the arrays are the parameters from `$first` on, table by table ([`TABLES`]), then the narrative
/// and the content.
fn index_ctes(shard: &str, rid: &str, from: Option<&str>, first: usize) -> String {
    let from = from.map_or(String::new(), |from| format!("{from}, "));
    let mut ctes = Vec::with_capacity(TABLES.len() + 1);
    let mut next = first;
    for (cte, table, columns) in TABLES {
        let (into, arrays) = insert_into(table, columns, next);
        ctes.push(format!(
            " {cte} AS (INSERT INTO {into}\n       SELECT {shard}, {rid}, a.* FROM {from}unnest({arrays}) AS a)"
        ));
        next += columns.len();
    }
    let (narrative, content) = (format!("${next}::text"), format!("${}::text", next + 1));
    let text_from = if from.is_empty() { String::new() } else { format!(" FROM {}", from.trim_end_matches(", ")) };
    ctes.push(format!(
        " x AS (INSERT INTO text_index (shard_key, rid, narrative, content)\n       SELECT {shard}, {rid}, \
         to_tsvector('simple', {narrative}), to_tsvector('simple', {content}){text_from}\n       WHERE {narrative} IS \
         NOT NULL)"
    ));
    ctes.join(",\n")
}

/// The CTEs that insert the index rows of many versions: for each table ([`TABLES`]) the arrays
/// of its rows' shard keys and row ids, then its columns; then the full-text table's four arrays
/// (shard keys, row ids, narratives, contents). Parameters from `$first` on.
pub(super) fn batch_index_ctes(first: usize) -> String {
    let mut ctes = Vec::with_capacity(TABLES.len() + 1);
    let mut next = first;
    for (cte, table, columns) in TABLES {
        let (into, arrays) = insert_into(table, columns, next + 2);
        let owners = format!("${}::text[], ${}::bigint[]", next, next + 1);
        ctes.push(format!(" {cte} AS (INSERT INTO {into}\n       SELECT * FROM unnest({owners}, {arrays}))"));
        next += 2 + columns.len();
    }
    ctes.push(format!(
        " x AS (INSERT INTO text_index (shard_key, rid, narrative, content)\n       SELECT a.s, a.r, \
         to_tsvector('simple', a.n), to_tsvector('simple', a.c)\n       FROM unnest(${}::text[], ${}::bigint[], \
         ${}::text[], ${}::text[]) AS a(s, r, n, c))",
        next,
        next + 1,
        next + 2,
        next + 3
    ));
    ctes.join(",\n")
}

/// Every index row of a version: `$1` its shard key, `$2` its row id, then the arrays.
pub(super) fn insert_index() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| format!("WITH\n{}\n SELECT 1", index_ctes("$1::text", "$2::bigint", None, 3)))
}

/// The columns of a new version, `$1` (shard key) to `$8`.
const VERSION: &str =
    "INSERT INTO resource (shard_key, type, id, version, last_updated, valid_to, deleted, method, body)
       VALUES ($1, $2, $3, $4, $5, NULL, $6, $7, $8) RETURNING rid";

/// A further version of a resource, on its shard (`$1`), with its index rows (the arrays from `$9`);
/// returns its row id.
pub(super) fn insert_version() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        format!("WITH\n v AS ({VERSION}),\n{}\n SELECT rid FROM v", index_ctes("$1::text", "v.rid", Some("v"), 9))
    })
}

/// The first version of a resource, as [`insert_version`], and where it is: `resource_key`'s
/// primary key refuses a second resource with its `Type/id` on any shard.
pub(super) fn insert_resource() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        format!(
            "WITH\n k AS (INSERT INTO resource_key (type, id, shard_key) VALUES ($2, $3, $1)),\n v AS ({VERSION}),\n{}\n \
             SELECT rid FROM v",
            index_ctes("$1::text", "v.rid", Some("v"), 9)
        )
    })
}

/// The CTEs that drop every index row of a version (`$1` shard key, `$2` row id), all on one shard.
macro_rules! drop_ctes {
    () => {
        " t AS (DELETE FROM token_index WHERE shard_key = $1 AND rid = $2),
 d AS (DELETE FROM date_index WHERE shard_key = $1 AND rid = $2),
 r AS (DELETE FROM reference_index WHERE shard_key = $1 AND rid = $2),
 s AS (DELETE FROM string_index WHERE shard_key = $1 AND rid = $2),
 n AS (DELETE FROM number_index WHERE shard_key = $1 AND rid = $2),
 q AS (DELETE FROM quantity_index WHERE shard_key = $1 AND rid = $2),
 c AS (DELETE FROM compartment_index WHERE shard_key = $1 AND rid = $2),
 u AS (DELETE FROM uri_index WHERE shard_key = $1 AND rid = $2),
 x AS (DELETE FROM text_index WHERE shard_key = $1 AND rid = $2)"
    };
}

/// Drops every index row of a version (`$1` shard key, `$2` row id).
pub(super) const DROP_INDEX: &str = concat!("WITH\n", drop_ctes!(), "\n SELECT 1");

/// [`DROP_INDEX`] that also ends the version (`$3` is its `valid_to`): one round trip, on one shard.
pub(super) const RETIRE: &str = concat!(
    "WITH\n v AS (UPDATE resource SET valid_to = $3::bigint WHERE shard_key = $1 AND rid = $2),\n",
    drop_ctes!(),
    "\n SELECT 1"
);

#[derive(Default)]
struct Tokens {
    grp: Vec<i64>,
    param: Vec<String>,
    system: Vec<Option<String>>,
    code: Vec<String>,
}
#[derive(Default)]
struct Dates {
    grp: Vec<i64>,
    param: Vec<String>,
    low: Vec<i64>,
    high: Vec<i64>,
}
#[derive(Default)]
struct References {
    grp: Vec<i64>,
    param: Vec<String>,
    target_type: Vec<Option<String>>,
    target_id: Vec<Option<String>>,
    url: Vec<Option<String>>,
}
#[derive(Default)]
struct Strings {
    grp: Vec<i64>,
    param: Vec<String>,
    normalized: Vec<String>,
    exact: Vec<String>,
}
#[derive(Default)]
struct Numbers {
    grp: Vec<i64>,
    param: Vec<String>,
    value: Vec<f64>,
}
#[derive(Default)]
struct Quantities {
    grp: Vec<i64>,
    param: Vec<String>,
    system: Vec<Option<String>>,
    code: Vec<Option<String>>,
    low: Vec<f64>,
    high: Vec<f64>,
    canonical_unit: Vec<Option<String>>,
    canonical_low: Vec<Option<f64>>,
    canonical_high: Vec<Option<f64>>,
}

#[derive(Default)]
struct Uris {
    grp: Vec<i64>,
    param: Vec<String>,
    uri: Vec<String>,
}

/// A version's index rows as columns, composites' components in groups numbered from 1.
#[derive(Default)]
pub(super) struct IndexArrays {
    token: Tokens,
    date: Dates,
    reference: References,
    string: Strings,
    number: Numbers,
    quantity: Quantities,
    uri: Uris,
    compartment: Vec<String>,
    compartment_id: Vec<String>,
    narrative: Option<String>,
    content: Option<String>,
}

impl IndexArrays {
    pub(super) fn of(index: &IndexEntries) -> IndexArrays {
        let mut arrays = IndexArrays::default();
        if let Some(text) = &index.text {
            arrays.narrative = Some(text.narrative.clone());
            arrays.content = Some(text.content.clone());
        }
        arrays.extend(index);
        arrays
    }

    /// Appends a version's rows, the full text aside.
    fn extend(&mut self, index: &IndexEntries) {
        self.add(0, index);
        for (group, composite) in index.composites.iter().enumerate() {
            self.add(group as i64 + 1, composite);
        }
        for c in &index.compartments {
            self.compartment.push(c.compartment.clone());
            self.compartment_id.push(c.id.clone());
        }
    }

    /// The arrays as parameters, in the order of [`index_ctes`]' placeholders.
    pub(super) fn params(&self) -> [&(dyn ToSql + Sync); ARRAYS] {
        [
            &self.token.grp,
            &self.token.param,
            &self.token.system,
            &self.token.code,
            &self.date.grp,
            &self.date.param,
            &self.date.low,
            &self.date.high,
            &self.reference.grp,
            &self.reference.param,
            &self.reference.target_type,
            &self.reference.target_id,
            &self.reference.url,
            &self.string.grp,
            &self.string.param,
            &self.string.normalized,
            &self.string.exact,
            &self.number.grp,
            &self.number.param,
            &self.number.value,
            &self.quantity.grp,
            &self.quantity.param,
            &self.quantity.system,
            &self.quantity.code,
            &self.quantity.low,
            &self.quantity.high,
            &self.quantity.canonical_unit,
            &self.quantity.canonical_low,
            &self.quantity.canonical_high,
            &self.compartment,
            &self.compartment_id,
            &self.uri.grp,
            &self.uri.param,
            &self.uri.uri,
            &self.narrative,
            &self.content,
        ]
    }

    /// How many rows each table of [`TABLES`] gets from these arrays.
    fn rows(&self) -> [usize; TABLES.len()] {
        [
            self.token.grp.len(),
            self.date.grp.len(),
            self.reference.grp.len(),
            self.string.grp.len(),
            self.number.grp.len(),
            self.quantity.grp.len(),
            self.compartment.len(),
            self.uri.grp.len(),
        ]
    }

    fn add(&mut self, grp: i64, index: &IndexEntries) {
        for t in &index.tokens {
            self.token.grp.push(grp);
            self.token.param.push(t.param.clone());
            self.token.system.push(t.system.clone());
            self.token.code.push(t.code.clone());
        }
        for d in &index.dates {
            self.date.grp.push(grp);
            self.date.param.push(d.param.clone());
            self.date.low.push(d.low);
            self.date.high.push(d.high);
        }
        for r in &index.references {
            self.reference.grp.push(grp);
            self.reference.param.push(r.param.clone());
            self.reference.target_type.push(r.target_type.clone());
            self.reference.target_id.push(r.target_id.clone());
            self.reference.url.push(r.url.clone());
        }
        for s in &index.strings {
            self.string.grp.push(grp);
            self.string.param.push(s.param.clone());
            self.string.normalized.push(s.normalized.clone());
            self.string.exact.push(s.exact.clone());
        }
        for n in &index.numbers {
            self.number.grp.push(grp);
            self.number.param.push(n.param.clone());
            self.number.value.push(n.value);
        }
        for q in &index.quantities {
            let canonical = q.canonical.as_ref();
            self.quantity.grp.push(grp);
            self.quantity.param.push(q.param.clone());
            self.quantity.system.push(q.system.clone());
            self.quantity.code.push(q.code.clone());
            self.quantity.low.push(q.low);
            self.quantity.high.push(q.high);
            self.quantity.canonical_unit.push(canonical.map(|c| c.unit.clone()));
            self.quantity.canonical_low.push(canonical.map(|c| c.low));
            self.quantity.canonical_high.push(canonical.map(|c| c.high));
        }
        for u in &index.uris {
            self.uri.grp.push(grp);
            self.uri.param.push(u.param.clone());
            self.uri.uri.push(u.uri.clone());
        }
    }
}

/// The index rows of many versions as columns ([`batch_index_ctes`]): each table's rows with the
/// shard key and row id of the version they belong to.
#[derive(Default)]
pub(super) struct BatchArrays {
    rows: IndexArrays,
    owners: [(Vec<String>, Vec<i64>); TABLES.len()],
    text: (Vec<String>, Vec<i64>, Vec<String>, Vec<String>),
}

impl BatchArrays {
    /// Appends the rows of the version at `shard_key`/`rid`.
    pub(super) fn push(&mut self, shard_key: &str, rid: i64, index: &IndexEntries) {
        let before = self.rows.rows();
        self.rows.extend(index);
        for ((shard_keys, rids), (after, before)) in
            self.owners.iter_mut().zip(self.rows.rows().into_iter().zip(before))
        {
            shard_keys.extend(std::iter::repeat_n(shard_key, after - before).map(str::to_owned));
            rids.extend(std::iter::repeat_n(rid, after - before));
        }
        if let Some(text) = &index.text {
            self.text.0.push(shard_key.to_owned());
            self.text.1.push(rid);
            self.text.2.push(text.narrative.clone());
            self.text.3.push(text.content.clone());
        }
    }

    /// The arrays as parameters, in the order of [`batch_index_ctes`]' placeholders.
    pub(super) fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        let columns = self.rows.params();
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(ARRAYS + 2 * TABLES.len() + 2);
        let mut next = 0;
        for ((shard_keys, rids), (_, _, table)) in self.owners.iter().zip(TABLES) {
            params.push(shard_keys);
            params.push(rids);
            params.extend_from_slice(&columns[next..next + table.len()]);
            next += table.len();
        }
        params.extend([&self.text.0 as &(dyn ToSql + Sync), &self.text.1, &self.text.2, &self.text.3]);
        params
    }
}

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

/// The CTEs (`t AS (…), d AS (…), …`) that insert a version's index rows: `shard` and `rid` are the
/// SQL of its shard key and row id, `from` a relation they read (the version's `RETURNING`), and
/// the arrays are the parameters from `$first` on.
fn index_ctes(shard: &str, rid: &str, from: Option<&str>, first: usize) -> String {
    let p = |i: usize| format!("${}", first + i);
    let source = |arrays: &str| match from {
        Some(from) => format!("FROM {from}, unnest({arrays}) AS a"),
        None => format!("FROM unnest({arrays}) AS a"),
    };
    let text_from = from.map_or(String::new(), |from| format!(" FROM {from}"));
    format!(
        " t AS (INSERT INTO token_index (shard_key, rid, grp, param, system, code)
       SELECT {shard}, {rid}, a.* {}),
 d AS (INSERT INTO date_index (shard_key, rid, grp, param, low, high)
       SELECT {shard}, {rid}, a.* {}),
 r AS (INSERT INTO reference_index (shard_key, rid, grp, param, target_type, target_id, url)
       SELECT {shard}, {rid}, a.* {}),
 s AS (INSERT INTO string_index (shard_key, rid, grp, param, normalized, exact)
       SELECT {shard}, {rid}, a.* {}),
 n AS (INSERT INTO number_index (shard_key, rid, grp, param, value)
       SELECT {shard}, {rid}, a.* {}),
 q AS (INSERT INTO quantity_index (shard_key, rid, grp, param, system, code, low, high, canonical_unit,
                                   canonical_low, canonical_high)
       SELECT {shard}, {rid}, a.* {}),
 c AS (INSERT INTO compartment_index (shard_key, rid, compartment, id)
       SELECT {shard}, {rid}, a.* {}),
 x AS (INSERT INTO text_index (shard_key, rid, narrative, content)
       SELECT {shard}, {rid}, to_tsvector('simple', {narrative}::text), to_tsvector('simple', {content}::text){text_from}
       WHERE {narrative}::text IS NOT NULL),
 u AS (INSERT INTO uri_index (shard_key, rid, grp, param, uri)
       SELECT {shard}, {rid}, a.* {})",
        source(&format!("{}::bigint[], {}::text[], {}::text[], {}::text[]", p(0), p(1), p(2), p(3))),
        source(&format!("{}::bigint[], {}::text[], {}::bigint[], {}::bigint[]", p(4), p(5), p(6), p(7))),
        source(&format!("{}::bigint[], {}::text[], {}::text[], {}::text[], {}::text[]", p(8), p(9), p(10), p(11), p(12))),
        source(&format!("{}::bigint[], {}::text[], {}::text[], {}::text[]", p(13), p(14), p(15), p(16))),
        source(&format!("{}::bigint[], {}::text[], {}::float8[]", p(17), p(18), p(19))),
        source(&format!(
            "{}::bigint[], {}::text[], {}::text[], {}::text[], {}::float8[], {}::float8[], {}::text[], {}::float8[], \
             {}::float8[]",
            p(20), p(21), p(22), p(23), p(24), p(25), p(26), p(27), p(28)
        )),
        source(&format!("{}::text[], {}::text[]", p(29), p(30))),
        source(&format!("{}::bigint[], {}::text[], {}::text[]", p(33), p(34), p(35))),
        narrative = p(31),
        content = p(32),
    )
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
        arrays.add(0, index);
        for (group, composite) in index.composites.iter().enumerate() {
            arrays.add(group as i64 + 1, composite);
        }
        for c in &index.compartments {
            arrays.compartment.push(c.compartment.clone());
            arrays.compartment_id.push(c.id.clone());
        }
        arrays
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
            &self.narrative,
            &self.content,
            &self.uri.grp,
            &self.uri.param,
            &self.uri.uri,
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

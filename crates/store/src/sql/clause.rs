//! Clauses and values to SQL conditions on a resource alias.
//!
//! A parameter clause takes one of two forms, chosen by how many rows its values are likely to
//! match. A selective value (an exact code, id, name prefix, or a bounded date) becomes
//! `rid IN (SELECT rid FROM <index table> …)`: SQLite collects the few matching row ids from the
//! index and reads just those resources, each once. A broad one (`gt`, `le`, `:missing`, `:contains`
//! …) becomes a correlated `EXISTS` probe on the index table's `rid` index: the query then walks the
//! type's resources in page order and stops as soon as the page is full, instead of first
//! collecting every one of tens of thousands of matches.
//!
//! PostgreSQL reads the same two forms; it only lacks the `INDEXED BY` hints (its planner chooses
//! indexes by their statistics) and spells a few functions differently. Its rows are named by shard
//! key and row id together ([`Builder::same_row`]), so that on Citus a resource meets its own index
//! rows on its shard. What links a resource to another one — a reference in a chain or `_has` —
//! is an uncorrelated `(type, id) IN (SELECT …)`, which Citus computes first and hands to every
//! shard, since the two may be on different shards.

use crate::query::{
    Clause, DateRange, NumberRange, Prefix, QuantityValue, ReferenceValue, StringMatch, TokenSystem, TokenValue,
    UriMatch, Value, ValueKind,
};

use super::{Builder, Dialect, Param};

/// `INDEXED BY` the row id order of a kind's table, where the dialect has such hints: on SQLite,
/// the primary key of the `WITHOUT ROWID` table, by the name SQLite gives it.
fn by_rid(dialect: Dialect, kind: ValueKind) -> &'static str {
    if dialect == Dialect::Postgres {
        return "";
    }
    match kind {
        ValueKind::Token => "INDEXED BY sqlite_autoindex_token_index_1",
        ValueKind::Date => "INDEXED BY sqlite_autoindex_date_index_1",
        ValueKind::Reference => "INDEXED BY sqlite_autoindex_reference_index_1",
        ValueKind::String => "INDEXED BY sqlite_autoindex_string_index_1",
        ValueKind::Number => "INDEXED BY sqlite_autoindex_number_index_1",
        ValueKind::Quantity => "INDEXED BY sqlite_autoindex_quantity_index_1",
        ValueKind::Uri => "INDEXED BY sqlite_autoindex_uri_index_1",
    }
}

/// The index table holding values of a kind.
pub(super) fn table(kind: ValueKind) -> &'static str {
    match kind {
        ValueKind::Token => "token_index",
        ValueKind::Date => "date_index",
        ValueKind::Reference => "reference_index",
        ValueKind::String => "string_index",
        ValueKind::Number => "number_index",
        ValueKind::Quantity => "quantity_index",
        ValueKind::Uri => "uri_index",
    }
}

/// How a clause over an index table meets the resource it tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Form {
    /// `rid IN (SELECT rid …)`: collect the matching row ids first (few matches).
    Collect,
    /// `EXISTS (SELECT … WHERE rid = r.rid)`: test each resource as the query walks them (many).
    Probe,
}

impl Builder {
    /// The columns that name the version a row of `alias` belongs to (a version of `resource`, or
    /// an index row): its row id, and on PostgreSQL its shard key before it.
    pub(super) fn row(&self, alias: &str) -> String {
        match self.dialect {
            Dialect::Sqlite => format!("{alias}.rid"),
            Dialect::Postgres => format!("{alias}.shard_key, {alias}.rid"),
        }
    }

    /// [`Builder::row`] as one value, the left side of an `IN (SELECT row …)`.
    pub(super) fn row_value(&self, alias: &str) -> String {
        match self.dialect {
            Dialect::Sqlite => format!("{alias}.rid"),
            Dialect::Postgres => format!("({alias}.shard_key, {alias}.rid)"),
        }
    }

    /// The condition that rows `a` and `b` belong to the same version. On PostgreSQL the shard keys
    /// are equated too: that is what lets Citus run the join (or correlation) on each shard.
    pub(super) fn same_row(&self, a: &str, b: &str) -> String {
        match self.dialect {
            Dialect::Sqlite => format!("{a}.rid = {b}.rid"),
            Dialect::Postgres => format!("{a}.shard_key = {b}.shard_key AND {a}.rid = {b}.rid"),
        }
    }

    /// `alias.type …`, current and live, and every clause.
    pub(super) fn live_matches(&mut self, alias: &str, types: &[String], clauses: &[Clause]) {
        self.live_matches_as(alias, types, clauses, &[]);
    }

    /// The same, with the form of each clause decided by the caller where `forms` says so.
    pub(super) fn live_matches_as(
        &mut self,
        alias: &str,
        types: &[String],
        clauses: &[Clause],
        forms: &[Option<Form>],
    ) {
        self.push(&format!("{alias}.valid_to IS NULL AND {alias}.deleted = 0"));
        match types {
            [] => {}
            [one] => {
                self.push(&format!(" AND {alias}.type = ?"));
                self.bind_text(one);
            }
            many => {
                self.push(&format!(" AND {alias}.type IN ("));
                self.list(many.iter(), |b, t| b.placeholder_text(t));
                self.push(")");
            }
        }
        for (i, clause) in clauses.iter().enumerate() {
            self.push(" AND (");
            self.clause_as(alias, clause, forms.get(i).copied().flatten());
            self.push(")");
        }
    }

    pub(super) fn clause(&mut self, alias: &str, clause: &Clause) {
        self.clause_as(alias, clause, None);
    }

    /// The form a clause takes unless a measurement says otherwise: collect for values that look
    /// selective, probe for the rest.
    pub(super) fn default_form(clause: &Clause) -> Form {
        match clause {
            Clause::Match { values, .. } if !values.iter().all(selective) => Form::Probe,
            _ => Form::Collect,
        }
    }

    fn clause_as(&mut self, alias: &str, clause: &Clause, form: Option<Form>) {
        let form = form.unwrap_or_else(|| Builder::default_form(clause));
        match clause {
            // PostgreSQL has no empty `IN ()`; it matches nothing in SQLite.
            Clause::Id(ids) if ids.is_empty() => self.push("FALSE"),
            Clause::Id(ids) => {
                self.push(&format!("{alias}.id IN ("));
                self.list(ids.iter(), |b, id| b.placeholder_text(id));
                self.push(")");
            }
            Clause::LastUpdated(ranges) => {
                self.any(ranges.iter(), |b, range| b.instant_in(&format!("{alias}.last_updated"), range));
            }
            Clause::Match { .. } | Clause::Chain { .. } => {
                self.rows_meet(alias, form, |b, probe| b.rows(clause, probe))
            }
            Clause::Composite { param, values } => {
                self.any(values.iter(), |b, components| {
                    b.rows_meet(alias, form, |b, probe| b.composite_rows(param, components, probe))
                });
            }
            Clause::Missing { param, kind, missing } => {
                // Both answers are usually broad: probe each candidate rather than collect them all.
                let v = self.alias();
                let not = if *missing { "NOT " } else { "" };
                self.push(&format!(
                    "{not}EXISTS (SELECT 1 FROM {} {v} {} WHERE {} AND {v}.param = ?)",
                    table(*kind),
                    by_rid(self.dialect, *kind),
                    self.same_row(&v, alias)
                ));
                self.bind_text(param);
            }
            Clause::Not(inner) => {
                self.push("NOT (");
                self.clause(alias, inner);
                self.push(")");
            }
            Clause::Has { source_type, param, clauses } => {
                let (x, s) = (self.alias(), self.alias());
                self.push(&format!(
                    "({alias}.type, {alias}.id) IN (SELECT {x}.target_type, {x}.target_id FROM reference_index {x} \
                     JOIN resource {s} ON {} WHERE {x}.param = ? AND ",
                    self.same_row(&s, &x)
                ));
                self.bind_text(param);
                self.live_matches(&s, std::slice::from_ref(source_type), clauses);
                self.push(")");
            }
            Clause::Compartment { compartment, id } => {
                let c = self.alias();
                self.push(&format!(
                    "{} IN (SELECT {} FROM compartment_index {c} WHERE {c}.id = ? AND {c}.compartment = ?)",
                    self.row_value(alias),
                    self.row(&c)
                ));
                self.bind_text(id);
                self.bind_text(compartment);
            }
            Clause::Compartments { compartment, ids } => {
                let c = self.alias();
                self.push(&format!(
                    "{} IN (SELECT {} FROM compartment_index {c} WHERE {c}.compartment = ?",
                    self.row_value(alias),
                    self.row(&c)
                ));
                self.bind_text(compartment);
                match ids {
                    None => {}
                    Some(ids) if ids.is_empty() => self.push(" AND FALSE"),
                    Some(ids) => {
                        self.push(&format!(" AND {c}.id IN ("));
                        self.list(ids.iter(), |b, id| b.placeholder_text(id));
                        self.push(")");
                    }
                }
                self.push(")");
            }
            Clause::Text { narrative, words } => {
                let column = if *narrative { "narrative" } else { "content" };
                match self.dialect {
                    Dialect::Sqlite => {
                        // FTS5 query syntax: each word a quoted string (quotes doubled), all required,
                        // in one column.
                        let phrases: Vec<String> =
                            words.iter().map(|w| format!("\"{}\"", w.replace('"', "\"\""))).collect();
                        self.push(&format!("{alias}.rid IN (SELECT rowid FROM text_index WHERE text_index MATCH ?)"));
                        self.bind(Param::Text(format!("{{{column}}} : ({})", phrases.join(" AND "))));
                    }
                    Dialect::Postgres => {
                        // `plainto_tsquery` requires every word and has no syntax to escape; the
                        // `simple` configuration matches how the column's vectors were built.
                        let t = self.alias();
                        self.push(&format!(
                            "{} IN (SELECT {} FROM text_index {t} WHERE {t}.{column} @@ plainto_tsquery('simple', ?))",
                            self.row_value(alias),
                            self.row(&t)
                        ));
                        self.bind(Param::Text(words.join(" ")));
                    }
                }
            }
            Clause::Any(clauses) => {
                self.any(clauses.iter(), |b, c| b.clause(alias, c));
            }
            Clause::All(clauses) => {
                self.push("(");
                for (i, clause) in clauses.iter().enumerate() {
                    if i > 0 {
                        self.push(" AND ");
                    }
                    self.push("(");
                    self.clause(alias, clause);
                    self.push(")");
                }
                if clauses.is_empty() {
                    self.push("TRUE");
                }
                self.push(")");
            }
            Clause::Types(types) if types.is_empty() => self.push("FALSE"),
            Clause::Types(types) => {
                self.push(&format!("{alias}.type IN ("));
                self.list(types.iter(), |b, t| b.placeholder_text(t));
                self.push(")");
            }
        }
    }

    /// `alias.rid IN (rows)` or `EXISTS (rows AND rid = alias.rid)` (with the shard keys on
    /// PostgreSQL, [`Builder::row`]); `rows` writes a SELECT of [`Builder::row`] whose WHERE clause
    /// can be extended, and returns the alias of the rows it selects (`None`: it selects nothing).
    /// A probe reads the index table by row id: told which, SQLite cannot pick the value index
    /// instead and scan every row of the value for each resource it tests.
    fn rows_meet(&mut self, alias: &str, form: Form, rows: impl FnOnce(&mut Builder, bool) -> Option<String>) {
        match form {
            Form::Collect => {
                self.push(&format!("{} IN (", self.row_value(alias)));
                rows(self, false);
                self.push(")");
            }
            Form::Probe => {
                self.push("EXISTS (");
                if let Some(v) = rows(self, true) {
                    self.push(&format!(" AND {}", self.same_row(&v, alias)));
                }
                self.push(")");
            }
        }
    }

    /// The index rows a parameter or chain clause matches: `SELECT v.rid … WHERE …`, reading the
    /// table through its row id index for a `probe`; returns their alias.
    pub(super) fn rows(&mut self, clause: &Clause, probe: bool) -> Option<String> {
        let dialect = self.dialect;
        let hint = |kind: ValueKind| if probe { by_rid(dialect, kind) } else { "" };
        match clause {
            Clause::Match { param, values } => {
                let kind = values.first().map_or(ValueKind::Token, Value::kind);
                let v = self.alias();
                self.push(&format!(
                    "SELECT {} FROM {} {v} {} WHERE {v}.param = ?",
                    self.row(&v),
                    table(kind),
                    hint(kind)
                ));
                self.bind_text(param);
                self.push(" AND ");
                self.any(values.iter(), |b, value| b.value(&v, value));
                Some(v)
            }
            Clause::Chain { param, target_types, clauses } => {
                // The targets may be on other shards: an uncorrelated list of `(type, id)`.
                let (x, t) = (self.alias(), self.alias());
                self.push(&format!(
                    "SELECT {} FROM reference_index {x} {} WHERE {x}.param = ? AND \
                     ({x}.target_type, {x}.target_id) IN (SELECT {t}.type, {t}.id FROM resource {t} WHERE ",
                    self.row(&x),
                    hint(ValueKind::Reference)
                ));
                self.bind_text(param);
                self.live_matches(&t, target_types, clauses);
                self.push(")");
                Some(x)
            }
            Clause::Composite { param, values } if values.len() == 1 => self.composite_rows(param, &values[0], probe),
            _ => {
                self.no_rows();
                None
            }
        }
    }

    /// A SELECT of no rows. The casts give its columns types: PostgreSQL would make an untyped NULL
    /// text, which `rid IN (…)` cannot compare with.
    fn no_rows(&mut self) {
        self.push(match self.dialect {
            Dialect::Sqlite => "SELECT CAST(NULL AS BIGINT) WHERE FALSE",
            Dialect::Postgres => "SELECT CAST(NULL AS TEXT), CAST(NULL AS BIGINT) WHERE FALSE",
        });
    }

    /// One composite value: rows of every component in one group of one resource.
    fn composite_rows(&mut self, param: &str, components: &[Value], probe: bool) -> Option<String> {
        let aliases: Vec<String> = components.iter().map(|_| self.alias()).collect();
        let Some(first) = aliases.first().cloned() else {
            self.no_rows();
            return None;
        };
        self.push(&format!("SELECT {} FROM ", self.row(&first)));
        for (i, (component, a)) in components.iter().zip(&aliases).enumerate() {
            if i == 0 {
                let hint = if probe { by_rid(self.dialect, component.kind()) } else { "" };
                self.push(&format!("{} {a} {hint}", table(component.kind())));
            } else {
                // The other components belong to the same resource: found by its row id.
                self.push(&format!(
                    " JOIN {} {a} {} ON {} AND {a}.grp = {first}.grp AND {a}.param = ?",
                    table(component.kind()),
                    by_rid(self.dialect, component.kind()),
                    self.same_row(a, &first)
                ));
                self.bind(Param::Text(format!("{param}${i}")));
            }
        }
        self.push(&format!(" WHERE {first}.param = ?"));
        self.bind(Param::Text(format!("{param}$0")));
        for (component, a) in components.iter().zip(&aliases) {
            self.push(" AND (");
            self.value(a, component);
            self.push(")");
        }
        Some(first)
    }

    /// A condition on one index row `v` of the value's kind.
    fn value(&mut self, v: &str, value: &Value) {
        match value {
            Value::Token(token) => self.token(v, token),
            Value::Date(range) => self.date(v, range),
            Value::Reference(reference) => match reference {
                ReferenceValue::Local { target_type: Some(t), id } => {
                    self.push(&format!("({v}.target_id = ? AND {v}.target_type = ?)"));
                    self.bind_text(id);
                    self.bind_text(t);
                }
                ReferenceValue::Local { target_type: None, id } => {
                    self.push(&format!("{v}.target_id = ?"));
                    self.bind_text(id);
                }
                ReferenceValue::Url(url) => {
                    self.push(&format!("{v}.url = ?"));
                    self.bind_text(url);
                }
            },
            Value::String { value, matching } => match matching {
                StringMatch::StartsWith => {
                    // A range instead of LIKE, so the (param, normalized) index serves it: every
                    // string with the prefix sorts at or after it and before prefix + U+10FFFF.
                    self.push(&format!("({v}.normalized >= ? AND {v}.normalized < ?)"));
                    self.bind_text(value);
                    self.bind(Param::Text(format!("{value}\u{10FFFF}")));
                }
                StringMatch::Exact => {
                    self.push(&format!("{v}.exact = ?"));
                    self.bind_text(value);
                }
                StringMatch::Equals => {
                    self.push(&format!("{v}.normalized = ?"));
                    self.bind_text(value);
                }
                StringMatch::Contains => {
                    self.push(&match self.dialect {
                        Dialect::Sqlite => format!("instr({v}.normalized, ?) > 0"),
                        Dialect::Postgres => format!("strpos({v}.normalized, ?) > 0"),
                    });
                    self.bind_text(value);
                }
            },
            Value::Number(number) => self.number(&format!("{v}.value"), &format!("{v}.value"), number),
            Value::Quantity(quantity) => self.quantity(v, quantity),
            Value::Uri { value, matching } => {
                match matching {
                    UriMatch::Exact => self.push(&format!("{v}.uri = ?")),
                    UriMatch::Below => {
                        self.push(&format!("({v}.uri >= ? AND {v}.uri < ?)"));
                        self.bind_text(value);
                        self.bind(Param::Text(format!("{value}\u{10FFFF}")));
                        return;
                    }
                    // The search value starts with the stored uri. The cast settles the parameter's
                    // type for PostgreSQL instead of leaving it to function overload resolution.
                    UriMatch::Above => self.push(&match self.dialect {
                        Dialect::Sqlite => format!("substr(?, 1, length({v}.uri)) = {v}.uri"),
                        Dialect::Postgres => format!("left(CAST(? AS TEXT), length({v}.uri)) = {v}.uri"),
                    }),
                }
                self.bind_text(value);
            }
        }
    }

    fn token(&mut self, v: &str, token: &TokenValue) {
        let mut conditions = Vec::new();
        match &token.system {
            TokenSystem::Any => {}
            TokenSystem::None => conditions.push(format!("{v}.system IS NULL")),
            TokenSystem::Is(system) => {
                conditions.push(format!("{v}.system = ?"));
                self.bind_text(system);
            }
        }
        if let Some(code) = &token.code {
            conditions.push(format!("{v}.code = ?"));
            self.bind_text(code);
        }
        if conditions.is_empty() {
            self.push("TRUE");
        } else {
            self.push(&format!("({})", conditions.join(" AND ")));
        }
    }

    /// Compares a stored interval `[low, high)` with a search value's interval by the prefix, as
    /// R4 defines it for ranges (search.html#prefix): `eq` — the value contains the stored range;
    /// `gt` — the stored range extends after the value; `ge` — `gt` or `eq`; `sa` — starts after it;
    /// `ap` — the two overlap (the value already widened by the parser).
    fn date(&mut self, v: &str, range: &DateRange) {
        let (low, high) = (range.low, range.high);
        let eq = format!("({v}.low >= ? AND {v}.high <= ?)");
        let (text, values) = match range.prefix {
            // `low < high` follows from the stored range lying inside the value's; said explicitly,
            // it bounds a range scan of the (param, low) index.
            Prefix::Eq => (format!("({v}.low >= ? AND {v}.low < ? AND {v}.high <= ?)"), vec![low, high, high]),
            Prefix::Ne => (format!("NOT {eq}"), vec![low, high]),
            Prefix::Gt => (format!("{v}.high > ?"), vec![high]),
            Prefix::Lt => (format!("{v}.low < ?"), vec![low]),
            Prefix::Ge => (format!("({v}.high > ? OR {eq})"), vec![high, low, high]),
            Prefix::Le => (format!("({v}.low < ? OR {eq})"), vec![low, low, high]),
            Prefix::Sa => (format!("{v}.low >= ?"), vec![high]),
            Prefix::Eb => (format!("{v}.high <= ?"), vec![low]),
            Prefix::Ap => (format!("({v}.low < ? AND {v}.high > ?)"), vec![high, low]),
        };
        self.push(&text);
        values.into_iter().for_each(|value| self.bind(Param::Integer(value)));
    }

    /// Applies a prefix to a column holding an instant: the instant is compared with the range
    /// `[low, high)` that the search value denotes at its precision.
    fn instant_in(&mut self, column: &str, range: &DateRange) {
        let (text, values) = match range.prefix {
            Prefix::Eq | Prefix::Ap => (format!("({column} >= ? AND {column} < ?)"), vec![range.low, range.high]),
            Prefix::Ne => (format!("({column} < ? OR {column} >= ?)"), vec![range.low, range.high]),
            Prefix::Gt | Prefix::Sa => (format!("{column} >= ?"), vec![range.high]),
            Prefix::Lt | Prefix::Eb => (format!("{column} < ?"), vec![range.low]),
            Prefix::Ge => (format!("{column} >= ?"), vec![range.low]),
            Prefix::Le => (format!("{column} < ?"), vec![range.high]),
        };
        self.push(&text);
        values.into_iter().for_each(|value| self.bind(Param::Integer(value)));
    }

    /// A number prefix on stored values `[low, high]` (equal for a single number): `eq` — the value
    /// lies in the search value's precision range; `gt` — it exceeds the search value; `ap` — it
    /// overlaps the widened range.
    fn number(&mut self, low: &str, high: &str, number: &NumberRange) {
        let eq = format!("({low} >= ? AND {high} < ?)");
        let (text, values) = match number.prefix {
            Prefix::Eq => (eq, vec![number.low, number.high]),
            Prefix::Ne => (format!("NOT {eq}"), vec![number.low, number.high]),
            Prefix::Gt => (format!("{high} > ?"), vec![number.value]),
            Prefix::Lt => (format!("{low} < ?"), vec![number.value]),
            Prefix::Ge => (format!("{high} >= ?"), vec![number.value]),
            Prefix::Le => (format!("{low} <= ?"), vec![number.value]),
            Prefix::Sa => (format!("{low} > ?"), vec![number.value]),
            Prefix::Eb => (format!("{high} < ?"), vec![number.value]),
            Prefix::Ap => (format!("({low} <= ? AND {high} >= ?)"), vec![number.high, number.low]),
        };
        self.push(&text);
        values.into_iter().for_each(|value| self.bind(Param::Real(value)));
    }

    /// A quantity: in canonical units when both sides have them, else as written with the unit the
    /// search value names (if any).
    fn quantity(&mut self, v: &str, quantity: &QuantityValue) {
        self.push("(");
        if let Some((unit, number)) = &quantity.canonical {
            self.push(&format!("({v}.canonical_unit = ? AND "));
            self.bind_text(unit);
            self.number(&format!("{v}.canonical_low"), &format!("{v}.canonical_high"), number);
            self.push(") OR (");
        } else {
            self.push("(");
        }
        if let Some(system) = &quantity.system {
            self.push(&format!("{v}.system = ? AND "));
            self.bind_text(system);
        }
        if let Some(code) = &quantity.code {
            self.push(&format!("{v}.code = ? AND "));
            self.bind_text(code);
        }
        self.number(&format!("{v}.low"), &format!("{v}.high"), &quantity.number);
        self.push("))");
    }
}

/// Whether a value is likely to match few index rows, so that collecting its row ids first is the
/// cheaper plan: equality on a code, id, reference, uri or string prefix, and bounded `eq` ranges.
fn selective(value: &Value) -> bool {
    match value {
        Value::Token(token) => token.code.is_some(),
        Value::Reference(_) => true,
        Value::String { matching, .. } => *matching != StringMatch::Contains,
        Value::Uri { matching, .. } => *matching != UriMatch::Above,
        Value::Date(range) => range.prefix == Prefix::Eq,
        Value::Number(number) => number.prefix == Prefix::Eq,
        Value::Quantity(quantity) => quantity.number.prefix == Prefix::Eq && quantity.code.is_some(),
    }
}

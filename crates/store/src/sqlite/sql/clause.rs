//! Clauses and values to SQL conditions on a resource alias.
//!
//! Every parameter clause is an `IN (SELECT rid FROM <index table> …)` over the index tables rather
//! than a join, so that SQLite can drive the query from whichever index is most selective and a
//! resource with several matching values is still returned once.

use rusqlite::types::Value as SqlValue;

use crate::query::{
    Clause, DateRange, NumberRange, Prefix, QuantityValue, ReferenceValue, StringMatch, TokenSystem, TokenValue,
    UriMatch, Value, ValueKind,
};

use super::Builder;

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

impl Builder {
    /// `alias.type …`, current and live, and every clause.
    pub(super) fn live_matches(&mut self, alias: &str, types: &[String], clauses: &[Clause]) {
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
        for clause in clauses {
            self.push(" AND (");
            self.clause(alias, clause);
            self.push(")");
        }
    }

    pub(super) fn clause(&mut self, alias: &str, clause: &Clause) {
        match clause {
            Clause::Id(ids) => {
                self.push(&format!("{alias}.id IN ("));
                self.list(ids.iter(), |b, id| b.placeholder_text(id));
                self.push(")");
            }
            Clause::LastUpdated(ranges) => {
                self.any(ranges.iter(), |b, range| b.instant_in(&format!("{alias}.last_updated"), range));
            }
            Clause::Match { param, values } => {
                let Some(kind) = values.first().map(Value::kind) else {
                    self.push("0");
                    return;
                };
                let v = self.alias();
                self.push(&format!("{alias}.rid IN (SELECT {v}.rid FROM {} {v} WHERE {v}.param = ?", table(kind)));
                self.bind_text(param);
                self.push(" AND (");
                self.any(values.iter(), |b, value| b.value(&v, value));
                self.push("))");
            }
            Clause::Composite { param, values } => {
                self.any(values.iter(), |b, components| b.composite(alias, param, components));
            }
            Clause::Missing { param, kind, missing } => {
                let v = self.alias();
                let not = if *missing { "NOT " } else { "" };
                self.push(&format!(
                    "{alias}.rid {not}IN (SELECT {v}.rid FROM {} {v} WHERE {v}.param = ?)",
                    table(*kind)
                ));
                self.bind_text(param);
            }
            Clause::Not(inner) => {
                self.push("NOT (");
                self.clause(alias, inner);
                self.push(")");
            }
            Clause::Chain { param, target_types, clauses } => {
                let (x, t) = (self.alias(), self.alias());
                self.push(&format!(
                    "{alias}.rid IN (SELECT {x}.rid FROM reference_index {x} WHERE {x}.param = ? AND \
                     ({x}.target_type, {x}.target_id) IN (SELECT {t}.type, {t}.id FROM resource {t} WHERE "
                ));
                self.bind_text(param);
                self.live_matches(&t, target_types, clauses);
                self.push("))");
            }
            Clause::Has { source_type, param, clauses } => {
                let (x, s) = (self.alias(), self.alias());
                self.push(&format!(
                    "({alias}.type, {alias}.id) IN (SELECT {x}.target_type, {x}.target_id FROM reference_index {x} \
                     JOIN resource {s} ON {s}.rid = {x}.rid WHERE {x}.param = ? AND "
                ));
                self.bind_text(param);
                self.live_matches(&s, std::slice::from_ref(source_type), clauses);
                self.push(")");
            }
            Clause::Compartment { compartment, id } => {
                let c = self.alias();
                self.push(&format!(
                    "{alias}.rid IN (SELECT {c}.rid FROM compartment_index {c} WHERE {c}.id = ? AND {c}.compartment = ?)"
                ));
                self.bind_text(id);
                self.bind_text(compartment);
            }
            Clause::Text { narrative, words } => {
                // FTS5 query syntax: each word a quoted string (quotes doubled), all required, in one column.
                let column = if *narrative { "narrative" } else { "content" };
                let phrases: Vec<String> = words.iter().map(|w| format!("\"{}\"", w.replace('"', "\"\""))).collect();
                self.push(&format!("{alias}.rid IN (SELECT rowid FROM text_index WHERE text_index MATCH ?)"));
                self.bind(SqlValue::Text(format!("{{{column}}} : ({})", phrases.join(" AND "))));
            }
            Clause::Any(clauses) => {
                self.any(clauses.iter(), |b, c| b.clause(alias, c));
            }
        }
    }

    /// One composite value: rows of every component in one group of one resource.
    fn composite(&mut self, alias: &str, param: &str, components: &[Value]) {
        let aliases: Vec<String> = components.iter().map(|_| self.alias()).collect();
        let Some(first) = aliases.first() else {
            self.push("0");
            return;
        };
        self.push(&format!("{alias}.rid IN (SELECT {first}.rid FROM "));
        for (i, (component, a)) in components.iter().zip(&aliases).enumerate() {
            if i == 0 {
                self.push(&format!("{} {a}", table(component.kind())));
            } else {
                self.push(&format!(
                    " JOIN {} {a} ON {a}.rid = {first}.rid AND {a}.grp = {first}.grp AND {a}.param = ?",
                    table(component.kind())
                ));
                self.bind(SqlValue::Text(format!("{param}${i}")));
            }
        }
        self.push(&format!(" WHERE {first}.param = ?"));
        self.bind(SqlValue::Text(format!("{param}$0")));
        for (component, a) in components.iter().zip(&aliases) {
            self.push(" AND (");
            self.value(a, component);
            self.push(")");
        }
        self.push(")");
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
                    self.bind(SqlValue::Text(format!("{value}\u{10FFFF}")));
                }
                StringMatch::Exact => {
                    self.push(&format!("{v}.exact = ?"));
                    self.bind_text(value);
                }
                StringMatch::Contains => {
                    self.push(&format!("instr({v}.normalized, ?) > 0"));
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
                        self.bind(SqlValue::Text(format!("{value}\u{10FFFF}")));
                        return;
                    }
                    UriMatch::Above => self.push(&format!("substr(?, 1, length({v}.uri)) = {v}.uri")),
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
            self.push("1");
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
            Prefix::Eq => (eq, vec![low, high]),
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
        values.into_iter().for_each(|value| self.bind(SqlValue::Integer(value)));
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
        values.into_iter().for_each(|value| self.bind(SqlValue::Integer(value)));
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
        values.into_iter().for_each(|value| self.bind(SqlValue::Real(value)));
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

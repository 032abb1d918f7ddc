//! What the identity store's queries are written against, once for both backends: a connection
//! that runs a statement with [`Value`] parameters and returns [`Row`]s of them.
//!
//! The SQL is written in one spelling that each backend adapts: parameters are SQLite's `?1`
//! (PostgreSQL's backend turns them into `$1`), and tables are named as in PostgreSQL, where they
//! share a schema with the resource store (`identity_apps`; SQLite's backend drops the prefix,
//! because `identity.db` holds nothing else and its tables had their names before PostgreSQL did).
//! Insertion order is `rowid`: SQLite's own, and a column of that name on PostgreSQL. The few
//! expressions that differ come from [`Dialect`].

use std::borrow::Cow;

use super::{IdentityError, Result};

/// A parameter or column value: the four types the identity tables use.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value {
    Null,
    Integer(i64),
    Text(String),
    Blob(Vec<u8>),
}

impl From<i64> for Value {
    fn from(value: i64) -> Value {
        Value::Integer(value)
    }
}

impl From<&str> for Value {
    fn from(value: &str) -> Value {
        Value::Text(value.to_owned())
    }
}

impl From<&String> for Value {
    fn from(value: &String) -> Value {
        Value::Text(value.clone())
    }
}

impl From<String> for Value {
    fn from(value: String) -> Value {
        Value::Text(value)
    }
}

impl From<&Vec<u8>> for Value {
    fn from(value: &Vec<u8>) -> Value {
        Value::Blob(value.clone())
    }
}

impl<T> From<Option<T>> for Value
where
    Value: From<T>,
{
    fn from(value: Option<T>) -> Value {
        value.map_or(Value::Null, Value::from)
    }
}

/// `[Value; N]` of the arguments, for a statement's parameters.
macro_rules! params {
    ($($value:expr),* $(,)?) => { [$($crate::store::sql::Value::from($value)),*] };
}
pub(super) use params;

/// One result row.
#[derive(Debug, Clone)]
pub(super) struct Row(pub(super) Vec<Value>);

impl Row {
    fn value(&self, i: usize) -> Result<&Value> {
        self.0.get(i).ok_or_else(|| IdentityError::Database(format!("no column {i} in the result")))
    }

    fn mismatch(&self, i: usize, wanted: &str) -> IdentityError {
        IdentityError::Database(format!("column {i}: expected {wanted}, found {:?}", self.0.get(i)))
    }

    pub(super) fn text(&self, i: usize) -> Result<String> {
        self.opt_text(i)?.ok_or_else(|| self.mismatch(i, "text"))
    }

    pub(super) fn opt_text(&self, i: usize) -> Result<Option<String>> {
        match self.value(i)? {
            Value::Null => Ok(None),
            Value::Text(s) => Ok(Some(s.clone())),
            _ => Err(self.mismatch(i, "text")),
        }
    }

    pub(super) fn int(&self, i: usize) -> Result<i64> {
        self.opt_int(i)?.ok_or_else(|| self.mismatch(i, "an integer"))
    }

    pub(super) fn opt_int(&self, i: usize) -> Result<Option<i64>> {
        match self.value(i)? {
            Value::Null => Ok(None),
            Value::Integer(n) => Ok(Some(*n)),
            _ => Err(self.mismatch(i, "an integer")),
        }
    }

    pub(super) fn blob(&self, i: usize) -> Result<Vec<u8>> {
        match self.value(i)? {
            Value::Blob(b) => Ok(b.clone()),
            _ => Err(self.mismatch(i, "bytes")),
        }
    }
}

/// The SQL spellings that differ between the backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The text of `field` in the JSON object stored as text in `column`.
    pub(super) fn json_text(self, column: &str, field: &str) -> String {
        match self {
            Dialect::Sqlite => format!("json_extract({column}, '$.{field}')"),
            Dialect::Postgres => format!("({column}::jsonb ->> '{field}')"),
        }
    }
}

/// A connection (or a transaction on one) that runs the store's statements.
pub(super) trait Db {
    fn dialect(&self) -> Dialect;

    /// Runs a statement; how many rows it changed.
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64>;

    /// Runs a statement and returns all its rows.
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>>;

    fn query_opt(&mut self, sql: &str, params: &[Value]) -> Result<Option<Row>> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    fn query_one(&mut self, sql: &str, params: &[Value]) -> Result<Row> {
        self.query_opt(sql, params)?.ok_or_else(|| IdentityError::Database("a query returned no row".into()))
    }
}

/// The statement as SQLite runs it: table names without the `identity_` prefix.
pub(super) fn for_sqlite(sql: &str) -> Cow<'_, str> {
    if sql.contains("identity_") {
        Cow::Owned(sql.replace("identity_", ""))
    } else {
        Cow::Borrowed(sql)
    }
}

/// The statement as PostgreSQL runs it: `?N` parameters become `$N` (outside quoted text).
pub(super) fn for_postgres(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quote: Option<char> = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) => {
                out.push('$');
                continue;
            }
            None => {}
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_spelling_for_both_backends() {
        let sql = r#"UPDATE identity_codes SET used_at = ?2 WHERE hash = ?1 AND "gr?1" = '?3' RETURNING "grant""#;
        assert_eq!(
            for_postgres(sql),
            r#"UPDATE identity_codes SET used_at = $2 WHERE hash = $1 AND "gr?1" = '?3' RETURNING "grant""#
        );
        assert_eq!(
            for_sqlite(sql),
            r#"UPDATE codes SET used_at = ?2 WHERE hash = ?1 AND "gr?1" = '?3' RETURNING "grant""#
        );
        assert_eq!(for_postgres("SELECT ?10, ?"), "SELECT $10, ?");
        assert_eq!(Dialect::Postgres.json_text(r#""grant""#, "clientId"), r#"("grant"::jsonb ->> 'clientId')"#);
    }
}

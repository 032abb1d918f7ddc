//! What a store's operations are written against, once for both backends.

use crate::{Error, Result, Row, Value};

/// A connection (or a transaction on one) that runs a store's statements.
pub trait Db {
    fn dialect(&self) -> Dialect;

    /// Runs a statement; how many rows it changed.
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64>;

    /// Runs a statement and returns all its rows.
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>>;

    fn query_opt(&mut self, sql: &str, params: &[Value]) -> Result<Option<Row>> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    fn query_one(&mut self, sql: &str, params: &[Value]) -> Result<Row> {
        self.query_opt(sql, params)?.ok_or_else(|| Error::Database("a query returned no row".into()))
    }
}

/// The SQL spellings that differ between the backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The text of `field` in the JSON object stored as text in `column`.
    pub fn json_text(self, column: &str, field: &str) -> String {
        match self {
            Dialect::Sqlite => format!("json_extract({column}, '$.{field}')"),
            Dialect::Postgres => format!("({column}::jsonb ->> '{field}')"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_text_in_each_dialect() {
        assert_eq!(Dialect::Sqlite.json_text(r#""grant""#, "clientId"), r#"json_extract("grant", '$.clientId')"#);
        assert_eq!(Dialect::Postgres.json_text(r#""grant""#, "clientId"), r#"("grant"::jsonb ->> 'clientId')"#);
    }
}

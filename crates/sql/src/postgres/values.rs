//! How statements and values cross to PostgreSQL.

use bytes::BytesMut;
use postgres::types::{to_sql_checked, IsNull, ToSql, Type};

use super::session::database_error;
use crate::{Result, Row, Value};

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

/// A result row in the stores' values: integers of any width (and booleans) as integers, `bytea`
/// as bytes, anything else as text.
pub(super) fn row(row: &postgres::Row) -> Result<Row> {
    let value = |i: usize, ty: &Type| -> std::result::Result<Value, postgres::Error> {
        Ok(match *ty {
            Type::INT8 => row.try_get::<_, Option<i64>>(i)?.into(),
            Type::INT4 => row.try_get::<_, Option<i32>>(i)?.map(i64::from).into(),
            Type::INT2 => row.try_get::<_, Option<i16>>(i)?.map(i64::from).into(),
            Type::BOOL => row.try_get::<_, Option<bool>>(i)?.map(i64::from).into(),
            Type::BYTEA => row.try_get::<_, Option<Vec<u8>>>(i)?.map_or(Value::Null, Value::Blob),
            _ => row.try_get::<_, Option<String>>(i)?.into(),
        })
    };
    row.columns()
        .iter()
        .enumerate()
        .map(|(i, column)| value(i, column.type_()).map_err(database_error))
        .collect::<Result<Vec<_>>>()
        .map(Row)
}

/// Parameters bind as the columns' types: integers as `bigint` (or a narrower integer where a
/// statement needs one), text as `text`, bytes as `bytea`.
impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Integer(n) => match *ty {
                Type::INT4 => i32::try_from(*n)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*n)?.to_sql(ty, out),
                _ => n.to_sql(ty, out),
            },
            Value::Text(s) => s.to_sql(ty, out),
            Value::Blob(b) => b.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_numbered_in_postgres_spelling_outside_quotes() {
        let sql = r#"UPDATE t SET used_at = ?2 WHERE hash = ?1 AND "gr?1" = '?3' RETURNING "grant""#;
        assert_eq!(
            for_postgres(sql),
            r#"UPDATE t SET used_at = $2 WHERE hash = $1 AND "gr?1" = '?3' RETURNING "grant""#
        );
        assert_eq!(for_postgres("SELECT ?10, ?"), "SELECT $10, ?");
        assert_eq!(for_postgres("SELECT 'it''s ?1', ?1"), "SELECT 'it''s ?1', $1");
    }
}

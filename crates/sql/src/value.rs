//! The values statements take and return: the four types the small stores' tables use.

use crate::{Error, Result};

/// A parameter or column value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
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
#[macro_export]
macro_rules! params {
    ($($value:expr),* $(,)?) => { [$($crate::Value::from($value)),*] };
}

/// One result row.
#[derive(Debug, Clone)]
pub struct Row(pub Vec<Value>);

impl Row {
    fn value(&self, i: usize) -> Result<&Value> {
        self.0.get(i).ok_or_else(|| Error::Database(format!("no column {i} in the result")))
    }

    fn mismatch(&self, i: usize, wanted: &str) -> Error {
        Error::Database(format!("column {i}: expected {wanted}, found {:?}", self.0.get(i)))
    }

    pub fn text(&self, i: usize) -> Result<String> {
        self.opt_text(i)?.ok_or_else(|| self.mismatch(i, "text"))
    }

    pub fn opt_text(&self, i: usize) -> Result<Option<String>> {
        match self.value(i)? {
            Value::Null => Ok(None),
            Value::Text(s) => Ok(Some(s.clone())),
            _ => Err(self.mismatch(i, "text")),
        }
    }

    pub fn int(&self, i: usize) -> Result<i64> {
        self.opt_int(i)?.ok_or_else(|| self.mismatch(i, "an integer"))
    }

    pub fn opt_int(&self, i: usize) -> Result<Option<i64>> {
        match self.value(i)? {
            Value::Null => Ok(None),
            Value::Integer(n) => Ok(Some(*n)),
            _ => Err(self.mismatch(i, "an integer")),
        }
    }

    pub fn blob(&self, i: usize) -> Result<Vec<u8>> {
        match self.value(i)? {
            Value::Blob(b) => Ok(b.clone()),
            _ => Err(self.mismatch(i, "bytes")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_convert_each_argument() {
        let none: Option<&str> = None;
        let owned = String::from("b");
        let bytes = vec![1u8, 2];
        assert_eq!(
            crate::params![7, "a", &owned, owned.clone(), &bytes, none, Some(3)],
            [
                Value::Integer(7),
                Value::Text("a".into()),
                Value::Text("b".into()),
                Value::Text("b".into()),
                Value::Blob(vec![1, 2]),
                Value::Null,
                Value::Integer(3),
            ]
        );
        let empty: [Value; 0] = crate::params![];
        assert_eq!(empty, []);
    }

    #[test]
    fn a_row_reads_its_columns_by_type() {
        let row = Row(vec![Value::Null, Value::Integer(5), Value::Text("t".into()), Value::Blob(vec![9])]);
        assert_eq!(row.opt_text(0).unwrap(), None);
        assert_eq!(row.opt_int(0).unwrap(), None);
        assert_eq!(row.int(1).unwrap(), 5);
        assert_eq!(row.opt_int(1).unwrap(), Some(5));
        assert_eq!(row.text(2).unwrap(), "t");
        assert_eq!(row.opt_text(2).unwrap().as_deref(), Some("t"));
        assert_eq!(row.blob(3).unwrap(), [9]);
    }

    #[test]
    fn a_row_refuses_a_null_a_wrong_type_or_a_missing_column() {
        let row = Row(vec![Value::Null, Value::Integer(5), Value::Text("t".into())]);
        let message = |e: Error| e.to_string();
        assert_eq!(message(row.text(0).unwrap_err()), "column 0: expected text, found Some(Null)");
        assert_eq!(message(row.int(0).unwrap_err()), "column 0: expected an integer, found Some(Null)");
        assert_eq!(message(row.blob(0).unwrap_err()), "column 0: expected bytes, found Some(Null)");
        assert_eq!(message(row.text(1).unwrap_err()), "column 1: expected text, found Some(Integer(5))");
        assert_eq!(message(row.opt_int(2).unwrap_err()), r#"column 2: expected an integer, found Some(Text("t"))"#);
        assert_eq!(message(row.opt_text(3).unwrap_err()), "no column 3 in the result");
    }
}

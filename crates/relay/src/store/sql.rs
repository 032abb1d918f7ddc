//! What the relay's queries are written against: a connection that runs a statement with
//! [`Value`] parameters and returns [`Row`]s of them, as the identity store does, so that a
//! PostgreSQL backend (tables of the same names beside the resource store) can implement the same
//! small interface. Parameters are spelled `?1`; tables are `relay_*` in both.

use crate::{RelayError, Result};

/// A parameter or column value: the types the relay's tables use.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Integer(i64),
    Text(String),
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
pub(crate) use params;

/// One result row.
#[derive(Debug, Clone)]
pub struct Row(pub Vec<Value>);

impl Row {
    fn value(&self, i: usize) -> Result<&Value> {
        self.0.get(i).ok_or_else(|| RelayError::Database(format!("no column {i} in the result")))
    }

    fn mismatch(&self, i: usize, wanted: &str) -> RelayError {
        RelayError::Database(format!("column {i}: expected {wanted}, found {:?}", self.0.get(i)))
    }

    pub fn text(&self, i: usize) -> Result<String> {
        self.opt_text(i)?.ok_or_else(|| self.mismatch(i, "text"))
    }

    pub fn opt_text(&self, i: usize) -> Result<Option<String>> {
        match self.value(i)? {
            Value::Null => Ok(None),
            Value::Text(s) => Ok(Some(s.clone())),
            Value::Integer(_) => Err(self.mismatch(i, "text")),
        }
    }

    pub fn int(&self, i: usize) -> Result<i64> {
        self.opt_int(i)?.ok_or_else(|| self.mismatch(i, "an integer"))
    }

    pub fn opt_int(&self, i: usize) -> Result<Option<i64>> {
        match self.value(i)? {
            Value::Null => Ok(None),
            Value::Integer(n) => Ok(Some(*n)),
            Value::Text(_) => Err(self.mismatch(i, "an integer")),
        }
    }
}

/// A connection (or a transaction on one) that runs the relay's statements.
pub trait Db {
    /// Runs a statement; how many rows it changed.
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64>;

    /// Runs a statement and returns all its rows.
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>>;

    fn query_opt(&mut self, sql: &str, params: &[Value]) -> Result<Option<Row>> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    /// The keyring of encryption at rest that what the relay stores is sealed with; `None` when
    /// the installation has none.
    fn keyring(&self) -> Option<&fhirside_keys::Keyring> {
        None
    }
}

/// A connection with the installation's keyring: what [`crate::store::RelayStore`]'s operations
/// run on.
pub(crate) struct Keyed<'a> {
    pub db: &'a mut dyn Db,
    pub keyring: Option<std::sync::Arc<fhirside_keys::Keyring>>,
}

impl Db for Keyed<'_> {
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        self.db.execute(sql, params)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        self.db.query(sql, params)
    }

    fn keyring(&self) -> Option<&fhirside_keys::Keyring> {
        self.keyring.as_deref()
    }
}

/// What to store for a value that can carry PHI or a secret: sealed, bound to `aad` (the row and
/// column it belongs to), on an encrypted installation; as it is otherwise.
pub(crate) fn sealed(db: &dyn Db, aad: &str, text: String) -> String {
    match db.keyring() {
        Some(keyring) => keyring.seal_text(&text, aad),
        None => text,
    }
}

/// What to store for a value that is compared but never read back (a patient's ordering key,
/// which names the patient): its blind index on an encrypted installation. Rows keyed under a
/// data key before a rotation compare unequal to rows after it, so a patient's messages queued
/// across a rotation may pass each other; nothing else depends on it.
pub(crate) fn blinded(db: &dyn Db, purpose: &str, text: &str) -> String {
    use base64::Engine;
    match db.keyring() {
        Some(keyring) => base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(&keyring.blind_index(purpose, text.as_bytes())[..16]),
        None => text.to_owned(),
    }
}

/// The text of a stored value [`sealed`] wrote.
pub(crate) fn opened(db: &dyn Db, aad: &str, stored: String) -> Result<String> {
    if !fhirside_keys::is_sealed_text(&stored) {
        return Ok(stored);
    }
    let keyring = db.keyring().ok_or_else(|| {
        RelayError::Database(format!("{aad} is sealed by encryption at rest, and no key is configured"))
    })?;
    match keyring.open_text(&stored, aad) {
        Some(Ok(text)) => Ok(text),
        Some(Err(e)) => Err(RelayError::Database(format!("{aad} does not open: {e}"))),
        None => Ok(stored),
    }
}

//! What the relay's queries are written against: the shared plumbing's connection
//! ([`fhirside_sql::Db`]: `?1` parameters, `relay_*` tables in both backends) with the keyring of
//! encryption at rest beside it, and the sealing of what the relay stores with that keyring.

use fhirside_sql::{Dialect, Row, Value};

use crate::{RelayError, Result};

/// A connection (or a transaction on one) that runs the relay's statements.
pub trait Db: fhirside_sql::Db {
    /// The keyring of encryption at rest that what the relay stores is sealed with; `None` when
    /// the installation has none.
    fn keyring(&self) -> Option<&fhirside_keys::Keyring>;
}

/// A connection with the installation's keyring: what [`crate::store::RelayStore`]'s operations
/// run on.
pub(crate) struct Keyed<'a> {
    pub db: &'a mut dyn fhirside_sql::Db,
    pub keyring: Option<std::sync::Arc<fhirside_keys::Keyring>>,
}

impl fhirside_sql::Db for Keyed<'_> {
    fn dialect(&self) -> Dialect {
        self.db.dialect()
    }

    fn execute(&mut self, sql: &str, params: &[Value]) -> fhirside_sql::Result<u64> {
        self.db.execute(sql, params)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> fhirside_sql::Result<Vec<Row>> {
        self.db.query(sql, params)
    }
}

impl Db for Keyed<'_> {
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

//! The relay's errors. The server maps each to a status in one place (`server/src/error.rs`).

use std::fmt;

pub type Result<T> = std::result::Result<T, RelayError>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayError {
    /// A body or parameter that is not acceptable; the message says what to change (`400`).
    Invalid(String),
    /// No such environment, credential, destination, source or message (`404`).
    NotFound(String),
    /// The request contradicts the state: a type change, a credential in use, a production
    /// deletion (`409`).
    Conflict(String),
    /// The source key is missing or unknown (`401`).
    Unauthenticated(String),
    /// The relay's database failed (`500`; the message goes to the log).
    Database(String),
}

impl fmt::Display for RelayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RelayError::Invalid(m)
            | RelayError::NotFound(m)
            | RelayError::Conflict(m)
            | RelayError::Unauthenticated(m)
            | RelayError::Database(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for RelayError {}

impl From<rusqlite::Error> for RelayError {
    fn from(error: rusqlite::Error) -> RelayError {
        RelayError::Database(format!("relay database: {error}"))
    }
}

impl From<fhirside_sql::Error> for RelayError {
    fn from(error: fhirside_sql::Error) -> RelayError {
        match error {
            fhirside_sql::Error::Invalid(m) => RelayError::Invalid(m),
            fhirside_sql::Error::Sqlite(e) => e.into(),
            fhirside_sql::Error::Database(m) => RelayError::Database(m),
        }
    }
}

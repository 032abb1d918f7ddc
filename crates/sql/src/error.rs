//! The plumbing's errors. Each store maps them into its own error type, so that what its callers
//! see does not change with the backend.

use std::fmt;

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug)]
pub enum Error {
    /// The caller's settings are unusable (a PostgreSQL URL that does not parse).
    Invalid(String),
    /// SQLite failed. Kept whole, so that a store words it as it words SQLite's other errors.
    Sqlite(rusqlite::Error),
    /// The database failed otherwise: PostgreSQL's answer, a lost connection, a file that cannot be
    /// opened, a column of another type than asked for. The message is for the log.
    Database(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Invalid(m) | Error::Database(m) => f.write_str(m),
            Error::Sqlite(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for Error {}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Error {
        Error::Sqlite(e)
    }
}

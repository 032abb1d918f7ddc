//! The SQL plumbing shared by Fhirside's small stores — the identity store and the relay's — over
//! SQLite and PostgreSQL: the values a statement takes and returns ([`Value`], [`Row`]), the
//! connection their operations are written against once for both backends ([`Db`]), SQLite's
//! file, migrations and write transactions ([`sqlite`]), and a PostgreSQL session on a thread of
//! its own, with reconnection, a statement cache, write transactions and migrations
//! ([`postgres`]). `testing` (a feature) gives the stores' tests a data directory or a PostgreSQL
//! schema of their own.
//!
//! It must not know any store's schema, tables or domain types (each store passes its migrations
//! and writes its own queries), nor FHIR or HTTP. The resource store (`fhirside-store`) has
//! plumbing of its own, shaped by its volume: connection pools, a writer thread.
//!
//! Statements are written in one spelling: parameters are SQLite's `?1`, which the PostgreSQL
//! session turns into `$1`; the few expressions that differ come from [`Dialect`].

mod db;
mod error;
pub mod postgres;
pub mod sqlite;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod value;

pub use db::{Db, Dialect};
pub use error::{Error, Result};
pub use postgres::{Migration, PgConnection, Tables};
pub use sqlite::SqliteDb;
pub use value::{Row, Value};

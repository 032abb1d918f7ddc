//! The PostgreSQL backend: stateless replicas over one database.
//!
//! Nothing is cached in the process, so a write through one replica is readable through every
//! other at once. Reads run on the request's task through a pool of connections; writes and
//! transaction work run in one database transaction each, on a blocking thread (the
//! [`crate::Transaction`] interface is synchronous, because transaction work is FHIR logic that the
//! store must not know), which drives the async connection with `Handle::block_on`. What a write
//! depends on is serialised across replicas by advisory locks ([`write`]).

mod analyze;
pub(crate) mod citus;
mod deferred;
#[cfg(test)]
mod deferred_tests;
mod import;
#[cfg(test)]
mod import_tests;
mod index_rows;
mod jobs;
mod load;
#[cfg(test)]
mod load_tests;
mod pool;
mod read;
mod schema;
#[cfg(test)]
mod upgrade_tests;
mod write;

use std::sync::Arc;

use bytes::BytesMut;
use tokio::runtime::Handle;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};

pub use citus::Distribution;
pub use import::Importer;
pub use schema::SchemaStatus;

use crate::index::IndexEntries;
use crate::model::{Cost, ImportLine, Outcome, StoreError, WriteOp, WriteResult};
use crate::query::{EverythingQuery, HistoryQuery, HistoryScope, IncludeQuery, Page, SearchQuery, SnapshotQuery};
use crate::seal::Seal;
use crate::sql::Param;
use crate::sql::{self, Dialect};
use crate::{ResourceStore, StoreFuture, StoredVersion, TransactionWork};

use pool::{Pool, Pooled};
use write::SyncTx;

/// Settings of the PostgreSQL backend.
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    /// Connection settings, from a `postgres://user@host:port/database?options=…` URL.
    connect: tokio_postgres::Config,
    /// Most connections this process opens.
    pub max_connections: usize,
    /// Encryption at rest of bodies: the installation's keyring, when it has one.
    pub seal: Seal,
}

impl PostgresConfig {
    /// Parses a connection URL (`postgres://` or `postgresql://`, libpq's parameters, including
    /// `options=-csearch_path%3Dmyschema` to use a schema other than `public`).
    pub fn from_url(url: &str) -> Result<PostgresConfig, StoreError> {
        let connect: tokio_postgres::Config =
            url.parse().map_err(|e| StoreError::Invalid(format!("invalid PostgreSQL URL: {e}")))?;
        let mut connect = connect;
        if connect.get_application_name().is_none() {
            connect.application_name("fhirside");
        }
        Ok(PostgresConfig { connect, max_connections: 16, seal: Seal::default() })
    }

    /// Where it connects, for logs: host, port, database and user, never the password.
    pub fn describe(&self) -> String {
        use tokio_postgres::config::Host;
        let host = match self.connect.get_hosts().first() {
            Some(Host::Tcp(host)) => host.clone(),
            Some(Host::Unix(path)) => path.display().to_string(),
            None => "localhost".into(),
        };
        let port = self.connect.get_ports().first().copied().unwrap_or(5432);
        let database = self.connect.get_dbname().unwrap_or("(default)");
        let user = self.connect.get_user().unwrap_or("(default)");
        format!("{user}@{host}:{port}/{database}")
    }

    /// True for the URL schemes this backend takes.
    pub fn is_postgres_url(url: &str) -> bool {
        url.starts_with("postgres://") || url.starts_with("postgresql://")
    }
}

/// Where the database's schema stands, without changing it (`fhirside db status`).
pub async fn schema_status(config: &PostgresConfig) -> Result<SchemaStatus, StoreError> {
    let mut conn = pool::connect(&config.connect, &config.seal).await?;
    schema::status(&mut conn).await
}

/// Applies the missing migrations (`fhirside db migrate`); safe to run from several processes.
/// Also builds the indexes a load deferred, if one was interrupted (`deferred`).
pub async fn migrate(config: &PostgresConfig) -> Result<SchemaStatus, StoreError> {
    let mut conn = pool::connect(&config.connect, &config.seal).await?;
    let status = schema::migrate(&mut conn).await?;
    deferred::build(&mut conn).await?;
    Ok(status)
}

/// The PostgreSQL implementation of [`ResourceStore`].
pub struct PostgresStore {
    pool: Arc<Pool>,
    jobs: jobs::PostgresJobs,
    analyzer: Arc<analyze::Analyzer>,
}

impl PostgresStore {
    /// Connects, migrates the schema if it is behind (under the migration lock), and is ready.
    pub async fn open(config: &PostgresConfig) -> Result<PostgresStore, StoreError> {
        migrate(config).await?;
        let pool = Pool::new(config.connect.clone(), config.max_connections, config.seal.clone());
        Ok(PostgresStore {
            jobs: jobs::PostgresJobs::new(pool.clone()),
            analyzer: analyze::Analyzer::spawn(&pool),
            pool,
        })
    }

    /// Runs `f` in one database transaction on a blocking thread, committing if it succeeds and
    /// rolling back if it fails.
    async fn in_transaction<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut SyncTx<'_>, &mut Cost) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<Outcome<T>, StoreError> {
        let conn = self.pool.get().await?;
        let handle = Handle::current();
        let outcome = tokio::task::spawn_blocking(move || run_transaction(conn, &handle, f))
            .await
            .map_err(|e| StoreError::Backend(format!("transaction task failed: {e}")))??;
        self.analyzer.wrote(outcome.cost.rows_written);
        Ok(outcome)
    }
}

fn run_transaction<T>(
    mut conn: Pooled,
    handle: &Handle,
    f: impl FnOnce(&mut SyncTx<'_>, &mut Cost) -> Result<T, StoreError>,
) -> Result<Outcome<T>, StoreError> {
    // Writes are the same few statements whatever the values: they keep PostgreSQL's cached plans,
    // which searches forgo (see `pool::connect`); planning the index insert on every execution
    // cost a third more database CPU on ingest.
    handle.block_on(conn.batch("BEGIN; SET LOCAL plan_cache_mode = auto"))?;
    let mut cost = Cost::default();
    let result = {
        let mut tx = SyncTx::new(&mut conn, handle);
        f(&mut tx, &mut cost)
    };
    let ended = match &result {
        Ok(_) => handle.block_on(conn.batch("COMMIT")),
        Err(_) => handle.block_on(conn.batch("ROLLBACK")),
    };
    if let Err(error) = ended {
        // A transaction that could not be ended leaves the connection in an unknown state.
        conn.poisoned = true;
        let _ = handle.block_on(conn.batch("ROLLBACK"));
        return Err(error);
    }
    result.map(|value| Outcome { value, cost })
}

impl ResourceStore for PostgresStore {
    fn read<'a>(&'a self, resource_type: &'a str, id: &'a str) -> StoreFuture<'a, Option<StoredVersion>> {
        Box::pin(async move { read::current(&mut *self.pool.get().await?, resource_type, id).await })
    }

    fn vread<'a>(
        &'a self,
        resource_type: &'a str,
        id: &'a str,
        version: u64,
    ) -> StoreFuture<'a, Option<StoredVersion>> {
        Box::pin(async move { read::version(&mut *self.pool.get().await?, resource_type, id, version).await })
    }

    fn write(&self, op: WriteOp) -> StoreFuture<'_, WriteResult> {
        Box::pin(self.in_transaction(move |tx, cost| crate::write::apply(tx, op, cost)))
    }

    fn transaction(&self, work: TransactionWork) -> StoreFuture<'_, ()> {
        Box::pin(self.in_transaction(move |tx, cost| work(&mut write::InTransaction { tx, cost })))
    }

    /// In two transactions on two connections at once, each with the lines of half the resources
    /// ([`load::halves`]): one backend process works on one core, and the lines of one resource
    /// stay in order in one half.
    /// Into an empty database, without the indexes only searches read ([`deferred`]).
    fn begin_bulk_load(&self) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            let deferred = deferred::defer(&mut *self.pool.get().await?).await?;
            Ok(Outcome { value: deferred, cost: Cost::default() })
        })
    }

    fn end_bulk_load(&self, deferred: bool) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            if deferred {
                deferred::build(&mut *self.pool.get().await?).await?;
            }
            Ok(Outcome { value: (), cost: Cost::default() })
        })
    }

    fn import_batch(&self, lines: Vec<ImportLine>) -> StoreFuture<'_, Vec<Result<WriteResult, StoreError>>> {
        Box::pin(async move {
            let count = lines.len();
            let [(first_at, first), (second_at, second)] = load::halves(lines);
            let (first, second) = tokio::join!(
                self.in_transaction(move |tx, cost| load::import_batch(tx, first, cost)),
                self.in_transaction(move |tx, cost| load::import_batch(tx, second, cost)),
            );
            let (first, second) = (first?, second?);
            let mut results: Vec<Option<Result<WriteResult, StoreError>>> = (0..count).map(|_| None).collect();
            for (at, result) in first_at.into_iter().zip(first.value).chain(second_at.into_iter().zip(second.value)) {
                results[at] = Some(result);
            }
            let mut cost = first.cost;
            cost.add(second.cost);
            let value =
                results.into_iter().map(|r| r.unwrap_or(Err(StoreError::Backend("a line went missing".into()))));
            Ok(Outcome { value: value.collect(), cost })
        })
    }

    fn history<'a>(&'a self, scope: &'a HistoryScope, query: &'a HistoryQuery) -> StoreFuture<'a, Page> {
        Box::pin(async move { read::history(&mut *self.pool.get().await?, scope, query).await })
    }

    fn everything<'a>(
        &'a self,
        compartment: &'a str,
        id: Option<&'a str>,
        query: &'a EverythingQuery,
    ) -> StoreFuture<'a, Page> {
        Box::pin(async move { read::everything(&mut *self.pool.get().await?, compartment, id, query).await })
    }

    fn include<'a>(&'a self, query: &'a IncludeQuery) -> StoreFuture<'a, Vec<StoredVersion>> {
        Box::pin(async move { read::include(&mut *self.pool.get().await?, query).await })
    }

    fn search<'a>(&'a self, query: &'a SearchQuery) -> StoreFuture<'a, Page> {
        Box::pin(async move { read::search(&mut *self.pool.get().await?, query).await })
    }

    fn live_after(&self, after: i64, limit: u32) -> StoreFuture<'_, Vec<(i64, StoredVersion)>> {
        Box::pin(async move {
            let rows = read::live_after(&mut *self.pool.get().await?, after, limit).await?;
            let cost = read::cost_of(&rows.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>());
            Ok(Outcome { value: rows, cost })
        })
    }

    fn snapshot<'a>(&'a self, query: &'a SnapshotQuery) -> StoreFuture<'a, Vec<(i64, StoredVersion)>> {
        Box::pin(async move {
            let compiled = sql::compile_snapshot(Dialect::Postgres, query);
            let rows = read::compiled_versions(&mut *self.pool.get().await?, &compiled).await?;
            let cost = read::cost_of(&rows.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>());
            Ok(Outcome { value: rows, cost })
        })
    }

    fn reindex(&self, rows: Vec<(i64, IndexEntries)>) -> StoreFuture<'_, ()> {
        Box::pin(self.in_transaction(move |tx, cost| write::reindex(tx, rows, cost)))
    }

    fn setting<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<String>> {
        Box::pin(async move {
            let value = read::setting(&mut *self.pool.get().await?, key).await?;
            Ok(Outcome { value, cost: Cost::default() })
        })
    }

    fn set_setting(&self, key: &str, value: &str) -> StoreFuture<'_, ()> {
        let (key, value) = (key.to_owned(), value.to_owned());
        Box::pin(self.in_transaction(move |tx, _| write::set_setting(tx, &key, &value)))
    }

    fn jobs(&self) -> &dyn crate::JobQueue {
        &self.jobs
    }
}

/// Compiled queries bind their values through this: integers as `bigint`, reals as `float8`, text
/// as `text` — the column types of the schema, so a parameter's inferred type always fits.
impl ToSql for Param {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Param::Null => Ok(IsNull::Yes),
            Param::Integer(i) => match *ty {
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::FLOAT8 => (*i as f64).to_sql(ty, out),
                _ => i.to_sql(ty, out),
            },
            Param::Real(f) => f.to_sql(ty, out),
            Param::Text(s) => s.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(error: tokio_postgres::Error) -> Self {
        use tokio_postgres::error::SqlState;
        match error.code() {
            // Two transactions locked the same resources in opposite orders, or a serializable
            // snapshot could not be kept: the caller may retry; nothing of this one was written.
            Some(code) if *code == SqlState::T_R_DEADLOCK_DETECTED || *code == SqlState::T_R_SERIALIZATION_FAILURE => {
                StoreError::Conflict(
                    "The request conflicted with a concurrent request and was not applied; retry it.".into(),
                )
            }
            _ => match error.as_db_error() {
                Some(db) => StoreError::Backend(format!("{} ({})", db.message(), db.code().code())),
                None => StoreError::Backend(error.to_string()),
            },
        }
    }
}

#[cfg(test)]
mod tests;

/// A setting, read on a connection of its own (`crate::settings`).
pub(crate) async fn read_setting(config: &PostgresConfig, key: &str) -> Result<Option<String>, StoreError> {
    let mut conn = pool::connect(&config.connect, &config.seal).await?;
    // A schema no server has migrated yet has no settings.
    let exists: bool = conn.query_one("SELECT to_regclass('setting') IS NOT NULL", &[]).await?.try_get(0)?;
    if !exists {
        return Ok(None);
    }
    read::setting(&mut conn, key).await
}

/// A setting, written on a connection of its own (`crate::settings`).
pub(crate) async fn write_setting(config: &PostgresConfig, key: &str, value: &str) -> Result<(), StoreError> {
    let mut conn = pool::connect(&config.connect, &config.seal).await?;
    conn.execute(
        "INSERT INTO setting (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        &[&key, &value],
    )
    .await?;
    Ok(())
}

/// A setting, created unless present, on a connection of its own (`crate::settings`).
pub(crate) async fn create_setting(config: &PostgresConfig, key: &str, value: &str) -> Result<String, StoreError> {
    let mut conn = pool::connect(&config.connect, &config.seal).await?;
    conn.execute("INSERT INTO setting (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING", &[&key, &value])
        .await?;
    read::setting(&mut conn, key)
        .await?
        .ok_or_else(|| StoreError::Backend(format!("the setting {key} vanished as it was created")))
}

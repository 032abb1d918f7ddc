//! A store's backend on PostgreSQL, for replicas that share one database: the store's tables
//! beside the resource store's ([`Tables`]), reached through one session.
//!
//! A store's interface is synchronous and is called from async tasks as well as blocking threads,
//! so it uses the synchronous `postgres` client — which blocks on a runtime of its own and panics
//! if called on a thread that runs tokio. The client therefore lives on a thread of its own
//! (`session.rs`); callers send it one statement at a time and wait for the answer, as they wait for
//! a SQLite connection's mutex. The logic of each operation (and its transaction) stays on the
//! caller's thread, written once over [`Db`] for both backends.

use std::sync::mpsc;
use std::time::Duration;

use postgres::Config;

use crate::{Db, Dialect, Error, Result, Row, Value};

mod migrate;
mod session;
mod values;

pub use migrate::{Migration, Tables};
use session::Session;

/// Work for the connection's thread.
type Job = Box<dyn FnOnce(&mut Session) + Send>;

/// The caller's side of the connection's thread. Operations must not interleave (a transaction is
/// several calls), so a store keeps it behind a mutex.
pub struct PgConnection {
    jobs: mpsc::Sender<Job>,
    describe: String,
}

impl PgConnection {
    /// Starts the connection's thread for the database at `url` (`postgres://…`, with
    /// `options=-csearch_path%3D<schema>` for a schema other than `public`), connects, and brings
    /// `tables` to this build's schema.
    pub fn open(url: &str, tables: &'static Tables) -> Result<PgConnection> {
        let mut config: Config = url.parse().map_err(|e| Error::Invalid(format!("invalid PostgreSQL URL: {e}")))?;
        if config.get_application_name().is_none() {
            config.application_name("fhirside");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        let describe = describe(&config);
        let (jobs, receiver) = mpsc::channel::<Job>();
        let session = Session::new(config, tables);
        std::thread::Builder::new()
            .name(format!("fhirside-{}-pg", tables.prefix))
            .spawn(move || session::serve(session, receiver))
            .map_err(|e| Error::Database(format!("cannot start the PostgreSQL thread: {e}")))?;
        let conn = PgConnection { jobs, describe };
        conn.call(migrate::migrate)?;
        Ok(conn)
    }

    /// Where it connects, for messages: user, host, port and database, never the password.
    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// Runs `f` on the connection's thread and waits for its answer.
    fn call<T: Send + 'static>(&self, f: impl FnOnce(&mut Session) -> Result<T> + Send + 'static) -> Result<T> {
        let (reply, answer) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |session| {
            let _ = reply.send(f(session));
        });
        let stopped = || Error::Database("the PostgreSQL connection's thread did not answer".into());
        self.jobs.send(job).map_err(|_| stopped())?;
        answer.recv().map_err(|_| stopped())?
    }

    /// Runs `f` outside a transaction: each statement commits on its own.
    pub fn read<T, E>(&self, f: impl FnOnce(&mut dyn Db) -> std::result::Result<T, E>) -> std::result::Result<T, E> {
        f(&mut PgDb { conn: self, in_transaction: false })
    }

    /// Runs `f` in a write transaction, which first bumps the store's version row (see
    /// [`Tables`]), and commits it. `f` returns the store's own error, which a failure here
    /// becomes too.
    pub fn write<T, E: From<Error>>(
        &self,
        f: impl FnOnce(&mut dyn Db) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        self.call(Session::begin)?;
        let mut open = OpenTransaction { conn: self, committed: false };
        let value = f(&mut PgDb { conn: self, in_transaction: true })?;
        open.committed = true;
        self.call(Session::commit)?;
        Ok(value)
    }
}

/// Rolls back a transaction that did not reach its commit (an error, or a panic in the caller).
struct OpenTransaction<'a> {
    conn: &'a PgConnection,
    committed: bool,
}

impl Drop for OpenTransaction<'_> {
    fn drop(&mut self) {
        if !self.committed {
            let _ = self.conn.call(|session| {
                session.rollback();
                Ok(())
            });
        }
    }
}

/// Statements sent to the connection's thread.
struct PgDb<'a> {
    conn: &'a PgConnection,
    in_transaction: bool,
}

impl Db for PgDb<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        let (sql, params, in_transaction) = (sql.to_owned(), params.to_vec(), self.in_transaction);
        self.conn.call(move |session| session.execute(in_transaction, &sql, &params))
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        let (sql, params, in_transaction) = (sql.to_owned(), params.to_vec(), self.in_transaction);
        self.conn.call(move |session| session.query(in_transaction, &sql, &params))
    }
}

fn describe(config: &Config) -> String {
    use postgres::config::Host;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(host)) => host.clone(),
        #[cfg(unix)]
        Some(Host::Unix(path)) => path.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let database = config.get_dbname().unwrap_or("(default)");
    let user = config.get_user().unwrap_or("(default)");
    format!("{user}@{host}:{port}/{database}")
}

#[cfg(test)]
mod tests;

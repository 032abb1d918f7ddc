//! The relay's state on PostgreSQL, for replicas that share one database: tables named `relay_*`
//! beside the resource store's, with migrations of their own. Built as the identity store's
//! PostgreSQL backend is (`crates/identity/src/store/postgres.rs`): the synchronous `postgres`
//! client on a thread of its own, one statement at a time, the logic of each operation on the
//! caller's thread over [`Db`]. Write transactions first bump the one row of `relay_version`,
//! whose lock makes writers take turns across replicas, so read-then-write operations are safe
//! under READ COMMITTED.

use std::collections::HashMap;
use std::sync::mpsc;
use std::time::Duration;

use bytes::BytesMut;
use postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use postgres::{Client, Config, NoTls, Statement};

use super::sql::{Db, Row, Value};
use crate::{RelayError, Result};

/// A migration: what it does and its SQL. Forward-only; applied in order of `version`.
struct Migration {
    version: i64,
    description: &'static str,
    sql: &'static str,
}

const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "environments, credentials, destinations, sources, messages, deliveries, attempts",
    sql: r#"
    CREATE TABLE relay_environments (
        id TEXT PRIMARY KEY,
        organization BIGINT NOT NULL,
        name TEXT NOT NULL,
        flag TEXT NOT NULL,
        UNIQUE (organization, flag)
    );
    CREATE TABLE relay_credentials (
        id TEXT PRIMARY KEY,
        environment_id TEXT NOT NULL REFERENCES relay_environments (id),
        fields TEXT NOT NULL,
        secrets TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
    );
    CREATE INDEX relay_credentials_environment ON relay_credentials (environment_id);
    CREATE TABLE relay_destinations (
        id TEXT PRIMARY KEY,
        environment_id TEXT NOT NULL REFERENCES relay_environments (id),
        name TEXT NOT NULL,
        kind TEXT NOT NULL,
        endpoint TEXT,
        verification_token TEXT,
        auth_credential TEXT REFERENCES relay_credentials (id),
        cloud TEXT,
        setup_state TEXT,
        verified BIGINT NOT NULL,
        verification_error TEXT,
        verified_at BIGINT,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
    );
    CREATE INDEX relay_destinations_environment ON relay_destinations (environment_id);
    CREATE TABLE relay_sources (
        id TEXT PRIMARY KEY,
        environment_id TEXT NOT NULL REFERENCES relay_environments (id),
        name TEXT NOT NULL,
        key_hash TEXT NOT NULL UNIQUE,
        created_at BIGINT NOT NULL
    );
    CREATE TABLE relay_messages (
        id TEXT PRIMARY KEY,
        environment_id TEXT NOT NULL,
        source_id TEXT NOT NULL,
        body TEXT NOT NULL,
        patient_key TEXT,
        received_at BIGINT NOT NULL
    );
    CREATE TABLE relay_deliveries (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        message_id TEXT NOT NULL REFERENCES relay_messages (id),
        destination_id TEXT NOT NULL,
        patient_key TEXT,
        state TEXT NOT NULL,
        attempts BIGINT NOT NULL,
        round_attempts BIGINT NOT NULL,
        next_at BIGINT NOT NULL,
        lease_owner TEXT,
        lease_until BIGINT,
        error TEXT,
        outcome TEXT,
        updated_at BIGINT NOT NULL
    );
    CREATE INDEX relay_deliveries_due ON relay_deliveries (state, next_at);
    CREATE INDEX relay_deliveries_order ON relay_deliveries (destination_id, patient_key, state);
    CREATE INDEX relay_deliveries_message ON relay_deliveries (message_id);
    CREATE TABLE relay_attempts (
        delivery_id TEXT NOT NULL,
        n BIGINT NOT NULL,
        at BIGINT NOT NULL,
        status TEXT NOT NULL,
        http_status BIGINT,
        error TEXT,
        PRIMARY KEY (delivery_id, n)
    );
    -- One row: bumped by every write transaction, whose lock on it makes writers take turns.
    CREATE TABLE relay_version (
        one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
        version BIGINT NOT NULL
    );
    INSERT INTO relay_version (version) VALUES (0);
    "#,
}];

const LEDGER: &str = "CREATE TABLE IF NOT EXISTS relay_migration (
    version BIGINT PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)";

/// One migration lock per schema, so that replicas starting together migrate once.
const LOCK: &str = "SELECT pg_advisory_lock(hashtextextended('fhirside-relay-migrate:' || current_schema(), 0))";
const UNLOCK: &str = "SELECT pg_advisory_unlock(hashtextextended('fhirside-relay-migrate:' || current_schema(), 0))";

/// A replica frozen mid-transaction would hold every replica's write lock; PostgreSQL ends such a
/// session after a minute.
const SESSION_SETUP: &str = "SET idle_in_transaction_session_timeout = '60s'";

/// `?N` parameters as PostgreSQL's `$N` (outside quoted text).
fn for_postgres(sql: &str) -> String {
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

/// Work for the connection's thread.
type Job = Box<dyn FnOnce(&mut Session) + Send>;

/// The caller's side of the connection's thread. Operations must not interleave (a transaction is
/// several calls), so the store keeps it behind a mutex.
pub(super) struct PgConnection {
    jobs: mpsc::Sender<Job>,
    describe: String,
}

impl PgConnection {
    /// Starts the connection's thread, connects and migrates the relay tables.
    pub(super) fn open(url: &str) -> Result<PgConnection> {
        let mut config: Config =
            url.parse().map_err(|e| RelayError::Invalid(format!("invalid PostgreSQL URL: {e}")))?;
        if config.get_application_name().is_none() {
            config.application_name("fhirside");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        let describe = describe(&config);
        let (jobs, receiver) = mpsc::channel::<Job>();
        let session = Session { config, client: None, statements: HashMap::new(), in_transaction: false };
        std::thread::Builder::new()
            .name("fhirside-relay-pg".into())
            .spawn(move || serve(session, receiver))
            .map_err(|e| RelayError::Database(format!("cannot start the PostgreSQL thread: {e}")))?;
        let conn = PgConnection { jobs, describe };
        conn.call(migrate)?;
        Ok(conn)
    }

    /// Where it connects, for messages: user, host, port and database, never the password.
    pub(super) fn describe(&self) -> &str {
        &self.describe
    }

    /// Runs `f` on the connection's thread and waits for its answer.
    fn call<T: Send + 'static>(&self, f: impl FnOnce(&mut Session) -> Result<T> + Send + 'static) -> Result<T> {
        let (reply, answer) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |session| {
            let _ = reply.send(f(session));
        });
        let stopped = || RelayError::Database("the PostgreSQL connection's thread did not answer".into());
        self.jobs.send(job).map_err(|_| stopped())?;
        answer.recv().map_err(|_| stopped())?
    }

    /// Runs `f` outside a transaction: each statement commits on its own.
    pub(super) fn read<T>(&self, f: impl FnOnce(&mut dyn Db) -> Result<T>) -> Result<T> {
        f(&mut PgDb { conn: self, in_transaction: false })
    }

    /// Runs `f` in a write transaction (see the module's comment) and commits it.
    pub(super) fn write<T>(&self, f: impl FnOnce(&mut dyn Db) -> Result<T>) -> Result<T> {
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
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        let (sql, params, in_transaction) = (sql.to_owned(), params.to_vec(), self.in_transaction);
        self.conn.call(move |session| session.execute(in_transaction, &sql, &params))
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        let (sql, params, in_transaction) = (sql.to_owned(), params.to_vec(), self.in_transaction);
        self.conn.call(move |session| session.query(in_transaction, &sql, &params))
    }
}

/// The connection's thread: runs jobs until the store is dropped (its sender with it).
fn serve(mut session: Session, jobs: mpsc::Receiver<Job>) {
    for job in jobs {
        // A job that panicked leaves the connection in an unknown state: start afresh. Its caller
        // gets an error (the reply channel is dropped unanswered).
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut session))).is_err() {
            session.disconnect();
            session.in_transaction = false;
        }
    }
}

/// The connection, owned by its thread.
struct Session {
    config: Config,
    /// None until the first use, and after the connection broke: the next operation reconnects.
    client: Option<Client>,
    /// Prepared statements of this connection, by their SQL as written.
    statements: HashMap<String, Statement>,
    in_transaction: bool,
}

impl Session {
    fn client(&mut self) -> Result<&mut Client> {
        if self.client.as_ref().is_some_and(Client::is_closed) {
            self.disconnect();
        }
        if self.client.is_none() {
            // Reconnecting inside a transaction would run its remaining statements outside it.
            if self.in_transaction {
                return Err(RelayError::Database("the connection to PostgreSQL broke during a transaction".into()));
            }
            let mut client = self
                .config
                .connect(NoTls)
                .map_err(|e| RelayError::Database(format!("cannot connect to PostgreSQL: {e}")))?;
            client.batch_execute(SESSION_SETUP).map_err(database_error)?;
            self.client = Some(client);
        }
        self.client.as_mut().ok_or_else(|| RelayError::Database("no connection to PostgreSQL".into()))
    }

    fn disconnect(&mut self) {
        self.client = None;
        self.statements.clear();
    }

    /// The store's error for `e`; a connection that broke is dropped, so that the next operation
    /// opens a new one.
    fn failed(&mut self, e: postgres::Error) -> RelayError {
        if connection_lost(&e) || self.client.as_ref().is_some_and(Client::is_closed) {
            self.disconnect();
        }
        database_error(e)
    }

    /// Makes the session's state what the caller expects: a transaction left open by a caller
    /// that never ended it is rolled back before anything else runs.
    fn expect_transaction(&mut self, in_transaction: bool) -> Result<()> {
        if self.in_transaction && !in_transaction {
            self.rollback();
        }
        if in_transaction && !self.in_transaction {
            return Err(RelayError::Database("the transaction on PostgreSQL has ended".into()));
        }
        Ok(())
    }

    fn batch(&mut self, sql: &str) -> Result<()> {
        let result = self.client()?.batch_execute(sql);
        result.map_err(|e| self.failed(e))
    }

    fn statement(&mut self, sql: &str) -> Result<Statement> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let prepared = self.client()?.prepare(&for_postgres(sql));
        let statement = prepared.map_err(|e| self.failed(e))?;
        self.statements.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }

    fn execute(&mut self, in_transaction: bool, sql: &str, params: &[Value]) -> Result<u64> {
        self.expect_transaction(in_transaction)?;
        let statement = self.statement(sql)?;
        let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let result = self.client()?.execute(&statement, &params);
        result.map_err(|e| self.failed(e))
    }

    fn query(&mut self, in_transaction: bool, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        self.expect_transaction(in_transaction)?;
        let statement = self.statement(sql)?;
        let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let result = self.client()?.query(&statement, &params);
        result.map_err(|e| self.failed(e))?.iter().map(row).collect()
    }

    /// Opens a write transaction: its first statement takes the write lock (see the module).
    fn begin(&mut self) -> Result<()> {
        self.expect_transaction(false)?;
        self.batch("BEGIN")?;
        self.in_transaction = true;
        let bumped = self.query(true, "UPDATE relay_version SET version = version + 1 RETURNING version", &[]);
        match bumped {
            Ok(rows) if rows.len() == 1 => Ok(()),
            Ok(_) => {
                self.rollback();
                Err(RelayError::Database("relay_version must hold exactly one row".into()))
            }
            Err(e) => {
                self.rollback();
                Err(e)
            }
        }
    }

    fn commit(&mut self) -> Result<()> {
        let committed = self.batch("COMMIT");
        if committed.is_err() {
            self.rollback();
        }
        self.in_transaction = false;
        committed
    }

    /// Ends the transaction, if any, without its changes. Rolling back on a broken connection
    /// fails, and there is nothing left to roll back.
    fn rollback(&mut self) {
        if let Some(client) = &mut self.client {
            if client.batch_execute("ROLLBACK").is_err() {
                self.disconnect();
            }
        }
        self.in_transaction = false;
    }
}

/// Brings the relay tables to this build's schema under the migration lock, refusing a
/// database migrated by a newer build.
fn migrate(session: &mut Session) -> Result<()> {
    session.batch(LOCK)?;
    let result = migrate_locked(session);
    // The lock is the session's: if it cannot be released, the connection goes, and the lock
    // with it.
    if session.batch(UNLOCK).is_err() {
        session.disconnect();
    }
    result
}

fn migrate_locked(session: &mut Session) -> Result<()> {
    session.batch(LEDGER)?;
    let current = session.query(false, "SELECT coalesce(max(version), 0) FROM relay_migration", &[])?;
    let current = current.first().map(|row| row.int(0)).transpose()?.unwrap_or(0);
    let newest = MIGRATIONS.last().map_or(0, |m| m.version);
    if current > newest {
        return Err(RelayError::Database(format!(
            "the database's relay tables have schema version {current}, newer than this build's {newest}; \
             upgrade Fhirside instead of downgrading it"
        )));
    }
    for migration in MIGRATIONS.iter().filter(|m| m.version > current) {
        session.batch("BEGIN")?;
        session.in_transaction = true;
        let applied = session.batch(migration.sql).and_then(|()| {
            session.execute(
                true,
                "INSERT INTO relay_migration (version, description) VALUES (?1, ?2)",
                &[Value::Integer(migration.version), Value::from(migration.description)],
            )
        });
        match applied {
            Ok(_) => session.commit()?,
            Err(e) => {
                session.rollback();
                return Err(e);
            }
        }
    }
    Ok(())
}

/// True when `e` means the connection is gone (or being shut down), not that a statement failed.
fn connection_lost(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.as_db_error() {
        // Class 08: connection exception; class 57: operator intervention (a terminated backend,
        // a server shutting down).
        Some(db) => matches!(&db.code().code()[..2], "08" | "57"),
        // Not an answer of the server: I/O, protocol.
        None => true,
    }
}

fn database_error(e: postgres::Error) -> RelayError {
    match e.as_db_error() {
        Some(db) => RelayError::Database(format!("{} ({})", db.message(), db.code().code())),
        None => RelayError::Database(e.to_string()),
    }
}

/// A result row in the store's values.
fn row(row: &postgres::Row) -> Result<Row> {
    let value = |i: usize, ty: &Type| -> std::result::Result<Value, postgres::Error> {
        Ok(match *ty {
            Type::INT8 => row.try_get::<_, Option<i64>>(i)?.into(),
            Type::INT4 => row.try_get::<_, Option<i32>>(i)?.map(i64::from).into(),
            Type::INT2 => row.try_get::<_, Option<i16>>(i)?.map(i64::from).into(),
            Type::BOOL => row.try_get::<_, Option<bool>>(i)?.map(i64::from).into(),
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
/// statement needs one), text as `text`.
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
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
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

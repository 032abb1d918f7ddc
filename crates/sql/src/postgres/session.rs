//! The connection, owned by its thread: connects on first use and again after the connection
//! broke, keeps the statements it prepared, and tracks whether a transaction is open.

use std::collections::HashMap;
use std::sync::mpsc;

use postgres::types::ToSql;
use postgres::{Client, Config, NoTls, Statement};

use super::values::{for_postgres, row};
use super::{Job, Tables};
use crate::{Error, Result, Row, Value};

/// Set on every connection. A replica that stops mid-transaction (a frozen process) would hold
/// the write lock of every replica; PostgreSQL ends such a session after a minute. The stores'
/// transactions are a handful of statements.
const SESSION_SETUP: &str = "SET idle_in_transaction_session_timeout = '60s'";

/// The connection's thread: runs jobs until the store is dropped (its sender with it).
pub(super) fn serve(mut session: Session, jobs: mpsc::Receiver<Job>) {
    for job in jobs {
        // A job that panicked leaves the connection in an unknown state: start afresh. Its caller
        // gets an error (the reply channel is dropped unanswered).
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut session))).is_err() {
            session.disconnect();
            session.in_transaction = false;
        }
    }
}

pub(super) struct Session {
    config: Config,
    pub(super) tables: &'static Tables,
    /// The statement that opens every write transaction (see [`Tables`]).
    bump_version: String,
    /// None until the first use, and after the connection broke: the next operation reconnects.
    client: Option<Client>,
    /// Prepared statements of this connection, by their SQL as written.
    statements: HashMap<String, Statement>,
    pub(super) in_transaction: bool,
}

impl Session {
    pub(super) fn new(config: Config, tables: &'static Tables) -> Session {
        let bump_version = format!("UPDATE {}_version SET version = version + 1 RETURNING version", tables.prefix);
        Session { config, tables, bump_version, client: None, statements: HashMap::new(), in_transaction: false }
    }

    fn client(&mut self) -> Result<&mut Client> {
        if self.client.as_ref().is_some_and(Client::is_closed) {
            self.disconnect();
        }
        if self.client.is_none() {
            // Reconnecting inside a transaction would run its remaining statements outside it.
            if self.in_transaction {
                return Err(Error::Database("the connection to PostgreSQL broke during a transaction".into()));
            }
            let mut client = self
                .config
                .connect(NoTls)
                .map_err(|e| Error::Database(format!("cannot connect to PostgreSQL: {e}")))?;
            client.batch_execute(SESSION_SETUP).map_err(database_error)?;
            self.client = Some(client);
        }
        self.client.as_mut().ok_or_else(|| Error::Database("no connection to PostgreSQL".into()))
    }

    pub(super) fn disconnect(&mut self) {
        self.client = None;
        self.statements.clear();
    }

    /// The error for `e`; a connection that broke is dropped, so that the next operation opens a
    /// new one.
    fn failed(&mut self, e: postgres::Error) -> Error {
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
            return Err(Error::Database("the transaction on PostgreSQL has ended".into()));
        }
        Ok(())
    }

    pub(super) fn batch(&mut self, sql: &str) -> Result<()> {
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

    pub(super) fn execute(&mut self, in_transaction: bool, sql: &str, params: &[Value]) -> Result<u64> {
        self.expect_transaction(in_transaction)?;
        let statement = self.statement(sql)?;
        let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let result = self.client()?.execute(&statement, &params);
        result.map_err(|e| self.failed(e))
    }

    pub(super) fn query(&mut self, in_transaction: bool, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        self.expect_transaction(in_transaction)?;
        let statement = self.statement(sql)?;
        let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let result = self.client()?.query(&statement, &params);
        result.map_err(|e| self.failed(e))?.iter().map(row).collect()
    }

    /// Opens a write transaction: its first statement takes the write lock (see [`Tables`]).
    pub(super) fn begin(&mut self) -> Result<()> {
        self.expect_transaction(false)?;
        self.batch("BEGIN")?;
        self.in_transaction = true;
        let bump_version = self.bump_version.clone();
        let bumped = self.query(true, &bump_version, &[]);
        match bumped {
            Ok(rows) if rows.len() == 1 => Ok(()),
            Ok(_) => {
                self.rollback();
                Err(Error::Database(format!("{}_version must hold exactly one row", self.tables.prefix)))
            }
            Err(e) => {
                self.rollback();
                Err(e)
            }
        }
    }

    pub(super) fn commit(&mut self) -> Result<()> {
        let committed = self.batch("COMMIT");
        if committed.is_err() {
            self.rollback();
        }
        self.in_transaction = false;
        committed
    }

    /// Ends the transaction, if any, without its changes. Rolling back on a broken connection
    /// fails, and there is nothing left to roll back.
    pub(super) fn rollback(&mut self) {
        if let Some(client) = &mut self.client {
            if client.batch_execute("ROLLBACK").is_err() {
                self.disconnect();
            }
        }
        self.in_transaction = false;
    }
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

pub(super) fn database_error(e: postgres::Error) -> Error {
    match e.as_db_error() {
        Some(db) => Error::Database(format!("{} ({})", db.message(), db.code().code())),
        None => Error::Database(e.to_string()),
    }
}

//! A small pool of PostgreSQL connections, each with its own cache of prepared statements.
//!
//! A statement prepared once per connection is then one round trip per query instead of two
//! (parse, then bind and execute). The pool is bounded by a semaphore; a connection that broke is
//! dropped instead of returned.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row, Statement};

use crate::model::StoreError;
use crate::seal::Seal;

/// Most prepared statements kept per connection; searches of many shapes would otherwise grow it
/// without bound.
const STATEMENT_CACHE: usize = 512;

pub(super) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

pub(super) struct Pool {
    config: tokio_postgres::Config,
    seal: Seal,
    idle: Mutex<Vec<Conn>>,
    permits: Arc<Semaphore>,
}

impl Pool {
    pub(super) fn new(config: tokio_postgres::Config, max: usize, seal: Seal) -> Arc<Pool> {
        Arc::new(Pool { config, seal, idle: Mutex::new(Vec::new()), permits: Arc::new(Semaphore::new(max.max(1))) })
    }

    /// A connection: an idle one, or a new one while the pool is below its size.
    pub(super) async fn get(self: &Arc<Pool>) -> Result<Pooled, StoreError> {
        let permit = self.permits.clone().acquire_owned().await.map_err(|_| StoreError::Unavailable)?;
        let idle = self.idle.lock().unwrap().pop();
        let conn = match idle {
            Some(conn) if !conn.client.is_closed() => conn,
            _ => connect(&self.config, &self.seal).await?,
        };
        Ok(Pooled { conn: Some(conn), pool: self.clone(), _permit: permit })
    }
}

/// Opens one connection and runs its I/O on the runtime.
pub(super) async fn connect(config: &tokio_postgres::Config, seal: &Seal) -> Result<Conn, StoreError> {
    let (client, connection) =
        config.connect(NoTls).await.map_err(|e| StoreError::Backend(format!("cannot connect to PostgreSQL: {e}")))?;
    tokio::spawn(async move {
        // The connection ends when the client is dropped, or with the error its next query reports.
        let _ = connection.await;
    });
    // Statements are prepared once per connection, and after five executions PostgreSQL may plan
    // them once for any value. A search's best plan depends on its values (a rare code is collected
    // from its index, a frequent one probed while walking the type's rows): the generic plan of
    // `Observation?code=…` took 10 ms where the plan for the value took 2 ms. Planning each
    // execution costs a fraction of a millisecond. Write transactions set it back (`mod.rs`).
    client
        .batch_execute("SET plan_cache_mode = force_custom_plan")
        .await
        .map_err(|e| StoreError::Backend(format!("cannot configure the PostgreSQL session: {e}")))?;
    Ok(Conn { client, statements: HashMap::new(), poisoned: false, seal: seal.clone() })
}

/// A connection lent by the pool, given back when dropped.
pub(super) struct Pooled {
    conn: Option<Conn>,
    pool: Arc<Pool>,
    _permit: OwnedSemaphorePermit,
}

impl std::ops::Deref for Pooled {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        self.conn.as_ref().expect("present until dropped")
    }
}

impl std::ops::DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut Conn {
        self.conn.as_mut().expect("present until dropped")
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            if !conn.client.is_closed() && !conn.poisoned {
                self.pool.idle.lock().unwrap().push(conn);
            }
        }
    }
}

/// One connection and its prepared statements.
pub(super) struct Conn {
    client: Client,
    statements: HashMap<String, Statement>,
    /// Set when a transaction could not be ended cleanly: the connection is not reused.
    pub(super) poisoned: bool,
    /// How bodies are sealed and opened (`crate::seal`): every read and write of a body on this
    /// connection goes through it.
    pub(super) seal: Seal,
}

impl Conn {
    async fn statement(&mut self, sql: &str) -> Result<Statement, StoreError> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql).await?;
        if self.statements.len() >= STATEMENT_CACHE {
            self.statements.clear();
        }
        self.statements.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }

    pub(super) async fn query(&mut self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, StoreError> {
        let statement = self.statement(sql).await?;
        Ok(self.client.query(&statement, params).await?)
    }

    pub(super) async fn query_opt(&mut self, sql: &str, params: Params<'_>) -> Result<Option<Row>, StoreError> {
        let statement = self.statement(sql).await?;
        Ok(self.client.query_opt(&statement, params).await?)
    }

    pub(super) async fn query_one(&mut self, sql: &str, params: Params<'_>) -> Result<Row, StoreError> {
        let statement = self.statement(sql).await?;
        Ok(self.client.query_one(&statement, params).await?)
    }

    pub(super) async fn execute(&mut self, sql: &str, params: Params<'_>) -> Result<u64, StoreError> {
        let statement = self.statement(sql).await?;
        Ok(self.client.execute(&statement, params).await?)
    }

    /// Statements without parameters (transaction control, DDL), not prepared.
    pub(super) async fn batch(&mut self, sql: &str) -> Result<(), StoreError> {
        Ok(self.client.batch_execute(sql).await?)
    }
}

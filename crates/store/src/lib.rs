//! Fhirside's resource store.
//!
//! This crate owns persistence: resource versions, history, the search index rows that conditional
//! interactions and search read, and the cost accounting behind `x-ms-request-charge`. It gives the
//! server one trait, [`ResourceStore`], with two implementations: the embedded one on SQLite
//! ([`SqliteStore`]) and one on PostgreSQL for stateless replicas ([`PostgresStore`]). Both carry
//! out writes with the same logic (`write.rs`) and compile searches with the same compiler
//! (`sql/`), each in its own dialect.
//!
//! What it does **not** know: HTTP, authentication, FHIRPath, or the FHIR definitions. Callers hand
//! it resources that were already validated and the index entries already extracted from them; the
//! store only assigns `versionId`/`lastUpdated`, enforces the version preconditions atomically, and
//! answers queries expressed as [`SearchQuery`] — a small, dialect-neutral description that each
//! backend compiles to its own SQL.
//!
//! Shape: every write goes through [`ResourceStore::write`] as one [`WriteOp`], so that a conditional
//! create or a version check happens in the same database transaction as the write it guards. The
//! SQLite backend funnels writes to one writer thread that commits them in groups (one fsync for many
//! requests); reads run on a small pool of read-only connections against the WAL.

mod index;
mod jobs;
mod meta;
mod model;
mod postgres;
mod query;
mod seal;
mod settings;
mod shard;
mod sql;
mod sqlite;
mod write;

pub use index::{
    CanonicalQuantity, CompartmentEntry, DateEntry, IndexEntries, NumberEntry, QuantityEntry, ReferenceEntry,
    StringEntry, TextEntry, TokenEntry, UriEntry,
};
pub use jobs::{JobEnd, JobFuture, JobQueue, JobRecord, JobStatus, NewJob, MAX_ATTEMPTS as MAX_JOB_ATTEMPTS};
pub use meta::Unstamped;

pub use model::{Cost, ImportLine, ImportedMeta, Method, Outcome, StoreError, StoredVersion, WriteOp, WriteResult};
pub use postgres::Distribution as PostgresDistribution;
pub use postgres::Importer as PostgresImporter;
pub use postgres::{
    migrate as migrate_postgres, schema_status as postgres_schema_status, PostgresConfig, PostgresStore, SchemaStatus,
};
pub use query::{
    Clause, Cursor, DateRange, EverythingQuery, HistoryQuery, HistoryScope, IncludeQuery, KeyValue, NumberRange, Page,
    Prefix, QuantityValue, ReferenceValue, SearchQuery, SnapshotQuery, SortBy, SortKey, StringMatch, TokenSystem,
    TokenValue, UriMatch, Value, ValueKind,
};
pub use seal::Seal;
pub use settings::{create_setting, read_setting, write_setting, SettingsOf};
pub use sqlite::{ExportCounts, RawVersion, SqliteExport};
pub use sqlite::{SqliteConfig, SqliteStore};

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

/// A boxed future, so that [`ResourceStore`] can be used as a trait object (`Arc<dyn ResourceStore>`).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<Outcome<T>, StoreError>> + Send + 'a>>;

/// Work to run inside one store transaction; see [`ResourceStore::transaction`].
pub type TransactionWork = Box<dyn FnOnce(&mut dyn Transaction) -> Result<(), StoreError> + Send>;

/// Transaction work that writes a batch of `$import` lines one by one, and where its results will
/// be once the transaction has committed.
pub(crate) fn import_work(lines: Vec<ImportLine>) -> (TransactionWork, ImportResults) {
    let slot = Arc::new(Mutex::new(None));
    let filled = Arc::clone(&slot);
    let work: TransactionWork = Box::new(move |tx| {
        let mut results = Vec::with_capacity(lines.len());
        for line in lines {
            match tx.write(WriteOp::Import(line)) {
                Err(error) if !error.refuses_one_line() => return Err(error),
                result => results.push(result),
            }
        }
        *filled.lock().unwrap_or_else(PoisonError::into_inner) = Some(results);
        Ok(())
    });
    (work, ImportResults(slot))
}

/// Each line's result of an import batch, in order.
type LineResults = Vec<Result<WriteResult, StoreError>>;

/// The per-line results of [`import_work`].
pub(crate) struct ImportResults(Arc<Mutex<Option<LineResults>>>);

impl ImportResults {
    /// The results, once the work has run and committed.
    pub(crate) fn take(self) -> Result<LineResults, StoreError> {
        let results = self.0.lock().unwrap_or_else(PoisonError::into_inner).take();
        results.ok_or_else(|| StoreError::Backend("the import batch left no results".into()))
    }
}

/// What work inside a transaction can do. Reads see the transaction's own earlier writes.
pub trait Transaction {
    /// Up to `limit` current, non-deleted matches of `query` (its `count` is ignored).
    fn search(&mut self, query: &SearchQuery, limit: u32) -> Result<Vec<StoredVersion>, StoreError>;
    /// The current version (possibly a deletion marker).
    fn read(&mut self, resource_type: &str, id: &str) -> Result<Option<StoredVersion>, StoreError>;
    /// One specific version.
    fn vread(&mut self, resource_type: &str, id: &str, version: u64) -> Result<Option<StoredVersion>, StoreError>;
    /// Applies one write within the transaction.
    fn write(&mut self, op: WriteOp) -> Result<WriteResult, StoreError>;
}

/// The storage interface every backend implements.
///
/// Each method returns the result together with its [`Cost`], from which the server derives the
/// request charge. Methods are async because networked backends (PostgreSQL) need to be; the SQLite
/// backend answers reads synchronously from an in-process connection and returns a ready future.
pub trait ResourceStore: Send + Sync + 'static {
    /// The current version of a resource, including a deletion marker if the last version deleted it.
    fn read<'a>(&'a self, resource_type: &'a str, id: &'a str) -> StoreFuture<'a, Option<StoredVersion>>;

    /// One specific version of a resource.
    fn vread<'a>(&'a self, resource_type: &'a str, id: &'a str, version: u64)
        -> StoreFuture<'a, Option<StoredVersion>>;

    /// Applies one write atomically: preconditions, conditional matching, the new version and its
    /// index rows all happen in one transaction.
    fn write(&self, op: WriteOp) -> StoreFuture<'_, WriteResult>;

    /// Runs `work` atomically: everything it writes commits together, or — if it returns an error —
    /// nothing does. The work runs where the store can act synchronously (the SQLite writer thread),
    /// so it should do only what must happen inside the transaction (conditional matching, reference
    /// resolution, the writes); parse and validate before. To return values, the work captures a
    /// channel or slot; to abandon the transaction without a store failure it returns
    /// [`StoreError::RolledBack`].
    fn transaction(&self, work: TransactionWork) -> StoreFuture<'_, ()>;

    /// Versions in a history scope, newest first.
    fn history<'a>(&'a self, scope: &'a HistoryScope, query: &'a HistoryQuery) -> StoreFuture<'a, Page>;

    /// `$everything`: the current, non-deleted focal resource `compartment/id` (every resource of
    /// that type when `id` is `None`), the members of its compartment, and the resources they (or
    /// it) refer to, in a stable order.
    fn everything<'a>(
        &'a self,
        compartment: &'a str,
        id: Option<&'a str>,
        query: &'a EverythingQuery,
    ) -> StoreFuture<'a, Page>;

    /// Current, non-deleted resources that `_include` or `_revinclude` adds to a page of matches.
    fn include<'a>(&'a self, query: &'a IncludeQuery) -> StoreFuture<'a, Vec<StoredVersion>>;

    /// Current, non-deleted resources of `query.types` (every type if empty) matching every clause.
    fn search<'a>(&'a self, query: &'a SearchQuery) -> StoreFuture<'a, Page>;

    /// Up to `limit` current, non-deleted versions with a row id after `after`, in row id order,
    /// each with its row id: what a reindex walks through.
    fn live_after(&self, after: i64, limit: u32) -> StoreFuture<'_, Vec<(i64, StoredVersion)>>;

    /// A page of a bulk export's snapshot ([`SnapshotQuery`]), each version with its row id.
    fn snapshot<'a>(&'a self, query: &'a SnapshotQuery) -> StoreFuture<'a, Vec<(i64, StoredVersion)>>;

    /// Replaces the index rows of the given versions (by row id) if they are still current.
    fn reindex(&self, rows: Vec<(i64, IndexEntries)>) -> StoreFuture<'_, ()>;

    /// A stored setting of the server (such as the fingerprint of the indexed search parameters).
    fn setting<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<String>>;

    fn set_setting(&self, key: &str, value: &str) -> StoreFuture<'_, ()>;

    /// Starts a bulk load (an `$import`). A store that holds no resources may then
    /// defer the search indexes that only queries read, so that each written row is appended
    /// instead of inserted into every index; searches stay correct meanwhile, only slower. Returns
    /// whether it did, to be handed to [`ResourceStore::end_bulk_load`]. Stores without such a
    /// fast path answer `false`.
    fn begin_bulk_load(&self) -> StoreFuture<'_, bool> {
        Box::pin(std::future::ready(Ok(Outcome { value: false, cost: Cost::default() })))
    }

    /// Ends a bulk load begun with [`ResourceStore::begin_bulk_load`]: once the last deferring load
    /// has ended, the deferred indexes are built (in one sort each) before this returns.
    fn end_bulk_load(&self, _deferred: bool) -> StoreFuture<'_, ()> {
        Box::pin(std::future::ready(Ok(Outcome { value: (), cost: Cost::default() })))
    }

    /// Imports a batch of `$import` lines in one transaction. Each line's result, in order: what it
    /// stored or found already stored ([`WriteResult::Created`], `Updated` or `Unchanged`), or the
    /// refusal ([`StoreError::Conflict`] or [`StoreError::Invalid`]) that left that line unwritten
    /// while the others went on. Any other error fails the batch; whatever of it was written by
    /// then (a store may write a batch in parts, side by side) is found unchanged when the batch
    /// is written again.
    ///
    /// A store may answer before the batch is durable, provided that any durable write it commits
    /// later (the import job's checkpoint, which records the lines done) makes the batch durable
    /// too: a crash then loses only batches that the job, resumed from its checkpoint, writes again.
    ///
    /// This default writes the lines one by one inside [`ResourceStore::transaction`], which suits
    /// a store whose writer runs in-process; a networked store writes the batch set-based.
    fn import_batch(&self, lines: Vec<ImportLine>) -> StoreFuture<'_, Vec<Result<WriteResult, StoreError>>> {
        let (work, results) = import_work(lines);
        let stored = self.transaction(work);
        Box::pin(async move {
            let cost = stored.await?.cost;
            Ok(Outcome { value: results.take()?, cost })
        })
    }

    /// The job table in the same database ([`JobQueue`]).
    fn jobs(&self) -> &dyn JobQueue;
}

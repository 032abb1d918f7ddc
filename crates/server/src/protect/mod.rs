//! Encryption at rest, the server's half: the search index of an encrypted installation.
//!
//! The resource store seals bodies itself (`fhirside_store::Seal`). What it cannot do without
//! FHIR knowledge is decide which index values carry PHI and how a search compares with them once
//! they are blinded: [`ProtectedStore`] wraps the store and rewrites, on the way in, every write's
//! index rows and every query (searches, conditional criteria, `_typeFilter`, criteria inside
//! transactions), with the keyring in force at that moment. Reads pass through unchanged.
//!
//! Because it sits in front of the store rather than in the search parser, a query built by hand
//! (MedTech's lookup by identifier, SMART's scope filters) is rewritten like a parsed one.

mod blind;
mod rewrite;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use fhirside_keys::{Keyring, KeyringCell};
use fhirside_store::{
    EverythingQuery, HistoryQuery, HistoryScope, ImportLine, IncludeQuery, IndexEntries, JobQueue, Page, ResourceStore,
    SearchQuery, SnapshotQuery, StoreError, StoreFuture, StoredVersion, Transaction, TransactionWork, WriteOp,
    WriteResult,
};

/// A [`ResourceStore`] whose index rows and queries are blinded with the keyring in `keys`.
pub struct ProtectedStore {
    inner: Arc<dyn ResourceStore>,
    keys: KeyringCell,
}

impl ProtectedStore {
    pub fn new(inner: Arc<dyn ResourceStore>, keys: KeyringCell) -> ProtectedStore {
        ProtectedStore { inner, keys }
    }

    /// The keyring in force. A protected store without one is a start-up mistake; failing every
    /// write is safer than indexing PHI in the clear.
    fn keyring(&self) -> Result<Arc<Keyring>, StoreError> {
        self.keys.get().ok_or_else(|| StoreError::Backend("encryption at rest is on, but no keyring is loaded".into()))
    }
}

fn failed<'a, T: Send + 'a>(error: StoreError) -> StoreFuture<'a, T> {
    Box::pin(std::future::ready(Err(error)))
}

impl ResourceStore for ProtectedStore {
    fn read<'a>(&'a self, resource_type: &'a str, id: &'a str) -> StoreFuture<'a, Option<StoredVersion>> {
        self.inner.read(resource_type, id)
    }

    fn vread<'a>(
        &'a self,
        resource_type: &'a str,
        id: &'a str,
        version: u64,
    ) -> StoreFuture<'a, Option<StoredVersion>> {
        self.inner.vread(resource_type, id, version)
    }

    fn write(&self, mut op: WriteOp) -> StoreFuture<'_, WriteResult> {
        match self.keyring().and_then(|keyring| rewrite::write(&keyring, &mut op)) {
            Ok(()) => self.inner.write(op),
            Err(error) => failed(error),
        }
    }

    fn transaction(&self, work: TransactionWork) -> StoreFuture<'_, ()> {
        let keyring = match self.keyring() {
            Ok(keyring) => keyring,
            Err(error) => return failed(error),
        };
        self.inner.transaction(Box::new(move |tx| work(&mut ProtectedTransaction { inner: tx, keyring })))
    }

    fn history<'a>(&'a self, scope: &'a HistoryScope, query: &'a HistoryQuery) -> StoreFuture<'a, Page> {
        self.inner.history(scope, query)
    }

    fn everything<'a>(
        &'a self,
        compartment: &'a str,
        id: Option<&'a str>,
        query: &'a EverythingQuery,
    ) -> StoreFuture<'a, Page> {
        self.inner.everything(compartment, id, query)
    }

    fn include<'a>(&'a self, query: &'a IncludeQuery) -> StoreFuture<'a, Vec<StoredVersion>> {
        // Includes follow reference parameters, which are not blinded.
        self.inner.include(query)
    }

    fn search<'a>(&'a self, query: &'a SearchQuery) -> StoreFuture<'a, Page> {
        let mut query = query.clone();
        if let Err(error) = self.keyring().and_then(|keyring| rewrite::query(&keyring, &mut query)) {
            return failed(error);
        }
        Box::pin(async move { self.inner.search(&query).await })
    }

    fn live_after(&self, after: i64, limit: u32) -> StoreFuture<'_, Vec<(i64, StoredVersion)>> {
        self.inner.live_after(after, limit)
    }

    fn snapshot<'a>(&'a self, query: &'a SnapshotQuery) -> StoreFuture<'a, Vec<(i64, StoredVersion)>> {
        if query.filter.is_empty() {
            return self.inner.snapshot(query);
        }
        let mut query = query.clone();
        if let Err(error) = self.keyring().and_then(|keyring| rewrite::clauses(&keyring, &mut query.filter)) {
            return failed(error);
        }
        Box::pin(async move { self.inner.snapshot(&query).await })
    }

    fn reindex(&self, mut rows: Vec<(i64, IndexEntries)>) -> StoreFuture<'_, ()> {
        let keyring = match self.keyring() {
            Ok(keyring) => keyring,
            Err(error) => return failed(error),
        };
        for (_, entries) in &mut rows {
            rewrite::entries(&keyring, entries);
        }
        self.inner.reindex(rows)
    }

    fn setting<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<String>> {
        self.inner.setting(key)
    }

    fn set_setting(&self, key: &str, value: &str) -> StoreFuture<'_, ()> {
        self.inner.set_setting(key, value)
    }

    fn begin_bulk_load(&self) -> StoreFuture<'_, bool> {
        self.inner.begin_bulk_load()
    }

    fn end_bulk_load(&self, deferred: bool) -> StoreFuture<'_, ()> {
        self.inner.end_bulk_load(deferred)
    }

    fn import_batch(&self, mut lines: Vec<ImportLine>) -> StoreFuture<'_, Vec<Result<WriteResult, StoreError>>> {
        let keyring = match self.keyring() {
            Ok(keyring) => keyring,
            Err(error) => return failed(error),
        };
        for line in &mut lines {
            rewrite::entries(&keyring, &mut line.index);
        }
        self.inner.import_batch(lines)
    }

    fn jobs(&self) -> &dyn JobQueue {
        self.inner.jobs()
    }
}

/// The transaction handle work sees: its searches and writes rewritten like the store's.
struct ProtectedTransaction<'t> {
    inner: &'t mut dyn Transaction,
    keyring: Arc<Keyring>,
}

impl Transaction for ProtectedTransaction<'_> {
    fn search(&mut self, query: &SearchQuery, limit: u32) -> Result<Vec<StoredVersion>, StoreError> {
        let mut query = query.clone();
        rewrite::query(&self.keyring, &mut query)?;
        self.inner.search(&query, limit)
    }

    fn read(&mut self, resource_type: &str, id: &str) -> Result<Option<StoredVersion>, StoreError> {
        self.inner.read(resource_type, id)
    }

    fn vread(&mut self, resource_type: &str, id: &str, version: u64) -> Result<Option<StoredVersion>, StoreError> {
        self.inner.vread(resource_type, id, version)
    }

    fn write(&mut self, mut op: WriteOp) -> Result<WriteResult, StoreError> {
        rewrite::write(&self.keyring, &mut op)?;
        self.inner.write(op)
    }
}

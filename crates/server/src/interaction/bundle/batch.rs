//! A `batch` Bundle: every entry on its own.
//!
//! Each entry runs in its own store transaction, so one entry's failure affects no other. All the
//! entries are queued before any is awaited, so the store commits them together.

use fhirside_store::{Cost, StoreError, Transaction};

use super::entry::Entry;
use super::execute::{self, Produced};
use super::references::References;
use crate::error::FhirError;
use crate::AppState;

pub(super) async fn run(
    state: &AppState,
    entries: Vec<Result<Entry, FhirError>>,
) -> (Vec<Result<Produced, FhirError>>, Cost) {
    let mut queued = Vec::with_capacity(entries.len());
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(error) => {
                queued.push(Err(error));
                continue;
            }
        };
        let index = entry.index;
        let (send, receive) = tokio::sync::oneshot::channel();
        let new_id = uuid::Uuid::new_v4().hyphenated().to_string();
        let work = Box::new(move |tx: &mut dyn Transaction| {
            let result = execute::resolve(tx, entry, new_id)
                .and_then(|resolved| execute::apply(tx, resolved, &mut References::default()));
            let failed = result.is_err();
            let _ = send.send(result.map_err(|e| e.in_entry(index)));
            if failed {
                Err(StoreError::RolledBack)
            } else {
                Ok(())
            }
        });
        queued.push(Ok((state.store.transaction(work), receive)));
    }
    let mut results = Vec::with_capacity(queued.len());
    let mut cost = Cost::default();
    for item in queued {
        let result = match item {
            Err(error) => Err(error),
            Ok((stored, receive)) => match stored.await {
                Ok(outcome) => {
                    cost.add(outcome.cost);
                    receive.await.unwrap_or_else(|_| Err(FhirError::Internal("batch entry vanished".into())))
                }
                Err(StoreError::RolledBack) => {
                    receive.await.unwrap_or_else(|_| Err(FhirError::Internal("batch entry vanished".into())))
                }
                Err(error) => Err(error.into()),
            },
        };
        results.push(result);
    }
    (results, cost)
}

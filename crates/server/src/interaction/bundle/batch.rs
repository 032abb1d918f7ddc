//! A `batch` Bundle: every entry on its own.
//!
//! Each entry runs in its own store transaction, so one entry's failure affects no other. All the
//! entries are queued before any is awaited, so the store commits them together.

use fhirside_store::{Cost, Transaction};

use super::entry::Entry;
use super::execute::{self, Produced};
use super::prepare;
use super::references::References;
use crate::error::FhirError;
use crate::AppState;

pub(super) async fn run(
    state: &AppState,
    entries: Vec<Result<Entry, FhirError>>,
) -> (Vec<Result<Produced, FhirError>>, Cost) {
    // Prepare the entries that parsed (rewrite and index them before their transactions).
    let mut ready = Vec::new();
    let mut failures = Vec::with_capacity(entries.len());
    for entry in entries {
        match entry {
            Ok(entry) => {
                ready.push(entry);
                failures.push(None);
            }
            Err(error) => failures.push(Some(error)),
        }
    }
    prepare::prepare(state, &mut ready, &mut References::default()).await;
    let mut ready = ready.into_iter();
    let entries: Vec<Result<Entry, FhirError>> = failures
        .into_iter()
        .map(|failure| match failure {
            Some(error) => Err(error),
            None => Ok(ready.next().expect("one prepared entry per parsed entry")),
        })
        .collect();
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
        let new_id = crate::ids::new_id();
        queued.push(Ok(crate::interaction::in_transaction(state, move |tx: &mut dyn Transaction| {
            execute::resolve(tx, entry, new_id)
                .and_then(|resolved| execute::apply(tx, resolved, &mut References::default()))
                .map_err(|e| e.in_entry(index))
        })));
    }
    let mut results = Vec::with_capacity(queued.len());
    let mut cost = Cost::default();
    for item in queued {
        results.push(match item {
            Err(error) => Err(error),
            Ok(pending) => pending.await.map(|(produced, entry_cost)| {
                cost.add(entry_cost);
                produced
            }),
        });
    }
    (results, cost)
}

//! A `transaction` Bundle: all entries in one store transaction, or none.
//!
//! Entries run in the order R4 prescribes — DELETE, POST, PUT/PATCH, GET/HEAD — and every entry's
//! target id is fixed (including conditional creates and updates) before any reference is rewritten,
//! so that `urn:uuid:` references resolve to the ids actually written. Any failure rolls everything
//! back and answers with that entry's status and an OperationOutcome naming it.

use std::collections::HashSet;

use fhirside_store::{Cost, Transaction};

use super::entry::{Entry, Method, Target};
use super::execute::{self, Produced};
use super::prepare;
use super::references::References;
use crate::error::FhirError;
use crate::AppState;

type Results = Vec<Result<Produced, FhirError>>;

pub(super) async fn run(
    state: &AppState,
    entries: Vec<Result<Entry, FhirError>>,
) -> Result<(Results, Cost), FhirError> {
    let mut entries: Vec<Entry> = entries.into_iter().collect::<Result<_, _>>()?;
    reject_duplicates(&entries)?;
    let new_ids: Vec<String> = entries.iter().map(|_| crate::ids::new_id()).collect();
    let mut refs = known_full_urls(&entries, &new_ids);
    prepare::prepare(state, &mut entries, &mut refs).await;
    let (produced, cost) =
        crate::interaction::in_transaction(state, move |tx| run_entries(tx, entries, new_ids, refs)).await?;
    Ok((produced.into_iter().map(Ok).collect(), cost))
}

/// The `fullUrl`s whose ids are known before the transaction (server-assigned, or named by the
/// entry's URL), and those only the transaction will decide.
fn known_full_urls(entries: &[Entry], new_ids: &[String]) -> References {
    let mut refs = References::default();
    for (entry, new_id) in entries.iter().zip(new_ids) {
        let Some(full_url) = entry.full_url.clone() else { continue };
        match (entry.method, &entry.target, &entry.if_none_exist) {
            (Method::Post, Target::Type(t), None) => refs.insert(full_url, format!("{t}/{new_id}")),
            (Method::Put, Target::Instance(t, id), _) => refs.insert(full_url, format!("{t}/{id}")),
            (Method::Post, _, Some(_)) | (Method::Put, Target::Search(..), _) => refs.insert_late(full_url),
            _ => {}
        }
    }
    refs
}

fn run_entries(
    tx: &mut dyn Transaction,
    entries: Vec<Entry>,
    new_ids: Vec<String>,
    mut refs: References,
) -> Result<Vec<Produced>, FhirError> {
    let count = entries.len();
    let mut order: Vec<(u8, usize, Entry, String)> = entries
        .into_iter()
        .zip(new_ids)
        .enumerate()
        .map(|(i, (e, id))| (e.method.transaction_order(), i, e, id))
        .collect();
    order.sort_by_key(|(rank, i, _, _)| (*rank, *i));

    let mut produced: Vec<Option<Produced>> = (0..count).map(|_| None).collect();
    let mut pending = Vec::with_capacity(count);
    for (_, index, entry, new_id) in order {
        let resolved = execute::resolve(tx, entry, new_id).map_err(|e| e.in_entry(index))?;
        if let (Some(full_url), Some(id)) = (&resolved.entry.full_url, &resolved.id) {
            refs.insert(full_url.clone(), format!("{}/{id}", resolved.entry.target.resource_type()));
        }
        if resolved.entry.method == Method::Delete {
            // Deletes come first and refer to nothing in the Bundle: apply now.
            produced[index] = Some(execute::apply(tx, resolved, &mut refs).map_err(|e| e.in_entry(index))?);
        } else {
            pending.push((index, resolved));
        }
    }
    for (index, resolved) in pending {
        produced[index] = Some(execute::apply(tx, resolved, &mut refs).map_err(|e| e.in_entry(index))?);
    }
    Ok(produced.into_iter().map(|p| p.expect("every entry produced a result")).collect())
}

/// Two entries may not act on the same resource, nor share a `fullUrl`.
fn reject_duplicates(entries: &[Entry]) -> Result<(), FhirError> {
    let mut targets = HashSet::new();
    let mut full_urls = HashSet::new();
    for entry in entries {
        if let (Target::Instance(t, id), Method::Put | Method::Delete | Method::Patch) = (&entry.target, entry.method) {
            if !targets.insert((t.clone(), id.clone())) {
                return Err(
                    FhirError::bad_request(format!("More than one entry acts on {t}/{id}.")).in_entry(entry.index)
                );
            }
        }
        if let Some(full_url) = &entry.full_url {
            if entry.method != Method::Get && !full_urls.insert(full_url.clone()) {
                return Err(FhirError::bad_request(format!("The fullUrl '{full_url}' appears more than once."))
                    .in_entry(entry.index));
            }
        }
    }
    Ok(())
}

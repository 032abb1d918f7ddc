//! Work done for a Bundle's entries before its store transaction starts.
//!
//! The store has one writer, so what runs inside a transaction is what every other write waits
//! for. Rewriting references and extracting search index values are most of an entry's cost and
//! rarely depend on the transaction: ids the server assigns are known up front, and conditional
//! references (`Organization?identifier=…`) are resolved here on the read pool. The transaction
//! then only confirms each assumed resolution with one indexed search ([`Prepared::assumed`]) and
//! writes. An entry that refers to an id only the transaction decides (the match of a conditional
//! create or update) is left to be rewritten inside it.

use std::collections::BTreeSet;

use fhirside_store::{IndexEntries, Unstamped};

use super::entry::{Entry, Method};
use super::references::References;
use crate::interaction::search;
use crate::params::Params;
use crate::{indexing, AppState};

/// An entry's resource, rewritten and indexed before the transaction.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub body: Unstamped,
    pub index: IndexEntries,
    /// Conditional references in the resource and what they resolved to before the transaction.
    pub assumed: Vec<(String, String)>,
}

pub(super) async fn prepare(state: &AppState, entries: &mut [Entry], refs: &mut References) {
    let mut unsettled = Vec::with_capacity(entries.len());
    for entry in entries.iter_mut() {
        let writes = matches!(entry.method, Method::Post | Method::Put);
        unsettled.push(match (&mut entry.resource, writes) {
            (Some(resource), true) => Some(refs.rewrite_before(resource)),
            _ => None,
        });
    }
    let conditional: BTreeSet<&String> = unsettled.iter().flatten().flat_map(|u| &u.conditional).collect();
    let mut resolved = Vec::new();
    for reference in conditional {
        if let Some(target) = resolve(state, reference).await {
            resolved.push((reference.clone(), target));
        }
    }
    for (reference, target) in resolved {
        refs.assume(reference, target);
    }
    for (entry, unsettled) in entries.iter_mut().zip(unsettled) {
        let Some(unsettled) = unsettled else { continue };
        if unsettled.late || unsettled.conditional.iter().any(|c| refs.assumed(c).is_none()) {
            continue; // the transaction rewrites and indexes this one
        }
        let resource_type = entry.target.resource_type().to_owned();
        let Some(mut resource) = entry.resource.take() else { continue };
        if !unsettled.conditional.is_empty() {
            refs.rewrite_before(&mut resource); // applies the assumptions
        }
        let assumed = unsettled
            .conditional
            .into_iter()
            .map(|c| {
                let target = refs.assumed(&c).unwrap_or_default().to_owned();
                (c, target)
            })
            .collect();
        let index = indexing::extract(&resource_type, &mut resource);
        entry.prepared = Some(Prepared { body: Unstamped::new(resource), index, assumed });
    }
}

/// A conditional reference's single match, read outside any transaction; `None` when it has none,
/// several, or cannot be parsed (the transaction will report why).
async fn resolve(state: &AppState, reference: &str) -> Option<String> {
    let (resource_type, query) = reference.split_once('?')?;
    let mut parsed = search::conditional(resource_type, &Params::parse(Some(query))).ok()?;
    parsed.count = 2;
    let page = state.store.search(&parsed).await.ok()?.value;
    match page.versions.as_slice() {
        [one] => Some(format!("{resource_type}/{}", one.id)),
        _ => None,
    }
}

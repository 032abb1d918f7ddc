//! The search parameters in force: the R4 ones plus custom SearchParameter resources, and the
//! reindex that brings stored index rows in line with them.
//!
//! One [`Indexer`] is current per process (a process serves one data directory, which its lock
//! guarantees). It changes when `$reindex` picks up custom SearchParameters; writes then index
//! with the new parameters at once, and a background job rewrites the index rows of every stored
//! resource. The store remembers the fingerprint of the parameters its rows were built with, so a
//! server started on data indexed differently (an upgrade that changed extraction, or custom
//! parameters) reindexes by itself.

use std::sync::{Arc, Mutex, OnceLock, RwLock};

use fhir::index::Indexer;
use fhir::{SearchParamDef, SearchParamType};
use fhirside_store::{Clause, ResourceStore, SearchQuery, Value as QueryValue};
use serde_json::Value;

use crate::indexing;

/// The store setting holding the fingerprint of the parameters the index rows were built with.
const FINGERPRINT: &str = "index_fingerprint";

/// Resources per reindex batch: one writer job each, so other writes interleave.
const BATCH: u32 = 500;

fn slot() -> &'static RwLock<Arc<Indexer>> {
    static CURRENT: OnceLock<RwLock<Arc<Indexer>>> = OnceLock::new();
    CURRENT.get_or_init(|| RwLock::new(Arc::new(Indexer::new(Vec::new()))))
}

/// The parameters in force.
pub(crate) fn current() -> Arc<Indexer> {
    slot().read().unwrap_or_else(|e| e.into_inner()).clone()
}

fn install(indexer: Indexer) {
    *slot().write().unwrap_or_else(|e| e.into_inner()) = Arc::new(indexer);
}

/// The state of the last reindex job, for `GET /_operations/reindex/{id}`.
#[derive(Debug, Clone)]
pub(crate) struct ReindexStatus {
    pub id: String,
    /// `Running`, `Completed` or `Failed` (Azure's job statuses).
    pub status: &'static str,
    pub resources_reindexed: u64,
    pub params: Vec<String>,
    pub error: Option<String>,
}

/// Reindex jobs: at most one runs at a time.
#[derive(Default)]
pub(crate) struct Reindexer {
    last: Mutex<Option<ReindexStatus>>,
}

impl Reindexer {
    pub(crate) fn status(&self, id: &str) -> Option<ReindexStatus> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone().filter(|s| s.id == id)
    }

    fn update(&self, f: impl FnOnce(&mut ReindexStatus)) {
        if let Some(status) = self.last.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            f(status);
        }
    }
}

/// Loads the custom parameters and, if the index was built with other ones, starts a reindex.
pub async fn prepare(state: &crate::AppState) -> Result<(), fhirside_store::StoreError> {
    let custom = load_custom(state.store.as_ref()).await?;
    install(Indexer::new(custom));
    let stored = state.store.setting(FINGERPRINT).await?.value;
    if stored.as_deref() != Some(current().fingerprint()) {
        if stored.is_none() && state.store.live_after(0, 1).await?.value.is_empty() {
            // A new, empty store: nothing to rebuild.
            state.store.set_setting(FINGERPRINT, current().fingerprint()).await?;
        } else {
            start(state);
        }
    }
    Ok(())
}

/// `$reindex`: picks up the custom SearchParameters now stored and rebuilds the index with them.
/// Returns the job; an already running job is returned instead of starting another.
pub(crate) async fn reindex(state: &crate::AppState) -> Result<ReindexStatus, fhirside_store::StoreError> {
    if let Some(running) = state.reindexer.last.lock().unwrap_or_else(|e| e.into_inner()).clone() {
        if running.status == "Running" {
            return Ok(running);
        }
    }
    let custom = load_custom(state.store.as_ref()).await?;
    install(Indexer::new(custom));
    Ok(start(state))
}

fn start(state: &crate::AppState) -> ReindexStatus {
    let indexer = current();
    let mut params: Vec<String> = Vec::new();
    for t in fhir::definitions().resource_types() {
        for p in indexer.search_params(t) {
            if fhir::definitions().search_param(t, &p.code).is_none_or(|builtin| builtin.url != p.url) {
                params.push(p.url.clone());
            }
        }
    }
    params.sort();
    params.dedup();
    let status =
        ReindexStatus { id: crate::ids::new_id(), status: "Running", resources_reindexed: 0, params, error: None };
    *state.reindexer.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(status.clone());
    let store = state.store.clone();
    let reindexer = state.reindexer.clone();
    tokio::spawn(async move {
        let result = run(store.as_ref(), &indexer, &reindexer).await;
        reindexer.update(|s| match result {
            Ok(()) => s.status = "Completed",
            Err(error) => {
                s.status = "Failed";
                s.error = Some(error.to_string());
            }
        });
    });
    status
}

async fn run(
    store: &dyn ResourceStore,
    indexer: &Indexer,
    reindexer: &Reindexer,
) -> Result<(), fhirside_store::StoreError> {
    let mut after = 0;
    loop {
        let batch = store.live_after(after, BATCH).await?.value;
        let Some((last, _)) = batch.last() else { break };
        after = *last;
        let count = batch.len() as u64;
        let rows = batch
            .into_iter()
            .map(|(rid, version)| {
                let resource: Value = serde_json::from_slice(&version.body).unwrap_or(Value::Null);
                (rid, indexing::entries(indexer.extract(&version.resource_type, &resource)))
            })
            .collect();
        store.reindex(rows).await?;
        reindexer.update(|s| s.resources_reindexed += count);
    }
    store.set_setting(FINGERPRINT, indexer.fingerprint()).await?;
    Ok(())
}

/// Every stored SearchParameter that defines a parameter the R4 definitions do not (by url), and
/// whose expression can be used.
async fn load_custom(store: &dyn ResourceStore) -> Result<Vec<SearchParamDef>, fhirside_store::StoreError> {
    let mut custom = Vec::new();
    let mut query = SearchQuery {
        types: vec!["SearchParameter".to_owned()],
        clauses: vec![Clause::Not(Box::new(Clause::Match {
            param: "status".into(),
            values: vec![QueryValue::Token(fhirside_store::TokenValue {
                system: fhirside_store::TokenSystem::Any,
                code: Some("retired".into()),
            })],
        }))],
        count: 1000,
        ..SearchQuery::default()
    };
    loop {
        let page = store.search(&query).await?.value;
        for version in &page.versions {
            if let Some(definition) = definition_of(&version.body) {
                custom.push(definition);
            }
        }
        match page.next.as_deref().and_then(fhirside_store::Cursor::decode) {
            Some(cursor) => query.cursor = Some(cursor),
            None => break,
        }
    }
    Ok(custom)
}

/// A stored SearchParameter as a definition, unless it is an R4 one or unusable.
fn definition_of(body: &[u8]) -> Option<SearchParamDef> {
    let mut resource: Value = serde_json::from_slice(body).ok()?;
    let url = resource.get("url")?.as_str()?;
    if fhir::definitions().all_search_params().iter().any(|p| p.url == url) {
        return None;
    }
    // Only the fields the definition keeps; the rest of the resource is not ours to interpret.
    let object = resource.as_object_mut()?;
    object.retain(|k, _| {
        matches!(k.as_str(), "code" | "url" | "type" | "expression" | "base" | "target" | "component" | "modifier")
    });
    let definition: SearchParamDef = serde_json::from_value(resource).ok()?;
    let usable = definition.kind != SearchParamType::Special
        && definition.expression.as_deref().is_some_and(|e| fhir::fhirpath::parse(e).is_ok())
        && definition.base.iter().all(|b| fhir::definitions().is_resource_type(b));
    usable.then_some(definition)
}

//! The search parameters in force: the R4 ones plus custom SearchParameter resources, and the
//! reindex that brings stored index rows in line with them.
//!
//! One [`Indexer`] is current per process. It changes when `$reindex` picks up custom
//! SearchParameters; writes then index with the new parameters at once, and a reindex job (in the
//! store's job table, run by whichever replica leases it) rewrites the index rows of every stored
//! resource. Other replicas on the same database follow the announced set within one job poll.
//! The store remembers the fingerprint of the parameters its rows were built with, so a server
//! started on data indexed differently (an upgrade that changed extraction, or custom parameters)
//! queues a reindex by itself.

use std::sync::{Arc, OnceLock, RwLock};

use fhir::index::Indexer;
use fhir::{SearchParamDef, SearchParamType};
use fhirside_store::{Clause, JobRecord, NewJob, ResourceStore, SearchQuery, Value as QueryValue};
use serde_json::Value;

use crate::indexing;

/// The store setting holding the fingerprint of the parameters the index rows were built with.
const FINGERPRINT: &str = "index_fingerprint";

/// Resources per reindex batch by default.
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

/// The store setting announcing the parameters every replica must index with (the fingerprint of
/// the set `$reindex` installed). Replicas follow it ([`follow`]) before a reindex job starts
/// rewriting rows, so no replica keeps writing rows without the new parameters.
const ANNOUNCED: &str = "search_params_announced";

/// Loads the custom parameters and, if the index was built with other ones, queues a reindex.
pub async fn prepare(state: &crate::AppState) -> Result<(), fhirside_store::StoreError> {
    let store = state.store.as_ref();
    install(Indexer::new(load_custom(store).await?));
    let announced = store.setting(ANNOUNCED).await?.value;
    state.jobs.followed(announced.as_deref());
    let stored = store.setting(FINGERPRINT).await?.value;
    if stored.as_deref() != Some(current().fingerprint()) {
        if stored.is_none() && store.live_after(0, 1).await?.value.is_empty() {
            // A new, empty store: nothing to rebuild.
            store.set_setting(FINGERPRINT, current().fingerprint()).await?;
        } else {
            reindex(state).await?;
        }
    }
    Ok(())
}

/// Reloads the custom parameters when another replica announced a new set (`$reindex` there).
pub(crate) async fn follow(state: &crate::AppState) -> Result<(), fhirside_store::StoreError> {
    let announced = state.store.setting(ANNOUNCED).await?.value;
    if state.jobs.followed(announced.as_deref()) {
        install(Indexer::new(load_custom(state.store.as_ref()).await?));
    }
    Ok(())
}

/// `$reindex`: picks up the custom SearchParameters now stored, announces them to every replica
/// and queues the job that rebuilds the index with them. An active reindex job is returned
/// instead of queuing another.
pub(crate) async fn reindex(state: &crate::AppState) -> Result<JobRecord, fhirside_store::StoreError> {
    let store = state.store.as_ref();
    install(Indexer::new(load_custom(store).await?));
    let indexer = current();
    store.set_setting(ANNOUNCED, indexer.fingerprint()).await?;
    state.jobs.followed(Some(indexer.fingerprint()));
    let definition = ReindexDefinition { fingerprint: indexer.fingerprint().to_owned(), params: custom_urls(&indexer) };
    let job = NewJob {
        id: crate::ids::new_id(),
        kind: REINDEX.into(),
        definition: serde_json::to_string(&definition).unwrap_or_default(),
        singleton: true,
    };
    let job = store.jobs().enqueue(&job).await?;
    state.jobs.wake();
    Ok(job)
}

/// The kind of the reindex job in the job table.
pub(crate) const REINDEX: &str = "reindex";

/// What a reindex job was asked to do.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct ReindexDefinition {
    /// The parameters' fingerprint when the job was queued.
    pub fingerprint: String,
    /// The custom parameters (urls) it makes searchable.
    pub params: Vec<String>,
}

/// How far a reindex job got: the last row id rewritten, and how many resources so far.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct ReindexProgress {
    pub after: i64,
    pub count: u64,
}

fn custom_urls(indexer: &Indexer) -> Vec<String> {
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
    params
}

/// Runs a leased reindex job from its checkpoint: rewrites the index rows of every current
/// version, batch by batch, checkpointing after each. A batch done twice (the worker died before
/// its checkpoint) writes the same rows again, so a resumed job neither loses nor repeats work.
pub(crate) async fn run_job(lease: &crate::jobs::Lease<'_>) -> Result<String, crate::jobs::Stop> {
    use crate::jobs::Stop;
    let state = lease.state;
    let store = state.store.as_ref();
    let mut progress: ReindexProgress =
        lease.job.checkpoint.as_deref().and_then(|c| serde_json::from_str(c).ok()).unwrap_or_default();
    if lease.job.checkpoint.is_none() {
        // Give every replica one poll to follow the announcement first: from then on their writes
        // index with the new parameters, and this job rewrites everything written before.
        lease.checkpoint(&serde_json::to_string(&progress).unwrap_or_default()).await?;
        tokio::time::sleep(state.jobs.poll()).await;
    }
    follow(state).await.map_err(Stop::store)?;
    let indexer = current();
    while let Some((last, count)) = next_batch(store, &indexer, progress.after).await.map_err(Stop::store)? {
        progress = ReindexProgress { after: last, count: progress.count + count };
        lease.checkpoint(&serde_json::to_string(&progress).unwrap_or_default()).await?;
    }
    store.set_setting(FINGERPRINT, indexer.fingerprint()).await.map_err(Stop::store)?;
    Ok(serde_json::json!({"count": progress.count}).to_string())
}

/// Rebuilds every index row with the parameters in force, in one pass (no job): for tools that
/// run without a server, such as moving a store.
pub async fn run(store: &dyn ResourceStore, indexer: &Indexer) -> Result<u64, fhirside_store::StoreError> {
    let (mut after, mut total) = (0, 0);
    while let Some((last, count)) = next_batch(store, indexer, after).await? {
        (after, total) = (last, total + count);
    }
    store.set_setting(FINGERPRINT, indexer.fingerprint()).await?;
    Ok(total)
}

/// Rewrites the index rows of the next batch of current versions after row `after`: the last row
/// id and how many, or `None` at the end.
async fn next_batch(
    store: &dyn ResourceStore,
    indexer: &Indexer,
    after: i64,
) -> Result<Option<(i64, u64)>, fhirside_store::StoreError> {
    let batch = store.live_after(after, batch_size()).await?.value;
    let Some(&(last, _)) = batch.last() else { return Ok(None) };
    let count = batch.len() as u64;
    let rows = batch
        .into_iter()
        .map(|(rid, version)| {
            let resource: Value = serde_json::from_slice(&version.body).unwrap_or(Value::Null);
            (rid, indexing::entries(indexer.extract(&version.resource_type, &resource)))
        })
        .collect();
    store.reindex(rows).await?;
    Ok(Some((last, count)))
}

/// Resources per reindex batch: one store write each, so other writes interleave.
/// `FHIRSIDE_REINDEX_BATCH` tunes it (smaller batches hold the embedded writer for less time).
fn batch_size() -> u32 {
    std::env::var("FHIRSIDE_REINDEX_BATCH").ok().and_then(|v| v.parse().ok()).filter(|n| *n > 0).unwrap_or(BATCH)
}

/// Loads the store's custom SearchParameters, installs them with the R4 ones, and rebuilds every
/// index row with them, recording their fingerprint so that a server started on the store finds
/// its index current: `fhirside migrate-store` runs it after copying versions without index rows.
/// Returns how many current resources were indexed.
pub async fn rebuild_index(store: &dyn ResourceStore) -> Result<u64, fhirside_store::StoreError> {
    install(Indexer::new(load_custom(store).await?));
    run(store, &current()).await
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
    // Also checked here, not only by the query: a store whose index is not built yet (a moved
    // store, before `rebuild_index`) cannot filter by status.
    if resource.get("status").and_then(Value::as_str) == Some("retired") {
        return None;
    }
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

//! The import job: each input's lines, in batches. Batches are parsed, validated and indexed on
//! blocking threads, up to [`AHEAD_KIB`] of input ahead of the one being written in one store
//! transaction, so that the cores share the work and the store's writer is never kept waiting.
//! Lines a write refuses (a bad resource, a version conflict) go to an error file; the rest of the
//! batch commits.
//!
//! Every second or so the checkpoint records how many lines of which input are done. A job resumed
//! after a crash reads its input again from the start, skips those lines and goes on; a batch that
//! committed but was not checkpointed is written again, and finds every resource already stored
//! as it is (the store leaves an identical version alone), so nothing is duplicated. A line
//! without an `id` gets one made of the job, the input and the line number, for the same reason.
//!
//! An import brackets its work with [`fhirside_store::ResourceStore::begin_bulk_load`] and
//! `end_bulk_load`: into an empty embedded store (an `InitialLoad` of a new installation, or an
//! `IncrementalLoad` of another server's history), rows are then appended without their value
//! indexes, which are built once at the end, before the job reports that it is done.

use std::collections::BTreeMap;

use bytes::Bytes;
use fhirside_store::{ImportLine, ImportedMeta, Unstamped, WriteResult};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{import_roots, ImportDefinition, Mode};
use crate::bulk::source::{Lines, Source};
use crate::error::FhirError;
use crate::interaction::export::{ExportDefinition, EXPORT};
use crate::jobs::{Lease, Stop};
use crate::{indexing, AppState};

/// Lines per batch: one store transaction each.
const BATCH: usize = 1000;

/// Where a job stands.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(crate) struct ImportProgress {
    pub input_index: usize,
    /// Lines of the current input done (imported or reported).
    pub lines: u64,
    /// Per input: resources imported by type.
    pub imported: Vec<BTreeMap<String, u64>>,
    pub error_files: Vec<ErrorFile>,
    /// Numbers the error files.
    pub batches: u64,
}

impl ImportProgress {
    pub fn imported_total(&self) -> u64 {
        self.imported.iter().flat_map(|m| m.values()).sum()
    }
}

/// One error file: the OperationOutcomes of an input's refused lines in one batch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ErrorFile {
    pub input: usize,
    pub key: String,
    pub count: u64,
}

/// Whether `url` is an input this server can read: local files are opened now, so that a path
/// outside the allowed directories fails the request; URLs are fetched by the job.
pub(crate) async fn check_input(state: &AppState, url: &str) -> Result<(), String> {
    if own_export(url).is_some() {
        return Ok(());
    }
    if url.starts_with("file:") || url.starts_with('/') {
        let storage = state.bulk.as_ref().ok_or("bulk storage is not configured")?;
        return storage
            .open_url(url, &import_roots(state))
            .await
            .map(|_| ())
            .map_err(|e| format!("{e} (local files are read from the bulk directory and --import-root only)"));
    }
    let scheme_ok = url.starts_with("https://") || url.starts_with("http://") || url.starts_with("s3://");
    if scheme_ok {
        Ok(())
    } else {
        Err("an input is an https URL, an s3:// URL, a file: URL or an absolute path".into())
    }
}

/// `…/_operations/export/{id}/{file}`: a file of one of this server's exports, read from the bulk
/// storage directly (its own URL may need this server's token, which a job does not have).
fn own_export(url: &str) -> Option<(String, String)> {
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return None;
    }
    let path = url.split_once("://").and_then(|(_, rest)| rest.split_once('/')).map_or("", |(_, p)| p);
    let path = path.split('?').next().unwrap_or(path);
    match path.split('/').collect::<Vec<_>>().as_slice() {
        [.., "_operations", "export", id, file] if !file.is_empty() && !file.contains("..") => {
            Some(((*id).to_owned(), (*file).to_owned()))
        }
        _ => None,
    }
}

async fn open(state: &AppState, url: &str) -> Result<Source, String> {
    let storage = state.bulk.as_ref().ok_or("bulk storage is not configured")?;
    if let Some((id, file)) = own_export(url) {
        let job = state.store.jobs().job(&id).await.map_err(|e| e.to_string())?;
        if let Some(job) = job.filter(|j| j.kind == EXPORT) {
            let definition: ExportDefinition = serde_json::from_str(&job.definition).map_err(|e| e.to_string())?;
            let key = format!("{}{file}", definition.prefix);
            return storage.open(&definition.container, &key).await.map(Source::Object);
        }
    }
    storage.open_url(url, &import_roots(state)).await.map(Source::Object)
}

pub(crate) async fn run(lease: &Lease<'_>) -> Result<String, Stop> {
    let state = lease.state;
    let definition: ImportDefinition = serde_json::from_str(&lease.job.definition)
        .map_err(|e| Stop::Failed(format!("the import's definition is unreadable: {e}")))?;
    // The fast path of a first load, in either mode: an empty store may defer its value indexes
    // until the end.
    let deferred = state.store.begin_bulk_load().await.map_err(Stop::store)?.value;
    let loaded = load(lease, &definition).await;
    // Also after a failure or a cancel: the store is searchable at its ordinary speed again.
    if deferred {
        let ended = state.store.end_bulk_load(true);
        tokio::pin!(ended);
        // Building the indexes of a large load takes a while: the lease is renewed meanwhile (the
        // store builds one index at a time, so the renewal gets its turn), or another worker would
        // take the job over.
        let mut renew = tokio::time::interval(state.jobs.lease() / 4);
        renew.tick().await;
        loop {
            tokio::select! {
                ended = &mut ended => {
                    ended.map_err(Stop::store)?;
                    break;
                }
                _ = renew.tick() => lease.renew().await?,
            }
        }
    }
    loaded
}

/// The input (in KiB) of the prepared batches waiting for the writer, at most. Inputs differ in
/// what they cost whom: a claim takes longer to prepare than to write, an observation the other
/// way round. Sixty-four MiB (a few tens of batches of typical resources) lets the preparing thread
/// run ahead through the cheap ones, so that the writer rarely waits for a batch; two batches
/// ahead, it waited for a tenth of a Synthea import, and the preparing thread as long for room.
const AHEAD_KIB: u32 = 64 * 1024;

/// How often the checkpoint is written while an input is read. Each is a durable write of its
/// own, on the store the batches are written to; a resumed job redoes at most this much, and
/// notices a cancel within it.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

async fn load(lease: &Lease<'_>, definition: &ImportDefinition) -> Result<String, Stop> {
    let state = lease.state;
    let mut progress: ImportProgress =
        lease.job.checkpoint.as_deref().and_then(|c| serde_json::from_str(c).ok()).unwrap_or_default();
    progress.imported.resize(definition.input.len(), BTreeMap::new());
    // The semaphore bounds what waits; the channel only carries it.
    let (batches, prepared) = tokio::sync::mpsc::channel(256);
    // One reader goes through all the inputs, so that the next input's first batches are prepared
    // while the last ones of this input are written.
    let room = std::sync::Arc::new(tokio::sync::Semaphore::new(AHEAD_KIB as usize));
    let reader = read_inputs(lease, definition, progress.input_index, progress.lines, room, batches);
    let writer = async {
        // Owned by this future, so that a writer that stops (a failed batch, a cancel) drops it
        // there and then: the batches waiting in the channel give their room back and the reader
        // finds the channel closed. Borrowed, it lived until both had ended, and a reader waiting
        // for room waited for ever: a cancelled import never ended and held up the jobs after it.
        let mut prepared = prepared;
        // The first batch is checkpointed at once: the status shows progress from the start.
        let mut checkpointed: Option<std::time::Instant> = None;
        // Within a quarter of the lease, too, which the checkpoint renews.
        let every = CHECKPOINT_EVERY.min(state.jobs.lease() / 4);
        while let Some(item) = prepared.recv().await {
            match item {
                Read::Batch { input, last_line, prepared: batch, room } => {
                    let refused = write(state, batch, &mut progress.imported[input]).await?;
                    drop(room);
                    if !refused.is_empty() {
                        report(state, definition, &mut progress, input, refused).await?;
                    }
                    progress.input_index = input;
                    progress.lines = last_line;
                }
                Read::End { input } => {
                    progress.input_index = input + 1;
                    progress.lines = 0;
                }
            }
            if checkpointed.is_none_or(|at| at.elapsed() >= every) {
                lease.checkpoint(&serde_json::to_string(&progress).unwrap_or_default()).await?;
                checkpointed = Some(std::time::Instant::now());
            }
        }
        Ok(())
    };
    // A writer that stops drops its receiver, which stops the reader at its next batch.
    let (read, written) = tokio::join!(reader, writer);
    written?;
    read?;
    lease.checkpoint(&serde_json::to_string(&progress).unwrap_or_default()).await?;
    Ok(serde_json::to_string(&progress).unwrap_or_default())
}

/// What the reader hands the writer, in input order.
enum Read {
    /// A prepared batch: the number of its last line, its lines ready to write or refused, and
    /// the room it takes ahead of the writer, given back once it is written.
    Batch { input: usize, last_line: u64, prepared: Vec<Prepared>, room: tokio::sync::OwnedSemaphorePermit },
    /// Every line of this input has been handed on.
    End { input: usize },
}

/// Reads the inputs from `first`, skipping the first `done` lines of that one (those a restarted
/// job had finished), and hands their lines on in prepared batches.
async fn read_inputs(
    lease: &Lease<'_>,
    definition: &ImportDefinition,
    first: usize,
    mut done: u64,
    room: std::sync::Arc<tokio::sync::Semaphore>,
    batches: tokio::sync::mpsc::Sender<Read>,
) -> Result<(), Stop> {
    for (index, input) in definition.input.iter().enumerate().skip(first) {
        let source = open(lease.state, &input.url)
            .await
            .map_err(|e| Stop::Failed(format!("input[{index}] {}: {e}", input.url)))?;
        let mut lines = Lines::new(source);
        let mut number = 0u64;
        let skip = std::mem::take(&mut done);
        while number < skip {
            if lines.next().await.map_err(Stop::Failed)?.is_none() {
                break;
            }
            number += 1;
        }
        let context = Context {
            job: lease.job.id.clone(),
            input: index,
            mode: definition.mode,
            resource_type: input.resource_type.clone(),
        };
        loop {
            let batch = read_batch(&mut lines, &mut number).await.map_err(Stop::Failed)?;
            let item = if batch.is_empty() {
                Read::End { input: index }
            } else {
                // A batch larger than all the room waits until the writer has nothing else.
                let size = batch.iter().map(|(_, line)| line.len()).sum::<usize>() / 1024;
                let Ok(room) = room.clone().acquire_many_owned((size as u32).clamp(1, AHEAD_KIB)).await else {
                    return Ok(());
                };
                let (last_line, prepared) = prepare_batch(&context, batch)
                    .await
                    .map_err(|e| Stop::Failed(format!("a batch could not be prepared: {e}")))?;
                Read::Batch { input: index, last_line, prepared, room }
            };
            let end = matches!(item, Read::End { .. });
            if batches.send(item).await.is_err() {
                // The writer stopped; it says why.
                return Ok(());
            }
            if end {
                break;
            }
        }
    }
    Ok(())
}

/// Writes the refused lines of a batch, as OperationOutcomes, to an error file of their own.
async fn report(
    state: &AppState,
    definition: &ImportDefinition,
    progress: &mut ImportProgress,
    index: usize,
    refused: Vec<(u64, String)>,
) -> Result<(), Stop> {
    progress.batches += 1;
    let key = format!("{}-errors-{}.ndjson", index + 1, progress.batches);
    let count = refused.len() as u64;
    let mut body = Vec::new();
    for (line, diagnostics) in refused {
        let outcome = json!({"resourceType": "OperationOutcome", "issue": [{
            "severity": "error", "code": "processing",
            "diagnostics": format!("Line {line}: {diagnostics}"),
        }]});
        body.extend_from_slice(outcome.to_string().as_bytes());
        body.push(b'\n');
    }
    let storage = state.bulk.as_ref().ok_or_else(|| Stop::Failed("bulk storage is not configured".into()))?;
    if progress.error_files.is_empty() {
        // The job's container, made when its first error file needs it.
        storage.prepare(&definition.container).await.map_err(Stop::Failed)?;
    }
    storage.put(&definition.container, &key, Bytes::from(body)).await.map_err(Stop::Failed)?;
    progress.error_files.push(ErrorFile { input: index, key, count });
    Ok(())
}

/// The next lines of an input, numbered from 1.
async fn read_batch(lines: &mut Lines, number: &mut u64) -> Result<Vec<(u64, Bytes)>, String> {
    let mut batch = Vec::with_capacity(BATCH);
    while batch.len() < BATCH {
        match lines.next().await? {
            Some(line) => {
                *number += 1;
                batch.push((*number, line));
            }
            None => break,
        }
    }
    Ok(batch)
}

/// What every line of an input shares.
#[derive(Clone)]
struct Context {
    job: String,
    input: usize,
    mode: Mode,
    resource_type: Option<String>,
}

/// One line, ready to write or refused.
struct Prepared {
    line: u64,
    op: Result<ImportLine, String>,
}

/// Prepares a batch on blocking threads, one per core but one (left to the store's writer, which
/// is the bottleneck of an import and must not wait for a core), its parts in order.
async fn prepare_batch(context: &Context, mut batch: Vec<(u64, Bytes)>) -> Result<(u64, Vec<Prepared>), String> {
    let last_line = batch.last().map_or(0, |(line, _)| *line);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1));
    let size = batch.len().div_ceil(threads).max(1);
    let mut parts = Vec::with_capacity(threads);
    while !batch.is_empty() {
        let rest = batch.split_off(size.min(batch.len()));
        let lines = std::mem::replace(&mut batch, rest);
        let context = context.clone();
        parts.push(tokio::task::spawn_blocking(move || {
            lines
                .into_iter()
                .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
                .map(|(line, bytes)| Prepared { line, op: prepare(&context, line, &bytes) })
                .collect::<Vec<_>>()
        }));
    }
    let mut prepared = Vec::new();
    for part in parts {
        prepared.extend(part.await.map_err(|e| e.to_string())?);
    }
    Ok((last_line, prepared))
}

/// Parses, validates and indexes one line, as a write of it would.
fn prepare(context: &Context, line: u64, bytes: &[u8]) -> Result<ImportLine, String> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON: {e}"))?;
    let resource_type = value.get("resourceType").and_then(Value::as_str).ok_or("the resource has no resourceType")?;
    if !fhir::definitions().is_resource_type(resource_type) {
        return Err(format!("'{resource_type}' is not a resource type"));
    }
    if context.resource_type.as_deref().is_some_and(|t| t != resource_type) {
        return Err(format!(
            "a {resource_type} in an input of type {}",
            context.resource_type.as_deref().unwrap_or("")
        ));
    }
    let resource_type = resource_type.to_owned();
    let issues = fhir::validate::validate_resource(&value);
    if fhir::validate::has_errors(&issues) {
        let text: Vec<String> = issues
            .iter()
            .filter(|i| matches!(i.severity, fhir::validate::Severity::Error | fhir::validate::Severity::Fatal))
            .map(|i| format!("{} ({})", i.diagnostics, i.expression))
            .collect();
        return Err(text.join("; "));
    }
    let Value::Object(mut resource) = value else { return Err("the line is not a JSON object".into()) };
    let id = match resource.get("id").and_then(Value::as_str) {
        Some(id) if fhir::is_valid_id(id) => id.to_owned(),
        Some(id) => return Err(format!("'{id}' is not a valid id")),
        // Made of the job, the input and the line: the same again when a resumed job redoes it.
        None => format!("{}-{}-{line}", context.job, context.input + 1),
    };
    let keep = match context.mode {
        Mode::InitialLoad => None,
        Mode::IncrementalLoad => {
            let meta = resource.get("meta");
            let version = match meta.and_then(|m| m.get("versionId")).and_then(Value::as_str) {
                None => None,
                Some(text) => Some(
                    text.parse::<u64>()
                        .ok()
                        .filter(|v| *v > 0)
                        .ok_or(format!("meta.versionId '{text}' is not a version number"))?,
                ),
            };
            let last_updated = match meta.and_then(|m| m.get("lastUpdated")).and_then(Value::as_str) {
                None => None,
                Some(text) => Some(
                    crate::interaction::search::search_date(text)
                        .map(|(low, _)| low)
                        .ok_or(format!("meta.lastUpdated '{text}' is not an instant"))?,
                ),
            };
            Some(ImportedMeta { version, last_updated })
        }
    };
    let soft_deleted = take_soft_deleted(&mut resource);
    let index = indexing::extract(&resource_type, &mut resource);
    Ok(ImportLine { resource_type, id, resource: Unstamped::new(resource), index, keep, soft_deleted })
}

/// Whether the resource carries Azure's soft-deleted mark (what `includeAssociatedData=_deleted`
/// exports); the mark is removed, as it describes the resource's state, not its content.
fn take_soft_deleted(resource: &mut serde_json::Map<String, Value>) -> bool {
    let Some(meta) = resource.get_mut("meta").and_then(Value::as_object_mut) else { return false };
    let Some(extensions) = meta.get_mut("extension").and_then(Value::as_array_mut) else { return false };
    let before = extensions.len();
    extensions
        .retain(|e| !(e["url"] == crate::interaction::export::SOFT_DELETED && e["valueString"] == "soft-deleted"));
    let marked = extensions.len() < before;
    if extensions.is_empty() {
        meta.remove("extension");
    }
    if meta.is_empty() {
        resource.remove("meta");
    }
    marked
}

/// Writes a batch in one transaction; returns the refused lines with why. Counts what was
/// imported (or found already imported) by type.
async fn write(
    state: &AppState,
    batch: Vec<Prepared>,
    imported: &mut BTreeMap<String, u64>,
) -> Result<Vec<(u64, String)>, Stop> {
    let mut refused = Vec::new();
    let (mut lines, mut numbers) = (Vec::with_capacity(batch.len()), Vec::with_capacity(batch.len()));
    for prepared in batch {
        match prepared.op {
            Ok(line) => {
                lines.push(line);
                numbers.push(prepared.line);
            }
            Err(reason) => refused.push((prepared.line, reason)),
        }
    }
    let results = state.store.import_batch(lines).await.map_err(|error| {
        let (_, outcome) = FhirError::from(error).status_and_outcome();
        Stop::Failed(format!("a batch could not be written: {}", outcome["issue"][0]["diagnostics"]))
    })?;
    for (line, result) in numbers.into_iter().zip(results.value) {
        match result {
            Ok(WriteResult::Created(v) | WriteResult::Updated(v) | WriteResult::Unchanged(v)) => {
                *imported.entry(v.resource_type).or_default() += 1
            }
            Ok(other) => return Err(Stop::Failed(format!("an import produced {other:?}"))),
            Err(error) => refused.push((line, error.to_string())),
        }
    }
    refused.sort_by_key(|(line, _)| *line);
    Ok(refused)
}

//! The export job: for each type, the versions current at the transaction time
//! ([`fhirside_store::SnapshotQuery`]), filtered by level and `_typeFilter`, written as NDJSON files
//! of at most the configured size.
//!
//! The stored JSON is written as it is (one line per resource; the store keeps it on one line);
//! only `_elements` parses it. A file is written whole, then the checkpoint records it and where
//! the walk stands, so a job resumed after a crash starts at the first file not yet recorded and
//! writes it again under the same name: nothing is lost or counted twice.

use bytes::Bytes;
use fhirside_store::{Clause, SnapshotQuery};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{ExportDefinition, Level};
use crate::error::FhirError;
use crate::interaction::search;
use crate::jobs::{Lease, Stop};
use crate::negotiate::Handling;
use crate::params::Params;
use crate::AppState;

/// Versions read per store call.
const PAGE: u32 = 1000;

/// Where a job stands: what it has written, and where the walk resumes.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(crate) struct ExportProgress {
    /// Index into the definition's types.
    pub type_index: usize,
    /// The `(last_updated, rid)` after which the current type resumes.
    pub after: Option<(i64, i64)>,
    /// The current type's next file number.
    pub part: u32,
    pub exported: u64,
    pub output: Vec<OutputFile>,
}

impl ExportProgress {
    pub fn current_type<'a>(&self, definition: &'a ExportDefinition) -> Option<&'a str> {
        definition.types.get(self.type_index).map(String::as_str)
    }
}

/// One file written.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct OutputFile {
    #[serde(rename = "type")]
    pub resource_type: String,
    pub key: String,
    pub count: u64,
}

/// A completed job's result: its files.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct ExportResult {
    pub output: Vec<OutputFile>,
    pub errors: Vec<OutputFile>,
}

pub(crate) async fn run(lease: &Lease<'_>) -> Result<String, Stop> {
    let outcome = export(lease).await;
    if let Err(Stop::Lost) = &outcome {
        // Cancelled while a file was being written: that file outlived the cancellation's
        // clean-up, so clean up again. (A lease taken over by another worker is left alone.)
        let state = lease.state;
        let gone = match state.store.jobs().job(&lease.job.id).await {
            Ok(job) => job.is_none_or(|j| j.status == fhirside_store::JobStatus::Cancelled),
            Err(_) => false,
        };
        if let (true, Ok(definition)) = (gone, serde_json::from_str::<ExportDefinition>(&lease.job.definition)) {
            remove_files(state, &definition).await;
        }
    }
    outcome
}

async fn export(lease: &Lease<'_>) -> Result<String, Stop> {
    let state = lease.state;
    let definition: ExportDefinition = serde_json::from_str(&lease.job.definition)
        .map_err(|e| Stop::Failed(format!("the export's definition is unreadable: {e}")))?;
    let storage = state.bulk.as_ref().ok_or_else(|| Stop::Failed("bulk storage is not configured".into()))?;
    let mut progress: ExportProgress =
        lease.job.checkpoint.as_deref().and_then(|c| serde_json::from_str(c).ok()).unwrap_or_default();
    let patients = patients(state, &definition).await.map_err(failed)?;
    storage.prepare(&definition.container).await.map_err(Stop::Failed)?;
    let as_of = definition.until.map_or(definition.transaction_time, |until| until.min(definition.transaction_time));
    let file_limit = state.config.export.file_bytes;
    let mut renewed = std::time::Instant::now();
    while let Some(resource_type) = definition.types.get(progress.type_index).cloned() {
        let filter = filter(&definition, &resource_type, patients.as_deref()).map_err(failed)?;
        let mut buffer: Vec<u8> = Vec::new();
        let mut count = 0u64;
        let mut at = progress.after;
        loop {
            let query = SnapshotQuery {
                resource_type: resource_type.clone(),
                as_of,
                since: definition.since,
                after: at,
                filter: filter.clone(),
                history: definition.history,
                deleted: definition.deleted,
                limit: PAGE,
            };
            let page = state.store.snapshot(&query).await.map_err(Stop::store)?.value;
            let full = page.len() == PAGE as usize;
            for (rid, version) in page {
                at = Some((version.last_updated, rid));
                let marked;
                let body = if version.deleted {
                    marked = soft_deleted(&version.body);
                    &marked[..]
                } else {
                    &version.body[..]
                };
                match &definition.elements {
                    Some(elements) => buffer.extend_from_slice(&subset(body, &resource_type, elements)),
                    None => buffer.extend_from_slice(body),
                }
                buffer.push(b'\n');
                count += 1;
                if buffer.len() >= file_limit {
                    flush(lease, storage, &definition, &resource_type, &mut progress, &mut buffer, &mut count, at)
                        .await?;
                    renewed = std::time::Instant::now();
                }
            }
            if !full {
                break;
            }
            // Keep the lease while a file fills; the checkpoint itself moves only with files.
            if renewed.elapsed() > state.jobs.lease() / 4 {
                lease.renew().await?;
                renewed = std::time::Instant::now();
            }
        }
        if count > 0 {
            flush(lease, storage, &definition, &resource_type, &mut progress, &mut buffer, &mut count, at).await?;
        }
        progress.type_index += 1;
        progress.after = None;
        progress.part = 0;
        lease.checkpoint(&serde_json::to_string(&progress).unwrap_or_default()).await?;
        renewed = std::time::Instant::now();
    }
    let result = ExportResult { output: progress.output, errors: Vec::new() };
    Ok(serde_json::to_string(&result).unwrap_or_default())
}

/// A request-time error met by the job (a group that no longer exists, a filter the parameters in
/// force no longer accept), as the job's failure.
fn failed(error: FhirError) -> Stop {
    let (_, outcome) = error.status_and_outcome();
    Stop::Failed(outcome["issue"][0]["diagnostics"].as_str().unwrap_or("the export failed").to_owned())
}

/// Writes the buffered lines as the type's next file and records it in the checkpoint.
#[allow(clippy::too_many_arguments)]
async fn flush(
    lease: &Lease<'_>,
    storage: &crate::bulk::BulkStorage,
    definition: &ExportDefinition,
    resource_type: &str,
    progress: &mut ExportProgress,
    buffer: &mut Vec<u8>,
    count: &mut u64,
    at: Option<(i64, i64)>,
) -> Result<(), Stop> {
    let key = format!("{}{resource_type}-{}.ndjson", definition.prefix, progress.part + 1);
    let body = Bytes::from(std::mem::take(buffer));
    storage.put(&definition.container, &key, body).await.map_err(Stop::Failed)?;
    progress.output.push(OutputFile { resource_type: resource_type.to_owned(), key, count: *count });
    progress.exported += *count;
    progress.part += 1;
    progress.after = at;
    *count = 0;
    lease.checkpoint(&serde_json::to_string(progress).unwrap_or_default()).await
}

/// The member patients of a group export, the named ones of a patient export, or `None` for all.
async fn patients(state: &AppState, definition: &ExportDefinition) -> Result<Option<Vec<String>>, FhirError> {
    match &definition.level {
        Level::System => Ok(None),
        Level::Patient { patients } => Ok(patients.clone()),
        Level::Group { id } => {
            let group = state.store.read("Group", id).await?.value.filter(|v| !v.deleted);
            let Some(group) = group else {
                return Err(FhirError::bad_request(format!("Group/{id} no longer exists.")));
            };
            let group: Value = serde_json::from_slice(&group.body).unwrap_or(Value::Null);
            let members = group["member"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| m["entity"]["reference"].as_str())
                .filter_map(|r| r.strip_prefix("Patient/").map(str::to_owned))
                .collect();
            Ok(Some(members))
        }
    }
}

/// The conditions a resource of `resource_type` must meet: in the patients' compartments (for a
/// patient or group export), and matching one of its `_typeFilter` queries.
fn filter(
    definition: &ExportDefinition,
    resource_type: &str,
    patients: Option<&[String]>,
) -> Result<Vec<Clause>, FhirError> {
    let mut clauses = Vec::new();
    if !matches!(definition.level, Level::System) {
        let ids = patients.map(<[String]>::to_vec);
        let members = Clause::Compartments { compartment: "Patient".into(), ids: ids.clone() };
        clauses.push(match (resource_type, ids) {
            ("Patient", Some(ids)) => Clause::Any(vec![Clause::Id(ids), members]),
            // Every patient is in a patient-level export of all patients.
            ("Patient", None) => Clause::Types(vec!["Patient".into()]),
            _ => members,
        });
    }
    if let Some(queries) = definition.type_filters.get(resource_type) {
        let mut alternatives = Vec::new();
        for query in queries {
            let (parsed, _) = search::parse(resource_type, &Params::parse(Some(query)), Handling::Strict)?;
            alternatives.push(Clause::All(parsed.clauses));
        }
        clauses.push(Clause::Any(alternatives));
    }
    Ok(clauses)
}

/// A resource with only the `_elements` asked for (and those every resource keeps), tagged
/// SUBSETTED as search does.
fn subset(body: &[u8], resource_type: &str, elements: &[String]) -> Bytes {
    let keep = |element: &str| {
        matches!(element, "resourceType" | "id" | "meta")
            || elements.iter().any(|e| match e.split_once('.') {
                Some((t, name)) => t == resource_type && name == element,
                None => e == element,
            })
    };
    crate::bundle::subsetted_body(body, &keep).unwrap_or_else(|| Bytes::copy_from_slice(body))
}

/// A deleted resource's last version as Azure's service exports it: with the soft-deleted mark in
/// `meta.extension`, which an import reads back ([`super::SOFT_DELETED`]).
fn soft_deleted(body: &[u8]) -> Vec<u8> {
    let Ok(Value::Object(mut resource)) = serde_json::from_slice::<Value>(body) else { return body.to_vec() };
    let meta = resource.entry("meta").or_insert_with(|| json!({}));
    if let Some(meta) = meta.as_object_mut() {
        let extension = meta.entry("extension").or_insert_with(|| json!([]));
        if let Some(extension) = extension.as_array_mut() {
            extension.push(json!({"url": super::SOFT_DELETED, "valueString": "soft-deleted"}));
        }
    }
    serde_json::to_vec(&Value::Object(resource)).unwrap_or_else(|_| body.to_vec())
}

/// Removes the files of an export job, whatever its state (an expired one).
pub(crate) async fn discard_files(state: &AppState, job: &fhirside_store::JobRecord) {
    if let Ok(definition) = serde_json::from_str::<ExportDefinition>(&job.definition) {
        remove_files(state, &definition).await;
    }
}

/// Removes an export's files (a cancelled or expired job).
pub(crate) async fn remove_files(state: &AppState, definition: &ExportDefinition) {
    if let Some(storage) = &state.bulk {
        if let Err(error) = storage.delete_prefix(&definition.container, &definition.prefix).await {
            eprintln!("export: cannot remove the files of a cancelled export: {error}");
        }
    }
}

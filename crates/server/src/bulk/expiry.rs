//! Finished bulk jobs expire: after the configured retention (`--bulk-retention-hours`, a day by
//! default) an export's files and status, and an import's error files and status, are removed,
//! and the status URL answers `404`, as the Bulk Data IG lets a server do. A job is removed when
//! a request finds it expired, and the job worker sweeps the rest now and then.

use std::time::{SystemTime, UNIX_EPOCH};

use fhirside_store::JobRecord;

use crate::interaction::{export, import};
use crate::AppState;

/// Whether `job` ended longer ago than the retention.
pub(crate) fn expired(state: &AppState, job: &JobRecord) -> bool {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let retention = state.config.export.retention.as_millis() as i64;
    job.status.is_final() && now - job.updated > retention
}

/// Removes a finished job and what it left in the bulk storage.
pub(crate) async fn discard(state: &AppState, job: &JobRecord) {
    match job.kind.as_str() {
        export::EXPORT => export::job::discard_files(state, job).await,
        import::IMPORT => import::status::discard_files(state, job).await,
        _ => {}
    }
    if let Err(error) = state.store.jobs().remove(&job.id).await {
        eprintln!("bulk: cannot remove the expired {} job {}: {error}", job.kind, job.id);
    }
}

/// Removes every expired export and import (a batch at a time).
pub(crate) async fn sweep(state: &AppState) {
    for kind in [export::EXPORT, import::IMPORT] {
        match state.store.jobs().ended_before(kind, state.config.export.retention, 100).await {
            Ok(jobs) => {
                for job in jobs {
                    discard(state, &job).await;
                }
            }
            Err(error) => eprintln!("bulk: cannot list expired {kind} jobs: {error}"),
        }
    }
}

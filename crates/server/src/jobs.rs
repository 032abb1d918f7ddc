//! The job worker every server process runs: it leases background jobs from the store's job table
//! ([`fhirside_store::JobQueue`]), runs them, and keeps their leases alive with checkpoints.
//!
//! With several replicas on one database, whichever polls first runs a job; if its process dies,
//! the lease runs out and another replica resumes the job from its last checkpoint. Each poll also
//! lets the replica follow search parameters announced by another one
//! ([`crate::search_params::follow`]).

use std::sync::Mutex;
use std::time::Duration;

use fhirside_store::{JobEnd, JobRecord, StoreError};
use tokio::sync::Notify;

use crate::AppState;

/// The kinds of job this build runs; a replica never leases a kind it does not know.
const KINDS: &[&str] =
    &[crate::search_params::REINDEX, crate::interaction::export::EXPORT, crate::interaction::import::IMPORT];

/// How often a worker removes expired bulk jobs.
const SWEEP_EVERY: Duration = Duration::from_secs(600);

/// This process's worker: its identity in the job table and its timing.
pub struct Worker {
    /// Who holds a lease: unique per process, so that a restarted process is another owner.
    owner: String,
    lease: Duration,
    poll: Duration,
    wake: Notify,
    /// The last search-parameter announcement this process acted on.
    followed: Mutex<Option<String>>,
}

impl Worker {
    pub fn new(lease: Duration) -> Worker {
        Worker {
            owner: format!("{}:{}", std::process::id(), crate::ids::new_id()),
            lease,
            // Often enough that a lost lease is noticed and a queued job starts within a fraction
            // of the lease; a fresh job on this replica starts at once (`wake`).
            poll: (lease / 4).clamp(Duration::from_millis(100), Duration::from_secs(1)),
            wake: Notify::new(),
            followed: Mutex::new(None),
        }
    }

    /// How long a lease lasts without renewal.
    pub(crate) fn lease(&self) -> Duration {
        self.lease
    }

    /// How long a worker waits between polls.
    pub(crate) fn poll(&self) -> Duration {
        self.poll
    }

    /// Asks the worker to poll now (a job was just queued here).
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// Records `announced` as followed; true if it differs from the last one (reload parameters).
    pub(crate) fn followed(&self, announced: Option<&str>) -> bool {
        let mut followed = self.followed.lock().unwrap_or_else(|e| e.into_inner());
        let changed = followed.as_deref() != announced;
        *followed = announced.map(str::to_owned);
        changed
    }
}

/// Why a job stopped without finishing.
pub(crate) enum Stop {
    /// The lease is no longer this worker's (cancelled, or taken over after it expired).
    Lost,
    /// The job failed; the message is recorded.
    Failed(String),
}

impl Stop {
    pub(crate) fn store(error: StoreError) -> Stop {
        Stop::Failed(error.to_string())
    }
}

/// A job this worker holds.
pub(crate) struct Lease<'a> {
    pub state: &'a AppState,
    pub job: JobRecord,
}

impl Lease<'_> {
    /// Records progress and extends the lease; `Stop::Lost` when the job is no longer ours.
    pub(crate) async fn checkpoint(&self, checkpoint: &str) -> Result<(), Stop> {
        let worker = &self.state.jobs;
        match self.state.store.jobs().renew(&self.job.id, &worker.owner, worker.lease, Some(checkpoint)).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(Stop::Lost),
            Err(error) => Err(Stop::store(error)),
        }
    }
}

impl Lease<'_> {
    /// Extends the lease without moving the checkpoint; `Stop::Lost` when the job is no longer ours.
    pub(crate) async fn renew(&self) -> Result<(), Stop> {
        let worker = &self.state.jobs;
        match self.state.store.jobs().renew(&self.job.id, &worker.owner, worker.lease, None).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(Stop::Lost),
            Err(error) => Err(Stop::store(error)),
        }
    }
}

/// Starts the worker loop; it runs until the process ends.
pub fn spawn(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut swept = std::time::Instant::now();
        loop {
            // Expired bulk jobs, now and then (their status URLs also expire them when asked).
            if swept.elapsed() >= SWEEP_EVERY {
                crate::bulk::expiry::sweep(&state).await;
                swept = std::time::Instant::now();
            }
            if let Err(error) = crate::search_params::follow(&state).await {
                eprintln!("jobs: cannot read the announced search parameters: {error}");
            }
            let worker = &state.jobs;
            match state.store.jobs().lease(KINDS, &worker.owner, worker.lease).await {
                Ok(Some(job)) => run(&state, job).await,
                Ok(None) => {
                    let _ = tokio::time::timeout(worker.poll, worker.wake.notified()).await;
                }
                Err(error) => {
                    eprintln!("jobs: cannot lease from the job table: {error}");
                    tokio::time::sleep(worker.poll).await;
                }
            }
        }
    })
}

async fn run(state: &AppState, job: JobRecord) {
    let (id, kind) = (job.id.clone(), job.kind.clone());
    let lease = Lease { state, job };
    let outcome = match kind.as_str() {
        crate::search_params::REINDEX => crate::search_params::run_job(&lease).await,
        crate::interaction::export::EXPORT => crate::interaction::export::job::run(&lease).await,
        crate::interaction::import::IMPORT => crate::interaction::import::job::run(&lease).await,
        other => Err(Stop::Failed(format!("this server does not run '{other}' jobs"))),
    };
    let owner = &state.jobs.owner;
    let ended = match &outcome {
        Ok(result) => state.store.jobs().finish(&id, owner, JobEnd::Completed { result }).await,
        Err(Stop::Failed(error)) => state.store.jobs().finish(&id, owner, JobEnd::Failed { error }).await,
        Err(Stop::Lost) => return,
    };
    if let Err(error) = ended {
        // The lease runs out and the job is resumed from its checkpoint, here or elsewhere.
        eprintln!("jobs: cannot record the end of {kind} job {id}: {error}");
    }
}

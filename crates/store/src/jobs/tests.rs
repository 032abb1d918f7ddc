//! The job-table protocol, the same for every backend: each backend's tests call [`protocol`].

use std::time::Duration;

use crate::jobs::{JobEnd, JobQueue, JobStatus, NewJob, MAX_ATTEMPTS};

fn new_job(id: &str, kind: &str, singleton: bool) -> NewJob {
    NewJob { id: id.into(), kind: kind.into(), definition: format!("{{\"job\":\"{id}\"}}"), singleton }
}

const LONG: Duration = Duration::from_secs(60);
const SHORT: Duration = Duration::from_millis(1);

/// Queues, leases, renews, takes over, fences, finishes and cancels jobs.
pub(crate) async fn protocol(jobs: &dyn JobQueue) {
    // Singletons: a second one of the kind returns the first while it is active.
    let first = jobs.enqueue(&new_job("a", "reindex", true)).await.unwrap();
    assert_eq!((first.id.as_str(), first.status, first.attempts), ("a", JobStatus::Queued, 0));
    let again = jobs.enqueue(&new_job("b", "reindex", true)).await.unwrap();
    assert_eq!(again.id, "a", "an active singleton is returned instead of a second job");
    assert!(jobs.job("b").await.unwrap().is_none());
    jobs.enqueue(&new_job("c", "export", false)).await.unwrap();
    jobs.enqueue(&new_job("d", "export", false)).await.unwrap();

    // Leases go oldest first, only to the kinds asked for, and never twice.
    assert!(jobs.lease(&["import"], "w1", LONG).await.unwrap().is_none());
    let leased = jobs.lease(&["reindex", "export"], "w1", LONG).await.unwrap().unwrap();
    assert_eq!((leased.id.as_str(), leased.status, leased.attempts), ("a", JobStatus::Running, 1));
    let second = jobs.lease(&["reindex", "export"], "w2", LONG).await.unwrap().unwrap();
    assert_eq!(second.id, "c");

    // The owner renews and checkpoints; anyone else is refused.
    assert!(jobs.renew("a", "w1", LONG, Some("{\"after\":10}")).await.unwrap());
    assert!(!jobs.renew("a", "w2", LONG, None).await.unwrap());
    assert!(jobs.renew("a", "w1", LONG, None).await.unwrap(), "renewing without a checkpoint keeps it");
    assert_eq!(jobs.job("a").await.unwrap().unwrap().checkpoint.as_deref(), Some("{\"after\":10}"));

    // An expired lease is taken over with its checkpoint; the old owner is fenced off.
    assert!(jobs.renew("a", "w1", SHORT, None).await.unwrap());
    tokio::time::sleep(Duration::from_millis(20)).await;
    let taken = jobs.lease(&["reindex"], "w3", LONG).await.unwrap().unwrap();
    assert_eq!((taken.id.as_str(), taken.attempts), ("a", 2));
    assert_eq!(taken.checkpoint.as_deref(), Some("{\"after\":10}"));
    assert!(!jobs.renew("a", "w1", LONG, Some("{\"after\":99}")).await.unwrap());
    assert!(!jobs.finish("a", "w1", JobEnd::Completed { result: "{}" }).await.unwrap());
    assert!(jobs.finish("a", "w3", JobEnd::Completed { result: "{\"count\":7}" }).await.unwrap());
    let done = jobs.job("a").await.unwrap().unwrap();
    assert_eq!((done.status, done.result.as_deref()), (JobStatus::Completed, Some("{\"count\":7}")));
    assert!(jobs.lease(&["reindex"], "w3", LONG).await.unwrap().is_none(), "a completed job is not leased");

    // With the first singleton ended, a new one can start.
    assert_eq!(jobs.enqueue(&new_job("e", "reindex", true)).await.unwrap().id, "e");

    // Cancelling stops the worker at its next renewal; an ended job stays as it ended.
    let cancelled = jobs.cancel("c").await.unwrap().unwrap();
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    assert!(!jobs.renew("c", "w2", LONG, None).await.unwrap());
    assert_eq!(jobs.cancel("a").await.unwrap().unwrap().status, JobStatus::Completed);
    assert!(jobs.cancel("nope").await.unwrap().is_none());

    // A job that keeps losing its worker is given up after MAX_ATTEMPTS leases.
    for attempt in 1..=MAX_ATTEMPTS {
        let job = jobs.lease(&["export"], "crashy", SHORT).await.unwrap().unwrap();
        assert_eq!((job.id.as_str(), job.attempts), ("d", attempt));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(jobs.lease(&["export"], "crashy", LONG).await.unwrap().is_none());
    let failed = jobs.job("d").await.unwrap().unwrap();
    assert_eq!(failed.status, JobStatus::Failed);
    assert!(failed.error.unwrap().contains("given up"));

    // A failure is recorded as the owner reports it.
    let e = jobs.lease(&["reindex"], "w4", LONG).await.unwrap().unwrap();
    assert!(jobs.finish(&e.id, "w4", JobEnd::Failed { error: "disk full" }).await.unwrap());
    let e = jobs.job("e").await.unwrap().unwrap();
    assert_eq!((e.status, e.error.as_deref()), (JobStatus::Failed, Some("disk full")));
    assert!(e.updated >= e.created);
}

//! The delivery worker every server process runs: it leases due deliveries from the relay's queue
//! table, makes one attempt each (up to `concurrency` at once), and records what follows: done,
//! rejected, retried after a backoff, or dead-lettered once the round's attempts are spent.
//!
//! At least once: a delivery is marked only after its attempt; a process killed in between leaves
//! it pending (its lease is freed when the server starts again, [`crate::RelayStore::release_leases`],
//! or runs out for another replica to take), and the rewritten Bundle makes the second send
//! harmless. With replicas on PostgreSQL, each worker leases from the shared table; a lease is an
//! atomic conditional update, so no delivery is sent by two workers at once.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::backoff::{delay, random_unit};
use crate::deliver::{self, Outcome};
use crate::store::queue::{Attempt, Next, Work};
use crate::{now_ms, Relay, RelayConfig};

/// How often the queue is polled when nothing wakes the worker.
const POLL: Duration = Duration::from_millis(250);

/// The record and the next state after an attempt that was the round's `attempt`-th.
pub fn decide(config: &RelayConfig, attempt: u32, outcome: &Outcome, now: i64, unit: f64) -> (Attempt, Next) {
    match outcome {
        Outcome::Delivered { status } => {
            (Attempt { succeeded: true, http_status: Some(*status), error: None, outcome: None }, Next::Succeeded)
        }
        Outcome::Rejected { status, error, outcome } => (
            Attempt {
                succeeded: false,
                http_status: Some(*status),
                error: Some(format!("rejected by the destination: {error}")),
                outcome: outcome.clone(),
            },
            Next::Failed,
        ),
        Outcome::Retry { status, error, retry_after } => {
            let next = if attempt >= config.max_attempts {
                Next::Dead
            } else {
                let wait = delay(attempt, config.retry_base, config.retry_max, unit, *retry_after);
                Next::Retry { at: now + wait.as_millis() as i64 }
            };
            (Attempt { succeeded: false, http_status: *status, error: Some(error.clone()), outcome: None }, next)
        }
    }
}

/// Runs the worker until the task is aborted. `owner` names it in the leases it takes; the caller
/// has freed that owner's leases left from a previous run ([`crate::RelayStore::release_leases`]).
pub fn spawn(relay: Arc<Relay>, owner: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(relay, owner))
}

async fn blocking<T: Send + 'static>(
    relay: &Arc<Relay>,
    f: impl FnOnce(&Relay) -> crate::Result<T> + Send + 'static,
) -> crate::Result<T> {
    let relay = relay.clone();
    tokio::task::spawn_blocking(move || f(&relay))
        .await
        .unwrap_or_else(|e| Err(crate::RelayError::Database(e.to_string())))
}

async fn run(relay: Arc<Relay>, owner: String) {
    let running: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let free = relay.config.concurrency.saturating_sub(tasks.len());
        if free > 0 {
            let now = now_ms();
            match blocking(&relay, move |r| r.store.due(now, 64)).await {
                Ok(due) => {
                    let mut started = 0;
                    for due in due {
                        if started == free {
                            break;
                        }
                        if running.lock().unwrap_or_else(|e| e.into_inner()).contains(&due.delivery_id)
                            || !relay.breakers.admit(&due.destination_id)
                        {
                            continue;
                        }
                        let (id, who) = (due.delivery_id.clone(), owner.clone());
                        let until = now_ms() + relay.config.lease.as_millis() as i64;
                        let work = blocking(&relay, move |r| r.store.lease(&id, &who, now_ms(), until)).await;
                        match work {
                            Ok(Some(work)) => {
                                running.lock().unwrap_or_else(|e| e.into_inner()).insert(work.delivery_id.clone());
                                tasks.spawn(attempt(relay.clone(), owner.clone(), work, running.clone()));
                                started += 1;
                            }
                            Ok(None) => relay.breakers.abandon(&due.destination_id),
                            Err(e) => {
                                relay.breakers.abandon(&due.destination_id);
                                eprintln!("fhirside: relay: cannot lease a delivery: {e}");
                            }
                        }
                    }
                }
                Err(e) => eprintln!("fhirside: relay: cannot read the queue: {e}"),
            }
        }
        tokio::select! {
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = relay.wake.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

async fn attempt(relay: Arc<Relay>, owner: String, work: Work, running: Arc<Mutex<HashSet<String>>>) {
    let outcome = deliver::send(&relay, &work).await;
    let destination = &work.destination.id;
    match &outcome {
        Outcome::Delivered { .. } | Outcome::Rejected { .. } => relay.breakers.success(destination),
        Outcome::Retry { .. } => relay.breakers.failure(destination),
    }
    let round = u32::try_from(work.round_attempts).unwrap_or(u32::MAX).saturating_add(1);
    let (record, next) = decide(&relay.config, round, &outcome, now_ms(), random_unit());
    let id = work.delivery_id.clone();
    if let Err(e) = blocking(&relay, move |r| r.store.finish(&id, &owner, &record, next, now_ms())).await {
        // The lease runs out and the delivery is tried again: at least once.
        eprintln!("fhirside: relay: cannot record an attempt of delivery {}: {e}", work.delivery_id);
    }
    running.lock().unwrap_or_else(|e| e.into_inner()).remove(&work.delivery_id);
    // Something may now be due behind it (the same patient's next message).
    relay.wake();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_and_the_last_attempt_dead_letters() {
        let config = RelayConfig {
            max_attempts: 3,
            retry_base: Duration::from_secs(10),
            retry_max: Duration::from_secs(60),
            ..RelayConfig::default()
        };
        let retry = Outcome::Retry { status: Some(503), error: "HTTP 503".into(), retry_after: None };
        assert_eq!(decide(&config, 1, &retry, 1000, 0.0).1, Next::Retry { at: 6000 });
        assert_eq!(decide(&config, 2, &retry, 1000, 0.0).1, Next::Retry { at: 11000 });
        let (record, next) = decide(&config, 3, &retry, 1000, 0.0);
        assert_eq!(next, Next::Dead);
        assert_eq!(record.http_status, Some(503));
        let rejected = Outcome::Rejected { status: 422, error: "HTTP 422: bad".into(), outcome: None };
        let (record, next) = decide(&config, 1, &rejected, 0, 0.0);
        assert_eq!(next, Next::Failed, "a rejection is final on the first attempt");
        assert!(record.error.unwrap().contains("rejected"));
        let throttled =
            Outcome::Retry { status: Some(429), error: "".into(), retry_after: Some(Duration::from_secs(40)) };
        assert_eq!(decide(&config, 1, &throttled, 0, 0.0).1, Next::Retry { at: 40_000 });
    }
}

//! The delivery queue: one row per message and destination (`relay_deliveries`), leased by a
//! worker for the time of one attempt, with its attempts beside it (`relay_attempts`).
//!
//! A delivery is due when it is `pending`, its `next_at` has come, no live lease holds it, and no
//! earlier pending delivery of the same patient waits for the same destination (Redox's FIFO per
//! feed, narrowed to a patient so that one patient's failing message does not hold up others).
//! Its states: `pending` (queued or retrying), `succeeded`, `failed` (the destination rejected the
//! message: final), `dead` (attempts exhausted; replay puts it back).

use fhirside_sql::params;
use serde_json::{json, Value};

use super::sql::{blinded, opened, sealed, Db};
use super::{credential_in, destination_in, environment_in, not_found, parse_json, shown_status, RelayStore};
use crate::model::{Credential, Destination};
use crate::{iso, new_id, RelayError, Result};

/// A delivery that may be leased now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub delivery_id: String,
    pub destination_id: String,
}

/// What a worker needs for one attempt.
#[derive(Debug, Clone)]
pub struct Work {
    pub delivery_id: String,
    pub message_id: String,
    pub body: Value,
    pub destination: Destination,
    pub credential: Option<Credential>,
    /// Attempts already made in this round (since creation or the last replay).
    pub round_attempts: i64,
}

/// How an attempt ended, for its record.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub succeeded: bool,
    pub http_status: Option<u16>,
    pub error: Option<String>,
    /// The destination's `OperationOutcome` (or other body) when it rejected the message.
    pub outcome: Option<Value>,
}

/// What becomes of the delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Succeeded,
    /// Rejected by the destination: final.
    Failed,
    Retry {
        at: i64,
    },
    /// Attempts exhausted: dead-lettered until replayed.
    Dead,
}

impl RelayStore {
    /// Stores a message and one pending delivery per verified, complete destination of the
    /// environment, in one transaction; returns the message id.
    pub fn accept_message(
        &self,
        environment_id: &str,
        source_id: &str,
        body: &Value,
        patient_key: Option<&str>,
        now: i64,
    ) -> Result<String> {
        self.write(|db| {
            environment_in(db, environment_id)?;
            let targets = db.query(
                "SELECT id FROM relay_destinations WHERE environment_id = ?1 AND setup_state IS NULL AND verified = 1 \
                 ORDER BY created_at",
                &params![environment_id],
            )?;
            if targets.is_empty() {
                return Err(RelayError::Conflict(format!(
                    "The environment '{environment_id}' has no verified destination to deliver to; verify one first \
                     (POST /relay/v1/destinations/{{id}}/verify)."
                )));
            }
            let id = new_id();
            let body = sealed(db, &format!("relay_messages/{id}/body"), body.to_string());
            let patient_key = patient_key.map(|key| blinded(db, "relay-patient-key", key));
            db.execute(
                "INSERT INTO relay_messages (id, environment_id, source_id, body, patient_key, received_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                &params![&id, environment_id, source_id, body, patient_key.as_deref(), now],
            )?;
            for target in &targets {
                db.execute(
                    "INSERT INTO relay_deliveries (id, message_id, destination_id, patient_key, state, attempts, \
                     round_attempts, next_at, updated_at) VALUES (?1, ?2, ?3, ?4, 'pending', 0, 0, ?5, ?5)",
                    &params![new_id(), &id, target.text(0)?, patient_key.as_deref(), now],
                )?;
            }
            Ok(id)
        })
    }

    /// A message with its deliveries and their attempts, as Redox's logs show them.
    pub fn message(&self, id: &str) -> Result<Value> {
        self.read(|db| message_view(db, id))
    }

    /// The newest messages of an environment with a delivery in one of `states` (`pending`,
    /// `succeeded`, `failed` (rejected), `dead`; none: any), up to `limit`, as [`Self::message`]
    /// shows them.
    pub fn messages(&self, environment_id: &str, states: &[&str], limit: i64) -> Result<Vec<Value>> {
        self.read(|db| {
            environment_in(db, environment_id)?;
            let mut params = vec![fhirside_sql::Value::from(environment_id), fhirside_sql::Value::from(limit)];
            let filter = if states.is_empty() {
                String::new()
            } else {
                let slots: Vec<String> = (0..states.len()).map(|i| format!("?{}", i + 3)).collect();
                params.extend(states.iter().map(|s| fhirside_sql::Value::from(*s)));
                format!(
                    " AND EXISTS (SELECT 1 FROM relay_deliveries d WHERE d.message_id = m.id AND d.state IN ({}))",
                    slots.join(", ")
                )
            };
            let query = format!(
                "SELECT m.id FROM relay_messages m WHERE m.environment_id = ?1{filter} \
                 ORDER BY m.received_at DESC, m.id LIMIT ?2"
            );
            let rows = db.query(&query, &params)?;
            rows.iter().map(|r| message_view(db, &r.text(0)?)).collect()
        })
    }

    /// Puts a message's failed and dead-lettered deliveries back in the queue for a new round.
    pub fn replay(&self, message_id: &str, now: i64) -> Result<u64> {
        self.write(|db| {
            message_view(db, message_id)?;
            Ok(db.execute(
                "UPDATE relay_deliveries SET state = 'pending', round_attempts = 0, next_at = ?2, lease_owner = NULL, \
                 lease_until = NULL, updated_at = ?2 WHERE message_id = ?1 AND state IN ('failed', 'dead')",
                &params![message_id, now],
            )?)
        })
    }

    /// Up to `limit` due deliveries, oldest first.
    pub fn due(&self, now: i64, limit: i64) -> Result<Vec<Due>> {
        self.read(|db| {
            db.query(
                "SELECT d.id, d.destination_id FROM relay_deliveries d \
                 WHERE d.state = 'pending' AND d.next_at <= ?1 AND (d.lease_until IS NULL OR d.lease_until < ?1) \
                 AND (d.patient_key IS NULL OR NOT EXISTS (SELECT 1 FROM relay_deliveries e \
                      WHERE e.destination_id = d.destination_id AND e.patient_key = d.patient_key \
                      AND e.state = 'pending' AND e.seq < d.seq)) \
                 ORDER BY d.seq LIMIT ?2",
                &params![now, limit],
            )?
            .iter()
            .map(|r| Ok(Due { delivery_id: r.text(0)?, destination_id: r.text(1)? }))
            .collect()
        })
    }

    /// Takes the lease of a due delivery until `until`; `None` when another worker has it.
    pub fn lease(&self, delivery_id: &str, owner: &str, now: i64, until: i64) -> Result<Option<Work>> {
        self.write(|db| {
            let taken = db.execute(
                "UPDATE relay_deliveries SET lease_owner = ?2, lease_until = ?3 WHERE id = ?1 AND state = 'pending' \
                 AND (lease_until IS NULL OR lease_until < ?4)",
                &params![delivery_id, owner, until, now],
            )?;
            if taken == 0 {
                return Ok(None);
            }
            let row = db
                .query_opt(
                    "SELECT d.message_id, m.body, d.destination_id, d.round_attempts FROM relay_deliveries d \
                     JOIN relay_messages m ON m.id = d.message_id WHERE d.id = ?1",
                    &params![delivery_id],
                )?
                .ok_or_else(|| not_found("delivery", delivery_id))?;
            let destination = destination_in(db, &row.text(2)?)?;
            let credential = match &destination.auth_credential {
                Some(id) => Some(credential_in(db, id)?),
                None => None,
            };
            let message_id = row.text(0)?;
            let body = opened(db, &format!("relay_messages/{message_id}/body"), row.text(1)?)?;
            Ok(Some(Work {
                delivery_id: delivery_id.to_owned(),
                message_id,
                body: parse_json(&body)?,
                destination,
                credential,
                round_attempts: row.int(3)?,
            }))
        })
    }

    /// Records an attempt and what follows it, if `owner` still holds the lease.
    pub fn finish(&self, delivery_id: &str, owner: &str, attempt: &Attempt, next: Next, now: i64) -> Result<()> {
        self.write(|db| {
            let (state, next_at) = match next {
                Next::Succeeded => ("succeeded", now),
                Next::Failed => ("failed", now),
                Next::Retry { at } => ("pending", at),
                Next::Dead => ("dead", now),
            };
            let changed = db.execute(
                "UPDATE relay_deliveries SET state = ?3, attempts = attempts + 1, round_attempts = round_attempts + 1, \
                 next_at = ?4, lease_owner = NULL, lease_until = NULL, error = ?5, outcome = ?6, updated_at = ?7 \
                 WHERE id = ?1 AND lease_owner = ?2",
                &params![
                    delivery_id,
                    owner,
                    state,
                    next_at,
                    attempt.error.as_deref(),
                    attempt
                        .outcome
                        .as_ref()
                        .map(|outcome| sealed(db, &format!("relay_deliveries/{delivery_id}/outcome"), outcome.to_string())),
                    now
                ],
            )?;
            if changed == 0 {
                // The lease ran out and another worker took the delivery; its record wins.
                return Ok(());
            }
            let n = db
                .query_opt("SELECT attempts FROM relay_deliveries WHERE id = ?1", &params![delivery_id])?
                .ok_or_else(|| not_found("delivery", delivery_id))?
                .int(0)?;
            db.execute(
                "INSERT INTO relay_attempts (delivery_id, n, at, status, http_status, error) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                &params![
                    delivery_id,
                    n,
                    now,
                    if attempt.succeeded { "succeeded" } else { "failed" },
                    attempt.http_status.map(i64::from),
                    attempt.error.as_deref()
                ],
            )?;
            Ok(())
        })
    }

    /// Frees the leases `owner` holds: at start, so that what this worker was sending when its
    /// process was killed is sent again at once rather than after the lease. A worker's name is
    /// stable per data directory, whose lock makes it unique among live processes.
    pub fn release_leases(&self, owner: &str) -> Result<u64> {
        self.write(|db| {
            Ok(db.execute(
                "UPDATE relay_deliveries SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = ?1",
                &params![owner],
            )?)
        })
    }
}

fn message_view(db: &mut dyn Db, id: &str) -> Result<Value> {
    let message = db
        .query_opt("SELECT id, environment_id, source_id, received_at FROM relay_messages WHERE id = ?1", &params![id])?
        .ok_or_else(|| not_found("message", id))?;
    let rows = db.query(
        "SELECT d.id, d.destination_id, t.name, d.state, d.attempts, d.next_at, d.error, d.outcome, d.updated_at \
         FROM relay_deliveries d LEFT JOIN relay_destinations t ON t.id = d.destination_id \
         WHERE d.message_id = ?1 ORDER BY d.seq",
        &params![id],
    )?;
    let mut logs = Vec::new();
    let mut states = Vec::new();
    for row in &rows {
        let delivery_id = row.text(0)?;
        let state = row.text(3)?;
        let history: Vec<Value> = db
            .query(
                "SELECT n, at, status, http_status, error FROM relay_attempts WHERE delivery_id = ?1 ORDER BY n",
                &params![&delivery_id],
            )?
            .iter()
            .map(|a| {
                Ok(json!({
                    "id": a.int(0)?,
                    "attemptAt": iso(a.int(1)?),
                    "status": a.text(2)?,
                    "httpStatus": a.opt_int(3)?,
                    "error": a.opt_text(4)?,
                }))
            })
            .collect::<Result<_>>()?;
        let mut log = json!({
            "id": delivery_id,
            "destination": { "id": row.text(1)?, "name": row.opt_text(2)? },
            "status": shown_status(&state),
            "deadLetter": state == "dead",
            "attempts": { "total": row.int(4)?, "latest": history.last().cloned() },
            "history": history,
            "error": row.opt_text(6)?,
            "outcome": row
                .opt_text(7)?
                .map(|stored| opened(db, &format!("relay_deliveries/{delivery_id}/outcome"), stored))
                .transpose()?
                .as_deref()
                .map(parse_json)
                .transpose()?,
            "updatedAt": iso(row.int(8)?),
        });
        if state == "pending" {
            log["nextAttemptAt"] = json!(iso(row.int(5)?));
        }
        states.push(shown_status(&state));
        logs.push(log);
    }
    let status = if states.contains(&"pending") {
        "pending"
    } else if states.iter().all(|s| *s == "succeeded") {
        "succeeded"
    } else {
        "failed"
    };
    let environment_id = message.text(1)?;
    Ok(json!({
        "id": message.text(0)?,
        "environmentId": environment_id,
        "source": { "id": message.text(2)? },
        "receivedAt": iso(message.int(3)?),
        "status": status,
        "logs": logs,
    }))
}

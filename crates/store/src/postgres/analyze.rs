//! Keeps the planner's statistics in step with what the store writes.
//!
//! Search queries are planned from table statistics. A table that has never been analysed looks
//! empty to the planner, which then probes a value index once per resource instead of collecting
//! the matches once: a count over Synthea's Observations took minutes instead of milliseconds.
//! PostgreSQL's autovacuum analyses tables eventually, but it may be off, and its default
//! threshold (10 % of a table changed, checked once a minute) lags behind a bulk load that grows
//! a table many times over in that minute. So the store analyses its own tables: after every few
//! thousand rows it wrote, and every half minute, it `ANALYZE`s the tables of its schema whose
//! changes since their last analysis exceed 500 rows plus 10 % of their size. Half-minute rounds
//! with no load under way also `VACUUM` tables that grew or churned by a fifth, which lets index-only
//! scans skip the table; during a bulk load vacuuming would cost more than it saves. A session advisory
//! lock lets one replica at a time do it; the others skip that round.
//!
//! On Citus the counters are the coordinator's: its distributed tables hold no rows and never look
//! stale, so only its plain tables (jobs, settings) are analysed here; the shards' statistics are
//! the workers' autovacuum's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use super::pool::Pool;
use crate::model::StoreError;

/// Rows written by this process that trigger a check before the next periodic one.
const WRITES_PER_CHECK: u64 = 5_000;
const PERIOD: Duration = Duration::from_secs(30);

pub(super) struct Analyzer {
    written: AtomicU64,
    wake: Notify,
}

impl Analyzer {
    /// Starts the background task; it ends when the store's pool is dropped.
    pub(super) fn spawn(pool: &Arc<Pool>) -> Arc<Analyzer> {
        let analyzer = Arc::new(Analyzer { written: AtomicU64::new(0), wake: Notify::new() });
        let (pool, this) = (Arc::downgrade(pool), analyzer.clone());
        tokio::spawn(async move {
            // A store opened on existing data analyses what was never analysed, at once.
            let mut quiet = true;
            loop {
                let Some(pool) = Weak::upgrade(&pool) else { break };
                if let Err(error) = analyze_stale(&pool, quiet).await {
                    eprintln!("postgres: cannot refresh table statistics: {error}");
                }
                drop(pool);
                // Vacuuming reads whole tables: it waits for a round that no burst of writes woke.
                let before = this.written.load(Ordering::Relaxed);
                let woken = tokio::time::timeout(PERIOD, this.wake.notified()).await.is_ok();
                quiet = !woken && this.written.load(Ordering::Relaxed) - before < WRITES_PER_CHECK;
            }
        });
        analyzer
    }

    /// Counts rows a committed transaction wrote.
    pub(super) fn wrote(&self, rows: u64) {
        let before = self.written.fetch_add(rows, Ordering::Relaxed);
        if before / WRITES_PER_CHECK != (before + rows) / WRITES_PER_CHECK {
            self.wake.notify_one();
        }
    }
}

/// Analyses the tables whose statistics are stale; when `quiet` (no load under way), also vacuums
/// those that grew or churned by a fifth since their last vacuum.
async fn analyze_stale(pool: &Arc<Pool>, quiet: bool) -> Result<(), StoreError> {
    let mut conn = pool.get().await?;
    let locked = "SELECT pg_try_advisory_lock(hashtextextended('fhirside-analyze:' || current_schema(), 0))";
    if !conn.query_one(locked, &[]).await?.get::<_, bool>(0) {
        return Ok(());
    }
    let result = async {
        let stale = conn
            .query(
                "SELECT relname::text, n_mod_since_analyze > 500 + n_live_tup / 10,
                        n_ins_since_vacuum + n_dead_tup > 500 + n_live_tup / 5
                 FROM pg_stat_user_tables WHERE schemaname = current_schema() ORDER BY relname",
                &[],
            )
            .await?;
        for row in stale {
            let (table, analyze, vacuum): (String, bool, bool) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            // The names come from the catalogue of our own schema; quoting keeps them names.
            let table = table.replace('"', "\"\"");
            if quiet && vacuum {
                // Marks pages all-visible, so that searches read rids from covering indexes alone.
                conn.batch(&format!("VACUUM (ANALYZE) \"{table}\"")).await?;
            } else if analyze {
                conn.batch(&format!("ANALYZE \"{table}\"")).await?;
            }
        }
        Ok(())
    }
    .await;
    let unlock = "SELECT pg_advisory_unlock(hashtextextended('fhirside-analyze:' || current_schema(), 0))";
    if conn.query_one(unlock, &[]).await.is_err() {
        // A session lock that could not be released must not stay with a pooled connection.
        conn.poisoned = true;
    }
    result
}

//! Keeps the planner's statistics in step with what the store writes.
//!
//! Search queries are planned from table statistics. A table that has never been analysed looks
//! empty to the planner, which then probes a value index once per resource instead of collecting
//! the matches once: a count over Synthea's Observations took minutes instead of milliseconds.
//! PostgreSQL's autovacuum analyses tables eventually, but it may be off, and its default
//! threshold (10 % of a table changed, checked once a minute) lags behind a bulk load that grows
//! a table many times over in that minute. So the store analyses its own tables: after every few
//! thousand rows it wrote, and every half minute, it `VACUUM (ANALYZE)`s the tables of its schema whose
//! changes since their last analysis exceed 500 rows plus 10 % of their size. A session advisory
//! lock lets one replica at a time do it; the others skip that round.

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
            loop {
                let Some(pool) = Weak::upgrade(&pool) else { break };
                if let Err(error) = analyze_stale(&pool).await {
                    eprintln!("postgres: cannot refresh table statistics: {error}");
                }
                drop(pool);
                let _ = tokio::time::timeout(PERIOD, this.wake.notified()).await;
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

async fn analyze_stale(pool: &Arc<Pool>) -> Result<(), StoreError> {
    let mut conn = pool.get().await?;
    let locked = "SELECT pg_try_advisory_lock(hashtextextended('fhirside-analyze:' || current_schema(), 0))";
    if !conn.query_one(locked, &[]).await?.get::<_, bool>(0) {
        return Ok(());
    }
    let result = async {
        let stale = conn
            .query(
                "SELECT relname::text FROM pg_stat_user_tables
                 WHERE schemaname = current_schema() AND n_mod_since_analyze > 500 + n_live_tup / 10
                 ORDER BY relname",
                &[],
            )
            .await?;
        for row in stale {
            let table: String = row.try_get(0)?;
            // The names come from the catalogue of our own schema; quoting keeps them names.
            // VACUUM too: it marks pages all-visible, which lets searches read rids from the
            // covering index alone instead of visiting every row's page.
            conn.batch(&format!("VACUUM (ANALYZE) \"{}\"", table.replace('"', "\"\""))).await?;
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

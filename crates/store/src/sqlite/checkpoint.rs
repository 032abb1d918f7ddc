//! WAL checkpoints on their own thread.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses the threshold, on the writer
//! thread, where it stalls every request waiting on that group. This thread copies committed pages
//! back into the database every half second with a PASSIVE checkpoint, which never blocks the
//! writer or readers, so that the writer's own (rarer, see `SqliteStore::open`) checkpoint finds
//! little left to do. On shutdown it truncates the WAL.

use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

use crate::StoreError;

const INTERVAL: Duration = Duration::from_millis(500);

pub(super) struct Checkpointer {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

pub(super) fn spawn(path: &Path) -> Result<Checkpointer, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let (stop, stopped) = mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("store-checkpoint".into())
        .spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(INTERVAL) {
                // A busy or failed checkpoint is retried at the next tick; nothing is lost meanwhile.
                let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
            }
            let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        })
        .map_err(|e| StoreError::Backend(e.to_string()))?;
    Ok(Checkpointer { stop, thread })
}

impl Checkpointer {
    /// Runs a final checkpoint and waits for the thread.
    pub(super) fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

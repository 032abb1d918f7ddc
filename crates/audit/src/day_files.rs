//! [`DayFiles`]: the day file the chain continues in, opened, rotated, written and cut back.

use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;

use time::Date;

use crate::{chain, files, AuditError};

/// The open day file and what the writer knows of it. It sits in the writer's state; with
/// `Interval` syncing the writer thread borrows it to move the journal's lines, so that appends,
/// which only copy into the journal, never wait for a `write(2)` (see `log.rs`).
pub(crate) struct DayFiles {
    pub(crate) dir: PathBuf,
    pub(crate) retention_days: u32,
    pub(crate) stdout: bool,
    /// The day of the file the chain continues in (the newest file).
    pub(crate) day: Option<Date>,
    /// That file, open for appending; `None` before the first append and after a failure. Shared
    /// with the periodic sync, which syncs it outside the lock.
    pub(crate) file: Option<Arc<File>>,
    /// Its length up to the last complete batch, once known.
    pub(crate) len: Option<u64>,
    /// Lines written since the last `fdatasync` (`Interval`).
    pub(crate) dirty: bool,
    /// A periodic `fdatasync` failed: the next write syncs (and fails if it cannot).
    pub(crate) force_sync: bool,
    /// The lines the journal's entries become, reused from one move to the next.
    chained: Vec<u8>,
    /// Tests: the next write writes half its bytes, then fails.
    #[cfg(test)]
    pub(crate) short_write: bool,
}

impl DayFiles {
    pub(crate) fn new(dir: PathBuf, retention_days: u32, stdout: bool, day: Option<Date>) -> DayFiles {
        DayFiles {
            dir,
            retention_days,
            stdout,
            day,
            file: None,
            len: None,
            dirty: false,
            force_sync: false,
            chained: Vec::new(),
            #[cfg(test)]
            short_write: false,
        }
    }

    /// Makes `day`'s file the open one: syncs the file it replaces, and applies the retention when
    /// the day changes.
    pub(crate) fn open_file(&mut self, day: Date) -> Result<(), AuditError> {
        let rotating = self.day.is_some_and(|current| current != day);
        if let Some(file) = &self.file {
            if self.dirty || self.force_sync {
                file.sync_data()?;
                self.dirty = false;
                self.force_sync = false;
            }
        }
        self.file = None;
        let path = self.dir.join(files::file_name(day));
        let file = files::open_append(&path)?;
        let actual = file.metadata()?.len();
        let len = match self.len {
            // Reopening after a failure: cut off what a failed write may have left.
            Some(len) if !rotating && actual > len => {
                file.set_len(len)?;
                len
            }
            _ => actual,
        };
        if len == 0 {
            // A new file: its directory entry must survive a crash too.
            files::sync_dir(&self.dir)?;
        }
        self.len = Some(len);
        self.file = Some(Arc::new(file));
        self.day = Some(day);
        if rotating {
            files::apply_retention(&self.dir, day, self.retention_days, Some(day));
        }
        Ok(())
    }

    /// Writes a batch of formatted lines to the open file (`Always`, and batches too large for
    /// the journal), syncing it if `always` or a periodic sync failed. A failed write is cut off
    /// the file, which is reopened for the next batch.
    pub(crate) fn write_batch(&mut self, lines: &[u8], always: bool) -> Result<(), AuditError> {
        let sync_now = always || self.force_sync;
        let result = match self.file.as_deref() {
            None => Err(io::Error::other("the audit file is not open")),
            #[cfg(test)]
            Some(mut file) if std::mem::take(&mut self.short_write) => {
                file.write_all(&lines[..lines.len() / 2]).and(Err(io::Error::other("injected short write")))
            }
            Some(mut file) => file.write_all(lines).and_then(|()| if sync_now { file.sync_data() } else { Ok(()) }),
        };
        match result {
            Ok(()) => {
                self.len = self.len.map(|len| len + lines.len() as u64);
                if sync_now {
                    self.force_sync = false;
                } else {
                    self.dirty = true;
                }
                if self.stdout {
                    let _ = io::stdout().lock().write_all(lines);
                }
                Ok(())
            }
            Err(e) => {
                // Cut the file back to its last complete batch; if even that fails, reopening will.
                if let (Some(file), Some(len)) = (&self.file, self.len) {
                    let _ = file.set_len(len);
                }
                self.file = None;
                Err(AuditError::Io(e))
            }
        }
    }

    /// Chains the journal's pending entries after `end` and writes them as lines; returns the
    /// position up to which they are in the day files (with the error that stopped it). `end`
    /// follows what was written.
    pub(crate) fn write_journal(
        &mut self,
        pending: &[(u64, &[u8])],
        written: u64,
        end: &mut chain::End,
    ) -> Result<u64, (u64, AuditError)> {
        let mut done = pending.first().map_or(written, |(position, _)| *position);
        let mut chained = std::mem::take(&mut self.chained);
        let mut outcome = Ok(written);
        'pieces: for &(position, piece) in pending {
            // The zeros a wrapped entry skipped end the first piece.
            let piece = &piece[..piece.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1)];
            let mut start = 0;
            while start < piece.len() {
                // The run of entries from `start` that go to one file.
                let day = line_day(&piece[start..]);
                let target = self.day.map_or(day, |current| current.max(day));
                let target_text = files::day_text(target);
                // Later entries of an earlier day follow the run into its file; a later day
                // starts a new run. Nearly every entry is of the target day, told by its bytes.
                let mut run_end = end.clone();
                chained.clear();
                let mut at = start;
                while at < piece.len() {
                    let rest = &piece[at..];
                    if at > start && !is_of_day(rest, &target_text) && line_day(rest) > target {
                        break;
                    }
                    let len = memchr::memchr(b'\n', rest).unwrap_or(rest.len());
                    let entry = &rest[..len];
                    run_end.hash = chain::append_entry(&mut chained, entry, &run_end.hash);
                    chained.push(b'\n');
                    let sequence = chain::entry_sequence(entry);
                    debug_assert_eq!(sequence, Some(run_end.sequence + 1), "entries are in chain order");
                    run_end.sequence = sequence.unwrap_or(run_end.sequence + 1);
                    at += len + 1;
                }
                if let Err(e) = self.write_lines_to(target, &chained) {
                    outcome = Err((done, e));
                    break 'pieces;
                }
                *end = run_end;
                start = at.min(piece.len());
                done = position + start as u64;
            }
            done = position + piece.len() as u64;
        }
        self.chained = chained;
        outcome
    }

    /// Writes formatted lines to the file of `day` (opening or rotating to it first).
    pub(crate) fn write_lines_to(&mut self, day: Date, lines: &[u8]) -> Result<(), AuditError> {
        if self.file.is_none() || self.day != Some(day) {
            self.open_file(day)?;
        }
        self.write_batch(lines, false)
    }
}

/// Whether a stored line's `TimeGenerated` is in the server's own form (UTC, `Z`) on the day
/// whose `YYYY-MM-DD` is `day`: a comparison of bytes, without parsing.
fn is_of_day(line: &[u8], day: &[u8; 10]) -> bool {
    const PREFIX: &[u8] = br#"{"TimeGenerated":""#;
    line.strip_prefix(PREFIX)
        .and_then(|rest| rest.get(..28))
        .is_some_and(|time| time.starts_with(day) && time[10] == b'T' && time[26] == b'Z' && time[27] == b'"')
}

/// The UTC day of a stored line's `TimeGenerated` (its first member, checked at append). A line it
/// cannot read goes to the current file (day 0, never later).
pub(crate) fn line_day(line: &[u8]) -> Date {
    const PREFIX: &[u8] = br#"{"TimeGenerated":""#;
    let Some(rest) = line.strip_prefix(PREFIX) else { return Date::MIN };
    let text = rest.iter().position(|&b| b == b'"').and_then(|end| std::str::from_utf8(&rest[..end]).ok());
    match text {
        // The server's own form, in UTC: the day is its first ten characters.
        Some(text) if text.ends_with('Z') => text.get(..10).and_then(files::parse_day).unwrap_or(Date::MIN),
        Some(text) => crate::parse_time(text).map_or(Date::MIN, |t| t.to_offset(time::UtcOffset::UTC).date()),
        None => Date::MIN,
    }
}

//! [`FileLog`]: appending records to the daily files, chained in the order they are written.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use time::Date;
use tokio::sync::oneshot;

use crate::journal::{self, Journal};
use crate::{chain, files, AuditConfig, AuditError, AuditRecord, SyncPolicy};

/// The most lines one `write(2)` carries.
const MAX_BATCH: usize = 1024;

/// `Interval`: how long the writer thread waits after the first append asks it to move lines to
/// the day files, gathering the lines of the requests answered meanwhile into one write. At one
/// millisecond, its wake-ups and the writes' share of the mutex cost reads about a tenth of
/// their throughput; at ten, readers in other processes wait that much longer for a record.
const FLUSH_DELAY: Duration = Duration::from_millis(10);

/// `Interval`: how soon a failed move of the journal's lines is tried again.
const FLUSH_RETRY: Duration = Duration::from_millis(100);

/// The audit trail being written to files (behind [`crate::AuditLog`]).
///
/// [`append`](FileLog::append) serializes the record on the caller's task; the writer state (behind
/// one mutex) assigns the sequence and hashes in the order it writes, so the file order is the chain
/// order. How the line reaches the file depends on the [`SyncPolicy`]:
///
/// - `Interval`: the caller chains its lines under the mutex and copies them into the journal
///   ([`crate::journal`], a memory-mapped file): no system call on the request's thread. The
///   writer thread moves the journal's lines to the day files ten milliseconds after the first
///   append asks, in one `write(2)` for all the requests answered meanwhile, and `fdatasync`s
///   every interval while lines are unsynced. A `write(2)` per request under the mutex cost
///   about a third of a read's throughput (the call, and the other worker waiting on the lock
///   meanwhile); batches handed to a writer thread, or a leader/follower group write, cost more
///   in thread wake-ups than they saved.
/// - `Always`: the line goes to the writer thread, which takes every line queued while it was busy
///   as one batch: one `write(2)` and one `fdatasync` for all of them (group commit), off the
///   request threads.
///
/// When a write fails, the writer cuts the file back to its last complete batch, answers every
/// append of the batch with the error, and reopens the file for the next batch: appends fail while
/// the file system refuses, and succeed again once it accepts, the chain intact.
pub(crate) struct FileLog {
    writer: Arc<Mutex<Writer>>,
    sync: SyncPolicy,
    /// To the background thread: appends (`Always`) and the close request.
    sender: Sender<Message>,
    thread: Mutex<Option<JoinHandle<()>>>,
    recovered_torn_tail: Option<PathBuf>,
    /// Records moved from the journal to the day files at open (a crash left them there).
    recovered: usize,
}

/// Where the writer thread answers an append.
type Reply = oneshot::Sender<Result<Link, AuditError>>;

enum Message {
    Append {
        day: Date,
        head: Vec<u8>,
        reply: Reply,
    },
    /// `Interval`: the journal has lines for the day files.
    Flush,
    Close {
        done: mpsc::SyncSender<()>,
    },
}

/// The chain members the writer assigned to a record.
pub(crate) struct Link {
    pub(crate) sequence: u64,
    pub(crate) previous_hash: String,
    pub(crate) hash: String,
}

impl FileLog {
    /// Opens the audit directory (creating it, mode 0700), takes its lock, applies the retention,
    /// and finds the chain's last record (the last line of the newest file) to continue it. A torn
    /// final line (a write cut short by a crash) is moved to the day's `.torn` side file first.
    pub(crate) fn open(config: AuditConfig) -> Result<FileLog, AuditError> {
        let dir = config.dir.clone();
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
        let lock = lock(&dir)?;

        // The chain's end: the last complete line of the newest file that has one.
        let listed = files::list(&dir)?;
        let newest = listed.last().map(|(day, _)| *day);
        let mut recovered_torn_tail = None;
        let mut last: Option<AuditRecord> = None;
        for (i, (day, path)) in listed.iter().enumerate().rev() {
            let file = std::fs::OpenOptions::new().read(true).write(i + 1 == listed.len()).open(path)?;
            let tail = files::read_tail(&file)?;
            if tail.len > tail.complete_len && i + 1 == listed.len() {
                recovered_torn_tail = Some(files::move_torn_tail(&dir, *day, &file, &tail)?);
            }
            if let Some(line) = tail.line {
                let record = serde_json::from_slice::<AuditRecord>(&line).map_err(|e| {
                    AuditError::Corrupt(format!(
                        "the last record of {} cannot be read ({e}); see `fhirside audit verify`",
                        path.display()
                    ))
                })?;
                last = Some(record);
                break;
            }
        }

        let today = time::OffsetDateTime::now_utc().date();
        files::apply_retention(&dir, today, config.retention_days, newest);

        let (sequence, hash) = last.map_or((0, String::new()), |r| (r.sequence, r.hash));
        let (sender, receiver) = mpsc::channel();
        let mut writer = Writer {
            dir: dir.clone(),
            retention_days: config.retention_days,
            stdout: config.stdout,
            sync: config.sync,
            sequence,
            hash: hash.clone(),
            next_sequence: sequence,
            next_hash: hash,
            day: newest,
            file: None,
            len: None,
            dirty: false,
            force_sync: false,
            closed: false,
            buf: Vec::with_capacity(64 * 1024),
            pending: Vec::new(),
            journal: None,
            flush_requested: false,
            signal: sender.clone(),
            _lock: lock,
            #[cfg(test)]
            short_write: false,
        };
        // Lines a crash left in the journal go to the day files first; `Always` then writes
        // without it.
        let recovered = writer.recover(journal::held(&dir, journal::SIZE)?)?;
        match config.sync {
            SyncPolicy::Interval(_) => writer.journal = Some(Journal::open(&dir, journal::SIZE)?),
            SyncPolicy::Always => match std::fs::remove_file(dir.join(journal::FILE_NAME)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            },
        }
        let writer = Arc::new(Mutex::new(writer));
        let background = writer.clone();
        let sync = config.sync;
        let handle = std::thread::Builder::new().name("audit-writer".into()).spawn(move || match sync {
            SyncPolicy::Always => group_commit(&background, &receiver),
            SyncPolicy::Interval(interval) => periodic_sync(&background, &receiver, interval),
        })?;
        Ok(FileLog { writer, sync, sender, thread: Mutex::new(Some(handle)), recovered_torn_tail, recovered })
    }

    /// Chains and writes a record; returns it as stored (with `sequence`, `previous_hash`, `hash`).
    /// An error means the line is not in the trail (disk full, permissions, closed log, or a
    /// `TimeGenerated` that is not RFC 3339): the caller fails the request.
    pub(crate) async fn append(&self, record: AuditRecord) -> Result<AuditRecord, AuditError> {
        let (day, head, record) = prepare(record)?;
        let link = match self.sync {
            SyncPolicy::Interval(_) => {
                self.write_lines(vec![(day, head)]).map(|mut links| links.pop().expect("one line written"))
            }
            SyncPolicy::Always => {
                let (reply, answer) = oneshot::channel();
                self.sender.send(Message::Append { day, head, reply }).map_err(|_| closed())?;
                answer.await.map_err(|_| closed())?
            }
        }?;
        Ok(linked(record, link))
    }

    /// Chains and writes several records one after the other, adjacent in the trail; with
    /// `Interval` syncing in one write. For the `Started` and outcome records of a request that
    /// changes nothing (a read), written together once it is answered: half the writes.
    /// An error means not all of them are in the trail.
    pub(crate) async fn append_all(&self, records: Vec<AuditRecord>) -> Result<Vec<AuditRecord>, AuditError> {
        let prepared = records.into_iter().map(prepare).collect::<Result<Vec<_>, _>>()?;
        match self.sync {
            SyncPolicy::Interval(_) => {
                let mut records = Vec::with_capacity(prepared.len());
                let mut lines = Vec::with_capacity(prepared.len());
                for (day, head, record) in prepared {
                    lines.push((day, head));
                    records.push(record);
                }
                let links = self.write_lines(lines)?;
                Ok(records.into_iter().zip(links).map(|(record, link)| linked(record, link)).collect())
            }
            SyncPolicy::Always => {
                // Queued back to back, so the writer thread takes them into one batch.
                let mut answers = Vec::with_capacity(prepared.len());
                let mut records = Vec::with_capacity(prepared.len());
                for (day, head, record) in prepared {
                    let (reply, answer) = oneshot::channel();
                    self.sender.send(Message::Append { day, head, reply }).map_err(|_| closed())?;
                    answers.push(answer);
                    records.push(record);
                }
                let mut stored = Vec::with_capacity(records.len());
                for (record, answer) in records.into_iter().zip(answers) {
                    stored.push(linked(record, answer.await.map_err(|_| closed())??));
                }
                Ok(stored)
            }
        }
    }

    /// `Interval`: writes `lines` adjacent in the trail, on the caller's thread.
    fn write_lines(&self, lines: Vec<(Date, Vec<u8>)>) -> Result<Vec<Link>, AuditError> {
        self.write_now(lines.iter().map(|(day, head)| (*day, head.as_slice())))
    }

    /// Writes lines in one `write(2)` (two if the day's file changes among them).
    fn write_now<'a>(&self, lines: impl Iterator<Item = (Date, &'a [u8])> + Clone) -> Result<Vec<Link>, AuditError> {
        let mut writer = lock_writer(&self.writer);
        if writer.closed {
            return Err(closed());
        }
        writer.append_many(lines)
    }

    /// Writes what is queued, syncs and stops the writer; later appends fail. Blocks until done.
    pub(crate) fn close(&self) {
        let (done, wait) = mpsc::sync_channel(1);
        if self.sender.send(Message::Close { done }).is_ok() {
            let _ = wait.recv();
        }
        let handle = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
        // Whatever the thread did (or if it died), nothing is written after this.
        let mut writer = lock_writer(&self.writer);
        if !writer.closed {
            writer.finish();
        }
    }

    /// The side file that received a torn final line found at open (after a crash), if any: worth a
    /// warning in the server's log.
    pub(crate) fn recovered_torn_tail(&self) -> Option<&Path> {
        self.recovered_torn_tail.as_deref()
    }

    /// How many records the open moved from the journal to the day files (a crash left them
    /// there): worth a line in the server's log.
    pub(crate) fn recovered(&self) -> usize {
        self.recovered
    }

    /// `Interval`: moves what the journal holds to the day files now (before reading them back).
    pub(crate) fn flush_pending(&self) -> Result<(), AuditError> {
        let mut writer = lock_writer(&self.writer);
        if writer.closed {
            return Ok(());
        }
        writer.flush_journal()
    }

    /// Tests: the next batch writes half its bytes, then fails.
    #[cfg(test)]
    pub(crate) fn inject_short_write(&self) {
        lock_writer(&self.writer).short_write = true;
    }

    /// Tests: lines were written since the last `fdatasync`.
    #[cfg(test)]
    pub(crate) fn unsynced(&self) -> bool {
        lock_writer(&self.writer).dirty
    }
}

impl Drop for FileLog {
    fn drop(&mut self) {
        self.close();
    }
}

/// The record's day and its line without the chain members (which the writer appends), and the
/// record with those members cleared.
pub(crate) fn prepare(mut record: AuditRecord) -> Result<(Date, Vec<u8>, AuditRecord), AuditError> {
    let day = crate::day_of_time(&record.time_generated).ok_or_else(|| {
        AuditError::invalid(format!("TimeGenerated '{}' is not an RFC 3339 date-time", record.time_generated))
    })?;
    record.sequence = 0;
    record.previous_hash.clear();
    record.hash.clear();
    // The fixed part of a line is about 330 bytes; the chain members are added to a copy.
    let variable = [&record.correlation_id, &record.request_uri, &record.location, &record.operation_name]
        .iter()
        .map(|s| s.len())
        .sum::<usize>();
    let mut head = Vec::with_capacity(384 + variable);
    crate::line::write_head(&mut head, &record);
    Ok((day, head, record))
}

pub(crate) fn linked(mut record: AuditRecord, link: Link) -> AuditRecord {
    record.sequence = link.sequence;
    record.previous_hash = link.previous_hash;
    record.hash = link.hash;
    record
}

fn closed() -> AuditError {
    AuditError::Io(io::Error::new(io::ErrorKind::BrokenPipe, "the audit log is closed"))
}

fn lock_writer(writer: &Mutex<Writer>) -> MutexGuard<'_, Writer> {
    // A panic under the lock leaves the chain state consistent (it changes only after a write).
    writer.lock().unwrap_or_else(|e| e.into_inner())
}

/// `Always`: the writer thread takes every append queued while it was busy as one batch.
fn group_commit(writer: &Mutex<Writer>, receiver: &Receiver<Message>) {
    let mut batch = Vec::new();
    while let Ok(first) = receiver.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(message) => batch.push(message),
                Err(_) => break,
            }
        }
        let mut writer = lock_writer(writer);
        let close = writer.process(&mut batch);
        if let Some(done) = close {
            writer.finish();
            let _ = done.send(());
            return;
        }
    }
    lock_writer(writer).finish();
}

/// `Interval`: the background thread moves the journal's lines to the day files soon after
/// appends ask ([`FLUSH_DELAY`] later, so that one write carries the lines of many requests), and
/// `fdatasync`s the day file at most every interval while it has unsynced lines, outside the lock.
fn periodic_sync(writer: &Mutex<Writer>, receiver: &Receiver<Message>, interval: Duration) {
    let mut last_sync = std::time::Instant::now();
    let mut failing = false;
    loop {
        // After a failed write, try again soon: the lines wait in the journal meanwhile.
        let wait = if failing { FLUSH_RETRY.min(interval) } else { interval };
        match receiver.recv_timeout(wait) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(Message::Flush) => std::thread::sleep(FLUSH_DELAY),
            Ok(Message::Append { reply, .. }) => {
                let _ = reply.send(Err(closed())); // not sent in this mode
                continue;
            }
            Ok(Message::Close { done }) => {
                lock_writer(writer).finish();
                let _ = done.send(());
                return;
            }
            Err(RecvTimeoutError::Disconnected) => {
                lock_writer(writer).finish();
                return;
            }
        }
        let file = {
            let mut writer = lock_writer(writer);
            if writer.closed {
                return;
            }
            writer.flush_requested = false;
            failing = writer.flush_journal().is_err();
            if !writer.dirty || last_sync.elapsed() < interval {
                continue;
            }
            last_sync = std::time::Instant::now();
            writer.dirty = false;
            writer.file.clone()
        };
        if let Some(file) = file {
            if file.sync_data().is_err() {
                // The lines' durability is unknown: reopen, and make the next write prove a sync works.
                let mut writer = lock_writer(writer);
                if writer.file.as_ref().is_some_and(|current| Arc::ptr_eq(current, &file)) {
                    writer.file = None;
                }
                writer.force_sync = true;
            }
        }
    }
}

/// An exclusive lock on `<dir>/LOCK` for the life of the writer: two writers would fork the chain.
fn lock(dir: &Path) -> Result<File, AuditError> {
    let path = dir.join("LOCK");
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).mode(0o600).open(&path)?;
    // SAFETY: flock on a file descriptor we own; no memory is shared with the call.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(AuditError::Io(io::Error::new(
            io::ErrorKind::WouldBlock,
            format!("{} is in use by another audit writer", dir.display()),
        )));
    }
    Ok(file)
}

/// The writer's state, behind the log's mutex.
struct Writer {
    dir: PathBuf,
    retention_days: u32,
    stdout: bool,
    sync: SyncPolicy,
    /// The chain's end as written (the last record that is in the file).
    sequence: u64,
    hash: String,
    /// The chain's end including the lines formatted in `buf` but not yet written.
    next_sequence: u64,
    next_hash: String,
    /// The day of the file the chain continues in (the newest file).
    day: Option<Date>,
    /// That file, open for appending; `None` before the first append and after a failure. Shared
    /// with the periodic sync, which syncs it outside the lock.
    file: Option<Arc<File>>,
    /// Its length up to the last complete batch, once known.
    len: Option<u64>,
    /// Lines written since the last `fdatasync` (`Interval`).
    dirty: bool,
    /// A periodic `fdatasync` failed: the next write syncs (and fails if it cannot).
    force_sync: bool,
    closed: bool,
    /// The lines of the batch being formatted, and who waits for them.
    buf: Vec<u8>,
    pending: Vec<(Option<Reply>, Link)>,
    /// `Interval`: where appends put their lines; the writer thread moves them to the day files.
    journal: Option<Journal>,
    /// A `Flush` is on its way to the writer thread.
    flush_requested: bool,
    signal: Sender<Message>,
    _lock: File,
    /// Tests: the next batch writes half its bytes, then fails.
    #[cfg(test)]
    short_write: bool,
}

impl Writer {
    /// `Interval`: several lines in one write (two, if the day's file changes between them).
    /// A batch too large for the journal (a broker's thousand messages, each audited) goes
    /// straight to the day files, after what the journal holds, with one `write(2)`: the same
    /// durability, without a copy the journal could never take.
    fn append_many<'a>(
        &mut self,
        lines: impl Iterator<Item = (Date, &'a [u8])> + Clone,
    ) -> Result<Vec<Link>, AuditError> {
        if let Some(journal) = &self.journal {
            // Each line grows by its sequence and two hashes (under 200 bytes) when formatted.
            let bytes: usize = lines.clone().map(|(_, head)| head.len() + 200).sum();
            if bytes <= journal.size() / 2 {
                return self.append_to_journal(lines);
            }
            self.flush_journal()?;
        }
        let mut links = Vec::new();
        for (day, head) in lines {
            let day = self.day.map_or(day, |current| current.max(day));
            if !self.pending.is_empty() && self.day != Some(day) {
                links.extend(self.flush()?);
            }
            self.add(day, head)?;
        }
        links.extend(self.flush()?);
        Ok(links)
    }

    /// Writes a batch of the writer thread (`Always`); returns the close request if there was one
    /// (the messages after it fail).
    fn process(&mut self, batch: &mut Vec<Message>) -> Option<mpsc::SyncSender<()>> {
        let mut close = None;
        for message in batch.drain(..) {
            match message {
                Message::Close { done } => {
                    if close.is_none() {
                        self.flush_and_answer();
                        close = Some(done);
                    }
                }
                Message::Flush => {}
                Message::Append { reply, .. } if close.is_some() || self.closed => {
                    let _ = reply.send(Err(closed()));
                }
                Message::Append { day, head, reply } => {
                    if self.file.is_none() || self.day.is_some_and(|current| current < day) {
                        // The file changes: the lines so far belong to the one before.
                        self.flush_and_answer();
                    }
                    match self.add(day, &head) {
                        Ok(()) => self.pending.last_mut().expect("just added").0 = Some(reply),
                        Err(e) => {
                            let _ = reply.send(Err(e));
                        }
                    }
                }
            }
        }
        self.flush_and_answer();
        close
    }

    /// Formats a line into `buf` (opening or rotating the file first if its day needs it).
    fn add(&mut self, day: Date, head: &[u8]) -> Result<(), AuditError> {
        // Never back to an older file: the files in date order are the chain in order.
        let day = self.day.map_or(day, |current| current.max(day));
        if self.file.is_none() || self.day != Some(day) {
            debug_assert!(self.pending.is_empty());
            self.open_file(day)?;
        }
        let link = self.format(head);
        self.pending.push((None, link));
        Ok(())
    }

    /// Appends one line to `buf`, chained to the one before.
    fn format(&mut self, head: &[u8]) -> Link {
        let sequence = self.next_sequence + 1;
        let hash = chain::append_line(&mut self.buf, head, sequence, &self.next_hash);
        self.buf.push(b'\n');
        self.next_sequence = sequence;
        let previous_hash = std::mem::replace(&mut self.next_hash, hash.clone());
        Link { sequence, previous_hash, hash }
    }

    /// Makes `day`'s file the open one: syncs the file it replaces, and applies the retention when
    /// the day changes.
    fn open_file(&mut self, day: Date) -> Result<(), AuditError> {
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

    /// Writes the formatted lines; returns their links, or the error (the file cut back, the chain
    /// rolled back, every line of the batch failed).
    fn flush(&mut self) -> Result<Vec<Link>, AuditError> {
        let sync_now = self.sync == SyncPolicy::Always || self.force_sync;
        let result = match self.file.as_deref() {
            None => Err(io::Error::other("the audit file is not open")),
            #[cfg(test)]
            Some(mut file) if std::mem::take(&mut self.short_write) => {
                file.write_all(&self.buf[..self.buf.len() / 2]).and(Err(io::Error::other("injected short write")))
            }
            Some(mut file) => file.write_all(&self.buf).and_then(|()| if sync_now { file.sync_data() } else { Ok(()) }),
        };
        let outcome = match result {
            Ok(()) => {
                self.len = self.len.map(|len| len + self.buf.len() as u64);
                self.sequence = self.next_sequence;
                self.hash.clone_from(&self.next_hash);
                if sync_now {
                    self.force_sync = false;
                } else {
                    self.dirty = true;
                }
                if self.stdout {
                    let _ = io::stdout().lock().write_all(&self.buf);
                }
                Ok(())
            }
            Err(e) => {
                // Cut the file back to its last complete batch; if even that fails, reopening will.
                if let (Some(file), Some(len)) = (&self.file, self.len) {
                    let _ = file.set_len(len);
                }
                self.file = None;
                self.next_sequence = self.sequence;
                self.next_hash.clone_from(&self.hash);
                self.pending.clear();
                Err(AuditError::Io(e))
            }
        };
        self.buf.clear();
        outcome.map(|()| self.pending.drain(..).map(|(_, link)| link).collect())
    }

    /// Writes the formatted lines and answers the appends waiting for them.
    fn flush_and_answer(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let replies: Vec<_> = self.pending.iter_mut().map(|(reply, _)| reply.take()).collect();
        match self.flush() {
            Ok(links) => {
                for (reply, link) in replies.into_iter().zip(links) {
                    if let Some(reply) = reply {
                        let _ = reply.send(Ok(link));
                    }
                }
            }
            Err(error) => {
                for reply in replies.into_iter().flatten() {
                    let _ = reply.send(Err(error.duplicate()));
                }
            }
        }
    }

    /// Writes what is pending, syncs, and refuses further appends.
    fn finish(&mut self) {
        self.flush_and_answer();
        // Best effort: what cannot be written now stays in the journal for the next open.
        let _ = self.flush_journal();
        if let Some(file) = &self.file {
            let _ = file.sync_data();
        }
        self.file = None;
        self.dirty = false;
        self.closed = true;
    }

    /// `Interval`: chains the lines and copies them, adjacent, into the journal (one copy, no
    /// system call); the writer thread is asked to move them to the day files. When the journal
    /// is full, the day files are written first, here; if that fails too, so does the append.
    fn append_to_journal<'a>(
        &mut self,
        lines: impl Iterator<Item = (Date, &'a [u8])>,
    ) -> Result<Vec<Link>, AuditError> {
        debug_assert!(self.buf.is_empty() && self.pending.is_empty());
        let mut links = Vec::new();
        for (_, head) in lines {
            links.push(self.format(head));
        }
        self.pending.clear();
        let journal = self.journal.as_mut().expect("journal mode");
        let mut stored = journal.push(&self.buf);
        if !stored {
            let flushed = self.flush_journal();
            let journal = self.journal.as_mut().expect("journal mode");
            stored = flushed.is_ok() && journal.push(&self.buf);
            if !stored {
                self.buf.clear();
                self.next_sequence = self.sequence;
                self.next_hash.clone_from(&self.hash);
                return Err(flushed.err().unwrap_or_else(|| {
                    AuditError::Io(io::Error::new(io::ErrorKind::StorageFull, "the audit journal is full"))
                }));
            }
        }
        self.buf.clear();
        self.sequence = self.next_sequence;
        self.hash.clone_from(&self.next_hash);
        if !self.flush_requested {
            self.flush_requested = true;
            let _ = self.signal.send(Message::Flush);
        }
        Ok(links)
    }

    /// `Interval`: writes the journal's lines to their day files and frees their room. Each line
    /// goes to the file of its day, or of a later day already started (as in `add`); lines of one
    /// file go in one write. A failed write is cut off the file and the journal keeps the lines
    /// for the next attempt.
    fn flush_journal(&mut self) -> Result<(), AuditError> {
        let Some(journal) = self.journal.take() else { return Ok(()) };
        let result = self.write_journal(&journal);
        let (released, outcome) = match result {
            Ok(position) => (position, Ok(())),
            Err((position, error)) => (position, Err(error)),
        };
        self.journal = Some(journal);
        self.journal.as_mut().expect("just put back").release(released);
        outcome
    }

    /// Writes the journal's pending lines; returns the position up to which they are in the day
    /// files (with the error that stopped it).
    fn write_journal(&mut self, journal: &Journal) -> Result<u64, (u64, AuditError)> {
        let mut done = journal.pending().first().map_or(journal.written(), |(position, _)| *position);
        for (position, piece) in journal.pending() {
            // The zeros a wrapped line skipped end the first piece.
            let piece = &piece[..piece.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1)];
            let mut start = 0;
            while start < piece.len() {
                // The run of lines from `start` that go to one file.
                let day = line_day(&piece[start..]);
                let target = self.day.map_or(day, |current| current.max(day));
                let target_text = files::day_text(target);
                // Later lines of an earlier day follow the run into its file; a later day starts
                // a new run. Nearly every line is of the target day, told by its bytes alone.
                let mut end = start;
                while end < piece.len() {
                    let line = &piece[end..];
                    if end > start && !is_of_day(line, &target_text) && line_day(line) > target {
                        break;
                    }
                    end += memchr::memchr(b'\n', line).map_or(line.len(), |i| i + 1);
                }
                if let Err(e) = self.write_lines_to(target, &piece[start..end]) {
                    return Err((done, e));
                }
                start = end;
                done = position + end as u64;
            }
            done = position + piece.len() as u64;
        }
        Ok(journal.written())
    }

    /// Writes formatted lines to the file of `day` (opening or rotating to it first).
    fn write_lines_to(&mut self, day: Date, lines: &[u8]) -> Result<(), AuditError> {
        if self.file.is_none() || self.day != Some(day) {
            self.open_file(day)?;
        }
        let result = match self.file.as_deref() {
            None => Err(io::Error::other("the audit file is not open")),
            #[cfg(test)]
            Some(mut file) if std::mem::take(&mut self.short_write) => {
                file.write_all(&lines[..lines.len() / 2]).and(Err(io::Error::other("injected short write")))
            }
            Some(mut file) => {
                file.write_all(lines).and_then(|()| if self.force_sync { file.sync_data() } else { Ok(()) })
            }
        };
        match result {
            Ok(()) => {
                self.len = self.len.map(|len| len + lines.len() as u64);
                if self.force_sync {
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
                if let (Some(file), Some(len)) = (&self.file, self.len) {
                    let _ = file.set_len(len);
                }
                self.file = None;
                Err(AuditError::Io(e))
            }
        }
    }

    /// At open: writes the records a crash left in the journal that continue the chain after the
    /// day files' last record, in order; returns how many. Lines that do not (fragments, records
    /// already in the files, a torn copy) are left out: a request is answered only after its
    /// lines are whole in the journal, and an incomplete copy cannot continue the chain.
    fn recover(&mut self, held: Vec<Vec<u8>>) -> Result<usize, AuditError> {
        let mut found: Vec<(u64, String, String, Vec<u8>)> = held
            .into_iter()
            .filter_map(|line| {
                let record: AuditRecord = serde_json::from_slice(&line).ok()?;
                (record.sequence > self.sequence).then_some((record.sequence, record.previous_hash, record.hash, line))
            })
            .collect();
        found.sort_by_key(|(sequence, ..)| *sequence);
        let mut moved = 0;
        for (sequence, previous_hash, hash, mut line) in found {
            let rehashed = chain::rehash(&previous_hash, &line).map(|(computed, _)| computed);
            if sequence != self.sequence + 1 || previous_hash != self.hash || rehashed.as_deref() != Some(hash.as_str())
            {
                break;
            }
            let day = line_day(&line);
            let target = self.day.map_or(day, |current| current.max(day));
            line.push(b'\n');
            self.write_lines_to(target, &line)?;
            self.sequence = sequence;
            self.hash = hash;
            moved += 1;
        }
        self.next_sequence = self.sequence;
        self.next_hash.clone_from(&self.hash);
        if moved > 0 {
            if let Some(file) = &self.file {
                file.sync_data()?;
            }
            self.dirty = false;
        }
        Ok(moved)
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
fn line_day(line: &[u8]) -> Date {
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

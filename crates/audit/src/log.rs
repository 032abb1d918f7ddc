//! [`FileLog`]: appending records to the daily files, chained in the order they are written.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use time::Date;
use tokio::sync::oneshot;

use crate::day_files::{line_day, DayFiles};
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
/// Records are serialized on the caller's task; the writer state (behind one mutex) assigns each
/// its sequence number, and the lines are chained in that order, so the file order is the chain
/// order. How a line reaches the file depends on the [`SyncPolicy`] and on whether the caller
/// wants the chain members back:
///
/// - `Interval`, [`record_all`](FileLog::record_all) (the server's requests): under the mutex the
///   caller only numbers its lines and copies them, as journal entries without their hashes, into
///   the journal ([`crate::journal`], a memory-mapped file): no system call and no hashing on the
///   request's thread, and the mutex is held for a copy. The writer thread moves the journal's
///   entries to the day files ten milliseconds after the first append asks, chaining them (the
///   SHA-256 of every line) and writing all the requests answered meanwhile in one `write(2)`,
///   without the mutex (it borrows the day files, [`Lent`]), and `fdatasync`s every interval
///   while lines are unsynced. A `write(2)` per request under the mutex cost about a third of a
///   read's throughput (the call, and the other worker waiting on the lock meanwhile); batches
///   handed to a writer thread, or a leader/follower group write, cost more in thread wake-ups
///   than they saved; chaining under the mutex on the request's thread made the other worker
///   wait on the lock for the hashing.
/// - `Interval`, [`append`](FileLog::append) and [`append_all`](FileLog::append_all), which return
///   the chain members: the caller waits for the day files, moves what the journal holds, and
///   chains and writes its lines itself (tests, tools and batches too large for the journal).
/// - `Always`: the line goes to the writer thread, which takes every line queued while it was busy
///   as one batch: one `write(2)` and one `fdatasync` for all of them (group commit), off the
///   request threads.
///
/// When a write fails, the writer cuts the file back to its last complete batch, answers every
/// append of the batch with the error, and reopens the file for the next batch: appends fail while
/// the file system refuses, and succeed again once it accepts, the chain intact.
pub(crate) struct FileLog {
    writer: Arc<Mutex<Writer>>,
    /// Notified when the writer thread gives the day files back ([`Writer::files`]).
    returned: Arc<Condvar>,
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
            sync: config.sync,
            end: chain::End { sequence, hash: hash.clone() },
            next_sequence: sequence,
            next_hash: hash,
            numbered: sequence,
            files: Some(DayFiles::new(dir.clone(), config.retention_days, config.stdout, newest)),
            closed: false,
            buf: Vec::with_capacity(64 * 1024),
            pending: Vec::new(),
            journal: None,
            flush_requested: false,
            signal: sender.clone(),
            _lock: lock,
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
        let returned = Arc::new(Condvar::new());
        let (background, signal) = (writer.clone(), returned.clone());
        let sync = config.sync;
        let handle = std::thread::Builder::new().name("audit-writer".into()).spawn(move || match sync {
            SyncPolicy::Always => group_commit(&background, &receiver),
            SyncPolicy::Interval(interval) => periodic_sync(&background, &signal, &receiver, interval),
        })?;
        Ok(FileLog { writer, returned, sync, sender, thread: Mutex::new(Some(handle)), recovered_torn_tail, recovered })
    }

    /// Chains and writes a record; returns it as stored (with `sequence`, `previous_hash`, `hash`).
    /// An error means the line is not in the trail (disk full, permissions, closed log, or a
    /// `TimeGenerated` that is not RFC 3339).
    pub(crate) async fn append(&self, record: AuditRecord) -> Result<AuditRecord, AuditError> {
        let mut stored = self.append_all(vec![record]).await?;
        Ok(stored.pop().expect("one record appended"))
    }

    /// Chains and writes several records one after the other, adjacent in the trail, in one
    /// write; returns them as stored. With `Interval` syncing this waits for the day files and
    /// writes on the caller's thread: [`FileLog::record_all`] is the fast way.
    /// An error means not all of them are in the trail.
    pub(crate) async fn append_all(&self, records: Vec<AuditRecord>) -> Result<Vec<AuditRecord>, AuditError> {
        let prepared = records.into_iter().map(prepare).collect::<Result<Vec<_>, _>>()?;
        let mut records = Vec::with_capacity(prepared.len());
        let mut lines = Vec::with_capacity(prepared.len());
        for (day, head, record) in prepared {
            lines.push((day, head));
            records.push(record);
        }
        let links = match self.sync {
            SyncPolicy::Interval(_) => {
                let mut writer = self.lock_with_files()?;
                if writer.closed {
                    return Err(closed());
                }
                writer.append_many(lines.iter().map(|(day, head)| (*day, head.as_slice())))?
            }
            SyncPolicy::Always => self.queue(lines).await?,
        };
        Ok(records.into_iter().zip(links).map(|(record, link)| linked(record, link)).collect())
    }

    /// Writes several records one after the other, adjacent in the trail, without returning
    /// their chain members: with `Interval` syncing they are chained when the writer thread moves
    /// them to the day files. For a request's records: the `Started` and outcome records of a
    /// request that changes nothing (a read) are written together once it is answered, half the
    /// writes. An error means not all of them are in the trail.
    pub(crate) async fn record_all(&self, records: &[AuditRecord]) -> Result<(), AuditError> {
        let lines = records.iter().map(head).collect::<Result<Vec<_>, _>>()?;
        match self.sync {
            SyncPolicy::Interval(_) => self.journal_lines(&lines),
            SyncPolicy::Always => self.queue(lines).await.map(drop),
        }
    }

    /// `Always`: queues the lines back to back, so that the writer thread takes them into one
    /// batch, and waits for their links.
    async fn queue(&self, lines: Vec<(Date, Vec<u8>)>) -> Result<Vec<Link>, AuditError> {
        let mut answers = Vec::with_capacity(lines.len());
        for (day, head) in lines {
            let (reply, answer) = oneshot::channel();
            self.sender.send(Message::Append { day, head, reply }).map_err(|_| closed())?;
            answers.push(answer);
        }
        let mut links = Vec::with_capacity(answers.len());
        for answer in answers {
            links.push(answer.await.map_err(|_| closed())??);
        }
        Ok(links)
    }

    /// `Interval`: numbers the lines and copies them, adjacent, into the journal. A batch the
    /// journal has no room for waits for the day files: after the journal's entries are moved,
    /// it goes into the journal, or straight to the day file if it is larger than the journal
    /// takes.
    fn journal_lines(&self, lines: &[(Date, Vec<u8>)]) -> Result<(), AuditError> {
        let mut writer = lock_writer(&self.writer);
        if writer.closed {
            return Err(closed());
        }
        if writer.push_entries(lines) {
            return Ok(());
        }
        let mut writer = self.with_files(writer)?;
        if writer.closed {
            return Err(closed());
        }
        writer.flush_journal()?;
        if writer.push_entries(lines) {
            return Ok(());
        }
        writer.append_many(lines.iter().map(|(day, head)| (*day, head.as_slice()))).map(drop)
    }

    /// The writer's state with the day files in it: waits while the writer thread has them.
    fn lock_with_files(&self) -> Result<MutexGuard<'_, Writer>, AuditError> {
        self.with_files(lock_writer(&self.writer))
    }

    fn with_files<'a>(&self, mut writer: MutexGuard<'a, Writer>) -> Result<MutexGuard<'a, Writer>, AuditError> {
        while writer.files.is_none() {
            if writer.closed {
                return Err(closed());
            }
            writer = self.returned.wait(writer).unwrap_or_else(|e| e.into_inner());
        }
        Ok(writer)
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
        // Whatever the thread did (or if it died), nothing is written after this. The thread has
        // ended, so the day files are back (or were lost with it).
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
        // Waiting for the day files fails only once the log is closed: nothing left to move.
        let Ok(mut writer) = self.lock_with_files() else { return Ok(()) };
        if writer.closed {
            return Ok(());
        }
        writer.flush_journal()
    }

    /// Tests: the next batch writes half its bytes, then fails.
    #[cfg(test)]
    pub(crate) fn inject_short_write(&self) {
        self.lock_with_files().expect("open").files().short_write = true;
    }

    /// Tests: lines were written since the last `fdatasync`.
    #[cfg(test)]
    pub(crate) fn unsynced(&self) -> bool {
        self.lock_with_files().expect("open").files().dirty
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
    let (day, head) = head(&record)?;
    record.sequence = 0;
    record.previous_hash.clear();
    record.hash.clear();
    Ok((day, head, record))
}

/// The record's day and its line without the chain members (whatever the record holds in them).
pub(crate) fn head(record: &AuditRecord) -> Result<(Date, Vec<u8>), AuditError> {
    let day = crate::day_of_time(&record.time_generated).ok_or_else(|| {
        AuditError::invalid(format!("TimeGenerated '{}' is not an RFC 3339 date-time", record.time_generated))
    })?;
    // The fixed part of a line is about 330 bytes; the chain members are added to a copy.
    let entries = |map: &serde_json::Map<String, serde_json::Value>| {
        map.iter().map(|(key, value)| key.len() + value.as_str().map_or(16, str::len) + 6).sum::<usize>()
    };
    let variable = [&record.correlation_id, &record.request_uri, &record.location, &record.operation_name]
        .iter()
        .map(|s| s.len())
        .sum::<usize>()
        + [&record.caller_identity_issuer, &record.caller_identity_object_id, &record.fhir_resource_type]
            .iter()
            .map(|s| s.as_ref().map_or(0, String::len))
            .sum::<usize>()
        + entries(&record.caller_identity)
        + entries(&record.properties);
    let mut head = Vec::with_capacity(384 + variable);
    crate::line::write_head(&mut head, record);
    Ok((day, head))
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

/// The day files are with the writer thread (only code that waited for them writes to them).
fn files_lent() -> AuditError {
    AuditError::Io(io::Error::other("the audit day files are being written by the writer thread"))
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
fn periodic_sync(writer: &Mutex<Writer>, returned: &Condvar, receiver: &Receiver<Message>, interval: Duration) {
    let mut last_sync = std::time::Instant::now();
    let mut failing = false;
    let mut cached = CachedPages::default();
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
        let lent = {
            let mut guard = lock_writer(writer);
            if guard.closed {
                return;
            }
            guard.flush_requested = false;
            Lent::take(&mut guard, writer, returned)
        };
        if let Some(lent) = lent {
            failing = lent.write_out().is_err();
        }
        let file = {
            let mut guard = lock_writer(writer);
            if guard.closed {
                return;
            }
            let Some(files) = guard.files.as_mut() else { continue };
            if !files.dirty || last_sync.elapsed() < interval {
                continue;
            }
            last_sync = std::time::Instant::now();
            files.dirty = false;
            files.file.clone()
        };
        if let Some(file) = file {
            if file.sync_data().is_ok() {
                cached.release(&file);
            } else {
                // The lines' durability is unknown: reopen, and make the next write prove a sync works.
                let mut guard = lock_writer(writer);
                if let Some(files) = guard.files.as_mut() {
                    if files.file.as_ref().is_some_and(|current| Arc::ptr_eq(current, &file)) {
                        files.file = None;
                    }
                    files.force_sync = true;
                }
            }
        }
    }
}

/// Granularity of [`CachedPages::release`]: what stays cached behind the end of the file.
const CACHE_KEPT: u64 = 1 << 20;

/// The part of the day file whose pages have been given back to the kernel.
///
/// The trail is written once and read rarely (`verify`, `GET /_audit`), yet every line would
/// otherwise stay in the page cache until memory runs short, growing it by the day file's size
/// (about a kilobyte per request) and evicting the store's pages, which are read all the time.
/// Once a sync has made the lines durable their pages are clean, and dropping them costs nothing
/// but a read should they be wanted again. The last [`CACHE_KEPT`] bytes stay: the next appends
/// complete the last page, which would otherwise be read back from disk first.
#[derive(Default)]
struct CachedPages {
    /// The file (its inode) the offset belongs to.
    file: Option<(u64, u64)>,
    released_to: u64,
}

impl CachedPages {
    /// Drops the clean pages of `file` from the cache, but for its last [`CACHE_KEPT`] bytes.
    /// Advisory: a failure changes nothing but the cache's size.
    fn release(&mut self, file: &File) {
        use std::os::unix::fs::MetadataExt;
        let Ok(metadata) = file.metadata() else { return };
        let identity = (metadata.dev(), metadata.ino());
        if self.file != Some(identity) {
            *self = CachedPages { file: Some(identity), released_to: 0 };
        }
        let end = metadata.len().saturating_sub(CACHE_KEPT) & !(CACHE_KEPT - 1);
        if end <= self.released_to {
            return;
        }
        let (Ok(offset), Ok(length)) = (i64::try_from(self.released_to), i64::try_from(end - self.released_to)) else {
            return;
        };
        // SAFETY: posix_fadvise only reads its arguments; the descriptor is open for the call.
        let advised = unsafe { libc::posix_fadvise(file.as_raw_fd(), offset, length, libc::POSIX_FADV_DONTNEED) };
        if advised == 0 {
            self.released_to = end;
        }
    }
}

/// `Interval`: the day files and the journal's pending lines, borrowed by the writer thread to
/// write the lines out without holding the writer's lock. Appends go on meanwhile: they copy
/// into the journal's free room, which never overlaps the pending lines (only the release after
/// the write frees theirs), and anything that needs the day files waits for their return.
/// A `write(2)` of ten milliseconds' lines under the lock made every append wait for it.
struct Lent<'a> {
    writer: &'a Mutex<Writer>,
    returned: &'a Condvar,
    files: Option<DayFiles>,
    /// The pending pieces of the journal's mapping: position, start, length.
    pieces: Vec<(u64, *const u8, usize)>,
    written: u64,
    /// The chain's end in the day files, which the entries are chained after.
    end: chain::End,
}

impl<'a> Lent<'a> {
    /// Borrows the day files if the journal has lines for them.
    fn take(guard: &mut Writer, writer: &'a Mutex<Writer>, returned: &'a Condvar) -> Option<Lent<'a>> {
        let journal = guard.journal.as_ref()?;
        let pieces: Vec<_> =
            journal.pending().into_iter().map(|(position, piece)| (position, piece.as_ptr(), piece.len())).collect();
        if pieces.is_empty() {
            return None;
        }
        let written = journal.written();
        let files = guard.files.take()?;
        Some(Lent { writer, returned, files: Some(files), pieces, written, end: guard.end.clone() })
    }

    /// Writes the lines to their day files, then gives the files back and frees the lines' room
    /// in the journal (as far as they were written; a failed write leaves the rest for the next
    /// attempt, as `Writer::flush_journal` does).
    fn write_out(mut self) -> Result<(), AuditError> {
        // SAFETY: the pieces lie in the journal's mapping, which lives as long as the writer's
        // state (`Writer::journal` is only ever taken and put back, under the lock, by code that
        // needs the day files, which are here); their bytes change only when released below.
        let pending: Vec<(u64, &[u8])> = self
            .pieces
            .iter()
            .map(|&(position, start, len)| (position, unsafe { std::slice::from_raw_parts(start, len) }))
            .collect();
        let files = self.files.as_mut().expect("borrowed");
        let (released, outcome) = match files.write_journal(&pending, self.written, &mut self.end) {
            Ok(position) => (position, Ok(())),
            Err((position, error)) => (position, Err(error)),
        };
        let mut guard = lock_writer(self.writer);
        // Only code with the day files changes the chain's end, and they were here.
        guard.end = std::mem::take(&mut self.end);
        guard.files = self.files.take();
        if let Some(journal) = guard.journal.as_mut() {
            journal.release(released);
        }
        self.returned.notify_all();
        outcome
    }
}

impl Drop for Lent<'_> {
    /// Gives the day files back if the write did not (it panicked): appends that need them wait.
    fn drop(&mut self) {
        if let Some(files) = self.files.take() {
            lock_writer(self.writer).files = Some(files);
            self.returned.notify_all();
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
    sync: SyncPolicy,
    /// The chain's end as written (the last record that is in the day files).
    end: chain::End,
    /// The chain's end including the lines formatted in `buf` but not yet written.
    next_sequence: u64,
    next_hash: String,
    /// `Interval`: the last sequence number given to an entry in the journal (`end.sequence`
    /// when the journal is empty).
    numbered: u64,
    /// The day files; `None` while the `Interval` writer thread has borrowed them to move the
    /// journal's lines ([`Lent`]; it gives them back and notifies [`FileLog::returned`]).
    files: Option<DayFiles>,
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
}

impl Writer {
    /// The day files, which only the `Interval` writer thread borrows, and only while no one
    /// else holds the lock after waiting for them ([`FileLog::lock_with_files`]).
    fn files(&mut self) -> &mut DayFiles {
        self.files.as_mut().expect("the day files are here: the caller waited for them")
    }

    /// `Interval`: numbers the lines and copies them into the journal as entries (each line
    /// without its chain members but for `Sequence`), which the writer thread chains when it
    /// moves them to the day files; `false`, the journal unchanged, when the batch is too large
    /// for the journal or there is no room in it.
    fn push_entries(&mut self, lines: &[(Date, Vec<u8>)]) -> bool {
        if !self.fits_journal(lines.iter().map(|(day, head)| (*day, head.as_slice()))) {
            return false;
        }
        debug_assert!(self.buf.is_empty());
        let mut sequence = self.numbered;
        for (_, head) in lines {
            sequence += 1;
            self.buf.extend_from_slice(head);
            chain::push_sequence(&mut self.buf, sequence);
            self.buf.push(b'\n');
        }
        let journal = self.journal.as_mut().expect("journal mode");
        let stored = journal.push(&self.buf);
        self.buf.clear();
        if !stored {
            return false;
        }
        self.numbered = sequence;
        if !self.flush_requested {
            self.flush_requested = true;
            let _ = self.signal.send(Message::Flush);
        }
        true
    }

    /// Whether a batch goes through the journal. Each line grows by its sequence (under 40
    /// bytes) as an entry.
    fn fits_journal<'a>(&self, lines: impl Iterator<Item = (Date, &'a [u8])>) -> bool {
        let Some(journal) = &self.journal else { return false };
        lines.map(|(_, head)| head.len() + 40).sum::<usize>() <= journal.size() / 2
    }

    /// Several lines in one write (two, if the day's file changes between them), with the day
    /// files at hand. A batch too large for the journal (a broker's thousand messages, each
    /// audited) goes straight to the day files, after what the journal holds, with one
    /// `write(2)`: the same durability, without a copy the journal could never take.
    fn append_many<'a>(&mut self, lines: impl Iterator<Item = (Date, &'a [u8])>) -> Result<Vec<Link>, AuditError> {
        if self.journal.is_some() {
            // After the journal's entries, which hold the sequence numbers before these.
            self.flush_journal()?;
            debug_assert_eq!(self.numbered, self.end.sequence);
            self.next_sequence = self.end.sequence;
            self.next_hash.clone_from(&self.end.hash);
        }
        let mut links = Vec::new();
        for (day, head) in lines {
            let current = self.files().day;
            let day = current.map_or(day, |current| current.max(day));
            if !self.pending.is_empty() && current != Some(day) {
                links.extend(self.flush()?);
            }
            self.add(day, head)?;
        }
        links.extend(self.flush()?);
        self.numbered = self.end.sequence;
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
                    let files = self.files();
                    if files.file.is_none() || files.day.is_some_and(|current| current < day) {
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
        let files = self.files();
        let day = files.day.map_or(day, |current| current.max(day));
        if files.file.is_none() || files.day != Some(day) {
            files.open_file(day)?;
            debug_assert!(self.pending.is_empty());
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

    /// Writes the formatted lines; returns their links, or the error (the file cut back, the chain
    /// rolled back, every line of the batch failed).
    fn flush(&mut self) -> Result<Vec<Link>, AuditError> {
        let always = self.sync == SyncPolicy::Always;
        let Writer { files, buf, .. } = self;
        let files = files.as_mut().expect("the day files are here: the caller waited for them");
        let outcome = match files.write_batch(buf, always) {
            Ok(()) => {
                self.end.sequence = self.next_sequence;
                self.end.hash.clone_from(&self.next_hash);
                Ok(())
            }
            Err(e) => {
                self.next_sequence = self.end.sequence;
                self.next_hash.clone_from(&self.end.hash);
                self.pending.clear();
                Err(e)
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
        if let Some(files) = self.files.as_mut() {
            if let Some(file) = &files.file {
                let _ = file.sync_data();
            }
            files.file = None;
            files.dirty = false;
        }
        self.closed = true;
    }

    /// `Interval`: chains the journal's entries and writes them to their day files, then frees
    /// their room. Each line goes to the file of its day, or of a later day already started (as
    /// in `add`); lines of one file go in one write. A failed write is cut off the file and the
    /// journal keeps the entries for the next attempt.
    fn flush_journal(&mut self) -> Result<(), AuditError> {
        let Some(journal) = self.journal.take() else { return Ok(()) };
        let Some(files) = self.files.as_mut() else {
            self.journal = Some(journal);
            return Err(files_lent());
        };
        let result = files.write_journal(&journal.pending(), journal.written(), &mut self.end);
        let (released, outcome) = match result {
            Ok(position) => (position, Ok(())),
            Err((position, error)) => (position, Err(error)),
        };
        self.journal = Some(journal);
        self.journal.as_mut().expect("just put back").release(released);
        outcome
    }

    /// At open: writes the records a crash left in the journal that continue the chain after the
    /// day files' last record, in order; returns how many. Entries that do not (fragments, records
    /// already in the files, a torn copy) are left out: a request is answered only after its
    /// entries are whole in the journal, so the entries to recover are whole and numbered on
    /// from the files' last record. A journal of an earlier version holds chained lines instead,
    /// which must also carry the right previous hash and their own hash.
    fn recover(&mut self, held: Vec<Vec<u8>>) -> Result<usize, AuditError> {
        let mut found: Vec<(u64, Vec<u8>)> = held
            .into_iter()
            .filter_map(|entry| {
                let sequence = chain::entry_sequence(&entry)
                    .or_else(|| serde_json::from_slice::<AuditRecord>(&entry).ok().map(|record| record.sequence))?;
                (sequence > self.end.sequence).then_some((sequence, entry))
            })
            .collect();
        found.sort_by_key(|(sequence, _)| *sequence);
        let mut moved = 0;
        let mut line = Vec::new();
        for (sequence, entry) in found {
            if sequence != self.end.sequence + 1 {
                break;
            }
            line.clear();
            let hash = if chain::entry_sequence(&entry).is_some() {
                let hash = chain::append_entry(&mut line, &entry, &self.end.hash);
                // Only a record that reads back as one goes into the trail.
                if serde_json::from_slice::<AuditRecord>(&line).is_err() {
                    break;
                }
                hash
            } else {
                let record: AuditRecord =
                    serde_json::from_slice(&entry).map_err(|e| AuditError::Corrupt(e.to_string()))?;
                let rehashed = chain::rehash(&record.previous_hash, &entry).map(|(computed, _)| computed);
                if record.previous_hash != self.end.hash || rehashed.as_deref() != Some(record.hash.as_str()) {
                    break;
                }
                line.extend_from_slice(&entry);
                record.hash
            };
            let day = line_day(&line);
            let files = self.files();
            let target = files.day.map_or(day, |current| current.max(day));
            line.push(b'\n');
            files.write_lines_to(target, &line)?;
            self.end = chain::End { sequence, hash };
            moved += 1;
        }
        self.next_sequence = self.end.sequence;
        self.next_hash.clone_from(&self.end.hash);
        self.numbered = self.end.sequence;
        if moved > 0 {
            let files = self.files();
            if let Some(file) = &files.file {
                file.sync_data()?;
            }
            files.dirty = false;
        }
        Ok(moved)
    }
}

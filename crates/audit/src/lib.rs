//! Fhirside's audit trail: the records, the hash chain, the sinks, verification and queries.
//!
//! Every request produces [`AuditRecord`]s with the fields of Azure's `MicrosoftHealthcareApisAuditLogs`
//! table (`ResultType` `Started`, then `Succeeded` or `Failed`). [`AuditLog`] appends them as JSON
//! lines to one file per UTC day in the audit directory, optionally echoes each line to standard
//! output, and deletes files older than the retention. Each record carries a sequence number and a
//! SHA-256 hash chaining it to the record before it, so [`verify`] can report the first edited,
//! removed or torn line. [`query`] reads records back by time range, caller, resource type,
//! operation, result and correlation id.
//!
//! Writing is part of a request's success: [`AuditLog::record_all`] (and [`AuditLog::append`],
//! which also returns the chain members) returns only once the line is stored where a crash of
//! the process cannot lose it (and, with [`SyncPolicy::Always`], on disk), and an error when it
//! could not be, so the caller fails the request instead of leaving it unaudited. Lines are
//! chained in the order they are numbered: with `Interval`, the request's task numbers its lines
//! under the log's mutex and copies them into the journal, a memory-mapped file of reserved blocks
//! that a writer thread chains and moves to the day files every ten milliseconds and the next open
//! recovers after a crash (`journal.rs`); with `Always`, one writer thread chains, writes and syncs
//! each batch of concurrent lines with one `write(2)` and one `fdatasync` (group commit).
//!
//! What it must **not** know: HTTP, FHIR resources, the resource store. The server fills records in
//! from what it knows of a request (operation, caller claims, status); this crate only stores,
//! chains, verifies and finds them.
//!
//! # Files
//!
//! `<dir>/audit-YYYY-MM-DD.jsonl` (mode 0600, the directory 0700), one JSON object per line in the
//! field order of [`AuditRecord`], compact, as `serde_json` writes it. A record goes to the file of
//! the UTC day of its `TimeGenerated`, unless a later day's file has already been started (a request
//! that began before midnight and ends after a record of the new day): the chain never goes back to
//! an older file, so the files in date order hold the chain in order, and a record lives in the file
//! of its day or a later one. `<dir>/LOCK` keeps a second writer out. A line left incomplete by a
//! crash is moved at the next open to `audit-YYYY-MM-DD.jsonl.torn` ([`AuditLog::recovered_torn_tail`]).
//! `<dir>/journal` (4 MiB, mode 0600) holds the `Interval` lines not yet moved to the day files;
//! readers in other processes see a record in the day files ten milliseconds or so after its request
//! was answered ([`AuditLog::flush`] moves them at once).
//!
//! # The hash chain
//!
//! `Sequence` is 1 for the first record ever and grows by 1 per record, across files.
//! `PreviousHash` is the `Hash` of the record before (empty for the first record ever).
//! `Hash = base64url-without-padding(SHA-256(PreviousHash + "\n" + L))`, where `L` is the record's line
//! as stored (without its newline) with the value of its last member, `"Hash"`, empty: the line
//! ends `,"Hash":""}`. The writer hashes exactly the bytes it writes, and [`verify`] hashes the bytes
//! it reads, so any change to a line (an edit, even a reformatting) is a hash mismatch; a removed line
//! breaks the sequence and the next record's `PreviousHash`; a removed file leaves a sequence gap.
//! When retention has deleted the oldest files, the oldest remaining record has a `PreviousHash`
//! (reported as [`VerifyReport::starts_after_retention`]). Like any hash chain, it cannot tell that the
//! newest records were cut off the end: keep [`VerifyReport::last_hash`] elsewhere to prove that.

mod chain;
mod day_files;
mod files;
mod journal;
mod line;
mod log;
pub mod postgres;
mod query;
mod sink;
mod verify;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use postgres::PostgresAuditConfig;
pub use query::{query, Filter};
pub use sink::AuditLog;
pub use verify::{verify, BreakKind, BrokenLink, VerifyReport};

/// `LogCategory` of every record (Azure's diagnostic setting category).
pub const LOG_CATEGORY: &str = "AuditLogs";

/// The default retention: 6 years (2192 days).
pub const DEFAULT_RETENTION_DAYS: u32 = 2192;

/// `ResultType`: a request's first record is `Started`, its last `Succeeded` or `Failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResultType {
    Started,
    Succeeded,
    Failed,
}

/// One audit record; serialized with Azure's field names (PascalCase) as one JSON line.
///
/// The field order is the order of the stored JSON: do not reorder fields, and add new ones only
/// before `Sequence` (the writer appends the chain members itself).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AuditRecord {
    /// RFC 3339 UTC with microseconds ([`timestamp_now`]), set by the caller. Its UTC day picks the
    /// file.
    pub time_generated: String,
    /// [`LOG_CATEGORY`].
    pub log_category: String,
    /// `read`, `search-type`, … (Azure's audit sub-types).
    pub operation_name: String,
    pub result_type: ResultType,
    pub correlation_id: String,
    pub request_uri: String,
    pub fhir_resource_type: Option<String>,
    /// The token's claims that identify the caller; shared by the records of one token.
    pub caller_identity: std::sync::Arc<serde_json::Map<String, serde_json::Value>>,
    pub caller_identity_issuer: Option<String>,
    pub caller_identity_object_id: Option<String>,
    #[serde(rename = "CallerIPAddress")]
    pub caller_ip_address: String,
    pub status_code: Option<u16>,
    /// Milliseconds, on the final record.
    pub operation_duration: Option<u64>,
    /// The region.
    pub location: String,
    /// The custom audit headers (`X-MS-AZUREFHIR-AUDIT-*`).
    pub properties: serde_json::Map<String, serde_json::Value>,
    // The chain, filled in by `AuditLog::append` (callers leave them default):
    /// 1 for the first record ever, then +1 per record, across files.
    #[serde(default)]
    pub sequence: u64,
    /// The `hash` of the record before; empty for the first record ever.
    #[serde(default)]
    pub previous_hash: String,
    /// See the crate documentation.
    #[serde(default)]
    pub hash: String,
}

/// When the writer makes appended lines durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// `fdatasync` before `append` returns, once per batch of concurrent appends, on the writer
    /// thread.
    Always,
    /// `write(2)` before `append` returns, on the caller's thread (the line survives a crash of the
    /// process, not of the machine); `fdatasync` on a background thread at least every interval
    /// while lines are unsynced, and at rotation and at close.
    Interval(Duration),
}

/// How an [`AuditLog`] writes.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// The audit directory, e.g. `<data dir>/audit`; created (mode 0700) if missing.
    pub dir: PathBuf,
    /// Files whose day is more than this many days before today are deleted, at open and at each
    /// rotation. Default [`DEFAULT_RETENTION_DAYS`].
    pub retention_days: u32,
    /// Also print each record's line to standard output (errors writing it are ignored: the file is
    /// the record of truth).
    pub stdout: bool,
    pub sync: SyncPolicy,
}

impl AuditConfig {
    /// The defaults: 6 years of retention, no stdout, `fdatasync` every second.
    pub fn new(dir: impl Into<PathBuf>) -> AuditConfig {
        AuditConfig {
            dir: dir.into(),
            retention_days: DEFAULT_RETENTION_DAYS,
            stdout: false,
            sync: SyncPolicy::Interval(Duration::from_secs(1)),
        }
    }
}

/// Why the audit trail could not be written or read.
#[derive(Debug)]
pub enum AuditError {
    /// The file system refused (disk full, permissions, missing directory…), the log is closed
    /// (kind `BrokenPipe`), or an argument is invalid (kind `InvalidInput`: a `TimeGenerated` or a
    /// filter time that is not RFC 3339).
    Io(std::io::Error),
    /// The trail cannot be continued or read as expected (e.g. the last record is unreadable).
    Corrupt(String),
}

impl fmt::Display for AuditError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuditError::Io(e) => write!(f, "audit log: {e}"),
            AuditError::Corrupt(message) => write!(f, "audit log is corrupt: {message}"),
        }
    }
}

impl std::error::Error for AuditError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AuditError::Io(e) => Some(e),
            AuditError::Corrupt(_) => None,
        }
    }
}

impl From<std::io::Error> for AuditError {
    fn from(e: std::io::Error) -> AuditError {
        AuditError::Io(e)
    }
}

impl AuditError {
    pub(crate) fn invalid(message: String) -> AuditError {
        AuditError::Io(std::io::Error::new(std::io::ErrorKind::InvalidInput, message))
    }

    /// A copy for each of the appends a failed batch answers (`io::Error` is not `Clone`).
    pub(crate) fn duplicate(&self) -> AuditError {
        match self {
            AuditError::Io(e) => AuditError::Io(match e.raw_os_error() {
                Some(code) => std::io::Error::from_raw_os_error(code),
                None => std::io::Error::new(e.kind(), e.to_string()),
            }),
            AuditError::Corrupt(message) => AuditError::Corrupt(message.clone()),
        }
    }
}

/// Now as `TimeGenerated` wants it: RFC 3339 in UTC with microseconds (`2026-05-01T12:34:56.123456Z`).
pub fn timestamp_now() -> String {
    format_time(time::OffsetDateTime::now_utc())
}

/// A time as `TimeGenerated` wants it: RFC 3339 in UTC with microseconds.
pub fn timestamp(t: std::time::SystemTime) -> String {
    format_time(time::OffsetDateTime::from(t))
}

pub(crate) fn format_time(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let year = t.year();
    if !(0..=9999).contains(&year) {
        let format =
            time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
        return t.format(&format).unwrap_or_default();
    }
    // Two of these per request: written digit by digit, as the general formatter (which
    // interprets its description at run time) cost more than the rest of the record together.
    let (hour, minute, second, micro) = t.to_hms_micro();
    let mut out = *b"0000-00-00T00:00:00.000000Z";
    let mut put = |at: usize, width: usize, mut value: u32| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, year as u32);
    put(5, 2, u8::from(t.month()).into());
    put(8, 2, t.day().into());
    put(11, 2, hour.into());
    put(14, 2, minute.into());
    put(17, 2, second.into());
    put(20, 6, micro);
    // ASCII digits and separators only.
    String::from_utf8(out.to_vec()).unwrap_or_default()
}

/// The UTC day of a `TimeGenerated`: its first ten characters in the server's own form (UTC,
/// `Z`), else parsed.
pub(crate) fn day_of_time(text: &str) -> Option<time::Date> {
    const FORM: &[u8; 27] = b"0000-00-00T00:00:00.000000Z";
    let b = text.as_bytes();
    let own_form = b.len() == 27
        && b.iter().zip(FORM).all(|(&c, &f)| if f == b'0' { c.is_ascii_digit() } else { c == f })
        && b[11..13] < b"24"[..]
        && b[14..16] < b"60"[..]
        && b[17..19] < b"61"[..];
    if own_form {
        if let Some(day) = files::parse_day(&text[..10]) {
            return Some(day);
        }
    }
    parse_time(text).map(|t| t.to_offset(time::UtcOffset::UTC).date())
}

/// Parses an RFC 3339 date-time (any offset), or a bare `YYYY-MM-DD` (midnight UTC).
pub(crate) fn parse_time(text: &str) -> Option<time::OffsetDateTime> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(text, &Rfc3339) {
        return Some(t);
    }
    files::parse_day(text).map(|day| day.midnight().assume_utc())
}

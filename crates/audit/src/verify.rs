//! [`verify`]: re-walking the chain.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::{chain, files, AuditError, AuditRecord};

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Day files read (up to the first broken link).
    pub files: usize,
    /// Records verified (before the first broken link).
    pub records: u64,
    /// The first line that breaks the chain, if any.
    pub first_broken: Option<BrokenLink>,
    /// The oldest record links to a record that is no longer there (files deleted by retention, or
    /// by someone else: compare [`first_sequence`](Self::first_sequence) with what you expect).
    pub starts_after_retention: bool,
    /// The sequence of the oldest record.
    pub first_sequence: Option<u64>,
    /// The sequence and hash of the newest verified record (before the break, if any): keep them
    /// elsewhere to detect a later truncation of the trail.
    pub last_sequence: Option<u64>,
    pub last_hash: Option<String>,
}

impl VerifyReport {
    /// Nothing read yet.
    pub(crate) fn empty() -> VerifyReport {
        VerifyReport {
            files: 0,
            records: 0,
            first_broken: None,
            starts_after_retention: false,
            first_sequence: None,
            last_sequence: None,
            last_hash: None,
        }
    }

    pub fn intact(&self) -> bool {
        self.first_broken.is_none()
    }
}

/// Where and why the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrokenLink {
    pub file: PathBuf,
    /// 1-based line number in `file`.
    pub line: usize,
    /// The broken record's sequence, when it can be read.
    pub sequence: Option<u64>,
    pub kind: BreakKind,
    pub reason: String,
}

/// The kinds of break, for scripts (the `reason` says it for people).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BreakKind {
    /// The line is not a record (not JSON, missing fields, or not ending with its `Hash`).
    Unparsable,
    /// The line's bytes do not hash to its `Hash`: it was edited.
    HashMismatch,
    /// The sequence does not follow the record before: records (or a file) are missing, or were
    /// reordered.
    SequenceGap,
    /// The `PreviousHash` is not the hash of the record before: that record was replaced.
    PreviousHashMismatch,
    /// The first record ever has no `PreviousHash` but a sequence other than 1.
    BadGenesis,
    /// The very last line of the newest file has no newline: a write cut short by a crash (the next
    /// open moves it to a `.torn` side file), or a write in progress if the server is running.
    TornFinalLine,
    /// A line without a newline at the end of an older file.
    IncompleteLine,
    /// In the database: a row's filter columns (time, operation, …) differ from its hashed line,
    /// so queries would find it under false pretences.
    ColumnMismatch,
}

/// Walks all `audit-*.jsonl` files of `dir` in date order, recomputing every hash and checking the
/// sequence and `PreviousHash` links; stops at the first broken link. An error means the
/// directory or a file could not be read (a missing directory is an error).
pub fn verify(dir: &Path) -> Result<VerifyReport, AuditError> {
    let listed = files::list(dir)?;
    let mut report = VerifyReport::empty();
    // The record before: its sequence and hash.
    let mut previous: Option<(u64, String)> = None;
    let mut line = Vec::with_capacity(4096);
    for (i, (_, path)) in listed.iter().enumerate() {
        report.files += 1;
        let newest = i + 1 == listed.len();
        let mut reader = BufReader::with_capacity(256 * 1024, File::open(path)?);
        let mut number = 0;
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            number += 1;
            let broken = |sequence, kind, reason: String| BrokenLink {
                file: path.clone(),
                line: number,
                sequence,
                kind,
                reason,
            };
            if line.pop() != Some(b'\n') {
                report.first_broken = Some(if newest {
                    broken(
                        None,
                        BreakKind::TornFinalLine,
                        "torn final line: the newest file ends in an incomplete line (a write cut short by a crash, \
                         or one in progress)"
                            .into(),
                    )
                } else {
                    broken(None, BreakKind::IncompleteLine, "incomplete line at the end of the file".into())
                });
                return Ok(finish(report, previous));
            }
            match check(&line, previous.as_ref()) {
                Ok(record) => {
                    if previous.is_none() {
                        report.first_sequence = Some(record.sequence);
                        report.starts_after_retention = !record.previous_hash.is_empty();
                    }
                    report.records += 1;
                    previous = Some((record.sequence, record.hash));
                }
                Err((sequence, kind, reason)) => {
                    report.first_broken = Some(broken(sequence, kind, reason));
                    return Ok(finish(report, previous));
                }
            }
        }
    }
    Ok(finish(report, previous))
}

pub(crate) fn finish(mut report: VerifyReport, last: Option<(u64, String)>) -> VerifyReport {
    if let Some((sequence, hash)) = last {
        report.last_sequence = Some(sequence);
        report.last_hash = Some(hash);
    }
    report
}

/// The chain members of a verified line.
pub(crate) struct Checked {
    pub(crate) sequence: u64,
    pub(crate) previous_hash: String,
    pub(crate) hash: String,
}

pub(crate) fn check(
    line: &[u8],
    previous: Option<&(u64, String)>,
) -> Result<Checked, (Option<u64>, BreakKind, String)> {
    let record: AuditRecord = serde_json::from_slice(line)
        .map_err(|e| (None, BreakKind::Unparsable, format!("the line is not an audit record: {e}")))?;
    let sequence = Some(record.sequence);
    let (computed, stored) = chain::rehash(&record.previous_hash, line)
        .ok_or_else(|| (sequence, BreakKind::Unparsable, "the line does not end with its \"Hash\" member".into()))?;
    if stored != record.hash.as_bytes() {
        return Err((sequence, BreakKind::Unparsable, "the line does not end with its \"Hash\" member".into()));
    }
    if computed != record.hash {
        return Err((sequence, BreakKind::HashMismatch, "hash mismatch: the line was altered".into()));
    }
    match previous {
        None if record.previous_hash.is_empty() && record.sequence != 1 => {
            return Err((
                sequence,
                BreakKind::BadGenesis,
                format!("the first record has no previous hash but sequence {} (expected 1)", record.sequence),
            ));
        }
        None => {}
        Some((previous_sequence, previous_hash)) => {
            let expected = previous_sequence + 1;
            if record.sequence != expected {
                let reason = if record.sequence > expected {
                    let missing = if record.sequence - expected == 1 {
                        format!("record {expected} is missing")
                    } else {
                        format!("records {expected} to {} are missing", record.sequence - 1)
                    };
                    format!("sequence gap: expected {expected}, found {} ({missing})", record.sequence)
                } else {
                    format!("sequence out of order: expected {expected}, found {}", record.sequence)
                };
                return Err((sequence, BreakKind::SequenceGap, reason));
            }
            if record.previous_hash != *previous_hash {
                return Err((
                    sequence,
                    BreakKind::PreviousHashMismatch,
                    "previous hash mismatch: the record before this one was replaced".into(),
                ));
            }
        }
    }
    Ok(Checked { sequence: record.sequence, previous_hash: record.previous_hash, hash: record.hash })
}

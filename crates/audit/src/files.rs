//! The audit directory: file names, listing by day, retention, and the tail of a file.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use time::Date;

const PREFIX: &str = "audit-";
const SUFFIX: &str = ".jsonl";
const TORN_SUFFIX: &str = ".jsonl.torn";

/// A strict `YYYY-MM-DD`.
pub(crate) fn parse_day(text: &str) -> Option<Date> {
    let b = text.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        text.get(range.clone()).filter(|s| s.bytes().all(|c| c.is_ascii_digit())).and_then(|s| s.parse().ok())
    };
    let month = time::Month::try_from(digits(5..7)? as u8).ok()?;
    Date::from_calendar_date(digits(0..4)? as i32, month, digits(8..10)? as u8).ok()
}

/// A day as `YYYY-MM-DD` (years 0 to 9999; others never match a stored line's first ten bytes).
pub(crate) fn day_text(day: Date) -> [u8; 10] {
    let mut text = *b"0000-00-00";
    let mut put = |at: usize, width: usize, mut value: u32| {
        for i in (at..at + width).rev() {
            text[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, day.year().clamp(0, 9999) as u32);
    put(5, 2, u8::from(day.month()).into());
    put(8, 2, day.day().into());
    text
}

pub(crate) fn file_name(day: Date) -> String {
    format!("{PREFIX}{:04}-{:02}-{:02}{SUFFIX}", day.year(), u8::from(day.month()), day.day())
}

/// The side file that keeps a torn final line moved out of a day's file.
pub(crate) fn torn_name(day: Date) -> String {
    format!("{PREFIX}{:04}-{:02}-{:02}{TORN_SUFFIX}", day.year(), u8::from(day.month()), day.day())
}

/// The day of an `audit-YYYY-MM-DD.jsonl` name.
fn day_of(name: &str) -> Option<Date> {
    parse_day(name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?)
}

/// The day files of the directory, oldest first.
pub(crate) fn list(dir: &Path) -> io::Result<Vec<(Date, PathBuf)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(day) = entry.file_name().to_str().and_then(day_of) {
            if entry.file_type()?.is_file() || entry.path().is_file() {
                files.push((day, entry.path()));
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Deletes the day files (and their torn side files) more than `retention_days` before `today`,
/// never `keep` (the file the chain continues in). Best effort: a file that cannot be deleted
/// stays for the next rotation. Returns how many day files were deleted.
pub(crate) fn apply_retention(dir: &Path, today: Date, retention_days: u32, keep: Option<Date>) -> usize {
    let Some(oldest_kept) = today.checked_sub(time::Duration::days(i64::from(retention_days))) else {
        return 0;
    };
    let Ok(files) = list(dir) else { return 0 };
    let mut deleted = 0;
    for (day, path) in files {
        if day >= oldest_kept || Some(day) == keep {
            continue;
        }
        if std::fs::remove_file(&path).is_ok() {
            deleted += 1;
        }
        let _ = std::fs::remove_file(dir.join(torn_name(day)));
    }
    deleted
}

/// Opens (creating, mode 0600) a day file for appending.
pub(crate) fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().append(true).create(true).mode(0o600).open(path)
}

/// `fsync` of a directory, so that a file created in it survives a crash.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The end of a file: its last complete line and where the complete lines end.
pub(crate) struct Tail {
    /// The last line that ends with a newline (without it).
    pub line: Option<Vec<u8>>,
    /// The length of the file up to and including its last newline.
    pub complete_len: u64,
    /// The file's length; more than `complete_len` when the last line is torn.
    pub len: u64,
}

/// Reads a file backwards to its last complete line.
pub(crate) fn read_tail(file: &File) -> io::Result<Tail> {
    const CHUNK: u64 = 64 * 1024;
    let len = file.metadata()?.len();
    let mut buf: Vec<u8> = Vec::new(); // the bytes from `start` to `len`
    let mut start = len;
    loop {
        if let Some(last) = buf.iter().rposition(|&b| b == b'\n') {
            let before = buf[..last].iter().rposition(|&b| b == b'\n');
            if before.is_some() || start == 0 {
                let from = before.map_or(0, |i| i + 1);
                return Ok(Tail { line: Some(buf[from..last].to_vec()), complete_len: start + last as u64 + 1, len });
            }
        } else if start == 0 {
            return Ok(Tail { line: None, complete_len: 0, len });
        }
        let from = start.saturating_sub(CHUNK);
        let mut chunk = vec![0; (start - from) as usize];
        file.read_exact_at(&mut chunk, from)?;
        chunk.extend_from_slice(&buf);
        buf = chunk;
        start = from;
    }
}

/// Moves the torn end of a day file (the bytes after its last newline) to the day's `.torn` side
/// file, and cuts it off the day file. Returns the side file.
pub(crate) fn move_torn_tail(dir: &Path, day: Date, file: &File, tail: &Tail) -> io::Result<PathBuf> {
    let mut torn = vec![0; (tail.len - tail.complete_len) as usize];
    file.read_exact_at(&mut torn, tail.complete_len)?;
    let side = dir.join(torn_name(day));
    let mut out = open_append(&side)?;
    out.write_all(&torn)?;
    out.write_all(b"\n")?;
    out.sync_all()?;
    file.set_len(tail.complete_len)?;
    file.sync_all()?;
    Ok(side)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_days() {
        let day = parse_day("2024-02-29").unwrap();
        assert_eq!(file_name(day), "audit-2024-02-29.jsonl");
        assert_eq!(day_of("audit-2024-02-29.jsonl"), Some(day));
        assert_eq!(day_of("audit-2024-02-30.jsonl"), None);
        assert_eq!(day_of("audit-2024-02-29.jsonl.torn"), None);
        assert_eq!(parse_day("2024-2-29"), None);
        assert_eq!(parse_day("+024-02-29"), None);
    }

    #[test]
    fn tail_of_files() {
        let dir = crate::tests::TempDir::new("tail");
        let path = dir.path().join("f");
        type Case<'a> = (&'a [u8], Option<&'a [u8]>, u64);
        let cases: &[Case] = &[
            (b"", None, 0),
            (b"abc", None, 0),
            (b"abc\n", Some(b"abc"), 4),
            (b"abc\nde\n", Some(b"de"), 7),
            (b"abc\nde\nfg", Some(b"de"), 7),
            (b"\n", Some(b""), 1),
        ];
        for (content, line, complete) in cases {
            std::fs::write(&path, content).unwrap();
            let tail = read_tail(&File::open(&path).unwrap()).unwrap();
            assert_eq!(tail.line.as_deref(), *line, "{content:?}");
            assert_eq!(tail.complete_len, *complete);
            assert_eq!(tail.len, content.len() as u64);
        }
        // Longer than a chunk.
        let long = vec![b'x'; 200_000];
        let mut content = b"first\n".to_vec();
        content.extend_from_slice(&long);
        content.extend_from_slice(b"\ntorn");
        std::fs::write(&path, &content).unwrap();
        let tail = read_tail(&File::open(&path).unwrap()).unwrap();
        assert_eq!(tail.line.unwrap(), long);
        assert_eq!(tail.complete_len, content.len() as u64 - 4);
    }
}

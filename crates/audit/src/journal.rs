//! The journal: a file of fixed size in the audit directory, mapped into memory, that takes each
//! request's formatted lines with a copy instead of a `write(2)`. It holds them as entries: each
//! line up to its `Sequence` member, numbered under the log's mutex; the writer thread completes
//! the chain members (`PreviousHash`, `Hash`) as it moves them to the day files.
//!
//! With `Interval` syncing, an append returns once its lines are in the journal: pages of a shared
//! file mapping belong to the kernel, so they survive a crash of the process exactly as a line
//! `write(2)` to the day file does (neither survives the machine before the next sync). A writer
//! thread moves the lines to the day files in batches, and the next open moves whatever a crash
//! left in the journal. The file's blocks are reserved when it is created (`posix_fallocate`), so
//! a full disk cannot make a copy into the mapping fail; a journal that fills up because the day
//! files cannot be written makes appends fail, as a failing `write(2)` would.
//!
//! The journal is a ring of lines, each ending with `\n` and never split: a line that does not fit
//! before the end starts again at offset 0, and the bytes it skipped are zeros (audit lines are
//! JSON, which has no NUL). Positions count bytes ever appended, so `written - flushed` is what
//! the day files still lack.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The journal's file name in the audit directory.
pub(crate) const FILE_NAME: &str = "journal";

/// Its size: room for the records of about four thousand requests, some eighty milliseconds at
/// full load, while the writer thread moves them every ten milliseconds (and an append that
/// finds it full moves them itself first).
pub(crate) const SIZE: usize = 4 << 20;

pub(crate) struct Journal {
    map: *mut u8,
    size: usize,
    /// Bytes ever appended (lines and the zeros skipped at the end of the ring).
    written: u64,
    /// Bytes ever moved to the day files (or skipped).
    flushed: u64,
    _file: File,
}

// SAFETY: the mapping is owned by the `Journal` alone and used only through `&mut self` or `&self`
// borrows, which the writer's mutex serializes; the pointer is not shared elsewhere.
unsafe impl Send for Journal {}

impl Journal {
    /// Opens the journal of `dir` empty, creating it and reserving its blocks. Read what it held
    /// first ([`held`]), and move that to the day files: opening discards it.
    pub(crate) fn open(dir: &Path, size: usize) -> io::Result<Journal> {
        let path = dir.join(FILE_NAME);
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o600).open(&path)?;
        // Start from zeros, so that the next recovery finds only lines written from now on (the
        // caller has moved what `held` found): cut the file and reserve its blocks again.
        file.set_len(0)?;
        file.set_len(size as u64)?;
        // SAFETY: plain system call on a descriptor we own.
        let reserved = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, size as libc::off_t) };
        if reserved != 0 {
            return Err(io::Error::from_raw_os_error(reserved));
        }
        // SAFETY: a new shared mapping of `size` bytes of a file that long; checked below.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Journal { map: map.cast(), size, written: 0, flushed: 0, _file: file })
    }

    /// Copies `lines` (each ending with `\n`) in, contiguous; `false` when there is no room.
    pub(crate) fn push(&mut self, lines: &[u8]) -> bool {
        let n = lines.len() as u64;
        let offset = (self.written % self.size as u64) as usize;
        let skip = if offset + lines.len() > self.size { (self.size - offset) as u64 } else { 0 };
        if n + skip > self.size as u64 - (self.written - self.flushed) {
            return false;
        }
        if skip > 0 {
            // The zeros at the end are already there: the region was flushed, and moved regions
            // are zeroed when released ([`Journal::release`]).
            self.written += skip;
        }
        let start = (self.written % self.size as u64) as usize;
        self.bytes_mut()[start..start + lines.len()].copy_from_slice(lines);
        self.written += n;
        true
    }

    /// What the day files still lack, in order: up to two pieces (before and after the ring's
    /// end), each with its position. The first may end with skipped zeros.
    pub(crate) fn pending(&self) -> Vec<(u64, &[u8])> {
        let mut pieces = Vec::with_capacity(2);
        let mut position = self.flushed;
        while position < self.written {
            let offset = (position % self.size as u64) as usize;
            let len = ((self.written - position) as usize).min(self.size - offset);
            pieces.push((position, &self.bytes()[offset..offset + len]));
            position += len as u64;
        }
        pieces
    }

    /// The bytes up to `position` reached the day files: their room is free again (zeroed, so
    /// that a later recovery does not find them).
    pub(crate) fn release(&mut self, position: u64) {
        let position = position.min(self.written);
        while self.flushed < position {
            let offset = (self.flushed % self.size as u64) as usize;
            let len = ((position - self.flushed) as usize).min(self.size - offset);
            self.bytes_mut()[offset..offset + len].fill(0);
            self.flushed += len as u64;
        }
    }

    /// Its size in bytes: no batch of lines larger than this can ever be pushed.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.written == self.flushed
    }

    pub(crate) fn written(&self) -> u64 {
        self.written
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `map` is a live mapping of `size` bytes until drop.
        unsafe { std::slice::from_raw_parts(self.map, self.size) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above; `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.map, self.size) }
    }
}

/// The complete lines the journal of `dir` holds (none if it has no journal): after a crash, lines
/// that may not have reached the day files, mixed with older lines that did, which the caller
/// tells apart by their sequence. Read through the page cache rather than a mapping: pages of a
/// mapping count in the process's memory once touched, and an idle server touches none.
pub(crate) fn held(dir: &Path, size: usize) -> io::Result<Vec<Vec<u8>>> {
    use std::io::Read;
    let file = match File::open(dir.join(FILE_NAME)) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    file.take(size as u64).read_to_end(&mut bytes)?;
    Ok(lines(&bytes))
}

impl Drop for Journal {
    fn drop(&mut self) {
        // SAFETY: unmapping the mapping made in `open`, which nothing references any more.
        unsafe {
            libc::munmap(self.map.cast(), self.size);
        }
    }
}

/// The complete lines in a journal's bytes (without their `\n`): runs between newlines, without
/// zeros around them, that are not empty. Fragments of overwritten lines come out too; the caller
/// keeps only records that parse and continue the chain.
fn lines(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while let Some(end) = rest.iter().position(|&b| b == b'\n') {
        let line = &rest[..end];
        let start = line.iter().rposition(|&b| b == 0).map_or(0, |i| i + 1);
        if start < line.len() {
            out.push(line[start..].to_vec());
        }
        rest = &rest[end + 1..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_wrap_and_are_found_again_after_a_crash() {
        let tmp = crate::tests::TempDir::new("journal");
        assert!(held(tmp.path(), 64).unwrap().is_empty());
        let mut journal = Journal::open(tmp.path(), 64).unwrap();
        assert!(journal.push(b"aaaaaaaaaaaaaaaaaaa\n")); // 20 bytes at 0
        assert!(journal.push(b"bbbbbbbbbbbbbbbbbbb\n")); // 20 at 20
        assert!(!journal.push(&[b'x'; 40]), "no room before anything is released");
        assert_eq!(journal.pending(), vec![(0, &b"aaaaaaaaaaaaaaaaaaa\nbbbbbbbbbbbbbbbbbbb\n"[..])]);
        journal.release(20);
        assert!(journal.push(b"ccccccccccccccccccc\n")); // 20 at 40
                                                         // 4 bytes left before the end: a 10-byte line skips them and starts at 0.
        assert!(journal.push(b"ddddddddd\n"));
        let pending = journal.pending();
        assert_eq!(pending.len(), 2);
        assert_eq!(pending[0], (20, &b"bbbbbbbbbbbbbbbbbbb\nccccccccccccccccccc\n\0\0\0\0"[..]));
        assert_eq!(pending[1], (64, &b"ddddddddd\n"[..]));
        assert!(!journal.push(b"eeeeeeeeeeeeeeeeeee\n"), "b and c are still unflushed");
        drop(journal);
        // Reopened (a crash): the lines not released are found, the released one is not.
        let found: Vec<String> =
            held(tmp.path(), 64).unwrap().into_iter().map(|l| String::from_utf8(l).unwrap()).collect();
        let mut journal = Journal::open(tmp.path(), 64).unwrap();
        assert_eq!(found, ["ddddddddd", "bbbbbbbbbbbbbbbbbbb", "ccccccccccccccccccc"]);
        assert!(journal.is_empty());
        assert!(journal.push(b"ddddddddd\n"));
        journal.release(journal.written());
        drop(journal);
        assert!(held(tmp.path(), 64).unwrap().is_empty(), "an open starts from zeros");
    }
}

//! Reading an `$import` input: NDJSON, line by line, from wherever its URL points.
//!
//! Accepted inputs:
//! - this server's own export files (`{base}/_operations/export/{id}/{file}`), read from the bulk
//!   storage directly, so that an export can be imported into the server that made it;
//! - local files (`file:///…` or an absolute path) under the directories the operator allowed
//!   (`--import-root`, and the bulk storage directory): an import must not read arbitrary files of
//!   the server's machine.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};

/// Bytes read from a file per call.
const CHUNK: usize = 1 << 20;
/// Longest line accepted: one resource; a longer one is a broken input, not a resource.
pub(crate) const MAX_LINE: usize = 64 << 20;

/// Where an input's bytes come from.
pub(crate) enum Source {
    File(Arc<Mutex<std::fs::File>>),
    /// Bytes at hand (tests).
    #[cfg(test)]
    Memory(Option<Bytes>),
}

impl Source {
    /// A local file, if it is under one of `roots`.
    pub(crate) fn file(path: &Path, roots: &[PathBuf]) -> Result<Source, String> {
        let canonical = path.canonicalize().map_err(|e| format!("cannot open the input: {}", e.kind()))?;
        let allowed = roots.iter().filter_map(|r| r.canonicalize().ok()).any(|root| canonical.starts_with(root));
        if !allowed {
            return Err("the input is not under a directory this server may import from (--import-root)".into());
        }
        let file = std::fs::File::open(&canonical).map_err(|e| format!("cannot open the input: {}", e.kind()))?;
        Ok(Source::File(Arc::new(Mutex::new(file))))
    }

    /// The next bytes, or `None` at the end.
    async fn chunk(&mut self) -> Result<Option<Bytes>, String> {
        match self {
            #[cfg(test)]
            Source::Memory(bytes) => Ok(bytes.take()),
            Source::File(file) => {
                let file = file.clone();
                tokio::task::spawn_blocking(move || {
                    let mut buffer = vec![0; CHUNK];
                    let mut file = file.lock().unwrap_or_else(|e| e.into_inner());
                    let n = file.read(&mut buffer).map_err(|e| format!("cannot read the input: {}", e.kind()))?;
                    buffer.truncate(n);
                    Ok((n > 0).then(|| Bytes::from(buffer)))
                })
                .await
                .map_err(|e| format!("the input reader stopped: {e}"))?
            }
        }
    }
}

/// Lines of a [`Source`], without their line ends; blank lines are kept (and numbered).
pub(crate) struct Lines {
    source: Source,
    pending: BytesMut,
    done: bool,
}

impl Lines {
    pub(crate) fn new(source: Source) -> Lines {
        Lines { source, pending: BytesMut::new(), done: false }
    }

    /// The next line, or `None` at the end of the input.
    pub(crate) async fn next(&mut self) -> Result<Option<Bytes>, String> {
        loop {
            if let Some(at) = self.pending.iter().position(|b| *b == b'\n') {
                let mut line = self.pending.split_to(at + 1).freeze();
                line.truncate(at);
                if line.last() == Some(&b'\r') {
                    line.truncate(at - 1);
                }
                return Ok(Some(line));
            }
            if self.done {
                if self.pending.is_empty() {
                    return Ok(None);
                }
                return Ok(Some(std::mem::take(&mut self.pending).freeze()));
            }
            if self.pending.len() > MAX_LINE {
                return Err(format!("a line is longer than {} MiB", MAX_LINE >> 20));
            }
            match self.source.chunk().await? {
                Some(chunk) => self.pending.extend_from_slice(&chunk),
                None => self.done = true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_with_and_without_a_last_newline() {
        for (text, expected) in
            [("a\nb\n", vec!["a", "b"]), ("a\r\nb", vec!["a", "b"]), ("a\n\nb\n", vec!["a", "", "b"]), ("", vec![])]
        {
            let mut lines = Lines::new(Source::Memory(Some(Bytes::from(text))));
            let mut got = Vec::new();
            while let Some(line) = lines.next().await.unwrap() {
                got.push(String::from_utf8(line.to_vec()).unwrap());
            }
            assert_eq!(got, expected, "{text:?}");
        }
    }

    #[test]
    fn files_outside_the_roots_are_refused() {
        let dir = std::env::temp_dir().join(format!("fhirside-source-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("allowed")).unwrap();
        std::fs::write(dir.join("allowed/in.ndjson"), "{}\n").unwrap();
        std::fs::write(dir.join("outside.ndjson"), "{}\n").unwrap();
        let roots = [dir.join("allowed")];
        assert!(Source::file(&dir.join("allowed/in.ndjson"), &roots).is_ok());
        assert!(Source::file(&dir.join("outside.ndjson"), &roots).is_err());
        assert!(Source::file(&dir.join("allowed/../outside.ndjson"), &roots).is_err());
        let _ = std::fs::remove_dir_all(dir);
    }
}

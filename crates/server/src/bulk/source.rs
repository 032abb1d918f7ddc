//! Reading an `$import` input line by line, from an object reader of any backend.

use bytes::{Bytes, BytesMut};
use fhirside_objects::ObjectReader;

/// Longest line accepted: one resource; a longer one is a broken input, not a resource.
pub(crate) const MAX_LINE: usize = 64 << 20;

/// Where an input's bytes come from.
pub(crate) enum Source {
    Object(ObjectReader),
    /// Bytes at hand (tests).
    #[cfg(test)]
    Memory(Option<Bytes>),
}

impl Source {
    /// The next bytes, or `None` at the end.
    async fn chunk(&mut self) -> Result<Option<Bytes>, String> {
        match self {
            #[cfg(test)]
            Source::Memory(bytes) => Ok(bytes.take()),
            Source::Object(reader) => reader.chunk().await.map_err(|e| e.to_string()),
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
}

//! An object's content, read part by part, whether it comes from a local file or an HTTP
//! response: exports and imports can be many gigabytes, so nothing is read whole unless asked.

use bytes::{Bytes, BytesMut};
use fhirside_fetch::StreamingResponse;
use tokio::io::AsyncReadExt;

use crate::errors::from_fetch;
use crate::ObjectError;

/// How much of a local file one [`ObjectReader::chunk`] returns at most.
const FILE_CHUNK: usize = 1 << 20;

pub struct ObjectReader {
    source: Source,
    size: Option<u64>,
}

enum Source {
    File {
        file: tokio::fs::File,
        what: String,
    },
    Http {
        response: StreamingResponse,
        what: String,
    },
    /// Content already in memory (an object its reader had to see whole, such as a sealed file).
    Memory(Option<Bytes>),
}

impl std::fmt::Debug for ObjectReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.source {
            Source::File { .. } => "file",
            Source::Http { .. } => "http",
            Source::Memory(_) => "memory",
        };
        f.debug_struct("ObjectReader").field("source", &kind).field("size", &self.size).finish()
    }
}

impl ObjectReader {
    /// `what` names the operation for errors ("local get in 'exports'").
    pub(crate) fn file(file: tokio::fs::File, size: u64, what: String) -> ObjectReader {
        ObjectReader { source: Source::File { file, what }, size: Some(size) }
    }

    pub(crate) fn http(response: StreamingResponse, what: String) -> ObjectReader {
        let size = response.content_length();
        ObjectReader { source: Source::Http { response, what }, size }
    }

    /// Content held in memory, as one chunk.
    pub fn from_bytes(data: Bytes) -> ObjectReader {
        let size = Some(data.len() as u64);
        ObjectReader { source: Source::Memory((!data.is_empty()).then_some(data)), size }
    }

    /// The object's size when known in advance (a file's length, a `Content-Length`).
    pub fn size(&self) -> Option<u64> {
        self.size
    }

    /// The next part of the content, or `None` at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, ObjectError> {
        match &mut self.source {
            Source::File { file, what } => {
                let mut buffer = BytesMut::with_capacity(FILE_CHUNK);
                while buffer.len() < FILE_CHUNK {
                    let read = file.read_buf(&mut buffer).await.map_err(|e| crate::errors::from_io(what, &e))?;
                    if read == 0 {
                        break;
                    }
                }
                Ok((!buffer.is_empty()).then(|| buffer.freeze()))
            }
            Source::Http { response, what } => response.chunk().await.map_err(|e| from_fetch(what, e)),
            Source::Memory(data) => Ok(data.take()),
        }
    }

    /// Reads the rest of the content into memory, refusing more than `limit` bytes.
    pub async fn read_to_end(mut self, limit: usize) -> Result<Vec<u8>, ObjectError> {
        let mut data = Vec::new();
        while let Some(chunk) = self.chunk().await? {
            if data.len() + chunk.len() > limit {
                return Err(ObjectError::Rejected(format!("the object is larger than {limit} bytes")));
            }
            data.extend_from_slice(&chunk);
        }
        Ok(data)
    }
}

//! What the bench binaries share: the `ingest` and `search` load clients talk to the server through
//! the minimal [`http`] client and read its answers with the minimal [`json`] scanner. Both are
//! hand-written so that the bench crate needs no HTTP client or JSON dependency.

pub mod http;
pub mod json;

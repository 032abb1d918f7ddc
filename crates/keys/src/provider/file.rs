//! A key-encryption key in a file: 32 raw bytes, or their base64 (e.g. `openssl rand -base64 32
//! > kek && chmod 600 kek`).
//!
//! A file that its group or others may read or write is refused, as ssh refuses such a private
//! key: the key protects every record, so a loose mode is a mistake to stop at, not to warn about.

use std::io::Read;
use std::path::Path;

use super::LocalKek;
use crate::cipher::DEK_LEN;
use crate::error::KeyError;
use crate::zeroize::Zeroizing;

/// A key file is never larger than this (base64 of 32 bytes with white space).
const MAX_FILE_LEN: u64 = 1024;

impl LocalKek {
    /// Reads a key file. Its mode must give no permission to group or others (`0600`, `0400`).
    pub fn from_file(path: &Path) -> Result<LocalKek, KeyError> {
        let source = format!("the key file {}", path.display());
        let fail = |reason: String| KeyError::KeySource { source: source.clone(), reason };
        let mut file = std::fs::File::open(path).map_err(|e| fail(format!("cannot open it: {e}")))?;
        let metadata = file.metadata().map_err(|e| fail(format!("cannot read its metadata: {e}")))?;
        check_mode(&metadata).map_err(fail)?;
        if metadata.len() > MAX_FILE_LEN {
            return Err(fail(format!("it is {} bytes, too large for a key", metadata.len())));
        }
        let mut contents = Zeroizing::new(Vec::with_capacity(MAX_FILE_LEN as usize));
        file.read_to_end(&mut contents).map_err(|e| fail(format!("cannot read it: {e}")))?;
        if contents.len() == DEK_LEN {
            // Base64 of 32 bytes is 43 or 44 characters, so 32 bytes can only be the raw key.
            return LocalKek::from_bytes(&source, &contents);
        }
        let text = std::str::from_utf8(&contents).map_err(|_| fail("not 32 raw bytes, and not base64".to_owned()))?;
        LocalKek::from_base64(&source, text)
    }
}

#[cfg(unix)]
fn check_mode(metadata: &std::fs::Metadata) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "its mode {mode:04o} lets its group or others read or write it; make it readable by its owner only (chmod 600)"
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_mode(_metadata: &std::fs::Metadata) -> Result<(), String> {
    Ok(())
}

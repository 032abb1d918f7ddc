//! Why a ciphertext did not open, or a key could not be had: in words fit for logs and for the
//! message a server prints when it refuses to start. No error carries key material, plaintext,
//! a token or a wrapped key.

use std::fmt;

use crate::format::DekId;

/// Why a ciphertext did not decrypt. Reading never returns bytes that did not authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CipherError {
    /// Shorter than the smallest ciphertext of its format: cut off, or not a ciphertext at all.
    Truncated { len: usize },
    /// The first byte names no format this build reads (a newer build wrote it, or it is not a
    /// ciphertext: a plaintext JSON body starts with `{`).
    UnknownFormat { format: u8 },
    /// The ciphertext names a data key the keyring does not hold.
    UnknownDek { dek_id: DekId },
    /// The tag did not verify: the bytes were altered, the associated data differs (the
    /// ciphertext was moved to another row), or another key with this id sealed it.
    Authentication { dek_id: DekId },
}

impl fmt::Display for CipherError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CipherError::Truncated { len } => write!(f, "the ciphertext is truncated ({len} bytes)"),
            CipherError::UnknownFormat { format } => {
                write!(f, "unknown ciphertext format 0x{format:02x} (not a ciphertext, or written by a newer version)")
            }
            CipherError::UnknownDek { dek_id } => write!(f, "the ciphertext names data key {dek_id}, which the keyring does not hold"),
            CipherError::Authentication { dek_id } => write!(
                f,
                "the ciphertext does not authenticate under data key {dek_id}: altered, moved to other associated data, or sealed by another key"
            ),
        }
    }
}

impl std::error::Error for CipherError {}

/// Why a key-encryption key could not wrap or unwrap, or a keyring could not be built. Every
/// variant a server can meet at start-up means "refuse to start": see [`KeyError::kek_id`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// The data keys are wrapped by one key-encryption key, and another is configured.
    KekMismatch { wrapped_by: String, configured: String },
    /// The key-encryption key refused a wrapped data key: it is the wrong key, or the wrapped
    /// key was altered.
    Unwrap { kek_id: String, kek_version: String, reason: String },
    /// A local key (file or environment variable) cannot be used: missing, unreadable, readable
    /// by others, or not 32 bytes.
    KeySource { source: String, reason: String },
    /// The key service answered with an error status (its message, which carries no secret).
    Remote { kek_id: String, status: u16, message: String },
    /// The key service could not be reached (the URL is shown without query or user info).
    Unreachable { kek_id: String, reason: String },
    /// The key service answered something this client does not understand.
    InvalidResponse { kek_id: String, reason: String },
    /// A provider's configuration cannot work (a key name that is not a URL path segment…).
    InvalidConfig { reason: String },
    /// A stored keyring is inconsistent (no active key, a repeated id…).
    InvalidKeyring { reason: String },
}

impl KeyError {
    /// The key-encryption key concerned, for the "refuse to start" message.
    pub fn kek_id(&self) -> Option<&str> {
        match self {
            KeyError::KekMismatch { wrapped_by, .. } => Some(wrapped_by),
            KeyError::Unwrap { kek_id, .. }
            | KeyError::Remote { kek_id, .. }
            | KeyError::Unreachable { kek_id, .. }
            | KeyError::InvalidResponse { kek_id, .. } => Some(kek_id),
            KeyError::KeySource { .. } | KeyError::InvalidConfig { .. } | KeyError::InvalidKeyring { .. } => None,
        }
    }
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::KekMismatch { wrapped_by, configured } => write!(
                f,
                "the data keys are wrapped by key-encryption key {wrapped_by}, but the configured key is {configured}"
            ),
            KeyError::Unwrap { kek_id, kek_version, reason } => write!(
                f,
                "the key-encryption key {kek_id} (version {kek_version}) cannot unwrap the data keys: {reason}"
            ),
            KeyError::KeySource { source, reason } => write!(f, "cannot use the key in {source}: {reason}"),
            KeyError::Remote { kek_id, status, message } => {
                write!(f, "the key service of {kek_id} answered {status}: {message}")
            }
            KeyError::Unreachable { kek_id, reason } => write!(f, "cannot reach the key service of {kek_id}: {reason}"),
            KeyError::InvalidResponse { kek_id, reason } => {
                write!(f, "unexpected answer from the key service of {kek_id}: {reason}")
            }
            KeyError::InvalidConfig { reason } => write!(f, "invalid key provider configuration: {reason}"),
            KeyError::InvalidKeyring { reason } => write!(f, "the stored keyring is invalid: {reason}"),
        }
    }
}

impl std::error::Error for KeyError {}

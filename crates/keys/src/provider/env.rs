//! A key-encryption key in an environment variable, as base64 of 32 bytes: for containers whose
//! orchestrator injects secrets as variables. A file is preferable where there is a choice: a
//! process's environment is readable by its user in `/proc/<pid>/environ` and inherited by its
//! children, so a caller may want to remove the variable once the key is read.

use super::LocalKek;
use crate::error::KeyError;
use crate::zeroize::Zeroizing;

impl LocalKek {
    /// Reads the key from the variable `name` (base64 of 32 bytes).
    pub fn from_env(name: &str) -> Result<LocalKek, KeyError> {
        let source = format!("the environment variable {name}");
        let value = match std::env::var(name) {
            Ok(value) => Zeroizing::new(value),
            Err(std::env::VarError::NotPresent) => {
                return Err(KeyError::KeySource { source, reason: "it is not set".to_owned() })
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(KeyError::KeySource { source, reason: "it is not base64".to_owned() })
            }
        };
        LocalKek::from_base64(&source, &value)
    }
}

//! A keyring shared by the parts of a process that seal and open data (the resource store's
//! bodies, the server's blind indexes), swapped as a whole when a rotation is picked up.

use std::fmt;
use std::sync::{Arc, RwLock};

use crate::keyring::Keyring;

/// The process's keyring, or none on an installation without encryption at rest. Clones share
/// one cell: [`replace`](Self::replace) on one is seen by all, so a rotation reaches the store
/// and the search index together.
#[derive(Clone, Default)]
pub struct KeyringCell(Arc<RwLock<Option<Arc<Keyring>>>>);

impl KeyringCell {
    /// An empty cell: nothing is sealed until a keyring is [`replace`](Self::replace)d in.
    pub fn new() -> KeyringCell {
        KeyringCell::default()
    }

    /// The keyring in force, if encryption is on.
    pub fn get(&self) -> Option<Arc<Keyring>> {
        // A poisoned lock only means a thread panicked while swapping an `Arc`; the value is whole.
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether a keyring is in force.
    pub fn is_set(&self) -> bool {
        self.0.read().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// Puts `keyring` in force for every holder of this cell.
    pub fn replace(&self, keyring: Keyring) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(keyring));
    }
}

impl fmt::Debug for KeyringCell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.get() {
            Some(keyring) => f.debug_tuple("KeyringCell").field(&keyring).finish(),
            None => f.write_str("KeyringCell(none)"),
        }
    }
}

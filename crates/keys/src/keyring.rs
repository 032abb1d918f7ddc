//! The keyring: the data keys of an installation, unwrapped, with the one new data is sealed with.
//!
//! Its persistent form is a [`KeyringState`] (serializable; the caller keeps it next to the data,
//! e.g. in a settings row): each data key wrapped by the KEK, its id and creation time, and which
//! one is active. Opening it unwraps every key once; nothing calls the KEK afterwards, so a key
//! service that goes away after start-up does not stop reads or writes.
//!
//! A `Keyring` does not change. Rotation returns a new one whose state the caller stores first
//! and then swaps in (one `Arc` swap), so a crash between the two leaves the old state, which
//! still opens everything written so far:
//! - [`Keyring::rotate_kek`] re-wraps every data key under the provider's current version (or
//!   under another provider, to move from a key file to Vault). No data is re-encrypted, and each
//!   new wrap is unwrapped and compared before it is accepted, so a rotation cannot lose a key.
//! - [`Keyring::rotate_dek`] adds a new active data key; older ones stay for reading. Moving data
//!   to the new key is the caller's background job ([`Keyring::is_active`] says what is left),
//!   after which [`Keyring::retire`] drops the old key.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::blind::BlindIndex;
use crate::cipher::{constant_time_eq, fill_random, DataKey, Dek};
use crate::error::{CipherError, KeyError};
use crate::format::{self, DekId};
use crate::provider::{KeyProvider, WrappedKey};

/// One data key as stored: its id, when it was made (seconds since the Unix epoch) and its
/// wrapped bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredDek {
    pub id: DekId,
    pub created_at: u64,
    pub wrapped: WrappedKey,
}

/// A keyring as the caller stores it (JSON through serde).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyringState {
    /// The data key new data is sealed with.
    pub active: DekId,
    /// Every data key, oldest first.
    pub keys: Vec<StoredDek>,
}

/// What `fhirside keys status` shows: ids, versions and times, no key material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyringStatus {
    pub active: DekId,
    pub keys: Vec<DekStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DekStatus {
    pub id: DekId,
    pub active: bool,
    pub created_at: u64,
    pub kek_id: String,
    pub kek_version: String,
}

/// The unwrapped data keys. Cloning is cheap (the keys are shared).
#[derive(Clone)]
pub struct Keyring {
    active: Arc<DataKey>,
    keys: HashMap<DekId, Arc<DataKey>>,
    state: KeyringState,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring").field("active", &self.state.active).field("keys", &self.ids()).finish()
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Keyring {
    /// A new keyring with one fresh data key wrapped by `provider`. Store its
    /// [`state`](Self::state) before sealing anything with it.
    pub async fn create(provider: &dyn KeyProvider) -> Result<Keyring, KeyError> {
        let dek = Dek::generate();
        let id = new_id(&HashMap::new());
        let wrapped = provider.wrap(&dek).await?;
        let key = Arc::new(DataKey::new(id, dek));
        let state = KeyringState { active: id, keys: vec![StoredDek { id, created_at: now(), wrapped }] };
        Ok(Keyring { active: key.clone(), keys: HashMap::from([(id, key)]), state })
    }

    /// Unwraps every data key of a stored keyring. Any key that does not unwrap fails the whole
    /// keyring: a server must not start able to read only part of its data.
    pub async fn open(provider: &dyn KeyProvider, state: KeyringState) -> Result<Keyring, KeyError> {
        let mut keys = HashMap::new();
        for stored in &state.keys {
            let dek = provider.unwrap(&stored.wrapped).await?;
            if keys.insert(stored.id, Arc::new(DataKey::new(stored.id, dek))).is_some() {
                return Err(KeyError::InvalidKeyring { reason: format!("data key {} appears twice", stored.id) });
            }
        }
        let active = keys.get(&state.active).cloned().ok_or_else(|| KeyError::InvalidKeyring {
            reason: format!("the active data key {} is not among the keys", state.active),
        })?;
        Ok(Keyring { active, keys, state })
    }

    /// The persistent form, to store after [`create`](Self::create) and each rotation.
    pub fn state(&self) -> &KeyringState {
        &self.state
    }

    pub fn status(&self) -> KeyringStatus {
        KeyringStatus {
            active: self.state.active,
            keys: self
                .state
                .keys
                .iter()
                .map(|stored| DekStatus {
                    id: stored.id,
                    active: stored.id == self.state.active,
                    created_at: stored.created_at,
                    kek_id: stored.wrapped.kek_id.clone(),
                    kek_version: stored.wrapped.kek_version.clone(),
                })
                .collect(),
        }
    }

    pub fn active_id(&self) -> DekId {
        self.state.active
    }

    /// Every data key's id, oldest first.
    pub fn ids(&self) -> Vec<DekId> {
        self.state.keys.iter().map(|stored| stored.id).collect()
    }

    /// A new keyring whose active data key is a fresh one; the others stay for reading.
    pub async fn rotate_dek(&self, provider: &dyn KeyProvider) -> Result<Keyring, KeyError> {
        let dek = Dek::generate();
        let id = new_id(&self.keys);
        let wrapped = provider.wrap(&dek).await?;
        let key = Arc::new(DataKey::new(id, dek));
        let mut next = self.clone();
        next.keys.insert(id, key.clone());
        next.active = key;
        next.state.active = id;
        next.state.keys.push(StoredDek { id, created_at: now(), wrapped });
        Ok(next)
    }

    /// A new keyring whose data keys are all wrapped by `provider`'s current version, and how
    /// many were re-wrapped. A key already wrapped by that version is kept as it is; one wrapped
    /// by an older version of the same KEK is rewrapped by the provider (inside Vault, for
    /// Vault); one wrapped by another KEK is wrapped from the copy this keyring holds.
    pub async fn rotate_kek(&self, provider: &dyn KeyProvider) -> Result<(Keyring, usize), KeyError> {
        let current = provider.current_version().await?;
        let mut next = self.clone();
        let mut rewrapped = 0;
        for stored in &mut next.state.keys {
            let same_kek = stored.wrapped.kek_id == provider.id();
            if same_kek && stored.wrapped.kek_version == current {
                continue;
            }
            let held = &self.keys[&stored.id].dek;
            let wrapped = if same_kek { provider.rewrap(&stored.wrapped).await? } else { provider.wrap(held).await? };
            // Accept the new wrap only once it has been seen to give back the same key.
            let check = provider.unwrap(&wrapped).await?;
            if !constant_time_eq(check.as_bytes(), held.as_bytes()) {
                return Err(KeyError::Unwrap {
                    kek_id: provider.id().to_owned(),
                    kek_version: wrapped.kek_version,
                    reason: format!("data key {} re-wrapped does not unwrap to itself; nothing was changed", stored.id),
                });
            }
            stored.wrapped = wrapped;
            rewrapped += 1;
        }
        Ok((next, rewrapped))
    }

    /// A new keyring without the data key `id`, once nothing is sealed with it any more. The
    /// active key cannot be retired.
    pub fn retire(&self, id: DekId) -> Result<Keyring, KeyError> {
        if id == self.state.active {
            return Err(KeyError::InvalidKeyring { reason: format!("data key {id} is active and cannot be retired") });
        }
        if !self.keys.contains_key(&id) {
            return Err(KeyError::InvalidKeyring { reason: format!("data key {id} is not in the keyring") });
        }
        let mut next = self.clone();
        next.keys.remove(&id);
        next.state.keys.retain(|stored| stored.id != id);
        Ok(next)
    }

    /// Seals `plaintext` with the active data key (format 0x01, a random nonce). `aad` is what
    /// the ciphertext belongs to — a row's identity such as `Patient/123/_history/2` — and must
    /// be given again to decrypt: a ciphertext copied to another row does not open.
    pub fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        self.active.encrypt(plaintext, aad)
    }

    /// Seals `plaintext` so that the same `(purpose, plaintext)` always gives the same bytes under
    /// one data key (format 0x02): a value that must be both decryptable and comparable for
    /// equality. The purpose (e.g. `identifier`) is the associated data: decrypt with
    /// `decrypt(ciphertext, purpose.as_bytes())`. No row identity can be bound, by design.
    pub fn encrypt_deterministic(&self, purpose: &str, plaintext: &[u8]) -> Vec<u8> {
        self.active.encrypt_deterministic(purpose, plaintext)
    }

    /// The deterministic ciphertexts of `(purpose, plaintext)` under every data key, for a search
    /// while data is being moved to a new key (`column IN (…)`).
    pub fn encrypt_deterministic_all(&self, purpose: &str, plaintext: &[u8]) -> Vec<Vec<u8>> {
        self.ordered().map(|key| key.encrypt_deterministic(purpose, plaintext)).collect()
    }

    /// Opens a ciphertext of either format with the data key it names. For a deterministic
    /// ciphertext `aad` is its purpose.
    pub fn decrypt(&self, ciphertext: &[u8], aad: &[u8]) -> Result<Vec<u8>, CipherError> {
        let parsed = format::parse(ciphertext)?;
        let key = self.keys.get(&parsed.dek_id).ok_or(CipherError::UnknownDek { dek_id: parsed.dek_id })?;
        key.decrypt(&parsed, aad)
    }

    /// Whether a ciphertext is sealed with the active data key (a re-encryption job's test).
    pub fn is_active(&self, ciphertext: &[u8]) -> Result<bool, CipherError> {
        Ok(format::dek_id_of(ciphertext)? == self.state.active)
    }

    /// The blind index of `value` for `purpose` under the active data key, to store.
    pub fn blind_index(&self, purpose: &str, value: &[u8]) -> BlindIndex {
        self.active.blind.index(purpose, value)
    }

    /// The blind indexes of `value` for `purpose` under every data key, to search with while
    /// rows indexed under an older key remain (`column IN (…)`); one entry when there is one key.
    pub fn blind_indexes(&self, purpose: &str, value: &[u8]) -> Vec<BlindIndex> {
        self.ordered().map(|key| key.blind.index(purpose, value)).collect()
    }

    /// The data keys, active first, then the others oldest first.
    fn ordered(&self) -> impl Iterator<Item = &Arc<DataKey>> {
        std::iter::once(&self.active).chain(
            self.state.keys.iter().filter(|stored| stored.id != self.state.active).map(|stored| &self.keys[&stored.id]),
        )
    }
}

/// A random id no key of the keyring has. Random rather than counted so that two installations
/// (or a restored backup) do not hand out the same ids to different keys.
fn new_id(taken: &HashMap<DekId, Arc<DataKey>>) -> DekId {
    loop {
        let mut bytes = [0u8; 4];
        fill_random(&mut bytes);
        let id = DekId(u32::from_be_bytes(bytes));
        if !taken.contains_key(&id) {
            return id;
        }
    }
}

#[cfg(test)]
mod tests;

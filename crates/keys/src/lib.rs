//! Fhirside's encryption at rest: envelope encryption of stored values, the keys behind it and
//! their rotation, and the two ways to search what is encrypted (blind indexes, deterministic
//! encryption). The resource store, the audit trail and bulk files use it.
//!
//! It knows bytes, keys and key services. It must not know FHIR, SQL or serving HTTP: what a
//! value is, which column it goes to and how it is normalized are the caller's; the only HTTP it
//! speaks is as a client of Vault and Azure Key Vault, through `fhirside-fetch`.
//!
//! # Envelope encryption
//!
//! ```text
//! KEK (KeyProvider: key file, env var, Vault transit, Azure Key Vault)
//!  └─ wraps ─▶ data keys (DEKs, 256-bit random; stored wrapped, in a KeyringState)
//!               └─ seal ─▶ values (AES-256-GCM; the ciphertext names its DEK)
//! ```
//!
//! The KEK stays where the operator keeps it; a data key is unwrapped once, when the
//! [`Keyring`] is opened at start-up. A KEK that is missing or wrong fails [`Keyring::open`]
//! with a [`KeyError`] naming the KEK ([`KeyError::kek_id`]), which a server turns into "refuse
//! to start: the key cannot unwrap the data keys (kek id …)" — never into serving garbage: a
//! ciphertext that does not authenticate is a [`CipherError`], never bytes.
//!
//! Rotating the KEK re-wraps the data keys (a few small calls, no data touched); rotating the data
//! key starts a new active key, older ones staying for reading (see [`keyring`](Keyring)).
//!
//! # Ciphertext format
//!
//! `format (1) ‖ DEK id (4, big-endian) ‖ nonce (12) ‖ ciphertext ‖ GCM tag (16)`: 33 bytes of
//! overhead. Format `0x01` is randomized AES-256-GCM, `0x02` deterministic (a synthetic IV). The
//! GCM associated data is the 5-byte header followed by the caller's associated data. Details and
//! the reasons for each field are in the [`format`](mod@format) module.
//!
//! # Search on encrypted data: what leaks, and why
//!
//! Encrypting a search index value with a random nonce makes it unsearchable. Two constructions
//! keep *equality* search working, at the price of revealing *equality*:
//!
//! - **Blind index** ([`Keyring::blind_index`]): HMAC-SHA256 of the normalized value under a key
//!   derived from the data key per purpose. Stored instead of the value; a search computes the
//!   index of the searched value and compares. Not decryptable; 32 bytes whatever the value's
//!   length.
//! - **Deterministic encryption** ([`Keyring::encrypt_deterministic`]): the same (purpose, value)
//!   gives the same ciphertext, which also decrypts. For a value that must be both compared and
//!   read back from the index (e.g. to post-filter or to sort a small candidate set).
//!
//! What a reader of the database (a backup, a DBA, an attacker with the files but not the KEK)
//! learns from them:
//! - **equality**: which rows share a value for a purpose (all patients with identifier X, all
//!   names equal to Y) — this is what makes the search work;
//! - **frequency**: how often each (unknown) value occurs. Low-entropy values fall to frequency
//!   analysis: a gender or a status code is guessed from its distribution alone. That is why only
//!   values with many distinct values (identifiers, names) are worth blinding, and codes are not
//!   hidden by it;
//! - **length**, for deterministic and randomized ciphertexts (a ciphertext is its plaintext plus
//!   33 bytes), not for blind indexes;
//! - **which data key** sealed a value (the DEK id), so roughly when it was written;
//! - **access patterns**: which rows a search touched, and, to whoever sees the queries, that two
//!   searches were for the same value.
//!
//! It does not learn the values, cannot test a guess (every construction is keyed by the data
//! key, unlike a bare hash that falls to a dictionary of names), cannot relate a value under one
//! purpose to the same value under another (keys per purpose), and cannot move a randomized
//! ciphertext to another row (its associated data is the row's identity).
//!
//! **What equality cannot do.** A blind index or a deterministic ciphertext keeps no order and no
//! prefix. So these FHIR searches do not work on such values: `string` (whose default is
//! *starts with*, case- and accent-insensitive), `:contains`, `:above`/`:below` on URIs, date,
//! number and quantity ranges (`lt`, `ge`, `ap`…), `_sort`, and full text (`_text`,
//! `_content`). Order-preserving encryption would answer ranges but leaks the order and,
//! empirically, most of the values: it is not offered.
//!
//! **Proposal for the integration** (which values stay plaintext, which are blinded or bucketed):
//! - *Resource bodies, history, audit records, bulk files, relay messages*: randomized encryption,
//!   associated data = the row's identity (`Type/id/_history/version`, the audit record's
//!   sequence, the file's name). Nothing is searched in them.
//! - *Token parameters of identifiers* (`identifier`, `subject:identifier`,
//!   `identifier:of-type`, telecom): a blind index (`token`) of the normalized `system|value`,
//!   plus one of `|value` for searches without a system. Equality is all FHIR asks of tokens.
//! - *Other tokens* (codes from code systems: `gender`, `status`, `code`, `category`): plaintext.
//!   They carry no identifier, their frequency would give them away anyway, and `:above`,
//!   `:below`, `:in`, `:not-in` need the codes.
//! - *Strings* (`name`, `family`, `given`, `address`, `phonetic`): a blind index
//!   (`string-exact`) of the exact value for `:exact`, and blind indexes (`string-prefix`) of the
//!   normalized value's prefixes of 3 to 12 characters for the default *starts with*: a search
//!   of 3–12 characters is one equality; a longer one uses its 12-character prefix and
//!   post-filters the candidates by decrypting a deterministic ciphertext of the normalized value
//!   kept in the row. Searches shorter than 3 characters and `:contains` are refused on an
//!   encrypted installation with an OperationOutcome that says why. This leaks which values share
//!   a prefix (of ≥ 3 characters), more than exact equality: the operator chooses it per
//!   parameter, and the default is exact-only for `address`.
//! - *Dates of a person* (`birthdate`, `death-date`): bucketed — the year stays plaintext (what
//!   HIPAA's Safe Harbor allows; years above 89 years of age fold into one bucket), the full value
//!   is a deterministic ciphertext. A range search selects the candidate years in SQL and
//!   post-filters by decrypting. Other dates (`date`, `_lastUpdated`, `period`, `issued`) stay
//!   plaintext: ranges over clinical timelines are the core of FHIR search, and they are tied to
//!   a resource whose content is encrypted, not to a name.
//! - *Numbers and quantities*: plaintext (values without identity).
//! - *References and compartments*: plaintext. They are server-assigned ids, which link
//!   resources but identify no one; a client that chooses ids (`PUT` with a medical record
//!   number as id) puts PHI into them, which the documentation must warn about.
//! - *`_sort` on an encrypted string*: sort the page's candidates after decrypting, bounded by
//!   the page size, or refuse; *full text*: off on encrypted installations, or per-word blind
//!   indexes (`text-word`) that leak word frequencies, as the operator chooses.
//!
//! A search index built under one data key does not match values indexed under another: while a
//! re-encryption job moves rows to a new data key, searches use [`Keyring::blind_indexes`] /
//! [`Keyring::encrypt_deterministic_all`], one value per key held (`IN (…)`).
//!
//! # Cost
//!
//! On one core with AES-NI (`examples/throughput.rs`, which records a run): encrypt + decrypt of
//! a 1 KiB body 0.6 µs, of 8 KiB 1.9 µs; a blind index 0.19 µs; deterministic encryption of a
//! token 0.33 µs. Against about 300 µs of CPU per ingested resource and 30 µs per read by id,
//! the cryptography itself is about 1 % of either.
//!
//! # Key material
//!
//! Keys are held in [`Zeroizing`] buffers that are overwritten on drop, and no type of this crate
//! shows key bytes in `Debug`, `Display` or an error. What that cannot cover is listed in the
//! `zeroize` module.

mod blind;
mod cell;
mod cipher;
mod error;
pub mod format;
mod keyring;
mod provider;
mod text;
mod zeroize;

pub use blind::BlindIndex;
pub use cell::KeyringCell;
pub use cipher::{Dek, DEK_LEN};
pub use error::{CipherError, KeyError};
pub use format::DekId;
pub use keyring::{DekStatus, Keyring, KeyringState, KeyringStatus, StoredDek};
pub use provider::{
    AzureKeyVault, AzureKeyVaultConfig, BoxFuture, KeyProvider, LocalKek, VaultConfig, VaultTransit, WrappedKey,
    AZURE_API_VERSION,
};
pub use text::is_sealed_text;
pub use zeroize::{Zeroize, Zeroizing};

//! Where bulk data lives: the NDJSON files `$export` writes and `$import` reports errors in, in
//! containers (a directory, a blob container, a bucket) under keys, through
//! [`fhirside_objects::ObjectStore`]: a local directory, Azure Blob Storage or S3.
//!
//! On the embedded default the files are in `<data dir>/bulk/<container>/…` and the server serves
//! them itself, to callers with the `export` data action, at `/_operations/export/{id}/{file}`
//! (the manifest's `requiresAccessToken` is then true when authentication is on). Several replicas
//! need storage they all reach: Blob or S3, whose URLs the manifest gives.

pub(crate) mod expiry;
mod sealed;
pub(crate) mod source;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use fhirside_fetch::Client;
use fhirside_objects::{Backend, ObjectError, ObjectReader, ObjectStore};

/// Largest file the server reads whole to serve it.
const MAX_SERVED: usize = 4 << 30;

/// The bulk data storage of an installation.
#[derive(Debug, Clone)]
pub struct BulkStorage {
    objects: ObjectStore,
    /// Fetches `$import` inputs given as URLs outside the store.
    client: Client,
    /// Encryption at rest of the files in a local directory ([`sealed`]).
    keys: Option<fhirside_keys::KeyringCell>,
}

impl BulkStorage {
    pub fn new(objects: ObjectStore, client: Client) -> BulkStorage {
        BulkStorage { objects, client, keys: None }
    }

    /// Seals the files written to a local directory with the installation's keyring.
    pub fn sealed_with(mut self, keys: fhirside_keys::KeyringCell) -> BulkStorage {
        self.keys = Some(keys);
        self
    }

    /// The keyring files are sealed with: only for a local directory.
    fn sealing(&self) -> Option<std::sync::Arc<fhirside_keys::Keyring>> {
        self.local_root()?;
        self.keys.as_ref()?.get()
    }

    /// Files under `root` (created when first written).
    pub fn local(root: PathBuf, client: Client) -> BulkStorage {
        BulkStorage::new(ObjectStore::new(Backend::Local { root }, client.clone()), client)
    }

    /// For the start-up banner; never a secret.
    pub fn describe(&self) -> String {
        self.objects.describe()
    }

    /// Whether the server itself serves the files (so the manifest's URLs are its own).
    pub(crate) fn served_here(&self) -> bool {
        matches!(self.objects.backend(), Backend::Local { .. })
    }

    /// The directory local files live in, when they do.
    pub(crate) fn local_root(&self) -> Option<&Path> {
        match self.objects.backend() {
            Backend::Local { root } => Some(root),
            _ => None,
        }
    }

    /// Creates `container` unless it exists: once per job, before its first file.
    pub(crate) async fn prepare(&self, container: &str) -> Result<(), String> {
        self.objects.ensure_container(container).await.map_err(|e| e.to_string())
    }

    /// Stores `body` at `container`/`key`, replacing what was there; whole or not at all.
    pub(crate) async fn put(&self, container: &str, key: &str, body: Bytes) -> Result<(), String> {
        let body = match self.sealing() {
            Some(keyring) => sealed::seal(&keyring, &format!("{container}/{key}"), &body),
            None => body,
        };
        self.objects.put(container, key, body, "application/fhir+ndjson").await.map_err(|e| e.to_string())
    }

    /// The object at `container`/`key`, or `None` when there is none.
    pub(crate) async fn get(&self, container: &str, key: &str) -> Result<Option<Bytes>, String> {
        match self.objects.get(container, key).await {
            Ok(reader) => {
                let stored: Bytes = reader.read_to_end(MAX_SERVED).await.map_err(|e| e.to_string())?.into();
                Ok(Some(self.opened(&format!("{container}/{key}"), stored)?))
            }
            Err(ObjectError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Removes every object of `container` whose key starts with `prefix` (a job's files).
    pub(crate) async fn delete_prefix(&self, container: &str, prefix: &str) -> Result<(), String> {
        match self.objects.delete_prefix(container, prefix).await {
            Ok(_) | Err(ObjectError::NotFound(_)) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Where clients fetch `container`/`key` from, when the server does not serve it itself.
    pub(crate) fn url(&self, container: &str, key: &str) -> String {
        self.objects.url(container, key)
    }

    /// The object at `container`/`key`, to read part by part.
    pub(crate) async fn open(&self, container: &str, key: &str) -> Result<ObjectReader, String> {
        let reader = self.objects.get(container, key).await.map_err(|e| e.to_string())?;
        if self.sealing().is_none() {
            return Ok(reader);
        }
        // Sealed files are opened whole; they were written whole.
        let stored: Bytes = reader.read_to_end(MAX_SERVED).await.map_err(|e| e.to_string())?.into();
        Ok(ObjectReader::from_bytes(self.opened(&format!("{container}/{key}"), stored)?))
    }

    /// A stored file's content, opened if it is sealed.
    fn opened(&self, name: &str, stored: Bytes) -> Result<Bytes, String> {
        if !sealed::is_sealed(&stored) {
            return Ok(stored);
        }
        let keyring = self.keys.as_ref().and_then(fhirside_keys::KeyringCell::get);
        sealed::open(keyring.as_deref(), name, stored)
    }

    /// An `$import` input given as a URL: an object of this store (its credentials apply), an
    /// https URL (or http on loopback), an `s3://` URL of the configured S3 store, or a local file
    /// under `roots`.
    pub(crate) async fn open_url(&self, url: &str, roots: &[PathBuf]) -> Result<ObjectReader, String> {
        let reader = fhirside_objects::open_source(url, Some(&self.objects), roots, &self.client)
            .await
            .map_err(|e| e.to_string())?;
        // A file of this installation's bulk directory, named by its path, is opened like one
        // named by container and key.
        let path = url.trim().strip_prefix("file:").unwrap_or(url.trim());
        let name = self.local_root().and_then(|root| Path::new(path).strip_prefix(root).ok());
        match (name, self.sealing()) {
            (Some(name), Some(_)) => {
                let stored: Bytes = reader.read_to_end(MAX_SERVED).await.map_err(|e| e.to_string())?.into();
                Ok(ObjectReader::from_bytes(self.opened(&name.to_string_lossy(), stored)?))
            }
            _ => Ok(reader),
        }
    }
}

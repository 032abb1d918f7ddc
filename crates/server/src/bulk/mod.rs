//! Where bulk data lives: the NDJSON files `$export` writes, in containers (a directory, a blob
//! container, a bucket) under keys.
//!
//! On the embedded default the files are in `<data dir>/bulk/<container>/…` and the server serves
//! them itself, to callers with the `export` data action, at `/_operations/export/{id}/{file}`
//! (the manifest's `requiresAccessToken` is then true). Several replicas need storage they all
//! reach; that is what the object-store backends are for.

pub(crate) mod source;

use std::path::{Component, Path, PathBuf};

use bytes::Bytes;

/// The bulk data storage of an installation.
#[derive(Debug, Clone)]
pub struct BulkStorage {
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Local { root: PathBuf },
}

impl BulkStorage {
    /// Files under `root` (created when first written).
    pub fn local(root: PathBuf) -> BulkStorage {
        BulkStorage { kind: Kind::Local { root } }
    }

    /// For the start-up banner.
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::Local { root } => format!("files in {}", root.display()),
        }
    }

    /// Whether the server itself serves the files (so the manifest's URLs are its own).
    pub(crate) fn served_here(&self) -> bool {
        matches!(self.kind, Kind::Local { .. })
    }

    /// The object at `container`/`key` as an import's input.
    pub(crate) fn open(&self, container: &str, key: &str) -> Result<source::Source, String> {
        match &self.kind {
            Kind::Local { root } => {
                let path = local_path(root, container, key)?;
                let file = std::fs::File::open(&path).map_err(|e| format!("cannot open {key}: {}", e.kind()))?;
                Ok(source::Source::File(std::sync::Arc::new(std::sync::Mutex::new(file))))
            }
        }
    }

    /// The directory local files live in, when they do.
    pub(crate) fn local_root(&self) -> Option<&Path> {
        match &self.kind {
            Kind::Local { root } => Some(root),
        }
    }

    /// Where clients fetch `container`/`key` from, when the server does not serve it itself.
    pub(crate) fn url(&self, container: &str, key: &str) -> String {
        match &self.kind {
            Kind::Local { root } => format!("file://{}", root.join(container).join(key).display()),
        }
    }

    /// Stores `body` at `container`/`key`, replacing what was there; whole or not at all.
    pub(crate) async fn put(&self, container: &str, key: &str, body: Bytes) -> Result<(), String> {
        match &self.kind {
            Kind::Local { root } => {
                let path = local_path(root, container, key)?;
                tokio::task::spawn_blocking(move || write_atomically(&path, &body))
                    .await
                    .map_err(|e| format!("the file writer stopped: {e}"))?
            }
        }
    }

    /// The object at `container`/`key`, or `None` when there is none.
    pub(crate) async fn get(&self, container: &str, key: &str) -> Result<Option<Bytes>, String> {
        match &self.kind {
            Kind::Local { root } => {
                let path = local_path(root, container, key)?;
                let read = tokio::task::spawn_blocking(move || std::fs::read(&path))
                    .await
                    .map_err(|e| format!("the file reader stopped: {e}"))?;
                match read {
                    Ok(bytes) => Ok(Some(bytes.into())),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(format!("cannot read bulk file {key}: {}", e.kind())),
                }
            }
        }
    }

    /// Removes every object of `container` whose key starts with `prefix` (a job's files), and the
    /// container itself when the prefix is empty.
    pub(crate) async fn delete_prefix(&self, container: &str, prefix: &str) -> Result<(), String> {
        match &self.kind {
            Kind::Local { root } => {
                let dir = if prefix.is_empty() {
                    local_path(root, container, "")?
                } else {
                    local_path(root, container, prefix.trim_end_matches('/'))?
                };
                let removed = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&dir))
                    .await
                    .map_err(|e| format!("the file remover stopped: {e}"))?;
                match removed {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(format!("cannot remove bulk files: {}", e.kind())),
                }
            }
        }
    }
}

/// Refuses a container or key that could leave the root: only plain relative segments.
fn local_path(root: &Path, container: &str, key: &str) -> Result<PathBuf, String> {
    let mut path = root.to_path_buf();
    for part in [container, key] {
        if part.is_empty() {
            continue;
        }
        let relative = Path::new(part);
        if part.contains('\0') || !relative.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(format!("'{part}' is not a plain relative name"));
        }
        path.push(relative);
    }
    Ok(path)
}

/// Writes through a temporary file, synced and renamed into place, so that a reader never sees a
/// half-written file and a crash leaves either the old one or the new one.
fn write_atomically(path: &Path, body: &[u8]) -> Result<(), String> {
    use std::io::Write;
    let dir = path.parent().ok_or("a bulk file needs a directory")?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {}", dir.display(), e.kind()))?;
    let temporary = path.with_extension(format!("partial-{}", std::process::id()));
    let mut file = std::fs::File::create(&temporary).map_err(|e| format!("cannot create a bulk file: {}", e.kind()))?;
    file.write_all(body)
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write a bulk file: {}", e.kind()))?;
    std::fs::rename(&temporary, path).map_err(|e| format!("cannot move a bulk file into place: {}", e.kind()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_leave_the_root() {
        let root = Path::new("/srv/bulk");
        assert_eq!(
            local_path(root, "export", "job/Patient-1.ndjson").unwrap(),
            root.join("export/job/Patient-1.ndjson")
        );
        for (container, key) in
            [("..", "x"), ("export", "../x"), ("export", "/etc/passwd"), ("a/../..", "x"), ("export", "a\0b")]
        {
            assert!(local_path(root, container, key).is_err(), "{container} {key}");
        }
    }
}

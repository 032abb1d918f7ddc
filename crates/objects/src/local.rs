//! Objects as files under a root directory: `{root}/{container}/{key}`, the key's `/` making
//! subdirectories. For a single server and for tests; nothing here can reach outside the root
//! (keys are checked, and the resolved path must still lie under the root, so a symbolic link
//! planted inside cannot lead out).
//!
//! A put is atomic: the body goes to a temporary file beside the target, which is flushed to disk
//! and then renamed over it, and the directory is flushed too, so a reader (or a crash) sees the
//! old object or the new one, never half of one.

use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::errors::from_io;
use crate::names::{self, TEMP_PREFIX};
use crate::reader::ObjectReader;
use crate::text::percent_encode;
use crate::ObjectError;

pub(crate) struct Local<'a> {
    pub root: &'a Path,
}

impl Local<'_> {
    pub fn url(&self, container: &str, key: &str) -> String {
        let path = self.root.join(container).join(key);
        let path = std::path::absolute(&path).unwrap_or(path);
        format!("file://{}", percent_encode(&path.to_string_lossy(), true))
    }

    pub async fn ensure_container(&self, container: &str) -> Result<(), ObjectError> {
        names::check_local_container(container)?;
        let directory = self.root.join(container);
        let what = format!("local create container '{container}'");
        blocking(move || std::fs::create_dir_all(&directory).map_err(|e| from_io(&what, &e))).await
    }

    pub async fn put(&self, container: &str, key: &str, body: Bytes) -> Result<(), ObjectError> {
        let container_dir = self.container_dir(container).await?;
        names::check_key(key)?;
        let what = format!("local put in '{container}'");
        let key = key.to_owned();
        blocking(move || {
            let target = container_dir.join(&key);
            let parent = target.parent().unwrap_or(&container_dir).to_path_buf();
            // Checked before creating directories (a link must not make them elsewhere) and
            // after (in case one was planted meanwhile).
            let mut existing = parent.clone();
            while !existing.exists() && existing.pop() {}
            inside(&container_dir, &existing, &what)?;
            std::fs::create_dir_all(&parent).map_err(|e| from_io(&what, &e))?;
            inside(&container_dir, &parent, &what)?;
            let temp = parent.join(format!("{TEMP_PREFIX}{}", random_suffix()));
            let written = (|| {
                let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(&temp)?;
                file.write_all(&body)?;
                file.sync_all()?;
                std::fs::rename(&temp, &target)?;
                // The rename is durable once the directory entry is.
                std::fs::File::open(&parent)?.sync_all()
            })();
            if let Err(e) = written {
                let _ = std::fs::remove_file(&temp);
                return Err(from_io(&what, &e));
            }
            Ok(())
        })
        .await
    }

    pub async fn get(&self, container: &str, key: &str) -> Result<ObjectReader, ObjectError> {
        let container_dir = self.container_dir(container).await?;
        names::check_key(key)?;
        let what = format!("local get in '{container}'");
        let path = container_dir.join(key);
        let (file, size) = {
            let what = what.clone();
            blocking(move || {
                let not_found = || ObjectError::NotFound(format!("{what}: no such object"));
                let resolved = path.canonicalize().map_err(|_| not_found())?;
                inside(&container_dir, &resolved, &what)?;
                let file = std::fs::File::open(&resolved).map_err(|e| from_io(&what, &e))?;
                let metadata = file.metadata().map_err(|e| from_io(&what, &e))?;
                if !metadata.is_file() {
                    return Err(not_found());
                }
                Ok((file, metadata.len()))
            })
            .await?
        };
        Ok(ObjectReader::file(tokio::fs::File::from_std(file), size, what))
    }

    pub async fn delete(&self, container: &str, key: &str) -> Result<(), ObjectError> {
        let container_dir = self.container_dir(container).await?;
        names::check_key(key)?;
        let what = format!("local delete in '{container}'");
        let path = container_dir.join(key);
        blocking(move || {
            let Some(parent) = path.parent().and_then(|p| p.canonicalize().ok()) else { return Ok(()) };
            inside(&container_dir, &parent, &what)?;
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(from_io(&what, &e)),
            }
            // Directories left empty go too, as they would not exist in a bucket.
            let mut directory = parent;
            while directory != container_dir && std::fs::remove_dir(&directory).is_ok() {
                match directory.parent() {
                    Some(up) => directory = up.to_path_buf(),
                    None => break,
                }
            }
            Ok(())
        })
        .await
    }

    pub async fn list(&self, container: &str, prefix: &str) -> Result<Vec<String>, ObjectError> {
        let container_dir = self.container_dir(container).await?;
        names::check_prefix(prefix)?;
        let what = format!("local list in '{container}'");
        let prefix = prefix.to_owned();
        blocking(move || {
            let mut keys = Vec::new();
            let mut pending = vec![(container_dir, String::new())];
            while let Some((directory, key_prefix)) = pending.pop() {
                let entries = std::fs::read_dir(&directory).map_err(|e| from_io(&what, &e))?;
                for entry in entries {
                    let entry = entry.map_err(|e| from_io(&what, &e))?;
                    // Names that are not UTF-8, or that no key can have, were not put here.
                    let Ok(name) = entry.file_name().into_string() else { continue };
                    let key = format!("{key_prefix}{name}");
                    if name.starts_with(TEMP_PREFIX) || names::check_key(&key).is_err() {
                        continue;
                    }
                    let kind = entry.file_type().map_err(|e| from_io(&what, &e))?;
                    if kind.is_dir() {
                        // Only descend where keys under the prefix can be.
                        let sub = format!("{key}/");
                        if sub.starts_with(&prefix) || prefix.starts_with(&sub) {
                            pending.push((entry.path(), sub));
                        }
                    } else if kind.is_file() && key.starts_with(&prefix) {
                        keys.push(key);
                    }
                }
            }
            // The order of Azure's and S3's listings.
            keys.sort();
            Ok(keys)
        })
        .await
    }

    /// The container's directory, resolved; `NotFound` when it was never created.
    async fn container_dir(&self, container: &str) -> Result<PathBuf, ObjectError> {
        names::check_local_container(container)?;
        let directory = self.root.join(container);
        let what = format!("local container '{container}'");
        blocking(move || match directory.canonicalize() {
            Ok(resolved) if resolved.is_dir() => Ok(resolved),
            _ => Err(ObjectError::NotFound(format!("{what} does not exist"))),
        })
        .await
    }
}

/// Refuses a resolved path outside the (resolved) container directory.
fn inside(container_dir: &Path, resolved: &Path, what: &str) -> Result<(), ObjectError> {
    let resolved = resolved.canonicalize().map_err(|e| from_io(what, &e))?;
    if resolved.starts_with(container_dir) {
        Ok(())
    } else {
        Err(ObjectError::Denied(format!("{what}: the path leads outside the container's directory")))
    }
}

fn random_suffix() -> String {
    let mut bytes = [0u8; 8];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    crate::text::hex(&bytes)
}

/// Runs file system work on tokio's blocking threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ObjectError> + Send + 'static,
) -> Result<T, ObjectError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(ObjectError::Io(format!("a file system task failed: {e}"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_root() -> PathBuf {
        let root = std::env::temp_dir().join(format!("fhirside-objects-local-{}", random_suffix()));
        std::fs::create_dir_all(&root).unwrap();
        root
    }

    async fn read(local: &Local<'_>, container: &str, key: &str) -> Vec<u8> {
        local.get(container, key).await.unwrap().read_to_end(usize::MAX).await.unwrap()
    }

    #[tokio::test]
    async fn puts_gets_lists_and_deletes() {
        let root = temp_root();
        let local = Local { root: &root };
        assert!(matches!(local.put("c", "k", Bytes::from_static(b"x")).await, Err(ObjectError::NotFound(_))));
        local.ensure_container("c").await.unwrap();
        local.ensure_container("c").await.unwrap();
        local.put("c", "job/a b.ndjson", Bytes::from_static(b"one")).await.unwrap();
        local.put("c", "job/sub/b.ndjson", Bytes::from_static(b"two")).await.unwrap();
        local.put("c", "other", Bytes::from_static(b"three")).await.unwrap();
        local.put("c", "other", Bytes::from_static(b"four")).await.unwrap();
        assert_eq!(read(&local, "c", "job/a b.ndjson").await, b"one");
        assert_eq!(read(&local, "c", "other").await, b"four");
        assert_eq!(local.list("c", "").await.unwrap(), ["job/a b.ndjson", "job/sub/b.ndjson", "other"]);
        assert_eq!(local.list("c", "job/").await.unwrap(), ["job/a b.ndjson", "job/sub/b.ndjson"]);
        assert_eq!(local.list("c", "job/s").await.unwrap(), ["job/sub/b.ndjson"]);
        assert!(local.list("c", "nothing").await.unwrap().is_empty());
        assert!(matches!(local.get("c", "job").await, Err(ObjectError::NotFound(_))));
        assert!(matches!(local.get("c", "missing").await, Err(ObjectError::NotFound(_))));
        assert!(matches!(local.list("nope", "").await, Err(ObjectError::NotFound(_))));

        local.delete("c", "job/sub/b.ndjson").await.unwrap();
        local.delete("c", "job/sub/b.ndjson").await.unwrap();
        assert!(!root.join("c/job/sub").exists(), "an emptied directory is removed");
        assert!(root.join("c/job").exists());
        assert_eq!(
            local.url("c", "job/a b.ndjson"),
            format!("file://{}/c/job/a%20b.ndjson", percent_encode(&root.to_string_lossy(), true))
        );
        std::fs::remove_dir_all(root).unwrap();
    }

    #[tokio::test]
    async fn refuses_to_leave_the_root() {
        let root = temp_root();
        let outside = temp_root();
        std::fs::write(outside.join("secret"), b"secret").unwrap();
        let local = Local { root: &root };
        local.ensure_container("c").await.unwrap();
        for key in ["../secret", "/etc/passwd", "a/../../secret", "a\0b"] {
            assert!(matches!(local.put("c", key, Bytes::new()).await, Err(ObjectError::Invalid(_))), "{key}");
            assert!(matches!(local.get("c", key).await, Err(ObjectError::Invalid(_))), "{key}");
            assert!(matches!(local.delete("c", key).await, Err(ObjectError::Invalid(_))), "{key}");
        }
        for container in ["..", "../c", "/tmp", "."] {
            assert!(matches!(local.ensure_container(container).await, Err(ObjectError::Invalid(_))), "{container}");
            assert!(matches!(local.get(container, "k").await, Err(ObjectError::Invalid(_))), "{container}");
        }
        // A symbolic link inside the container does not lead out, for reading or writing.
        std::os::unix::fs::symlink(&outside, root.join("c/link")).unwrap();
        assert!(matches!(local.get("c", "link/secret").await, Err(ObjectError::Denied(_))));
        assert!(matches!(local.put("c", "link/new", Bytes::from_static(b"x")).await, Err(ObjectError::Denied(_))));
        assert!(matches!(local.delete("c", "link/secret").await, Err(ObjectError::Denied(_))));
        assert!(!outside.join("new").exists());
        assert!(outside.join("secret").exists());
        std::fs::remove_dir_all(root).unwrap();
        std::fs::remove_dir_all(outside).unwrap();
    }

    #[tokio::test]
    async fn put_is_atomic_and_leaves_no_temporary_file() {
        let root = temp_root();
        let local = Local { root: &root };
        local.ensure_container("c").await.unwrap();
        local.put("c", "k", Bytes::from(vec![b'a'; 1 << 20])).await.unwrap();
        // A reader that opened the old object keeps reading it whole while a new one is put.
        let mut reader = local.get("c", "k").await.unwrap();
        local.put("c", "k", Bytes::from(vec![b'b'; 3 << 20])).await.unwrap();
        let mut old = Vec::new();
        while let Some(chunk) = reader.chunk().await.unwrap() {
            old.extend_from_slice(&chunk);
        }
        assert!(old.len() == 1 << 20 && old.iter().all(|b| *b == b'a'));
        let new = read(&local, "c", "k").await;
        assert!(new.len() == 3 << 20 && new.iter().all(|b| *b == b'b'));
        // A temporary file (as a crash would leave) is not listed.
        std::fs::write(root.join("c").join(format!("{TEMP_PREFIX}crashed")), b"partial").unwrap();
        assert_eq!(local.list("c", "").await.unwrap(), ["k"]);
        let names: Vec<String> =
            std::fs::read_dir(root.join("c")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert_eq!(names.iter().filter(|n| n.starts_with(TEMP_PREFIX)).count(), 1, "{names:?}");
        // A failed put (its directory is a file) leaves the old object and no temporary file.
        assert!(local.put("c", "k/under-a-file", Bytes::from_static(b"x")).await.is_err());
        assert_eq!(read(&local, "c", "k").await.len(), 3 << 20);
        std::fs::remove_dir_all(root).unwrap();
    }
}

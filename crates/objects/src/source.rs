//! The input files of an `$import` request, given as URLs by the client: read from the configured
//! store when they are its objects (so that its credentials apply), fetched directly otherwise
//! (public or pre-signed URLs: SAS, S3 presigned), or read from disk under an allowed directory.

use std::path::{Path, PathBuf};

use fhirside_fetch::{Client, Request};

use crate::errors::from_fetch;
use crate::http::stream_failure;
use crate::reader::ObjectReader;
use crate::setting::file_url_path;
use crate::text::percent_decode;
use crate::{Backend, ObjectError, ObjectStore, Tuning};

/// Opens the input at `url`:
/// - `s3://bucket/key`: an object of the configured S3 store;
/// - `https://…` (or `http://` on the loopback interface): an object of the configured Azure Blob
///   or S3 store when the URL lies under the store's URL and carries no query of its own, else a
///   plain GET (a query such as a SAS travels with it, but errors never show it);
/// - `file:` URLs and absolute paths: a file under one of `local_roots` (or under the configured
///   local store's root), symbolic links resolved first; anything else is denied.
pub async fn open_source(
    url: &str,
    configured: Option<&ObjectStore>,
    local_roots: &[PathBuf],
    client: &Client,
) -> Result<ObjectReader, ObjectError> {
    let url = url.trim();
    if let Some(rest) = url.strip_prefix("s3://") {
        let Some(store) = configured.filter(|s| matches!(s.backend(), Backend::S3 { .. })) else {
            return Err(ObjectError::Invalid("an s3:// input needs an S3 object store to be configured".into()));
        };
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        let key = percent_decode(key).ok_or_else(|| ObjectError::Invalid("a malformed s3:// URL".into()))?;
        return store.get(bucket, &key).await;
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        if let Some((store, container, key)) = configured.and_then(|store| in_store(store, url)) {
            return store.get(&container, &key).await;
        }
        return fetch(url, configured.map_or_else(Tuning::default, |s| *s.tuning()), client).await;
    }
    let path = match url.strip_prefix("file:") {
        Some(rest) => file_url_path(rest)?,
        None if url.starts_with('/') => PathBuf::from(url),
        None => {
            return Err(ObjectError::Invalid(
                "an input must be an https URL, an s3:// URL, a file: URL or an absolute path".into(),
            ))
        }
    };
    let mut roots = local_roots.to_vec();
    if let Some(Backend::Local { root }) = configured.map(ObjectStore::backend) {
        roots.push(root.clone());
    }
    open_local(&path, &roots).await
}

/// The container and key of `url` when it is an object of `store`: `{account URL}/{container}/{key}`
/// for Azure, `{endpoint}/{bucket}/{key}` or `https://{bucket}.{endpoint host}/{key}` for S3.
fn in_store<'a>(store: &'a ObjectStore, url: &str) -> Option<(&'a ObjectStore, String, String)> {
    if url.contains(['?', '#']) {
        return None;
    }
    let split = |rest: &str| {
        let (container, key) = rest.split_once('/')?;
        Some((container.to_owned(), percent_decode(key)?))
    };
    let found = match store.backend() {
        Backend::AzureBlob { account_url, .. } => split(strip_prefix_ignoring_case(url, &format!("{account_url}/"))?),
        Backend::S3 { endpoint, path_style: true, .. } => {
            split(strip_prefix_ignoring_case(url, &format!("{endpoint}/"))?)
        }
        Backend::S3 { endpoint, path_style: false, .. } => {
            let (scheme, host) = endpoint.split_once("://")?;
            let rest = strip_prefix_ignoring_case(url, &format!("{scheme}://"))?;
            let (authority, key) = rest.split_once('/')?;
            let bucket =
                authority.to_ascii_lowercase().strip_suffix(&format!(".{}", host.to_ascii_lowercase()))?.to_owned();
            Some((bucket, percent_decode(key)?))
        }
        Backend::Local { .. } => None,
    }?;
    Some((store, found.0, found.1))
}

/// Scheme and host are case-insensitive; the rest of a URL is not, but a store's URL is mostly
/// both, so the whole prefix is compared ignoring case.
fn strip_prefix_ignoring_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &text[prefix.len()..])
}

async fn fetch(url: &str, tuning: Tuning, client: &Client) -> Result<ObjectReader, ObjectError> {
    let what = "import source";
    let request = Request::new("GET", url).timeout(tuning.request_timeout).idle_timeout(tuning.request_timeout);
    let response = client.send_streaming(request).await.map_err(|e| from_fetch(what, e))?;
    if response.status != 200 {
        return Err(stream_failure(what, response).await);
    }
    Ok(ObjectReader::http(response, what.to_owned()))
}

/// Opens `path` if, with its links resolved, it lies under one of `roots` (also resolved).
async fn open_local(path: &Path, roots: &[PathBuf]) -> Result<ObjectReader, ObjectError> {
    let what = "local import source".to_owned();
    let (path, roots) = (path.to_path_buf(), roots.to_vec());
    let opened = {
        let what = what.clone();
        tokio::task::spawn_blocking(move || {
            let resolved = path.canonicalize().map_err(|e| crate::errors::from_io(&what, &e))?;
            let allowed =
                roots.iter().filter_map(|root| root.canonicalize().ok()).any(|root| resolved.starts_with(root));
            if !allowed {
                return Err(ObjectError::Denied(format!("{what}: not under a directory allowed for imports")));
            }
            let file = std::fs::File::open(&resolved).map_err(|e| crate::errors::from_io(&what, &e))?;
            let metadata = file.metadata().map_err(|e| crate::errors::from_io(&what, &e))?;
            if !metadata.is_file() {
                return Err(ObjectError::Invalid(format!("{what}: not a file")));
            }
            Ok((file, metadata.len()))
        })
        .await
        .unwrap_or_else(|e| Err(ObjectError::Io(format!("a file system task failed: {e}"))))
    };
    let (file, size) = opened?;
    Ok(ObjectReader::file(tokio::fs::File::from_std(file), size, what))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BlobAuth, S3Auth};

    /// No https is used here; any trusted root makes a client, and the system may have none.
    fn client() -> Client {
        let ca = fhirside_fetch::testing::temp_file(&fhirside_fetch::testing::tls_fixture().0);
        let client = Client::new(Some(&ca)).unwrap();
        let _ = std::fs::remove_file(ca);
        client
    }

    fn s3(path_style: bool) -> ObjectStore {
        let auth = S3Auth { access_key_id: "A".into(), secret_access_key: "S".into(), session_token: None };
        let endpoint = "https://s3.eu-west-1.amazonaws.com".into();
        ObjectStore::new(Backend::S3 { endpoint, region: "eu-west-1".into(), auth, path_style }, client())
    }

    #[test]
    fn recognises_the_stores_objects() {
        let azure = ObjectStore::new(
            Backend::AzureBlob {
                account_url: "http://127.0.0.1:10000/devstoreaccount1/".into(),
                auth: BlobAuth::Bearer("t".into()),
            },
            client(),
        );
        let found = |store: &ObjectStore, url: &str| in_store(store, url).map(|(_, c, k)| (c, k));
        assert_eq!(
            found(&azure, "http://127.0.0.1:10000/devstoreaccount1/in/job%201/Patient.ndjson"),
            Some(("in".into(), "job 1/Patient.ndjson".into()))
        );
        assert_eq!(found(&azure, "http://127.0.0.1:10000/devstoreaccount1/in/k?sv=1&sig=x"), None);
        assert_eq!(found(&azure, "http://127.0.0.1:10000/other/in/k"), None);
        assert_eq!(found(&azure, "http://127.0.0.1:10000/devstoreaccount1x/in/k"), None);

        let path_style = s3(true);
        assert_eq!(
            found(&path_style, "https://s3.eu-west-1.amazonaws.com/bucket/a/b.ndjson"),
            Some(("bucket".into(), "a/b.ndjson".into()))
        );
        assert_eq!(path_style.url("bucket", "a b"), "https://s3.eu-west-1.amazonaws.com/bucket/a%20b");
        let virtual_hosted = s3(false);
        assert_eq!(
            found(&virtual_hosted, "https://Bucket.s3.eu-west-1.amazonaws.com/a/b.ndjson"),
            Some(("bucket".into(), "a/b.ndjson".into()))
        );
        assert_eq!(found(&virtual_hosted, "https://s3.eu-west-1.amazonaws.com.evil.example/a"), None);
        assert_eq!(virtual_hosted.url("bucket", "a/b"), "https://bucket.s3.eu-west-1.amazonaws.com/a/b");
    }

    #[tokio::test]
    async fn reads_local_files_under_allowed_roots_only() {
        let base = std::env::temp_dir().join(format!("fhirside-objects-source-{}", std::process::id()));
        let allowed = base.join("allowed");
        std::fs::create_dir_all(allowed.join("sub")).unwrap();
        std::fs::write(allowed.join("sub/in put.ndjson"), b"{}\n").unwrap();
        std::fs::write(base.join("secret"), b"secret").unwrap();
        std::os::unix::fs::symlink(base.join("secret"), allowed.join("link")).unwrap();
        let roots = [allowed.clone()];
        let read = |url: String| {
            let roots = roots.clone();
            async move { open_source(&url, None, &roots, &client()).await?.read_to_end(1 << 20).await }
        };
        let file = allowed.join("sub/in put.ndjson");
        assert_eq!(read(file.display().to_string()).await.unwrap(), b"{}\n");
        let url = format!("file://{}", crate::text::percent_encode(&file.to_string_lossy(), true));
        assert_eq!(read(url).await.unwrap(), b"{}\n");
        for denied in [
            base.join("secret").display().to_string(),
            format!("{}/../secret", allowed.display()),
            allowed.join("link").display().to_string(),
        ] {
            assert!(matches!(read(denied.clone()).await, Err(ObjectError::Denied(_))), "{denied}");
        }
        assert!(matches!(read(allowed.join("sub").display().to_string()).await, Err(ObjectError::Invalid(_))));
        assert!(matches!(read("relative/path".into()).await, Err(ObjectError::Invalid(_))));
        assert!(matches!(read("s3://bucket/key".into()).await, Err(ObjectError::Invalid(_))));
        assert!(matches!(read("http://example.org/x".into()).await, Err(ObjectError::Invalid(_))));
        std::fs::remove_dir_all(base).unwrap();
    }
}

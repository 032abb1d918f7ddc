//! Bulk files in the data directory on an encrypted installation: what `$export` writes (and the
//! error files of `$import`) is sealed before it reaches the disk and opened when it is served or
//! read back. Object storage elsewhere (Azure Blob Storage, S3) encrypts at rest itself, and its
//! files are read by other programs, so they are written as they are.
//!
//! A sealed file is [`MAGIC`] followed by one AES-256-GCM value (`fhirside-keys`) whose associated
//! data is the file's path in the bulk directory (`{container}/{key}`): a sealed file moved to
//! another name does not open. Files are written whole, at most `--export-file-bytes`, so one
//! value per file costs no more memory than writing them did.

use bytes::Bytes;
use fhirside_keys::Keyring;

/// What a sealed file starts with; an NDJSON file starts with `{`.
const MAGIC: &[u8] = b"fhirside-sealed-1\n";

pub(crate) fn seal(keyring: &Keyring, name: &str, body: &[u8]) -> Bytes {
    let mut sealed = Vec::with_capacity(MAGIC.len() + body.len() + 64);
    sealed.extend_from_slice(MAGIC);
    sealed.extend_from_slice(&keyring.encrypt(body, aad(name).as_bytes()));
    sealed.into()
}

pub(crate) fn is_sealed(stored: &[u8]) -> bool {
    stored.starts_with(MAGIC)
}

/// The content of a stored file: opened when sealed, as stored otherwise (a file an operator put
/// in an import directory).
pub(crate) fn open(keyring: Option<&Keyring>, name: &str, stored: Bytes) -> Result<Bytes, String> {
    if !is_sealed(&stored) {
        return Ok(stored);
    }
    let keyring = keyring.ok_or_else(|| format!("{name} is sealed by encryption at rest, and no key is configured"))?;
    keyring
        .decrypt(&stored[MAGIC.len()..], aad(name).as_bytes())
        .map(Bytes::from)
        .map_err(|e| format!("{name} is sealed but does not open here (another key, or another file's name): {e}"))
}

fn aad(name: &str) -> String {
    format!("bulk/{name}")
}

#[cfg(test)]
mod tests {
    use fhirside_keys::{Keyring, LocalKek};

    #[test]
    fn sealed_files_open_under_their_own_name_only() {
        let kek = LocalKek::from_bytes("test", &[3u8; 32]).unwrap();
        let keyring =
            tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(Keyring::create(&kek)).unwrap();
        let body = b"{\"resourceType\":\"Patient\",\"name\":[{\"family\":\"Bulkley\"}]}\n";
        let sealed = super::seal(&keyring, "exports/job/Patient-1.ndjson", body);
        assert!(super::is_sealed(&sealed));
        assert!(!sealed.windows(7).any(|w| w == b"Bulkley"));
        let opened = super::open(Some(&keyring), "exports/job/Patient-1.ndjson", sealed.clone()).unwrap();
        assert_eq!(&opened[..], body);
        assert!(super::open(Some(&keyring), "exports/job/Patient-2.ndjson", sealed.clone()).is_err());
        assert!(super::open(None, "exports/job/Patient-1.ndjson", sealed).is_err());
        // A plain file passes as it is.
        assert_eq!(&super::open(Some(&keyring), "x.ndjson", body.to_vec().into()).unwrap()[..], body);
    }
}

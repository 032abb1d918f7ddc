//! Which container names and object keys are accepted, checked before anything is sent or
//! touched. Keys follow one rule on every backend, the strictest of the three, so that what was
//! written to one can be copied to another and listed back the same: relative `/`-separated
//! paths whose segments are neither empty, `.` nor `..` (a local directory must never be left;
//! Azure and S3 would store such keys but many tools mishandle them).

use crate::ObjectError;

/// The longest key, in bytes (Azure's and S3's limit).
pub const MAX_KEY_BYTES: usize = 1024;

/// Temporary files of the local backend start with this; no key segment may.
pub(crate) const TEMP_PREFIX: &str = ".fhirside-tmp-";

pub(crate) fn check_key(key: &str) -> Result<(), ObjectError> {
    let invalid = |why: &str| Err(ObjectError::Invalid(format!("invalid object key: {why}")));
    if key.is_empty() {
        return invalid("empty");
    }
    if key.len() > MAX_KEY_BYTES {
        return invalid("longer than 1024 bytes");
    }
    check_characters(key).map_err(|why| ObjectError::Invalid(format!("invalid object key: {why}")))?;
    for segment in key.split('/') {
        match segment {
            "" => return invalid("an absolute path or an empty segment ('//' or a trailing '/')"),
            "." | ".." => return invalid("a '.' or '..' segment"),
            _ if segment.starts_with(TEMP_PREFIX) => return invalid("a segment named like a temporary file"),
            _ => {}
        }
    }
    Ok(())
}

/// A listing prefix: any start of a valid key (so it may end with `/`, or be empty).
pub(crate) fn check_prefix(prefix: &str) -> Result<(), ObjectError> {
    let invalid = |why: &str| Err(ObjectError::Invalid(format!("invalid key prefix: {why}")));
    if prefix.len() > MAX_KEY_BYTES {
        return invalid("longer than 1024 bytes");
    }
    check_characters(prefix).map_err(|why| ObjectError::Invalid(format!("invalid key prefix: {why}")))?;
    if prefix.starts_with('/') {
        return invalid("an absolute path");
    }
    // Every segment but the last is complete and must be valid; the last may be a partial name.
    let mut segments: Vec<&str> = prefix.split('/').collect();
    segments.pop();
    if segments.iter().any(|s| s.is_empty() || *s == "." || *s == "..") {
        return invalid("an empty, '.' or '..' segment");
    }
    Ok(())
}

/// No NUL or other control characters (which XML listings cannot carry and file systems
/// mishandle), and no backslash (Azure turns it into `/`, Windows into a separator).
fn check_characters(text: &str) -> Result<(), &'static str> {
    if text.contains('\0') {
        return Err("contains NUL");
    }
    if text.chars().any(char::is_control) {
        return Err("contains control characters");
    }
    if text.contains('\\') {
        return Err("contains a backslash");
    }
    Ok(())
}

/// A local container: one path segment of safe characters.
pub(crate) fn check_local_container(name: &str) -> Result<(), ObjectError> {
    let valid = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(ObjectError::Invalid(format!(
            "invalid container name '{}': a local container is one directory name of letters, digits, '-', '_' and '.', not starting with '.'",
            shown(name)
        )))
    }
}

/// Azure's container names: 3 to 63 lowercase letters, digits and hyphens, starting with a letter
/// or digit, every hyphen between two letters or digits.
pub(crate) fn check_azure_container(name: &str) -> Result<(), ObjectError> {
    let bytes = name.as_bytes();
    let valid = (3..=63).contains(&bytes.len())
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
        && !name.contains("--");
    if valid {
        Ok(())
    } else {
        Err(ObjectError::Invalid(format!(
            "invalid container name '{}': Azure wants 3 to 63 lowercase letters, digits and single hyphens, starting and ending with a letter or digit",
            shown(name)
        )))
    }
}

/// S3's bucket names (general purpose buckets): 3 to 63 lowercase letters, digits, dots and
/// hyphens, starting and ending with a letter or digit, no two dots in a row, not an IPv4
/// address, and none of the reserved prefixes and suffixes.
pub(crate) fn check_s3_bucket(name: &str) -> Result<(), ObjectError> {
    let bytes = name.as_bytes();
    let edge = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let valid = (3..=63).contains(&bytes.len())
        && bytes.iter().all(|b| edge(*b) || *b == b'-' || *b == b'.')
        && edge(bytes[0])
        && edge(bytes[bytes.len() - 1])
        && !name.contains("..")
        && name.parse::<std::net::Ipv4Addr>().is_err()
        && !["xn--", "sthree-", "amzn-s3-demo-"].iter().any(|p| name.starts_with(p))
        && !["-s3alias", "--ol-s3", ".mrap", "--x-s3"].iter().any(|s| name.ends_with(s));
    if valid {
        Ok(())
    } else {
        Err(ObjectError::Invalid(format!(
            "invalid bucket name '{}': S3 wants 3 to 63 lowercase letters, digits, dots and hyphens, starting and ending with a letter or digit",
            shown(name)
        )))
    }
}

/// A name from the caller, shortened and without control characters, for messages.
fn shown(name: &str) -> String {
    name.chars().take(80).map(|c| if c.is_control() { '\u{FFFD}' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        for good in ["a", "a/b.ndjson", "job-1/Patient 1.ndjson", "ü/ñ", "a..b", ".hidden", "x/...y"] {
            assert!(check_key(good).is_ok(), "{good}");
        }
        let long = "k".repeat(MAX_KEY_BYTES + 1);
        for bad in [
            "",
            "/etc/passwd",
            "..",
            "../x",
            "a/../../x",
            "a/./b",
            "a//b",
            "a/",
            "a\0b",
            "a\nb",
            "a\\b",
            &long,
            ".fhirside-tmp-1",
        ] {
            assert!(matches!(check_key(bad), Err(ObjectError::Invalid(_))), "{bad:?}");
        }
        // The key itself is not echoed.
        let message = check_key("../secret-name").unwrap_err().to_string();
        assert!(!message.contains("secret-name"), "{message}");
    }

    #[test]
    fn prefixes() {
        for good in ["", "job-1/", "job-1/Pat", "a/b/c", "."] {
            assert!(check_prefix(good).is_ok(), "{good}");
        }
        for bad in ["/x", "../", "a/../b", "a//", "a\0"] {
            assert!(check_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn containers() {
        assert!(check_local_container("exports_2024.1").is_ok());
        for bad in ["", ".", "..", ".x", "a/b", "a\\b", "a b", "a\0"] {
            assert!(check_local_container(bad).is_err(), "{bad:?}");
        }
        assert!(check_azure_container("fhir-export-1").is_ok());
        for bad in ["ab", "Abc", "-abc", "abc-", "a--b", "a.bc", &"a".repeat(64)] {
            assert!(check_azure_container(bad).is_err(), "{bad}");
        }
        assert!(check_s3_bucket("fhir.export-1").is_ok());
        for bad in ["ab", "Abc", ".abc", "abc-", "a..b", "192.168.1.1", "xn--abc", "abc-s3alias", "a_b"] {
            assert!(check_s3_bucket(bad).is_err(), "{bad}");
        }
    }
}

//! Stamping a resource with the identity the store gives it.
//!
//! The store is the only place that knows the next `versionId` and the commit's `lastUpdated`, so it
//! writes `id` and `meta` into the JSON itself. The serialized result is what reads serve byte for
//! byte, so this is the one place where the stored representation is produced. Elements are put in
//! the conventional order `resourceType`, `id`, `meta`, then the rest as the client sent them.
//! Callers serialize the resource beforehand ([`Unstamped`]); stamping only splices bytes.

use serde_json::{Map, Value};

/// A resource serialized except for what the store stamps on it (`resourceType`, `id`,
/// `meta.versionId`, `meta.lastUpdated`).
///
/// Serializing is a large part of a write's cost, and the store's writer is one thread; callers
/// build this where they have CPU to spare, and the writer only splices the stamped identity in.
#[derive(Debug, Clone)]
pub struct Unstamped {
    /// The other `meta` elements, serialized without the enclosing braces (may be empty).
    meta: Vec<u8>,
    /// The other elements of the resource, serialized without the enclosing braces (may be empty).
    rest: Vec<u8>,
}

impl Unstamped {
    pub fn new(mut resource: Map<String, Value>) -> Unstamped {
        let mut meta = match resource.shift_remove("meta") {
            Some(Value::Object(meta)) => meta,
            _ => Map::new(),
        };
        meta.shift_remove("versionId");
        meta.shift_remove("lastUpdated");
        resource.shift_remove("resourceType");
        resource.shift_remove("id");
        Unstamped { meta: inner(&meta), rest: inner(&resource) }
    }

    /// The serialized size, for request charges.
    pub fn len(&self) -> usize {
        self.meta.len() + self.rest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An object's members serialized without its braces.
fn inner(map: &Map<String, Value>) -> Vec<u8> {
    if map.is_empty() {
        return Vec::new();
    }
    let mut bytes = serde_json::to_vec(map).expect("a JSON object always serializes");
    bytes.pop();
    bytes.remove(0);
    bytes
}

/// The stored JSON: `resourceType`, `id`, `meta` (stamped first, then the resource's own meta
/// elements), then the rest in the order the client sent it.
pub(crate) fn stamp(body: &Unstamped, resource_type: &str, id: &str, version: u64, last_updated: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + resource_type.len() + id.len() + 96);
    out.extend_from_slice(b"{\"resourceType\":");
    push_string(&mut out, resource_type);
    out.extend_from_slice(b",\"id\":");
    push_string(&mut out, id);
    out.extend_from_slice(b",\"meta\":{\"versionId\":\"");
    out.extend_from_slice(version.to_string().as_bytes());
    out.extend_from_slice(b"\",\"lastUpdated\":");
    push_string(&mut out, last_updated);
    if !body.meta.is_empty() {
        out.push(b',');
        out.extend_from_slice(&body.meta);
    }
    out.push(b'}');
    if !body.rest.is_empty() {
        out.push(b',');
        out.extend_from_slice(&body.rest);
    }
    out.push(b'}');
    out
}

fn push_string(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(&mut *out, s).expect("writing to a Vec cannot fail");
}

/// Formats microseconds since the epoch as a FHIR `instant` (`2026-11-23T11:50:54.123456Z`).
///
/// Kept here rather than borrowed from the `fhir` crate so that the store has no dependency on
/// the FHIR definitions; both follow the same civil-calendar arithmetic.
pub(crate) fn format_instant(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:06}Z", sod / 3600, (sod % 3600) / 60, sod % 60)
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_identity_first_and_keeps_other_meta() {
        let resource: Map<String, Value> = serde_json::from_str(
            r#"{"resourceType":"Patient","active":true,"id":"old","meta":{"versionId":"9","tag":[{"code":"t"}]}}"#,
        )
        .unwrap();
        let out = stamp(&Unstamped::new(resource), "Patient", "p1", 2, "2020-01-01T00:00:00.000000Z");
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"resourceType":"Patient","id":"p1","meta":{"versionId":"2","lastUpdated":"2020-01-01T00:00:00.000000Z","tag":[{"code":"t"}]},"active":true}"#
        );
    }

    #[test]
    fn formats_instants() {
        assert_eq!(format_instant(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(format_instant(951_782_400_000_001), "2000-02-29T00:00:00.000001Z");
        assert_eq!(format_instant(-1), "1969-12-31T23:59:59.999999Z");
    }
}

#[cfg(test)]
mod splice_tests {
    use super::*;

    #[test]
    fn empty_meta_and_body() {
        let resource: Map<String, Value> = serde_json::from_str(r#"{"resourceType":"Basic"}"#).unwrap();
        let out = stamp(&Unstamped::new(resource), "Basic", "b", 1, "t");
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"resourceType":"Basic","id":"b","meta":{"versionId":"1","lastUpdated":"t"}}"#
        );
        let parsed: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(parsed["meta"]["versionId"], "1");
    }
}

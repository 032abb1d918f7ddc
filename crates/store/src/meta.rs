//! Stamping a resource with the identity the store gives it.
//!
//! The store is the only place that knows the next `versionId` and the commit's `lastUpdated`, so it
//! writes `id` and `meta` into the JSON itself. The serialized result is what reads serve byte for
//! byte, so this is the one place where the stored representation is produced. Elements are put in
//! the conventional order `resourceType`, `id`, `meta`, then the rest as the client sent them.

use serde_json::{Map, Value};

/// Sets `id`, `meta.versionId` and `meta.lastUpdated`, and serializes the resource.
pub(crate) fn stamp(
    mut resource: Map<String, Value>,
    resource_type: &str,
    id: &str,
    version: u64,
    last_updated: &str,
) -> Vec<u8> {
    let mut meta = match resource.shift_remove("meta") {
        Some(Value::Object(meta)) => meta,
        _ => Map::new(),
    };
    meta.shift_remove("versionId");
    meta.shift_remove("lastUpdated");
    let mut stamped_meta = Map::with_capacity(meta.len() + 2);
    stamped_meta.insert("versionId".into(), Value::String(version.to_string()));
    stamped_meta.insert("lastUpdated".into(), Value::String(last_updated.to_owned()));
    stamped_meta.extend(meta);

    resource.shift_remove("resourceType");
    resource.shift_remove("id");
    let mut out = Map::with_capacity(resource.len() + 3);
    out.insert("resourceType".into(), Value::String(resource_type.to_owned()));
    out.insert("id".into(), Value::String(id.to_owned()));
    out.insert("meta".into(), Value::Object(stamped_meta));
    out.extend(resource);
    serde_json::to_vec(&Value::Object(out)).expect("a JSON value always serializes")
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
        let out = stamp(resource, "Patient", "p1", 2, "2020-01-01T00:00:00.000000Z");
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

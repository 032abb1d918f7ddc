//! Seconds since the Unix epoch, the unit of every JWT time claim, and Entra's timestamp format.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// `2026-12-03 10:11:12Z`, as in the `timestamp` of Entra's error bodies.
pub fn entra_timestamp(seconds: i64) -> String {
    let format = ::time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]Z");
    ::time::OffsetDateTime::from_unix_timestamp(seconds).ok().and_then(|t| t.format(&format).ok()).unwrap_or_default()
}

/// RFC 3339 in UTC, for the admin API's dates.
pub fn rfc3339(seconds: i64) -> String {
    let format = ::time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    ::time::OffsetDateTime::from_unix_timestamp(seconds).ok().and_then(|t| t.format(&format).ok()).unwrap_or_default()
}

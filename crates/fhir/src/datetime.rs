//! FHIR `date`, `dateTime`, `instant` and `time`: parsing with precision, UTC ranges, and output formats.
//!
//! FHIR dates are *partial*: `2020` means the whole year 2020, `2020-03` the whole of March. Search compares
//! such values as ranges, so a parsed value keeps its [`Precision`] and [`PartialDateTime::range_micros`]
//! turns it into a half-open `[low, high)` interval of microseconds since the Unix epoch, UTC.
//!
//! Values without a time zone (every `date`, and dateTimes of day precision or coarser) are taken as UTC. The
//! spec says such values are in the local time of whoever recorded them, which the server cannot know; UTC is
//! the documented, deterministic choice, and it is what the index and the query side both use, so a search
//! for `2020-01-01` matches a stored `2020-01-01` exactly.
//!
//! The calendar arithmetic (days from civil date and back) is Howard Hinnant's public-domain algorithm, written
//! out here rather than pulling in a date crate for three functions.

use std::fmt;

/// How much of a date/time was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Precision {
    Year,
    Month,
    Day,
    /// `2020-01-01T10:00`: only in search values (see [`parse_search_datetime`]); FHIR dateTimes need seconds.
    Minute,
    Second,
    /// Fractional seconds with this many digits (1 to 6; more digits are accepted and truncated to 6).
    Fraction(u8),
}

/// A FHIR date, dateTime or instant with its precision and optional time-zone offset.
///
/// Fields beyond the precision hold their lowest value (month 1, day 1, 00:00:00.000000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PartialDateTime {
    pub year: u16,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    /// 0 to 60 (60 is a leap second, which the arithmetic rolls into the next minute).
    pub second: u8,
    pub micros: u32,
    pub precision: Precision,
    /// Offset from UTC in minutes (`+10:00` → 600); `None` when the value has no time zone.
    pub offset_minutes: Option<i16>,
}

/// Why a string is not a valid FHIR date/time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateTimeError(&'static str);

impl fmt::Display for DateTimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for DateTimeError {}

/// Parses a FHIR `date`: `YYYY`, `YYYY-MM` or `YYYY-MM-DD`, no time zone.
pub fn parse_date(s: &str) -> Result<PartialDateTime, DateTimeError> {
    parse(s, Grammar { time: TimePart::Forbidden, coarsest: Precision::Year })
}

/// Parses a FHIR `dateTime`: a `date`, or a full date with `Thh:mm:ss[.fff]` and a mandatory time zone.
pub fn parse_datetime(s: &str) -> Result<PartialDateTime, DateTimeError> {
    parse(s, Grammar { time: TimePart::SecondsWithZone, coarsest: Precision::Year })
}

/// Parses a FHIR `instant`: `YYYY-MM-DDThh:mm:ss[.fff]` with a mandatory time zone.
pub fn parse_instant(s: &str) -> Result<PartialDateTime, DateTimeError> {
    parse(s, Grammar { time: TimePart::SecondsWithZone, coarsest: Precision::Second })
}

/// Parses a date/time search value: like [`parse_datetime`], but also accepts minute precision
/// (`2020-01-01T10:00`) and a time without zone (taken as UTC), as servers commonly do.
pub fn parse_search_datetime(s: &str) -> Result<PartialDateTime, DateTimeError> {
    parse(s, Grammar { time: TimePart::Lenient, coarsest: Precision::Year })
}

/// Parses a FHIR `time` (`hh:mm:ss[.fff]`, no zone) into microseconds since midnight.
pub fn parse_time(s: &str) -> Result<i64, DateTimeError> {
    let mut c = Cursor { s: s.as_bytes(), pos: 0 };
    let (hour, minute) = c.hour_minute()?;
    c.expect(b':', "time needs seconds")?;
    let second = c.number(2, 0, 60, "second must be 00 to 60")?;
    let (micros, _) = c.fraction()?;
    c.end()?;
    Ok(((hour * 60 + minute) * 60 + second) as i64 * 1_000_000 + micros as i64)
}

impl PartialDateTime {
    /// The `[low, high)` interval, in microseconds since the Unix epoch (UTC), that this value covers: `2020`
    /// → all of 2020, `2020-01-01T10:00:00Z` → that second. A value without time zone is taken as UTC.
    pub fn range_micros(&self) -> (i64, i64) {
        let offset = self.offset_minutes.unwrap_or(0) as i64 * 60_000_000;
        let (y, m, d) = (self.year as i64, self.month as u32, self.day as u32);
        let start_of = |y: i64, m: u32, d: u32| days_from_civil(y, m, d) * MICROS_PER_DAY;
        let low = start_of(y, m, d)
            + ((self.hour as i64 * 60 + self.minute as i64) * 60 + self.second as i64) * 1_000_000
            + self.micros as i64;
        let high = match self.precision {
            Precision::Year => start_of(y + 1, 1, 1),
            Precision::Month if m == 12 => start_of(y + 1, 1, 1),
            Precision::Month => start_of(y, m + 1, 1),
            Precision::Day => low + MICROS_PER_DAY,
            Precision::Minute => low + 60_000_000,
            Precision::Second => low + 1_000_000,
            Precision::Fraction(digits) => low + 10i64.pow(6 - digits.min(6) as u32),
        };
        (low - offset, high - offset)
    }
}

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Formats microseconds since the epoch as a FHIR instant in UTC with 6 fraction digits:
/// `2026-11-23T11:50:54.123456Z`.
pub fn format_instant(micros: i64) -> String {
    let (days, of_day) = (micros.div_euclid(MICROS_PER_DAY), micros.rem_euclid(MICROS_PER_DAY));
    let (y, m, d) = civil_from_days(days);
    let secs = of_day / 1_000_000;
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z", secs / 3600, secs / 60 % 60, secs % 60, of_day % 1_000_000)
}

/// Formats microseconds since the epoch as an RFC 1123 HTTP date (`Mon, 23 Nov 2026 11:50:54 GMT`), as used
/// by `Last-Modified`.
pub fn format_http_date(micros: i64) -> String {
    const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let (days, of_day) = (micros.div_euclid(MICROS_PER_DAY), micros.rem_euclid(MICROS_PER_DAY));
    let (y, m, d) = civil_from_days(days);
    let secs = of_day / 1_000_000;
    format!(
        "{}, {d:02} {} {y:04} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[(days + 4).rem_euclid(7) as usize], // 1970-01-01 was a Thursday
        MONTHS[m as usize - 1],
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// The current time in microseconds since the Unix epoch.
pub fn now_micros() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970");
    now.as_micros() as i64
}

/// Parses an HTTP date in its IMF-fixdate form (`Sun, 06 Nov 1994 08:49:37 GMT`, as in
/// `If-Modified-Since`) to microseconds since the epoch; `None` if malformed.
pub fn parse_http_date(text: &str) -> Option<i64> {
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let rest = text.trim().split_once(", ")?.1;
    let mut parts = rest.split(' ');
    let day: u32 = parts.next()?.parse().ok()?;
    let month_name = parts.next()?;
    let month = MONTHS.iter().position(|m| *m == month_name)? as u32 + 1;
    let year: i64 = parts.next()?.parse().ok()?;
    let mut clock = parts.next()?.split(':').map(|p| p.parse::<i64>().ok());
    let (h, m, s) = (clock.next()??, clock.next()??, clock.next()??);
    if parts.next()? != "GMT" || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(((days * 86_400) + h * 3600 + m * 60 + s) * 1_000_000)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Hinnant's `days_from_civil`).
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12; // March = 0
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`].
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[allow(clippy::manual_is_multiple_of)] // `is_multiple_of` is newer than the workspace's rust-version (1.85)
fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[derive(Clone, Copy, PartialEq)]
enum TimePart {
    Forbidden,
    /// `Thh:mm:ss[.f+]` followed by `Z` or `±hh:mm`.
    SecondsWithZone,
    /// Seconds and zone optional.
    Lenient,
}

struct Grammar {
    time: TimePart,
    /// The coarsest precision allowed without error (`Second` for instant).
    coarsest: Precision,
}

fn parse(s: &str, grammar: Grammar) -> Result<PartialDateTime, DateTimeError> {
    let mut c = Cursor { s: s.as_bytes(), pos: 0 };
    let mut v = PartialDateTime {
        year: c.number(4, 1, 9999, "year must be 0001 to 9999")? as u16,
        month: 1,
        day: 1,
        hour: 0,
        minute: 0,
        second: 0,
        micros: 0,
        precision: Precision::Year,
        offset_minutes: None,
    };
    if c.eat(b'-') {
        v.month = c.number(2, 1, 12, "month must be 01 to 12")? as u8;
        v.precision = Precision::Month;
        if c.eat(b'-') {
            let max_day = days_in_month(v.year as u32, v.month as u32);
            v.day = c.number(2, 1, max_day, "day does not exist in that month")? as u8;
            v.precision = Precision::Day;
            if grammar.time != TimePart::Forbidden && c.eat(b'T') {
                let (hour, minute) = c.hour_minute()?;
                (v.hour, v.minute, v.precision) = (hour as u8, minute as u8, Precision::Minute);
                if c.eat(b':') {
                    v.second = c.number(2, 0, 60, "second must be 00 to 60")? as u8;
                    let (micros, digits) = c.fraction()?;
                    v.micros = micros;
                    v.precision = if digits == 0 { Precision::Second } else { Precision::Fraction(digits.min(6)) };
                } else if grammar.time != TimePart::Lenient {
                    return Err(DateTimeError("a time needs seconds (hh:mm:ss)"));
                }
                v.offset_minutes = c.zone()?;
                if v.offset_minutes.is_none() && grammar.time != TimePart::Lenient {
                    return Err(DateTimeError("a time needs a time zone (Z or +hh:mm)"));
                }
            }
        }
    }
    c.end()?;
    if v.precision < grammar.coarsest {
        return Err(DateTimeError("an instant needs a full date, time to the second and a time zone"));
    }
    Ok(v)
}

struct Cursor<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn eat(&mut self, b: u8) -> bool {
        let hit = self.s.get(self.pos) == Some(&b);
        self.pos += usize::from(hit);
        hit
    }

    fn expect(&mut self, b: u8, message: &'static str) -> Result<(), DateTimeError> {
        if self.eat(b) {
            Ok(())
        } else {
            Err(DateTimeError(message))
        }
    }

    fn end(&self) -> Result<(), DateTimeError> {
        if self.pos == self.s.len() {
            Ok(())
        } else {
            Err(DateTimeError("unexpected characters after the date/time"))
        }
    }

    /// Exactly `width` digits, within `[min, max]`.
    fn number(&mut self, width: usize, min: u32, max: u32, message: &'static str) -> Result<u32, DateTimeError> {
        let digits = self.s.get(self.pos..self.pos + width).ok_or(DateTimeError("date/time is cut short"))?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return Err(DateTimeError("expected digits"));
        }
        self.pos += width;
        let n = digits.iter().fold(0, |n, d| n * 10 + (d - b'0') as u32);
        if (min..=max).contains(&n) {
            Ok(n)
        } else {
            Err(DateTimeError(message))
        }
    }

    fn hour_minute(&mut self) -> Result<(u32, u32), DateTimeError> {
        let hour = self.number(2, 0, 23, "hour must be 00 to 23")?;
        self.expect(b':', "expected ':' after the hour")?;
        Ok((hour, self.number(2, 0, 59, "minute must be 00 to 59")?))
    }

    /// `.f+` if present: (microseconds, number of digits given).
    fn fraction(&mut self) -> Result<(u32, u8), DateTimeError> {
        if !self.eat(b'.') {
            return Ok((0, 0));
        }
        let start = self.pos;
        while self.s.get(self.pos).is_some_and(u8::is_ascii_digit) {
            self.pos += 1;
        }
        let digits = &self.s[start..self.pos];
        if digits.is_empty() {
            return Err(DateTimeError("expected digits after the decimal point"));
        }
        let micros = (0..6).fold(0, |n, i| n * 10 + digits.get(i).map_or(0, |d| (d - b'0') as u32));
        Ok((micros, digits.len().min(255) as u8))
    }

    /// `Z`, `+hh:mm` or `-hh:mm` (at most ±14:00), or nothing.
    fn zone(&mut self) -> Result<Option<i16>, DateTimeError> {
        if self.eat(b'Z') {
            return Ok(Some(0));
        }
        let sign = if self.eat(b'+') {
            1
        } else if self.eat(b'-') {
            -1
        } else {
            return Ok(None);
        };
        let hours = self.number(2, 0, 14, "time-zone hours must be 00 to 14")?;
        self.expect(b':', "expected ':' in the time-zone offset")?;
        let minutes = self.number(2, 0, 59, "time-zone minutes must be 00 to 59")?;
        if hours == 14 && minutes != 0 {
            return Err(DateTimeError("time-zone offset must be at most 14:00"));
        }
        Ok(Some(sign * (hours * 60 + minutes) as i16))
    }
}

#[cfg(test)]
mod tests;

//! Instants as the MedTech service handles them: .NET `DateTime` ticks (100 ns) in UTC.
//!
//! Azure parses timestamps with .NET (`DateTime`, 100 ns resolution) and writes them back in a few fixed
//! formats: `o` (`2023-03-13T22:46:01.8750000Z`) on Observations, a trimmed form
//! (`2023-03-13T22:46:01.875Z`) on normalized messages, and `yyyyMMddHHmmssZ` inside Observation
//! identifiers. Keeping ticks rather than microseconds keeps a seventh fraction digit exact.
//!
//! Parsing accepts the ISO 8601 shapes device messages use (and that .NET's `DateTime.Parse` reads
//! the same way): `YYYY-MM-DD`, then optionally `T` or a space and `hh:mm[:ss[.fffffff]]`, then
//! optionally `Z`, `±hh:mm`, `±hhmm`, `±hh` or `±h` (the `+0` that Azure's `fromUnixTimestamp`
//! produces). A value without a zone is taken as UTC, as Azure's hosts (which run in UTC) do. Other
//! shapes `DateTime.Parse` would accept (`02/01/2019 22:46`, month names) are refused with an error
//! rather than guessed at.

use std::fmt;

const TICKS_PER_SECOND: i64 = 10_000_000;
const TICKS_PER_DAY: i64 = 86_400 * TICKS_PER_SECOND;
pub(crate) const TICKS_PER_MILLISECOND: i64 = 10_000;
pub(crate) const TICKS_PER_HOUR: i64 = 3_600 * TICKS_PER_SECOND;

/// An instant in UTC, in 100 ns ticks since 1970-01-01T00:00:00Z (years 0001 to 9999, as .NET's
/// `DateTime`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

/// Why a string is not a timestamp this engine reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimestampError(pub(crate) String);

impl fmt::Display for TimestampError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TimestampError {}

impl Timestamp {
    /// The instant `ticks` (100 ns) after the Unix epoch.
    pub fn from_ticks(ticks: i64) -> Timestamp {
        Timestamp(ticks)
    }

    /// Ticks (100 ns) since the Unix epoch.
    pub fn ticks(self) -> i64 {
        self.0
    }

    /// Parses an ISO 8601 date or date-time (see the module comment for the accepted shapes).
    pub fn parse(text: &str) -> Result<Timestamp, TimestampError> {
        parse(text.trim()).map_err(|why| TimestampError(format!("'{text}' is not an ISO 8601 date-time: {why}")))
    }

    /// Seconds since the Unix epoch, as Azure's `fromUnixTimestamp` reads them.
    pub(crate) fn from_unix_seconds(seconds: i64) -> Option<Timestamp> {
        seconds.checked_mul(TICKS_PER_SECOND).map(Timestamp).filter(|t| t.in_range())
    }

    /// Milliseconds since the Unix epoch, as Azure's `fromUnixTimestampMs` reads them.
    pub(crate) fn from_unix_millis(millis: i64) -> Option<Timestamp> {
        millis.checked_mul(TICKS_PER_MILLISECOND).map(Timestamp).filter(|t| t.in_range())
    }

    fn in_range(self) -> bool {
        // 0001-01-01 and 10000-01-01, the range of .NET's DateTime.
        (-62_135_596_800 * TICKS_PER_SECOND..253_402_300_800 * TICKS_PER_SECOND).contains(&self.0)
    }

    pub(crate) fn add_ticks(self, ticks: i64) -> Timestamp {
        Timestamp(self.0.saturating_add(ticks))
    }

    /// The start of the UTC hour holding this instant.
    pub(crate) fn floor_hour(self) -> Timestamp {
        Timestamp(self.0 - self.0.rem_euclid(TICKS_PER_HOUR))
    }

    /// The start of the UTC day holding this instant.
    pub(crate) fn floor_day(self) -> Timestamp {
        Timestamp(self.0 - self.0.rem_euclid(TICKS_PER_DAY))
    }

    /// .NET's round-trip format `o` for a UTC `DateTime`: `2023-03-13T22:46:01.8750000Z`. Azure writes
    /// `effectivePeriod` this way.
    pub fn to_round_trip(self) -> String {
        let p = self.parts();
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:07}Z",
            p.year, p.month, p.day, p.hour, p.minute, p.second, p.ticks
        )
    }

    /// The ISO form with trailing fraction zeros dropped (`2023-03-13T22:46:01.875Z`,
    /// `2023-05-13T23:45:44Z`), as Azure writes `occurrenceTimeUtc` on normalized messages.
    pub fn to_trimmed(self) -> String {
        let p = self.parts();
        let mut out =
            format!("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}", p.year, p.month, p.day, p.hour, p.minute, p.second);
        if p.ticks != 0 {
            let fraction = format!("{:07}", p.ticks);
            out.push('.');
            out.push_str(fraction.trim_end_matches('0'));
        }
        out.push('Z');
        out
    }

    /// `yyyyMMddHHmmssZ`, the format of the time tokens in Azure's Observation identifiers.
    pub(crate) fn to_identifier_token(self) -> String {
        let p = self.parts();
        format!("{:04}{:02}{:02}{:02}{:02}{:02}Z", p.year, p.month, p.day, p.hour, p.minute, p.second)
    }

    /// `yyyy-MM-ddTHH:mm:ss+0`, what Azure's `fromUnixTimestamp` functions return (.NET's `z` offset
    /// specifier on a UTC `DateTimeOffset`; the fraction is dropped).
    pub(crate) fn to_unix_function_format(self) -> String {
        let p = self.parts();
        format!("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}+0", p.year, p.month, p.day, p.hour, p.minute, p.second)
    }

    fn parts(self) -> Parts {
        let days = self.0.div_euclid(TICKS_PER_DAY);
        let of_day = self.0.rem_euclid(TICKS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        let seconds = of_day / TICKS_PER_SECOND;
        Parts {
            year,
            month,
            day,
            hour: seconds / 3600,
            minute: seconds / 60 % 60,
            second: seconds % 60,
            ticks: of_day % TICKS_PER_SECOND,
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_round_trip())
    }
}

struct Parts {
    year: i64,
    month: i64,
    day: i64,
    hour: i64,
    minute: i64,
    second: i64,
    ticks: i64,
}

struct Cursor<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn digits(&mut self, min: usize, max: usize, what: &'static str) -> Result<(i64, usize), &'static str> {
        let start = self.pos;
        while self.pos - start < max && self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        let n = self.pos - start;
        if n < min {
            return Err(what);
        }
        let value = self.s[start..self.pos].iter().fold(0i64, |acc, b| acc * 10 + i64::from(b - b'0'));
        Ok((value, n))
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
}

fn parse(text: &str) -> Result<Timestamp, &'static str> {
    let mut c = Cursor { s: text.as_bytes(), pos: 0 };
    let (year, _) = c.digits(4, 4, "expected a four-digit year")?;
    if !c.eat(b'-') {
        return Err("expected '-' after the year");
    }
    let (month, _) = c.digits(2, 2, "expected a two-digit month")?;
    if !c.eat(b'-') {
        return Err("expected '-' after the month");
    }
    let (day, _) = c.digits(2, 2, "expected a two-digit day")?;
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return Err("no such date");
    }
    let mut ticks_of_day = 0i64;
    if c.eat(b'T') || c.eat(b't') || c.eat(b' ') {
        let (hour, _) = c.digits(2, 2, "expected a two-digit hour")?;
        if !c.eat(b':') {
            return Err("expected ':' after the hour");
        }
        let (minute, _) = c.digits(2, 2, "expected two-digit minutes")?;
        let mut second = 0;
        let mut fraction = 0;
        if c.eat(b':') {
            second = c.digits(2, 2, "expected two-digit seconds")?.0;
            if c.eat(b'.') || c.eat(b',') {
                let start = c.pos;
                while c.peek().is_some_and(|b| b.is_ascii_digit()) {
                    c.pos += 1;
                }
                let digits = &c.s[start..c.pos];
                if digits.is_empty() {
                    return Err("expected digits after the decimal point");
                }
                // Ticks hold seven digits; further digits are below .NET's resolution and dropped.
                for i in 0..7 {
                    fraction = fraction * 10 + digits.get(i).map_or(0, |b| i64::from(b - b'0'));
                }
            }
        }
        if hour > 23 || minute > 59 || second > 59 {
            return Err("hour, minute or second out of range");
        }
        ticks_of_day = ((hour * 60 + minute) * 60 + second) * TICKS_PER_SECOND + fraction;
    }
    let offset_minutes = match c.peek() {
        None => 0,
        Some(b'Z' | b'z') => {
            c.pos += 1;
            0
        }
        Some(sign @ (b'+' | b'-')) => {
            c.pos += 1;
            let (hours, n) = c.digits(1, 2, "expected offset hours")?;
            let minutes = if c.eat(b':') || (n == 2 && c.peek().is_some_and(|b| b.is_ascii_digit())) {
                c.digits(2, 2, "expected two-digit offset minutes")?.0
            } else {
                0
            };
            if hours > 14 || minutes > 59 {
                return Err("time-zone offset out of range");
            }
            let total = hours * 60 + minutes;
            if sign == b'-' {
                -total
            } else {
                total
            }
        }
        Some(_) => return Err("unexpected text after the time"),
    };
    if c.pos != c.s.len() {
        return Err("unexpected text after the time-zone offset");
    }
    let local = days_from_civil(year, month, day) * TICKS_PER_DAY + ticks_of_day;
    let t = Timestamp(local - offset_minutes * 60 * TICKS_PER_SECOND);
    if t.in_range() {
        Ok(t)
    } else {
        Err("outside the years 0001 to 9999")
    }
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's public-domain civil-calendar algorithms (days since 1970-01-01 and back).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { yoe + era * 400 + 1 } else { yoe + era * 400 }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap()
    }

    #[test]
    fn parses_zulu_offset_and_unzoned_times_to_utc() {
        assert_eq!(ts("2019-02-01T22:46:01.8750000Z").to_round_trip(), "2019-02-01T22:46:01.8750000Z");
        assert_eq!(ts("2023-03-13T22:46:01.8750000").to_trimmed(), "2023-03-13T22:46:01.875Z");
        assert_eq!(ts("2019-02-02T00:46:01+02:00").to_trimmed(), "2019-02-01T22:46:01Z");
        assert_eq!(ts("2019-02-01T20:46:01-0200").to_trimmed(), "2019-02-01T22:46:01Z");
        assert_eq!(ts("2021-07-07T17:00:00+0").to_trimmed(), "2021-07-07T17:00:00Z");
        assert_eq!(ts("2019-02-01").to_trimmed(), "2019-02-01T00:00:00Z");
        assert_eq!(ts("2019-02-01 22:46").to_trimmed(), "2019-02-01T22:46:00Z");
        assert_eq!(ts("2019-02-01T22:46:01.123456789Z").to_round_trip(), "2019-02-01T22:46:01.1234567Z");
    }

    #[test]
    fn refuses_what_it_cannot_read_without_guessing() {
        for bad in
            ["02/01/2019", "2019-02-30T00:00:00Z", "2019-02-01T24:00:00Z", "2019-02-01T22:46:01Zjunk", "", "1625677200"]
        {
            assert!(Timestamp::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats_identifier_tokens_and_unix_function_results() {
        assert_eq!(ts("2019-02-01T22:59:59.9999999Z").to_identifier_token(), "20190201225959Z");
        assert_eq!(
            Timestamp::from_unix_seconds(1_625_677_200).unwrap().to_unix_function_format(),
            "2021-07-07T17:00:00+0"
        );
        assert_eq!(
            Timestamp::from_unix_millis(1_626_799_080_000).unwrap().to_unix_function_format(),
            "2021-07-20T16:38:00+0"
        );
        assert_eq!(Timestamp::from_unix_seconds(0).unwrap().to_unix_function_format(), "1970-01-01T00:00:00+0");
        assert_eq!(ts("1969-12-31T23:30:00Z").floor_hour().to_trimmed(), "1969-12-31T23:00:00Z");
    }
}

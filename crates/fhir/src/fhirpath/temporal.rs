//! FHIRPath `Date`, `DateTime` and `Time`: partial values, compared precision by precision.
//!
//! FHIRPath's date/time values are partial like FHIR's (`@2014`, `@2014-01-05T10`), but go further than
//! [`crate::datetime`]: hour and minute precision, `@2015T`-style literals, times without dates, and a
//! comparison that answers "unknown" (empty) when one side stops before the other decides. That three-way
//! answer is why these types live here and not in `crate::datetime`, which turns values into ranges for search.
//!
//! Seconds and milliseconds count as one precision for comparison (`@T10:30:00 = @T10:30:00.0` is true).
//! A value with a time zone and one without are incomparable at hour precision or finer, as the spec leaves
//! the local offset unknown.

use std::cmp::Ordering;
use std::fmt;

/// How much of a date/time was given, coarsest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Precision {
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
    Millisecond,
}

/// A partial date, date-time or time. Fields finer than `precision` are zero; a time leaves the date at
/// zero and starts at [`Precision::Hour`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Temporal {
    pub year: i32,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
    pub millisecond: u16,
    pub precision: Precision,
    /// Offset from UTC in minutes; `None` when no time zone was given.
    pub offset_minutes: Option<i16>,
}

impl Temporal {
    const EMPTY: Temporal = Temporal {
        year: 0,
        month: 0,
        day: 0,
        hour: 0,
        minute: 0,
        second: 0,
        millisecond: 0,
        precision: Precision::Year,
        offset_minutes: None,
    };

    /// `YYYY[-MM[-DD]]`.
    pub fn parse_date(s: &str) -> Option<Temporal> {
        let (t, rest) = parse_date_part(s)?;
        rest.is_empty().then_some(t)
    }

    /// A date, optionally followed by `T` and a partial time (`2015T`, `2015-02-04T14`, full FHIR dateTimes
    /// and instants), with an optional `Z` or `±hh:mm`.
    pub fn parse_datetime(s: &str) -> Option<Temporal> {
        let (mut t, rest) = parse_date_part(s)?;
        let Some(rest) = rest.strip_prefix('T') else {
            return rest.is_empty().then_some(t);
        };
        if rest.is_empty() {
            return Some(t);
        }
        if t.precision != Precision::Day {
            return None;
        }
        let rest = parse_time_part(rest, &mut t)?;
        if rest.is_empty() {
            return Some(t);
        }
        t.offset_minutes = Some(parse_offset(rest)?);
        Some(t)
    }

    /// `hh[:mm[:ss[.fff]]]`, no time zone.
    pub fn parse_time(s: &str) -> Option<Temporal> {
        let mut t = Temporal::EMPTY;
        let rest = parse_time_part(s, &mut t)?;
        rest.is_empty().then_some(t)
    }

    /// Whether a time-of-day part is present (hour precision or finer).
    pub fn has_time(&self) -> bool {
        self.precision >= Precision::Hour
    }

    /// Compares two dates/date-times (or two times): `None` when the answer depends on digits one side lacks.
    pub fn compare(&self, other: &Temporal) -> Option<Ordering> {
        let (a, b) = if self.has_time() && other.has_time() {
            match (self.offset_minutes, other.offset_minutes) {
                (Some(_), Some(_)) => (self.to_utc(), other.to_utc()),
                (None, None) => (*self, *other),
                _ => return None,
            }
        } else {
            (*self, *other)
        };
        let levels: [(Precision, i64, i64); 6] = [
            (Precision::Year, a.year as i64, b.year as i64),
            (Precision::Month, a.month as i64, b.month as i64),
            (Precision::Day, a.day as i64, b.day as i64),
            (Precision::Hour, a.hour as i64, b.hour as i64),
            (Precision::Minute, a.minute as i64, b.minute as i64),
            (
                Precision::Second,
                a.second as i64 * 1000 + a.millisecond as i64,
                b.second as i64 * 1000 + b.millisecond as i64,
            ),
        ];
        let first = if self.year == 0 && self.precision >= Precision::Hour { 3 } else { 0 }; // times
        let pa = a.precision.min(Precision::Second);
        let pb = b.precision.min(Precision::Second);
        for &(level, x, y) in &levels[first..] {
            match (pa >= level, pb >= level) {
                (true, true) if x != y => return Some(x.cmp(&y)),
                (true, true) => {}
                (false, false) => return Some(Ordering::Equal),
                _ => return None,
            }
        }
        Some(Ordering::Equal)
    }

    /// The same instant expressed at offset zero (only meaningful with a time and an offset).
    fn to_utc(self) -> Temporal {
        let Some(offset) = self.offset_minutes else { return self };
        let mut t = self.add_minutes(-(offset as i64));
        t.offset_minutes = Some(0);
        t
    }

    fn add_minutes(self, minutes: i64) -> Temporal {
        self.add_millis(minutes * 60_000)
    }

    /// Adds milliseconds, carrying into the date. Precision is kept.
    pub fn add_millis(self, millis: i64) -> Temporal {
        let day_ms: i64 = 86_400_000;
        let days = if self.year == 0 { 0 } else { days_from_civil(self.year, self.month.max(1), self.day.max(1)) };
        let in_day = self.hour as i64 * 3_600_000
            + self.minute as i64 * 60_000
            + self.second as i64 * 1000
            + self.millisecond as i64
            + millis;
        let (carry, in_day) = (in_day.div_euclid(day_ms), in_day.rem_euclid(day_ms));
        let mut t = self;
        if self.year != 0 {
            let (y, m, d) = civil_from_days(days + carry);
            t.year = y;
            t.month = if self.precision >= Precision::Month { m } else { 0 };
            t.day = if self.precision >= Precision::Day { d } else { 0 };
        }
        t.hour = (in_day / 3_600_000) as u8;
        t.minute = (in_day / 60_000 % 60) as u8;
        t.second = (in_day / 1000 % 60) as u8;
        t.millisecond = (in_day % 1000) as u16;
        t
    }

    /// Adds calendar months (negative to subtract), clamping the day to the month's length.
    pub fn add_months(self, months: i64) -> Temporal {
        let total = self.year as i64 * 12 + (self.month.max(1) as i64 - 1) + months;
        let mut t = self;
        t.year = total.div_euclid(12) as i32;
        if self.precision >= Precision::Month {
            t.month = (total.rem_euclid(12) + 1) as u8;
        }
        if self.precision >= Precision::Day {
            t.day = self.day.min(days_in_month(t.year, t.month));
        }
        t
    }

    /// Digits of precision as FHIRPath's `precision()` counts them (`@2014` → 4, milliseconds → 17; times
    /// count from the hour: `@T10:30` → 4).
    pub fn precision_digits(&self, is_time: bool) -> i64 {
        let digits = match self.precision {
            Precision::Year => 4,
            Precision::Month => 6,
            Precision::Day => 8,
            Precision::Hour => 10,
            Precision::Minute => 12,
            Precision::Second => 14,
            Precision::Millisecond => 17,
        };
        if is_time {
            digits - 8
        } else {
            digits
        }
    }

    /// `lowBoundary()` / `highBoundary()`: the value filled out to `precision` with the earliest (or latest)
    /// possible fields; a date-time without time zone gets the earliest (+14:00) or latest (-12:00) offset.
    pub fn boundary(&self, precision: Precision, high: bool, is_date_only: bool) -> Temporal {
        let mut t = *self;
        // An hour without minutes is not a FHIR value; it is read as hh:00.
        let given = if t.precision == Precision::Hour { Precision::Minute } else { t.precision };
        if high {
            if given < Precision::Month {
                t.month = 12;
            }
            if given < Precision::Day {
                t.day = days_in_month(t.year, t.month.max(1));
            }
            if given < Precision::Hour {
                t.hour = 23;
            }
            if given < Precision::Minute {
                t.minute = 59;
            }
            if given < Precision::Second {
                t.second = 59;
            }
            if given < Precision::Millisecond {
                t.millisecond = 999;
            }
        } else {
            if given < Precision::Month {
                t.month = 1;
            }
            if given < Precision::Day {
                t.day = 1;
            }
        }
        t.precision = precision;
        if !is_date_only && precision >= Precision::Hour && t.offset_minutes.is_none() && t.year != 0 {
            t.offset_minutes = Some(if high { -12 * 60 } else { 14 * 60 });
        }
        t.truncate_to(precision)
    }

    fn truncate_to(mut self, precision: Precision) -> Temporal {
        if precision < Precision::Millisecond {
            self.millisecond = 0;
        }
        if precision < Precision::Second {
            self.second = 0;
        }
        if precision < Precision::Minute {
            self.minute = 0;
        }
        if precision < Precision::Hour {
            self.hour = 0;
            self.offset_minutes = None;
        }
        if precision < Precision::Day {
            self.day = 0;
        }
        if precision < Precision::Month {
            self.month = 0;
        }
        self
    }

    /// Writes the date part and, for date-times, `T` and the time part (FHIR/ISO 8601 form).
    pub fn fmt_datetime(&self, f: &mut impl fmt::Write, date_only: bool) -> fmt::Result {
        write!(f, "{:04}", self.year)?;
        if self.precision >= Precision::Month {
            write!(f, "-{:02}", self.month)?;
        }
        if self.precision >= Precision::Day {
            write!(f, "-{:02}", self.day)?;
        }
        if date_only {
            return Ok(());
        }
        if self.precision >= Precision::Hour {
            f.write_char('T')?;
            self.fmt_time(f)?;
            match self.offset_minutes {
                Some(0) => f.write_char('Z')?,
                Some(m) => {
                    let sign = if m < 0 { '-' } else { '+' };
                    write!(f, "{sign}{:02}:{:02}", m.abs() / 60, m.abs() % 60)?
                }
                None => {}
            }
        }
        Ok(())
    }

    /// Writes `hh[:mm[:ss[.fff]]]`.
    pub fn fmt_time(&self, f: &mut impl fmt::Write) -> fmt::Result {
        write!(f, "{:02}", self.hour)?;
        if self.precision >= Precision::Minute {
            write!(f, ":{:02}", self.minute)?;
        }
        if self.precision >= Precision::Second {
            write!(f, ":{:02}", self.second)?;
        }
        if self.precision >= Precision::Millisecond {
            write!(f, ".{:03}", self.millisecond)?;
        }
        Ok(())
    }
}

fn digits(s: &str, n: usize) -> Option<(u32, &str)> {
    let head = s.get(..n)?;
    if !head.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((head.parse().ok()?, &s[n..]))
}

fn parse_date_part(s: &str) -> Option<(Temporal, &str)> {
    let mut t = Temporal::EMPTY;
    let (year, mut rest) = digits(s, 4)?;
    t.year = year as i32;
    if let Some(r) = rest.strip_prefix('-') {
        let (month, r) = digits(r, 2)?;
        if !(1..=12).contains(&month) {
            return None;
        }
        t.month = month as u8;
        t.precision = Precision::Month;
        rest = r;
        if let Some(r) = rest.strip_prefix('-') {
            let (day, r) = digits(r, 2)?;
            if day < 1 || day > days_in_month(t.year, t.month) as u32 {
                return None;
            }
            t.day = day as u8;
            t.precision = Precision::Day;
            rest = r;
        }
    }
    Some((t, rest))
}

fn parse_time_part<'s>(s: &'s str, t: &mut Temporal) -> Option<&'s str> {
    let (hour, mut rest) = digits(s, 2)?;
    if hour > 23 {
        return None;
    }
    t.hour = hour as u8;
    t.precision = Precision::Hour;
    if let Some(r) = rest.strip_prefix(':') {
        let (minute, r) = digits(r, 2)?;
        if minute > 59 {
            return None;
        }
        t.minute = minute as u8;
        t.precision = Precision::Minute;
        rest = r;
        if let Some(r) = rest.strip_prefix(':') {
            let (second, r) = digits(r, 2)?;
            if second > 60 {
                return None;
            }
            t.second = second as u8;
            t.precision = Precision::Second;
            rest = r;
            if let Some(r) = rest.strip_prefix('.') {
                let n = r.bytes().take_while(u8::is_ascii_digit).count();
                if n == 0 {
                    return None;
                }
                let frac = &r[..n.min(3)];
                t.millisecond = format!("{frac:0<3}").parse().ok()?;
                t.precision = Precision::Millisecond;
                rest = &r[n..];
            }
        }
    }
    Some(rest)
}

fn parse_offset(s: &str) -> Option<i16> {
    if s == "Z" {
        return Some(0);
    }
    let sign = match s.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let (h, r) = digits(&s[1..], 2)?;
    let r = r.strip_prefix(':')?;
    let (m, r) = digits(r, 2)?;
    (r.is_empty() && h <= 14 && m < 60).then_some(sign * (h * 60 + m) as i16)
}

pub fn days_in_month(year: i32, month: u8) -> u8 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01, in this module's integer widths.
fn days_from_civil(y: i32, m: u8, d: u8) -> i64 {
    crate::datetime::days_from_civil(i64::from(y), u32::from(m), u32::from(d))
}

fn civil_from_days(z: i64) -> (i32, u8, u8) {
    let (y, m, d) = crate::datetime::civil_from_days(z);
    (y as i32, m as u8, d as u8)
}

/// The current UTC date-time with millisecond precision.
pub fn now() -> Temporal {
    let millis =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    let (y, m, d) = civil_from_days(millis.div_euclid(86_400_000));
    let t = Temporal {
        year: y,
        month: m,
        day: d,
        precision: Precision::Millisecond,
        offset_minutes: Some(0),
        ..Temporal::EMPTY
    };
    t.add_millis(millis.rem_euclid(86_400_000))
}

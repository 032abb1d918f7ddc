use super::*;

/// Microseconds since the epoch of a UTC civil date-time, computed independently of the code under test from
/// known epoch seconds.
const Y2020: i64 = 1_577_836_800_000_000; // 2020-01-01T00:00:00Z
const DAY: i64 = MICROS_PER_DAY;

#[test]
fn year_month_day_ranges() {
    assert_eq!(parse_date("2020").unwrap().range_micros(), (Y2020, Y2020 + 366 * DAY)); // leap year
    assert_eq!(parse_date("2020-02").unwrap().range_micros(), (Y2020 + 31 * DAY, Y2020 + 60 * DAY));
    assert_eq!(parse_date("2020-12").unwrap().range_micros(), (Y2020 + 335 * DAY, Y2020 + 366 * DAY));
    assert_eq!(parse_date("2020-02-29").unwrap().range_micros(), (Y2020 + 59 * DAY, Y2020 + 60 * DAY));
    assert_eq!(parse_date("1970-01-01").unwrap().range_micros(), (0, DAY));
    assert_eq!(parse_date("2020-03").unwrap().precision, Precision::Month);
}

#[test]
fn datetime_precisions_and_zones() {
    let v = parse_datetime("2020-01-01T10:00:00Z").unwrap();
    assert_eq!(v.precision, Precision::Second);
    assert_eq!(v.range_micros(), (Y2020 + 36_000_000_000, Y2020 + 36_001_000_000));
    // +10:00 means the same instant as 00:00Z.
    let v = parse_datetime("2020-01-01T10:00:00+10:00").unwrap();
    assert_eq!(v.offset_minutes, Some(600));
    assert_eq!(v.range_micros().0, Y2020);
    let v = parse_datetime("2019-12-31T19:30:00-04:30").unwrap();
    assert_eq!(v.range_micros().0, Y2020);
    let v = parse_datetime("2020-01-01T00:00:00.5Z").unwrap();
    assert_eq!(v.precision, Precision::Fraction(1));
    assert_eq!(v.range_micros(), (Y2020 + 500_000, Y2020 + 600_000));
    let v = parse_instant("2020-01-01T00:00:00.123456789Z").unwrap();
    assert_eq!(v.precision, Precision::Fraction(6));
    assert_eq!(v.range_micros(), (Y2020 + 123_456, Y2020 + 123_457));
    assert_eq!(parse_datetime("2020").unwrap().offset_minutes, None);
}

#[test]
fn leap_years() {
    assert!(parse_date("2000-02-29").is_ok());
    assert!(parse_date("2024-02-29").is_ok());
    assert!(parse_date("1900-02-29").is_err());
    assert!(parse_date("2023-02-29").is_err());
}

#[test]
fn invalid_inputs() {
    for bad in ["2020-13", "2020-00", "2020-02-30", "2020-04-31", "0000", "20", "2020-1", "2020-01-01T", "", "2020/01"]
    {
        assert!(parse_date(bad).is_err(), "{bad}");
        assert!(parse_datetime(bad).is_err(), "{bad}");
    }
    assert!(parse_date("2020-01-01T10:00:00Z").is_err(), "a date has no time");
    assert!(parse_datetime("2020-01-01T10:00").is_err(), "seconds are required");
    assert!(parse_datetime("2020-01-01T10:00:00").is_err(), "a time needs a zone");
    assert!(parse_datetime("2020-01-01T24:00:00Z").is_err());
    assert!(parse_datetime("2020-01-01T10:60:00Z").is_err());
    assert!(parse_datetime("2020-01-01T10:00:00.Z").is_err());
    assert!(parse_datetime("2020-01-01T10:00:00+14:30").is_err());
    assert!(parse_datetime("2020-01-01T10:00:00+0100").is_err());
    assert!(parse_datetime("2020-01-01T10:00:00z").is_err());
    assert!(parse_instant("2020-01-01").is_err(), "an instant needs a time");
    assert!(parse_instant("2020-01-01T10:00:00").is_err());
    assert_eq!(parse_datetime("2020-01-01T10:00:00+14:00").unwrap().offset_minutes, Some(840));
}

#[test]
fn search_values_may_have_minutes_and_no_zone() {
    let v = parse_search_datetime("2020-01-01T10:00").unwrap();
    assert_eq!(v.precision, Precision::Minute);
    assert_eq!(v.range_micros(), (Y2020 + 36_000_000_000, Y2020 + 36_060_000_000));
    assert_eq!(parse_search_datetime("2020-01-01T10:00:00").unwrap().offset_minutes, None);
    assert!(parse_search_datetime("2020-01-01T10").is_err());
}

#[test]
fn times() {
    assert_eq!(parse_time("00:00:01").unwrap(), 1_000_000);
    assert_eq!(parse_time("23:59:59.25").unwrap(), 86_399_250_000);
    assert!(parse_time("24:00:00").is_err());
    assert!(parse_time("10:00").is_err());
    assert!(parse_time("10:00:00Z").is_err());
}

#[test]
fn formats() {
    assert_eq!(format_instant(0), "1970-01-01T00:00:00.000000Z");
    assert_eq!(format_instant(Y2020 + 59 * DAY + 123_456), "2020-02-29T00:00:00.123456Z");
    assert_eq!(format_instant(-1), "1969-12-31T23:59:59.999999Z");
    // 2026-11-23T11:50:54Z = 1795434654 s.
    assert_eq!(format_http_date(1_795_434_654_000_000), "Mon, 23 Nov 2026 11:50:54 GMT");
    assert_eq!(format_http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
}

#[test]
fn civil_round_trip() {
    for days in (-800_000..3_000_000).step_by(997) {
        let (y, m, d) = civil_from_days(days);
        assert_eq!(days_from_civil(y, m, d), days);
    }
    let now = now_micros();
    assert_eq!(parse_instant(&format_instant(now)).unwrap().range_micros().0, now);
}

#[test]
fn http_dates() {
    assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
    assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784_111_777_000_000));
    assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37"), None);
    assert_eq!(parse_http_date("yesterday"), None);
    let now = now_micros() / 1_000_000 * 1_000_000;
    assert_eq!(parse_http_date(&format_http_date(now)), Some(now), "round trip");
}

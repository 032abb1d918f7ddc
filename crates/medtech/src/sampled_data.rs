//! SampledData streams as Azure writes and merges them.
//!
//! A stream covers `[start, end]` in steps of the template's `defaultPeriod`; position `i` holds the
//! latest value whose time falls in `[start + i·period, start + (i+1)·period)`, or `E` where there is
//! none. Positions are computed from time offsets, so values arriving late or out of order land where
//! they belong. Merging decodes the existing stream back to `(time, value)` pairs (each at the start of
//! its position, `E` dropped), merges them with the new values by time (an existing value wins at the
//! exact same instant), and rewrites the stream over the widened period; merging the same values again
//! changes nothing.

use crate::time::Timestamp;

/// More positions than this is refused rather than written (5 million: a day at 20 ms).
pub(crate) const MAX_SAMPLES: i64 = 5_000_000;

/// How many positions `[start, end]` needs at `period_ticks`.
pub(crate) fn sample_count(start: Timestamp, end: Timestamp, period_ticks: i64) -> i64 {
    if end < start || period_ticks <= 0 {
        return 0;
    }
    (end.ticks() - start.ticks()) / period_ticks + 1
}

/// Writes `values` (sorted by time) as a stream over `[start, end]`. The caller checks
/// [`sample_count`] against [`MAX_SAMPLES`] first.
pub(crate) fn build(values: &[(Timestamp, &str)], start: Timestamp, end: Timestamp, period_ticks: i64) -> String {
    let count = sample_count(start, end, period_ticks);
    let mut slots: Vec<Option<&str>> = vec![None; usize::try_from(count).unwrap_or(0)];
    for (t, v) in values {
        if *t < start || *t > end {
            continue;
        }
        let index = (t.ticks() - start.ticks()) / period_ticks;
        if let Some(slot) = usize::try_from(index).ok().and_then(|i| slots.get_mut(i)) {
            *slot = Some(v); // values are time-sorted: the latest in the position wins
        }
    }
    let tokens: Vec<&str> = slots.into_iter().map(|s| s.unwrap_or("E")).collect();
    tokens.join(" ")
}

/// Reads a stream back into `(time, value)` pairs, skipping `E`.
pub(crate) fn decode(data: &str, start: Timestamp, period_ticks: i64) -> Vec<(Timestamp, String)> {
    data.split_whitespace()
        .enumerate()
        .filter(|(_, token)| *token != "E")
        .map(|(i, token)| (start.add_ticks((i as i64).saturating_mul(period_ticks)), token.to_owned()))
        .collect()
}

/// Merges two time-sorted series; at the same instant the `existing` value is kept.
pub(crate) fn merge(existing: Vec<(Timestamp, String)>, new: &[(Timestamp, String)]) -> Vec<(Timestamp, String)> {
    let mut out = Vec::with_capacity(existing.len() + new.len());
    let mut old = existing.into_iter().peekable();
    let mut new = new.iter().peekable();
    loop {
        match (old.peek(), new.peek()) {
            (None, None) => return out,
            (Some(_), None) => out.extend(old.by_ref()),
            (None, Some(_)) => out.extend(new.by_ref().cloned()),
            (Some((a, _)), Some((b, _))) => {
                if a < b {
                    out.extend(old.next());
                } else if a > b {
                    out.extend(new.next().cloned());
                } else {
                    out.extend(old.next());
                    new.next();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap()
    }

    const SECOND: i64 = 10_000_000;

    #[test]
    fn positions_come_from_time_offsets_with_e_for_gaps() {
        let start = t("2019-02-01T22:00:00Z");
        let end = t("2019-02-01T22:00:29Z");
        let values =
            [(t("2019-02-01T22:00:01Z"), "70"), (t("2019-02-01T22:00:16Z"), "72"), (t("2019-02-01T22:00:19Z"), "73")];
        // 5 s period: 6 positions; 16 s and 19 s share position 3, the later one wins.
        assert_eq!(build(&values, start, end, 5 * SECOND), "70 E E 73 E E");
    }

    #[test]
    fn decode_and_merge_keep_existing_at_the_same_instant() {
        let start = t("2019-02-01T22:00:00Z");
        let existing = decode("70 E 71", start, 5 * SECOND);
        assert_eq!(existing, vec![(start, "70".to_owned()), (start.add_ticks(10 * SECOND), "71".to_owned())]);
        let merged = merge(existing, &[(start, "99".to_owned()), (start.add_ticks(6 * SECOND), "80".to_owned())]);
        let refs: Vec<(Timestamp, &str)> = merged.iter().map(|(t, v)| (*t, v.as_str())).collect();
        assert_eq!(build(&refs, start, start.add_ticks(14 * SECOND), 5 * SECOND), "70 80 71");
    }
}

//! When to try a failed delivery again: exponential backoff with jitter.
//!
//! The n-th retry waits `base · 2ⁿ⁻¹`, capped at `max`, then a random point in its upper half
//! ("equal jitter"): deliveries that failed together (a destination went down) spread out instead
//! of returning in a burst, yet none comes back sooner than half its step. A `Retry-After` from the
//! destination (`429`, `503`) is honoured when it asks for longer, up to `max`.

use std::time::Duration;

/// The wait before the next attempt after `attempts` failed ones (1 for the first failure).
/// `unit` is a random number in `[0, 1)`.
pub fn delay(attempts: u32, base: Duration, max: Duration, unit: f64, retry_after: Option<Duration>) -> Duration {
    let exponent = attempts.saturating_sub(1).min(30);
    let step = base.saturating_mul(1u32 << exponent).min(max);
    let half = step / 2;
    let jittered = half + half.mul_f64(unit.clamp(0.0, 1.0));
    match retry_after {
        Some(asked) => jittered.max(asked.min(max)),
        None => jittered,
    }
}

/// A random number in `[0, 1)` for the jitter.
pub fn random_unit() -> f64 {
    let mut bytes = [0u8; 8];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

/// `Retry-After` in seconds (the HTTP-date form is rare from APIs and is ignored).
pub fn parse_retry_after(value: Option<&str>) -> Option<Duration> {
    value?.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn doubles_from_the_base_and_stops_at_the_cap() {
        let at = |n, unit| delay(n, 10 * S, 600 * S, unit, None);
        assert_eq!(at(1, 0.0), 5 * S);
        assert_eq!(at(1, 0.999_999_999), Duration::from_secs_f64(9.999_999_995));
        assert_eq!(at(2, 0.0), 10 * S);
        assert_eq!(at(3, 0.0), 20 * S);
        assert_eq!(at(7, 0.0), 300 * S);
        assert_eq!(at(8, 0.0), 300 * S, "capped at max, then halved by the jitter's floor");
        assert_eq!(at(40, 1.0), 600 * S, "no overflow for huge attempt counts");
    }

    #[test]
    fn jitter_stays_in_the_upper_half() {
        for _ in 0..1000 {
            let d = delay(4, S, 60 * S, random_unit(), None);
            assert!(d >= 4 * S && d < 8 * S, "{d:?}");
        }
    }

    #[test]
    fn retry_after_lengthens_but_never_beyond_the_cap() {
        assert_eq!(delay(1, S, 60 * S, 0.0, Some(30 * S)), 30 * S);
        assert_eq!(delay(1, S, 60 * S, 0.0, Some(3600 * S)), 60 * S);
        assert_eq!(delay(6, S, 60 * S, 0.0, Some(S)), 16 * S, "a shorter Retry-After does not shorten");
        assert_eq!(parse_retry_after(Some(" 7 ")), Some(7 * S));
        assert_eq!(parse_retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")), None);
    }
}

//! A circuit breaker per destination: after `threshold` consecutive failed attempts the circuit
//! opens and the destination gets no traffic for `open_for`; then one trial attempt is let through
//! (half-open). Its success closes the circuit, its failure opens it again.
//!
//! It spares a failing service a stream of retries from every queued message, and it keeps the
//! worker's slots for destinations that answer. The state is per process and in memory: after a
//! restart a destination gets a fresh chance, which costs at most `threshold` attempts.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where one destination's circuit stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// The trial attempt is under way; nothing else goes until it ends.
    HalfOpen,
}

/// One destination's circuit, as pure state transitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Circuit {
    pub state: State,
    /// How many times it has opened since the process started.
    pub opened: u32,
}

impl Default for Circuit {
    fn default() -> Circuit {
        Circuit { state: State::Closed { failures: 0 }, opened: 0 }
    }
}

impl Circuit {
    /// May an attempt start now? Moves an open circuit whose time is up to half-open (the caller
    /// then makes the one trial attempt).
    pub fn admit(&mut self, now: Instant) -> bool {
        match self.state {
            State::Closed { .. } => true,
            State::Open { until } if now >= until => {
                self.state = State::HalfOpen;
                true
            }
            State::Open { .. } | State::HalfOpen => false,
        }
    }

    /// An attempt reached the destination and it accepted (or judged) the message.
    pub fn success(&mut self) {
        self.state = State::Closed { failures: 0 };
    }

    /// An attempt failed in a way that says the destination is unwell (down, 5xx, 429).
    pub fn failure(&mut self, now: Instant, threshold: u32, open_for: Duration) {
        let failures = match self.state {
            State::Closed { failures } => failures + 1,
            State::HalfOpen | State::Open { .. } => threshold.max(1),
        };
        if failures >= threshold.max(1) {
            self.state = State::Open { until: now + open_for };
            self.opened += 1;
        } else {
            self.state = State::Closed { failures };
        }
    }

    /// The admitted trial attempt did not start (another replica leased the delivery): the next
    /// due delivery may be the trial instead.
    pub fn abandon(&mut self, now: Instant) {
        if self.state == State::HalfOpen {
            self.state = State::Open { until: now };
        }
    }

    /// `closed`, `open` or `half-open`, for the API.
    pub fn name(&self) -> &'static str {
        match self.state {
            State::Closed { .. } => "closed",
            State::Open { .. } => "open",
            State::HalfOpen => "half-open",
        }
    }
}

/// Every destination's circuit in this process.
#[derive(Debug)]
pub struct Breakers {
    threshold: u32,
    open_for: Duration,
    circuits: Mutex<HashMap<String, Circuit>>,
}

impl Breakers {
    pub fn new(threshold: u32, open_for: Duration) -> Breakers {
        Breakers { threshold, open_for, circuits: Mutex::new(HashMap::new()) }
    }

    fn with<T>(&self, destination: &str, f: impl FnOnce(&mut Circuit) -> T) -> T {
        let mut circuits = self.circuits.lock().unwrap_or_else(|e| e.into_inner());
        f(circuits.entry(destination.to_owned()).or_default())
    }

    pub fn admit(&self, destination: &str) -> bool {
        self.with(destination, |c| c.admit(Instant::now()))
    }

    pub fn success(&self, destination: &str) {
        self.with(destination, Circuit::success)
    }

    pub fn failure(&self, destination: &str) {
        let (threshold, open_for) = (self.threshold, self.open_for);
        self.with(destination, |c| c.failure(Instant::now(), threshold, open_for))
    }

    pub fn abandon(&self, destination: &str) {
        self.with(destination, |c| c.abandon(Instant::now()))
    }

    /// The circuit as it stands, without changing it.
    pub fn get(&self, destination: &str) -> Circuit {
        let circuits = self.circuits.lock().unwrap_or_else(|e| e.into_inner());
        circuits.get(destination).copied().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_and_closes_after_a_successful_trial() {
        let t0 = Instant::now();
        let open_for = Duration::from_secs(30);
        let mut c = Circuit::default();
        for _ in 0..2 {
            assert!(c.admit(t0));
            c.failure(t0, 3, open_for);
        }
        assert_eq!(c.state, State::Closed { failures: 2 });
        c.failure(t0, 3, open_for);
        assert_eq!(c.name(), "open");
        assert_eq!(c.opened, 1);
        assert!(!c.admit(t0 + Duration::from_secs(29)), "no traffic while open");
        assert!(c.admit(t0 + open_for), "one trial once the time is up");
        assert_eq!(c.name(), "half-open");
        assert!(!c.admit(t0 + open_for), "only one trial at a time");
        c.abandon(t0 + open_for);
        assert!(c.admit(t0 + open_for), "a trial that never started leaves room for another");
        c.success();
        assert_eq!(c.state, State::Closed { failures: 0 });
        assert!(c.admit(t0 + open_for));
    }

    #[test]
    fn a_failed_trial_opens_again_at_once() {
        let t0 = Instant::now();
        let open_for = Duration::from_secs(5);
        let mut c = Circuit::default();
        c.failure(t0, 1, open_for);
        assert!(c.admit(t0 + open_for));
        c.failure(t0 + open_for, 1, open_for);
        assert_eq!(c.state, State::Open { until: t0 + open_for * 2 });
        assert_eq!(c.opened, 2);
    }

    #[test]
    fn a_success_resets_the_count() {
        let t0 = Instant::now();
        let mut c = Circuit::default();
        c.failure(t0, 3, Duration::from_secs(1));
        c.failure(t0, 3, Duration::from_secs(1));
        c.success();
        c.failure(t0, 3, Duration::from_secs(1));
        assert_eq!(c.state, State::Closed { failures: 1 });
    }
}

//! Capped exponential backoff with full jitter, shared by every retry loop (Redis reconnects,
//! sink retries, respawn throttling).

use std::time::Duration;

use rand::Rng;

/// Delay policy: `min(max, base * factor^attempt)`, then a random point in its upper half.
///
/// Half jitter (rather than full jitter) keeps a floor under the delay, so a storm of clients
/// spreads out without any of them hammering a recovering server at near-zero intervals.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay before the first retry.
    pub initial: Duration,
    /// Upper bound of any single delay.
    pub max: Duration,
    /// Growth factor per attempt.
    pub factor: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(5),
            factor: 2.0,
        }
    }
}

impl Backoff {
    /// The un-jittered delay for `attempt` (0-based), capped at `max`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let exp = self.factor.powi(attempt.min(64) as i32);
        let secs = (self.initial.as_secs_f64() * exp).min(self.max.as_secs_f64());
        Duration::from_secs_f64(secs)
    }

    /// The delay to sleep before retry number `attempt` (0-based): uniform in `[ceiling/2, ceiling]`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt);
        let half = ceiling / 2;
        if half.is_zero() {
            return ceiling;
        }
        let jitter = rand::rng().random_range(0..=half.as_nanos() as u64);
        half + Duration::from_nanos(jitter)
    }

    /// An iterator-like counter over successive delays.
    pub fn attempts(self) -> Attempts {
        Attempts {
            policy: self,
            attempt: 0,
        }
    }
}

/// Successive delays of one retry loop; call [`Attempts::reset`] after a success.
#[derive(Debug, Clone)]
pub struct Attempts {
    policy: Backoff,
    attempt: u32,
}

impl Attempts {
    /// The next delay, advancing the attempt counter.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.policy.delay(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        d
    }

    /// How many delays were handed out since the last reset.
    pub fn count(&self) -> u32 {
        self.attempt
    }

    /// Start again from the initial delay.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_then_stay_capped_within_jitter_bounds() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            factor: 2.0,
        };
        assert_eq!(b.ceiling(0), Duration::from_millis(100));
        assert_eq!(b.ceiling(2), Duration::from_millis(400));
        assert_eq!(b.ceiling(10), Duration::from_secs(1));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(1));
        for attempt in 0..20 {
            let d = b.delay(attempt);
            let c = b.ceiling(attempt);
            assert!(
                d >= c / 2 && d <= c,
                "attempt {attempt}: {d:?} outside [{:?}, {c:?}]",
                c / 2
            );
        }
    }

    #[test]
    fn jitter_spreads_delays() {
        let b = Backoff::default();
        let delays: std::collections::HashSet<_> = (0..50).map(|_| b.delay(6)).collect();
        assert!(
            delays.len() > 10,
            "jitter produced only {} distinct delays",
            delays.len()
        );
    }

    #[test]
    fn attempts_reset() {
        let mut a = Backoff::default().attempts();
        a.next_delay();
        a.next_delay();
        assert_eq!(a.count(), 2);
        a.reset();
        assert_eq!(a.count(), 0);
    }
}

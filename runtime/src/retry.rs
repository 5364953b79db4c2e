//! When a failed attempt runs again: exponential backoff with jitter.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Exponential backoff: attempt `n` waits about `base * 2^(n-1)`, at most
/// `cap`, with "equal jitter" (half fixed, half random) so a burst of
/// failures does not retry in lockstep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backoff {
    /// The first retry's nominal delay. Default 2 s.
    pub base: Duration,
    /// No retry waits longer than this. Default 1 hour.
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_secs(2),
            cap: Duration::from_secs(3600),
        }
    }
}

impl Backoff {
    /// How the host tries again to reach its queue server: from 100 ms,
    /// doubling, at most 5 s apart, so an outage costs a few calls a minute
    /// and a recovered server is noticed within seconds. Used by the
    /// worker's claim loop and ack recorder and by the wake-up listeners.
    pub const RECONNECT: Backoff = Backoff {
        base: Duration::from_millis(100),
        cap: Duration::from_secs(5),
    };

    /// The nominal (jitter-free) delay after attempt `attempt` (1-based).
    pub fn nominal(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The delay to use after attempt `attempt`: between half the nominal
    /// delay and all of it.
    pub fn delay(&self, attempt: u32) -> Duration {
        let nominal = self.nominal(attempt);
        let half = nominal / 2;
        let spread = u64::try_from((nominal - half).as_millis()).unwrap_or(u64::MAX);
        half + Duration::from_millis(fastrand::u64(0..=spread))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_bounded_jitter() {
        let b = Backoff {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(10),
        };
        let nominal: Vec<_> = (1..=6).map(|a| b.nominal(a).as_secs()).collect();
        assert_eq!(nominal, vec![1, 2, 4, 8, 10, 10]);
        assert_eq!(b.nominal(200), Duration::from_secs(10), "no overflow");
        for attempt in 1..=6 {
            for _ in 0..100 {
                let d = b.delay(attempt);
                assert!(
                    d >= b.nominal(attempt) / 2 && d <= b.nominal(attempt),
                    "{d:?}"
                );
            }
        }
    }
}

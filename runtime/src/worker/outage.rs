//! Backoff while the backend is unreachable ([`Backoff::RECONNECT`],
//! without jitter: one worker's loop is not a crowd), one warning per
//! outage and one line when it is over. The claim loop and the ack
//! recorder each keep their own.

use std::time::Duration;

use crate::error::QueueError;
use crate::retry::Backoff;

#[derive(Debug, Default)]
pub(super) struct Outage {
    /// Calls failed in a row.
    failures: u32,
}

impl Outage {
    /// A call failed with `e`: how long to pause before the next.
    pub fn failed(&mut self, e: &QueueError) -> Duration {
        if self.failures == 0 {
            tracing::warn!(error = %e, "queue backend unreachable; retrying with backoff");
        }
        self.failures = self.failures.saturating_add(1);
        Backoff::RECONNECT.nominal(self.failures)
    }

    /// A call went through.
    pub fn recovered(&mut self) {
        if std::mem::take(&mut self.failures) > 0 {
            tracing::info!("queue backend reachable again");
        }
    }
}

//! Backoff while the backend is unreachable: 100 ms doubling to 5 s, one
//! warning per outage and one line when it is over. The claim loop and
//! the ack recorder each keep their own.

use std::time::Duration;

use crate::error::QueueError;

/// The first pause after a failed call.
const FIRST: Duration = Duration::from_millis(100);
/// The longest pause: a worker notices a recovered backend within it.
const LONGEST: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
pub(super) struct Outage {
    pause: Option<Duration>,
}

impl Outage {
    /// A call failed with `e`: how long to pause before the next.
    pub fn failed(&mut self, e: &QueueError) -> Duration {
        let pause = match self.pause {
            None => {
                tracing::warn!(error = %e, "queue backend unreachable; retrying with backoff");
                FIRST
            }
            Some(p) => (p * 2).min(LONGEST),
        };
        self.pause = Some(pause);
        pause
    }

    /// A call went through.
    pub fn recovered(&mut self) {
        if self.pause.take().is_some() {
            tracing::info!("queue backend reachable again");
        }
    }
}

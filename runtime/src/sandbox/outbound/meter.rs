//! Counts of handlers' HTTP requests, per queue: how each ended and how
//! long it took, for the worker's metrics.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::job::QueueName;

/// Upper bounds of the request-duration histogram's buckets, seconds.
pub const BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// Every queue's requests since the process started.
#[derive(Debug, Default)]
pub struct HttpMeter(Mutex<BTreeMap<QueueName, QueueRequests>>);

/// One queue's requests.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct QueueRequests {
    /// Requests by outcome: `2xx` .. `5xx`, `denied` (allowlist or request
    /// count), `prohibited` (a private address), `timeout`, `error`.
    pub outcomes: BTreeMap<&'static str, u64>,
    /// Cumulative counts of requests that took at most each of [`BUCKETS`]
    /// (to the response's headers; denied ones are not timed).
    pub buckets: [u64; BUCKETS.len()],
    /// Requests timed.
    pub count: u64,
    /// Their time in all, seconds.
    pub sum: f64,
}

impl HttpMeter {
    /// A request of `queue` ended with `outcome`, after `elapsed` if it
    /// was sent.
    pub fn record(&self, queue: &QueueName, outcome: &'static str, elapsed: Option<Duration>) {
        let mut all = crate::sync::lock(&self.0);
        let q = match all.get_mut(queue) {
            Some(q) => q,
            None => all.entry(queue.clone()).or_default(),
        };
        *q.outcomes.entry(outcome).or_default() += 1;
        if let Some(elapsed) = elapsed {
            let secs = elapsed.as_secs_f64();
            for (bound, n) in BUCKETS.iter().zip(&mut q.buckets) {
                if secs <= *bound {
                    *n += 1;
                }
            }
            q.count += 1;
            q.sum += secs;
        }
    }

    /// Every queue's counts, now.
    pub fn snapshot(&self) -> Vec<(QueueName, QueueRequests)> {
        crate::sync::lock(&self.0)
            .iter()
            .map(|(q, r)| (q.clone(), r.clone()))
            .collect()
    }
}

/// The outcome label of a response's status.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

//! In-flight bookkeeping: the claimed jobs waiting for a slot (the ready
//! line), and the count of jobs claimed but not yet recorded, which is
//! what the worker's concurrency and each queue's cap bound.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, Semaphore};

use crate::queue::Claim;

use super::policy::Served;

/// A claimed job on its way through the worker, with its queue.
pub(super) type Held = (Claim, Arc<Served>);

/// Claimed jobs waiting for a free slot. The loop never claims more than
/// there are free slots, so the line stays shorter than the concurrency.
#[derive(Debug)]
pub(super) struct Ready {
    line: Mutex<VecDeque<Held>>,
    /// One permit per job in the line; closed when the loop is over.
    count: Semaphore,
}

impl Default for Ready {
    fn default() -> Self {
        Ready {
            line: Mutex::new(VecDeque::new()),
            count: Semaphore::new(0),
        }
    }
}

impl Ready {
    fn line(&self) -> std::sync::MutexGuard<'_, VecDeque<Held>> {
        crate::sync::lock(&self.line)
    }

    /// Puts claimed jobs in line.
    pub fn push(&self, jobs: impl IntoIterator<Item = Held>) {
        let mut line = self.line();
        let before = line.len();
        line.extend(jobs);
        let added = line.len() - before;
        drop(line);
        self.count.add_permits(added);
    }

    /// The next job, waiting for one; `None` once the loop is over and
    /// the line is empty.
    pub async fn take(&self) -> Option<Held> {
        // Closed: what is left in line still goes through the slots.
        if let Ok(permit) = self.count.acquire().await {
            permit.forget();
        }
        self.line().pop_front()
    }

    /// No more jobs will come.
    pub fn close(&self) {
        self.count.close();
    }
}

/// Jobs claimed and not yet recorded.
#[derive(Debug, Default)]
pub(super) struct InFlight {
    count: AtomicUsize,
    /// How many have been recorded so far: the loop compares it with what
    /// it saw last to tell that room was made.
    settled: AtomicU64,
    changed: Notify,
}

impl InFlight {
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many jobs have been recorded so far.
    pub fn settled_so_far(&self) -> u64 {
        self.settled.load(Ordering::Acquire)
    }

    /// `n` jobs of `served` were claimed.
    pub fn took(&self, served: &Served, n: usize) {
        served.took(n);
        self.count.fetch_add(n, Ordering::AcqRel);
    }

    /// A job of `served` was recorded (or given up): its room is free.
    /// The loop hears of it at the next [`InFlight::settled_all`].
    pub fn settle(&self, served: &Served) {
        served.settled();
        self.count.fetch_sub(1, Ordering::AcqRel);
        self.settled.fetch_add(1, Ordering::AcqRel);
    }

    /// Wakes the loop once for the jobs settled since the last call, so
    /// a batch of acks is one wake-up of the loop rather than one per job.
    pub fn settled_all(&self) {
        self.changed.notify_one();
    }

    /// Resolves after a batch of jobs settles (at once if one did since
    /// the last wait).
    pub async fn settled(&self) {
        self.changed.notified().await;
    }
}

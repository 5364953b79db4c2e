//! In-flight bookkeeping: the claimed jobs waiting for a slot (the ready
//! line); the count of jobs whose attempts have not ended, which the
//! worker's concurrency and each queue's cap bound; and the count of jobs
//! whose ends are not yet recorded.

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

/// Jobs claimed whose attempts have not ended (what the worker's
/// concurrency and each queue's cap bound), and jobs claimed whose ends are
/// not yet recorded (what a drain and a shutdown wait for).
///
/// Room is made when an attempt ends, not when its end is recorded: the
/// record goes in the next ack batch while the slot already runs a newly
/// claimed job, so a claim and an ack are never round trips in series. The
/// ends waiting to be recorded are bounded too (see [`InFlight::room`]),
/// so a backend slower to record than to hand out jobs cannot make them
/// pile up.
#[derive(Debug, Default)]
pub(super) struct InFlight {
    running: AtomicUsize,
    unrecorded: AtomicUsize,
    /// How many attempts have ended so far: the loop compares it with what
    /// it saw last to tell that room was made.
    ended: AtomicU64,
    changed: Notify,
}

impl InFlight {
    /// Jobs claimed whose attempts have not ended.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }

    /// Whether every claimed job's end is recorded.
    pub fn all_recorded(&self) -> bool {
        self.unrecorded.load(Ordering::Acquire) == 0
    }

    /// How many more jobs may be claimed under `concurrency`: free slots,
    /// as long as at most twice `concurrency` jobs are claimed and not yet
    /// recorded (those running and the ends waiting for the recorder).
    pub fn room(&self, concurrency: usize) -> usize {
        let free = concurrency.saturating_sub(self.running());
        let backlog = self.unrecorded.load(Ordering::Acquire);
        free.min(concurrency.saturating_mul(2).saturating_sub(backlog))
    }

    /// How many attempts have ended so far.
    pub fn ended_so_far(&self) -> u64 {
        self.ended.load(Ordering::Acquire)
    }

    /// `n` jobs of `served` were claimed.
    pub fn took(&self, served: &Served, n: usize) {
        served.took(n);
        self.running.fetch_add(n, Ordering::AcqRel);
        self.unrecorded.fetch_add(n, Ordering::AcqRel);
    }

    /// An attempt of `served` ended (or was given up): its slot and its
    /// place under the queue's cap are free.
    pub fn ended(&self, served: &Served) {
        served.ended();
        served.meter.ended();
        self.running.fetch_sub(1, Ordering::AcqRel);
        self.ended.fetch_add(1, Ordering::AcqRel);
        self.changed.notify_one();
    }

    /// `n` ended attempts were recorded (or given up).
    pub fn recorded(&self, n: usize) {
        self.unrecorded.fetch_sub(n, Ordering::AcqRel);
        self.changed.notify_one();
    }

    /// Resolves after an attempt ends or a batch is recorded (at once if
    /// one did since the last wait).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

//! A job slot: one task per unit of the worker's concurrency, taking
//! claimed jobs from the ready line and running one attempt at a time:
//! the runner, the lease kept renewed while it runs, the hand-back when
//! the grace period is over, then the attempt's end handed to the ack
//! recorder without waiting for it, so the slot goes on to the next job
//! (and the loop may claim for it) at once.

use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::{mpsc, watch};

use crate::error::InputError;
use crate::job::{FailureKind, JobRecord, MAX_DELAY, check_delay};
use crate::queue::{Completion, JobQueue, Lease};
use crate::retry::Backoff;
use crate::sandbox::{RunOutcome, RunReport};

use super::Runner;
use super::acks::Attempted;
use super::inflight::{InFlight, Ready};

/// What every slot shares.
#[derive(Debug)]
pub(super) struct Slots {
    pub jobs: Arc<dyn JobQueue>,
    pub runner: Arc<dyn Runner>,
    pub ready: Arc<Ready>,
    pub inflight: Arc<InFlight>,
    pub acks: mpsc::UnboundedSender<Attempted>,
    /// The lease length: renewed every third of it.
    pub lease: Duration,
    /// Retry at once whatever the backoff (the sync mode).
    pub retry_at_once: bool,
}

/// Runs one slot until the ready line is closed and empty; `stop` turns
/// true when in-flight attempts are to be handed back.
pub(super) async fn run(slots: Arc<Slots>, mut stop: watch::Receiver<bool>) {
    while let Some((claim, served)) = slots.ready.take().await {
        let crate::queue::Claim { job, lease } = claim;
        served.meter.started();
        // Checked first: after the grace period, a job that had not
        // started yet goes back at once too.
        let report = if *stop.borrow() {
            Ok(None)
        } else {
            let mut run = std::pin::pin!(
                AssertUnwindSafe(slots.runner.run(&job, slots.lease)).catch_unwind()
            );
            // Polled once before the renewal starts: an attempt that ends
            // in its first poll (most short jobs) needs no renewal timer,
            // which is a timer-wheel entry per attempt.
            match crate::sync::poll_once(run.as_mut()).await {
                Poll::Ready(report) => report,
                Poll::Pending => tokio::select! {
                    biased;
                    () = stopped(&mut stop) => Ok(None),
                    report = &mut run => report,
                    never = renew(&*slots.jobs, &lease, slots.lease) => match never {},
                },
            }
        };
        let attempted = match report {
            Ok(report) => {
                let completion = match &report {
                    None => Completion::Release,
                    Some(report) => {
                        completion(report, &job, served.policy.backoff, slots.retry_at_once)
                    }
                };
                Attempted {
                    job,
                    lease,
                    served,
                    report,
                    completion: Some(completion),
                }
            }
            // A runner cannot panic on guest input; if a host bug ever
            // makes one, nothing is recorded (the lease runs out and the
            // job runs again) and the worker goes on.
            Err(_) => {
                tracing::error!(job = %job.id, "running the job panicked; it will run again after its lease");
                Attempted {
                    job,
                    lease,
                    served,
                    report: None,
                    completion: None,
                }
            }
        };
        slots.inflight.ended(&attempted.served);
        // The recorder outlives every slot.
        let _ = slots.acks.send(attempted);
    }
}

/// Resolves once `stop` turns true.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|stopped| *stopped).await.is_err() {
        // The worker dropped the sender: it no longer stops anyone.
        std::future::pending::<()>().await;
    }
}

/// Keeps `lease` renewed, every third of its length, for as long as it is
/// polled; it never ends. A lease found lost is left alone: the ack will
/// be stale. A renewal the backend refuses is tried again next time.
async fn renew(jobs: &dyn JobQueue, lease: &Lease, length: Duration) -> Infallible {
    let mut current = lease.clone();
    loop {
        tokio::time::sleep(length / 3).await;
        match jobs.renew(&current, length).await {
            Ok(Some(renewed)) => current = renewed,
            Ok(None) => std::future::pending::<()>().await,
            Err(_) => {}
        }
    }
}

/// What to record for an attempt that ran to `report`.
fn completion(report: &RunReport, job: &JobRecord, backoff: Backoff, at_once: bool) -> Completion {
    // Sync mode retries at once, whatever the handler asked: it never
    // sleeps, and never leaves a retry behind in a queue that ends with the
    // command.
    let delay = |asked: Option<Duration>| match asked {
        _ if at_once => Duration::ZERO,
        Some(delay) => delay,
        None => backoff.delay(job.attempts),
    };
    // The handler's own retry and fail are always of kind `Handler`; only
    // the sandbox names a limit.
    match &report.outcome {
        RunOutcome::Done => Completion::Done,
        // Put off past the longest a job may wait: refused, and the job
        // fails saying so.
        RunOutcome::Retry {
            reason,
            delay: Some(asked),
        } if check_delay(*asked).is_err() => Completion::Fail {
            kind: FailureKind::Handler,
            error: InputError::RetryDelayTooLong {
                delay: *asked,
                limit: MAX_DELAY,
                reason: reason.clone(),
            }
            .to_string(),
        },
        RunOutcome::Retry {
            reason,
            delay: asked,
        } => Completion::Retry {
            kind: FailureKind::Handler,
            error: reason.clone(),
            delay: delay(*asked),
        },
        RunOutcome::Fail { reason } => Completion::Fail {
            kind: FailureKind::Handler,
            error: reason.clone(),
        },
        RunOutcome::Crashed { kind, reason } => Completion::Retry {
            kind: *kind,
            error: reason.clone(),
            delay: delay(None),
        },
    }
}

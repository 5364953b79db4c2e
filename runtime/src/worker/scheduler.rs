//! The claim loop: decides when to claim and how much of each queue, and
//! puts what it claims in the ready line for the slots. It sees only the
//! job queue, the runner's per-queue policy, and the in-flight count.
//!
//! With several queues, each claim round shares the free room between them
//! by weight, under each queue's cap (see [`super::fair`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::error::QueueError;
use crate::job::QueueName;
use crate::metrics::Metrics;
use crate::queue::{Claim, JobQueue};

use super::fair;
use super::inflight::{Held, InFlight, Ready};
use super::outage::Outage;
use super::policy::{Policies, Served};
use super::{Runner, WorkerConfig};

/// Longest a free slot waits for more room before a claim of less than a
/// batch (so slow jobs do not leave slots idle while jobs wait).
pub(super) const LINGER: Duration = Duration::from_millis(5);

/// How long one wait for work lasts before the loop looks again (a
/// backend may miss a wake-up; this bounds the cost of one missed).
const WAIT_FOR_WORK: Duration = Duration::from_secs(1);

/// Why the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    /// The work is done: `max_jobs` claimed, or drained.
    Finished,
    /// Shutdown arrived: in-flight jobs get the grace period.
    Shutdown,
}

/// The claim loop's parts.
#[derive(Debug)]
pub(super) struct Scheduler {
    pub jobs: Arc<dyn JobQueue>,
    pub runner: Arc<dyn Runner>,
    pub metrics: Arc<Metrics>,
    pub config: WorkerConfig,
    pub inflight: Arc<InFlight>,
    pub ready: Arc<Ready>,
    pub policies: Policies,
}

/// Where the loop stands between claim rounds.
#[derive(Debug)]
struct LoopState {
    /// Jobs claimed so far (against `max_jobs`).
    claimed: u64,
    /// Where the next round starts in the rotating order of queues.
    turn: usize,
    /// Whether the last round took all it asked for, so the queues may
    /// have more; if not, the loop waits for work before claiming again.
    hungry: bool,
    /// Whether a queue's cap held the last round back: an attempt ending
    /// makes room for it, so the loop is hungry again.
    capped: bool,
    /// Whether free room has waited [`LINGER`] for a batch's worth.
    lingered: bool,
    /// Queues that had room in the last round: the ones worth waiting on.
    open: Vec<QueueName>,
    /// How many attempts had ended when the loop last looked.
    ended_seen: u64,
    /// Backoff while the backend is unreachable.
    outage: Outage,
}

/// What one claim round got.
struct Round {
    /// Queues that had room.
    open: Vec<QueueName>,
    claims: Vec<Held>,
    /// Whether it got all the room it asked for (the queues may have more).
    took_all: bool,
    /// Whether a queue's cap held it back.
    capped: bool,
}

impl Scheduler {
    /// Claims until `shutdown` resolves (or, with `max_jobs` or `drain`,
    /// until the work is done); returns why it ended and how many jobs it
    /// claimed. Backend errors do not end it: it logs them and tries again
    /// with backoff until the backend is back.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> (End, u64) {
        let concurrency = self.config.concurrency.max(1);
        let mut st = LoopState {
            claimed: 0,
            turn: 0,
            hungry: true,
            capped: false,
            lingered: false,
            open: Vec::new(),
            ended_seen: 0,
            outage: Outage::default(),
        };
        tokio::pin!(shutdown);
        loop {
            let ended = self.inflight.ended_so_far();
            if ended != st.ended_seen {
                st.ended_seen = ended;
                st.hungry |= st.capped;
            }
            let budget = self
                .config
                .max_jobs
                .map_or(u64::MAX, |m| m.saturating_sub(st.claimed));
            if budget == 0 {
                return (End::Finished, st.claimed);
            }
            let busy = self.inflight.running();
            let room = self.inflight.room(concurrency);
            // Claim in batches: with jobs in flight, wait until a batch's
            // worth of room is free (or LINGER has passed) rather than
            // claiming one job per finished one.
            let refill = self.config.batch.min(concurrency / 2).max(1);
            let claiming = room > 0 && st.hungry && (room >= refill || busy == 0 || st.lingered);
            let mut waited = Ok(());
            if claiming {
                st.lingered = false;
                st.turn = st.turn.wrapping_add(1);
                match self.claim(room, budget, st.turn).await {
                    Ok(round) => {
                        st.outage.recovered();
                        st.hungry = round.took_all;
                        st.capped = round.capped;
                        st.open = round.open;
                        let claimed = round.claims.len();
                        st.claimed += claimed as u64;
                        self.ready.push(round.claims);
                        if claimed > 0 && st.hungry {
                            continue;
                        }
                    }
                    Err(e) => waited = Err(e),
                }
            }
            if self.config.drain && self.inflight.all_recorded() && !st.hungry && waited.is_ok() {
                match self.nothing_left(&st.open).await {
                    Ok(true) => return (End::Finished, st.claimed),
                    Ok(false) => {}
                    Err(e) => waited = Err(e),
                }
            }
            // With the backend unreachable, pause (an attempt may end or a
            // shutdown arrive meanwhile), then try again.
            let pause = waited.err().map(|e| st.outage.failed(&e));
            let lingering = room > 0 && st.hungry && !claiming && pause.is_none();
            let waiting = room > 0 && !st.hungry && !st.open.is_empty() && pause.is_none();
            tokio::select! {
                () = &mut shutdown => return (End::Shutdown, st.claimed),
                () = self.inflight.changed(), if !self.inflight.all_recorded() => {}
                () = tokio::time::sleep(pause.unwrap_or_default()), if pause.is_some() => {}
                () = tokio::time::sleep(LINGER), if lingering => st.lingered = true,
                // Only queues with room are worth waiting on; with none, a
                // job ending makes room.
                waited = self.jobs.wait_for_work(&st.open, WAIT_FOR_WORK), if waiting => {
                    match waited {
                        Ok(()) => st.lingered = true,
                        Err(e) => tokio::time::sleep(st.outage.failed(&e)).await,
                    }
                    st.hungry = true;
                }
            }
        }
    }

    /// The queues to serve now, each with its policy.
    async fn served(&mut self) -> Result<Vec<Arc<Served>>, QueueError> {
        let listed;
        let names = if self.config.queues.is_empty() {
            listed = self.jobs.queues().await?;
            &listed
        } else {
            &self.config.queues
        };
        Ok(names
            .iter()
            .map(|q| self.policies.get(q, &*self.runner, &self.metrics))
            .collect())
    }

    /// Whether draining is over: nothing pending (nor scheduled, unless
    /// those are left for later) in `queues`.
    async fn nothing_left(&self, queues: &[QueueName]) -> Result<bool, QueueError> {
        for q in queues {
            let c = self.jobs.counts(q).await?;
            let scheduled = if self.config.leave_scheduled {
                0
            } else {
                c.scheduled
            };
            if c.pending + scheduled > 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Claims up to `room` jobs (within `budget`), shared between the
    /// served queues by weight and under their caps, starting the round at
    /// queue number `turn`.
    async fn claim(&mut self, room: usize, budget: u64, turn: usize) -> Result<Round, QueueError> {
        let mut queues = self.served().await?;
        if !queues.is_empty() {
            let first = turn % queues.len();
            queues.rotate_left(first);
        }
        let standing: Vec<fair::Standing> = queues
            .iter()
            .map(|q| fair::Standing {
                weight: q.policy.weight,
                free: q.free(),
            })
            .collect();
        let room = room
            .min(self.config.batch.max(1))
            .min(usize::try_from(budget).unwrap_or(usize::MAX));
        let wants = fair::shares(room, &standing);
        let mut claims = Vec::new();
        let mut took = vec![0usize; queues.len()];
        // Queues that took their whole share and may take more.
        let mut hungry = Vec::new();
        for (i, (s, &want)) in standing.iter().zip(&wants).enumerate() {
            if want == 0 {
                continue;
            }
            let got = self.claim_from(&queues[i], want, &mut claims).await?;
            took[i] += got;
            if got == want && s.free > want {
                hungry.push((i, s.free - want));
            }
        }
        for (i, free) in hungry {
            let left = room.saturating_sub(claims.len()).min(free);
            if left == 0 {
                break;
            }
            took[i] += self.claim_from(&queues[i], left, &mut claims).await?;
        }
        let capped = standing
            .iter()
            .zip(&took)
            .any(|(s, &took)| s.free < usize::MAX && took >= s.free);
        let took_all = claims.len() >= room;
        let open = queues
            .iter()
            .zip(&standing)
            .filter(|(_, s)| s.free > 0)
            .map(|(q, _)| q.name.clone())
            .collect();
        Ok(Round {
            open,
            claims,
            took_all,
            capped,
        })
    }

    /// Claims up to `n` jobs of `queue` into `claims` (counted in flight at
    /// once); returns how many. An error after earlier claims in the round
    /// keeps those (they are ours now) and ends the round; the next round
    /// meets the error again.
    async fn claim_from(
        &self,
        queue: &Arc<Served>,
        n: usize,
        claims: &mut Vec<Held>,
    ) -> Result<usize, QueueError> {
        match self
            .jobs
            .claim(std::slice::from_ref(&queue.name), n, self.config.lease)
            .await
        {
            Ok(got) => {
                let count = got.len();
                self.inflight.took(queue, count);
                claims.extend(got.into_iter().map(|c: Claim| (c, queue.clone())));
                Ok(count)
            }
            Err(_) if !claims.is_empty() => Ok(0),
            Err(e) => Err(e),
        }
    }
}

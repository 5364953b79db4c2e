//! The claim loop: decides when to claim and how much of each queue, and
//! puts what it claims in the ready line for the slots. It sees only the
//! job queue, the runner's per-queue policy, and the in-flight count.
//!
//! With several queues, each claim round shares the free room between them
//! by weight, under each queue's cap (see [`super::fair`]).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::error::QueueError;
use crate::job::{QueueName, TenantName};
use crate::metrics::Metrics;
use crate::queue::{Claim, DueQueue, JobQueue, RunTimeBudget};

use super::fair;
use super::inflight::{Held, InFlight, Ready};
use super::outage::Outage;
use super::policy::{Policies, Served, TenantServed};
use super::reload::Reload;
use super::{Runner, WorkerConfig};

/// Longest a free slot waits for more room before a claim of less than a
/// batch (so slow jobs do not leave slots idle while jobs wait).
pub(super) const LINGER: Duration = Duration::from_millis(5);

/// How long one wait for work lasts before the loop looks again (a
/// backend may miss a wake-up; this bounds the cost of one missed).
const WAIT_FOR_WORK: Duration = Duration::from_secs(1);

/// How long a worker serving every queue claims from the due queues it
/// read before reading the index again, while it finds work in them: one
/// read per round would cost a round trip per batch; a queue that comes
/// due meanwhile waits at most this long.
const DUE_REFRESH: Duration = Duration::from_millis(10);

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
    /// Each tenant's credit in the deficit round robin, in
    /// [`fair::SLOT`] units; only tenants of the last round.
    pub deficits: HashMap<TenantName, i64>,
    /// Hot swap: serving every queue, a queue's published module is
    /// installed before its first claim.
    pub reload: Option<Reload>,
    /// Serving every queue: the due queues last read, and when.
    pub due_cache: Option<(tokio::time::Instant, Vec<DueQueue>)>,
    /// Tenants' slots in flight across the fleet, for those with a
    /// `max_in_flight`.
    pub flight: Option<Arc<super::flight::Flight>>,
    /// Tenants' run-time budgets, for those with a `cpu_budget_s`.
    pub budgets: Option<Arc<super::budget::Budgets>>,
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
    /// Whether the last round had any queue to serve; discovering, none
    /// means waiting for any queue to come due.
    served: bool,
    /// Queues of tenants the last round held back across the fleet (their
    /// `max_in_flight` full, or their run-time budget spent): not waited
    /// on, since their work is there but not theirs to run yet; looked at
    /// again when an attempt here ends, or after [`WAIT_FOR_WORK`].
    held: Vec<QueueName>,
    /// Queues of the last round not worth waiting on: the held ones and
    /// those without room here (an attempt ending makes room).
    closed: Vec<QueueName>,
    /// How many attempts had ended when the loop last looked.
    ended_seen: u64,
    /// Backoff while the backend is unreachable.
    outage: Outage,
}

/// One tenant's queues in a claim round, and how many jobs it got.
struct Tenant {
    served: Arc<TenantServed>,
    queues: Vec<(Arc<Served>, Option<DueQueue>)>,
    got: usize,
}

/// What one claim round got.
struct Round {
    /// Queues that had room (theirs and their tenant's).
    open: Vec<QueueName>,
    /// Whether it had any queue to serve.
    served: bool,
    /// Queues of tenants held back across the fleet.
    held: Vec<QueueName>,
    /// Its queues without room: held, or full here.
    closed: Vec<QueueName>,
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
            served: false,
            held: Vec::new(),
            closed: Vec::new(),
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
                        st.served = round.served;
                        st.held = round.held;
                        st.closed = round.closed;
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
                // A held tenant's queues still have their work.
                let open: Vec<QueueName> = st.open.iter().chain(&st.held).cloned().collect();
                match self.nothing_left(&open).await {
                    Ok(true) => return (End::Finished, st.claimed),
                    Ok(false) => {}
                    Err(e) => waited = Err(e),
                }
            }
            // With the backend unreachable, pause (an attempt may end or a
            // shutdown arrive meanwhile), then try again.
            let pause = waited.err().map(|e| st.outage.failed(&e));
            let lingering = room > 0 && st.hungry && !claiming && pause.is_none();
            // Queues without room are not worth waiting on (an attempt
            // ending makes room); discovering, with no queue due at all,
            // any queue coming due is.
            let waiting = room > 0
                && !st.hungry
                && (!st.open.is_empty() || !st.held.is_empty() || (self.discovers() && !st.served))
                && pause.is_none();
            tokio::select! {
                () = &mut shutdown => return (End::Shutdown, st.claimed),
                () = self.inflight.changed(), if !self.inflight.all_recorded() => {}
                () = tokio::time::sleep(pause.unwrap_or_default()), if pause.is_some() => {}
                () = tokio::time::sleep(LINGER), if lingering => st.lingered = true,
                // Only queues with room are worth waiting on; with none, a
                // job ending makes room.
                waited = self.wait(&st.open, &st.closed), if waiting => {
                    match waited {
                        Ok(()) => st.lingered = true,
                        Err(e) => tokio::time::sleep(st.outage.failed(&e)).await,
                    }
                    st.hungry = true;
                }
            }
        }
    }

    /// Waits for work in `open` queues or, discovering, in any queue (of
    /// the worker's tenant, if it has one) but the `closed` ones.
    async fn wait(&self, open: &[QueueName], closed: &[QueueName]) -> Result<(), QueueError> {
        if self.discovers() {
            let tenant = self.config.tenant.as_ref();
            self.jobs.wait_for_due(closed, tenant, WAIT_FOR_WORK).await
        } else {
            self.jobs.wait_for_work(open, WAIT_FOR_WORK).await
        }
    }

    /// Whether the worker serves every queue it can find (none named):
    /// it then finds them through the backend's due index.
    fn discovers(&self) -> bool {
        self.config.queues.is_empty()
    }

    /// The queues to serve now, each with its policy, and (found through
    /// the due index) its entry there.
    async fn served(&mut self) -> Result<Vec<(Arc<Served>, Option<DueQueue>)>, QueueError> {
        if !self.discovers() {
            return Ok(self
                .config
                .queues
                .iter()
                .map(|q| (self.policies.get(q, &*self.runner, &self.metrics), None))
                .collect());
        }
        let fresh = self
            .due_cache
            .as_ref()
            .filter(|(at, _)| at.elapsed() < DUE_REFRESH)
            .map(|(_, due)| due.clone());
        let mut due = match fresh {
            Some(due) => due,
            None => {
                let due = self.jobs.due().await?;
                self.due_cache = Some((tokio::time::Instant::now(), due.clone()));
                due
            }
        };
        due.retain(|d| self.config.tenant.as_ref().is_none_or(|t| d.queue.is_in(t)));
        if let Some(reload) = &self.reload {
            let new: Vec<QueueName> = due
                .iter()
                .filter(|d| !self.policies.has(&d.queue))
                .map(|d| d.queue.clone())
                .collect();
            if !new.is_empty() {
                reload.sync(&new).await;
            }
        }
        Ok(due
            .into_iter()
            .map(|d| {
                (
                    self.policies.get(&d.queue, &*self.runner, &self.metrics),
                    Some(d),
                )
            })
            .collect())
    }

    /// Whether draining is over: nothing pending (nor scheduled, unless
    /// those are left for later) in `queues`.
    async fn nothing_left(&self, queues: &[QueueName]) -> Result<bool, QueueError> {
        let listed;
        let queues = if self.discovers() {
            listed = self.jobs.queues().await?;
            &listed
        } else {
            queues
        };
        let tenant = self.config.tenant.as_ref();
        for q in queues.iter().filter(|q| tenant.is_none_or(|t| q.is_in(t))) {
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
    /// served queues' tenants by deficit round robin and then between each
    /// tenant's queues by weight, under the caps, starting the round at
    /// tenant number `turn` (and, within a tenant, queue number `turn`).
    /// Due queues that had less than was asked are settled in the index.
    async fn claim(&mut self, room: usize, budget: u64, turn: usize) -> Result<Round, QueueError> {
        let served = self.served().await?;
        let concurrency = self.config.concurrency.max(1);
        // Group by tenant, in order of first appearance, then rotate.
        let mut tenants: Vec<Tenant> = Vec::new();
        let mut place: HashMap<TenantName, usize> = HashMap::new();
        for (queue, due) in served {
            let i = *place.entry(queue.tenant.name.clone()).or_insert_with(|| {
                tenants.push(Tenant {
                    served: queue.tenant.clone(),
                    queues: Vec::new(),
                    got: 0,
                });
                tenants.len() - 1
            });
            tenants[i].queues.push((queue, due));
        }
        if !tenants.is_empty() {
            let first = turn % tenants.len();
            tenants.rotate_left(first);
        }
        for t in &mut tenants {
            let first = turn % t.queues.len();
            t.queues.rotate_left(first);
        }
        let mut standing: Vec<fair::TenantStanding> = tenants
            .iter()
            .map(|t| fair::TenantStanding {
                weight: t.served.policy.weight,
                free: t
                    .queues
                    .iter()
                    .fold(0usize, |sum, (q, _)| sum.saturating_add(q.free()))
                    .min(t.served.free(concurrency)),
                owed: t.served.owed(concurrency),
            })
            .collect();
        let mut deficits: Vec<i64> = tenants
            .iter()
            .map(|t| self.deficits.get(&t.served.name).copied().unwrap_or(0))
            .collect();
        let room = room
            .min(self.config.batch.max(1))
            .min(usize::try_from(budget).unwrap_or(usize::MAX));
        // Tenants whose run-time budget is spent claim nothing; those
        // capped across the fleet claim no more than the slots they get
        // from their ledger this round.
        let mut held = self.spent(&tenants, &mut standing).await;
        let taken = self
            .take_flight(&tenants, &mut standing, room, &mut held)
            .await;
        // Slots go to tenants a quarter of a batch at a time: one claim
        // call takes several jobs even when many tenants share the round.
        let chunk = (self.config.batch / 4).max(1);
        let grants = fair::tenant_shares(room, &standing, &mut deficits, chunk);
        let mut claims = Vec::new();
        // Queues that took their whole share and may take more:
        // (tenant, queue, how many more, whether that is a cap's).
        let mut hungry = Vec::new();
        let mut short = Vec::new();
        // A tenant held back by its cap across the fleet is looked at
        // again when an attempt here ends (or the wait for work times out).
        let mut capped = held.contains(&true);
        // The first pass's claims go out at once (each its own queue's
        // call, possibly on its own node): a round of many tenants' single
        // jobs costs one round trip, not one per queue.
        let mut asks = Vec::new();
        for (ti, (t, &grant)) in tenants.iter().zip(&grants).enumerate() {
            if grant == 0 {
                continue;
            }
            let queues: Vec<fair::Standing> = t
                .queues
                .iter()
                .map(|(q, _)| fair::Standing {
                    weight: q.policy.weight,
                    free: q.free(),
                })
                .collect();
            let wants = fair::shares(grant, &queues);
            for (qi, (s, &want)) in queues.iter().zip(&wants).enumerate() {
                if want > 0 {
                    asks.push((ti, qi, want, s.free));
                }
            }
        }
        let results = futures_util::future::join_all(
            asks.iter()
                .map(|&(ti, qi, want, _)| self.claim_from(&tenants[ti].queues[qi].0, want)),
        )
        .await;
        let mut failed = None;
        for (&(ti, qi, want, free), result) in asks.iter().zip(results) {
            let t = &mut tenants[ti];
            let got = match result {
                Ok(got) => self.took(&t.queues[qi].0, got, &mut claims),
                Err(e) => {
                    failed.get_or_insert(e);
                    continue;
                }
            };
            t.got += got;
            if got < want {
                short.extend(t.queues[qi].1.clone());
            } else if free > want {
                hungry.push((ti, qi, free - want, free < usize::MAX));
            }
            capped |= free < usize::MAX && got >= free;
        }
        // Jobs claimed are ours whatever else failed; with none, the
        // round failed.
        if let Some(e) = failed
            && claims.is_empty()
        {
            self.give_flight(&tenants, &taken);
            return Err(e);
        }
        let mut extra = vec![0usize; tenants.len()];
        for (ti, qi, free, cap) in hungry {
            let t = &mut tenants[ti];
            let left = room
                .saturating_sub(claims.len())
                .min(free)
                .min(standing[ti].free.saturating_sub(t.got));
            if left == 0 {
                continue;
            }
            let got = match self.claim_from(&t.queues[qi].0, left).await {
                Ok(got) => self.took(&t.queues[qi].0, got, &mut claims),
                // What this round claimed is ours; the next meets the error.
                Err(_) => break,
            };
            t.got += got;
            extra[ti] += got;
            if got < left {
                short.extend(t.queues[qi].1.clone());
            }
            capped |= cap && got >= free;
        }
        self.give_flight(&tenants, &taken);
        // A tenant that ran out of work keeps no credit; one that took
        // more than its share in the second pass pays for it.
        self.deficits.clear();
        for (ti, t) in tenants.iter().enumerate() {
            let deficit = if t.got < grants[ti] {
                0
            } else {
                let extra = i64::try_from(extra[ti]).unwrap_or(i64::MAX / fair::SLOT);
                deficits[ti].saturating_sub(extra.saturating_mul(fair::SLOT))
            };
            self.deficits.insert(t.served.name.clone(), deficit);
            capped |= t.served.policy.max_share < 1.0 && t.got >= standing[ti].free;
        }
        // The next round reads the index again unless this one found work
        // everywhere it looked.
        if !short.is_empty() || claims.len() < room {
            self.due_cache = None;
        }
        // At once, like the claims. A hint: a failure leaves the queue
        // listed, and the next round's claim finds it empty again.
        let settled =
            futures_util::future::join_all(short.iter().map(|d| self.jobs.settle(d))).await;
        for (due, result) in short.iter().zip(settled) {
            if let Err(e) = result {
                tracing::debug!(queue = %due.queue, error = %e, "could not settle a due queue");
            }
        }
        let took_all = claims.len() >= room;
        let open: Vec<QueueName> = tenants
            .iter()
            .zip(&held)
            .filter(|(t, held)| !**held && t.served.free(concurrency) > 0)
            .flat_map(|(t, _)| &t.queues)
            .filter(|(q, _)| q.free() > 0)
            .map(|(q, _)| q.name.clone())
            .collect();
        let held: Vec<QueueName> = tenants
            .iter()
            .zip(&held)
            .filter(|(_, held)| **held)
            .flat_map(|(t, _)| &t.queues)
            .map(|(q, _)| q.name.clone())
            .collect();
        let is_open: std::collections::HashSet<&QueueName> = open.iter().collect();
        let closed = tenants
            .iter()
            .flat_map(|t| &t.queues)
            .map(|(q, _)| &q.name)
            .filter(|q| !is_open.contains(*q))
            .cloned()
            .collect();
        Ok(Round {
            open,
            held,
            closed,
            served: !tenants.is_empty(),
            claims,
            took_all,
            capped,
        })
    }

    /// Which tenants have spent their run-time budget this period; their
    /// standing drops to nothing.
    async fn spent(&self, tenants: &[Tenant], standing: &mut [fair::TenantStanding]) -> Vec<bool> {
        let mut spent = vec![false; tenants.len()];
        let Some(budgets) = &self.budgets else {
            return spent;
        };
        let asks: Vec<(usize, RunTimeBudget)> = tenants
            .iter()
            .enumerate()
            .filter(|&(i, _)| standing[i].free > 0)
            .filter_map(|(i, t)| Some((i, t.served.policy.run_time()?)))
            .collect();
        let answers = futures_util::future::join_all(
            asks.iter()
                .map(|&(i, budget)| budgets.spent(&tenants[i].served.name, budget)),
        )
        .await;
        for (&(i, _), is_spent) in asks.iter().zip(answers) {
            if is_spent {
                spent[i] = true;
                standing[i].free = 0;
                standing[i].owed = 0;
            }
        }
        spent
    }

    /// Takes slots from the ledgers of the tenants with a `max_in_flight`
    /// (all at once), as many as each could claim this round, and lowers
    /// their standing to what they got; returns what each got, and marks
    /// `held` those that got less than they asked for.
    async fn take_flight(
        &self,
        tenants: &[Tenant],
        standing: &mut [fair::TenantStanding],
        room: usize,
        held: &mut [bool],
    ) -> Vec<usize> {
        let mut taken = vec![0; tenants.len()];
        let Some(flight) = &self.flight else {
            return taken;
        };
        let asks: Vec<(usize, u64)> = tenants
            .iter()
            .enumerate()
            .filter_map(|(i, t)| Some((i, t.served.policy.max_in_flight?)))
            .filter(|&(i, _)| standing[i].free > 0)
            .collect();
        let got = futures_util::future::join_all(asks.iter().map(|&(i, max)| {
            flight.take(&tenants[i].served.name, standing[i].free.min(room), max)
        }))
        .await;
        for (&(i, _), got) in asks.iter().zip(got) {
            held[i] |= got < standing[i].free.min(room);
            standing[i].free = got;
            standing[i].owed = standing[i].owed.min(got);
            taken[i] = got;
        }
        taken
    }

    /// Frees the slots `taken` this round that the tenants did not claim
    /// jobs for (idle, for the next round).
    fn give_flight(&self, tenants: &[Tenant], taken: &[usize]) {
        let Some(flight) = &self.flight else {
            return;
        };
        for (t, &n) in tenants.iter().zip(taken) {
            flight.idle(&t.served.name, n.saturating_sub(t.got));
        }
    }

    /// Claims up to `n` jobs of `queue` under the worker's lease.
    async fn claim_from(&self, queue: &Served, n: usize) -> Result<Vec<Claim>, QueueError> {
        self.jobs
            .claim(std::slice::from_ref(&queue.name), n, self.config.lease)
            .await
    }

    /// Counts jobs claimed from `queue` in flight and adds them to
    /// `claims`; how many.
    fn took(&self, queue: &Arc<Served>, got: Vec<Claim>, claims: &mut Vec<Held>) -> usize {
        let count = got.len();
        self.inflight.took(queue, count);
        claims.extend(got.into_iter().map(|c| (c, queue.clone())));
        count
    }
}

//! Recording attempts' ends, in batches: whatever finished while the last
//! batch was being recorded goes in the next (one script call per queue on
//! Redis); a lone ack goes at once, so batching adds no latency. After
//! recording, each attempt is counted (stats, metrics) and reported
//! (events), and the attempts that ran to an outcome are tallied per
//! minute and tenant, for a task beside the recorder to add to the
//! backend's throughput a second's worth at a time, so that no ack waits
//! for it. A slot never waits for its ack: its room was given back when
//! the attempt ended (see [`super::inflight::InFlight`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};

use crate::job::{JobRecord, Lineage, TenantName};
use crate::queue::clock::millis;
use crate::queue::{
    Ack, AttemptEnd, Clock, Completion, JobQueue, Lease, RunTimeBudget, TenantStore, Throughput,
    minute_of,
};
use crate::sandbox::RunReport;

use super::inflight::InFlight;
use super::outage::Outage;
use super::policy::Served;
use super::{JobEvent, WorkerStats};

/// Most acks recorded in one call.
const ACK_BATCH: usize = 128;

/// How long the attempts' tally gathers before it is added to the
/// backend's throughput: at most one call a second per worker, however
/// many batches of acks it records.
const THROUGHPUT_EVERY: Duration = Duration::from_secs(1);

/// One attempt's end, waiting to be recorded.
#[derive(Debug)]
pub(super) struct Attempted {
    pub job: JobRecord,
    pub lease: Lease,
    pub served: Arc<Served>,
    /// What the runner reported; `None` if the job was handed back.
    pub report: Option<RunReport>,
    /// What to record; `None`: nothing (the attempt's task failed).
    pub completion: Option<Completion>,
}

/// The recorder's fixed parts.
#[derive(Debug)]
pub(super) struct Recorder {
    pub jobs: Arc<dyn JobQueue>,
    pub clock: Arc<dyn Clock>,
    pub inflight: Arc<InFlight>,
    pub events: Option<mpsc::UnboundedSender<JobEvent>>,
    /// Tenants' slots in flight across the fleet, freed as their jobs'
    /// attempts are recorded.
    pub flight: Option<Arc<super::flight::Flight>>,
    /// Tenants' run-time budgets, charged with their attempts' run time
    /// as the attempts are recorded.
    pub budgets: Option<Arc<super::budget::Budgets>>,
    /// Where the attempts that ran to an outcome are counted per minute,
    /// by tenant and over the fleet, once recorded.
    pub throughput: Option<Arc<dyn TenantStore>>,
}

/// The attempts that ran to an outcome, recorded and not yet added to the
/// backend's throughput: by the minute they were recorded in, by tenant.
#[derive(Debug, Default)]
struct Tally {
    counts: Mutex<BTreeMap<u64, HashMap<TenantName, Throughput>>>,
    /// Told when `counts` gets its first since they were last taken.
    added: Notify,
    /// Set once the recorder has tallied its last batch.
    closed: AtomicBool,
    /// Told when `closed` is set.
    closing: Notify,
}

impl Tally {
    /// Tallies the ends of one batch's attempts, each with its tenant, in
    /// `minute`.
    fn add<'a>(&self, minute: u64, ends: impl Iterator<Item = (&'a TenantName, AttemptEnd)>) {
        let mut counts = crate::sync::lock(&self.counts);
        let first = counts.is_empty();
        let tenants = counts.entry(minute).or_default();
        for (tenant, end) in ends {
            let one = Throughput::of(end);
            if one.processed == 0 {
                continue;
            }
            match tenants.get_mut(tenant) {
                Some(n) => *n += one,
                None => {
                    tenants.insert(tenant.clone(), one);
                }
            }
        }
        if tenants.is_empty() {
            counts.remove(&minute);
        } else if first {
            self.added.notify_one();
        }
    }

    /// The recorder is done: what is tallied is added at once, and the
    /// task adding it ends.
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.added.notify_one();
        self.closing.notify_one();
    }
}

/// Records attempts until every sender is gone; returns the counts of
/// how they ended (`claimed` is the loop's to fill in).
pub(super) async fn run(
    recorder: Recorder,
    mut attempts: mpsc::UnboundedReceiver<Attempted>,
) -> WorkerStats {
    let mut stats = WorkerStats::default();
    let mut batch = Vec::new();
    let mut items = Vec::new();
    let tally = recorder.throughput.as_ref().map(|store| {
        let tally = Arc::new(Tally::default());
        let task = tokio::spawn(add_throughput(store.clone(), tally.clone()));
        (tally, task)
    });
    while attempts.recv_many(&mut batch, ACK_BATCH).await > 0 {
        // The log travels in the item for the call and back into the
        // report afterwards, rather than being copied.
        for a in &mut batch {
            if let Some(completion) = &a.completion {
                let log = a.report.as_mut().map(|r| std::mem::take(&mut r.log));
                items.push((a.lease.clone(), completion.clone(), log.unwrap_or_default()));
            }
        }
        // The tenants' ledgers and run time are told beside the acks: the
        // attempts have ended, whatever their acks meet.
        let (acks, ()) = tokio::join!(
            ack_all(&*recorder.jobs, &*recorder.clock, &items),
            account(&recorder, &batch)
        );
        let mut acks = acks.into_iter();
        let mut logs = items.drain(..).map(|(_, _, log)| log);
        let mut done_follow_ups: Vec<Lineage> = Vec::new();
        let recorded = batch.len();
        let mut ended = Vec::with_capacity(recorded);
        for mut a in batch.drain(..) {
            let ack = if a.completion.is_some() {
                let log = logs.next();
                if let (Some(report), Some(log)) = (a.report.as_mut(), log) {
                    report.log = log;
                }
                acks.next().unwrap_or(Ack::Stale)
            } else {
                Ack::Stale
            };
            if ack == Ack::Applied(None)
                && let Some(lineage) = &a.job.lineage
            {
                done_follow_ups.push(lineage.clone());
            }
            ended.push((a, ack));
        }
        // A follow-up done frees its place among its tree's live jobs; if
        // this fails, the tree's count only lingers (see TREE_KEEP).
        if !done_follow_ups.is_empty() {
            let jobs = &*recorder.jobs;
            futures_util::future::join_all(done_follow_ups.iter().map(|l| jobs.leave_tree(l)))
                .await;
        }
        if let Some((tally, _)) = &tally {
            let ends = ended.iter().map(|(a, ack)| {
                (
                    &a.served.tenant.name,
                    AttemptEnd::of(*ack, a.report.is_none()),
                )
            });
            tally.add(minute_of(recorder.clock.now()), ends);
        }
        for (a, ack) in ended {
            let end = AttemptEnd::of(ack, a.report.is_none());
            stats.add(end);
            a.served.meter.finished(a.report.as_ref(), end);
            if let Some(events) = &recorder.events {
                let _ = events.send(JobEvent {
                    job: a.job,
                    report: a.report,
                    ack,
                });
            }
        }
        recorder.inflight.recorded(recorded);
    }
    // The last batches' counts are added before the worker's run ends.
    if let Some((tally, task)) = tally {
        tally.close();
        let _ = task.await;
    }
    stats
}

/// Adds what `tally` gathers to `store`'s throughput: once something is
/// tallied, what a second gathers goes in one call per minute it holds
/// (one, unless a minute turned meanwhile), and whatever is left once the
/// tally is closed goes at once. A call that fails is logged and its counts are
/// dropped: they are statistics, and the acks they count are recorded
/// whatever happens here.
async fn add_throughput(store: Arc<dyn TenantStore>, tally: Arc<Tally>) {
    loop {
        tally.added.notified().await;
        let mut closed = tally.closed.load(Ordering::Acquire);
        if !closed {
            let _ = tokio::time::timeout(THROUGHPUT_EVERY, tally.closing.notified()).await;
            closed = tally.closed.load(Ordering::Acquire);
        }
        let minutes = std::mem::take(&mut *crate::sync::lock(&tally.counts));
        for (minute, counts) in minutes {
            let counts: Vec<(TenantName, Throughput)> = counts.into_iter().collect();
            if let Err(e) = store.add_throughput(minute, &counts).await {
                tracing::warn!(minute, tenants = counts.len(), error = %e, "could not add attempts to the throughput counts; they are not counted");
            }
        }
        if closed {
            return;
        }
    }
}

/// Frees the slots of a batch's ended attempts in their tenants' ledgers
/// (idle, for the next claim round) and adds their run time to their
/// tenants' budgets, every tenant at once.
async fn account(recorder: &Recorder, batch: &[Attempted]) {
    if let Some(flight) = &recorder.flight {
        let mut slots: HashMap<&TenantName, usize> = HashMap::new();
        for a in batch {
            let tenant = &a.served.tenant;
            if tenant.policy.max_in_flight.is_some() {
                *slots.entry(&tenant.name).or_default() += 1;
            }
        }
        for (tenant, n) in slots {
            flight.idle(tenant, n);
        }
    }
    let Some(budgets) = &recorder.budgets else {
        return;
    };
    let mut run_time: HashMap<&TenantName, (RunTimeBudget, u64)> = HashMap::new();
    for a in batch {
        let tenant = &a.served.tenant;
        if let (Some(budget), Some(report)) = (tenant.policy.run_time(), &a.report) {
            let ms = u64::try_from(report.elapsed.as_millis()).unwrap_or(u64::MAX);
            let entry = run_time.entry(&tenant.name).or_insert((budget, 0));
            entry.1 = entry.1.saturating_add(ms);
        }
    }
    let charges = run_time
        .into_iter()
        .map(|(tenant, (budget, ms))| budgets.charge(tenant, budget, ms));
    futures_util::future::join_all(charges).await;
}

/// Records a batch, retrying while the backend is unreachable, for as long
/// as the leases last: past them the jobs are someone else's, and the acks
/// would be stale anyway. Sending a batch again is safe (fencing tokens).
async fn ack_all(
    jobs: &dyn JobQueue,
    clock: &dyn Clock,
    items: &[(Lease, Completion, String)],
) -> Vec<Ack> {
    if items.is_empty() {
        return Vec::new();
    }
    let mut outage = Outage::default();
    let last_expiry = items
        .iter()
        .map(|(l, _, _)| l.expires_at)
        .max()
        .unwrap_or(0);
    loop {
        match jobs.complete_many(items).await {
            Ok(acks) if acks.len() == items.len() => {
                outage.recovered();
                return acks;
            }
            Ok(_) => return vec![Ack::Stale; items.len()],
            Err(e) => {
                let pause = outage.failed(&e);
                if clock.now().saturating_add(millis(pause)) >= last_expiry {
                    tracing::warn!(
                        jobs = items.len(),
                        "giving up recording attempts: their leases have run out, so the jobs will run again"
                    );
                    return vec![Ack::Stale; items.len()];
                }
                tokio::time::sleep(pause).await;
            }
        }
    }
}

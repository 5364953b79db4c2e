//! The queue contract as tests: every backend must pass all of these,
//! unchanged. A backend's test file runs them with
//! [`queue_conformance!`](crate::queue_conformance), giving a factory that
//! makes a fresh, empty backend reading time from the given clock:
//!
//! ```no_run
//! use std::sync::Arc;
//! use runtime::queue::{ManualClock, MemoryBackend};
//! use runtime_tests::conformance::Server;
//!
//! async fn make(clock: Arc<ManualClock>) -> Arc<dyn Server> {
//!     Arc::new(MemoryBackend::new(clock))
//! }
//! runtime_tests::queue_conformance!(make);
//! # fn main() {}
//! ```
//!
//! The tests are written inside one `suite!` invocation, which defines each
//! of them and the `queue_conformance!` macro that runs them all: a test
//! added to the suite runs on every backend, with no list to keep.
//!
//! Time is a [`ManualClock`], so due times and lease expiry are exact and
//! no test sleeps. These functions panic on a broken promise: they are
//! tests.

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use runtime::error::{InputError, QueueError};
use runtime::job::{
    DispatchOptions, FailureKind, JobId, JobState, Lineage, MAX_ATTEMPTS, MAX_DELAY,
    MAX_UNIQUE_KEY_BYTES, MaxAttempts, NewJob, Payload, QueueName, RunAt, TreeBudget,
};
use runtime::queue::{
    Ack, Admitting, Claim, Clock as _, Completion, DispatchQuota, DueQueue, JobQueue, ManualClock,
    ModuleStore, Page, Quotas, Rate, THROUGHPUT_MINUTES, Taken, TenantStore, Throughput,
    WorkerInfo, WorkerRegistry, minute_of,
};
use runtime::tenant::{self, TenantError};

/// Defines the tests given and `queue_conformance!`, which generates one
/// `#[tokio::test]` per test, each calling `$factory(clock).await` for a
/// fresh backend. The first token is `$`, passed in so the generated macro
/// can name its own metavariable.
macro_rules! suite {
    ($d:tt; $($(#[$meta:meta])* pub async fn $name:ident($b:ident: Backend, $c:ident: Clock) $body:block)*) => {
        $(
            $(#[$meta])*
            pub async fn $name($b: Backend, $c: Clock) $body
        )*

        /// Runs every conformance test against the backends `$factory`
        /// makes: one `#[tokio::test]` per test, each with a fresh backend
        /// on a [`ManualClock`] at [`START`].
        #[macro_export]
        macro_rules! queue_conformance {
            ($d factory:path) => {
                $(
                    #[::tokio::test]
                    async fn $name() {
                        let clock = ::std::sync::Arc::new(::runtime::queue::ManualClock::new(
                            ::runtime_tests::conformance::START,
                        ));
                        let backend = $d factory(clock.clone()).await;
                        ::runtime_tests::conformance::$name(backend, clock).await;
                    }
                )*
            };
        }
    };
}

/// Where every test's clock starts: an arbitrary fixed time (2026-01-01).
pub const START: u64 = 1_767_225_600_000;

const LEASE: Duration = Duration::from_secs(30);

/// A backend under test: all four seams of one server.
pub trait Server: JobQueue + WorkerRegistry + ModuleStore + TenantStore {}
impl<T: JobQueue + WorkerRegistry + ModuleStore + TenantStore> Server for T {}

type Backend = Arc<dyn Server>;
type Clock = Arc<ManualClock>;

fn q(name: &str) -> QueueName {
    QueueName::new(name).expect("valid queue name")
}

fn job(queue: &str, payload: &str) -> NewJob {
    NewJob::new(q(queue), Payload::new(payload).expect("valid payload"))
}

fn with(queue: &str, payload: &str, options: DispatchOptions) -> NewJob {
    NewJob {
        options,
        ..job(queue, payload)
    }
}

/// A queue by its written name (`tenant/queue`).
fn tenant_name(name: &str) -> runtime::TenantName {
    runtime::TenantName::new(name).expect("valid tenant name")
}

fn written(name: &str) -> QueueName {
    QueueName::parse(name).expect("valid written queue name")
}

/// The due queues' written names, sorted.
async fn due(b: &Backend) -> Vec<String> {
    let mut names: Vec<String> = b
        .due()
        .await
        .expect("due")
        .into_iter()
        .map(|d| d.queue.to_string())
        .collect();
    names.sort();
    names
}

/// `queue`'s entry in the due index (it must be due).
async fn entry(b: &Backend, queue: &QueueName) -> DueQueue {
    b.due()
        .await
        .expect("due")
        .into_iter()
        .find(|d| &d.queue == queue)
        .unwrap_or_else(|| panic!("{queue} is not due"))
}

async fn claim_one(b: &Backend, queue: &str) -> Option<Claim> {
    let mut claims = b.claim(&[q(queue)], 1, LEASE).await.expect("claim");
    claims.pop()
}

/// The throughput of `tenant` (`None`: the fleet's) over `minutes` from
/// `from`.
async fn throughput_of(
    b: &Backend,
    tenant: Option<&str>,
    from: u64,
    minutes: usize,
) -> Vec<Throughput> {
    let tenant = tenant.map(tenant_name);
    b.throughput(tenant.as_ref(), from, minutes)
        .await
        .expect("read throughput")
}

fn counted(processed: u64, failed: u64) -> Throughput {
    Throughput { processed, failed }
}

async fn state_of(b: &Backend, id: &JobId) -> Option<JobState> {
    b.get(id).await.expect("get").map(|r| r.state)
}

fn attempts(n: u32) -> MaxAttempts {
    MaxAttempts::new(n).expect("valid attempts")
}

fn keyed(key: &str) -> DispatchOptions {
    DispatchOptions {
        unique_key: Some(key.to_string()),
        ..Default::default()
    }
}

/// The job a claim holds, claimed from `queue` (which must have one).
async fn running(b: &Backend, queue: &str) -> Claim {
    claim_one(b, queue).await.expect("a job to claim")
}

/// A follow-up of the job `parent` holds, under `budget`.
async fn follow_up(
    b: &Backend,
    parent: &Claim,
    job: NewJob,
    budget: TreeBudget,
) -> Result<JobId, QueueError> {
    b.dispatch_follow_up(job, Lineage::child_of(&parent.job), budget)
        .await
}

const ROOMY: TreeBudget = TreeBudget {
    max_depth: 32,
    max_jobs: 1000,
};

suite! {
    $;

    /// A dispatched job is pending; a claim returns it running, attempt 1,
    /// under a lease of the asked length.
    pub async fn dispatch_then_claim_runs_the_job_under_a_lease(b: Backend, _c: Clock) {
        let id = b
            .dispatch(job("mail", r#"{"to":"a@b"}"#))
            .await
            .expect("dispatch");
        assert_eq!(id.queue().as_str(), "mail");
        assert_eq!(state_of(&b, &id).await, Some(JobState::Pending));
        let claim = claim_one(&b, "mail").await.expect("a job");
        assert_eq!(claim.job.id, id);
        assert_eq!(claim.job.payload.as_str(), r#"{"to":"a@b"}"#);
        assert_eq!(claim.job.state, JobState::Running);
        assert_eq!(claim.job.attempts, 1);
        assert_eq!(claim.job.max_attempts, 4);
        assert_eq!(claim.lease.id, id);
        assert_eq!(claim.lease.expires_at, START + 30_000);
        assert_eq!(state_of(&b, &id).await, Some(JobState::Running));
        assert!(
            claim_one(&b, "mail").await.is_none(),
            "a running job is not claimed twice"
        );
    }

    /// Higher priority runs first; FIFO within one priority.
    pub async fn higher_priority_first_then_fifo(b: Backend, _c: Clock) {
        let prio = |p| DispatchOptions {
            priority: p,
            ..Default::default()
        };
        let low1 = b.dispatch(with("q", "1", prio(0))).await.expect("dispatch");
        let mid1 = b.dispatch(with("q", "2", prio(1))).await.expect("dispatch");
        let high = b.dispatch(with("q", "3", prio(9))).await.expect("dispatch");
        let mid2 = b.dispatch(with("q", "4", prio(1))).await.expect("dispatch");
        let low2 = b
            .dispatch(with("q", "5", prio(-3)))
            .await
            .expect("dispatch");
        let mut order = Vec::new();
        while let Some(c) = claim_one(&b, "q").await {
            order.push(c.job.id);
        }
        assert_eq!(order, vec![high, mid1, mid2, low1, low2]);
    }

    /// A job dispatched with a delay is scheduled and not claimable until due.
    pub async fn delayed_jobs_wait_until_due(b: Backend, c: Clock) {
        let later = DispatchOptions {
            run_at: RunAt::After(Duration::from_secs(10)),
            ..Default::default()
        };
        let id = b.dispatch(with("q", "1", later)).await.expect("dispatch");
        assert_eq!(state_of(&b, &id).await, Some(JobState::Scheduled));
        assert!(claim_one(&b, "q").await.is_none());
        c.advance(Duration::from_millis(9_999));
        assert!(claim_one(&b, "q").await.is_none());
        c.advance(Duration::from_millis(1));
        assert_eq!(claim_one(&b, "q").await.map(|c| c.job.id), Some(id));
    }

    /// `run_at` with an absolute time; a time in the past is pending at once.
    pub async fn run_at_an_absolute_time(b: Backend, c: Clock) {
        let at = |t| DispatchOptions {
            run_at: RunAt::At(t),
            ..Default::default()
        };
        let future = b
            .dispatch(with("q", "1", at(START + 5_000)))
            .await
            .expect("dispatch");
        let past = b
            .dispatch(with("q", "2", at(START - 5_000)))
            .await
            .expect("dispatch");
        assert_eq!(state_of(&b, &future).await, Some(JobState::Scheduled));
        assert_eq!(state_of(&b, &past).await, Some(JobState::Pending));
        assert_eq!(claim_one(&b, "q").await.map(|c| c.job.id), Some(past));
        c.advance(Duration::from_secs(5));
        assert_eq!(claim_one(&b, "q").await.map(|c| c.job.id), Some(future));
    }

    /// A unique key held by a pending, scheduled or running job returns that
    /// job; once the job is done, the key is free again. Keys are per queue.
    pub async fn unique_key_returns_the_live_job(b: Backend, _c: Clock) {
        let keyed = |k: &str| DispatchOptions {
            unique_key: Some(k.to_string()),
            ..Default::default()
        };
        let first = b
            .dispatch(with("q", "1", keyed("k")))
            .await
            .expect("dispatch");
        let again = b
            .dispatch(with("q", "2", keyed("k")))
            .await
            .expect("dispatch");
        assert_eq!(first, again);
        let other_queue = b
            .dispatch(with("r", "3", keyed("k")))
            .await
            .expect("dispatch");
        assert_ne!(first, other_queue);
        let claim = claim_one(&b, "q").await.expect("a job");
        assert_eq!(
            claim.job.payload.as_str(),
            "1",
            "the duplicate was not enqueued"
        );
        let while_running = b
            .dispatch(with("q", "4", keyed("k")))
            .await
            .expect("dispatch");
        assert_eq!(while_running, first);
        let ack = b
            .complete(&claim.lease, Completion::Done, String::new())
            .await
            .expect("complete");
        assert_eq!(ack, Ack::Applied(None));
        let after_done = b
            .dispatch(with("q", "5", keyed("k")))
            .await
            .expect("dispatch");
        assert_ne!(after_done, first);
        assert_eq!(b.counts(&q("q")).await.expect("counts").pending, 1);
    }

    /// Done removes the job and counts it; a second ack is stale.
    pub async fn done_removes_and_counts(b: Backend, _c: Clock) {
        let id = b.dispatch(job("render", "{}")).await.expect("dispatch");
        let claim = claim_one(&b, "render").await.expect("a job");
        let ack = b
            .complete(&claim.lease, Completion::Done, "log".into())
            .await
            .expect("complete");
        assert_eq!(ack, Ack::Applied(None));
        assert_eq!(b.get(&id).await.expect("get"), None);
        let counts = b.counts(&q("render")).await.expect("counts");
        assert_eq!((counts.done, counts.pending, counts.running), (1, 0, 0));
        let again = b
            .complete(&claim.lease, Completion::Done, String::new())
            .await
            .expect("complete");
        assert_eq!(again, Ack::Stale, "a second ack changes nothing");
        assert_eq!(b.counts(&q("render")).await.expect("counts").done, 1);
    }

    /// Retry schedules the job after the delay with the error recorded; the
    /// last attempt's retry fails it.
    pub async fn retry_schedules_then_fails_when_attempts_run_out(b: Backend, c: Clock) {
        let two = DispatchOptions {
            max_attempts: attempts(2),
            ..Default::default()
        };
        let id = b.dispatch(with("q", "1", two)).await.expect("dispatch");
        let first = claim_one(&b, "q").await.expect("a job");
        let retry = |e: &str| Completion::Retry {
            kind: FailureKind::Handler,
            error: e.to_string(),
            delay: Duration::from_secs(3),
        };
        let ack = b
            .complete(&first.lease, retry("boom 1"), "l1".into())
            .await
            .expect("complete");
        assert_eq!(ack, Ack::Applied(Some(JobState::Scheduled)));
        let rec = b.get(&id).await.expect("get").expect("exists");
        assert_eq!(
            (rec.state, rec.run_at),
            (JobState::Scheduled, START + 3_000)
        );
        assert_eq!(rec.error.as_deref(), Some("boom 1"));
        assert_eq!(rec.error_kind, Some(FailureKind::Handler));
        assert!(claim_one(&b, "q").await.is_none());
        c.advance(Duration::from_secs(3));
        let second = claim_one(&b, "q").await.expect("due again");
        assert_eq!(second.job.attempts, 2);
        let ack = b
            .complete(&second.lease, retry("boom 2"), "l2".into())
            .await
            .expect("complete");
        assert_eq!(ack, Ack::Applied(Some(JobState::Failed)));
        let rec = b.get(&id).await.expect("get").expect("kept");
        assert_eq!(rec.state, JobState::Failed);
        assert_eq!(rec.error.as_deref(), Some("boom 2"));
        assert_eq!(rec.log, "l2");
        assert_eq!(rec.attempts, 2);
    }

    /// A retry without delay makes the job pending at once.
    pub async fn retry_with_zero_delay_is_pending_at_once(b: Backend, _c: Clock) {
        let id = b.dispatch(job("q", "1")).await.expect("dispatch");
        let claim = claim_one(&b, "q").await.expect("a job");
        let now = Completion::Retry {
            kind: FailureKind::Handler,
            error: "again".into(),
            delay: Duration::ZERO,
        };
        let ack = b
            .complete(&claim.lease, now, String::new())
            .await
            .expect("complete");
        assert_eq!(ack, Ack::Applied(Some(JobState::Pending)));
        assert_eq!(
            claim_one(&b, "q").await.map(|c| (c.job.id, c.job.attempts)),
            Some((id, 2))
        );
    }

    /// Fail is final whatever attempts remain; error and log are kept.
    pub async fn fail_is_final_and_keeps_error_and_log(b: Backend, _c: Clock) {
        let id = b.dispatch(job("q", "1")).await.expect("dispatch");
        let claim = claim_one(&b, "q").await.expect("a job");
        let fail = Completion::Fail {
            kind: FailureKind::Panic,
            error: "panic: boom".into(),
        };
        let ack = b
            .complete(&claim.lease, fail, "line 1\nline 2\n".into())
            .await
            .expect("complete");
        assert_eq!(ack, Ack::Applied(Some(JobState::Failed)));
        let rec = b.get(&id).await.expect("get").expect("kept");
        assert_eq!(rec.state, JobState::Failed);
        assert_eq!(rec.attempts, 1);
        assert_eq!(rec.error.as_deref(), Some("panic: boom"));
        assert_eq!(rec.error_kind, Some(FailureKind::Panic));
        assert_eq!(rec.log, "line 1\nline 2\n");
        assert!(claim_one(&b, "q").await.is_none());
        assert_eq!(b.counts(&q("q")).await.expect("counts").failed, 1);
    }

    /// Release (a worker stopping) hands the job back; the attempt is not counted.
    pub async fn release_hands_back_without_counting_an_attempt(b: Backend, _c: Clock) {
        let id = b.dispatch(job("q", "1")).await.expect("dispatch");
        let claim = claim_one(&b, "q").await.expect("a job");
        let ack = b
            .complete(&claim.lease, Completion::Release, String::new())
            .await
            .expect("complete");
        assert_eq!(ack, Ack::Applied(Some(JobState::Pending)));
        let rec = b.get(&id).await.expect("get").expect("exists");
        assert_eq!((rec.state, rec.attempts), (JobState::Pending, 0));
        assert!(rec.history.is_empty());
        let again = claim_one(&b, "q").await.expect("claimable again");
        assert_eq!(again.job.attempts, 1);
    }

    /// An expired lease puts the job back (attempt counted, reason recorded);
    /// the old holder's ack is then stale and changes nothing.
    pub async fn expired_lease_requeues_and_fences_the_old_holder(b: Backend, c: Clock) {
        let id = b.dispatch(job("q", "1")).await.expect("dispatch");
        let old = claim_one(&b, "q").await.expect("a job");
        c.advance(LEASE + Duration::from_millis(1));
        let new = claim_one(&b, "q").await.expect("reclaimed after expiry");
        assert_eq!(new.job.id, id);
        assert_eq!(new.job.attempts, 2);
        assert_ne!(new.lease.token, old.lease.token);
        assert_eq!(
            new.job.error.as_deref(),
            Some("worker lost: lease expired during attempt 1")
        );
        assert_eq!(new.job.error_kind, Some(FailureKind::WorkerLost));
        assert_eq!(new.job.history[0].kind, Some(FailureKind::WorkerLost));
        let late = b
            .complete(&old.lease, Completion::Done, String::new())
            .await
            .expect("complete");
        assert_eq!(late, Ack::Stale);
        let late_fail = Completion::Fail {
            kind: FailureKind::Handler,
            error: "late".into(),
        };
        let late = b.complete(&old.lease, late_fail, String::new()).await;
        assert_eq!(late.expect("complete"), Ack::Stale);
        assert_eq!(state_of(&b, &id).await, Some(JobState::Running));
        let ok = b
            .complete(&new.lease, Completion::Done, String::new())
            .await
            .expect("complete");
        assert_eq!(ok, Ack::Applied(None));
    }

    /// A lease expiring on the last attempt fails the job as `worker lost`.
    pub async fn expired_lease_on_last_attempt_fails_as_worker_lost(b: Backend, c: Clock) {
        let once = DispatchOptions {
            max_attempts: attempts(1),
            ..Default::default()
        };
        let id = b.dispatch(with("q", "1", once)).await.expect("dispatch");
        let _claim = claim_one(&b, "q").await.expect("a job");
        c.advance(LEASE + Duration::from_millis(1));
        assert!(claim_one(&b, "q").await.is_none());
        let rec = b.get(&id).await.expect("get").expect("kept");
        assert_eq!(rec.state, JobState::Failed);
        assert_eq!(
            rec.error.as_deref(),
            Some("worker lost: lease expired during attempt 1")
        );
        assert_eq!(rec.error_kind, Some(FailureKind::WorkerLost));
        assert_eq!(
            rec.history.iter().map(|a| a.kind).collect::<Vec<_>>(),
            [Some(FailureKind::WorkerLost)]
        );
    }

    /// Renewing extends the current lease; a stale lease cannot be renewed.
    pub async fn renew_extends_only_the_current_lease(b: Backend, c: Clock) {
        b.dispatch(job("q", "1")).await.expect("dispatch");
        let claim = claim_one(&b, "q").await.expect("a job");
        c.advance(Duration::from_secs(20));
        let renewed = b
            .renew(&claim.lease, LEASE)
            .await
            .expect("renew")
            .expect("still current");
        assert_eq!(renewed.expires_at, START + 20_000 + 30_000);
        c.advance(Duration::from_secs(20));
        assert!(
            claim_one(&b, "q").await.is_none(),
            "renewed lease has not expired"
        );
        c.advance(Duration::from_secs(11));
        let taken = claim_one(&b, "q").await.expect("expired now");
        assert!(b.renew(&renewed, LEASE).await.expect("renew").is_none());
        assert!(b.renew(&taken.lease, LEASE).await.expect("renew").is_some());
    }

    /// Listing by state pages in claim order; counts match.
    pub async fn list_by_state_with_paging_and_counts(b: Backend, _c: Clock) {
        let mut ids = Vec::new();
        for i in 0..5 {
            ids.push(
                b.dispatch(job("q", &i.to_string()))
                    .await
                    .expect("dispatch"),
            );
        }
        let later = DispatchOptions {
            run_at: RunAt::After(Duration::from_secs(60)),
            ..Default::default()
        };
        b.dispatch(with("q", "9", later)).await.expect("dispatch");
        let running = claim_one(&b, "q").await.expect("a job");
        let page = |offset, limit| Page { offset, limit };
        let listed = b
            .list(&q("q"), JobState::Pending, page(1, 2))
            .await
            .expect("list");
        let listed: Vec<_> = listed.into_iter().map(|r| r.id).collect();
        assert_eq!(listed, ids[2..4].to_vec());
        let all = b
            .list(&q("q"), JobState::Pending, page(0, 100))
            .await
            .expect("list");
        assert_eq!(all.len(), 4);
        assert!(all.iter().all(|r| r.state == JobState::Pending));
        let run = b
            .list(&q("q"), JobState::Running, page(0, 10))
            .await
            .expect("list");
        assert_eq!(
            run.into_iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![running.job.id]
        );
        let counts = b.counts(&q("q")).await.expect("counts");
        assert_eq!(
            (
                counts.pending,
                counts.scheduled,
                counts.running,
                counts.failed,
                counts.done
            ),
            (4, 1, 1, 0, 0)
        );
        assert_eq!(
            b.counts(&q("nothing")).await.expect("counts"),
            Default::default()
        );
        assert_eq!(b.queues().await.expect("queues"), vec![q("q")]);
        assert!(
            b.list(&q("nothing"), JobState::Failed, page(0, 10))
                .await
                .expect("list")
                .is_empty()
        );
    }

    /// A failed job can be retried with a fresh set of attempts; other states
    /// cannot.
    pub async fn retry_a_failed_job_with_fresh_attempts(b: Backend, _c: Clock) {
        let id = b.dispatch(job("q", "1")).await.expect("dispatch");
        assert!(b.retry(&id).await.is_err(), "a pending job is not retried");
        let claim = claim_one(&b, "q").await.expect("a job");
        let fail = Completion::Fail {
            kind: FailureKind::Handler,
            error: "no".into(),
        };
        b.complete(&claim.lease, fail, String::new())
            .await
            .expect("complete");
        b.retry(&id).await.expect("retry a failed job");
        let rec = b.get(&id).await.expect("get").expect("exists");
        assert_eq!((rec.state, rec.attempts), (JobState::Pending, 0));
        let again = claim_one(&b, "q").await.expect("claimable");
        assert_eq!(again.job.attempts, 1);
        assert_eq!(
            again.job.history.len(),
            2,
            "history of the earlier run is kept"
        );
        let missing = JobId::new(q("q"), 999);
        assert!(b.retry(&missing).await.is_err());
    }

    /// Delete removes any job but a running one; purge empties a queue but for
    /// its running jobs.
    pub async fn delete_and_purge(b: Backend, _c: Clock) {
        let a = b.dispatch(job("q", "1")).await.expect("dispatch");
        let run = b.dispatch(job("q", "2")).await.expect("dispatch");
        let claim = claim_one(&b, "q").await.expect("a job");
        assert_eq!(claim.job.id, a);
        assert!(b.delete(&a).await.is_err(), "a running job is not deleted");
        assert!(b.delete(&run).await.expect("delete"));
        assert!(!b.delete(&run).await.expect("delete"), "already gone");
        for i in 0..3 {
            b.dispatch(job("q", &i.to_string()))
                .await
                .expect("dispatch");
        }
        assert_eq!(b.purge(&q("q")).await.expect("purge"), 3);
        let counts = b.counts(&q("q")).await.expect("counts");
        assert_eq!((counts.pending, counts.running), (0, 1));
        assert_eq!(b.purge(&q("nothing")).await.expect("purge"), 0);
    }

    /// A claim takes at most `max` jobs, from earlier queues first.
    pub async fn claim_respects_max_and_queue_order(b: Backend, _c: Clock) {
        for i in 0..3 {
            b.dispatch(job("a", &i.to_string()))
                .await
                .expect("dispatch");
            b.dispatch(job("b", &i.to_string()))
                .await
                .expect("dispatch");
        }
        let claims = b.claim(&[q("b"), q("a")], 4, LEASE).await.expect("claim");
        let queues: Vec<_> = claims.iter().map(|c| c.job.id.queue().as_str()).collect();
        assert_eq!(queues, vec!["b", "b", "b", "a"]);
        assert!(
            b.claim(&[q("a")], 0, LEASE)
                .await
                .expect("claim")
                .is_empty()
        );
    }

    /// dispatch_many enqueues in order and returns ids in order.
    pub async fn dispatch_many_keeps_order(b: Backend, _c: Clock) {
        let jobs = (0..10).map(|i| job("bulk", &i.to_string())).collect();
        let ids = b.dispatch_many(jobs).await.expect("dispatch_many");
        assert_eq!(ids.len(), 10);
        let claims = b.claim(&[q("bulk")], 10, LEASE).await.expect("claim");
        let payloads: Vec<_> = claims
            .iter()
            .map(|c| c.job.payload.as_str().to_string())
            .collect();
        assert_eq!(payloads, (0..10).map(|i| i.to_string()).collect::<Vec<_>>());
        assert_eq!(
            claims.into_iter().map(|c| c.job.id).collect::<Vec<_>>(),
            ids
        );
    }

    /// An invalid dispatch (a delay past the limit) is rejected, alone or in
    /// a batch, and nothing is enqueued. Zero attempts cannot even be
    /// written: `MaxAttempts` refuses it.
    pub async fn invalid_dispatch_is_rejected(b: Backend, _c: Clock) {
        assert_eq!(MaxAttempts::new(0), Err(InputError::ZeroAttempts));
        let too_late = DispatchOptions {
            run_at: RunAt::After(MAX_DELAY + Duration::from_millis(1)),
            ..Default::default()
        };
        assert!(b.dispatch(with("q", "1", too_late.clone())).await.is_err());
        assert!(
            b.dispatch_many(vec![job("q", "1"), with("q", "2", too_late)])
                .await
                .is_err()
        );
        assert_eq!(b.counts(&q("q")).await.expect("counts").pending, 0);
    }

    /// An idle waiter wakes when a job is dispatched, long before its timeout.
    /// The dispatch comes after the waiter's first poll, which registers it
    /// for wake-ups (and, in memory, finds nothing and parks it): the event
    /// itself, not a pause that hopes the waiter got there.
    pub async fn wait_for_work_wakes_on_dispatch(b: Backend, _c: Clock) {
        let queues = [q("idle")];
        let started = std::time::Instant::now();
        let waiter = b.wait_for_work(&queues, Duration::from_secs(60));
        tokio::pin!(waiter);
        let first = std::future::poll_fn(|cx| Poll::Ready(waiter.as_mut().poll(cx))).await;
        assert!(first.is_pending(), "an empty queue has no work: {first:?}");
        b.dispatch(job("idle", "1")).await.expect("dispatch");
        tokio::time::timeout(Duration::from_secs(20), waiter)
            .await
            .expect("woken well before the 60 s timeout")
            .expect("wait");
        assert!(started.elapsed() < Duration::from_secs(20));
    }

    /// With a delayed job already due, waiting returns at once.
    pub async fn wait_for_work_returns_when_a_delayed_job_is_due(b: Backend, c: Clock) {
        let later = DispatchOptions {
            run_at: RunAt::After(Duration::from_secs(5)),
            ..Default::default()
        };
        b.dispatch(with("q", "1", later)).await.expect("dispatch");
        c.advance(Duration::from_secs(5));
        tokio::time::timeout(
            Duration::from_secs(20),
            b.wait_for_work(&[q("q")], Duration::from_secs(60)),
        )
        .await
        .expect("returns at once for a due job")
        .expect("wait");
        assert!(claim_one(&b, "q").await.is_some());
    }

    /// Each attempt is recorded with its start, end and outcome.
    pub async fn history_records_each_attempt(b: Backend, c: Clock) {
        let id = b.dispatch(job("q", "1")).await.expect("dispatch");
        let first = claim_one(&b, "q").await.expect("a job");
        let stored = b.get(&id).await.expect("get").expect("exists");
        assert_eq!(
            first.job, stored,
            "a claim returns the job as it now stands"
        );
        c.advance(Duration::from_millis(250));
        let retry = Completion::Retry {
            kind: FailureKind::Timeout,
            error: "timeout after 100ms".into(),
            delay: Duration::ZERO,
        };
        b.complete(&first.lease, retry, String::new())
            .await
            .expect("complete");
        c.advance(Duration::from_millis(750));
        let second = claim_one(&b, "q").await.expect("a job");
        let rec = b.get(&id).await.expect("get").expect("exists");
        assert_eq!(rec.history.len(), 2);
        let (a, b2) = (&rec.history[0], &rec.history[1]);
        assert_eq!(
            (a.number, a.started_at, a.ended_at),
            (1, START, Some(START + 250))
        );
        assert_eq!(a.outcome.as_deref(), Some("timeout after 100ms"));
        assert_eq!(a.kind, Some(FailureKind::Timeout));
        assert_eq!(
            (b2.number, b2.started_at, b2.ended_at, b2.kind),
            (2, START + 1_000, None, None)
        );
        assert_eq!(second.job, rec);
    }

    /// A batch of acks across queues: each applied or refused on its own,
    /// results in order.
    pub async fn complete_many_applies_each_in_order(b: Backend, _c: Clock) {
        let a = b.dispatch(job("qa", "1")).await.expect("dispatch");
        let bb = b.dispatch(job("qb", "2")).await.expect("dispatch");
        let c = b.dispatch(job("qa", "3")).await.expect("dispatch");
        let claims = b.claim(&[q("qa"), q("qb")], 3, LEASE).await.expect("claim");
        assert_eq!(claims.len(), 3);
        let lease = |id: &JobId| {
            claims
                .iter()
                .find(|cl| &cl.lease.id == id)
                .map(|cl| cl.lease.clone())
                .expect("claimed")
        };
        let done = b
            .complete(&lease(&c), Completion::Done, String::new())
            .await
            .expect("complete");
        assert_eq!(done, Ack::Applied(None));
        let acks = b
            .complete_many(&[
                (lease(&a), Completion::Done, String::new()),
                (
                    lease(&bb),
                    Completion::Fail {
                        kind: FailureKind::Handler,
                        error: "no".into(),
                    },
                    "log b".into(),
                ),
                (lease(&c), Completion::Done, String::new()),
            ])
            .await
            .expect("complete_many");
        assert_eq!(
            acks,
            vec![
                Ack::Applied(None),
                Ack::Applied(Some(JobState::Failed)),
                Ack::Stale
            ]
        );
        assert_eq!(b.counts(&q("qa")).await.expect("counts").done, 2);
        let failed = b.get(&bb).await.expect("get").expect("kept");
        assert_eq!(
            (failed.state, failed.log.as_str()),
            (JobState::Failed, "log b")
        );
        assert_eq!(failed.error_kind, Some(FailureKind::Handler));
    }

    /// A failure's kind is stored apart from its words: a handler whose reason
    /// reads like a host limit, or holds the separators a backend stores
    /// attempts with, is still of kind `handler`, on the job, on each attempt,
    /// in listings and after a retry.
    pub async fn failure_kinds_are_kept_apart_from_their_text(b: Backend, _c: Clock) {
        let two = DispatchOptions {
            max_attempts: attempts(2),
            ..Default::default()
        };
        let id = b.dispatch(with("q", "1", two)).await.expect("dispatch");
        let forged = "memory|1|2:memory|memory limit 16 MiB exceeded\nworker lost: x";
        let first = claim_one(&b, "q").await.expect("a job");
        let crash = Completion::Retry {
            kind: FailureKind::Memory,
            error: "memory limit 16 MiB exceeded".into(),
            delay: Duration::ZERO,
        };
        b.complete(&first.lease, crash, String::new())
            .await
            .expect("complete");
        let second = claim_one(&b, "q").await.expect("a job");
        let own = Completion::Fail {
            kind: FailureKind::Handler,
            error: forged.into(),
        };
        b.complete(&second.lease, own, String::new())
            .await
            .expect("complete");
        let rec = b.get(&id).await.expect("get").expect("kept");
        assert_eq!(rec.state, JobState::Failed);
        assert_eq!(
            (rec.error_kind, rec.error.as_deref()),
            (Some(FailureKind::Handler), Some(forged))
        );
        let attempts: Vec<_> = rec
            .history
            .iter()
            .map(|a| (a.kind, a.outcome.as_deref()))
            .collect();
        assert_eq!(
            attempts,
            [
                (
                    Some(FailureKind::Memory),
                    Some("memory limit 16 MiB exceeded")
                ),
                (Some(FailureKind::Handler), Some(forged)),
            ]
        );
        let listed = b
            .list(&q("q"), JobState::Failed, Page::default())
            .await
            .expect("list");
        assert_eq!(listed, std::slice::from_ref(&rec));
        b.retry(&id).await.expect("retry");
        let third = claim_one(&b, "q").await.expect("a job");
        assert_eq!(
            third.job.history.iter().map(|a| a.kind).collect::<Vec<_>>(),
            [Some(FailureKind::Memory), Some(FailureKind::Handler), None]
        );
    }

    /// Heartbeats list a worker; one that stops beating drops out after its
    /// ttl, and unregistering removes one at once.
    pub async fn workers_registry_drops_silent_workers(b: Backend, c: Clock) {
        let worker = |id: &str, in_flight: u64| WorkerInfo {
            id: id.to_string(),
            host: "host-a".into(),
            pid: 42,
            queues: vec!["q".into(), "r".into()],
            concurrency: 16,
            in_flight,
            started_at: START,
            beat_at: START,
        };
        let ttl = Duration::from_secs(15);
        assert!(b.workers().await.expect("workers").is_empty());
        b.heartbeat(&worker("a", 1), ttl).await.expect("beat a");
        b.heartbeat(&worker("b", 2), ttl).await.expect("beat b");
        let mut seen = b.workers().await.expect("workers");
        seen.sort_by(|x, y| x.id.cmp(&y.id));
        assert_eq!(seen, vec![worker("a", 1), worker("b", 2)]);
        // `a` keeps beating (with a new in-flight count), `b` falls silent.
        c.advance(Duration::from_secs(10));
        b.heartbeat(&worker("a", 7), ttl).await.expect("beat a");
        c.advance(Duration::from_secs(10));
        let seen = b.workers().await.expect("workers");
        assert_eq!(seen, vec![worker("a", 7)], "b expired");
        b.unregister("a").await.expect("unregister");
        assert!(b.workers().await.expect("workers").is_empty());
    }

    /// Two tenants' queues of the same own name, and the default tenant's,
    /// are three queues: jobs, unique keys, claims, counts, listings,
    /// purges and published modules of one never touch another's.
    pub async fn tenants_queues_of_one_name_are_apart(b: Backend, _c: Clock) {
        let acme = QueueName::parse("acme/mail").expect("valid");
        let beta = QueueName::parse("beta/mail").expect("valid");
        let bare = q("mail");
        let keyed_in = |queue: &QueueName, payload: &str| NewJob {
            options: keyed("invoice-7"),
            ..NewJob::new(queue.clone(), Payload::new(payload).expect("payload"))
        };
        let a = b.dispatch(keyed_in(&acme, "1")).await.expect("dispatch");
        let other = b.dispatch(keyed_in(&beta, "2")).await.expect("dispatch");
        let plain = b.dispatch(keyed_in(&bare, "3")).await.expect("dispatch");
        assert_eq!(a.to_string(), format!("acme/mail:{}", a.seq()));
        assert_eq!(a.to_string().parse::<JobId>().expect("id"), a);
        // One unique key, three live jobs: each tenant holds its own.
        assert!(a != other && a != plain && other != plain);
        let claims = b.claim(std::slice::from_ref(&acme), 10, LEASE).await.expect("claim");
        let ids: Vec<JobId> = claims.into_iter().map(|c| c.job.id).collect();
        assert_eq!(ids, vec![a.clone()]);
        assert_eq!(b.counts(&beta).await.expect("counts").pending, 1);
        assert_eq!(b.counts(&bare).await.expect("counts").pending, 1);
        let listed = b
            .list(&beta, JobState::Pending, Page::default())
            .await
            .expect("list");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, other);
        assert_eq!(b.purge(&beta).await.expect("purge"), 1);
        assert_eq!(state_of(&b, &plain).await, Some(JobState::Pending));
        assert_eq!(state_of(&b, &a).await, Some(JobState::Running));
        let queues = b.queues().await.expect("queues");
        for queue in [&acme, &beta, &bare] {
            assert!(queues.contains(queue), "{queue} in {queues:?}");
        }
        let version = b
            .publish_module(&acme, b"\0asm acme")
            .await
            .expect("publish");
        assert_eq!(
            b.module_versions(&[acme.clone(), beta.clone(), bare.clone()])
                .await
                .expect("versions"),
            vec![Some(version), None, None]
        );
    }

    /// The due index lists the queues, of every tenant, that have work to
    /// claim now; a queue a claim found empty and settled leaves it, and
    /// comes back with a new job, a retry coming due or a lease expiring.
    /// A settle that has not seen the latest dispatch drops nothing.
    pub async fn due_queues_are_found_and_settled(b: Backend, c: Clock) {
        let (acme, beta) = (written("acme/q"), written("beta/q"));
        b.dispatch(NewJob::new(acme.clone(), Payload::new("1").expect("payload")))
            .await
            .expect("dispatch");
        b.dispatch(NewJob::new(beta.clone(), Payload::new("1").expect("payload")))
            .await
            .expect("dispatch");
        let later = DispatchOptions {
            run_at: RunAt::After(Duration::from_secs(5)),
            ..Default::default()
        };
        b.dispatch(with("later", "1", later)).await.expect("dispatch");
        assert_eq!(due(&b).await, ["acme/q", "beta/q"]);
        // Acme's one job runs: found empty, acme leaves the index until
        // its job's retry comes due.
        let listed = entry(&b, &acme).await;
        let claim = b.claim(std::slice::from_ref(&acme), 5, LEASE).await.expect("claim");
        assert_eq!(claim.len(), 1);
        b.settle(&listed).await.expect("settle");
        assert_eq!(due(&b).await, ["beta/q"]);
        let retry = Completion::Retry {
            kind: FailureKind::Handler,
            error: "again".into(),
            delay: Duration::from_secs(3),
        };
        b.complete(&claim[0].lease, retry, String::new())
            .await
            .expect("complete");
        assert_eq!(due(&b).await, ["beta/q"]);
        c.advance(Duration::from_secs(3));
        assert_eq!(due(&b).await, ["acme/q", "beta/q"]);
        c.advance(Duration::from_secs(2));
        assert_eq!(due(&b).await, ["acme/q", "beta/q", "later"]);
        // Beta's job is claimed and its worker dies: beta is due again
        // when the lease expires.
        let listed = entry(&b, &beta).await;
        assert_eq!(b.claim(std::slice::from_ref(&beta), 5, LEASE).await.expect("claim").len(), 1);
        b.settle(&listed).await.expect("settle");
        assert!(!due(&b).await.contains(&"beta/q".to_string()));
        c.advance(LEASE);
        assert!(due(&b).await.contains(&"beta/q".to_string()));
        // A settle from before a dispatch leaves the queue listed.
        let listed = entry(&b, &beta).await;
        let claimed = b.claim(std::slice::from_ref(&beta), 5, LEASE).await.expect("claim");
        assert_eq!(claimed.len(), 1);
        b.complete(&claimed[0].lease, Completion::Done, String::new())
            .await
            .expect("complete");
        b.dispatch(NewJob::new(beta.clone(), Payload::new("2").expect("payload")))
            .await
            .expect("dispatch");
        b.settle(&listed).await.expect("settle");
        assert!(due(&b).await.contains(&"beta/q".to_string()));
        // Settled when truly empty, it leaves; a dispatch brings it back.
        let listed = entry(&b, &beta).await;
        let claimed = b.claim(std::slice::from_ref(&beta), 5, LEASE).await.expect("claim");
        b.complete(&claimed[0].lease, Completion::Done, String::new())
            .await
            .expect("complete");
        b.settle(&listed).await.expect("settle");
        assert!(!due(&b).await.contains(&"beta/q".to_string()));
        b.dispatch(NewJob::new(beta.clone(), Payload::new("3").expect("payload")))
            .await
            .expect("dispatch");
        assert!(due(&b).await.contains(&"beta/q".to_string()));
    }

    /// A tenant is registered once, with a token that only its record's
    /// hash accepts; a new token replaces the old at once; removing the
    /// record ends both.
    pub async fn tenants_are_registered_with_tokens_kept_as_hashes(b: Backend, c: Clock) {
        let store: &dyn TenantStore = &*b;
        let (acme, beta) = (tenant_name("acme"), tenant_name("beta"));
        let (record, token) = tenant::create(store, &acme, c.now()).await.expect("create");
        assert!(token.expose().starts_with("rt_acme_"));
        let who = |text: String| async move {
            tenant::authenticate(store, &text).await.expect("authenticate")
        };
        assert_eq!(who(token.expose().into()).await, Some(acme.clone()));
        assert!(matches!(
            tenant::create(store, &acme, c.now()).await,
            Err(TenantError::Exists(_))
        ));
        assert_eq!(store.tenant_record(&acme).await.expect("record"), Some(record.clone()));
        let (_, beta_token) = tenant::create(store, &beta, c.now()).await.expect("create");
        // Acme's secret under beta's name, and texts of no token's form.
        let secret = token.expose().rsplit_once('_').expect("a token's form").1;
        for wrong in [format!("rt_beta_{secret}"), String::new(), "Bearer x".into()] {
            assert_eq!(who(wrong).await, None);
        }
        c.advance(Duration::from_secs(1));
        let (rotated, new) = tenant::rotate_token(store, &acme, c.now()).await.expect("rotate");
        assert_eq!(rotated.created_at, record.created_at);
        assert_eq!(rotated.token_made_at, record.created_at + 1000);
        assert_eq!(who(token.expose().into()).await, None, "the old token still works");
        assert_eq!(who(new.expose().into()).await, Some(acme.clone()));
        assert_eq!(who(beta_token.expose().into()).await, Some(beta.clone()));
        // A rotation that read the record before another rotation replaced
        // it writes nothing.
        let late = tenant::create(&runtime::queue::MemoryBackend::default(), &acme, c.now()).await.expect("a record").0;
        assert!(!store.write_tenant(&late, Some(&record)).await.expect("write"));
        assert!(!store.write_tenant(&late, None).await.expect("write"));
        assert_eq!(who(new.expose().into()).await, Some(acme.clone()));
        let names: Vec<String> = store
            .tenant_records()
            .await
            .expect("records")
            .iter()
            .map(|r| r.name.to_string())
            .collect();
        assert_eq!(names, ["acme", "beta"]);
        let nobody = tenant_name("nobody");
        assert!(matches!(
            tenant::rotate_token(store, &nobody, c.now()).await,
            Err(TenantError::NotFound(_))
        ));
        assert!(store.remove_tenant(&acme).await.expect("remove"));
        assert!(!store.remove_tenant(&acme).await.expect("remove again"));
        assert_eq!(who(new.expose().into()).await, None);
        assert!(matches!(
            tenant::rotate_token(store, &acme, c.now()).await,
            Err(TenantError::NotFound(_))
        ));
        assert_eq!(who(beta_token.expose().into()).await, Some(beta));
    }

    /// Removing a queue waits for its running jobs, then takes every job,
    /// count and unique key (all but its last job number); the queue leaves
    /// the listings, and a dispatch there starts it again. Other queues
    /// keep everything.
    pub async fn a_removed_queue_leaves_nothing_and_starts_anew(b: Backend, _c: Clock) {
        let (doomed, kept) = (written("acme/q"), written("beta/q"));
        let unique = DispatchOptions {
            unique_key: Some("k".into()),
            ..Default::default()
        };
        let later = DispatchOptions {
            run_at: RunAt::After(Duration::from_secs(60)),
            ..Default::default()
        };
        let mut ids = Vec::new();
        for options in [DispatchOptions::default(), unique.clone(), later] {
            let mut job = NewJob::new(doomed.clone(), Payload::new("1").expect("payload"));
            job.options = options;
            ids.push(b.dispatch(job).await.expect("dispatch"));
        }
        b.dispatch(NewJob::new(kept.clone(), Payload::new("1").expect("payload")))
            .await
            .expect("dispatch");
        let claimed = b.claim(std::slice::from_ref(&doomed), 1, LEASE).await.expect("claim");
        assert_eq!(claimed.len(), 1);
        assert!(matches!(
            b.remove_queue(&doomed).await,
            Err(QueueError::QueueBusy { .. })
        ));
        let counts = b.counts(&doomed).await.expect("counts");
        assert_eq!((counts.pending, counts.scheduled, counts.running), (1, 1, 1));
        b.complete(&claimed[0].lease, Completion::Done, String::new())
            .await
            .expect("complete");
        assert_eq!(b.remove_queue(&doomed).await.expect("remove"), 2);
        assert_eq!(b.counts(&doomed).await.expect("counts"), Default::default());
        for id in &ids {
            assert_eq!(b.get(id).await.expect("get"), None, "{id}");
        }
        assert_eq!(b.queues().await.expect("queues"), std::slice::from_ref(&kept));
        assert_eq!(due(&b).await, ["beta/q"]);
        assert_eq!(b.counts(&kept).await.expect("counts").pending, 1);
        assert_eq!(b.remove_queue(&doomed).await.expect("remove again"), 0);
        // Anew: its unique key free, numbered on from before, so no id is
        // given twice.
        let mut again = NewJob::new(doomed.clone(), Payload::new("2").expect("payload"));
        again.options = unique;
        let id = b.dispatch(again).await.expect("dispatch");
        assert_eq!(id.to_string(), "acme/q:4");
        assert_eq!(b.queues().await.expect("queues"), [doomed, kept]);
    }

    /// A tenant's dispatch bucket holds its burst, refills at its rate,
    /// takes nothing it cannot take whole, and is the tenant's alone.
    pub async fn dispatch_buckets_refill_at_their_rate_per_tenant(b: Backend, c: Clock) {
        let rate = Rate {
            per_second: 2.0,
            burst: 3,
        };
        let (acme, beta) = (tenant_name("acme"), tenant_name("beta"));
        let take = |tenant: &runtime::TenantName, jobs: u64| {
            let (b, tenant) = (b.clone(), tenant.clone());
            async move { b.take_dispatch(&tenant, jobs, rate).await.expect("take") }
        };
        let half = Taken::No {
            wait: Duration::from_millis(500),
        };
        let tokens = |tenant: &runtime::TenantName| {
            let (b, tenant) = (b.clone(), tenant.clone());
            async move { b.dispatch_tokens(&tenant, rate).await.expect("tokens") }
        };
        assert_eq!(tokens(&acme).await, 3.0, "a new bucket is full");
        assert_eq!(take(&acme, 4).await, Taken::No { wait: Duration::from_millis(500) });
        assert_eq!(take(&acme, 2).await, Taken::Yes);
        assert_eq!(tokens(&acme).await, 1.0);
        assert_eq!(tokens(&acme).await, 1.0, "reading takes nothing");
        assert_eq!(take(&acme, 2).await, half, "took a part of what it asked");
        assert_eq!(take(&acme, 1).await, Taken::Yes);
        assert_eq!(take(&acme, 1).await, half);
        assert_eq!(take(&beta, 3).await, Taken::Yes, "beta draws on acme's bucket");
        c.advance(Duration::from_millis(250));
        assert_eq!(tokens(&acme).await, 0.5, "refilled at its rate");
        c.advance(Duration::from_millis(250));
        assert_eq!(take(&acme, 1).await, Taken::Yes);
        assert_eq!(take(&acme, 1).await, half);
        c.advance(Duration::from_secs(60));
        assert_eq!(take(&acme, 3).await, Taken::Yes, "filled to its burst");
        assert_eq!(take(&acme, 1).await, half);
        // Removing the tenant forgets its bucket.
        b.remove_tenant(&acme).await.expect("remove");
        assert_eq!(take(&acme, 3).await, Taken::Yes);
    }

    /// Dispatches in front of a backend with quotas: a tenant over its
    /// rate or backlog is refused with nothing dispatched, by any of the
    /// three ways in, and nothing of another tenant changes.
    pub async fn quotas_refuse_a_tenants_dispatch_whole_and_leave_others_alone(b: Backend, c: Clock) {
        let quota = |rate: Option<Rate>, max_backlog: Option<u64>| DispatchQuota { rate, max_backlog };
        let quotas = Quotas {
            defaults: DispatchQuota::default(),
            tenants: [
                (tenant_name("acme"), quota(Some(Rate { per_second: 1.0, burst: 2 }), None)),
                (tenant_name("beta"), quota(None, Some(3))),
                (tenant_name("gamma"), quota(Some(Rate { per_second: 1.0, burst: 1 }), Some(2))),
                (tenant_name("delta"), quota(None, Some(10))),
            ]
            .into(),
        };
        let jobs: Arc<dyn JobQueue> = b.clone();
        let store: Arc<dyn TenantStore> = b.clone();
        let admitting = Admitting::new(jobs, store, quotas);
        let new = |queue: &str| NewJob::new(written(queue), Payload::new("1").expect("payload"));
        admitting.dispatch(new("acme/q")).await.expect("within the burst");
        let refused = admitting
            .dispatch_many(vec![new("acme/q"), new("acme/q")])
            .await
            .expect_err("over the rate");
        assert_eq!(
            refused.to_string(),
            "dispatch refused: tenant acme is over its dispatch rate (1 jobs/s, bursts of 2): try again in 1s; nothing was dispatched"
        );
        let over = admitting
            .dispatch_many(vec![new("acme/q"), new("acme/q"), new("acme/q")])
            .await
            .expect_err("more than the burst");
        assert!(over.to_string().contains("3 jobs at once is more than tenant acme's dispatch_burst (2)"), "{over}");
        admitting.dispatch(new("acme/q")).await.expect("the token left");
        let root = b.claim(&[written("acme/q")], 1, LEASE).await.expect("claim");
        let lineage = Lineage::child_of(&root[0].job);
        let follow = admitting
            .dispatch_follow_up(new("acme/q"), lineage, ROOMY)
            .await
            .expect_err("a handler's follow-up, over the rate");
        assert!(matches!(follow, QueueError::RateLimited { .. }), "{follow}");
        assert_eq!(b.counts(&written("acme/q")).await.expect("counts").pending, 1);
        c.advance(Duration::from_secs(1));
        admitting.dispatch(new("acme/q")).await.expect("a token again");
        // Beta: three waiting at most, scheduled ones counted.
        let later = DispatchOptions {
            run_at: RunAt::After(Duration::from_secs(60)),
            ..Default::default()
        };
        let mut delayed = new("beta/r");
        delayed.options = later;
        admitting.dispatch(delayed).await.expect("room");
        admitting
            .dispatch_many(vec![new("beta/q"), new("beta/q")])
            .await
            .expect("room");
        let full = admitting.dispatch(new("beta/q")).await.expect_err("full");
        assert_eq!(
            full.to_string(),
            "dispatch refused: tenant beta has 3 jobs waiting and may have 3 (max_backlog): let its workers catch up or delete jobs, then dispatch again; nothing was dispatched"
        );
        let beta_q = b.counts(&written("beta/q")).await.expect("counts");
        assert_eq!(beta_q.pending, 2);
        // Acme's and the default tenant's dispatches are not beta's.
        admitting.dispatch(new("free")).await.expect("no quota");
        assert_eq!(b.counts(&written("acme/q")).await.expect("counts").pending, 2);
        // A batch refused for one tenant keeps nothing it took for another
        // (acme's tokens) or for the refused one (gamma's backlog).
        c.advance(Duration::from_secs(2));
        admitting.dispatch(new("gamma/q")).await.expect("gamma's token");
        let mixed = admitting
            .dispatch_many(vec![new("acme/q"), new("acme/q"), new("gamma/q")])
            .await
            .expect_err("gamma is over its rate");
        assert!(mixed.to_string().contains("tenant gamma is over its dispatch rate"), "{mixed}");
        admitting
            .dispatch_many(vec![new("acme/q"), new("acme/q")])
            .await
            .expect("acme's two tokens, given back");
        c.advance(Duration::from_secs(1));
        admitting.dispatch(new("gamma/q")).await.expect("room in gamma's backlog, given back");
        assert_eq!(b.counts(&written("acme/q")).await.expect("counts").pending, 4);
        assert_eq!(b.counts(&written("gamma/q")).await.expect("counts").pending, 2);
        // Forty dispatches at once into a backlog of ten: ten get in.
        let at_once = futures_util::future::join_all((0..40).map(|_| admitting.dispatch(new("delta/q")))).await;
        assert_eq!(at_once.iter().filter(|r| r.is_ok()).count(), 10);
        assert_eq!(b.counts(&written("delta/q")).await.expect("counts").pending, 10);
    }

    /// A tenant's jobs in flight are shared by its holders (workers) up to
    /// its cap, given back one by one, and a holder whose time passes (a
    /// worker that died) holds nothing; tenants are apart.
    pub async fn in_flight_slots_are_capped_per_tenant_and_freed_when_a_holder_lapses(b: Backend, c: Clock) {
        let (acme, beta) = (tenant_name("acme"), tenant_name("beta"));
        let at = |ms: u64| c.now() + ms;
        assert_eq!(b.take_flight(&acme, "w1", 3, 4, at(1_000)).await.expect("take"), 3);
        assert_eq!(b.take_flight(&acme, "w2", 3, 4, at(5_000)).await.expect("take"), 1);
        assert_eq!(b.take_flight(&acme, "w3", 1, 4, at(5_000)).await.expect("take"), 0);
        assert_eq!(b.take_flight(&beta, "w1", 5, 2, at(1_000)).await.expect("take"), 2);
        assert_eq!(b.in_flight(&acme).await.expect("count"), 4);
        b.give_flight(&acme, "w1", 2).await.expect("give");
        assert_eq!(b.in_flight(&acme).await.expect("count"), 2);
        assert_eq!(b.take_flight(&acme, "w2", 5, 4, at(5_000)).await.expect("take"), 2);
        // Giving back more than it holds gives back what it holds.
        b.give_flight(&acme, "w3", 9).await.expect("give");
        assert_eq!(b.in_flight(&acme).await.expect("count"), 4);
        // w1 keeps its one job past its first time; w2 lapses.
        b.hold_flight(&acme, "w1", at(10_000)).await.expect("hold");
        c.advance(Duration::from_secs(6));
        assert_eq!(b.in_flight(&acme).await.expect("count"), 1);
        assert_eq!(b.in_flight(&beta).await.expect("count"), 0, "beta's holder lapsed too");
        assert_eq!(b.take_flight(&acme, "w3", 10, 4, at(5_000)).await.expect("take"), 3);
        b.give_flight(&acme, "w1", 1).await.expect("give");
        b.give_flight(&acme, "w3", 3).await.expect("give");
        assert_eq!(b.in_flight(&acme).await.expect("count"), 0);
    }

    /// A paused queue's jobs are not claimed: they stay pending (scheduled
    /// ones still come due), it leaves the due index, other queues go on;
    /// resumed, its jobs are claimed and it is due again. A queue can be
    /// paused before its first job; removing it forgets the pause.
    pub async fn a_paused_queue_is_not_claimed_until_it_is_resumed(b: Backend, c: Clock) {
        let (held, other, gone) = (q("held"), q("other"), q("gone"));
        assert!(b.set_paused(&held, true).await.expect("pause"), "paused before any job");
        assert!(!b.set_paused(&held, true).await.expect("pause"), "paused already");
        for _ in 0..2 {
            b.dispatch(job("held", "1")).await.expect("dispatch");
        }
        let later = DispatchOptions {
            run_at: RunAt::After(Duration::from_secs(1)),
            ..Default::default()
        };
        b.dispatch(with("held", "2", later)).await.expect("dispatch");
        b.dispatch(job("other", "1")).await.expect("dispatch");
        let both = [held.clone(), other.clone()];
        let claimed = b.claim(&both, 10, LEASE).await.expect("claim");
        let queues: Vec<&QueueName> = claimed.iter().map(|c| c.job.id.queue()).collect();
        assert_eq!(queues, [&other], "only the queue not paused");
        assert!(!due(&b).await.contains(&"held".to_string()), "a paused queue is not due");
        c.advance(Duration::from_secs(2));
        assert!(b.claim(std::slice::from_ref(&held), 10, LEASE).await.expect("claim").is_empty());
        let counts = b.counts(&held).await.expect("counts");
        assert_eq!((counts.pending, counts.scheduled, counts.running), (3, 0, 0));
        assert_eq!(b.paused(&both).await.expect("paused"), [true, false]);
        assert!(b.set_paused(&held, false).await.expect("resume"));
        assert!(!b.set_paused(&held, false).await.expect("resume"), "resumed already");
        assert_eq!(b.paused(&both).await.expect("paused"), [false, false]);
        assert!(due(&b).await.contains(&"held".to_string()), "due once resumed");
        let claimed = b.claim(std::slice::from_ref(&held), 10, LEASE).await.expect("claim");
        assert_eq!(claimed.len(), 3);
        b.set_paused(&gone, true).await.expect("pause");
        b.dispatch(job("gone", "1")).await.expect("dispatch");
        assert_eq!(b.remove_queue(&gone).await.expect("remove"), 1);
        assert_eq!(b.paused(std::slice::from_ref(&gone)).await.expect("paused"), [false]);
    }

    /// A tenant's attempt run time adds up within a period over every
    /// caller, starts again in the next, is read without changing it, goes
    /// to the latest period from a caller whose clock is behind, and goes
    /// with the tenant; tenants are apart.
    pub async fn run_time_adds_up_per_tenant_and_period(b: Backend, c: Clock) {
        let (acme, beta) = (tenant_name("acme"), tenant_name("beta"));
        let hour = 3_600_000;
        let this = c.now() - c.now() % hour;
        assert_eq!(b.charge_run_time(&acme, this, hour, 0).await.expect("read"), 0);
        assert_eq!(b.charge_run_time(&acme, this, hour, 250).await.expect("charge"), 250);
        assert_eq!(b.charge_run_time(&acme, this, hour, 100).await.expect("charge"), 350);
        assert_eq!(b.charge_run_time(&beta, this, hour, 7).await.expect("charge"), 7);
        assert_eq!(b.charge_run_time(&acme, this, hour, 0).await.expect("read"), 350);
        let next = this + hour;
        c.advance(Duration::from_millis(hour));
        assert_eq!(b.charge_run_time(&acme, next, hour, 0).await.expect("read"), 0);
        assert_eq!(b.charge_run_time(&acme, next, hour, 40).await.expect("charge"), 40);
        // A worker whose clock is behind still reads and adds to the latest.
        assert_eq!(b.charge_run_time(&acme, this, hour, 2).await.expect("charge"), 42);
        assert_eq!(b.charge_run_time(&acme, next, hour, 0).await.expect("read"), 42);
        b.remove_tenant(&acme).await.expect("remove");
        assert_eq!(b.charge_run_time(&acme, next, hour, 0).await.expect("read"), 0);
        assert_eq!(b.charge_run_time(&beta, this, hour, 0).await.expect("read"), 7);
    }

    /// Throughput adds up per minute, for each tenant and over the fleet:
    /// a minute with nothing added reads zero, tenants are apart, and a
    /// read returns the minutes asked for, at most THROUGHPUT_MINUTES.
    pub async fn throughput_adds_up_per_minute_for_each_tenant_and_the_fleet(b: Backend, c: Clock) {
        let (acme, beta) = (tenant_name("acme"), tenant_name("beta"));
        let zero = Throughput::default();
        let first = minute_of(c.now());
        let both = [(acme.clone(), counted(3, 1)), (beta.clone(), counted(2, 0))];
        b.add_throughput(first, &both).await.expect("add");
        b.add_throughput(first, &[(acme.clone(), counted(1, 1))]).await.expect("add");
        b.add_throughput(first, &[]).await.expect("add nothing");
        c.advance(Duration::from_secs(120));
        let third = first + 2;
        b.add_throughput(third, &[(beta.clone(), counted(5, 2))]).await.expect("add");
        let fleet = [zero, counted(6, 2), zero, counted(5, 2)];
        assert_eq!(throughput_of(&b, None, first - 1, 4).await, fleet);
        let acme_minutes = [zero, counted(4, 2), zero, zero];
        assert_eq!(throughput_of(&b, Some("acme"), first - 1, 4).await, acme_minutes);
        let beta_minutes = [zero, counted(2, 0), zero, counted(5, 2)];
        assert_eq!(throughput_of(&b, Some("beta"), first - 1, 4).await, beta_minutes);
        assert_eq!(throughput_of(&b, Some("gamma"), first, 3).await, [zero; 3], "nothing added");
        let most = throughput_of(&b, None, first - 1, 1_000).await;
        assert_eq!(most.len(), THROUGHPUT_MINUTES, "a read is capped");
        assert_eq!(most[..4], fleet);
        assert!(throughput_of(&b, None, first, 0).await.is_empty());
        assert_eq!(throughput_of(&b, None, u64::MAX, 2).await, [zero; 2], "past the last minute");
    }

    /// The minutes kept are the current one and the THROUGHPUT_MINUTES - 1
    /// before it: an older one reads zero whatever was added (long past,
    /// or added late), a minute added after one THROUGHPUT_MINUTES before
    /// it starts from nothing, and a tenant's counts go with the tenant
    /// while the fleet's stay.
    pub async fn throughput_keeps_only_the_last_minutes(b: Backend, c: Clock) {
        let beta = tenant_name("beta");
        let zero = Throughput::default();
        let kept = THROUGHPUT_MINUTES as u64;
        let first = minute_of(c.now());
        b.add_throughput(first, &[(beta.clone(), counted(5, 2))]).await.expect("add");
        c.advance(Duration::from_secs(60 * kept));
        let now = minute_of(c.now());
        assert_eq!(throughput_of(&b, None, first, 1).await, [zero], "past the minutes kept");
        assert_eq!(throughput_of(&b, Some("beta"), first, 1).await, [zero]);
        b.add_throughput(now, &[(beta.clone(), counted(1, 0))]).await.expect("add");
        b.add_throughput(now + 1 - kept, &[(beta.clone(), counted(7, 7))]).await.expect("add");
        b.add_throughput(first, &[(beta.clone(), counted(9, 9))]).await.expect("add late");
        let mut recent = vec![zero; THROUGHPUT_MINUTES];
        recent[0] = counted(7, 7);
        recent[THROUGHPUT_MINUTES - 1] = counted(1, 0);
        assert_eq!(throughput_of(&b, Some("beta"), now + 1 - kept, THROUGHPUT_MINUTES).await, recent);
        assert_eq!(throughput_of(&b, None, now + 1 - kept, THROUGHPUT_MINUTES).await, recent);
        assert_eq!(throughput_of(&b, None, first, 1).await, [zero], "added late, still past");
        c.advance(Duration::from_secs(3 * 3_600));
        assert_eq!(throughput_of(&b, None, now, 1).await, [zero], "long past");
        assert_eq!(throughput_of(&b, Some("beta"), now, 1).await, [zero]);
        c.advance(Duration::from_secs(60));
        let later = minute_of(c.now());
        b.add_throughput(later, &[(beta.clone(), counted(2, 1))]).await.expect("add");
        b.remove_tenant(&beta).await.expect("remove");
        assert_eq!(throughput_of(&b, Some("beta"), later, 1).await, [zero], "gone with the tenant");
        assert_eq!(throughput_of(&b, None, later, 1).await, [counted(2, 1)], "the fleet's stay");
    }

    /// A published module's size is its bytes'; none without one.
    pub async fn published_modules_have_their_sizes(b: Backend, _c: Clock) {
        let (one, two) = (q("one"), q("two"));
        b.publish_module(&one, b"\0asm first").await.expect("publish");
        let queues = [one.clone(), two.clone()];
        assert_eq!(b.module_sizes(&queues).await.expect("sizes"), vec![Some(10), None]);
        b.publish_module(&one, b"\0asm").await.expect("publish");
        assert_eq!(b.module_sizes(&queues).await.expect("sizes"), vec![Some(4), None]);
        b.withdraw_module(&one).await.expect("withdraw");
        assert_eq!(b.module_sizes(&queues).await.expect("sizes"), vec![None, None]);
        assert_eq!(b.module_sizes(&[]).await.expect("sizes"), Vec::<Option<u64>>::new());
    }

    /// A published module is found by version and bytes; publishing again
    /// replaces it; withdrawing removes it.
    pub async fn published_modules_replace_and_withdraw(b: Backend, _c: Clock) {
        let (one, two) = (q("one"), q("two"));
        let queues = [one.clone(), two.clone()];
        assert_eq!(
            b.module_versions(&queues).await.expect("versions"),
            vec![None, None]
        );
        assert_eq!(b.module(&one).await.expect("module"), None);
        let v1 = b
            .publish_module(&one, b"\0asm first")
            .await
            .expect("publish");
        assert_eq!(v1, runtime::queue::module_version(b"\0asm first"));
        let v2 = b
            .publish_module(&one, b"\0asm second")
            .await
            .expect("publish");
        assert_ne!(v1, v2);
        assert_eq!(
            b.module_versions(&queues).await.expect("versions"),
            vec![Some(v2.clone()), None]
        );
        assert_eq!(
            b.module(&one).await.expect("module"),
            Some((v2, b"\0asm second".to_vec()))
        );
        assert!(b.withdraw_module(&one).await.expect("withdraw"));
        assert!(!b.withdraw_module(&one).await.expect("withdraw again"));
        assert_eq!(b.module(&one).await.expect("module"), None);
    }


    /// Every backend refuses, with an input error naming the problem, a unique
    /// key that is too long, empty, holds a control character or starts with
    /// the handlers' prefix; a delay or run-at time past `MAX_DELAY` (more
    /// than `MAX_ATTEMPTS` attempts is refused by `MaxAttempts` before any
    /// backend). Each limit itself is accepted, and a refused
    /// `dispatch_many` enqueues none of its jobs.
    pub async fn dispatch_checks_keys_delays_and_attempts(b: Backend, _c: Clock) {
        let max = "x".repeat(MAX_UNIQUE_KEY_BYTES);
        let year = u64::try_from(MAX_DELAY.as_millis()).expect("a year of ms fits");
        let at_limits = [
            keyed(&max),
            DispatchOptions {
                run_at: RunAt::After(MAX_DELAY),
                ..Default::default()
            },
            DispatchOptions {
                run_at: RunAt::At(START + year),
                ..Default::default()
            },
            DispatchOptions {
                max_attempts: attempts(MAX_ATTEMPTS),
                ..Default::default()
            },
        ];
        for options in at_limits {
            b.dispatch(with("ok", "1", options.clone()))
                .await
                .unwrap_or_else(|e| panic!("{options:?} is within the limits: {e}"));
        }
        let too_long = format!("{max}x");
        let bad: Vec<(DispatchOptions, &str)> = vec![
            (keyed(&too_long), "257 bytes, over the limit of 256 bytes"),
            (keyed(""), "it is empty"),
            (keyed("a\nb"), "control character"),
            (keyed("@q:k"), "reserved for the keys handlers give"),
            (
                DispatchOptions {
                    run_at: RunAt::After(MAX_DELAY + Duration::from_millis(1)),
                    ..Default::default()
                },
                "over the limit of 365 days",
            ),
            (
                DispatchOptions {
                    run_at: RunAt::At(START + year + 1),
                    ..Default::default()
                },
                "over the limit of 365 days",
            ),
        ];
        // More attempts than the limit cannot reach a backend: the type
        // refuses them, with the same words.
        let too_many = MaxAttempts::new(MAX_ATTEMPTS + 1).expect_err("over the limit");
        assert!(
            too_many
                .to_string()
                .contains("max attempts 101 is over the limit of 100"),
            "{too_many}"
        );
        let root = b.dispatch(job("parent", "{}")).await.expect("dispatch");
        let parent = running(&b, "parent").await;
        assert_eq!(parent.job.id, root);
        for (options, expected) in bad {
            let one = b.dispatch(with("q", "1", options.clone())).await;
            let many = b
                .dispatch_many(vec![job("q", "2"), with("q", "3", options.clone())])
                .await;
            let follow = follow_up(&b, &parent, with("q", "4", options.clone()), ROOMY).await;
            for result in [one.map(|_| ()), many.map(|_| ()), follow.map(|_| ())] {
                match result {
                    Err(QueueError::Input(e)) => {
                        assert!(e.to_string().contains(expected), "{options:?}: {e}");
                    }
                    other => panic!("{options:?} was not refused: {other:?}"),
                }
            }
        }
        assert_eq!(b.counts(&q("q")).await.expect("counts"), Default::default());
        let huge = b
            .dispatch(with("q", "1", keyed(&"k".repeat(10 << 20))))
            .await;
        assert!(
            matches!(
                huge,
                Err(QueueError::Input(InputError::UniqueKeyTooLong { size, .. })) if size == 10 << 20
            ),
            "a 10 MiB key is refused by its size, not echoed"
        );
    }

    /// A follow-up records its tree: the root, the job that dispatched it, its
    /// depth. A job dispatched from outside has none.
    pub async fn follow_ups_carry_their_lineage(b: Backend, _c: Clock) {
        let root = b.dispatch(job("a", "{}")).await.expect("dispatch");
        let a = running(&b, "a").await;
        assert_eq!(a.job.lineage, None, "a root has no lineage");
        let child = follow_up(&b, &a, job("b", "{}"), ROOMY)
            .await
            .expect("follow-up");
        let b1 = running(&b, "b").await;
        assert_eq!(b1.job.id, child);
        let expected = Lineage {
            root: root.clone(),
            parent: root.clone(),
            depth: 1,
        };
        assert_eq!(b1.job.lineage.as_ref(), Some(&expected));
        let grandchild = follow_up(&b, &b1, job("a", "{}"), ROOMY)
            .await
            .expect("follow-up");
        let stored = b.get(&grandchild).await.expect("get").expect("exists");
        let expected = Lineage {
            root,
            parent: child,
            depth: 2,
        };
        assert_eq!(stored.lineage, Some(expected));
    }

    /// A tree holds at most `max_jobs` jobs, root included, whichever of its
    /// jobs dispatches; the refusal names the limit and enqueues nothing.
    pub async fn a_tree_holds_at_most_its_budget_of_jobs(b: Backend, _c: Clock) {
        let budget = TreeBudget {
            max_depth: 32,
            max_jobs: 3,
        };
        let root = b.dispatch(job("fork", "{}")).await.expect("dispatch");
        let r = running(&b, "fork").await;
        follow_up(&b, &r, job("fork", "1"), budget)
            .await
            .expect("second job of the tree");
        let child = running(&b, "fork").await;
        follow_up(&b, &child, job("other", "2"), budget)
            .await
            .expect("third job, dispatched by the child");
        for parent in [&r, &child] {
            match follow_up(&b, parent, job("fork", "3"), budget).await {
                Err(QueueError::TreeFull {
                    root: full,
                    jobs: 3,
                    limit: 3,
                    ..
                }) => assert_eq!(full, root),
                other => panic!("a fourth job was not refused: {other:?}"),
            }
        }
        let fork = b.counts(&q("fork")).await.expect("counts");
        let other = b.counts(&q("other")).await.expect("counts");
        assert_eq!((fork.pending, fork.running, other.pending), (0, 2, 1));
        let budget = TreeBudget {
            max_jobs: 4,
            ..budget
        };
        follow_up(&b, &child, job("fork", "4"), budget)
            .await
            .expect("a queue with a bigger budget may add to the tree");
    }

    /// A follow-up is at most `max_depth` below its root.
    pub async fn a_tree_is_at_most_its_budget_deep(b: Backend, _c: Clock) {
        let budget = TreeBudget {
            max_depth: 2,
            max_jobs: 1000,
        };
        let root = b.dispatch(job("chain", "0")).await.expect("dispatch");
        let mut parent = running(&b, "chain").await;
        for depth in 1..=2 {
            follow_up(&b, &parent, job("chain", &depth.to_string()), budget)
                .await
                .expect("within the depth");
            parent = running(&b, "chain").await;
            assert_eq!(parent.job.lineage.as_ref().map(|l| l.depth), Some(depth));
        }
        match follow_up(&b, &parent, job("chain", "3"), budget).await {
            Err(QueueError::TreeTooDeep {
                root: deep,
                depth: 3,
                limit: 2,
                ..
            }) => assert_eq!(deep, root),
            other => panic!("depth 3 was not refused: {other:?}"),
        }
        assert_eq!(b.counts(&q("chain")).await.expect("counts").pending, 0);
    }

    /// A keyed follow-up whose key is held returns the holder and counts
    /// nothing, even in a full tree: an attempt retried after dispatching its
    /// keyed follow-ups dispatches them again for free. Done jobs stay counted.
    pub async fn keyed_follow_ups_count_once_even_when_full(b: Backend, _c: Clock) {
        let budget = TreeBudget {
            max_depth: 32,
            max_jobs: 3,
        };
        b.dispatch(job("p", "{}")).await.expect("dispatch");
        let p = running(&b, "p").await;
        let first = follow_up(&b, &p, with("mail", "1", keyed("k")), budget)
            .await
            .expect("follow-up");
        for _ in 0..5 {
            let again = follow_up(&b, &p, with("mail", "2", keyed("k")), budget)
                .await
                .expect("the held key returns its job");
            assert_eq!(again, first);
        }
        let second = follow_up(&b, &p, with("mail", "3", keyed("k2")), budget)
            .await
            .expect("the tree's third job");
        assert_ne!(second, first);
        let full = follow_up(&b, &p, with("mail", "4", keyed("k")), budget).await;
        assert_eq!(full.expect("held key, full tree"), first);
        assert!(matches!(
            follow_up(&b, &p, with("mail", "5", keyed("k3")), budget).await,
            Err(QueueError::TreeFull { .. })
        ));
        let mail = running(&b, "mail").await;
        assert_eq!(mail.job.id, first);
        b.complete(&mail.lease, Completion::Done, String::new())
            .await
            .expect("complete");
        let lineage = mail.job.lineage.expect("a follow-up");
        b.leave_tree(&lineage).await.expect("leave");
        assert!(
            matches!(
                follow_up(&b, &p, with("mail", "6", keyed("k")), budget).await,
                Err(QueueError::TreeFull { jobs: 3, .. })
            ),
            "the key is free again, but the done job still counts"
        );
        assert_eq!(b.counts(&q("mail")).await.expect("counts").pending, 1);
    }

    /// A tree's count survives its root's retries and its root being done:
    /// the root's follow-ups keep counting against it, and when every
    /// follow-up is done the root still finds its count.
    pub async fn neither_finishing_nor_retrying_gives_a_tree_a_new_budget(b: Backend, _c: Clock) {
        let budget = TreeBudget {
            max_depth: 32,
            max_jobs: 3,
        };
        b.dispatch(job("root", "{}")).await.expect("dispatch");
        let first = running(&b, "root").await;
        for i in 0..2 {
            follow_up(&b, &first, job("leaf", &i.to_string()), budget)
                .await
                .expect("within the budget");
        }
        let again = Completion::Retry {
            kind: FailureKind::Handler,
            error: "boom".into(),
            delay: Duration::ZERO,
        };
        b.complete(&first.lease, again, String::new())
            .await
            .expect("complete");
        let second = running(&b, "root").await;
        assert_eq!(second.job.attempts, 2);
        assert!(matches!(
            follow_up(&b, &second, job("leaf", "2"), budget).await,
            Err(QueueError::TreeFull { jobs: 3, .. })
        ));
        for _ in 0..2 {
            let leaf = running(&b, "leaf").await;
            b.complete(&leaf.lease, Completion::Done, String::new())
                .await
                .expect("complete");
            b.leave_tree(leaf.job.lineage.as_ref().expect("a follow-up"))
                .await
                .expect("leave");
        }
        assert!(
            matches!(
                follow_up(&b, &second, job("leaf", "3"), budget).await,
                Err(QueueError::TreeFull { jobs: 3, .. })
            ),
            "every follow-up done: the root still has the count"
        );
        let roomier = TreeBudget {
            max_jobs: 5,
            ..budget
        };
        follow_up(&b, &second, job("leaf", "4"), roomier)
            .await
            .expect("the root adds a fourth");
        b.complete(&second.lease, Completion::Done, String::new())
            .await
            .expect("complete");
        let leaf = running(&b, "leaf").await;
        follow_up(&b, &leaf, job("leaf", "5"), roomier)
            .await
            .expect("after the root is done, its follow-ups go on counting: the fifth");
        assert!(matches!(
            follow_up(&b, &leaf, job("leaf", "6"), roomier).await,
            Err(QueueError::TreeFull { jobs: 5, .. })
        ));
    }

    /// A follow-up that finds no count for its tree (it expired; here, its
    /// only live follow-up is reported done while it still runs) is refused:
    /// the count is never started again below the root.
    pub async fn a_follow_up_of_a_closed_tree_is_refused(b: Backend, _c: Clock) {
        let root = b.dispatch(job("root", "{}")).await.expect("dispatch");
        let r = running(&b, "root").await;
        follow_up(&b, &r, job("leaf", "1"), ROOMY)
            .await
            .expect("follow-up");
        b.complete(&r.lease, Completion::Done, String::new())
            .await
            .expect("complete");
        let leaf = running(&b, "leaf").await;
        b.leave_tree(leaf.job.lineage.as_ref().expect("a follow-up"))
            .await
            .expect("leave");
        match follow_up(&b, &leaf, job("leaf", "2"), ROOMY).await {
            Err(QueueError::TreeClosed { root: closed }) => assert_eq!(closed, root),
            other => panic!("a closed tree took a follow-up: {other:?}"),
        }
    }

    /// Keys handlers give are scoped to the dispatching job's queue: a handler
    /// holding a key for a year does not hold back the application's job with
    /// that key, nor another queue's handler; it deduplicates only with
    /// handlers of its own queue.
    pub async fn handler_keys_are_scoped_to_the_dispatching_queue(b: Backend, _c: Clock) {
        b.dispatch(job("evil", "{}")).await.expect("dispatch");
        b.dispatch(job("evil", "{}")).await.expect("dispatch");
        b.dispatch(job("kind", "{}")).await.expect("dispatch");
        let evil = running(&b, "evil").await;
        let evil2 = running(&b, "evil").await;
        let kind = running(&b, "kind").await;
        let far = DispatchOptions {
            run_at: RunAt::After(MAX_DELAY),
            ..keyed("invoice-7")
        };
        let held = follow_up(&b, &evil, with("mail", "1", far), ROOMY)
            .await
            .expect("follow-up");
        let stored = b.get(&held).await.expect("get").expect("exists");
        assert_eq!(stored.unique_key.as_deref(), Some("@evil:invoice-7"));
        let app = b
            .dispatch(with("mail", "2", keyed("invoice-7")))
            .await
            .expect("the application's key is its own");
        assert_ne!(app, held);
        let app_again = b
            .dispatch(with("mail", "3", keyed("invoice-7")))
            .await
            .expect("dispatch");
        assert_eq!(app_again, app, "the application's key still deduplicates");
        let same_queue = follow_up(&b, &evil2, with("mail", "4", keyed("invoice-7")), ROOMY)
            .await
            .expect("follow-up");
        assert_eq!(same_queue, held, "handlers of one queue share their keys");
        let other_queue = follow_up(&b, &kind, with("mail", "5", keyed("invoice-7")), ROOMY)
            .await
            .expect("follow-up");
        assert!(other_queue != held && other_queue != app);
        assert_eq!(
            running(&b, "mail").await.job.id,
            app,
            "the application's job runs; the handler's waits its year"
        );
    }
}

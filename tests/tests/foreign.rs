//! Handlers built by other toolchains against the unchanged handler world:
//! Python (componentize-py), JavaScript on QuickJS (componentize-qjs) and on
//! SpiderMonkey (componentize-js). Sources in tests/foreign/, built by
//! scripts/foreign.sh (scripts/test.sh runs it first). Each runs under the
//! default config: through the library at the default worker concurrency,
//! and through the real binary (sync dispatch, `runtime check`).
//!
//! Their handlers are 2 to 18 MB and compile in seconds to tens of seconds:
//! every test takes them from one compile cache shared by the whole run
//! (and by later runs), filled once per module.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use runtime::config::Config;
use runtime::job::{DispatchOptions, JobId, MaxAttempts, NewJob, Payload, QueueName};
use runtime::queue::Ack;
use runtime::sandbox::RunOutcome;
use runtime::worker::{JobEvent, WorkerConfig, WorkerStats};
use runtime::{JobState, Runtime};
use runtime_tests::{guests, runtime};
use serde_json::{Value, json};

/// The compile cache every test of `queue`'s handler shares, kept across
/// runs (in cargo's scratch dir for tests).
fn cache(queue: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("foreign-cache")
        .join(queue)
}

/// The default config, but for the shared compile cache of `queue`.
fn config(queue: &str) -> Config {
    let text = format!("cache_dir = {:?}\n", cache(queue).display().to_string());
    Config::parse(&text).expect("valid test config")
}

/// The built module serving `queue`, compiled into its shared cache by the
/// first test that needs it while any other test needing it waits, so each
/// module compiles once per run, not once per test (and not at all while it
/// is unchanged).
fn module(queue: &str) -> String {
    static COMPILED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let path = format!("{}/{queue}_job.wasm", guests::FOREIGN_DIR);
    let built = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| {
            panic!("{path}: {e}: run scripts/foreign.sh (it installs the pinned toolchains and builds the Python and JavaScript test handlers)")
        });
    let mut compiled = COMPILED.lock().unwrap_or_else(|e| e.into_inner());
    if !compiled.contains(queue) {
        // The toolchains do not build the same bytes twice, so each rebuild
        // would leave another 5 to 37 MB entry behind: drop those older
        // than the module.
        for entry in std::fs::read_dir(cache(queue))
            .into_iter()
            .flatten()
            .flatten()
        {
            let older = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < built);
            if older {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let rt = Runtime::in_memory(guests::FOREIGN_DIR.into(), config(queue)).expect("runtime");
        if let Err(e) = rt.registry().handler(&q(queue)) {
            panic!("{path} does not load under the default config: {e}");
        }
        compiled.insert(queue.into());
    }
    path
}

fn q(name: &str) -> QueueName {
    QueueName::new(name).expect("valid queue")
}

/// What one kind of job should end as.
struct Case {
    payload: Value,
    max_attempts: u32,
    /// How many of it to dispatch.
    count: usize,
    /// Final state: `None` for done (removed from the queue).
    state: Option<JobState>,
    attempts: u32,
    /// The delay the handler asks for when it retries.
    retry_delay: Option<Duration>,
    /// Every attempt ends in the same panic instead of asking to retry.
    panics: bool,
    /// The last attempt's reason; also the job's error when it failed.
    reason: String,
    /// Follow-up jobs each one dispatches.
    followups: usize,
}

impl Case {
    fn new(payload: Value, count: usize) -> Self {
        Case {
            payload,
            max_attempts: 4,
            count,
            state: None,
            attempts: 1,
            retry_delay: None,
            panics: false,
            reason: "done".into(),
            followups: 0,
        }
    }
}

fn reason(outcome: &RunOutcome) -> String {
    match outcome {
        RunOutcome::Done => "done".into(),
        RunOutcome::Retry { reason, .. }
        | RunOutcome::Fail { reason }
        | RunOutcome::Crashed { reason, .. } => reason.clone(),
    }
}

/// Every outcome the handler can give, dozens of jobs at once through a
/// worker at its default concurrency under the default config: each job
/// must end as its payload asks, every attempt must log its line, and the
/// worker's counts must add up.
fn runs_every_outcome(queue: &str, exception: &str) {
    module(queue);
    let cases = [
        Case::new(json!({}), 24),
        Case {
            attempts: 3,
            ..Case::new(json!({"succeed_on_attempt": 3}), 8)
        },
        // The handler's own delay crosses the boundary as a u64 (a BigInt
        // in SpiderMonkey, a Number in QuickJS, an int in Python).
        Case {
            attempts: 2,
            retry_delay: Some(Duration::from_secs(60)),
            ..Case::new(
                json!({"succeed_on_attempt": 2, "retry_after_ms": 60_000}),
                4,
            )
        },
        Case {
            state: Some(JobState::Failed),
            reason: "no such order".into(),
            ..Case::new(json!({"finally": "no such order"}), 8)
        },
        Case {
            state: Some(JobState::Failed),
            attempts: 4,
            reason: "not yet (attempt 4)".into(),
            ..Case::new(json!({"succeed_on_attempt": 99}), 4)
        },
        Case {
            followups: 1,
            ..Case::new(
                json!({"dispatch": [{"queue": queue, "payload": {"followup": true}}]}),
                8,
            )
        },
        Case {
            state: Some(JobState::Failed),
            reason: "dispatch refused: invalid queue name \"Not A Queue\": use 1 to 64 characters of a-z, 0-9, '-' and '_', starting with a letter or digit".into(),
            ..Case::new(
                json!({"dispatch": [{"queue": "Not A Queue", "payload": {}}]}),
                2,
            )
        },
        Case {
            max_attempts: 2,
            state: Some(JobState::Failed),
            attempts: 2,
            panics: true,
            reason: format!("panic: {exception}boom"),
            ..Case::new(json!({"raise": "boom"}), 2)
        },
    ];
    let tokio = runtime_tests::tokio_runtime(2);
    let rt = Runtime::in_memory(guests::FOREIGN_DIR.into(), config(queue)).expect("runtime");
    let (ids, stats, events) = tokio.block_on(async {
        let mut ids = Vec::new();
        for (n, case) in cases.iter().enumerate() {
            for _ in 0..case.count {
                let job = NewJob {
                    queue: q(queue),
                    payload: Payload::new(case.payload.to_string()).expect("payload"),
                    options: DispatchOptions {
                        max_attempts: MaxAttempts::new(case.max_attempts).expect("attempts"),
                        ..Default::default()
                    },
                };
                ids.push((rt.dispatch(job).await.expect("dispatch"), n));
            }
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let worker = WorkerConfig {
            drain: true,
            retry_at_once: true,
            ..Default::default()
        };
        let run = rt.worker(worker).with_events(tx);
        let stats = tokio::time::timeout(Duration::from_secs(300), run.run(std::future::pending()))
            .await
            .expect("the jobs finish within 5 minutes")
            .expect("worker");
        let mut events: BTreeMap<JobId, Vec<JobEvent>> = BTreeMap::new();
        while let Ok(e) = rx.try_recv() {
            events.entry(e.job.id.clone()).or_default().push(e);
        }
        // A retried job's next attempt can end before the last one's event
        // is sent.
        for runs in events.values_mut() {
            runs.sort_by_key(|e| e.job.attempts);
        }
        (ids, stats, events)
    });

    let mut expected = WorkerStats::default();
    let mut followups = 0;
    for (id, n) in &ids {
        let case = &cases[*n];
        let runs = &events[id];
        let what = format!("{id} ({})", case.payload);
        assert_eq!(runs.len() as u32, case.attempts, "attempts of {what}");
        for (e, attempt) in runs.iter().zip(1..) {
            assert_eq!(e.job.attempts, attempt, "{what}");
            let report = e.report.as_ref().expect("every attempt ran");
            let line = format!(
                "INFO {queue}: job {id}, attempt {attempt} of {}",
                case.max_attempts
            );
            assert!(report.log.contains(&line), "{what}: {:?}", report.log);
            if case.panics {
                let panic = matches!(&report.outcome, RunOutcome::Crashed { reason, .. } if *reason == case.reason);
                assert!(panic, "{what}: {:?}", report.outcome);
            }
            if attempt < case.attempts {
                if !case.panics {
                    let retry = RunOutcome::Retry {
                        reason: format!("not yet (attempt {attempt})"),
                        delay: case.retry_delay,
                    };
                    assert_eq!(report.outcome, retry, "{what}");
                }
                assert_eq!(e.ack, Ack::Applied(Some(JobState::Pending)), "{what}");
            }
        }
        let last = runs.last().expect("ran");
        assert_eq!(last.ack, Ack::Applied(case.state), "{what}");
        let report = last.report.as_ref().expect("ran");
        assert_eq!(reason(&report.outcome), case.reason, "{what}");
        let stored = tokio.block_on(rt.backend().jobs.get(id)).expect("get");
        match case.state {
            None => assert!(stored.is_none(), "{what}: done jobs are removed"),
            Some(_) => {
                let record = stored.expect("failed jobs are kept");
                assert_eq!(record.error.as_deref(), Some(case.reason.as_str()));
            }
        }
        let dispatched = format!("INFO dispatched {queue}:");
        assert_eq!(
            report.log.matches(&dispatched).count(),
            case.followups,
            "{what}"
        );
        followups += case.followups;
        expected.claimed += u64::from(case.attempts);
        expected.retried += u64::from(case.attempts - 1);
        match case.state {
            None => expected.done += 1,
            Some(_) => expected.failed += 1,
        }
    }
    // The follow-ups: new jobs on the same queue, each done at once.
    let ours: HashSet<&JobId> = ids.iter().map(|(id, _)| id).collect();
    let others: Vec<_> = events.iter().filter(|(id, _)| !ours.contains(id)).collect();
    assert_eq!(others.len(), followups, "follow-up jobs");
    for (id, runs) in others {
        assert_eq!(runs.len(), 1, "{id}");
        assert_eq!(runs[0].ack, Ack::Applied(None), "{id}");
        let payload: Value = serde_json::from_str(runs[0].job.payload.as_str()).expect("JSON");
        assert_eq!(payload, json!({"followup": true}), "{id}");
        expected.claimed += 1;
        expected.done += 1;
    }
    assert_eq!(stats, expected);
}

/// The real binary on the in-memory default: a job that retries once,
/// dispatching a follow-up on each attempt that fails for good, then one
/// that raises.
fn runs_in_sync_mode(queue: &str, exception: &str) {
    module(queue);
    let payload = json!({
        "succeed_on_attempt": 2,
        "dispatch": [{"queue": queue, "payload": {"finally": "stop"}}],
    })
    .to_string();
    let args = [
        "--handlers",
        guests::FOREIGN_DIR,
        "dispatch",
        queue,
        &payload,
        "--json",
    ];
    let run = runtime(&cache(queue), &args, None);
    run.expect_code(0);
    let out = run.json();
    assert_eq!(out["state"], "done", "{out:#}");
    assert_eq!(out["attempts"], 2, "{out:#}");
    let runs = out["runs"].as_array().expect("runs");
    assert_eq!(runs[0]["outcome"], "retry", "{out:#}");
    assert_eq!(runs[0]["kind"], "handler", "{out:#}");
    assert_eq!(runs[0]["error"], "not yet (attempt 1)", "{out:#}");
    assert_eq!(runs[1]["outcome"], "done", "{out:#}");
    let log = runs[1]["log"].as_str().unwrap_or_default();
    let line = format!("INFO {queue}: job {queue}:1, attempt 2 of 4");
    assert!(log.contains(&line), "{log}");
    let followups = out["followups"].as_array().expect("followups");
    assert_eq!(followups.len(), 2, "one per attempt: {out:#}");
    for f in followups {
        assert_eq!(f["state"], "failed", "{out:#}");
        assert_eq!(f["error"], "stop", "{out:#}");
    }

    let args = [
        "--handlers",
        guests::FOREIGN_DIR,
        "dispatch",
        queue,
        r#"{"raise": "boom"}"#,
        "--max-attempts",
        "1",
    ];
    let run = runtime(&cache(queue), &args, None);
    run.expect_code(1);
    let summary = format!("{queue}:1: failed [panic] after 1 attempt: panic: {exception}boom");
    assert!(run.stdout().contains(&summary), "{}", run.stdout());
}

/// `runtime check` under the default config accepts the module and lists
/// the handler world's imports and export.
fn passes_check(queue: &str) {
    let path = module(queue);
    let run = runtime(&cache(queue), &["check", &path], None);
    run.expect_code(0);
    let out = run.stdout();
    for name in [
        "runtime:job/log@0.1.0",
        "runtime:job/dispatch@0.1.0",
        "handle",
        "ok: implements runtime:job/handler@0.1.0",
    ] {
        assert!(out.lines().any(|l| l.trim() == name), "{name}: {out}");
    }
}

/// The tests of one handler: its queue, and how its toolchain names the
/// exception the handler raises (reported as `panic: <exception>boom`).
macro_rules! foreign_handler {
    ($toolchain:ident, $exception:literal) => {
        mod $toolchain {
            const QUEUE: &str = stringify!($toolchain);

            #[test]
            fn runs_every_outcome_at_the_default_concurrency() {
                super::runs_every_outcome(QUEUE, $exception);
            }

            #[test]
            fn runs_in_sync_mode_through_the_binary() {
                super::runs_in_sync_mode(QUEUE, $exception);
            }

            #[test]
            fn passes_runtime_check() {
                super::passes_check(QUEUE);
            }
        }
    };
}

foreign_handler!(python, "ValueError: ");
foreign_handler!(quickjs, "Error: ");
foreign_handler!(spidermonkey, "Error: ");

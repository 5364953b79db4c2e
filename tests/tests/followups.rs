//! Follow-ups bounded beyond one job: a handler that dispatches copies of
//! itself stops at its job tree's budget, on the sync default and on Redis
//! with `runtime worker`; sync `runtime dispatch` stops after its attempt
//! bound and reports what it leaves; guests get clear refusals for keys,
//! delays and retry delays past their limits; and a handler's unique key
//! never holds back an application's.

use std::time::{Duration, Instant};

use runtime::config::Config;
use runtime::job::{DispatchOptions, NewJob, Payload, QueueName};
use runtime::queue::Page;
use runtime::queue::{Clock, SystemClock};
use runtime::worker::WorkerConfig;
use runtime::{JobState, Runtime};
use runtime_tests::workers::Env;
use runtime_tests::{Run, TempDir, guests, runtime};
use serde_json::Value;

/// A generous bound for one command on a loaded 2-core machine.
const BOUND: Duration = Duration::from_secs(120);

/// `runtime --handlers <fixtures> [--config FILE] dispatch ARGS`, in sync
/// mode, timed.
fn sync(cache: &TempDir, config: Option<&str>, args: &[&str]) -> (Run, Duration) {
    let file = cache.path().join("runtime.toml");
    let file = file.display().to_string();
    let mut all = vec!["--handlers", guests::DIR];
    if let Some(text) = config {
        std::fs::write(&file, text).expect("write config");
        all.extend(["--config", &file]);
    }
    all.push("dispatch");
    all.extend_from_slice(args);
    let started = Instant::now();
    let run = runtime(cache.path(), &all, None);
    (run, started.elapsed())
}

/// Every job of a sync `--json` report: the root and its follow-ups.
fn all_jobs(report: &Value) -> Vec<&Value> {
    let followups = report["followups"].as_array().map(Vec::as_slice);
    std::iter::once(report)
        .chain(followups.unwrap_or_default())
        .collect()
}

/// Every log line of every attempt in a sync `--json` report.
fn all_logs(report: &Value) -> String {
    all_jobs(report)
        .iter()
        .flat_map(|job| job["runs"].as_array().cloned().unwrap_or_default())
        .map(|run| run["log"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn a_self_forking_handler_stops_at_its_tree_budget_in_sync_mode() {
    let cache = TempDir::new("followups");
    let (run, took) = sync(
        &cache,
        Some("[queues.fork]\nmax_tree_jobs = 40\n"),
        &[guests::FORK, r#"{"copies":3}"#, "--json"],
    );
    let report = run.expect_code(0).json();
    let jobs = all_jobs(&report);
    assert_eq!(jobs.len(), 40, "the tree holds its budget, root included");
    assert!(jobs.iter().all(|j| j["state"] == "done"));
    assert!(report.get("left").is_none() && report.get("stopped").is_none());
    assert!(
        all_logs(&report).contains(
            "refused: follow-up refused: the job tree of fork:1 already holds 40 jobs, and queue fork allows 40 (max_tree_jobs); nothing was dispatched"
        ),
        "{}",
        all_logs(&report)
    );
    assert!(took < BOUND, "{took:?}");
}

#[test]
fn sync_dispatch_stops_after_its_attempt_bound_and_reports_what_is_left() {
    let cache = TempDir::new("followups");
    // Strict: each job over the default budget of 1000 fails and retries
    // at once, so the attempts run out long before the jobs do.
    let payload = r#"{"copies":3,"strict":true}"#;
    let (run, took) = sync(&cache, None, &[guests::FORK, payload, "--json"]);
    let report = run.expect_code(0).json();
    assert!(took < BOUND, "{took:?}");
    let jobs = all_jobs(&report);
    let attempts: usize = jobs
        .iter()
        .map(|j| j["runs"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(attempts, 1000, "the sync bound on attempts");
    assert_eq!(
        report["stopped"],
        "stopped after 1000 attempts, the most one dispatch runs on the in-memory default"
    );
    let left = report["left"].as_array().expect("jobs left");
    assert!(!left.is_empty());
    assert!(left.iter().all(|j| j["state"] == "pending"), "{left:?}");
    let ran_or_left = jobs.len()
        + left
            .iter()
            .filter(|l| !jobs.iter().any(|j| j["id"] == l["id"]))
            .count();
    assert_eq!(
        ran_or_left, 1000,
        "the default tree budget: 1000 jobs, run or left"
    );
    assert_eq!(report["state"], "done", "the root itself finished");

    let (human, _) = sync(&cache, None, &[guests::FORK, payload]);
    let out = human.expect_code(0).stdout();
    assert!(
        out.contains("stopped after 1000 attempts")
            && out.contains("left, not run: the in-memory queue ends with this command")
            && out.contains("to see them through, dispatch to a queue server"),
        "{}",
        &out[out.len().saturating_sub(2000)..]
    );
}

#[test]
fn sync_dispatch_leaves_delayed_jobs_scheduled_and_says_so() {
    let cache = TempDir::new("followups");
    let delayed = r#"{"copies":1,"queue":"noop","delay_ms":3600000}"#;
    let (run, took) = sync(&cache, None, &[guests::FORK, delayed]);
    let out = run.expect_code(0).stdout();
    assert!(took < BOUND, "not waited for: {took:?}");
    assert!(
        out.contains("1 job left, not run: the in-memory queue ends with this command")
            && out.contains("  noop:1: scheduled, due in 1h")
            && out.contains("to see it through, dispatch to a queue server"),
        "{out}"
    );
    // A handler's own retry delay is not waited for either: sync mode
    // retries at once, until the job's attempts run out.
    let (run, took) = sync(
        &cache,
        None,
        &[guests::FORK, r#"{"retry_delay_ms":60000}"#, "--json"],
    );
    let report = run.expect_code(1).json();
    assert!(took < BOUND, "not waited for: {took:?}");
    assert_eq!(report["state"], "failed", "{report}");
    assert_eq!(report["attempts"], 4);
}

#[test]
fn sync_dispatch_refuses_delay_and_run_at() {
    let cache = TempDir::new("followups");
    // An hour from now: a valid time, refused only for the sync mode.
    let soon = runtime::time::format_millis(SystemClock.now() + 3_600_000);
    for flag in [&["--delay", "30s"][..], &["--run-at", soon.as_str()]] {
        let mut args = vec![guests::NOOP, "{}"];
        args.extend_from_slice(flag);
        let (run, _) = sync(&cache, None, &args);
        run.expect_code(2);
        assert!(
            run.stderr()
                .contains("--delay and --run-at need a queue server")
                && run.stderr().contains("--backend redis://HOST:PORT"),
            "{}",
            run.stderr()
        );
        assert!(run.stdout().is_empty(), "nothing ran: {}", run.stdout());
    }
}

#[test]
fn guests_get_clear_refusals_for_huge_keys_delays_and_retry_delays() {
    let cache = TempDir::new("followups");
    let year_and_more = 400 * 24 * 3600 * 1000_u64;
    let cases = [
        (
            format!(r#"{{"copies":1,"queue":"noop","key_bytes":{}}}"#, 10 << 20),
            "refused: unique key is 10485760 bytes, over the limit of 256 bytes",
        ),
        (
            format!(r#"{{"copies":1,"queue":"noop","delay_ms":{year_and_more}}}"#),
            "refused: delay of 400 days is over the limit of 365 days",
        ),
        (
            r#"{"copies":1,"queue":"noop","key":"@mail:invoice-7"}"#.to_string(),
            "refused: invalid unique key \"@mail:invoice-7\": keys starting with '@' are reserved",
        ),
    ];
    for (payload, expected) in cases {
        let (run, _) = sync(&cache, None, &[guests::FORK, &payload, "--json"]);
        let report = run.expect_code(0).json();
        assert!(
            all_logs(&report).contains(expected),
            "{}",
            all_logs(&report)
        );
        assert_eq!(all_jobs(&report).len(), 1, "nothing was dispatched");
    }
    let payload = format!(r#"{{"retry_delay_ms":{year_and_more}}}"#);
    let (run, _) = sync(&cache, None, &[guests::FORK, &payload, "--json"]);
    let report = run.expect_code(1).json();
    assert_eq!(report["state"], "failed");
    assert_eq!(
        report["error"],
        "retry refused: the handler asked to run again in 400 days, over the limit of 365 days; it said: later"
    );
}

#[test]
fn a_self_forking_handler_stays_within_its_tree_budget_on_redis() {
    let env = Env::new();
    let root = env.dispatch(guests::FORK, r#"{"copies":3}"#, &[]);
    assert_eq!(root, "fork:1");
    let started = Instant::now();
    let mut w = env.worker(&[guests::FORK, "--drain", "--concurrency", "8"]);
    assert_eq!(w.wait(BOUND), 0, "{}", w.log());
    assert!(started.elapsed() < BOUND);
    let c = env.counts(guests::FORK);
    assert_eq!(
        (
            c["done"].as_u64(),
            c["pending"].as_u64(),
            c["scheduled"].as_u64(),
            c["failed"].as_u64()
        ),
        (Some(1000), Some(0), Some(0), Some(0)),
        "the default budget: 1000 jobs in the tree, root included"
    );
    let tree = env
        .redis
        .command(&["EXISTS", "runtime:{fork}:tree:1"])
        .expect("redis answers");
    assert_eq!(tree, ":0", "the tree's count is dropped once it is done");
}

#[test]
fn a_handler_cannot_hold_back_an_applications_unique_key_on_redis() {
    let env = Env::new();
    let year = 364 * 24 * 3600 * 1000_u64;
    let hostile = format!(r#"{{"copies":1,"queue":"mail","key":"invoice-7","delay_ms":{year}}}"#);
    env.dispatch(guests::FORK, &hostile, &[]);
    let mut w = env.worker(&[guests::FORK, "--drain"]);
    assert_eq!(w.wait(BOUND), 0, "{}", w.log());
    let held = env.run(&["jobs", "list", "mail", "--state", "scheduled", "--json"]);
    let held = held.expect_code(0).json();
    assert_eq!(held[0]["id"], "mail:1");
    assert_eq!(held[0]["unique_key"], "@fork:invoice-7");
    assert_eq!(held[0]["lineage"]["root"], "fork:1");
    let app = env.dispatch("mail", "{}", &["--unique-key", "invoice-7"]);
    assert_eq!(app, "mail:2", "the application's job is enqueued");
    let again = env.dispatch("mail", "{}", &["--unique-key", "invoice-7"]);
    assert_eq!(again, app, "and its key deduplicates as before");
    let forged = env.run(&["dispatch", "mail", "{}", "--unique-key", "@fork:invoice-7"]);
    forged.expect_code(2);
    assert!(
        forged
            .stderr()
            .contains("reserved for the keys handlers give"),
        "{}",
        forged.stderr()
    );
    assert_eq!(env.count("mail", "pending"), 1);
}

#[tokio::test]
async fn a_handler_cannot_hold_back_an_applications_unique_key_in_memory() {
    let cache = TempDir::new("followups");
    let config = Config::parse(&format!(
        "cache_dir = {:?}\n",
        cache.path().display().to_string()
    ))
    .expect("valid config");
    let rt = Runtime::in_memory(guests::DIR.into(), config).expect("runtime");
    let q = |name: &str| QueueName::new(name).expect("valid queue");
    let year = 364 * 24 * 3600 * 1000_u64;
    let hostile = format!(r#"{{"copies":1,"queue":"mail","key":"invoice-7","delay_ms":{year}}}"#);
    let payload = Payload::new(hostile).expect("valid payload");
    rt.dispatch(NewJob::new(q(guests::FORK), payload))
        .await
        .expect("dispatch");
    let worker = rt.worker(WorkerConfig {
        queues: vec![q(guests::FORK)],
        drain: true,
        ..Default::default()
    });
    let stats = worker.run(std::future::pending()).await.expect("worker");
    assert_eq!(stats.done, 1);
    let held = rt
        .backend()
        .jobs
        .list(&q("mail"), JobState::Scheduled, Page::default())
        .await
        .expect("list");
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].unique_key.as_deref(), Some("@fork:invoice-7"));
    let keyed = DispatchOptions {
        unique_key: Some("invoice-7".into()),
        ..Default::default()
    };
    let app = rt
        .dispatch(NewJob {
            queue: q("mail"),
            payload: Payload::new("{}").expect("valid payload"),
            options: keyed,
        })
        .await
        .expect("dispatch");
    assert_ne!(app, held[0].id);
    let record = rt
        .backend()
        .jobs
        .get(&app)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(record.state, JobState::Pending);
}

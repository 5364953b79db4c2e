//! Limits that must hold for any component, not only for the shapes the
//! Rust SDK emits: several memories, tables, many core instances, and more
//! jobs than the pool has places. Fixtures are hand-written components
//! (`runtime_tests::components`), run through the library on the
//! in-memory backend; normal jobs run beside the hostile ones and must
//! succeed.

use runtime::job::{FailureKind, QueueName};
use runtime::queue::Ack;
use runtime::sandbox::RunOutcome;
use runtime::worker::JobEvent;
use runtime::{JobState, Runtime};
use runtime_tests::library::{self, dispatch_once};
use runtime_tests::{TempDir, components};

/// A runtime whose queues are the given hand-written components (queue
/// name, component bytes), plus `hello` and `nap`, under `config` (TOML
/// added to the file).
struct Env {
    rt: Runtime,
    _dir: TempDir,
}

fn env(config: &str, modules: &[(&str, Vec<u8>)]) -> Env {
    let dir = TempDir::new("containment");
    let rt = library::runtime_with(&dir, config, modules);
    Env { rt, _dir: dir }
}

fn q(name: &str) -> QueueName {
    QueueName::new(name).expect("valid queue")
}

fn outcome(event: &JobEvent) -> &RunOutcome {
    &event.report.as_ref().expect("ran").outcome
}

/// The one event of `queue`, which must have crashed with `kind`; returns
/// its reason.
fn crashed<'a>(events: &'a [JobEvent], queue: &str, kind: FailureKind) -> &'a str {
    let mine: Vec<_> = events
        .iter()
        .filter(|e| e.job.id.queue().as_str() == queue)
        .collect();
    assert_eq!(mine.len(), 1, "one attempt of {queue}");
    assert_eq!(mine[0].ack, Ack::Applied(Some(JobState::Failed)));
    match outcome(mine[0]) {
        RunOutcome::Crashed { kind: k, reason } => {
            assert_eq!(*k, kind, "{queue}: {reason}");
            reason
        }
        other => panic!("{queue} should have crashed with {kind}: {other:?}"),
    }
}

/// Every `hello` job ran once and was done.
fn hellos_done(events: &[JobEvent], expected: usize) {
    let hellos: Vec<_> = events
        .iter()
        .filter(|e| e.job.id.queue().as_str() == "hello")
        .collect();
    assert_eq!(hellos.len(), expected, "every hello job ran once");
    for e in hellos {
        assert_eq!(outcome(e), &RunOutcome::Done, "{}", e.job.id);
        assert_eq!(e.ack, Ack::Applied(None));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_linear_memories_of_a_job_count_together() {
    // Three memories of 6 MiB each: every one within 16 MiB, 18 MiB in all.
    let over = components::handler(&components::memories(3, 6));
    // Two: 12 MiB in all, within the limit.
    let under = components::handler(&components::memories(2, 6));
    let env = env(
        "[defaults]\nmemory_mib = 16",
        &[("three", over), ("two", under)],
    );
    dispatch_once(&env.rt, "three", "{}").await;
    dispatch_once(&env.rt, "two", "{}").await;
    dispatch_once(&env.rt, "hello", r#"{"name":"a"}"#).await;
    let events = library::drain(&env.rt, 2).await;
    let reason = crashed(&events, "three", FailureKind::Memory);
    assert_eq!(reason, "memory limit 16 MiB exceeded");
    let two: Vec<_> = events
        .iter()
        .filter(|e| e.job.id.queue().as_str() == "two")
        .collect();
    assert_eq!(outcome(two[0]), &RunOutcome::Done);
    hellos_done(&events, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_elements_count_toward_the_memory_limit() {
    // Four tables of 100,000 elements: 3.2 MB of a 4 MiB limit, then a
    // memory of 1 MiB on top.
    let tables = components::tables(1, 4, 100_000);
    let over = components::handler(&format!("{tables}{}", components::memories(1, 1)));
    let under = components::handler(&tables);
    let env = env(
        "[defaults]\nmemory_mib = 4",
        &[("tables-over", over), ("tables-under", under)],
    );
    dispatch_once(&env.rt, "tables-over", "{}").await;
    dispatch_once(&env.rt, "tables-under", "{}").await;
    dispatch_once(&env.rt, "hello", r#"{"name":"a"}"#).await;
    let events = library::drain(&env.rt, 2).await;
    let reason = crashed(&events, "tables-over", FailureKind::Memory);
    assert_eq!(reason, "memory limit 4 MiB exceeded");
    let under: Vec<_> = events
        .iter()
        .filter(|e| e.job.id.queue().as_str() == "tables-under")
        .collect();
    assert_eq!(outcome(under[0]), &RunOutcome::Done);
    hellos_done(&events, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_over_the_per_job_ceilings_is_refused_when_it_loads() {
    let cases = [
        ("instances", components::core_instances(40), "core"),
        ("memories", components::memories(4, 1), "memor"),
        ("tables", components::tables(9, 1, 10), "table"),
    ];
    let modules: Vec<_> = cases
        .iter()
        .map(|(q, extra, _)| (*q, components::handler(extra)))
        .collect();
    let env = env("", &modules);
    for (queue, _, what) in cases {
        let error = env
            .rt
            .registry()
            .handler(&q(queue))
            .expect_err("over a ceiling")
            .to_string();
        assert!(error.contains(what), "{queue}: {error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_at_every_ceiling_cannot_starve_the_jobs_beside_them() {
    // Each hostile instance takes every core instance, memory and table a
    // job may have (the handler's own instance and memory included).
    let greedy = components::handler(&format!(
        "{}{}{}",
        components::core_instances(27),
        components::memories(3, 1),
        components::tables(1, 8, 10),
    ));
    let env = env("[sandbox]\nmax_instances = 4", &[("greedy", greedy)]);
    for i in 0..8 {
        dispatch_once(&env.rt, "greedy", "{}").await;
        dispatch_once(&env.rt, "hello", &format!(r#"{{"name":"n{i}"}}"#)).await;
    }
    let events = library::drain(&env.rt, 4).await;
    assert_eq!(events.len(), 16, "every job ran once");
    for e in &events {
        assert_eq!(outcome(e), &RunOutcome::Done, "{}", e.job.id);
        assert_eq!(e.job.attempts, 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_jobs_in_flight_than_pool_places_wait_and_are_not_charged() {
    let env = env("[sandbox]\nmax_instances = 2", &[]);
    for _ in 0..12 {
        dispatch_once(&env.rt, "nap", r#"{"ms":30}"#).await;
    }
    let events = library::drain(&env.rt, 8).await;
    assert_eq!(events.len(), 12);
    for e in &events {
        assert_eq!(outcome(e), &RunOutcome::Done, "{}", e.job.id);
        assert_eq!(e.job.attempts, 1, "{} was charged for waiting", e.job.id);
    }
    let stats = env.rt.registry().sandbox().stats();
    assert_eq!(stats.instances_live, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_holds_inside_long_host_calls() {
    let env = env(
        "[defaults]\ntimeout_ms = 200\nmemory_mib = 16",
        &[
            // As much as one call may ask for, again and again.
            ("random", components::random_loop(1 << 20)),
            // More than one call may ask for: refused at once.
            ("random-huge", components::random_loop(1 << 30)),
        ],
    );
    dispatch_once(&env.rt, "random", "{}").await;
    dispatch_once(&env.rt, "random-huge", "{}").await;
    dispatch_once(&env.rt, "hello", r#"{"name":"a"}"#).await;
    let events = library::drain(&env.rt, 3).await;
    let reason = crashed(&events, "random", FailureKind::Timeout);
    assert_eq!(reason, "timeout after 200ms");
    let random = events
        .iter()
        .find(|e| e.job.id.queue().as_str() == "random")
        .and_then(|e| e.report.as_ref())
        .expect("ran");
    eprintln!(
        "a loop of 1 MiB random calls ended after {:?}",
        random.elapsed
    );
    // Measured 1 to 13 ms past the deadline on a loaded machine; with
    // calls of 64 MiB (wasmtime's default bound) it was up to 150 ms.
    assert!(
        random.elapsed.as_millis() < 200 + 100,
        "ended {:?} after it started",
        random.elapsed
    );
    let huge = crashed(&events, "random-huge", FailureKind::Host);
    assert!(
        huge.starts_with("host call failed: ") && huge.contains("exceeds limit"),
        "{huge}"
    );
    assert!(!huge.contains('\n'), "the cause, not a backtrace: {huge}");
    hellos_done(&events, 1);
}

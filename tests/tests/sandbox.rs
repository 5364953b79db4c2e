//! Guests run through the library: the in-memory backend, the sandbox and
//! the worker, as an embedding application would. Each hostile fixture
//! must end only its own job, with its exact reason, and a normal job on
//! the same runtime must succeed right after.

use std::sync::Arc;
use std::time::{Duration, Instant};

use runtime::config::Config;
use runtime::job::{DispatchOptions, JobId, JobRecord, MaxAttempts, NewJob, Payload, QueueName};
use runtime::queue::{Ack, Page};
use runtime::sandbox::RunOutcome;
use runtime::worker::{JobEvent, WorkerConfig, WorkerStats};
use runtime::{JobQueue, JobState, Runtime};
use runtime_tests::{TempDir, guests};

struct Env {
    rt: Runtime,
    _cache: TempDir,
}

/// A runtime over the fixtures with short limits, so hostile jobs end fast.
fn env(extra: &str) -> Env {
    let cache = TempDir::new("sandbox");
    let text = format!(
        "cache_dir = {:?}\n[defaults]\ntimeout_ms = 200\nmemory_mib = 16\n{extra}\n[queues.hello]\nmodule = {:?}\n",
        cache.path().display().to_string(),
        format!("{}/hello_job.wasm", guests::JOBS_DIR),
    );
    let config = Config::parse(&text).expect("valid test config");
    let rt = Runtime::in_memory(guests::DIR.into(), config).expect("runtime");
    Env { rt, _cache: cache }
}

fn q(name: &str) -> QueueName {
    QueueName::new(name).expect("valid queue")
}

async fn dispatch(rt: &Runtime, queue: &str, payload: &str, max_attempts: u32) -> JobId {
    let job = NewJob {
        queue: q(queue),
        payload: Payload::new(payload).expect("valid payload"),
        options: DispatchOptions {
            max_attempts: MaxAttempts::new(max_attempts).expect("valid attempts"),
            ..Default::default()
        },
    };
    rt.dispatch(job).await.expect("dispatch")
}

/// Runs everything dispatched until nothing is left, retrying at once.
async fn drain(rt: &Runtime, concurrency: usize) -> (WorkerStats, Vec<JobEvent>) {
    drain_queues(rt, concurrency, Vec::new()).await
}

/// Like [`drain`], for the given queues only.
async fn drain_queues(
    rt: &Runtime,
    concurrency: usize,
    queues: Vec<QueueName>,
) -> (WorkerStats, Vec<JobEvent>) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let worker = rt
        .worker(WorkerConfig {
            queues,
            concurrency,
            drain: true,
            retry_at_once: true,
            ..Default::default()
        })
        .with_events(tx);
    let stats = worker.run(std::future::pending()).await.expect("worker");
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    (stats, events)
}

fn reason(event: &JobEvent) -> String {
    match &event.report.as_ref().expect("ran").outcome {
        RunOutcome::Done => "done".into(),
        RunOutcome::Retry { reason, .. }
        | RunOutcome::Fail { reason }
        | RunOutcome::Crashed { reason, .. } => reason.clone(),
    }
}

/// Runs one attempt of `queue` and then a hello job on the same runtime;
/// returns the hostile job's event (and asserts hello succeeded).
async fn contained(env: &Env, queue: &str, payload: &str) -> JobEvent {
    let id = dispatch(&env.rt, queue, payload, 1).await;
    let (_, mut events) = drain_queues(&env.rt, 2, vec![q(queue)]).await;
    assert_eq!(events.len(), 1, "one attempt of {queue}");
    let event = events.remove(0);
    assert_eq!(event.job.id, id);
    assert_eq!(
        event.ack,
        Ack::Applied(Some(JobState::Failed)),
        "{queue}: {}",
        reason(&event)
    );
    let record = env
        .rt
        .backend()
        .jobs
        .get(&id)
        .await
        .expect("get")
        .expect("failed jobs are kept");
    assert_eq!(record.error.as_deref(), Some(reason(&event).as_str()));
    let hello = dispatch(&env.rt, "hello", r#"{"name":"after"}"#, 1).await;
    let (_, events) = drain_queues(&env.rt, 2, vec![q("hello")]).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].job.id, hello);
    assert_eq!(
        events[0].ack,
        Ack::Applied(None),
        "hello after {queue}: {}",
        reason(&events[0])
    );
    assert!(
        events[0]
            .report
            .as_ref()
            .expect("ran")
            .log
            .contains("Hello, after!")
    );
    event
}

#[tokio::test]
async fn tight_loop_times_out() {
    let env = env("");
    let started = Instant::now();
    let e = contained(&env, guests::SPIN, "{}").await;
    assert_eq!(reason(&e), "timeout after 200ms");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn loop_calling_only_an_import_times_out() {
    let env = env("");
    assert_eq!(
        reason(&contained(&env, guests::SPIN_IMPORT, "{}").await),
        "timeout after 200ms"
    );
}

#[tokio::test]
async fn sleeping_in_a_wasi_call_times_out() {
    let env = env("");
    let e = contained(&env, guests::SLEEP, "{}").await;
    assert_eq!(reason(&e), "timeout after 200ms");
    let elapsed = e.report.as_ref().expect("ran").elapsed;
    assert!(
        elapsed < Duration::from_secs(2),
        "a 200 ms timeout took {elapsed:?}"
    );
}

#[tokio::test]
async fn infinite_recursion_overflows_the_stack() {
    let env = env("");
    assert_eq!(
        reason(&contained(&env, guests::RECURSE, "{}").await),
        "stack overflow"
    );
}

#[tokio::test]
async fn memory_bomb_hits_the_memory_limit() {
    let env = env("");
    let e = contained(&env, guests::MEMORY_BOMB, "{}").await;
    assert_eq!(reason(&e), "memory limit 16 MiB exceeded");
}

#[tokio::test]
async fn panic_message_becomes_the_reason() {
    let env = env("");
    let e = contained(&env, guests::PANIC, r#"{"what":"the sky is falling"}"#).await;
    assert_eq!(reason(&e), "panic: the sky is falling");
    let log = &e.report.as_ref().expect("ran").log;
    assert!(log.contains("ERROR panicked at"), "{log}");
}

#[tokio::test]
async fn explicit_trap_is_named() {
    let env = env("");
    assert_eq!(
        reason(&contained(&env, guests::TRAP, "{}").await),
        "trap: unreachable"
    );
}

#[tokio::test]
async fn endless_stdout_hits_the_output_limit() {
    let env = env("");
    let e = contained(&env, guests::HUGE_STDOUT, "{}").await;
    assert_eq!(reason(&e), "output limit 64 KiB exceeded");
    let log = &e.report.as_ref().expect("ran").log;
    assert!(
        log.len() <= 64 * 1024 && log.starts_with("xxxx"),
        "{} bytes",
        log.len()
    );
}

#[tokio::test]
async fn huge_reason_is_truncated() {
    let env = env("");
    let r = reason(&contained(&env, guests::HUGE_RESULT, "{}").await);
    assert!(r.starts_with(&"y".repeat(2048)), "{}", &r[..40]);
    assert!(
        r.ends_with(&format!("... ({} more bytes)", (10 << 20) - 2048)),
        "{}",
        &r[2048..]
    );
}

#[tokio::test]
async fn dispatch_flood_hits_the_dispatch_limit() {
    let env = env("");
    let e = contained(&env, guests::DISPATCH_FLOOD, "{}").await;
    assert_eq!(reason(&e), "dispatch limit 100 per job exceeded");
    let target = env
        .rt
        .backend()
        .jobs
        .counts(&q("flood-target"))
        .await
        .expect("counts");
    assert_eq!(
        target.pending, 100,
        "the dispatches within the limit were enqueued"
    );
}

#[tokio::test]
async fn files_are_not_reachable() {
    let env = env("");
    let r = reason(&contained(&env, guests::READ_FILE, "{}").await);
    assert!(r.starts_with("denied: "), "{r}");
}

#[tokio::test]
async fn environment_is_empty() {
    let env = env("");
    let r = reason(&contained(&env, guests::READ_ENV, "{}").await);
    assert_eq!(r, "denied: environment variable not found; vars []");
}

#[tokio::test]
async fn sockets_are_refused() {
    let env = env("");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    let r = reason(
        &contained(
            &env,
            guests::OPEN_SOCKET,
            &format!(r#"{{"addr":"{addr}"}}"#),
        )
        .await,
    );
    assert!(r.starts_with("denied: "), "{r}");
    assert!(
        listener.accept().is_err(),
        "no connection reached the listener"
    );
}

#[tokio::test]
async fn nothing_survives_from_one_job_to_the_next() {
    let env = env("");
    for i in 0..5 {
        dispatch(&env.rt, guests::LEAK, &format!(r#"{{"secret":"s{i}"}}"#), 1).await;
    }
    let (stats, events) = drain(&env.rt, 2).await;
    let reasons: Vec<_> = events.iter().map(reason).collect();
    assert_eq!(stats.done, 5, "{reasons:?}");
}

#[tokio::test]
async fn errors_retry_until_done() {
    let env = env("");
    let id = dispatch(&env.rt, guests::OUTCOMES, r#"{"succeed_on_attempt":3}"#, 4).await;
    let (stats, events) = drain(&env.rt, 1).await;
    let seen: Vec<_> = events.iter().map(|e| (e.job.attempts, reason(e))).collect();
    assert_eq!(
        seen,
        vec![
            (1, "not yet (attempt 1)".to_string()),
            (2, "not yet (attempt 2)".to_string()),
            (3, "done".to_string())
        ]
    );
    assert_eq!((stats.retried, stats.done), (2, 1));
    assert_eq!(
        env.rt.backend().jobs.get(&id).await.expect("get"),
        None,
        "done jobs are removed"
    );
}

#[tokio::test]
async fn explicit_fail_is_final() {
    let env = env("");
    let id = dispatch(&env.rt, guests::OUTCOMES, r#"{"finally":"bad input"}"#, 4).await;
    let (stats, _) = drain(&env.rt, 1).await;
    assert_eq!((stats.failed, stats.retried), (1, 0));
    let rec = stored(&env.rt, &id).await;
    assert_eq!((rec.state, rec.attempts), (JobState::Failed, 1));
    assert_eq!(rec.error.as_deref(), Some("bad input"));
}

#[tokio::test]
async fn crashes_are_retried_then_fail_with_history() {
    let env = env("");
    let id = dispatch(&env.rt, guests::PANIC, "{}", 3).await;
    let (stats, _) = drain(&env.rt, 1).await;
    assert_eq!((stats.retried, stats.failed), (2, 1));
    let rec = stored(&env.rt, &id).await;
    assert_eq!(rec.state, JobState::Failed);
    assert_eq!(rec.history.len(), 3);
    assert!(
        rec.history
            .iter()
            .all(|a| a.outcome.as_deref() == Some("panic: boom"))
    );
    assert!(
        rec.log.contains("panicked at"),
        "the last attempt's log is kept"
    );
}

#[tokio::test]
async fn retries_wait_for_the_backoff_or_the_handlers_delay() {
    let env = env("backoff_base_ms = 60000\nbackoff_cap_ms = 60000");
    let backoff = dispatch(&env.rt, guests::OUTCOMES, r#"{"succeed_on_attempt":2}"#, 4).await;
    let own = dispatch(
        &env.rt,
        guests::OUTCOMES,
        r#"{"succeed_on_attempt":2,"retry_after_ms":5000}"#,
        4,
    )
    .await;
    let worker = env.rt.worker(WorkerConfig {
        max_jobs: Some(2),
        ..Default::default()
    });
    let before = now_ms();
    let stats = worker.run(std::future::pending()).await.expect("worker");
    assert_eq!(stats.retried, 2);
    let rec = stored(&env.rt, &backoff).await;
    assert_eq!(rec.state, JobState::Scheduled);
    let wait = rec.run_at - before;
    assert!((30_000..=61_000).contains(&wait), "backoff of {wait} ms");
    let rec = stored(&env.rt, &own).await;
    let wait = rec.run_at - before;
    assert!(
        (5_000..=6_000).contains(&wait),
        "handler's own delay of {wait} ms"
    );
}

fn now_ms() -> u64 {
    use runtime::queue::Clock;
    runtime::queue::SystemClock.now()
}

#[tokio::test]
async fn follow_up_jobs_are_dispatched_and_run() {
    let env = env("");
    let payload = r#"{"dispatch":[{"queue":"hello","payload":{"name":"follow-up"}}]}"#;
    dispatch(&env.rt, guests::OUTCOMES, payload, 1).await;
    let (stats, events) = drain(&env.rt, 1).await;
    assert_eq!(stats.done, 2);
    let hello = events
        .iter()
        .find(|e| e.job.id.queue().as_str() == "hello")
        .expect("ran");
    assert!(
        hello
            .report
            .as_ref()
            .expect("ran")
            .log
            .contains("Hello, follow-up!")
    );
    let parent = events
        .iter()
        .find(|e| e.job.id.queue().as_str() == "outcomes")
        .expect("ran");
    let log = &parent.report.as_ref().expect("ran").log;
    assert!(
        log.contains(&format!("dispatched {}", hello.job.id)),
        "{log}"
    );
}

#[tokio::test]
async fn hostile_jobs_do_not_hold_up_good_ones() {
    let env = env("");
    for _ in 0..6 {
        dispatch(&env.rt, guests::SPIN, "{}", 1).await;
        dispatch(&env.rt, guests::SLEEP, "{}", 1).await;
        dispatch(&env.rt, "hello", r#"{"name":"x"}"#, 1).await;
    }
    let started = Instant::now();
    let (stats, _) = drain(&env.rt, 4).await;
    assert_eq!((stats.done, stats.failed), (6, 12));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    let counts = env
        .rt
        .backend()
        .jobs
        .counts(&q("hello"))
        .await
        .expect("counts");
    assert_eq!(counts.done, 6);
}

#[tokio::test]
async fn shutdown_hands_unfinished_jobs_back_without_counting() {
    let env = env("[queues.sleep]\ntimeout_ms = 60000");
    let id = dispatch(&env.rt, guests::SLEEP, "{}", 4).await;
    let worker = env.rt.worker(WorkerConfig {
        grace: Duration::from_millis(100),
        ..Default::default()
    });
    let backend: Arc<dyn JobQueue> = env.rt.backend().jobs.clone();
    let shutdown = {
        let backend = backend.clone();
        let id = id.clone();
        async move {
            // Stop once the job is running.
            loop {
                let rec = backend.get(&id).await.expect("get").expect("exists");
                if rec.state == JobState::Running {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    let started = Instant::now();
    let stats = worker.run(shutdown).await.expect("worker");
    assert_eq!(stats.released, 1);
    assert!(started.elapsed() < Duration::from_secs(10));
    let rec = backend.get(&id).await.expect("get").expect("exists");
    assert_eq!((rec.state, rec.attempts), (JobState::Pending, 0));
}

#[tokio::test]
async fn max_jobs_stops_after_that_many() {
    let env = env("");
    for i in 0..5 {
        dispatch(&env.rt, "hello", &format!(r#"{{"name":"n{i}"}}"#), 1).await;
    }
    let worker = env.rt.worker(WorkerConfig {
        queues: vec![q("hello")],
        max_jobs: Some(2),
        ..Default::default()
    });
    let stats = worker.run(std::future::pending()).await.expect("worker");
    assert_eq!((stats.claimed, stats.done), (2, 2));
    let pending = env
        .rt
        .backend()
        .jobs
        .list(&q("hello"), JobState::Pending, Page::default())
        .await;
    assert_eq!(pending.expect("list").len(), 3);
}

#[tokio::test]
async fn a_missing_handler_fails_the_job_with_where_it_looked() {
    let env = env("");
    let id = dispatch(&env.rt, "no-such-queue", "{}", 1).await;
    let (_, events) = drain(&env.rt, 1).await;
    let r = reason(&events[0]);
    assert!(
        r.starts_with("no handler for queue no-such-queue: looked for "),
        "{r}"
    );
    assert!(r.contains("no_such_queue_job.wasm"), "{r}");
    let rec = stored(&env.rt, &id).await;
    assert_eq!(rec.state, JobState::Failed);
}

#[tokio::test]
async fn welcome_email_renders_and_queues_its_delivery() {
    let module = format!("{}/welcome_email_job.wasm", guests::JOBS_DIR);
    let env = env(&format!("[queues.welcome-email]\nmodule = {module:?}"));
    let payload = r#"{"to":"ada@example.com","name":"<Ada>","product":"Acme","verify_url":"https://acme.test/v?t=1&u=2"}"#;
    dispatch(&env.rt, "welcome-email", payload, 1).await;
    let (stats, _) = drain_queues(&env.rt, 1, vec![q("welcome-email")]).await;
    assert_eq!(stats.done, 1);
    let queued = env
        .rt
        .backend()
        .jobs
        .list(&q("send-email"), JobState::Pending, Page::default())
        .await;
    let queued = queued.expect("list");
    assert_eq!(queued.len(), 1);
    assert_eq!(
        queued[0].unique_key.as_deref(),
        Some("@welcome-email:welcome:ada@example.com"),
        "a handler's key is scoped to its queue"
    );
    let email: serde_json::Value = serde_json::from_str(queued[0].payload.as_str()).expect("json");
    assert_eq!(email["to"], "ada@example.com");
    assert_eq!(email["subject"], "Welcome to Acme, <Ada>!");
    let html = email["html"].as_str().expect("html");
    assert!(
        html.contains("Hi &lt;Ada&gt;,"),
        "names are escaped in HTML: {html}"
    );
    assert!(
        html.contains("https:&#x2f;&#x2f;acme.test") || html.contains("https://acme.test"),
        "{html}"
    );
    assert!(email["text"].as_str().expect("text").contains("Hi <Ada>,"));

    dispatch(
        &env.rt,
        "welcome-email",
        r#"{"to":"nobody","name":"x","product":"y"}"#,
        4,
    )
    .await;
    let (stats, events) = drain_queues(&env.rt, 1, vec![q("welcome-email")]).await;
    assert_eq!(stats.failed, 1, "a bad address fails at once");
    assert_eq!(reason(&events[0]), "not an email address: \"nobody\"");
}

/// The record of a job that is kept (not done).
async fn stored(rt: &Runtime, id: &JobId) -> JobRecord {
    rt.backend().jobs.get(id).await.expect("get").expect("kept")
}

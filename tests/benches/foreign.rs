//! What a handler from another toolchain costs per job (not a test):
//! `cargo bench -p runtime-tests --bench foreign`, after scripts/foreign.sh.
//!
//! The Python, QuickJS and SpiderMonkey handlers of tests/foreign/ beside
//! the Rust handler with the same logic (tests/guests/outcomes-job), each
//! given the same ~100-byte JSON order, which it parses before returning
//! done. For each:
//!
//! - its first load (compiled into an empty cache), then a load from the
//!   cache, as a restarted worker does;
//! - (a) one job at a time on the warm worker: a fresh instance and the
//!   call, p50 and p99;
//! - (b) N jobs through a worker at its default concurrency: jobs/s, and
//!   p50 and p99 of each attempt's run time (instantiation included).
//!
//! `BENCH_JOBS` sets N (default 2000).

use std::path::Path;
use std::time::{Duration, Instant};

use runtime::config::Config;
use runtime::job::{NewJob, Payload, QueueName};
use runtime::sandbox::{Capabilities, RunOutcome};
use runtime::{Runtime, WorkerConfig};
use runtime_tests::{TempDir, guests};

const ORDER: &str = r#"{"id":42,"customer":"ada@example.com","items":[{"sku":"A-1","qty":2},{"sku":"B-7","qty":1}]}"#;

fn q(name: &str) -> QueueName {
    QueueName::new(name).expect("queue")
}

/// A runtime over `dir` with the default config but for its cache.
fn runtime_over(dir: &str, cache: &Path) -> Runtime {
    let text = format!("cache_dir = {:?}\n", cache.display().to_string());
    let config = Config::parse(&text).expect("config");
    Runtime::in_memory(dir.into(), config).expect("runtime")
}

/// Seconds to load `queue`'s handler on a fresh runtime over `cache`.
fn load(dir: &str, queue: &str, cache: &Path) -> f64 {
    let rt = runtime_over(dir, cache);
    let started = Instant::now();
    rt.registry().handler(&q(queue)).expect("handler loads");
    started.elapsed().as_secs_f64()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// (a): `jobs` attempts one after the other, each in a fresh instance;
/// milliseconds at p50 and p99.
fn one_at_a_time(rt: &Runtime, queue: &str, jobs: usize) -> (f64, f64) {
    let handler = rt.registry().handler(&q(queue)).expect("handler");
    let record = runtime_tests::running_record(queue, ORDER);
    let sandbox = rt.registry().sandbox().clone();
    let tokio = runtime_tests::tokio_runtime(2);
    tokio.block_on(async {
        // Warm up: fault in the pool's slots and the handler's pages.
        for _ in 0..jobs.min(50) {
            sandbox
                .run(&handler, &record, Capabilities::default())
                .await;
        }
        let mut times = Vec::with_capacity(jobs);
        for _ in 0..jobs {
            let started = Instant::now();
            let report = sandbox
                .run(&handler, &record, Capabilities::default())
                .await;
            times.push(started.elapsed());
            assert_eq!(report.outcome, RunOutcome::Done, "{}", report.log);
        }
        times.sort();
        (percentile(&times, 0.5), percentile(&times, 0.99))
    })
}

/// (b): dispatch `jobs`, drain them with a worker at its default
/// concurrency; jobs/s and the attempts' run time at p50 and p99, ms.
fn through_a_worker(rt: &Runtime, queue: &str, jobs: usize) -> (f64, f64, f64) {
    let tokio = runtime_tests::tokio_runtime(2);
    tokio.block_on(async {
        let batch = (0..jobs)
            .map(|_| NewJob::new(q(queue), Payload::new(ORDER).expect("payload")))
            .collect();
        let started = Instant::now();
        rt.backend()
            .jobs
            .dispatch_many(batch)
            .await
            .expect("dispatch");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let worker = rt
            .worker(WorkerConfig {
                queues: vec![q(queue)],
                drain: true,
                ..Default::default()
            })
            .with_events(tx);
        let stats = worker.run(std::future::pending()).await.expect("worker");
        let rate = jobs as f64 / started.elapsed().as_secs_f64();
        assert_eq!(stats.done, jobs as u64, "{stats:?}");
        let mut times = Vec::with_capacity(jobs);
        while let Ok(e) = rx.try_recv() {
            times.extend(e.report.map(|r| r.elapsed));
        }
        times.sort();
        (rate, percentile(&times, 0.5), percentile(&times, 0.99))
    })
}

fn main() {
    if !runtime_tests::bench_runs() {
        return;
    }
    let jobs = runtime_tests::job_count("BENCH_JOBS", 2_000);
    let handlers = [
        ("rust", guests::DIR, guests::OUTCOMES),
        ("python", guests::FOREIGN_DIR, "python"),
        ("quickjs", guests::FOREIGN_DIR, "quickjs"),
        ("spidermonkey", guests::FOREIGN_DIR, "spidermonkey"),
    ];
    for (_, dir, queue) in &handlers {
        let module = format!("{dir}/{}_job.wasm", queue.replace('-', "_"));
        if !Path::new(&module).is_file() {
            eprintln!("{module} is missing: run scripts/foreign.sh first");
            std::process::exit(2);
        }
    }
    println!("per job, fresh instance each; default config; {jobs} jobs");
    println!(
        "    handler        compile s   cached load ms   (a) alone p50 / p99 ms   (b) default concurrency jobs/s   p50 / p99 ms"
    );
    for (name, dir, queue) in handlers {
        let cache = TempDir::new("bench-foreign");
        let compile = load(dir, queue, cache.path());
        let cached = load(dir, queue, cache.path()) * 1000.0;
        let rt = runtime_over(dir, cache.path());
        let (p50, p99) = one_at_a_time(&rt, queue, jobs);
        let (rate, w50, w99) = through_a_worker(&rt, queue, jobs);
        println!(
            "    {name:<12} {compile:>11.2} {cached:>16.1}   {p50:>14.2} / {p99:<6.2}   {rate:>30.0}   {w50:>5.2} / {w99:.2}"
        );
    }
}

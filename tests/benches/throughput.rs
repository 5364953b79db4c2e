//! Benchmarks (not tests): `cargo bench -p runtime-tests`.
//!
//! (a) The sandbox's cost per job: a fresh instance of a trivial handler
//!     (parse a ~100-byte order, sum it), beside native Rust doing the same
//!     work, on 1 and 2 threads.
//! (b) In-memory end-to-end throughput: dispatch N jobs, drain them with a
//!     worker (claim, fresh instance, call, ack) across both cores, beside
//!     the queue alone (claim and ack, no handler) as the baseline.
//!
//! (c) What each pool slot keeps resident between jobs: the cost per job
//!     of (a) on 2 threads with the default 1 MiB of linear memory kept
//!     per slot, beside 4 MiB (more speed for working sets between the
//!     two, at up to four times the idle memory a worker keeps).
//!
//! `BENCH_JOBS` sets N (default 100000). Figures vary with machine load:
//! compare the ratios, which are measured in the same run.
//!
//! With `BASELINE_DIR` set, the `throughput` executable found there (an
//! earlier build of this benchmark) runs too, with the same `BENCH_JOBS`,
//! and one table sets its (b) figures beside this build's.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use runtime::config::Config;
use runtime::job::{NewJob, Payload, QueueName};
use runtime::queue::{Completion, JobQueue};
use runtime::sandbox::Capabilities;
use runtime::{MemoryBackend, Runtime, WorkerConfig};
use runtime_tests::{TempDir, guests};
use serde::Deserialize;

const ORDER: &str = r#"{"id":42,"customer":"ada@example.com","items":[{"sku":"A-1","qty":2},{"sku":"B-7","qty":1}]}"#;

#[derive(Deserialize)]
struct Item {
    sku: String,
    qty: u32,
}

#[derive(Deserialize)]
struct Order {
    id: u64,
    customer: String,
    items: Vec<Item>,
}

/// The native baseline: exactly the handler's work.
fn native_handle(payload: &str) -> bool {
    let Ok(order) = serde_json::from_str::<Order>(payload) else {
        return false;
    };
    let units: u32 = order.items.iter().map(|i| i.qty).sum();
    let skus: usize = order.items.iter().map(|i| i.sku.len()).sum();
    black_box((order.id, order.customer.len(), units, skus));
    true
}

fn runtime_for_bench(cache: &TempDir) -> Runtime {
    runtime_with(cache, "")
}

/// A runtime over the fixtures with `extra` config (TOML).
fn runtime_with(cache: &TempDir, extra: &str) -> Runtime {
    let text = format!(
        "cache_dir = {:?}\n{extra}\n",
        cache.path().display().to_string()
    );
    let config = Config::parse(&text).expect("config");
    Runtime::in_memory(guests::DIR.into(), config).expect("runtime")
}

fn q(name: &str) -> QueueName {
    QueueName::new(name).expect("queue")
}

/// A multi-thread tokio runtime with `threads` workers.
fn per_job(elapsed: Duration, jobs: usize) -> f64 {
    elapsed.as_secs_f64() * 1e6 / jobs as f64
}

fn bench_native(threads: usize, jobs: usize) -> f64 {
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                for _ in 0..jobs / threads {
                    assert!(native_handle(black_box(ORDER)));
                }
            });
        }
    });
    per_job(started.elapsed(), jobs)
}

fn bench_sandbox(rt: &Runtime, threads: usize, jobs: usize) -> f64 {
    let handler = rt
        .registry()
        .handler(&q(guests::NOOP))
        .expect("noop handler");
    let record = runtime_tests::running_record(guests::NOOP, ORDER);
    let tokio = runtime_tests::tokio_runtime(threads);
    tokio.block_on(async {
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..threads {
            let (sandbox, handler, record) = (
                rt.registry().sandbox().clone(),
                handler.clone(),
                record.clone(),
            );
            tasks.push(tokio::spawn(async move {
                for _ in 0..jobs / threads {
                    let report = sandbox
                        .run(&handler, &record, Capabilities::default())
                        .await;
                    assert_eq!(report.outcome, runtime::sandbox::RunOutcome::Done);
                }
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        per_job(started.elapsed(), jobs)
    })
}

fn jobs_to(queue: &QueueName, n: usize) -> Vec<NewJob> {
    (0..n)
        .map(|_| NewJob::new(queue.clone(), Payload::new(ORDER).expect("payload")))
        .collect()
}

/// The queue alone: dispatch N, then claim in batches and ack each, on two
/// tasks: what the memory backend can do without any handler.
fn bench_queue_only(jobs: usize) -> f64 {
    let tokio = runtime_tests::tokio_runtime(2);
    tokio.block_on(async {
        let backend: Arc<dyn JobQueue> = Arc::new(MemoryBackend::default());
        let queue = q(guests::NOOP);
        let started = Instant::now();
        backend
            .dispatch_many(jobs_to(&queue, jobs))
            .await
            .expect("dispatch");
        let mut tasks = Vec::new();
        for _ in 0..2 {
            let (backend, queue) = (backend.clone(), queue.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let claims = backend
                        .claim(std::slice::from_ref(&queue), 32, Duration::from_secs(30))
                        .await
                        .expect("claim");
                    if claims.is_empty() {
                        break;
                    }
                    for c in claims {
                        black_box(native_handle(c.job.payload.as_str()));
                        backend
                            .complete(&c.lease, Completion::Done, String::new())
                            .await
                            .expect("ack");
                    }
                }
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        jobs as f64 / started.elapsed().as_secs_f64()
    })
}

/// Dispatch N, then drain with a worker (fresh sandbox per job).
fn bench_end_to_end(rt: &Runtime, jobs: usize, concurrency: usize) -> f64 {
    let tokio = runtime_tests::tokio_runtime(2);
    tokio.block_on(async {
        let queue = q(guests::NOOP);
        let started = Instant::now();
        rt.backend()
            .jobs
            .dispatch_many(jobs_to(&queue, jobs))
            .await
            .expect("dispatch");
        let worker = rt.worker(WorkerConfig {
            queues: vec![queue],
            concurrency,
            batch: 64,
            drain: true,
            ..Default::default()
        });
        let stats = worker.run(std::future::pending()).await.expect("worker");
        assert_eq!(stats.done, jobs as u64, "{stats:?}");
        jobs as f64 / started.elapsed().as_secs_f64()
    })
}

fn main() {
    if !runtime_tests::bench_runs() {
        return;
    }
    let jobs = runtime_tests::job_count("BENCH_JOBS", 100_000);
    let cache = TempDir::new("bench");
    let rt = runtime_for_bench(&cache);
    // Warm up: compile, fill the pool, fault in pages.
    bench_sandbox(&rt, 2, 2_000);
    bench_native(2, 2_000);

    println!("(a) cost per job, fresh instance of a trivial handler ({jobs} jobs)");
    println!("    threads   native µs/job   sandbox µs/job   ratio");
    for threads in [1, 2] {
        let native = bench_native(threads, jobs);
        let sandbox = bench_sandbox(&rt, threads, jobs);
        println!(
            "    {threads:>7}   {native:>13.2}   {sandbox:>14.2}   {:>5.1}x",
            sandbox / native
        );
    }

    println!("(c) memory kept resident per pool slot, sandbox µs/job on 2 threads");
    let mut base = None;
    for kib in [1024, 4096] {
        let rt = runtime_with(&cache, &format!("[sandbox]\nkeep_resident_kib = {kib}"));
        bench_sandbox(&rt, 2, 2_000);
        let us = bench_sandbox(&rt, 2, jobs);
        let ratio = us / *base.get_or_insert(us);
        println!("    {kib:>5} KiB   {us:>8.2} µs/job   {ratio:>5.2}x of 1024 KiB");
    }

    println!("(b) in-memory end to end: dispatch {jobs}, drain on 2 worker threads");
    let sandbox_alone = 1e6 / bench_sandbox(&rt, 2, jobs);
    println!("    sandbox alone (2 threads)           {sandbox_alone:>12.0} jobs/s");
    let queue_only = bench_queue_only(jobs);
    println!("    queue only (claim+ack, native work) {queue_only:>12.0} jobs/s");
    let mut now = vec![("queue only".to_string(), queue_only)];
    for concurrency in [16, 64] {
        let rt = runtime_for_bench(&cache);
        let e2e = bench_end_to_end(&rt, jobs, concurrency);
        println!(
            "    worker, sandbox per job, {concurrency:>2} in flight {e2e:>9.0} jobs/s ({:.2} of queue only, {:.2} of sandbox alone)",
            e2e / queue_only,
            e2e / sandbox_alone
        );
        now.push((format!("worker, {concurrency} in flight"), e2e));
    }
    if let Some(dir) = std::env::var_os("BASELINE_DIR") {
        compare_with_baseline(std::path::Path::new(&dir), jobs, &now);
    }
}

/// Runs the baseline build's benchmark with the same job count and prints
/// its (b) figures beside `now`'s.
fn compare_with_baseline(dir: &std::path::Path, jobs: usize, now: &[(String, f64)]) {
    let exe = dir.join("throughput");
    let out = match std::process::Command::new(&exe)
        .env("BENCH_JOBS", jobs.to_string())
        .env_remove("BASELINE_DIR")
        .output()
    {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        Ok(out) => {
            eprintln!("baseline {} failed: {}", exe.display(), out.status);
            return;
        }
        Err(e) => {
            eprintln!(
                "cannot run baseline {} ({e}); set BASELINE_DIR to the directory holding its throughput executable",
                exe.display()
            );
            return;
        }
    };
    // The (b) lines: "queue only ... N jobs/s" and "worker, ..., C in flight N jobs/s".
    let rate = |line: &str| -> Option<f64> {
        let head = line.split(" jobs/s").next()?;
        head.split_whitespace().last()?.parse().ok()
    };
    let mut base: Vec<(String, f64)> = Vec::new();
    for line in out.lines().skip_while(|l| !l.starts_with("(b)")) {
        let line = line.trim();
        if line.starts_with("queue only") {
            base.extend(rate(line).map(|r| ("queue only".to_string(), r)));
        } else if let Some(rest) = line.strip_prefix("worker, sandbox per job,") {
            let concurrency = rest.split_whitespace().next().unwrap_or("?");
            base.extend(rate(line).map(|r| (format!("worker, {concurrency} in flight"), r)));
        }
    }
    println!(
        "baseline ({}) against this build, same run, jobs/s",
        exe.display()
    );
    println!(
        "    {:<22} {:>10} {:>10} {:>7}",
        "metric", "baseline", "now", "ratio"
    );
    for (metric, now) in now {
        match base.iter().find(|(m, _)| m == metric) {
            Some((_, was)) => println!(
                "    {metric:<22} {was:>10.0} {now:>10.0} {:>6.2}x",
                now / was
            ),
            None => println!("    {metric:<22} {:>10} {now:>10.0}", "-"),
        }
    }
}

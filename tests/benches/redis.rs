//! Redis benchmarks (not tests): `cargo bench -p runtime-tests --bench redis`.
//!
//! On a private redis-server started here (no persistence), with the real
//! `runtime` binary and the trivial `noop` handler (parse a ~100-byte order):
//!
//! (c) bulk dispatch of N jobs (`runtime dispatch --file`), then drained by
//!     one `runtime worker --drain` process, then (N again) by two at once;
//!     every job claimed under a lease, run in a fresh sandbox, acked.
//! (d) idle latency: a worker waits in BLPOP; 1,000 single dispatches, one
//!     at a time, each timed from dispatch to its recorded ack (so an upper
//!     bound on dispatch-to-start); p50 and p99.
//!     Beside each drain: Redis's own CPU per job (`INFO cpu` before and
//!     after), and how much of it the scripts took and, inside them, the
//!     commands they called (`INFO commandstats`).
//! (e) the baseline, in the same run: `redis-benchmark` SET with pipelining
//!     on the same server, i.e. what this Redis does per second with the
//!     simplest command, to put jobs/s in proportion.
//!
//! `BENCH_JOBS` sets N (default 100000).

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use runtime::config::Config;
use runtime::job::{NewJob, Payload, QueueName};
use runtime::queue::SystemClock;
use runtime::queue::redis::RedisBackend;
use runtime::{Backend, JobQueue, Runtime, WorkerConfig};
use runtime_tests::workers::Env;
use runtime_tests::{guests, runtime_bin};

const ORDER: &str = r#"{"id":42,"customer":"ada@example.com","items":[{"sku":"A-1","qty":2},{"sku":"B-7","qty":1}]}"#;

fn main() {
    let n = runtime_tests::job_count("BENCH_JOBS", 100_000);
    let env = Env::new();
    let (redis, cache, url) = (&env.redis, &env.cache, env.url());
    let file = cache.path().join("jobs.jsonl");
    std::fs::write(&file, format!("{ORDER}\n").repeat(n)).expect("write jobs");
    let file = file.display().to_string();
    let admin = |args: &[&str]| {
        let run = env.run(args);
        run.expect_code(0);
        run
    };
    // Warm the module cache so workers start alike.
    admin(&["dispatch", guests::NOOP, ORDER]);
    admin(&["worker", guests::NOOP, "--drain"]);

    println!("(e) redis-benchmark SET -P 32 on the same server:");
    let set_rate = redis_benchmark(redis.port());
    println!("    {set_rate:.0} SET/s");

    for workers in [1, 2] {
        let started = Instant::now();
        admin(&["dispatch", guests::NOOP, "--file", &file]);
        let dispatched = started.elapsed();
        let before = ServerTime::read(redis.port());
        let started = Instant::now();
        let children: Vec<_> = (0..workers)
            .map(|_| {
                Command::new(runtime_bin())
                    .args(["--backend", &url, "--handlers", guests::DIR, "worker"])
                    .args([guests::NOOP, "--drain", "--concurrency", "64"])
                    .env("RUNTIME_CACHE_DIR", cache.path())
                    .env("RUNTIME_LOG", "warn")
                    .env_remove("RUST_BACKTRACE")
                    .spawn()
                    .expect("start worker")
            })
            .collect();
        for mut c in children {
            let status = c.wait().expect("wait for worker");
            assert!(status.success());
        }
        let drained = started.elapsed();
        let rate = n as f64 / drained.as_secs_f64();
        println!(
            "(c) {n} jobs: bulk dispatch {:.0} jobs/s; drained by {workers} worker process(es) in {:.2} s = {rate:.0} jobs/s ({:.3} of the SET rate: a job costs as much as {:.0} pipelined SETs)",
            n as f64 / dispatched.as_secs_f64(),
            drained.as_secs_f64(),
            rate / set_rate,
            set_rate / rate
        );
        let spent = ServerTime::read(redis.port()).since(&before);
        let per_job = |secs: f64| secs * 1e6 / n as f64;
        println!(
            "    Redis CPU {:.1} µs/job: scripts {:.1} µs, of which the commands they call {:.1} µs",
            per_job(spent.cpu),
            per_job(spent.scripts),
            per_job(spent.commands)
        );
    }
    let counts = admin(&["queues", "--json"]).json();
    assert_eq!(
        counts[guests::NOOP]["done"],
        2 * n as u64 + 1,
        "every job done once"
    );

    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");
    tokio.block_on(latency(&url, cache.path()));
}

/// (d): dispatch-to-ack latency of single jobs on an idle worker.
async fn latency(url: &str, cache: &std::path::Path) {
    let queue = QueueName::new(guests::NOOP).expect("queue");
    let connect = || RedisBackend::connect(url, "lat:", Arc::new(SystemClock));
    let backend = Backend::new(connect().await.expect("connect"));
    let client = connect().await.expect("connect");
    let config = Config {
        cache_dir: Some(cache.to_path_buf()),
        ..Config::default()
    };
    let rt = Runtime::new(backend, guests::DIR.into(), config).expect("runtime");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let worker = rt
        .worker(WorkerConfig {
            queues: vec![queue.clone()],
            ..WorkerConfig::default()
        })
        .with_events(tx);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(async {
        let _ = stopped.await;
    }));
    let payload = Payload::new(ORDER).expect("payload");
    let mut samples = Vec::with_capacity(1000);
    for i in 0..1100 {
        // Let the worker go idle (blocked in BLPOP) before each dispatch.
        tokio::time::sleep(Duration::from_millis(2)).await;
        let t = Instant::now();
        client
            .dispatch(NewJob::new(queue.clone(), payload.clone()))
            .await
            .expect("dispatch");
        rx.recv().await.expect("an event");
        if i >= 100 {
            samples.push(t.elapsed());
        }
    }
    let _ = stop.send(());
    let _ = running.await;
    samples.sort();
    let pct = |p: usize| samples[(samples.len() * p / 100).min(samples.len() - 1)];
    println!(
        "(d) idle dispatch-to-ack over {} single jobs: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        samples.len(),
        pct(50).as_secs_f64() * 1000.0,
        pct(99).as_secs_f64() * 1000.0,
        samples[samples.len() - 1].as_secs_f64() * 1000.0
    );
}

/// `redis-benchmark -t set -P 32`: requests per second.
fn redis_benchmark(port: u16) -> f64 {
    let out = Command::new("redis-benchmark")
        .args([
            "-p",
            &port.to_string(),
            "-t",
            "set",
            "-n",
            "1000000",
            "-P",
            "32",
            "-q",
        ])
        .output()
        .expect("run redis-benchmark (installed with redis-server)");
    let text = String::from_utf8_lossy(&out.stdout);
    // "SET: 1234567.00 requests per second, p50=..." (with \r progress lines)
    text.rsplit("SET: ")
        .next()
        .and_then(|s| s.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("cannot read redis-benchmark's output: {text}"))
}

/// Redis's CPU time so far and, from `INFO commandstats`, the time spent
/// in scripts and in the commands they (or anyone) called; all in seconds.
struct ServerTime {
    cpu: f64,
    scripts: f64,
    commands: f64,
}

impl ServerTime {
    fn read(port: u16) -> Self {
        let info = |section: &str| {
            let out = Command::new("redis-cli")
                .args(["-p", &port.to_string(), "info", section])
                .output()
                .expect("run redis-cli (installed with redis-server)");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let mut time = ServerTime {
            cpu: 0.0,
            scripts: 0.0,
            commands: 0.0,
        };
        for line in info("cpu").lines() {
            if let Some((name, value)) = line.trim().split_once(':')
                && (name == "used_cpu_user" || name == "used_cpu_sys")
            {
                time.cpu += value.parse::<f64>().unwrap_or(0.0);
            }
        }
        // cmdstat_<name>:calls=..,usec=..,...
        for line in info("commandstats").lines() {
            let Some((name, stats)) = line.trim().split_once(':') else {
                continue;
            };
            let Some(name) = name.strip_prefix("cmdstat_") else {
                continue;
            };
            let usec = stats
                .split(',')
                .find_map(|kv| kv.strip_prefix("usec="))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0);
            match name {
                "evalsha" | "eval" => time.scripts += usec / 1e6,
                "info" | "config|get" | "config|resetstat" | "blpop" => {}
                _ => time.commands += usec / 1e6,
            }
        }
        time
    }

    fn since(&self, before: &ServerTime) -> ServerTime {
        ServerTime {
            cpu: self.cpu - before.cpu,
            scripts: self.scripts - before.scripts,
            commands: self.commands - before.commands,
        }
    }
}

//! Redis benchmarks (not tests): `cargo bench -p runtime-tests --bench redis`.
//!
//! On private redis-servers started here (no persistence), with the real
//! `runtime` binary and the trivial `noop` handler (parse a ~100-byte order):
//!
//! (c) bulk dispatch of N jobs (`runtime dispatch --file`), then drained by
//!     one `runtime worker --drain --concurrency 64` process, then (N
//!     again) by two at once; every job claimed under a lease, run in a
//!     fresh sandbox, acked. Beside each drain: Redis's own CPU per job
//!     (`INFO cpu` before and after), how much of it the functions (or
//!     scripts) took and, inside them, the commands they called (`INFO
//!     commandstats`), and the worker processes' own CPU per job (their
//!     user and system time, as this process's waited-for children).
//!     With `BASELINE_DIR` set, the same drains also run with
//!     `$BASELINE_DIR/runtime` (another build, on a Redis of its own),
//!     alternating with this build, and a table compares the two.
//!     Three rounds; each figure is the median.
//! (d) idle latency: a worker waits in BLPOP; 1,000 single dispatches, one
//!     at a time, each timed from dispatch to its recorded ack (so an upper
//!     bound on dispatch-to-start); p50 and p99.
//! (e) the baseline, in the same run: `redis-benchmark` SET with pipelining
//!     on the same server, i.e. what this Redis does per second with the
//!     simplest command, to put jobs/s in proportion.
//!
//! `BENCH_JOBS` sets N (default 50000).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use runtime::config::Config;
use runtime::job::{NewJob, Payload, QueueName};
use runtime::queue::SystemClock;
use runtime::queue::redis::RedisBackend;
use runtime::{Backend, JobQueue, Runtime, WorkerConfig};
use runtime_tests::redis::RedisServer;
use runtime_tests::{TempDir, guests, runtime_bin};

const ORDER: &str = r#"{"id":42,"customer":"ada@example.com","items":[{"sku":"A-1","qty":2},{"sku":"B-7","qty":1}]}"#;

/// Rounds of drains per build; each figure is the median.
const ROUNDS: usize = 3;

fn main() {
    let n = runtime_tests::job_count("BENCH_JOBS", 50_000);
    let jobs = TempDir::new("bench-jobs");
    let file = jobs.path().join("jobs.jsonl");
    std::fs::write(&file, format!("{ORDER}\n").repeat(n)).expect("write jobs");
    let now = Build::new("now", runtime_bin());
    let baseline = std::env::var_os("BASELINE_DIR")
        .map(|dir| Build::new("baseline", Path::new(&dir).join("runtime")));

    println!("(e) redis-benchmark SET -P 32 on the same server:");
    let set_rate = now.redis.benchmark_set(50, 32, 1_000_000);
    println!("    {set_rate:.0} SET/s");

    // builds[i] drains into drains[i]; the baseline (if any) first.
    let builds: Vec<&Build> = baseline.iter().chain([&now]).collect();
    let mut drains: Vec<Vec<Drain>> = vec![Vec::new(); builds.len()];
    for round in 0..ROUNDS {
        // Alternate which build goes first, so neither always meets a
        // warmer (or busier) machine.
        let mut order: Vec<usize> = (0..builds.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            for workers in [1, 2] {
                let d = builds[i].drain(&file, n, workers);
                println!(
                    "    round {} {:>8}, {workers} worker(s): {:.0} jobs/s, Redis {:.1} µs/job, workers {:.1} µs/job",
                    round + 1,
                    builds[i].name,
                    d.rate(),
                    d.per_job(d.server.cpu),
                    d.per_job(d.worker_cpu),
                );
                drains[i].push(d);
            }
        }
    }
    let figures: Vec<Vec<f64>> = drains.iter().map(|d| medians(d)).collect();
    println!();
    println!("(c) {n} jobs, median of {ROUNDS} rounds:");
    match figures.as_slice() {
        [base, now] => {
            println!(
                "    {:<40} {:>10} {:>10} {:>7}",
                "metric", "baseline", "now", "ratio"
            );
            for (name, (b, x)) in ROWS.iter().zip(base.iter().zip(now)) {
                println!("    {name:<40} {b:>10.2} {x:>10.2} {:>6.2}x", x / b);
            }
        }
        [now] => {
            println!("    {:<40} {:>10}", "metric", "now");
            for (name, x) in ROWS.iter().zip(now) {
                println!("    {name:<40} {x:>10.2}");
            }
        }
        _ => unreachable!("one build, or a baseline and this one"),
    }
    let one = figures.last().map_or(0.0, |f| f[0]);
    println!(
        "    one worker drains at {:.3} of the SET rate: a job costs as much as {:.0} pipelined SETs",
        one / set_rate,
        set_rate / one
    );

    let tokio = runtime_tests::tokio_runtime(2);
    tokio.block_on(latency(&now.redis.url(), now.cache.path()));
}

/// The table's rows, in the order [`medians`] gives them.
const ROWS: [&str; 10] = [
    "drain, 1 worker (jobs/s)",
    "drain, 2 workers (jobs/s)",
    "2 workers over 1",
    "Redis CPU per job, 1 worker (µs)",
    "Redis CPU per job, 2 workers (µs)",
    "  in functions/scripts, 1 worker (µs)",
    "  commands they called, 1 worker (µs)",
    "worker CPU per job, 1 worker (µs)",
    "worker CPU per job, 2 workers (µs)",
    "bulk dispatch (jobs/s)",
];

/// One build's figures: each the median over its rounds.
fn medians(drains: &[Drain]) -> Vec<f64> {
    let of = |workers: usize, metric: &dyn Fn(&Drain) -> f64| {
        let mut values: Vec<f64> = drains
            .iter()
            .filter(|d| d.workers == workers)
            .map(metric)
            .collect();
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let (one, two) = (of(1, &Drain::rate), of(2, &Drain::rate));
    vec![
        one,
        two,
        two / one,
        of(1, &|d| d.per_job(d.server.cpu)),
        of(2, &|d| d.per_job(d.server.cpu)),
        of(1, &|d| d.per_job(d.server.scripts)),
        of(1, &|d| d.per_job(d.server.commands)),
        of(1, &|d| d.per_job(d.worker_cpu)),
        of(2, &|d| d.per_job(d.worker_cpu)),
        of(1, &|d| d.n as f64 / d.dispatched.as_secs_f64()),
    ]
}

/// One build of `runtime` with a Redis and a module cache of its own.
struct Build {
    name: &'static str,
    bin: PathBuf,
    redis: RedisServer,
    cache: TempDir,
}

impl Build {
    fn new(name: &'static str, bin: PathBuf) -> Self {
        assert!(bin.is_file(), "{} is not a runtime binary", bin.display());
        let build = Build {
            name,
            bin,
            redis: RedisServer::start(),
            cache: TempDir::new("bench-cache"),
        };
        // Warm the module cache so every drain starts alike.
        build.run(&["dispatch", guests::NOOP, ORDER]);
        build.run(&["worker", guests::NOOP, "--drain"]);
        build
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.args(["--backend", &self.redis.url(), "--handlers", guests::DIR])
            .env("RUNTIME_CACHE_DIR", self.cache.path())
            .env("RUNTIME_LOG", "error")
            .env_remove("RUNTIME_CONFIG")
            .env_remove("RUNTIME_PREFIX")
            .env_remove("RUST_BACKTRACE");
        cmd
    }

    /// Runs the build's CLI to completion; its standard output.
    fn run(&self, args: &[&str]) -> String {
        let out = self.command().args(args).output().expect("run runtime");
        assert!(
            out.status.success(),
            "{} {args:?}: {}",
            self.bin.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Empties its Redis, dispatches the `n` jobs of `file`, and drains
    /// them with `workers` worker processes.
    fn drain(&self, file: &Path, n: usize, workers: usize) -> Drain {
        let flushed = self.redis.command(&["FLUSHALL"]).expect("FLUSHALL");
        assert_eq!(flushed, "+OK");
        let started = Instant::now();
        self.run(&[
            "dispatch",
            guests::NOOP,
            "--file",
            &file.display().to_string(),
        ]);
        let dispatched = started.elapsed();
        let before = ServerTime::read(self.redis.port());
        let children_before = children_cpu();
        let started = Instant::now();
        let children: Vec<_> = (0..workers)
            .map(|_| {
                self.command()
                    .args(["worker", guests::NOOP, "--drain", "--concurrency", "64"])
                    .spawn()
                    .expect("start worker")
            })
            .collect();
        for mut c in children {
            let status = c.wait().expect("wait for worker");
            assert!(status.success());
        }
        let drained = started.elapsed();
        let worker_cpu = children_cpu() - children_before;
        let server = ServerTime::read(self.redis.port()).since(&before);
        let counts: serde_json::Value =
            serde_json::from_str(&self.run(&["queues", "--json"])).expect("queues --json");
        assert_eq!(
            counts[guests::NOOP]["done"],
            n as u64,
            "every job done once"
        );
        Drain {
            n,
            workers,
            dispatched,
            drained,
            server,
            worker_cpu,
        }
    }
}

/// What one drain took.
#[derive(Clone)]
struct Drain {
    n: usize,
    workers: usize,
    dispatched: Duration,
    drained: Duration,
    server: ServerTime,
    /// The worker processes' user and system time, in seconds.
    worker_cpu: f64,
}

impl Drain {
    fn rate(&self) -> f64 {
        self.n as f64 / self.drained.as_secs_f64()
    }

    /// Seconds in all as microseconds per job.
    fn per_job(&self, seconds: f64) -> f64 {
        seconds * 1e6 / self.n as f64
    }
}

/// The user and system time of this process's waited-for children so far,
/// in seconds (`cutime` and `cstime` of /proc/self/stat).
fn children_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("read /proc/self/stat");
    // Fields after the command name (which may hold spaces) in parentheses:
    // state is field 3, cutime 16 and cstime 17.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |field: usize| -> f64 {
        fields
            .get(field - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .expect("a number in /proc/self/stat")
    };
    (ticks(16) + ticks(17)) / clock_ticks()
}

/// Clock ticks per second, as /proc counts times.
fn clock_ticks() -> f64 {
    let out = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .expect("run getconf");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("getconf CLK_TCK prints a number")
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

/// Redis's CPU time so far and, from `INFO commandstats`, the time spent
/// in functions or scripts and in the commands they (or anyone) called; all in seconds.
#[derive(Clone)]
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
                "evalsha" | "eval" | "fcall" => time.scripts += usec / 1e6,
                "info" | "config|get" | "config|resetstat" | "blpop" | "flushall" => {}
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

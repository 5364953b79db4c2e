//! Tenant benchmarks (not tests): `cargo bench -p runtime-tests --bench tenants`.
//!
//! On a private redis-server, in process (the library's worker with the
//! real sandbox and the `noop` handler), a worker serving every queue
//! (`runtime worker --all`, concurrency 16):
//!
//! (a) 100 tenants: tenant `t00` floods (`BENCH_JOBS` jobs waiting, default
//!     150,000) while the other 99 each get a job now and then (one every
//!     4 ms, in turn; the first 20 not timed); each trickle job timed from its dispatch to its
//!     recorded ack (an upper bound on dispatch-to-start): p50, p99. Beside
//!     it, the same trickle with one tenant and no flood (the best it can
//!     be), and with one tenant whose flood and trickle are two of its
//!     queues (fairness between queues alone), in the same run.
//! (b) what tenant accounting costs: drains of `BENCH_JOBS` jobs in one
//!     queue by a worker named that queue (no due index, one tenant), by
//!     a worker serving every queue, by one serving every queue whose
//!     tenant has a fleet-wide `max_in_flight` and a run-time budget too
//!     large to hold it back (so every claim round takes and gives back
//!     slots in its ledger and checks its budget, and every batch of acks
//!     gives slots back and adds run time), and by one serving every queue
//!     with the jobs spread over 100 tenants; jobs/s and the ratio to the
//!     first. Three rounds, alternating; medians.
//! (c) what dispatch quotas cost: dispatches into one tenant's queue with
//!     no quota and with a dispatch rate and a backlog cap too high to
//!     refuse anything (so every dispatch takes its tokens and checks the
//!     backlog): single jobs from 16 tasks at once, and batches of 1,000;
//!     jobs/s and the ratio. Three rounds, alternating; medians.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use runtime::config::Config;
use runtime::job::{NewJob, Payload, QueueName};
use runtime::queue::redis::RedisBackend;
use runtime::queue::{DispatchQuota, Quotas, Rate, SystemClock};
use runtime::worker::JobEvent;
use runtime::{Backend, JobQueue, Runtime, WorkerConfig};
use runtime_tests::redis::RedisServer;
use runtime_tests::{TempDir, guests};

const ORDER: &str = r#"{"id":42,"customer":"ada@example.com","items":[{"sku":"A-1","qty":2},{"sku":"B-7","qty":1}]}"#;

/// Tenants in the many-tenant runs.
const TENANTS: usize = 100;

/// Trickle jobs timed per scenario.
const TRICKLE: usize = 500;

/// Trickle jobs run first and not timed: the first attempts of a queue
/// load its handler.
const WARMUP: usize = 20;

/// Between two trickle dispatches.
const TRICKLE_EVERY: Duration = Duration::from_millis(4);

const CONCURRENCY: usize = 16;

const ROUNDS: usize = 3;

fn main() {
    let n = runtime_tests::job_count("BENCH_JOBS", 150_000);
    let handlers = TempDir::new("bench-tenants");
    let noop = Path::new(guests::DIR).join("noop_job.wasm");
    for queue in ["noop", "flood", "trickle"] {
        std::fs::copy(&noop, handlers.path().join(format!("{queue}_job.wasm"))).expect("copy noop");
    }
    for t in 0..TENANTS {
        let dir = handlers.path().join("tenants").join(tenant(t));
        std::fs::create_dir_all(&dir).expect("tenant dir");
        std::fs::copy(&noop, dir.join("noop_job.wasm")).expect("copy noop");
    }
    let redis = RedisServer::start();
    let cache = TempDir::new("bench-tenants-cache");
    let tokio = runtime_tests::tokio_runtime(2);
    let bench = Bench {
        url: redis.url(),
        handlers: handlers.path().to_path_buf(),
        cache: cache.path().to_path_buf(),
    };
    tokio.block_on(async {
        let flood = q(&format!("{}/noop", tenant(0)));
        let many: Vec<QueueName> = (1..TENANTS)
            .map(|t| q(&format!("{}/noop", tenant(t))))
            .collect();
        println!("(a) trickle dispatch-to-ack, {TRICKLE} jobs, one every {TRICKLE_EVERY:?}:");
        let alone = bench.trickle("alone:", None, &[q("trickle")], n).await;
        println!("    one tenant, no flood:                 {alone}");
        let queues = bench
            .trickle("queues:", Some(q("flood")), &[q("trickle")], n)
            .await;
        println!("    one tenant, flood in another queue:   {queues}");
        let tenants = bench.trickle("tenants:", Some(flood), &many, n).await;
        println!("    99 tenants while a 100th floods:      {tenants}");
        println!(
            "    p99 ratio, 100 tenants to one tenant without a flood: {:.2}",
            tenants.p99 / alone.p99
        );

        let spread: Vec<QueueName> = (0..TENANTS)
            .map(|t| q(&format!("{}/noop", tenant(t))))
            .collect();
        let mut rates: Vec<[f64; 4]> = Vec::new();
        for round in 0..ROUNDS {
            let mut r = [0.0; 4];
            let order: Vec<usize> = if round % 2 == 0 {
                vec![0, 1, 2, 3]
            } else {
                vec![3, 2, 1, 0]
            };
            for i in order {
                let prefix = format!("drain{round}{i}:");
                r[i] = match i {
                    0 => bench.drain(&prefix, &[q("noop")], true, false, n).await,
                    1 => bench.drain(&prefix, &[q("noop")], false, false, n).await,
                    2 => bench.drain(&prefix, &[q("noop")], false, true, n).await,
                    _ => bench.drain(&prefix, &spread, false, false, n).await,
                };
            }
            println!(
                "    round {}: named {:.0}, --all {:.0}, --all with fleet accounting {:.0}, --all over {TENANTS} tenants {:.0} jobs/s",
                round + 1,
                r[0],
                r[1],
                r[2],
                r[3]
            );
            rates.push(r);
        }
        let median = |i: usize| {
            let mut v: Vec<f64> = rates.iter().map(|r| r[i]).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (named, all, counted, spread) = (median(0), median(1), median(2), median(3));
        println!("(b) drains of {n} jobs, median of {ROUNDS} rounds:");
        println!("    worker naming the queue:              {named:.0} jobs/s");
        println!(
            "    worker --all, one tenant:             {all:.0} jobs/s ({:.2}x)",
            all / named
        );
        println!(
            "    worker --all, fleet accounting:       {counted:.0} jobs/s ({:.2}x; {:.2}x --all)",
            counted / named,
            counted / all
        );
        println!(
            "    worker --all, {TENANTS} tenants:             {spread:.0} jobs/s ({:.2}x)",
            spread / named
        );

        let mut rates: Vec<[(f64, f64); 2]> = Vec::new();
        for round in 0..ROUNDS {
            let mut r = [(0.0, 0.0); 2];
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for i in order {
                r[i] = bench
                    .dispatching(&format!("dispatch{round}{i}:"), i == 1, n / 3)
                    .await;
            }
            println!(
                "    round {}: single {:.0} / {:.0}, batches {:.0} / {:.0} jobs/s (no quota / quotas)",
                round + 1,
                r[0].0,
                r[1].0,
                r[0].1,
                r[1].1
            );
            rates.push(r);
        }
        let median = |i: usize, single: bool| {
            let mut v: Vec<f64> = rates
                .iter()
                .map(|r| if single { r[i].0 } else { r[i].1 })
                .collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        println!("(c) dispatches, median of {ROUNDS} rounds:");
        for (what, single) in [("single jobs, 16 at once", true), ("batches of 1,000", false)] {
            let (free, held) = (median(0, single), median(1, single));
            println!(
                "    {what:<24} no quota {free:.0} jobs/s, with quotas {held:.0} jobs/s ({:.2}x)",
                held / free
            );
        }
    });
}

fn tenant(t: usize) -> String {
    format!("t{t:02}")
}

fn q(name: &str) -> QueueName {
    QueueName::parse(name).expect("queue name")
}

/// Percentiles of a scenario, in ms.
struct Latency {
    p50: f64,
    p99: f64,
}

impl std::fmt::Display for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "p50 {:.2} ms, p99 {:.2} ms", self.p50, self.p99)
    }
}

struct Bench {
    url: String,
    handlers: std::path::PathBuf,
    cache: std::path::PathBuf,
}

impl Bench {
    /// Jobs/s of `single` single dispatches from 16 tasks, then of as many
    /// in batches of 1,000, into `acme/noop` under `prefix`; with `quotas`,
    /// through a rate and a backlog cap that refuse nothing.
    async fn dispatching(&self, prefix: &str, quotas: bool, single: usize) -> (f64, f64) {
        let mut backend = Backend::new(self.connect(prefix).await);
        if quotas {
            backend = backend.with_quotas(Quotas {
                defaults: DispatchQuota {
                    rate: Some(Rate {
                        per_second: 1e9,
                        burst: 1_000_000,
                    }),
                    max_backlog: Some(u64::MAX / 2),
                },
                tenants: Default::default(),
            });
        }
        let queue = q("acme/noop");
        let job = || NewJob::new(queue.clone(), Payload::new(ORDER).expect("payload"));
        let tasks = 16;
        let per = single / tasks;
        let started = Instant::now();
        futures_util::future::join_all((0..tasks).map(|_| async {
            for _ in 0..per {
                backend.jobs.dispatch(job()).await.expect("dispatch");
            }
        }))
        .await;
        let one = (per * tasks) as f64 / started.elapsed().as_secs_f64();
        let started = Instant::now();
        for _ in 0..single / 1000 {
            let batch = (0..1000).map(|_| job()).collect();
            backend.jobs.dispatch_many(batch).await.expect("dispatch");
        }
        let many = (single / 1000 * 1000) as f64 / started.elapsed().as_secs_f64();
        (one, many)
    }

    async fn connect(&self, prefix: &str) -> RedisBackend {
        RedisBackend::connect(&self.url, prefix, Arc::new(SystemClock))
            .await
            .expect("connect")
    }

    /// A runtime over keys under `prefix`, and a worker of it serving
    /// `queues` (every queue if `None`), and where it reports its attempts
    /// if `events`; with `accounting`, every tenant has a `max_in_flight`
    /// and a run-time budget, neither reached.
    async fn worker(
        &self,
        prefix: &str,
        queues: Option<Vec<QueueName>>,
        drain: bool,
        events: bool,
        accounting: bool,
    ) -> (
        runtime::Worker,
        tokio::sync::mpsc::UnboundedReceiver<JobEvent>,
    ) {
        let backend = Backend::new(self.connect(prefix).await);
        let mut config = Config {
            cache_dir: Some(self.cache.clone()),
            ..Config::default()
        };
        if accounting {
            config.tenant_defaults.max_in_flight = Some(1_000_000);
            config.tenant_defaults.cpu_budget_s = Some(1e9);
        }
        let rt = Runtime::new(backend, self.handlers.clone(), config).expect("runtime");
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let worker = rt.worker(WorkerConfig {
            queues: queues.unwrap_or_default(),
            concurrency: CONCURRENCY,
            batch: CONCURRENCY,
            drain,
            ..WorkerConfig::default()
        });
        let worker = if events {
            worker.with_events(tx)
        } else {
            worker
        };
        (worker, rx)
    }

    /// Fills `queue` with `n` jobs.
    async fn fill(&self, client: &RedisBackend, queue: &QueueName, n: usize) {
        let payload = Payload::new(ORDER).expect("payload");
        for start in (0..n).step_by(1000) {
            let jobs = (start..(start + 1000).min(n))
                .map(|_| NewJob::new(queue.clone(), payload.clone()))
                .collect();
            client.dispatch_many(jobs).await.expect("dispatch");
        }
    }

    /// (a): trickle jobs into `trickle` (in turn) while `flood` has `n`
    /// jobs waiting, served by a worker of every queue.
    async fn trickle(
        &self,
        prefix: &str,
        flood: Option<QueueName>,
        trickle: &[QueueName],
        n: usize,
    ) -> Latency {
        let client = self.connect(prefix).await;
        if let Some(flood) = &flood {
            self.fill(&client, flood, n).await;
        }
        let (worker, mut rx) = self.worker(prefix, None, false, true, false).await;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(worker.run(async {
            let _ = stopped.await;
        }));
        let sent: Arc<std::sync::Mutex<HashMap<String, Instant>>> = Arc::default();
        let dispatcher = {
            let (sent, trickle) = (sent.clone(), trickle.to_vec());
            let payload = Payload::new(ORDER).expect("payload");
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(TRICKLE_EVERY);
                for i in 0..WARMUP + TRICKLE {
                    tick.tick().await;
                    let queue = trickle[i % trickle.len()].clone();
                    let at = Instant::now();
                    let id = client
                        .dispatch(NewJob::new(queue, payload.clone()))
                        .await
                        .expect("dispatch");
                    sent.lock().expect("lock").insert(id.to_string(), at);
                }
            })
        };
        let mut samples = Vec::with_capacity(WARMUP + TRICKLE);
        let mut flooded = 0usize;
        while samples.len() < WARMUP + TRICKLE {
            let event = rx.recv().await.expect("an event");
            let ended = Instant::now();
            let id = event.job.id.to_string();
            if flood.as_ref() == Some(event.job.id.queue()) {
                flooded += 1;
                continue;
            }
            // The dispatcher records the id after its call returns: the
            // job may end first, so look again until it is there.
            let at = loop {
                if let Some(at) = sent.lock().expect("lock").get(&id).copied() {
                    break at;
                }
                tokio::task::yield_now().await;
            };
            samples.push(ended.duration_since(at));
        }
        let _ = dispatcher.await;
        let _ = stop.send(());
        let _ = running.await;
        if flood.is_some() {
            assert!(
                flooded < n,
                "the flood ran out before the trickle ended: make BENCH_JOBS larger"
            );
        }
        let mut samples = samples.split_off(WARMUP);
        samples.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let pct = |p: usize| ms(samples[(samples.len() * p / 100).min(samples.len() - 1)]);
        Latency {
            p50: pct(50),
            p99: pct(99),
        }
    }

    /// (b): `n` jobs spread over `queues`, drained by a worker naming them
    /// (`named`) or serving every queue, with or without fleet-wide
    /// `accounting`; jobs/s.
    async fn drain(
        &self,
        prefix: &str,
        queues: &[QueueName],
        named: bool,
        accounting: bool,
        n: usize,
    ) -> f64 {
        let client = self.connect(prefix).await;
        let each = n / queues.len();
        for queue in queues {
            self.fill(&client, queue, each).await;
        }
        let served = named.then(|| queues.to_vec());
        let (worker, _) = self.worker(prefix, served, true, false, accounting).await;
        let t = Instant::now();
        let stats = worker.run(std::future::pending()).await.expect("worker");
        let rate = stats.done as f64 / t.elapsed().as_secs_f64();
        assert_eq!(stats.done as usize, each * queues.len(), "{stats:?}");
        rate
    }
}

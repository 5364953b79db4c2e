//! `runtime serve` benchmarks (not tests): `cargo bench -p runtime-tests --bench serve`.
//!
//! On a private redis-server started here (no persistence), with the real
//! `runtime` binary serving on loopback and `wrk` as the load generator
//! (Debian's `wrk`; installed here if absent), all on this one machine:
//!
//! (a) the ceiling: `redis-benchmark` SET, 64 clients, no pipelining: one
//!     round trip per request, what this Redis answers per second at best.
//! (b) the CLI's bulk rate: `runtime dispatch QUEUE --file` with N lines.
//! (c) batch POSTs of 1,000 jobs (NDJSON), 4 connections: jobs/s, against (b).
//! (d) single-job POSTs with keep-alive, 64 connections: requests/s and the
//!     p50 and p99 latency wrk reports, against (a).
//!     (b) to (d) run for three rounds, alternating; figures are medians.
//! (e) dashboard pages with 1,000,000 jobs in one queue: the overview, the
//!     queue's first page and its last, and a job page, each fetched 20
//!     times; median and slowest.
//!
//! `BENCH_JOBS` sets N (default 100000); `BENCH_DEEP_JOBS` the queue size
//! of (e) (default 1000000); `BENCH_SECONDS` each wrk run (default 10).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use runtime_tests::TempDir;
use runtime_tests::serve::{ServeProcess, request};
use runtime_tests::workers::Env;

const ORDER: &str = r#"{"id":42,"customer":"ada@example.com","items":[{"sku":"A-1","qty":2},{"sku":"B-7","qty":1}]}"#;

const ROUNDS: usize = 3;

const ADMIN: &str = "bench-admin-token-0123456789";

fn main() {
    let n = runtime_tests::job_count("BENCH_JOBS", 100_000);
    let deep = runtime_tests::job_count("BENCH_DEEP_JOBS", 1_000_000);
    let seconds = runtime_tests::job_count("BENCH_SECONDS", 10);
    ensure_wrk();
    let dir = TempDir::new("bench-serve");
    let env = Env::new();
    let server = env.serve(&[], &[("RUNTIME_ADMIN_TOKEN", ADMIN)]);
    let file = dir.path().join("jobs.jsonl");
    std::fs::write(&file, format!("{ORDER}\n").repeat(n)).expect("write jobs");
    let batch = dir.path().join("batch.ndjson");
    let job = format!(r#"{{"payload":{ORDER}}}"#);
    std::fs::write(&batch, format!("{job}\n").repeat(1000)).expect("write batch");

    println!("(a) redis-benchmark SET, 64 clients, no pipelining:");
    let ceiling = env.redis.benchmark_set(64, 1, 400_000);
    println!("    {ceiling:.0} SET/s");

    let (mut bulk, mut batches, mut singles) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let queue = format!("bulk-{round}");
        let started = Instant::now();
        env.run(&["dispatch", &queue, "--file", &file.display().to_string()])
            .expect_code(0);
        let rate = n as f64 / started.elapsed().as_secs_f64();
        println!("    round {}: (b) CLI bulk {rate:.0} jobs/s", round + 1);
        bulk.push(rate);

        let posted = wrk(
            &server,
            &format!("/v1/queues/batch-{round}/batch"),
            &batch,
            4,
            seconds,
            dir.path(),
        );
        let rate = posted.requests_per_second * 1000.0;
        println!(
            "    round {}: (c) batch POSTs {:.0} requests/s = {rate:.0} jobs/s",
            round + 1,
            posted.requests_per_second
        );
        batches.push(rate);

        let single = dir.path().join("single.json");
        std::fs::write(&single, &job).expect("write single");
        let posted = wrk(
            &server,
            &format!("/v1/queues/single-{round}/jobs"),
            &single,
            64,
            seconds,
            dir.path(),
        );
        println!(
            "    round {}: (d) single POSTs {:.0} requests/s, p50 {:.2} ms, p99 {:.2} ms",
            round + 1,
            posted.requests_per_second,
            posted.p50_ms,
            posted.p99_ms
        );
        singles.push(posted);
    }
    let bulk = median(bulk);
    let batch_rate = median(batches);
    let single_rate = median(singles.iter().map(|s| s.requests_per_second).collect());
    let p50 = median(singles.iter().map(|s| s.p50_ms).collect());
    let p99 = median(singles.iter().map(|s| s.p99_ms).collect());
    println!("medians of {ROUNDS} rounds:");
    println!("    (b) CLI bulk:      {bulk:.0} jobs/s");
    println!(
        "    (c) batch POSTs:   {batch_rate:.0} jobs/s ({:.2}x of the CLI's bulk rate)",
        batch_rate / bulk
    );
    println!(
        "    (d) single POSTs:  {single_rate:.0} jobs/s, p50 {p50:.2} ms, p99 {p99:.2} ms ({:.2}x of the redis-benchmark ceiling)",
        single_rate / ceiling
    );

    println!("(e) dashboard pages with {deep} jobs in one queue:");
    let fill = dir.path().join("deep.jsonl");
    std::fs::write(&fill, format!("{ORDER}\n").repeat(deep)).expect("write deep jobs");
    env.run(&["dispatch", "deep", "--file", &fill.display().to_string()])
        .expect_code(0);
    let last = deep.saturating_sub(25);
    let cookie = format!("runtime_token={ADMIN}");
    let pages = [
        ("overview", "/".to_string()),
        ("queue, first page", "/queues/deep".to_string()),
        ("queue, last page", format!("/queues/deep?cursor={last}")),
        ("job page", format!("/jobs/deep:{}", deep / 2)),
    ];
    for (name, path) in pages {
        let mut times = Vec::new();
        for _ in 0..20 {
            let started = Instant::now();
            let status = request(server.addr(), "GET", &path, &[("Cookie", &cookie)], b"").status;
            times.push(started.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(status, 200, "{path}");
        }
        let slowest = times.iter().copied().fold(0.0, f64::max);
        println!(
            "    {name:<18} median {:.1} ms, slowest {slowest:.1} ms",
            median(times)
        );
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

struct Wrk {
    requests_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// wrk POSTing `body` (a file) to `path` on `connections` keep-alive
/// connections over 2 threads for `seconds`.
fn wrk(
    server: &ServeProcess,
    path: &str,
    body: &Path,
    connections: usize,
    seconds: usize,
    dir: &Path,
) -> Wrk {
    let script = dir.join("post.lua");
    std::fs::write(
        &script,
        format!(
            r#"local f = io.open("{}", "rb")
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {ADMIN}"
"#,
            body.display()
        ),
    )
    .expect("write wrk script");
    let out = Command::new("wrk")
        .args(["-t", "2", "-c", &connections.to_string(), "-d"])
        .arg(format!("{seconds}s"))
        .arg("--latency")
        .arg("-s")
        .arg(&script)
        .arg(format!("{}{path}", server.url()))
        .output()
        .expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "wrk: {text}");
    assert!(
        !text.contains("Non-2xx"),
        "some requests were refused:\n{text}"
    );
    let value = |prefix: &str| -> f64 {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in wrk's report:\n{text}"));
        let word = line.trim_start()[prefix.len()..]
            .split_whitespace()
            .next()
            .unwrap_or("");
        millis(word).unwrap_or_else(|| panic!("cannot read {word:?} in {line:?}"))
    };
    Wrk {
        requests_per_second: value("Requests/sec:"),
        p50_ms: value("50%"),
        p99_ms: value("99%"),
    }
}

/// A wrk figure: a plain number, or a time (`812.00us`, `1.20ms`, `2.01s`)
/// in milliseconds.
fn millis(word: &str) -> Option<f64> {
    for (unit, scale) in [("us", 0.001), ("ms", 1.0), ("s", 1000.0)] {
        if let Some(n) = word.strip_suffix(unit) {
            return n.parse::<f64>().ok().map(|n| n * scale);
        }
    }
    word.parse().ok()
}

/// Installs Debian's wrk when it is absent.
fn ensure_wrk() {
    if Command::new("wrk").arg("--version").output().is_ok() {
        return;
    }
    let sudo = if Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"))
    {
        vec![]
    } else {
        vec!["sudo"]
    };
    for args in [
        vec!["apt-get", "update", "-qq"],
        vec!["apt-get", "install", "-y", "-qq", "wrk"],
    ] {
        let all: Vec<&str> = sudo.iter().copied().chain(args).collect();
        let status = Command::new(all[0])
            .args(&all[1..])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .expect("apt-get");
        assert!(status.success(), "installing wrk failed");
    }
}

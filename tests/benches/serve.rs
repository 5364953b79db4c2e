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

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use runtime_tests::redis::RedisServer;
use runtime_tests::{TempDir, guests, runtime_bin};

const ORDER: &str = r#"{"id":42,"customer":"ada@example.com","items":[{"sku":"A-1","qty":2},{"sku":"B-7","qty":1}]}"#;

const ROUNDS: usize = 3;

const ADMIN: &str = "bench-admin-token-0123456789";

fn main() {
    let n = runtime_tests::job_count("BENCH_JOBS", 100_000);
    let deep = runtime_tests::job_count("BENCH_DEEP_JOBS", 1_000_000);
    let seconds = runtime_tests::job_count("BENCH_SECONDS", 10);
    ensure_wrk();
    let dir = TempDir::new("bench-serve");
    let redis = RedisServer::start();
    let server = Serve::start(&redis, dir.path());
    let file = dir.path().join("jobs.jsonl");
    std::fs::write(&file, format!("{ORDER}\n").repeat(n)).expect("write jobs");
    let batch = dir.path().join("batch.ndjson");
    let job = format!(r#"{{"payload":{ORDER}}}"#);
    std::fs::write(&batch, format!("{job}\n").repeat(1000)).expect("write batch");

    println!("(a) redis-benchmark SET, 64 clients, no pipelining:");
    let ceiling = redis_benchmark(redis.port());
    println!("    {ceiling:.0} SET/s");

    let (mut bulk, mut batches, mut singles) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let queue = format!("bulk-{round}");
        let started = Instant::now();
        let out = runtime(&redis, dir.path())
            .args(["dispatch", &queue, "--file"])
            .arg(&file)
            .output()
            .expect("runtime dispatch --file");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
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
    let out = runtime(&redis, dir.path())
        .args(["dispatch", "deep", "--file"])
        .arg(&fill)
        .output()
        .expect("filling the deep queue");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = deep.saturating_sub(25);
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
            let status = get(&server, &path);
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

/// `runtime --backend REDIS`, with a cache dir of its own.
fn runtime(redis: &RedisServer, dir: &Path) -> Command {
    let mut c = Command::new(runtime_bin());
    c.args(["--backend", &redis.url(), "--handlers", guests::DIR])
        .env("RUNTIME_CACHE_DIR", dir.join("cache"));
    c
}

/// A `runtime serve` process on a free loopback port.
struct Serve {
    child: Child,
    port: u16,
}

impl Serve {
    fn start(redis: &RedisServer, dir: &Path) -> Self {
        let mut child = runtime(redis, dir)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("RUNTIME_ADMIN_TOKEN", ADMIN)
            .env("RUNTIME_LOG", "warn,runtime::cli::serve=info")
            .stderr(Stdio::piped())
            .spawn()
            .expect("start runtime serve");
        let stderr = child.stderr.take().expect("serve's stderr");
        let mut lines = BufReader::new(stderr).lines();
        let port = loop {
            let line = lines
                .next()
                .expect("runtime serve ended before it said where it listens")
                .expect("serve's log");
            if let Some(rest) = line.split("serving http://127.0.0.1:").nth(1) {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                break digits.parse().expect("a port");
            }
        };
        // Keep draining the log so the server never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        Serve { child, port }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status of `GET path` as the admin (one connection each).
fn get(server: &Serve, path: &str) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: runtime_token={ADMIN}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).expect("read");
    let head = String::from_utf8_lossy(&answer[..answer.len().min(64)]).to_string();
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

struct Wrk {
    requests_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// wrk POSTing `body` (a file) to `path` on `connections` keep-alive
/// connections over 2 threads for `seconds`.
fn wrk(
    server: &Serve,
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
        .arg(format!("http://127.0.0.1:{}{path}", server.port))
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

/// SETs per second from `redis-benchmark`, 64 clients, one command per
/// round trip.
fn redis_benchmark(port: u16) -> f64 {
    let out = Command::new("redis-benchmark")
        .args([
            "-p",
            &port.to_string(),
            "-t",
            "set",
            "-n",
            "400000",
            "-c",
            "64",
            "-q",
        ])
        .output()
        .expect("redis-benchmark");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    // "SET: 123456.79 requests per second, p50=0.199 msec"
    text.rsplit("SET: ")
        .next()
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read redis-benchmark's answer: {text}"))
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

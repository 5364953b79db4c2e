//! What the outbound HTTP hook costs per request (not a test):
//! `cargo bench -p runtime-tests --bench outbound`.
//!
//! Against one HTTP/1.1 server on loopback (tests/src/http.rs), in the same
//! run:
//!
//! - direct: the host itself sends N GETs, each on a new connection (as a
//!   guest's requests are), with hyper's HTTP/1 client;
//! - guest: one job of the `http` fixture sends the same N GETs through
//!   wasi:http and the grant's checks (allowlist, resolution, address
//!   check, caps), minus a job that sends none: the cost per request of
//!   going through the sandbox.
//!
//! `BENCH_JOBS` sets N (default 500).

use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use runtime::Runtime;
use runtime::config::Config;
use runtime::job::QueueName;
use runtime::sandbox::{Capabilities, RunOutcome};
use runtime_tests::http::{Reply, TestServer};
use runtime_tests::{TempDir, guests, job_count};
use serde_json::json;

const ROUNDS: usize = 5;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    if !runtime_tests::bench_runs() {
        return;
    }
    let n = job_count("BENCH_JOBS", 500);
    let server = TestServer::start();
    server.route("/", Reply::ok("ok"));
    let addr = server.addr();
    let url = format!("http://api.test:{}/", addr.port());
    let tokio = runtime_tests::tokio_runtime(2);

    let direct_once = || {
        tokio.block_on(async {
            let started = Instant::now();
            for _ in 0..n {
                let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
                let io = wasmtime_wasi_http::io::TokioIo::new(stream);
                let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
                    .await
                    .expect("handshake");
                let conn = tokio::spawn(conn);
                let request = http::Request::get("/")
                    .header("host", "api.test")
                    .body(Empty::<bytes::Bytes>::new())
                    .expect("request");
                let response = sender.send_request(request).await.expect("response");
                let body = response.into_body().collect().await.expect("body");
                assert_eq!(body.to_bytes().as_ref(), b"ok");
                drop(sender);
                let _ = conn.await;
            }
            started.elapsed()
        })
    };

    let cache = TempDir::new("bench-outbound");
    let ip = addr.ip();
    let config = Config::parse(&format!(
        "cache_dir = {:?}\n[sandbox]\nallow_private_networks = [\"{ip}/32\"]\nresolve = {{ \"api.test\" = [\"{ip}\"] }}\n\
         [queues.{q}]\nallowed_outbound_hosts = [\"http://api.test:{port}\"]\nhttp_max_requests = {max}\ntimeout_ms = 600000\noutput_kib = 4096\n",
        cache.path().display().to_string(),
        q = guests::HTTP,
        port = addr.port(),
        max = n,
    ))
    .expect("config");
    let rt = Runtime::in_memory(guests::DIR.into(), config).expect("runtime");
    let queue = QueueName::new(guests::HTTP).expect("queue");
    let handler = rt.registry().handler(&queue).expect("handler");
    let grants = rt.registry().settings(&queue).grants.clone();
    let caps = Capabilities::default().granting(grants);
    let sandbox = rt.registry().sandbox().clone();
    let run = |payload: serde_json::Value| {
        let record = runtime_tests::running_record(guests::HTTP, &payload.to_string());
        let report = tokio.block_on(sandbox.run(&handler, &record, caps.clone()));
        assert!(
            matches!(report.outcome, RunOutcome::Done),
            "{:?}: {}",
            report.outcome,
            report.log
        );
        report.elapsed
    };
    let per = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
    // Rounds alternate the two, so a change in the machine's load falls on
    // both; the medians are compared.
    let (mut directs, mut guests_us) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        directs.push(per(direct_once()));
        let empty = run(json!({"requests": [], "repeat": 1}));
        let guest = run(json!({"requests": [{"url": url}], "repeat": n}));
        guests_us.push(per(guest.saturating_sub(empty)));
    }
    let direct_us = median(&mut directs);
    let guest_us = median(&mut guests_us);
    println!(
        "outbound HTTP, {n} GETs to a loopback server, a new connection each, median of {ROUNDS} rounds:"
    );
    println!("    direct from the host (hyper)     {direct_us:8.1} µs/request");
    println!("    from a guest through the hook    {guest_us:8.1} µs/request");
    println!(
        "    hook and wasi:http overhead      {:8.1} µs/request ({:.2}x direct)",
        guest_us - direct_us,
        guest_us / direct_us
    );
}

//! `runtime worker` and the admin commands, as processes on a real Redis:
//! wake-up without polling, delayed jobs on time, kill -9 mid-job (the
//! lease runs out and the job runs again, or fails as worker lost), a clean
//! stop on SIGTERM, Redis restarting under a running worker, the admin
//! commands over the same queue, and the throughput a worker counts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use runtime::TenantName;
use runtime::queue::redis::{DEFAULT_PREFIX, RedisBackend};
use runtime::queue::{Clock, SystemClock, TenantStore, Throughput, minute_of};
use runtime_tests::redis::RedisServer;
use runtime_tests::workers::{Env, eventually};
use runtime_tests::{TempDir, guests, runtime};
use serde_json::Value;

#[test]
fn dispatch_enqueues_and_a_draining_worker_runs_everything() {
    let env = Env::new();
    let id = env.dispatch(guests::NAP, "{}", &[]);
    assert_eq!(id, "nap:1");
    let record = env.run(&["dispatch", guests::NAP, "{}", "--json"]);
    record.expect_code(0);
    assert_eq!(record.json()["state"], "pending");
    let lines: String = (0..50).map(|i| format!("{{\"id\":{i}}}\n\n")).collect();
    let bulk = env.dispatch_file(guests::NAP, &lines, &[]);
    bulk.expect_code(0);
    assert!(
        bulk.stdout()
            .contains("dispatched 50 jobs to nap: nap:3 .. nap:52"),
        "{}",
        bulk.stdout()
    );
    assert_eq!(env.count(guests::NAP, "pending"), 52);
    let mut w = env.worker(&[guests::NAP, "--drain"]);
    assert_eq!(w.wait(Duration::from_secs(60)), 0, "{}", w.log());
    let c = env.counts(guests::NAP);
    assert_eq!(
        (c["done"].as_u64(), c["pending"].as_u64()),
        (Some(52), Some(0))
    );
}

#[test]
fn a_bad_line_in_the_file_enqueues_nothing() {
    let env = Env::new();
    let run = env.dispatch_file(guests::NAP, "{}\n{\"oops\":\n{}\n", &[]);
    run.expect_code(2);
    assert!(
        run.stderr().contains("line 2: payload is not valid JSON")
            && run.stderr().contains("nothing was enqueued"),
        "{}",
        run.stderr()
    );
    assert_eq!(env.count(guests::NAP, "pending"), 0);
}

#[test]
fn max_jobs_runs_that_many_and_exits() {
    let env = Env::new();
    for _ in 0..5 {
        env.dispatch(guests::NAP, "{}", &[]);
    }
    let mut w = env.worker(&[guests::NAP, "--max-jobs", "3", "--concurrency", "1"]);
    assert_eq!(w.wait(Duration::from_secs(60)), 0, "{}", w.log());
    let c = env.counts(guests::NAP);
    assert_eq!(
        (c["done"].as_u64(), c["pending"].as_u64()),
        (Some(3), Some(2))
    );
}

#[test]
fn an_idle_worker_starts_a_new_job_without_polling_and_stops_on_sigterm() {
    let env = Env::new();
    let mut w = env.worker(&[guests::NAP]);
    // Idle: blocked in BLPOP, not spinning.
    eventually(
        Duration::from_secs(20),
        "the worker to block in BLPOP",
        || env.redis.blocked_clients().expect("INFO clients") >= 1,
    );
    for n in 1..=3 {
        env.dispatch(guests::NAP, "{}", &[]);
        eventually(Duration::from_secs(5), "the job to be done", || {
            env.count(guests::NAP, "done") == n
        });
    }
    w.signal("TERM");
    assert_eq!(w.wait(Duration::from_secs(20)), 0, "{}", w.log());
    assert!(w.log().contains("worker stopped"), "{}", w.log());
}

#[test]
fn a_delayed_job_runs_on_time_not_before() {
    let env = Env::new();
    let _w = env.worker(&[guests::NAP]);
    let dispatched = Instant::now();
    env.dispatch(guests::NAP, "{}", &["--delay", "1500ms"]);
    assert_eq!(env.count(guests::NAP, "scheduled"), 1);
    eventually(
        Duration::from_secs(10),
        "the delayed job to be done",
        || env.count(guests::NAP, "done") == 1,
    );
    let took = dispatched.elapsed();
    assert!(took >= Duration::from_millis(1500), "ran early: {took:?}");
    assert!(
        took < Duration::from_millis(1500) + Duration::from_secs(3),
        "ran late: {took:?}"
    );
}

#[test]
fn a_killed_worker_loses_its_lease_and_the_job_runs_again() {
    let env = Env::new();
    let id = env.dispatch(guests::NAP, r#"{"ms":60000}"#, &["--max-attempts", "2"]);
    let mut a = env.worker(&[guests::NAP, "--lease", "1s"]);
    eventually(Duration::from_secs(10), "the job to be claimed", || {
        env.count(guests::NAP, "running") == 1
    });
    a.kill(); // SIGKILL: no chance to hand anything back
    assert_eq!(
        env.show(&id)["state"],
        "running",
        "Redis still holds it under the dead lease"
    );
    // The next worker, started at once, finds nothing to claim and waits
    // no longer than the dead lease: its claim then takes it back,
    // attempt 2.
    let b = env.worker(&[guests::NAP, "--lease", "5s"]);
    eventually(Duration::from_secs(10), "attempt 2 to start", || {
        env.show(&id)["attempts"] == 2
    });
    let job = env.show(&id);
    assert_eq!(job["state"], "running");
    assert_eq!(
        job["history"][0]["outcome"],
        "worker lost: lease expired during attempt 1"
    );
    assert!(job["history"][0]["ended_at"].as_u64().is_some());
    assert_eq!(job["history"][1]["number"], 2);
    drop(b);
}

#[test]
fn a_killed_worker_on_the_last_attempt_fails_the_job_as_worker_lost() {
    let env = Env::new();
    let id = env.dispatch(guests::NAP, r#"{"ms":60000}"#, &["--max-attempts", "1"]);
    let mut a = env.worker(&[guests::NAP, "--lease", "1s"]);
    eventually(Duration::from_secs(10), "the job to be claimed", || {
        env.count(guests::NAP, "running") == 1
    });
    a.kill();
    // The next worker waits no longer than the dead lease, then its claim
    // fails the job: nothing is left to run.
    let mut b = env.worker(&[guests::NAP]);
    eventually(Duration::from_secs(30), "the job to fail", || {
        env.show(&id)["state"] == "failed"
    });
    b.signal("TERM");
    assert_eq!(b.wait(Duration::from_secs(30)), 0, "{}", b.log());
    let job = env.show(&id);
    assert_eq!(job["state"], "failed");
    assert_eq!(job["error"], "worker lost: lease expired during attempt 1");
    let shown = env.run(&["jobs", "show", &id]);
    assert!(shown.stdout().contains("attempt 1: "), "{}", shown.stdout());
    assert!(shown.stdout().contains("worker lost"), "{}", shown.stdout());
}

#[test]
fn sigterm_lets_short_jobs_finish_and_hands_long_ones_back_uncounted() {
    let env = Env::new();
    let short = env.dispatch(guests::NAP, r#"{"ms":700}"#, &["--priority", "5"]);
    let long = env.dispatch(guests::NAP, r#"{"ms":60000}"#, &[]);
    let mut w = env.worker(&[guests::NAP, "--grace", "3s"]);
    eventually(Duration::from_secs(10), "both jobs to be running", || {
        env.count(guests::NAP, "running") == 2
    });
    w.signal("TERM");
    assert_eq!(w.wait(Duration::from_secs(30)), 0, "{}", w.log());
    let c = env.counts(guests::NAP);
    assert_eq!(
        c["done"], 1,
        "the short job finished within the grace period"
    );
    assert!(
        env.run(&["jobs", "show", &short]).code() != 0,
        "done jobs are removed"
    );
    let job = env.show(&long);
    assert_eq!(job["state"], "pending", "handed back");
    assert_eq!(job["attempts"], 0, "the attempt is not counted");
    assert_eq!(job["history"], serde_json::json!([]));
}

#[test]
fn the_worker_rides_out_a_redis_restart_without_losing_or_double_acking_jobs() {
    let redis = RedisServer::start_with(&[
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--save",
        "",
    ]);
    let env = Env::with(redis);
    let total = 300;
    let lines: String = (0..total)
        .map(|i| format!("{{\"ms\":{}}}\n", i % 3 * 10))
        .collect();
    env.dispatch_file(guests::NAP, &lines, &[]).expect_code(0);
    let mut w = env.worker(&[guests::NAP, "--lease", "2s", "--concurrency", "4"]);
    eventually(Duration::from_secs(30), "some jobs to be done", || {
        env.count(guests::NAP, "done") >= 20
    });
    let mut env = env;
    env.redis.kill();
    // Down until the worker has seen the outage.
    w.wait_for_log("unreachable", Duration::from_secs(30));
    env.redis.restart();
    eventually(Duration::from_secs(90), "every job to be done", || {
        env.count(guests::NAP, "done") >= total
    });
    let c = env.counts(guests::NAP);
    assert_eq!(c["done"], total, "each job acknowledged exactly once: {c}");
    assert_eq!(
        (
            c["failed"].as_u64(),
            c["pending"].as_u64(),
            c["running"].as_u64()
        ),
        (Some(0), Some(0), Some(0))
    );
    assert!(
        w.log().contains("unreachable"),
        "the outage was logged:\n{}",
        w.log()
    );
    assert!(w.is_running(), "the worker did not exit");
    w.signal("TERM");
    assert_eq!(w.wait(Duration::from_secs(20)), 0, "{}", w.log());
}

#[test]
fn admin_commands_show_retry_delete_and_purge() {
    let env = Env::new();
    let failing = env.dispatch(guests::OUTCOMES, r#"{"finally":"bad input"}"#, &[]);
    let mut w = env.worker(&[guests::OUTCOMES, "--drain"]);
    assert_eq!(w.wait(Duration::from_secs(60)), 0, "{}", w.log());
    let table = env.run(&["queues"]);
    table.expect_code(0);
    assert!(table.stdout().contains("QUEUE"), "{}", table.stdout());
    assert!(
        table
            .stdout()
            .lines()
            .any(|l| l.starts_with(guests::OUTCOMES) && l.split_whitespace().nth(4) == Some("1")),
        "{}",
        table.stdout()
    );
    let listed = env.run(&[
        "jobs",
        "list",
        guests::OUTCOMES,
        "--state",
        "failed",
        "--json",
    ]);
    listed.expect_code(0);
    let listed = listed.json();
    assert_eq!(listed[0]["id"], failing.as_str());
    assert_eq!(listed[0]["error"], "bad input");
    assert_eq!(listed[0]["history"][0]["number"], 1);
    assert!(listed[0]["history"][0]["started_at"].as_u64().is_some());
    env.run(&["jobs", "retry", &failing]).expect_code(0);
    assert_eq!(env.show(&failing)["state"], "pending");
    assert_eq!(env.show(&failing)["attempts"], 0);
    let again = env.run(&["jobs", "retry", &failing]);
    again.expect_code(2);
    assert!(again.stderr().contains("is pending"), "{}", again.stderr());
    env.run(&["jobs", "delete", &failing]).expect_code(0);
    let gone = env.run(&["jobs", "show", &failing]);
    gone.expect_code(2);
    assert!(gone.stderr().contains("no job"), "{}", gone.stderr());
    for _ in 0..4 {
        env.dispatch(guests::OUTCOMES, r#"{"finally":"x"}"#, &[]);
    }
    let mut w = env.worker(&[guests::OUTCOMES, "--drain"]);
    assert_eq!(w.wait(Duration::from_secs(60)), 0, "{}", w.log());
    assert_eq!(env.count(guests::OUTCOMES, "failed"), 4);
    let retried = env.run(&["jobs", "retry", "--all-failed", guests::OUTCOMES]);
    retried.expect_code(0);
    assert!(
        retried.stdout().contains("retried 4"),
        "{}",
        retried.stdout()
    );
    assert_eq!(env.count(guests::OUTCOMES, "pending"), 4);
    let purged = env.run(&["queues", "purge", guests::OUTCOMES]);
    purged.expect_code(0);
    assert!(
        purged.stdout().contains("4 jobs removed"),
        "{}",
        purged.stdout()
    );
    assert_eq!(env.count(guests::OUTCOMES, "pending"), 0);
    let bad = env.run(&["jobs", "show", "not-an-id"]);
    bad.expect_code(2);
    assert!(bad.stderr().contains("invalid job id"), "{}", bad.stderr());
}

#[test]
fn commands_that_need_a_queue_server_say_so_and_unreachable_redis_names_the_url() {
    let cache = TempDir::new("worker");
    let run = runtime(cache.path(), &["worker", "hello"], None);
    run.expect_code(2);
    assert!(
        run.stderr().contains("needs a queue server"),
        "{}",
        run.stderr()
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a port");
    let url = format!("redis://127.0.0.1:{port}");
    let run = runtime(
        cache.path(),
        &["--backend", &url, "dispatch", "hello", "{}"],
        None,
    );
    run.expect_code(2);
    assert!(run.stderr().contains(&url), "{}", run.stderr());
    assert!(run.stderr().contains("cannot connect"), "{}", run.stderr());
    let run = runtime(cache.path(), &["--backend", &url, "worker", "hello"], None);
    run.expect_code(2);
    assert!(run.stderr().contains(&url), "{}", run.stderr());
    // With JSON logs, the fatal error is one more JSON record.
    let run = runtime(
        cache.path(),
        &["--log-format", "json", "--backend", &url, "worker", "hello"],
        None,
    );
    run.expect_code(2);
    let line = run.stderr().lines().last().unwrap_or_default().to_string();
    let record: serde_json::Value = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {}", run.stderr()));
    assert_eq!(record["level"], "ERROR", "{line}");
    let error = record["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&url) && error.contains("cannot connect"),
        "{line}"
    );
}

#[test]
fn a_changed_module_file_swaps_in_for_new_jobs_and_a_broken_one_keeps_the_old() {
    let mut env = Env::new();
    let dir = TempDir::new("hot-swap");
    env.handlers = dir.path().display().to_string();
    let file = dir.path().join("swap_job.wasm");
    // Replaced as a deploy should: written aside, renamed into place.
    let publish = |fixture: &str| {
        let tmp = dir.path().join("swap_job.wasm.tmp");
        std::fs::copy(format!("{}/{fixture}", guests::DIR), &tmp).expect("copy module");
        std::fs::rename(&tmp, &file).expect("rename module");
    };
    publish("nap_job.wasm");
    let w = env.worker(&["swap", "--concurrency", "4"]);
    // A long job on the first version...
    let long = env.dispatch("swap", r#"{"ms":1500}"#, &["--max-attempts", "1"]);
    eventually(Duration::from_secs(10), "the long job to start", || {
        env.count("swap", "running") == 1
    });
    // ...a broken file, written in place: logged by name, old version kept.
    std::fs::write(&file, b"not a module").expect("overwrite module");
    w.wait_for_log("cannot be loaded", Duration::from_secs(10));
    assert!(w.log().contains(&file.display().to_string()), "{}", w.log());
    let during = env.dispatch("swap", r#"{"ms":1}"#, &["--max-attempts", "1"]);
    // A good new version (it panics): new jobs run it.
    publish("panic_job.wasm");
    w.wait_for_log("handler module reloaded", Duration::from_secs(10));
    let after = env.dispatch("swap", "{}", &["--max-attempts", "1"]);
    eventually(Duration::from_secs(20), "all three jobs to end", || {
        env.count("swap", "done") == 2 && env.count("swap", "failed") == 1
    });
    // The long job ran on the version it started with, to the end; the
    // job dispatched while the file was broken ran on the old version.
    for id in [&long, &during] {
        assert!(
            env.run(&["jobs", "show", id]).code() != 0,
            "{id} is done (done jobs are removed)"
        );
    }
    let failed = env.show(&after);
    assert_eq!(failed["state"], "failed");
    assert!(
        failed["error"]
            .as_str()
            .unwrap_or_default()
            .starts_with("panic"),
        "{failed}"
    );
    // The file removed: logged, and the loaded version keeps serving.
    std::fs::remove_file(&file).expect("remove module");
    w.wait_for_log("file is gone", Duration::from_secs(10));
    env.dispatch("swap", "{}", &["--max-attempts", "1"]);
    eventually(
        Duration::from_secs(20),
        "the job to fail on the loaded version",
        || env.count("swap", "failed") == 2,
    );
}

/// `GET /metrics` over plain HTTP/1.1; the body.
fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to metrics");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

/// The value of one sample line, e.g. `runtime_jobs_done_total{tenant="default",queue="nap"}`.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn json_logs_metrics_and_the_workers_registry_describe_a_running_worker() {
    let env = Env::new();
    let mut w = env.worker(&[
        guests::NAP,
        guests::PANIC,
        "--log-format",
        "json",
        "--metrics-addr",
        "127.0.0.1:0",
    ]);
    let nap = env.dispatch(guests::NAP, r#"{"ms":1}"#, &[]);
    let panic = env.dispatch(guests::PANIC, "{}", &["--max-attempts", "1"]);
    eventually(Duration::from_secs(20), "both jobs to end", || {
        env.count(guests::NAP, "done") == 1 && env.count(guests::PANIC, "failed") == 1
    });
    // Logs: one JSON object per line; each attempt's line carries the job.
    let lines: Vec<Value> = w
        .log()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let line_of = |message: &str, job: &str| {
        lines
            .iter()
            .find(|l| l["message"] == message && l["job"] == job)
            .unwrap_or_else(|| panic!("no {message:?} line for {job} in {lines:#?}"))
    };
    let done = line_of("job done", &nap);
    assert_eq!(
        (
            &done["tenant"],
            &done["queue"],
            &done["attempt"],
            &done["outcome"]
        ),
        (
            &Value::from("default"),
            &Value::from("nap"),
            &Value::from(1),
            &Value::from("done")
        )
    );
    assert!(done["duration_ms"].as_f64().is_some(), "{done}");
    let failed = line_of("job failed", &panic);
    assert!(
        failed["error"]
            .as_str()
            .unwrap_or_default()
            .starts_with("panic"),
        "{failed}"
    );
    // The guest's own log line, with its job's context.
    let guest = lines
        .iter()
        .find(|l| l["target"] == "guest")
        .expect("a guest log line");
    assert_eq!(
        (&guest["job"], &guest["tenant"], &guest["queue"]),
        (
            &Value::from(nap.as_str()),
            &Value::from("default"),
            &Value::from("nap")
        )
    );
    assert!(
        guest["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("napped 1 ms"),
        "{guest}"
    );
    // Metrics.
    let addr = lines
        .iter()
        .find_map(|l| {
            let m = l["message"].as_str()?;
            Some(
                m.strip_prefix("metrics at http://")?
                    .strip_suffix("/metrics")?
                    .to_string(),
            )
        })
        .expect("the metrics address is logged");
    let metrics = scrape(&addr);
    for (series, value) in [
        (
            "runtime_jobs_done_total{tenant=\"default\",queue=\"nap\"}",
            1.0,
        ),
        (
            "runtime_jobs_processed_total{tenant=\"default\",queue=\"panic\"}",
            1.0,
        ),
        (
            "runtime_jobs_failed_total{tenant=\"default\",queue=\"panic\",reason=\"panic\"}",
            1.0,
        ),
        (
            "runtime_job_duration_seconds_count{tenant=\"default\",queue=\"nap\"}",
            1.0,
        ),
        (
            "runtime_jobs_in_flight{tenant=\"default\",queue=\"nap\"}",
            0.0,
        ),
        (
            "runtime_queue_jobs{tenant=\"default\",queue=\"panic\",state=\"failed\"}",
            1.0,
        ),
        ("runtime_backend_up", 1.0),
        ("runtime_sandbox_instances_total", 2.0),
        ("runtime_sandbox_instances_live", 0.0),
        ("runtime_sandbox_memory_bytes", 0.0),
    ] {
        assert_eq!(
            sample(&metrics, series),
            Some(value),
            "{series} in\n{metrics}"
        );
    }
    assert!(sample(&metrics, "process_resident_memory_bytes").is_some_and(|v| v > 0.0));
    // The registry lists this worker while it runs, and not after it stops.
    let workers = env.run(&["workers", "--json"]);
    workers.expect_code(0);
    let listed = workers.json();
    let me = listed
        .as_array()
        .and_then(|ws| ws.iter().find(|x| x["pid"] == w.pid()))
        .unwrap_or_else(|| panic!("worker {} not listed: {listed}", w.pid()));
    assert_eq!(me["queues"], serde_json::json!(["nap", "panic"]));
    assert_eq!(me["concurrency"], 16);
    let table = env.run(&["workers"]);
    assert!(
        table.stdout().contains(&w.pid().to_string()),
        "{}",
        table.stdout()
    );
    w.signal("TERM");
    assert_eq!(w.wait(Duration::from_secs(20)), 0, "{}", w.log());
    assert_eq!(
        env.run(&["workers", "--json"]).json(),
        serde_json::json!([])
    );
    // A metrics address that cannot be served stops the start, named.
    let bad = env.run(&["worker", guests::NAP, "--metrics-addr", "nonsense"]);
    bad.expect_code(2);
    assert!(
        bad.stderr().contains("--metrics-addr nonsense") && bad.stderr().contains("host:port"),
        "{}",
        bad.stderr()
    );
}

#[test]
fn a_worker_warns_when_redis_may_evict_jobs() {
    let redis = RedisServer::start_with(&["--maxmemory-policy", "allkeys-lru"]);
    let env = Env::with(redis);
    let w = env.worker(&[guests::NAP]);
    assert!(
        w.log().contains("maxmemory-policy allkeys-lru") && w.log().contains("noeviction"),
        "{}",
        w.log()
    );
}

#[test]
fn runtime_deploy_publishes_a_module_to_every_worker_and_withdraw_goes_back_to_the_file() {
    let mut env = Env::new();
    let dir = TempDir::new("deploy");
    // No module file for the queue: only what is published.
    env.handlers = dir.path().display().to_string();
    let fixture = |name: &str| format!("{}/{name}", guests::DIR);
    let bad = dir.path().join("bad.wasm");
    std::fs::write(&bad, b"\0asm garbage").expect("write bad module");
    let refused = env.run(&["deploy", "dep", &bad.display().to_string()]);
    refused.expect_code(2);
    assert!(
        refused.stderr().contains("bad.wasm"),
        "{}",
        refused.stderr()
    );
    let deployed = env.run(&["deploy", "dep", &fixture("nap_job.wasm")]);
    deployed.expect_code(0);
    assert!(
        deployed.stdout().contains("deployed"),
        "{}",
        deployed.stdout()
    );
    // Two workers (two machines, say) run the published module from
    // their first job.
    let w1 = env.worker(&["dep"]);
    let w2 = env.worker(&["dep"]);
    let installed = |w: &runtime_tests::workers::RuntimeProcess| {
        w.log().matches("published module installed").count()
    };
    eventually(
        Duration::from_secs(10),
        "both workers to install it",
        || installed(&w1) == 1 && installed(&w2) == 1,
    );
    assert!(
        !w1.log().contains("no handler"),
        "no missing-file warning for a published module:\n{}",
        w1.log()
    );
    env.dispatch("dep", r#"{"ms":1}"#, &["--max-attempts", "1"]);
    eventually(Duration::from_secs(20), "the job to be done", || {
        env.count("dep", "done") == 1
    });
    // A new version reaches both.
    env.run(&["deploy", "dep", &fixture("panic_job.wasm")])
        .expect_code(0);
    eventually(Duration::from_secs(10), "both workers to swap", || {
        installed(&w1) == 2 && installed(&w2) == 2
    });
    for _ in 0..4 {
        env.dispatch("dep", "{}", &["--max-attempts", "1"]);
    }
    eventually(
        Duration::from_secs(20),
        "the panicking jobs to fail",
        || env.count("dep", "failed") == 4,
    );
    // Withdrawn: back to the queue's module file.
    std::fs::copy(fixture("nap_job.wasm"), dir.path().join("dep_job.wasm")).expect("copy");
    let withdrawn = env.run(&["deploy", "dep", "--withdraw"]);
    withdrawn.expect_code(0);
    w1.wait_for_log("published module withdrawn", Duration::from_secs(10));
    w2.wait_for_log("published module withdrawn", Duration::from_secs(10));
    env.dispatch("dep", r#"{"ms":1}"#, &["--max-attempts", "1"]);
    eventually(
        Duration::from_secs(20),
        "the job to run on the file",
        || env.count("dep", "done") == 2,
    );
    assert_eq!(env.count("dep", "failed"), 4);
}

#[test]
fn a_killed_worker_drops_out_of_the_registry_after_three_missed_heartbeats() {
    let env = Env::new();
    let mut w = env.worker(&[guests::NAP, "--heartbeat", "200ms"]);
    let pid = w.pid();
    let listed = |pid: u32| {
        let run = env.run(&["workers", "--json"]);
        run.expect_code(0);
        run.json()
            .as_array()
            .is_some_and(|ws| ws.iter().any(|x| x["pid"] == pid))
    };
    eventually(Duration::from_secs(10), "the worker to be listed", || {
        listed(pid)
    });
    w.kill(); // no chance to unregister
    eventually(
        Duration::from_secs(10),
        "the dead worker to drop out",
        || !listed(pid),
    );
}

#[test]
fn a_paused_queue_keeps_its_jobs_from_a_running_worker_until_resumed() {
    let env = Env::new();
    let w = env.worker(&[guests::NAP, guests::NOOP]);
    let paused = env.run(&["queues", "pause", guests::NAP]);
    assert!(
        paused
            .expect_code(0)
            .stdout()
            .contains("paused: workers take none"),
        "{}",
        paused.stdout()
    );
    let held = env.dispatch(guests::NAP, r#"{"ms": 1}"#, &[]);
    let other = env.dispatch(guests::NOOP, "{}", &[]);
    // The worker took the other queue's job, dispatched after; the paused
    // queue's stays pending.
    w.wait_for_log(&format!("job={other} "), Duration::from_secs(60));
    assert_eq!(env.count(guests::NAP, "pending"), 1, "{}", w.log());
    let listed = env.run(&["queues", "--json"]).expect_code(0).json();
    assert_eq!(listed[guests::NAP]["paused"], true, "{listed}");
    assert_eq!(listed[guests::NOOP]["paused"], false, "{listed}");
    let table = env.run(&["queues"]).expect_code(0).stdout();
    let row = table
        .lines()
        .find(|l| l.starts_with(&format!("{} ", guests::NAP)))
        .unwrap_or_default();
    assert!(row.ends_with("paused"), "{table}");
    env.run(&["queues", "resume", guests::NAP]).expect_code(0);
    w.wait_for_log(&format!("job={held} "), Duration::from_secs(60));
    assert_eq!(env.count(guests::NAP, "pending"), 0);
    let again = env.run(&["queues", "resume", guests::NAP]);
    assert!(again.expect_code(0).stdout().contains("was not paused"));
}

#[test]
fn a_worker_counts_its_processed_and_failed_attempts_per_minute() {
    let env = Env::new();
    let from = minute_of(SystemClock.now());
    env.dispatch(guests::NAP, r#"{"ms":1}"#, &[]);
    env.dispatch(guests::PANIC, "{}", &["--max-attempts", "1"]);
    let mut w = env.worker(&[guests::NAP, guests::PANIC, "--drain"]);
    assert_eq!(w.wait(Duration::from_secs(60)), 0, "{}", w.log());
    assert_eq!(env.count(guests::PANIC, "failed"), 1);
    // A run across the turn of a minute counts in both: the sum is the run's.
    let minutes = minute_of(SystemClock.now()) - from + 1;
    let minutes = usize::try_from(minutes).expect("a few minutes");
    let read = |tenant: Option<TenantName>| {
        runtime_tests::tokio_runtime(1).block_on(async {
            let backend = RedisBackend::connect(&env.url(), DEFAULT_PREFIX, Arc::new(SystemClock))
                .await
                .expect("connect to the test redis");
            let counts = backend
                .throughput(tenant.as_ref(), from, minutes)
                .await
                .expect("read the throughput");
            assert_eq!(counts.len(), minutes);
            counts
                .into_iter()
                .fold(Throughput::default(), |mut sum, n| {
                    sum += n;
                    sum
                })
        })
    };
    let ran = Throughput {
        processed: 2,
        failed: 1,
    };
    assert_eq!(read(None), ran, "the fleet's");
    assert_eq!(
        read(Some(TenantName::default_tenant())),
        ran,
        "the tenant's"
    );
    let other = TenantName::new("acme").expect("tenant name");
    assert_eq!(read(Some(other)), Throughput::default(), "another tenant's");
}

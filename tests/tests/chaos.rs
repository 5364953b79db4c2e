//! Chaos: three `runtime worker` processes on a real Redis run 5,000 jobs
//! while a driver kills a random one every half second and starts a
//! replacement (kill -9, or SIGTERM as in a rolling deploy), or while Redis
//! itself is killed and restarted. Every job records each run it starts
//! (the `record` fixture dispatches `{"job", "attempt"}` to another queue
//! before it naps), so the test can prove that no job is lost and count
//! those that ran more than once. The last test kills workers and restarts
//! Redis under three tenants at once, each with its own copy of the fixture
//! and its own records queue, and proves too that no tenant's records hold
//! another's jobs.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use runtime_tests::guests;
use runtime_tests::redis::RedisServer;
use runtime_tests::workers::{Env, RuntimeProcess, eventually};

const JOBS: u64 = 5000;
const WORKERS: usize = 3;
const CONCURRENCY: &str = "8";
const RECORDS: &str = "chaos-runs";

/// Dispatches the jobs: each naps 0 to 60 ms after recording its run.
fn dispatch_jobs(env: &Env) {
    let lines: String = (0..JOBS)
        .map(|i| format!("{{\"to\":\"{RECORDS}\",\"ms\":{}}}\n", i % 5 * 15))
        .collect();
    env.dispatch_file(guests::RECORD, &lines, &["--max-attempts", "25"])
        .expect_code(0);
}

fn start_worker(env: &Env, grace: &str) -> RuntimeProcess {
    env.worker(&[
        guests::RECORD,
        // Short, so killed workers' jobs come back quickly; not so short
        // that a loaded machine's late renewal looks like a kill.
        "--lease",
        "2s",
        "--concurrency",
        CONCURRENCY,
        "--grace",
        grace,
    ])
}

/// A cheap random index (the test needs no seedable generator).
fn pick(n: usize) -> usize {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    nanos as usize % n
}

/// Every record of `queue` in `state`. Paged through: `jobs list` shows
/// at most 1,000 records at once; the caller waits until nothing moves
/// them.
fn listed(env: &Env, queue: &str, state: &str) -> Vec<serde_json::Value> {
    let mut records = Vec::new();
    loop {
        let offset = records.len().to_string();
        let list = env.run(&[
            "jobs", "list", queue, "--state", state, "--limit", "1000", "--offset", &offset,
            "--json",
        ]);
        list.expect_code(0);
        let page = list.json().as_array().cloned().expect("a list");
        if page.is_empty() {
            return records;
        }
        records.extend(page);
    }
}

/// A record's payload, as JSON.
fn payload_of(record: &serde_json::Value) -> serde_json::Value {
    let payload = &record["payload"];
    match payload.as_str() {
        Some(text) => serde_json::from_str(text).expect("record payload is JSON"),
        None => payload.clone(),
    }
}

/// The runs recorded in `payloads`, by job id: the attempt number of each.
fn runs_of(payloads: impl IntoIterator<Item = serde_json::Value>) -> BTreeMap<String, Vec<u64>> {
    let mut runs: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for payload in payloads {
        let job = payload["job"].as_str().expect("job id").to_string();
        let attempt = payload["attempt"].as_u64().expect("attempt");
        runs.entry(job).or_default().push(attempt);
    }
    runs
}

/// Every run recorded, by job id: the attempt number of each run.
fn runs(env: &Env) -> BTreeMap<String, Vec<u64>> {
    runs_of(listed(env, RECORDS, "pending").iter().map(payload_of))
}

/// A Redis that keeps its data through a kill: an append-only file synced
/// every second.
fn durable_redis() -> RedisServer {
    RedisServer::start_with(&[
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
        "--save",
        "",
    ])
}

/// Waits for every job to be done and checks the queue's final counts.
fn all_done(env: &Env) {
    eventually(Duration::from_secs(180), "every job to be done", || {
        env.count(guests::RECORD, "done") >= JOBS
    });
    let c = env.counts(guests::RECORD);
    assert_eq!(c["done"], JOBS, "each job acknowledged exactly once: {c}");
    for state in ["pending", "scheduled", "running", "failed"] {
        assert_eq!(c[state], 0, "{state}: {c}");
    }
}

/// The logs of every worker started, replaced ones included.
fn worker_logs(env: &Env) -> String {
    let mut all = String::new();
    for entry in std::fs::read_dir(env.cache.path()).expect("cache dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "log") {
            all.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
        }
    }
    all
}

/// Every job ran at least once; returns how many ran more than once.
fn none_lost(runs: &BTreeMap<String, Vec<u64>>) -> usize {
    for n in 1..=JOBS {
        let id = format!("{}:{n}", guests::RECORD);
        assert!(runs.contains_key(&id), "{id} never ran");
    }
    assert_eq!(runs.len() as u64, JOBS, "records of unknown jobs");
    runs.values().filter(|r| r.len() > 1).count()
}

/// Kills or stops a random worker every half second until the jobs are
/// done, starting a replacement each time; returns how many it stopped.
fn churn(env: &Env, workers: &mut [RuntimeProcess], signal: &str, grace: &str) -> usize {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut stopped = 0;
    while env.count(guests::RECORD, "done") < JOBS && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        let victim = &mut workers[pick(WORKERS)];
        victim.signal(signal);
        let code = victim.wait(Duration::from_secs(30));
        if signal == "TERM" {
            assert_eq!(code, 0, "a stopped worker exits 0:\n{}", victim.log());
        }
        stopped += 1;
        *victim = start_worker(env, grace);
    }
    stopped
}

#[test]
fn kill_9_every_half_second_loses_nothing() {
    let env = Env::new();
    dispatch_jobs(&env);
    let mut workers: Vec<_> = (0..WORKERS).map(|_| start_worker(&env, "10s")).collect();
    let kills = churn(&env, &mut workers, "KILL", "10s");
    all_done(&env);
    let runs = runs(&env);
    let twice = none_lost(&runs);
    // A job runs again only after the lease of a killed worker ran out, so
    // as a new attempt: no attempt of any job ran twice.
    for (id, attempts) in &runs {
        let mut sorted = attempts.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(
            sorted.len(),
            attempts.len(),
            "{id} ran an attempt twice: {attempts:?}"
        );
    }
    // Every extra run is explained: a job in flight at a kill (at most a
    // worker's concurrency per kill), or an attempt a live worker logged as
    // not done (its lease lost on a stalled machine, or a crash retried).
    let extra: usize = runs.values().map(|r| r.len() - 1).sum();
    let logs = worker_logs(&env);
    let lost = logs.matches("outcome=\"stale\"").count();
    let retried = logs.matches("outcome=\"retry\"").count();
    let in_flight_per_kill: usize = CONCURRENCY.parse().expect("a number");
    assert!(kills >= 2, "the run outlasted only {kills} kills");
    assert!(
        extra <= kills * in_flight_per_kill + lost + retried,
        "{extra} extra runs ({twice} jobs) after {kills} kills, {lost} lost leases and {retried} retries"
    );
    eprintln!(
        "chaos kill -9: {kills} kills, {twice} of {JOBS} jobs ran more than once ({extra} extra runs; live workers lost {lost} leases, retried {retried})"
    );
}

#[test]
fn a_redis_restart_mid_run_loses_nothing() {
    let redis = durable_redis();
    let mut env = Env::with(redis);
    dispatch_jobs(&env);
    let workers: Vec<_> = (0..WORKERS).map(|_| start_worker(&env, "10s")).collect();
    eventually(Duration::from_secs(60), "a third of the jobs done", || {
        env.count(guests::RECORD, "done") >= JOBS / 3
    });
    env.redis.kill();
    std::thread::sleep(Duration::from_millis(500));
    env.redis.restart();
    all_done(&env);
    let twice = none_lost(&runs(&env));
    for mut w in workers {
        assert!(w.is_running(), "a worker exited:\n{}", w.log());
        assert!(w.log().contains("unreachable"), "{}", w.log());
    }
    eprintln!("chaos redis restart: {twice} of {JOBS} jobs ran more than once");
}

#[test]
fn sigterm_every_half_second_hands_back_without_counting_attempts() {
    let env = Env::new();
    dispatch_jobs(&env);
    // A grace shorter than the longest nap: some in-flight jobs finish,
    // others are handed back.
    let grace = "30ms";
    let mut workers: Vec<_> = (0..WORKERS).map(|_| start_worker(&env, grace)).collect();
    let stops = churn(&env, &mut workers, "TERM", grace);
    all_done(&env);
    let runs = runs(&env);
    let twice = none_lost(&runs);
    for (id, attempts) in &runs {
        assert!(
            attempts.iter().all(|&a| a == 1),
            "{id} had an attempt counted against it: {attempts:?}"
        );
    }
    // Every extra run is a job a stopping worker handed back (and logged
    // as such; one stopped before its record was written leaves none).
    let extra: usize = runs.values().map(|r| r.len() - 1).sum();
    let handed_back = worker_logs(&env).matches("job handed back").count();
    assert!(stops >= 2, "the run outlasted only {stops} stops");
    assert!(
        extra <= handed_back,
        "{extra} extra runs but only {handed_back} jobs handed back"
    );
    eprintln!(
        "chaos SIGTERM: {stops} stops, {handed_back} jobs handed back, {extra} runs again ({twice} jobs)"
    );
}

/// The tenants of the tenant chaos test and how many jobs each is given:
/// different numbers, so a record counted under the wrong tenant shows.
const TENANT_JOBS: [(&str, u64); 3] = [("acme", 1000), ("beta", 600), ("gamma", 800)];

/// The worker config: beta may have 4 jobs in flight across the fleet,
/// and the records queues, which have no handler (`--all` claims their
/// jobs, whose attempts fail to load), retry fast so their jobs settle.
fn tenant_config(env: &Env) -> String {
    let mut text = String::from("[tenants.beta]\nmax_in_flight = 4\n");
    for (tenant, _) in TENANT_JOBS {
        text.push_str(&format!(
            "[queues.\"{tenant}/{RECORDS}\"]\nbackoff_base_ms = 10\nbackoff_cap_ms = 50\n"
        ));
    }
    let path = env.cache.path().join("tenants.toml");
    std::fs::write(&path, text).expect("write the config");
    path.display().to_string()
}

/// A worker serving every tenant's queues, with the short lease of
/// [`start_worker`].
fn start_tenant_worker(env: &Env, config: &str) -> RuntimeProcess {
    env.worker(&[
        "--all",
        "--lease",
        "2s",
        "--concurrency",
        CONCURRENCY,
        "--config",
        config,
    ])
}

/// Jobs of every tenant's `record` queue done.
fn tenants_done(env: &Env) -> u64 {
    let all = env.run(&["queues", "--json"]).expect_code(0).json();
    TENANT_JOBS
        .iter()
        .map(|(tenant, _)| {
            all[format!("{tenant}/record")]["done"]
                .as_u64()
                .unwrap_or(0)
        })
        .sum()
}

/// Every record in `queue` (in any state but done), as (record id, payload).
fn records_of(env: &Env, queue: &str) -> Vec<(String, serde_json::Value)> {
    ["pending", "scheduled", "running", "failed"]
        .iter()
        .flat_map(|state| listed(env, queue, state))
        .map(|record| {
            let id = record["id"].as_str().expect("record id").to_string();
            (id, payload_of(&record))
        })
        .collect()
}

#[test]
fn three_tenants_through_kill_9_and_a_redis_restart_lose_nothing_and_stay_apart() {
    let redis = durable_redis();
    let mut env = Env::with(redis);
    let tenants: Vec<&str> = TENANT_JOBS.iter().map(|(t, _)| *t).collect();
    // Their records queues have no handler.
    let handlers = runtime_tests::tenant_handlers("record", &tenants);
    env.handlers = handlers.path().display().to_string();
    let config = tenant_config(&env);
    let total: u64 = TENANT_JOBS.iter().map(|(_, n)| n).sum();
    for (tenant, jobs) in TENANT_JOBS {
        // Each naps 0 to 60 ms after recording its run, into its own
        // tenant's records queue (a bare name: the handler's tenant).
        let lines: String = (0..jobs)
            .map(|i| format!("{{\"to\":\"{RECORDS}\",\"ms\":{}}}\n", i % 5 * 15))
            .collect();
        env.dispatch_file(
            &format!("{tenant}/record"),
            &lines,
            &["--max-attempts", "25"],
        )
        .expect_code(0);
    }
    let mut workers: Vec<_> = (0..WORKERS)
        .map(|_| start_tenant_worker(&env, &config))
        .collect();

    // Kill a random worker every half second and start a replacement, and
    // once a third of the jobs are done, kill Redis and restart it.
    let deadline = Instant::now() + Duration::from_secs(150);
    let (mut kills, mut restarted_after) = (0, None);
    loop {
        let done = tenants_done(&env);
        if done >= total || Instant::now() >= deadline {
            break;
        }
        if restarted_after.is_none() && done >= total / 3 {
            env.redis.kill();
            std::thread::sleep(Duration::from_millis(500));
            env.redis.restart();
            restarted_after = Some(done);
        }
        std::thread::sleep(Duration::from_millis(500));
        let victim = &mut workers[pick(WORKERS)];
        victim.signal("KILL");
        victim.wait(Duration::from_secs(30));
        kills += 1;
        *victim = start_tenant_worker(&env, &config);
    }
    let restarted_after = restarted_after.expect("Redis was restarted before the jobs were done");
    assert!(kills >= 2, "the run outlasted only {kills} kills");

    // Every tenant's jobs done exactly once each, beta's too: the slots of
    // the workers killed holding them lapsed.
    eventually(
        Duration::from_secs(180),
        "every tenant's jobs to be done",
        || tenants_done(&env) >= total,
    );
    for (tenant, jobs) in TENANT_JOBS {
        let c = env.counts(&format!("{tenant}/record"));
        assert_eq!(c["done"], jobs, "{tenant}: each job acknowledged once: {c}");
        for state in ["pending", "scheduled", "running", "failed"] {
            assert_eq!(c[state], 0, "{tenant} {state}: {c}");
        }
    }
    // The records settle (their attempts fail: no handler) before they
    // are read.
    eventually(Duration::from_secs(120), "every record to settle", || {
        tenants.iter().all(|tenant| {
            let c = env.counts(&format!("{tenant}/{RECORDS}"));
            ["pending", "scheduled", "running"]
                .iter()
                .all(|state| c[state].as_u64() == Some(0))
        })
    });

    // Only the tenants' own queues exist: no record went to another
    // tenant's queue, nor to the default tenant's.
    let queues = env.run(&["queues", "--json"]).expect_code(0).json();
    let names: Vec<&str> = queues
        .as_object()
        .expect("queues by name")
        .keys()
        .map(String::as_str)
        .collect();
    let mut expected: Vec<String> = tenants
        .iter()
        .flat_map(|t| [format!("{t}/record"), format!("{t}/{RECORDS}")])
        .collect();
    expected.sort();
    assert_eq!(names, expected, "{queues}");

    let mut report = Vec::new();
    for (tenant, jobs) in TENANT_JOBS {
        let records = records_of(&env, &format!("{tenant}/{RECORDS}"));
        for (id, _) in &records {
            assert!(
                id.starts_with(&format!("{tenant}/{RECORDS}:")),
                "record {id} listed in {tenant}'s records queue"
            );
        }
        let runs = runs_of(records.into_iter().map(|(_, payload)| payload));
        // Every run recorded here is one of this tenant's jobs, and every
        // one of its jobs ran.
        for job in runs.keys() {
            let n = job
                .strip_prefix(&format!("{tenant}/record:"))
                .and_then(|n| n.parse::<u64>().ok());
            assert!(
                n.is_some_and(|n| (1..=jobs).contains(&n)),
                "{tenant}'s records queue holds a run of {job}"
            );
        }
        for n in 1..=jobs {
            let id = format!("{tenant}/record:{n}");
            assert!(runs.contains_key(&id), "{id} never ran");
        }
        assert_eq!(runs.len() as u64, jobs, "{tenant}: jobs recorded");
        // A job runs again only as a new attempt.
        for (id, attempts) in &runs {
            let mut sorted = attempts.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(
                sorted.len(),
                attempts.len(),
                "{id} ran an attempt twice: {attempts:?}"
            );
        }
        let twice = runs.values().filter(|r| r.len() > 1).count();
        report.push(format!("{tenant} {twice} of {jobs}"));
    }
    let logs = worker_logs(&env);
    assert!(
        logs.contains("unreachable"),
        "no worker saw Redis go away:\n{logs}"
    );
    eprintln!(
        "chaos tenants: {kills} kills, Redis restarted after {restarted_after} of {total} jobs; jobs run more than once: {}",
        report.join(", ")
    );
}

//! Tenants, end to end on a real Redis with the real binary: a tenant's
//! queue is served from its own handlers directory, and a handler's
//! dispatch stays inside its tenant whatever queue name it writes.

use std::collections::HashMap;
use std::time::Duration;

use runtime_tests::workers::Env;
use runtime_tests::{TempDir, guests, runtime, tenant_handlers};

/// Generous: a loaded 2-core machine.
const BOUND: Duration = Duration::from_secs(60);

/// The `fork` fixture installed as tenant `acme`'s handler of queue `fork`.
fn acme_handlers() -> TempDir {
    tenant_handlers("fork", &["acme"])
}

#[test]
fn a_handler_dispatches_only_within_its_own_tenant_on_redis() {
    let handlers = acme_handlers();
    let mut env = Env::new();
    env.handlers = handlers.path().display().to_string();
    let mut ids = Vec::new();
    for target in ["beta/fork", "default/fork", "acme/fork", "mail"] {
        let payload = format!(r#"{{"copies":1,"queue":"{target}"}}"#);
        ids.push(env.dispatch("acme/fork", &payload, &[]));
    }
    assert_eq!(ids[0], "acme/fork:1");
    let mut w = env.worker(&["acme/fork", "--drain"]);
    assert_eq!(w.wait(BOUND), 0, "{}", w.log());
    let log = w.log();
    // Every name that carries a tenant is refused, its own included.
    for target in ["beta/fork", "default/fork", "acme/fork"] {
        assert!(
            log.contains(&format!(
                r#"refused: queue "{target}" names a tenant: here queues are named within your own tenant"#
            )),
            "{target}: {log}"
        );
    }
    // A bare name is a queue of the handler's own tenant.
    let queues = env.run(&["queues", "--json"]).expect_code(0).json();
    let names: Vec<&str> = queues
        .as_object()
        .expect("queues by name")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(names, vec!["acme/fork", "acme/mail"], "{queues}");
    assert_eq!(queues["acme/fork"]["done"], 4);
    assert_eq!(queues["acme/mail"]["pending"], 1);
    let listed = env
        .run(&["jobs", "list", "acme/mail", "--json"])
        .expect_code(0)
        .json();
    assert_eq!(listed[0]["id"], "acme/mail:1");
    assert_eq!(listed[0]["lineage"]["root"], "acme/fork:4");
    // Its keys carry the tenant in the queue's hash tag.
    let keys = env
        .redis
        .command(&["EXISTS", "runtime:{acme/mail}:pending"])
        .expect("redis answers");
    assert_eq!(keys, ":1");
}

#[test]
fn a_tenants_queue_needs_its_handler_in_the_tenants_directory() {
    let handlers = acme_handlers();
    let cache = TempDir::new("tenants");
    let dir = handlers.path().display().to_string();
    let run = runtime(
        cache.path(),
        &["--handlers", &dir, "dispatch", "beta/fork", "{}"],
        None,
    );
    let text = run.expect_code(2).stderr();
    // Tenant beta has no directory: acme's `fork` is not its handler.
    let missing = handlers
        .path()
        .join("tenants")
        .join("beta")
        .join("fork_job.wasm");
    assert!(text.contains(&missing.display().to_string()), "{text}");
    let run = runtime(
        cache.path(),
        &["--handlers", &dir, "dispatch", "acme/fork", "{}", "--json"],
        None,
    );
    assert_eq!(run.expect_code(0).json()["state"], "done");
}

#[test]
fn a_command_scoped_to_a_tenant_reaches_no_other_on_redis() {
    let handlers = acme_handlers();
    let mut env = Env::new();
    env.handlers = handlers.path().display().to_string();
    let acme = |args: &[&str]| {
        let mut all = vec!["--tenant", "acme"];
        all.extend_from_slice(args);
        env.run(&all)
    };
    let beta = |args: &[&str]| {
        let mut all = vec!["--tenant", "beta"];
        all.extend_from_slice(args);
        env.run(&all)
    };
    let id = acme(&["dispatch", "fork", "{}"]).expect_code(0).stdout();
    assert_eq!(id.trim(), "acme/fork:1");
    let shown = acme(&["jobs", "show", "fork:1", "--json"])
        .expect_code(0)
        .json();
    assert_eq!(shown["id"], "acme/fork:1");
    // Named in full, acme's queue and job are outside tenant beta: every
    // command refuses them before it reaches the server.
    let refusals: [&[&str]; 7] = [
        &["dispatch", "acme/fork", "{}"],
        &["jobs", "show", "acme/fork:1"],
        &["jobs", "delete", "acme/fork:1"],
        &["jobs", "retry", "--all-failed", "acme/fork"],
        &["jobs", "list", "default/fork"],
        &["queues", "purge", "acme/fork"],
        &["deploy", "acme/fork", "--withdraw"],
    ];
    for args in refusals {
        let run = beta(args);
        let text = run.expect_code(2).stderr();
        assert!(
            text.contains("is outside tenant beta (--tenant)"),
            "{args:?}: {text}"
        );
    }
    // Named bare, the same names are beta's own queue and job: not acme's.
    let missing = beta(&["jobs", "show", "fork:1"]);
    assert!(
        missing.stderr().contains("no job beta/fork:1"),
        "{}",
        missing.stderr()
    );
    beta(&["queues", "purge", "fork"]).expect_code(0);
    assert_eq!(
        beta(&["queues", "--json"]).expect_code(0).json(),
        serde_json::json!({})
    );
    let mine = acme(&["queues", "--json"]).expect_code(0).json();
    assert_eq!(mine["acme/fork"]["pending"], 1, "{mine}");
    // Unscoped, the operator sees every tenant.
    let all = env.run(&["queues", "--json"]).expect_code(0).json();
    assert_eq!(all["acme/fork"]["pending"], 1, "{all}");
}

#[test]
fn tenants_lists_each_tenants_queues_and_jobs_and_scopes_like_any_command() {
    let env = Env::new();
    for (queue, n) in [
        ("acme/fork", 2),
        ("acme/mail", 1),
        ("beta/fork", 1),
        ("fork", 1),
    ] {
        for _ in 0..n {
            env.dispatch(queue, "{}", &[]);
        }
    }
    let all = env.run(&["tenants", "--json"]).expect_code(0).json();
    assert_eq!(
        (
            &all["acme"]["queues"],
            &all["acme"]["pending"],
            &all["beta"]["pending"],
            &all["default"]["pending"]
        ),
        (&2.into(), &3.into(), &1.into(), &1.into()),
        "{all}"
    );
    let listed = env
        .run(&["tenants", "list", "--json"])
        .expect_code(0)
        .json();
    assert_eq!(listed, all, "`tenants list` is `tenants`");
    let shown = env
        .run(&["tenants", "show", "acme", "--json"])
        .expect_code(0)
        .json();
    assert_eq!(shown["queues"]["acme/fork"]["pending"], 2, "{shown}");
    assert!(shown["queues"].get("beta/fork").is_none(), "{shown}");
    assert_eq!(shown["registered"], false, "{shown}");
    let scoped = env
        .run(&["--tenant", "beta", "tenants", "--json"])
        .expect_code(0)
        .json();
    let names: Vec<&String> = scoped.as_object().expect("by tenant").keys().collect();
    assert_eq!(names, vec!["beta"], "{scoped}");
    let refused = env.run(&["--tenant", "beta", "tenants", "show", "acme"]);
    assert!(
        refused
            .expect_code(2)
            .stderr()
            .contains("is outside tenant beta (--tenant)"),
        "{}",
        refused.stderr()
    );
}

#[test]
fn tenants_are_created_with_a_token_shown_once_rotated_and_removed_with_all_their_data() {
    let env = Env::new();
    let created = env.run(&["tenants", "create", "acme"]);
    let token = created.expect_code(0).stdout().trim().to_string();
    assert!(token.starts_with("rt_acme_"), "{token}");
    assert!(
        created.stderr().contains("never shown again"),
        "{}",
        created.stderr()
    );
    // Redis keeps its hash, never the token.
    let stored = env
        .redis
        .strings(&["HGET", "runtime:{@tenants}", "acme"])
        .expect("redis answers")
        .concat();
    assert!(
        stored.contains("token_sha256") && !stored.contains(&token),
        "{stored}"
    );
    let again = env.run(&["tenants", "create", "acme"]);
    assert!(
        again
            .expect_code(2)
            .stderr()
            .contains("tenant acme exists already")
    );
    let listed = env.run(&["tenants", "--json"]).expect_code(0).json();
    assert_eq!(listed["acme"]["registered"], true, "{listed}");
    assert_eq!(
        listed["acme"]["token_hint"],
        token[token.len() - 4..],
        "{listed}"
    );
    let rotated = env
        .run(&["tenants", "rotate-token", "acme", "--json"])
        .expect_code(0)
        .json();
    let new = rotated["token"].as_str().expect("a token").to_string();
    assert!(new.starts_with("rt_acme_") && new != token, "{rotated}");
    let shown = env
        .run(&["tenants", "show", "acme", "--json"])
        .expect_code(0)
        .json();
    assert_eq!(shown["token_hint"], new[new.len() - 4..], "{shown}");
    // Scoped to another tenant, none of it applies to acme.
    for args in [
        &["tenants", "create", "acme"][..],
        &["tenants", "rotate-token", "acme"],
        &["tenants", "remove", "acme", "--yes"],
    ] {
        let mut scoped = vec!["--tenant", "beta"];
        scoped.extend_from_slice(args);
        let refused = env.run(&scoped);
        assert!(
            refused
                .expect_code(2)
                .stderr()
                .contains("is outside tenant beta"),
            "{args:?}: {}",
            refused.stderr()
        );
    }
    let missing = env.run(&["tenants", "rotate-token", "nobody"]);
    assert!(
        missing
            .expect_code(2)
            .stderr()
            .contains("no tenant nobody in the registry")
    );

    // Acme's data, beside beta's and the default tenant's.
    for queue in ["acme/fork", "acme/mail", "beta/fork", "fork"] {
        for _ in 0..3 {
            env.dispatch(queue, "{}", &["--unique-key", &format!("k{queue}")]);
            env.dispatch(queue, "{}", &["--delay", "1h"]);
        }
    }
    let module = std::path::Path::new(runtime_tests::guests::DIR)
        .join("fork_job.wasm")
        .display()
        .to_string();
    env.run(&["deploy", "acme/fork", &module]).expect_code(0);
    // A queue with a module and never a job.
    env.run(&["deploy", "acme/idle", &module]).expect_code(0);
    env.run(&["deploy", "beta/fork", &module]).expect_code(0);
    let keys = |pattern: &str| {
        let mut keys = env
            .redis
            .strings(&["KEYS", pattern])
            .expect("redis answers");
        keys.sort();
        keys
    };
    let beta_keys = keys("runtime:{beta/*");
    assert!(keys("runtime:{acme/*").contains(&"runtime:{acme/fork}:pending".to_string()));
    let unconfirmed = env.run(&["tenants", "remove", "acme"]);
    assert!(unconfirmed.expect_code(2).stderr().contains("add --yes"));
    assert_eq!(env.count("acme/fork", "pending"), 1);

    let removed = env
        .run(&["tenants", "remove", "acme", "--yes", "--json"])
        .expect_code(0)
        .json();
    assert_eq!(
        removed,
        serde_json::json!({"registered": true, "queues": 2, "jobs": 8, "modules": 2})
    );
    // Nothing of acme's but each queue's last job number, so that no job
    // id is ever given twice.
    assert_eq!(
        keys("runtime:{acme/*"),
        ["runtime:{acme/fork}:stats", "runtime:{acme/mail}:stats"],
        "acme's keys are left"
    );
    for queue in ["fork", "mail"] {
        let stats = env
            .redis
            .strings(&["HKEYS", &format!("runtime:{{acme/{queue}}}:stats")])
            .expect("redis answers");
        assert_eq!(stats, ["seq"]);
    }
    assert_eq!(keys("runtime:{beta/*"), beta_keys, "beta's keys changed");
    let modules = env
        .redis
        .strings(&["HKEYS", "runtime:{@modules}"])
        .expect("redis answers");
    assert_eq!(modules, ["beta/fork"]);
    let published = keys("runtime:{@modules}:*");
    assert!(
        published.iter().all(|k| !k.contains("acme/")),
        "{published:?}"
    );
    let tenants = env.run(&["tenants", "--json"]).expect_code(0).json();
    let names: Vec<&String> = tenants.as_object().expect("by tenant").keys().collect();
    assert_eq!(names, ["beta", "default"], "{tenants}");
    assert_eq!(env.count("beta/fork", "scheduled"), 3);
    assert_eq!(env.count("fork", "pending"), 1);
}

/// The benchmarks' order payload the `noop` fixture sums.
const ORDER: &str = r#"{"id":1,"customer":"c","items":[{"sku":"a","qty":1}]}"#;

/// `n` order lines for `runtime dispatch --file`.
fn orders(n: usize) -> String {
    let mut lines = String::with_capacity(n * (ORDER.len() + 1));
    for _ in 0..n {
        lines.push_str(ORDER);
        lines.push('\n');
    }
    lines
}

#[test]
fn a_trickle_tenants_job_starts_within_a_claim_round_of_another_tenants_flood() {
    let handlers = tenant_handlers("noop", &["acme", "beta"]);
    let mut env = Env::new();
    env.handlers = handlers.path().display().to_string();
    env.dispatch_file("acme/noop", &orders(100_000), &[])
        .expect_code(0);
    let w = env.worker(&["--all", "-c", "8"]);
    w.wait_for_log("job=acme/noop:", BOUND);
    let shown = env
        .run(&["dispatch", "beta/noop", ORDER, "--json"])
        .expect_code(0)
        .json();
    let created = shown["created_at"].as_u64().expect("created_at");
    w.wait_for_log("job=beta/noop:1 ", BOUND);
    let log = w.log();
    // Acme's jobs that ended after beta's was in the queue and before it
    // ended: those already running or claimed, and the rounds until the
    // worker reads the due index again (at most every 10 ms while it finds
    // work: some hundreds of noop jobs on a fast machine); behind the
    // flood it would be 100,000.
    let mut between = 0;
    for line in log.lines() {
        if line.contains("job=beta/noop:1 ") {
            break;
        }
        if line.contains("job=acme/noop:") && logged_at(line) >= created {
            between += 1;
        }
    }
    eprintln!("acme jobs ended between beta's dispatch and its end: {between}");
    assert!(
        between <= 1_000,
        "{between} of acme's jobs ended before beta's single job"
    );
    assert!(
        env.count("acme/noop", "pending") > 20_000,
        "the flood was still on: {}",
        env.counts("acme/noop")
    );
}

/// When a worker log line was written, in ms since the Unix epoch, from
/// its leading `YYYY-MM-DDTHH:MM:SS.ffffffZ` time stamp (UTC).
fn logged_at(line: &str) -> u64 {
    let field = |range: std::ops::Range<usize>| -> i64 {
        line.get(range)
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("no time stamp in {line:?}"))
    };
    let (y, m, d) = (field(0..4), field(5..7), field(8..10));
    let (h, min, s, us) = (field(11..13), field(14..16), field(17..19), field(20..26));
    // Days from 1970-01-01 to y-m-d (proleptic Gregorian).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let ms = ((days * 24 + h) * 60 + min) * 60_000 + s * 1000 + us / 1000;
    u64::try_from(ms).expect("a time after 1970")
}

#[test]
fn a_tenants_ceiling_holds_for_every_queue_it_runs_configured_or_not() {
    let handlers = tenant_handlers("memory_bomb", &["acme", "beta"]);
    let mut env = Env::new();
    env.handlers = handlers.path().display().to_string();
    let config = env.cache.path().join("ceilings.toml");
    std::fs::write(
        &config,
        "[defaults]\nmemory_mib = 48\n[tenants.acme.ceilings]\nmemory_mib = 16\n",
    )
    .expect("write the config");
    let config = config.display().to_string();
    let one = ["--max-attempts", "1"];
    let acme = env.dispatch("acme/memory_bomb", "{}", &one);
    let beta = env.dispatch("beta/memory_bomb", "{}", &one);
    let _w = env.worker(&["--all", "-c", "2", "--config", &config]);
    let reason = |id: &str| {
        let mut shown = serde_json::Value::Null;
        runtime_tests::workers::eventually(BOUND, "the job to fail", || {
            shown = env.show(id);
            shown["state"] == "failed"
        });
        shown["error"].as_str().unwrap_or_default().to_string()
    };
    assert_eq!(reason(&acme), "memory limit 16 MiB exceeded");
    assert_eq!(reason(&beta), "memory limit 48 MiB exceeded");
    // A section asking for more than the ceiling stops the worker first.
    std::fs::write(
        env.cache.path().join("ceilings.toml"),
        "[tenants.acme.ceilings]\nmemory_mib = 16\n[queues.\"acme/memory_bomb\"]\nmemory_mib = 32\n",
    )
    .expect("write the config");
    let refused = env.run(&["worker", "--all", "--config", &config]);
    assert!(
        refused.expect_code(2).stderr().contains(
            "queues.\"acme/memory_bomb\".memory_mib: 32 is above tenant acme's ceiling of 16 (tenants.acme.ceilings.memory_mib)"
        ),
        "{}",
        refused.stderr()
    );
}

#[test]
fn a_fuel_ceiling_meters_a_tenants_queues_when_no_queue_sets_fuel() {
    let handlers = tenant_handlers("spin", &["acme"]);
    let mut env = Env::new();
    env.handlers = handlers.path().display().to_string();
    let config = env.cache.path().join("fuel.toml");
    std::fs::write(&config, "[tenants.acme.ceilings]\nfuel = 1000000\n").expect("write the config");
    let config = config.display().to_string();
    let id = env.dispatch("acme/spin", "{}", &["--max-attempts", "1"]);
    let _w = env.worker(&["--all", "--config", &config]);
    let mut shown = serde_json::Value::Null;
    runtime_tests::workers::eventually(BOUND, "the job to fail", || {
        shown = env.show(&id);
        shown["state"] == "failed"
    });
    assert_eq!(shown["error"], "fuel budget 1000000 exhausted", "{shown}");
}

/// The most attempts of `ids` that ran at once, from their recorded
/// start and end times (attempts that never ended are left out).
fn most_at_once(env: &Env, ids: &[String]) -> usize {
    let mut edges: Vec<(u64, i32)> = Vec::new();
    for id in ids {
        let shown = env.show(id);
        for attempt in shown["history"].as_array().into_iter().flatten() {
            if let (Some(start), Some(end)) =
                (attempt["started_at"].as_u64(), attempt["ended_at"].as_u64())
            {
                edges.push((start, 1));
                edges.push((end, -1));
            }
        }
    }
    // An end at the same millisecond as a start comes first: the slot was
    // given back before the next job was claimed.
    edges.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, step) in edges {
        now += step;
        most = most.max(now);
    }
    usize::try_from(most).unwrap_or(0)
}

#[test]
fn a_tenants_in_flight_cap_holds_across_three_workers_and_a_killed_workers_slots_come_back() {
    let handlers = tenant_handlers("nap", &["acme", "beta"]);
    let mut env = Env::new();
    env.handlers = handlers.path().display().to_string();
    let config = env.cache.path().join("flight.toml");
    std::fs::write(&config, "[tenant_defaults]\nmax_in_flight = 2\n").expect("write the config");
    let config = config.display().to_string();
    let ids: Vec<String> = (0..12)
        .map(|_| {
            env.dispatch(
                "acme/nap",
                r#"{"ms": 150, "fail": true}"#,
                &["--max-attempts", "1"],
            )
        })
        .collect();
    let workers: Vec<_> = (0..3)
        .map(|_| env.worker(&["--all", "-c", "4", "--config", &config]))
        .collect();
    runtime_tests::workers::eventually(BOUND, "acme's jobs to end", || {
        env.count("acme/nap", "failed") == 12
    });
    assert_eq!(
        most_at_once(&env, &ids),
        2,
        "twelve 150 ms jobs, twelve slots, a cap of 2"
    );
    drop(workers);

    // A worker killed with beta's two slots: they come back when its hold
    // lapses (its lease), and a job waiting for one runs.
    let mut first = env.worker(&["--all", "--lease", "1s", "--config", &config]);
    for _ in 0..2 {
        env.dispatch("beta/nap", r#"{"ms": 600000}"#, &["--max-attempts", "1"]);
    }
    runtime_tests::workers::eventually(BOUND, "beta's long jobs to run", || {
        env.count("beta/nap", "running") == 2
    });
    first.kill();
    let killed_at = now_ms();
    let short = env.dispatch(
        "beta/nap",
        r#"{"ms": 10, "fail": true}"#,
        &["--max-attempts", "1"],
    );
    let _second = env.worker(&["--all", "--lease", "1s", "--config", &config]);
    let mut shown = serde_json::Value::Null;
    runtime_tests::workers::eventually(BOUND, "the short job to run", || {
        shown = env.show(&short);
        shown["state"] == "failed"
    });
    // The killed worker renewed its hold at most a third of its lease
    // before it died, so the hold lapsed at least 667 ms after.
    let started = shown["history"][0]["started_at"].as_u64().expect("a start");
    assert!(
        started >= killed_at + 600,
        "the short job started {} ms after the kill, before the dead worker's slots lapsed",
        started.saturating_sub(killed_at)
    );
    runtime_tests::workers::eventually(BOUND, "the long jobs to fail", || {
        env.count("beta/nap", "failed") == 3
    });
}

#[test]
fn a_tenant_over_its_dispatch_rate_or_backlog_is_refused_from_the_cli_and_from_handlers() {
    let handlers = tenant_handlers("dispatch_flood", &["gamma"]);
    let mut env = Env::new();
    env.handlers = handlers.path().display().to_string();
    let config = env.cache.path().join("quotas.toml");
    std::fs::write(
        &config,
        "[tenants.acme]\ndispatch_rate = 0.001\ndispatch_burst = 3\n[tenants.beta]\nmax_backlog = 2\n[tenants.gamma]\ndispatch_rate = 0.001\ndispatch_burst = 5\n",
    )
    .expect("write the config");
    let config = config.display().to_string();
    let dispatch = |queue: &str| env.run(&["--config", &config, "dispatch", queue, "{}"]);
    for _ in 0..3 {
        dispatch("acme/q").expect_code(0);
    }
    let refused = dispatch("acme/q");
    assert!(
        refused.expect_code(2).stderr().contains(
            "dispatch refused: tenant acme is over its dispatch rate (0.001 jobs/s, bursts of 3): try again in "
        ),
        "{}",
        refused.stderr()
    );
    for _ in 0..2 {
        dispatch("beta/q").expect_code(0);
    }
    let full = dispatch("beta/q");
    assert!(
        full.expect_code(2).stderr().contains(
            "dispatch refused: tenant beta has 2 jobs waiting and may have 2 (max_backlog)"
        ),
        "{}",
        full.stderr()
    );
    // Bulk dispatch is held the same way.
    let bulk = env.dispatch_file("acme/q", "{}\n{}\n", &["--config", &config]);
    assert!(
        bulk.stderr()
            .contains("dispatch refused: tenant acme is over its dispatch rate"),
        "{}",
        bulk.stderr()
    );
    assert_ne!(bulk.code(), 0);
    for _ in 0..5 {
        dispatch("q").expect_code(0);
    }
    assert_eq!(env.count("acme/q", "pending"), 3);
    assert_eq!(env.count("beta/q", "pending"), 2);
    assert_eq!(env.count("q", "pending"), 5);
    // A handler dispatching without end: the bucket's tokens after its
    // own dispatch, then a refusal it reads (and here returns).
    let id = env.dispatch(
        "gamma/dispatch_flood",
        "{}",
        &["--config", &config, "--max-attempts", "1"],
    );
    let _w = env.worker(&["--all", "--config", &config]);
    let mut shown = serde_json::Value::Null;
    runtime_tests::workers::eventually(BOUND, "the flood to fail", || {
        shown = env.show(&id);
        shown["state"] == "failed"
    });
    let error = shown["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(
            "dispatch refused: tenant gamma is over its dispatch rate (0.001 jobs/s, bursts of 5)"
        ),
        "{shown}"
    );
    // Its follow-ups, whatever became of them (no handler serves them).
    let targets = env.counts("gamma/flood-target");
    let all: u64 = ["pending", "scheduled", "running", "failed", "done"]
        .iter()
        .map(|s| targets[s].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(all, 4, "{targets}");
}

#[test]
fn tenant_weights_share_three_workers_three_to_one() {
    let handlers = tenant_handlers("noop", &["acme", "beta"]);
    let mut env = Env::new();
    env.handlers = handlers.path().display().to_string();
    let config = env.cache.path().join("weights.toml");
    std::fs::write(&config, "[tenants.acme]\nweight = 3\n").expect("write the config");
    let config = config.display().to_string();
    for tenant in ["acme", "beta"] {
        env.dispatch_file(&format!("{tenant}/noop"), &orders(40_000), &[])
            .expect_code(0);
    }
    let workers: Vec<_> = (0..3)
        .map(|_| env.worker(&["--all", "-c", "4", "--config", &config]))
        .collect();
    // Read both counts at one moment, once acme has had a long run.
    let mut done = (0, 0);
    runtime_tests::workers::eventually(BOUND * 3, "acme to finish 15,000 jobs", || {
        let all = env.run(&["queues", "--json"]).expect_code(0).json();
        done = (
            all["acme/noop"]["done"].as_u64().unwrap_or(0),
            all["beta/noop"]["done"].as_u64().unwrap_or(0),
        );
        done.0 >= 15_000
    });
    drop(workers);
    let ratio = done.0 as f64 / done.1.max(1) as f64;
    eprintln!("acme {} : beta {} = {ratio:.3}", done.0, done.1);
    assert!(
        (2.7..=3.3).contains(&ratio),
        "weight 3 to 1 gave {} to {} ({ratio:.2})",
        done.0,
        done.1
    );
}

/// Now, in ms since the Unix epoch (the clock the workers record by).
fn now_ms() -> u64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a time after 1970");
    u64::try_from(since.as_millis()).expect("ms fit")
}

/// When each of `ids`' attempts started.
fn starts(env: &Env, ids: &[String]) -> Vec<u64> {
    ids.iter()
        .flat_map(|id| {
            let shown = env.show(id);
            shown["history"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a["started_at"].as_u64())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The most of `starts` in any one period of `period` ms since the epoch,
/// and in how many periods they fell.
fn most_per_period(starts: &[u64], period: u64) -> (usize, usize) {
    let mut per: HashMap<u64, usize> = HashMap::new();
    for s in starts {
        *per.entry(s / period).or_default() += 1;
    }
    (per.values().copied().max().unwrap_or(0), per.len())
}

#[test]
fn a_tenant_past_its_run_time_budget_waits_for_the_next_period_while_another_runs() {
    let handlers = tenant_handlers("nap", &["acme", "beta"]);
    let mut env = Env::new();
    env.handlers = handlers.path().display().to_string();
    let config = env.cache.path().join("budget.toml");
    std::fs::write(
        &config,
        "[tenants.acme]\ncpu_budget_s = 0.5\ncpu_period_s = 2\n",
    )
    .expect("write the config");
    let config = config.display().to_string();
    let nap = |tenant: &str, ms: u64, n: usize| -> Vec<String> {
        (0..n)
            .map(|_| {
                env.dispatch(
                    &format!("{tenant}/nap"),
                    &format!(r#"{{"ms": {ms}, "fail": true}}"#),
                    &["--max-attempts", "1"],
                )
            })
            .collect()
    };
    let acme = nap("acme", 300, 12);
    let beta = nap("beta", 50, 16);
    let _worker = env.worker(&["--all", "-c", "2", "--config", &config]);
    runtime_tests::workers::eventually(BOUND, "every job to end", || {
        env.count("acme/nap", "failed") == 12 && env.count("beta/nap", "failed") == 16
    });
    // Two 300 ms attempts pass 0.5 s; two more may start in the slots they
    // free while their run time is being added. Unbudgeted, two slots
    // start a dozen of them in 2 s.
    let (most, periods) = most_per_period(&starts(&env, &acme), 2_000);
    assert!(
        most <= 4,
        "{most} of acme's attempts started in one 2 s period"
    );
    assert!(periods >= 3, "acme's 12 attempts fell in {periods} periods");
    let (most, _) = most_per_period(&starts(&env, &beta), 2_000);
    assert!(
        most >= 5,
        "beta, with no budget, started at most {most} attempts a period"
    );
}

#[test]
fn a_deploy_past_its_tenants_module_storage_is_refused_and_publishes_nothing() {
    let env = Env::new();
    let config = env.cache.path().join("storage.toml");
    // A quarter MiB: two of the ~100 KiB fixtures, not a third.
    std::fs::write(&config, "[tenants.acme]\nmodule_storage_mib = 0.25\n")
        .expect("write the config");
    let config = config.display().to_string();
    let fixture = |job: &str| {
        std::path::Path::new(guests::DIR)
            .join(format!("{job}_job.wasm"))
            .display()
            .to_string()
    };
    let deploy =
        |queue: &str, job: &str| env.run(&["--config", &config, "deploy", queue, &fixture(job)]);
    deploy("acme/a", "nap").expect_code(0);
    deploy("acme/b", "nap").expect_code(0);
    let refused = deploy("acme/c", "noop");
    assert_ne!(refused.code(), 0);
    let said = refused.stderr();
    assert!(
        said.contains("deploy refused: tenant acme's published modules take ")
            && said.contains(" and may take 256 KiB (module_storage_mib)")
            && said.contains("nothing was published"),
        "{said}"
    );
    let withdrawn = env.run(&["--config", &config, "deploy", "acme/c", "--withdraw"]);
    assert!(
        withdrawn
            .expect_code(0)
            .stdout()
            .contains("acme/c had no published module"),
        "the refused module was published"
    );
    // A module replaced counts in place of the old one.
    deploy("acme/b", "trap").expect_code(0);
    // Another tenant has no such quota.
    for queue in ["beta/a", "beta/b", "beta/c"] {
        deploy(queue, "noop").expect_code(0);
    }
}

#[test]
fn tenants_usage_shows_each_quota_against_what_the_tenant_uses() {
    let handlers = tenant_handlers("nap", &["acme", "beta"]);
    let mut env = Env::new();
    env.handlers = handlers.path().display().to_string();
    let config = env.cache.path().join("usage.toml");
    std::fs::write(
        &config,
        "[tenants.acme]\nmax_in_flight = 4\ncpu_budget_s = 600\ndispatch_rate = 0.001\ndispatch_burst = 100\nmax_backlog = 1000\nmodule_storage_mib = 2\n",
    )
    .expect("write the config");
    let config = config.display().to_string();
    for ms in [200, 300] {
        env.run(&[
            "--config",
            &config,
            "dispatch",
            "acme/nap",
            &format!(r#"{{"ms": {ms}, "fail": true}}"#),
            "--max-attempts",
            "1",
        ])
        .expect_code(0);
    }
    let _worker = env.worker(&["--all", "--config", &config]);
    runtime_tests::workers::eventually(BOUND, "acme's jobs to end", || {
        env.count("acme/nap", "failed") == 2
    });
    // Waiting: three of acme's, one of beta's.
    for queue in ["acme/later", "acme/later", "acme/later", "beta/later"] {
        env.run(&[
            "--config", &config, "dispatch", queue, "{}", "--delay", "1h",
        ])
        .expect_code(0);
    }
    let module = std::path::Path::new(guests::DIR).join("nap_job.wasm");
    let size = std::fs::metadata(&module).expect("the fixture").len();
    env.run(&["deploy", "acme/nap", &module.display().to_string()])
        .expect_code(0);
    let usage = env
        .run(&["--config", &config, "tenants", "usage", "--json"])
        .expect_code(0)
        .json();
    let acme = &usage["acme"];
    assert_eq!(acme["in_flight"]["max"], 4, "{usage}");
    // Its jobs ended: the worker gives their slots back once idle.
    runtime_tests::workers::eventually(BOUND, "acme's slots to go back", || {
        let usage = env
            .run(&["--config", &config, "tenants", "usage", "acme", "--json"])
            .expect_code(0)
            .json();
        usage["acme"]["in_flight"]["used"] == 0
    });
    assert_eq!(acme["backlog"]["used"], 3, "{usage}");
    assert_eq!(acme["backlog"]["max"], 1000, "{usage}");
    let ran = acme["run_time"]["used_ms"].as_u64().expect("run time");
    assert!(
        (500..60_000).contains(&ran),
        "two naps of 500 ms in all took {ran} ms"
    );
    assert_eq!(acme["run_time"]["max_ms"], 600_000, "{usage}");
    assert_eq!(acme["run_time"]["period_ms"], 3_600_000, "{usage}");
    assert_eq!(acme["module_storage"]["used"], size, "{usage}");
    assert_eq!(acme["module_storage"]["max"], 2 * 1024 * 1024, "{usage}");
    // Acme's five dispatches took five of the 100 tokens; 0.001/s gives
    // back none within the test.
    let tokens = acme["dispatch"]["tokens"].as_f64().expect("tokens");
    assert!(
        (95.0..96.0).contains(&tokens),
        "{tokens} tokens left of 100"
    );
    let beta = &usage["beta"];
    assert_eq!(beta["backlog"]["used"], 1, "{usage}");
    assert_eq!(beta["backlog"]["max"], serde_json::Value::Null, "{usage}");
    assert_eq!(beta["dispatch"], serde_json::Value::Null, "{usage}");
    assert_eq!(beta["module_storage"]["used"], 0, "{usage}");

    let table = env
        .run(&["--config", &config, "tenants", "usage", "acme"])
        .expect_code(0)
        .stdout();
    assert!(table.starts_with("TENANT  IN FLIGHT  BACKLOG"), "{table}");
    assert!(table.contains("3/1000"), "{table}");
    assert!(table.contains("/600s per 1h"), "{table}");
    assert!(table.contains("/2 MiB"), "{table}");
    assert!(table.contains("/100 tokens at 0.001/s"), "{table}");
    assert!(!table.contains("beta"), "{table}");
    let outside = env.run(&["--tenant", "beta", "tenants", "usage", "acme"]);
    assert!(
        outside
            .expect_code(2)
            .stderr()
            .contains("outside tenant beta")
    );
}

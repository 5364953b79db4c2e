//! Tenants, end to end on a real Redis with the real binary: a tenant's
//! queue is served from its own handlers directory, and a handler's
//! dispatch stays inside its tenant whatever queue name it writes.

use std::time::Duration;

use runtime_tests::workers::Env;
use runtime_tests::{TempDir, guests, runtime};

/// Generous: a loaded 2-core machine.
const BOUND: Duration = Duration::from_secs(60);

/// The `fork` fixture installed as tenant `acme`'s handler of queue `fork`,
/// in a handlers directory of its own.
fn acme_handlers() -> TempDir {
    let dir = TempDir::new("tenant-handlers");
    let acme = dir.path().join("tenants").join("acme");
    std::fs::create_dir_all(&acme).expect("create the tenant's directory");
    std::fs::copy(
        std::path::Path::new(guests::DIR).join("fork_job.wasm"),
        acme.join("fork_job.wasm"),
    )
    .expect("copy the fixture");
    dir
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
    let shown = env
        .run(&["tenants", "show", "acme", "--json"])
        .expect_code(0)
        .json();
    assert_eq!(shown["acme/fork"]["pending"], 2, "{shown}");
    assert!(shown.get("beta/fork").is_none(), "{shown}");
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

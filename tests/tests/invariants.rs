//! Properties of the code base itself.

use runtime_tests::root;

/// The guest SDK is compiled into every handler: it must not pull in the
/// host's world.
#[test]
fn guest_sdk_depends_on_nothing_host_side() {
    let manifest = std::fs::read_to_string(root().join("guest-sdk/Cargo.toml")).expect("read");
    let manifest: toml::Table = manifest.parse().expect("valid TOML");
    let deps = manifest
        .get("dependencies")
        .and_then(|d| d.as_table())
        .expect("[dependencies]");
    for forbidden in ["wasmtime", "wasmtime-wasi", "tokio", "redis", "runtime"] {
        assert!(
            !deps.contains_key(forbidden),
            "guest-sdk depends on {forbidden}"
        );
    }
    assert!(deps.contains_key("wit-bindgen"));
}

/// The benchmark guest is a real handler: it must run and succeed, or the
/// benchmark would time a failure.
#[tokio::test]
async fn the_benchmark_guest_succeeds() {
    use runtime::job::{NewJob, Payload, QueueName};
    let cache = runtime_tests::TempDir::new("noop");
    let text = format!("cache_dir = {:?}\n", cache.path().display().to_string());
    let config = runtime::config::Config::parse(&text).expect("config");
    let rt =
        runtime::Runtime::in_memory(runtime_tests::guests::DIR.into(), config).expect("runtime");
    let queue = QueueName::new(runtime_tests::guests::NOOP).expect("queue");
    let order = r#"{"id":1,"customer":"c","items":[{"sku":"A","qty":2}]}"#;
    rt.dispatch(NewJob::new(
        queue.clone(),
        Payload::new(order).expect("payload"),
    ))
    .await
    .expect("dispatch");
    let worker = rt.worker(runtime::WorkerConfig {
        queues: vec![queue],
        drain: true,
        ..Default::default()
    });
    let stats = worker.run(std::future::pending()).await.expect("worker");
    assert_eq!((stats.done, stats.failed, stats.retried), (1, 0, 0));
}

/// The Rust files below `dir` (relative to the workspace root), with their
/// text.
fn sources(dir: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut todo = vec![root().join(dir)];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("read source");
                let name = path
                    .strip_prefix(root())
                    .unwrap_or(&path)
                    .display()
                    .to_string();
                out.push((name, text));
            }
        }
    }
    assert!(!out.is_empty(), "no sources under {dir}");
    out
}

/// A lock whose holder panicked is taken anyway in one place only,
/// `sync::lock`, where the reason it is safe is written down.
#[test]
fn poisoned_locks_are_taken_in_one_place() {
    for (name, text) in sources("runtime/src") {
        if name.ends_with("src/sync.rs") {
            continue;
        }
        for pattern in ["PoisonError", "|e| e.into_inner()"] {
            assert!(
                !text.contains(pattern),
                "{name} takes a poisoned lock by hand ({pattern}); use runtime::sync::lock"
            );
        }
    }
}

/// What a guest can reach is what `sandbox::Capabilities` holds: the
/// sandbox knows nothing of the job queue beyond the adapter in
/// `capabilities.rs`, and nothing of the config, the handler registry or
/// the worker above it.
#[test]
fn the_sandbox_sees_only_its_capabilities() {
    for (name, text) in sources("runtime/src/sandbox") {
        for above in ["config", "handlers", "worker"] {
            for path in [format!("use crate::{above}"), format!("crate::{above}::")] {
                assert!(!text.contains(&path), "{name} reaches up to {path}");
            }
        }
        if !name.ends_with("capabilities.rs") {
            for queue in [
                "JobQueue",
                "WorkerRegistry",
                "ModuleStore",
                "queue::Backend",
            ] {
                assert!(
                    !text.contains(queue),
                    "{name} names {queue}: a guest's reach goes through Capabilities"
                );
            }
        }
    }
}

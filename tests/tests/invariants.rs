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

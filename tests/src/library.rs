//! Running jobs through the library, as an embedding application does: a
//! runtime on the in-memory backend over hand-written components, one
//! attempt per job, and a draining worker whose events are collected.

use runtime::Runtime;
use runtime::config::Config;
use runtime::job::{DispatchOptions, MaxAttempts, NewJob, Payload, QueueName};
use runtime::worker::{JobEvent, WorkerConfig};

use crate::{TempDir, guests};

/// A runtime under `config` (TOML) serving the given components (queue
/// name, component bytes, written into `dir`), `hello`, and the fixtures.
pub fn runtime_with(dir: &TempDir, config: &str, modules: &[(&str, Vec<u8>)]) -> Runtime {
    let mut text = format!(
        "cache_dir = {:?}\n{config}\n[queues.hello]\nmodule = {:?}\n",
        dir.path().join("cache").display().to_string(),
        format!("{}/hello_job.wasm", guests::JOBS_DIR),
    );
    for (queue, bytes) in modules {
        let path = dir.path().join(format!("{queue}.wasm"));
        std::fs::write(&path, bytes).expect("write fixture");
        text.push_str(&format!(
            "[queues.{queue}]\nmodule = {:?}\n",
            path.display().to_string()
        ));
    }
    let config = Config::parse(&text).expect("valid test config");
    Runtime::in_memory(guests::DIR.into(), config).expect("runtime")
}

/// Dispatches one job of `queue` that gets a single attempt.
pub async fn dispatch_once(rt: &Runtime, queue: &str, payload: &str) {
    let job = NewJob {
        queue: QueueName::new(queue).expect("valid queue"),
        payload: Payload::new(payload).expect("valid payload"),
        options: DispatchOptions {
            max_attempts: MaxAttempts::ONE,
            ..Default::default()
        },
    };
    rt.dispatch(job).await.expect("dispatch");
}

/// Runs everything dispatched with `concurrency` jobs in flight; the
/// events of every attempt.
pub async fn drain(rt: &Runtime, concurrency: usize) -> Vec<JobEvent> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let worker = rt
        .worker(WorkerConfig {
            concurrency,
            drain: true,
            retry_at_once: true,
            ..Default::default()
        })
        .with_events(tx);
    worker.run(std::future::pending()).await.expect("worker");
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    events
}

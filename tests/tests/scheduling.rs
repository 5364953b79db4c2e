//! One worker serving several queues: capacity shared by weight, so a
//! backlog on one queue does not starve another, and per-queue caps.
//! Through the library on the in-memory backend, like `sandbox.rs`.

use runtime::Runtime;
use runtime::config::Config;
use runtime::job::{NewJob, Payload, QueueName};
use runtime::worker::{JobEvent, WorkerConfig};
use runtime_tests::{TempDir, guests};

const ORDER: &str = r#"{"id":1,"customer":"c","items":[{"sku":"a","qty":1}]}"#;

/// A runtime where every queue named in `queues` runs `module` (a fixture
/// file name), with each queue's extra settings.
fn runtime(cache: &TempDir, queues: &[(&str, &str, &str)]) -> Runtime {
    let mut text = format!("cache_dir = {:?}\n", cache.path().display().to_string());
    for (queue, module, extra) in queues {
        text.push_str(&format!(
            "[queues.{queue}]\nmodule = {:?}\n{extra}\n",
            format!("{}/{module}", guests::DIR)
        ));
    }
    let config = Config::parse(&text).expect("valid test config");
    Runtime::in_memory(guests::DIR.into(), config).expect("runtime")
}

fn q(name: &str) -> QueueName {
    QueueName::new(name).expect("valid queue")
}

async fn fill(rt: &Runtime, queue: &str, payload: &str, n: usize) {
    let jobs = (0..n)
        .map(|_| NewJob {
            queue: q(queue),
            payload: Payload::new(payload).expect("valid payload"),
            options: Default::default(),
        })
        .collect();
    rt.backend()
        .jobs
        .dispatch_many(jobs)
        .await
        .expect("dispatch");
}

/// Runs `queues` until drained; the finished attempts in the order they
/// finished.
async fn drain(rt: &Runtime, queues: &[&str], concurrency: usize) -> Vec<JobEvent> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stats = rt
        .worker(WorkerConfig {
            queues: queues.iter().map(|n| q(n)).collect(),
            concurrency,
            drain: true,
            ..Default::default()
        })
        .with_events(tx)
        .run(std::future::pending())
        .await
        .expect("worker");
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    assert_eq!(stats.done, events.len() as u64, "every attempt finished");
    events
}

fn queue_of(e: &JobEvent) -> &str {
    e.job.id.queue().as_str()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_on_one_queue_does_not_starve_another() {
    let cache = TempDir::new("fair");
    let rt = runtime(
        &cache,
        &[
            ("bulk", "noop_job.wasm", ""),
            ("urgent", "noop_job.wasm", ""),
        ],
    );
    // The backlog is there first, and `bulk` is listed first.
    fill(&rt, "bulk", ORDER, 3000).await;
    fill(&rt, "urgent", ORDER, 20).await;
    let events = drain(&rt, &["bulk", "urgent"], 4).await;
    assert_eq!(events.len(), 3020);
    let last_urgent = events
        .iter()
        .rposition(|e| queue_of(e) == "urgent")
        .expect("urgent jobs ran");
    // Shared evenly, the 20 urgent jobs are done within about the first
    // 40 finished; served in list order they would come after all 3,000.
    assert!(
        last_urgent < 200,
        "the last urgent job finished {last_urgent}th, behind the backlog"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_set_the_shares() {
    let cache = TempDir::new("weights");
    let rt = runtime(
        &cache,
        &[
            ("heavy", "noop_job.wasm", "weight = 3"),
            ("light", "noop_job.wasm", ""),
        ],
    );
    fill(&rt, "heavy", ORDER, 1000).await;
    fill(&rt, "light", ORDER, 1000).await;
    let events = drain(&rt, &["light", "heavy"], 8).await;
    let first = &events[..400];
    let heavy = first.iter().filter(|e| queue_of(e) == "heavy").count();
    let light = first.len() - heavy;
    let ratio = heavy as f64 / light.max(1) as f64;
    assert!(
        (2.0..=4.5).contains(&ratio),
        "weight 3 to 1 gave {heavy} to {light} of the first 400"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_cap_limits_its_jobs_in_flight() {
    let cache = TempDir::new("cap");
    let rt = runtime(
        &cache,
        &[
            ("capped", "nap_job.wasm", "concurrency = 2"),
            ("free", "nap_job.wasm", ""),
        ],
    );
    fill(&rt, "capped", r#"{"ms":100}"#, 8).await;
    fill(&rt, "free", r#"{"ms":100}"#, 8).await;
    let events = drain(&rt, &["capped", "free"], 8).await;
    let most_at_once = |queue: &str| {
        // Claim to end of run: inside the real claim-to-ack span.
        let spans: Vec<(u64, u64)> = events
            .iter()
            .filter(|e| queue_of(e) == queue)
            .map(|e| {
                let start = e.job.history.last().expect("an attempt").started_at;
                let run = e.report.as_ref().expect("ran").elapsed.as_millis() as u64;
                (start, start + run)
            })
            .collect();
        spans
            .iter()
            .map(|&(s, _)| spans.iter().filter(|&&(a, b)| a <= s && s < b).count())
            .max()
            .unwrap_or(0)
    };
    assert_eq!(most_at_once("capped"), 2, "capped at 2 and kept at 2");
    assert!(
        most_at_once("free") > 2,
        "the other queue used the rest of the room"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn free_slots_do_not_idle_while_jobs_wait() {
    let cache = TempDir::new("idle-slots");
    let rt = runtime(&cache, &[("naps", "nap_job.wasm", "")]);
    // Concurrency 8 claims in batches of 4: 7 long jobs and 1 short fill
    // it, and the second short one waits with less than a batch free.
    fill(&rt, "naps", r#"{"ms":1500}"#, 7).await;
    fill(&rt, "naps", r#"{"ms":1}"#, 2).await;
    let late = {
        let rt = rt.clone();
        tokio::spawn(async move {
            // Dispatched once both short jobs are done, while the long
            // ones run: wakes the worker, which claims it into a free slot.
            let both_done = async {
                while rt
                    .backend()
                    .jobs
                    .counts(&q("naps"))
                    .await
                    .expect("counts")
                    .done
                    < 2
                {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            };
            tokio::time::timeout(std::time::Duration::from_secs(60), both_done)
                .await
                .expect("the short jobs done within 60 s");
            fill(&rt, "naps", r#"{"ms":2}"#, 1).await;
        })
    };
    let events = drain(&rt, &["naps"], 8).await;
    late.await.expect("dispatch task");
    let first: Vec<String> = events[..3]
        .iter()
        .map(|e| e.job.payload.as_str().to_string())
        .collect();
    assert!(
        first.iter().all(|p| !p.contains("1500")),
        "the short jobs waited for long ones: {first:?}"
    );
}

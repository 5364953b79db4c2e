//! Announcing the worker in the backend's registry (`runtime workers`),
//! beside the claim loop.

use std::sync::Arc;
use std::time::Duration;

use crate::metrics::Metrics;
use crate::queue::{Clock, SystemClock, WorkerInfo, WorkerRegistry};

/// Announces the worker every `every` until aborted; a beat that fails is
/// simply late (the outage is logged by the claim loop). The record
/// expires after three missed beats.
pub(super) async fn run(
    registry: Arc<dyn WorkerRegistry>,
    metrics: Arc<Metrics>,
    mut info: WorkerInfo,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        info.in_flight = metrics.in_flight();
        info.beat_at = SystemClock.now();
        let _ = registry.heartbeat(&info, every * 3).await;
    }
}

/// How a worker serving `queues` with `concurrency` appears in the
/// registry.
pub(super) fn identity(queues: Vec<String>, concurrency: usize) -> WorkerInfo {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    let pid = std::process::id();
    let now = SystemClock.now();
    WorkerInfo {
        id: format!("{host}:{pid}:{:06x}", fastrand::u32(..0x100_0000)),
        host,
        pid,
        queues,
        concurrency,
        in_flight: 0,
        started_at: now,
        beat_at: now,
    }
}

//! The workers registry on Redis: each worker's heartbeat is a record
//! that expires by itself (`<prefix>{@workers}:<id>`), indexed by expiry in
//! `<prefix>{@workers}` so listing needs no `KEYS` scan.

use std::time::Duration;

use async_trait::async_trait;

use super::RedisBackend;
use crate::error::QueueError;
use crate::queue::clock::millis;
use crate::queue::{WorkerInfo, WorkerRegistry};

#[async_trait]
impl WorkerRegistry for RedisBackend {
    async fn heartbeat(&self, worker: &WorkerInfo, ttl: Duration) -> Result<(), QueueError> {
        let (set, record) = (
            self.shared.keys.workers(),
            self.shared.keys.worker(&worker.id),
        );
        let json = serde_json::to_string(worker).map_err(|e| QueueError::Backend {
            backend: self.shared.name.clone(),
            message: format!("cannot encode worker record: {e}"),
        })?;
        let expires = self.shared.clock.now().saturating_add(millis(ttl));
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(&record)
            .arg(json)
            .arg("PX")
            .arg(millis(ttl).max(1))
            .ignore()
            .cmd("ZADD")
            .arg(&set)
            .arg(expires)
            .arg(&worker.id)
            .ignore();
        self.query_pipe(&pipe).await
    }

    async fn workers(&self) -> Result<Vec<WorkerInfo>, QueueError> {
        let set = self.shared.keys.workers();
        let now = self.shared.clock.now();
        // Records expire by themselves; the index is trimmed here.
        let _: u64 = self
            .query(
                redis::cmd("ZREMRANGEBYSCORE")
                    .arg(&set)
                    .arg("-inf")
                    .arg(now),
            )
            .await?;
        let ids: Vec<String> = self
            .query(redis::cmd("ZRANGE").arg(&set).arg(0).arg(-1))
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| self.shared.keys.worker(id)).collect();
        let records: Vec<Option<String>> = self.query(redis::cmd("MGET").arg(&keys)).await?;
        let mut workers = Vec::new();
        let mut gone = Vec::new();
        for (id, record) in ids.iter().zip(records) {
            match record.and_then(|r| serde_json::from_str::<WorkerInfo>(&r).ok()) {
                Some(w) => workers.push(w),
                None => gone.push(id),
            }
        }
        if !gone.is_empty() {
            let _: u64 = self.query(redis::cmd("ZREM").arg(&set).arg(gone)).await?;
        }
        Ok(workers)
    }

    async fn unregister(&self, id: &str) -> Result<(), QueueError> {
        let (set, record) = (self.shared.keys.workers(), self.shared.keys.worker(id));
        let mut pipe = redis::pipe();
        pipe.cmd("DEL")
            .arg(&record)
            .ignore()
            .cmd("ZREM")
            .arg(&set)
            .arg(id)
            .ignore();
        self.query_pipe(&pipe).await
    }
}

//! The module store on Redis: each published module's bytes under a key
//! of their own version, and an index from queue to version
//! (`<prefix>{@modules}`).

use async_trait::async_trait;

use super::RedisBackend;
use crate::error::QueueError;
use crate::job::QueueName;
use crate::queue::{ModuleStore, module_version};

#[async_trait]
impl ModuleStore for RedisBackend {
    async fn publish_module(&self, queue: &QueueName, bytes: &[u8]) -> Result<String, QueueError> {
        let version = module_version(bytes);
        let index = self.shared.keys.modules();
        let old: Option<String> = self
            .query(redis::cmd("HGET").arg(&index).arg(queue.as_str()))
            .await?;
        // The bytes first, under a key of their own version; then the
        // index points at them: a reader never sees a version without
        // its bytes.
        let _: () = self
            .query(
                redis::cmd("SET")
                    .arg(self.shared.keys.module(queue, &version))
                    .arg(bytes),
            )
            .await?;
        let _: u64 = self
            .query(
                redis::cmd("HSET")
                    .arg(&index)
                    .arg(queue.as_str())
                    .arg(&version),
            )
            .await?;
        if let Some(old) = old.filter(|o| *o != version) {
            let _: u64 = self
                .query(redis::cmd("DEL").arg(self.shared.keys.module(queue, &old)))
                .await?;
        }
        Ok(version)
    }

    async fn module_versions(
        &self,
        queues: &[QueueName],
    ) -> Result<Vec<Option<String>>, QueueError> {
        if queues.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<&str> = queues.iter().map(QueueName::as_str).collect();
        self.query(
            redis::cmd("HMGET")
                .arg(self.shared.keys.modules())
                .arg(names),
        )
        .await
    }

    async fn module(&self, queue: &QueueName) -> Result<Option<(String, Vec<u8>)>, QueueError> {
        let version: Option<String> = self
            .query(
                redis::cmd("HGET")
                    .arg(self.shared.keys.modules())
                    .arg(queue.as_str()),
            )
            .await?;
        let Some(version) = version else {
            return Ok(None);
        };
        let bytes: Option<Vec<u8>> = self
            .query(redis::cmd("GET").arg(self.shared.keys.module(queue, &version)))
            .await?;
        Ok(bytes.map(|b| (version, b)))
    }

    async fn withdraw_module(&self, queue: &QueueName) -> Result<bool, QueueError> {
        let index = self.shared.keys.modules();
        let version: Option<String> = self
            .query(redis::cmd("HGET").arg(&index).arg(queue.as_str()))
            .await?;
        let Some(version) = version else {
            return Ok(false);
        };
        let _: u64 = self
            .query(redis::cmd("HDEL").arg(&index).arg(queue.as_str()))
            .await?;
        let _: u64 = self
            .query(redis::cmd("DEL").arg(self.shared.keys.module(queue, &version)))
            .await?;
        Ok(true)
    }

    async fn module_sizes(&self, queues: &[QueueName]) -> Result<Vec<Option<u64>>, QueueError> {
        let versions = self.module_versions(queues).await?;
        let mut sizes = Vec::with_capacity(queues.len());
        for (queue, version) in queues.iter().zip(versions) {
            let size = match version {
                Some(version) => {
                    let len: u64 = self
                        .query(redis::cmd("STRLEN").arg(self.shared.keys.module(queue, &version)))
                        .await?;
                    // Withdrawn between the two reads: none.
                    (len > 0).then_some(len)
                }
                None => None,
            };
            sizes.push(size);
        }
        Ok(sizes)
    }

    async fn published(&self) -> Result<Vec<QueueName>, QueueError> {
        self.queue_names(redis::cmd("HKEYS").arg(self.shared.keys.modules()))
            .await
    }
}

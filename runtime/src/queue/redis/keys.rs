//! The key layout: every Redis key the backend touches is named here (see
//! the table in the module docs).

use crate::job::{JobId, QueueName};

/// The keys of one queue. Each carries the queue's Redis Cluster hash tag,
/// `{queue}`, so all of them live in one slot and one function call can
/// change any of them atomically.
pub(super) struct QueueKeys {
    /// Zset of pending jobs: score -priority, member the zero-padded seq.
    pub pending: String,
    /// Zset of delayed jobs and retries: score due time (ms).
    pub scheduled: String,
    /// Zset of running jobs: score lease expiry (ms).
    pub running: String,
    /// Zset of failed jobs: score time of failure (ms).
    pub failed: String,
    /// Hash: unique key -> seq of the live job holding it.
    pub unique: String,
    /// Hash: `seq` (last job number), `done` (jobs finished).
    pub stats: String,
    /// List: a marker wakes one blocked worker.
    pub wake: String,
}

impl QueueKeys {
    fn new(base: &str) -> Self {
        let key = |suffix: &str| format!("{base}:{suffix}");
        QueueKeys {
            pending: key("pending"),
            scheduled: key("scheduled"),
            running: key("running"),
            failed: key("failed"),
            unique: key("unique"),
            stats: key("stats"),
            wake: key("wake"),
        }
    }
}

/// Names keys under one prefix.
#[derive(Debug, Clone)]
pub(super) struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_string(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<prefix>{<queue>}`: every key of the queue starts with it. The
    /// library's functions get only this key and name the others from it
    /// (all in its slot), so a call carries one key, not eight.
    pub fn base(&self, queue: &QueueName) -> String {
        format!("{}{{{}}}", self.prefix, queue)
    }

    /// Every key of one queue.
    pub fn queue(&self, queue: &QueueName) -> QueueKeys {
        QueueKeys::new(&self.base(queue))
    }

    /// A job's record: `<prefix>{<queue>}:job:<seq>`, its fixed part; the
    /// other parts are this key with a suffix (see the module docs).
    pub fn job(&self, id: &JobId) -> String {
        format!("{}:job:{}", self.base(id.queue()), id.seq())
    }

    /// The count of the job tree rooted at `root`, in the root's slot.
    pub fn tree(&self, root: &JobId) -> String {
        format!("{}:tree:{}", self.base(root.queue()), root.seq())
    }

    /// The set of queues ever dispatched to.
    pub fn queues(&self) -> String {
        format!("{}queues", self.prefix)
    }

    /// The live workers' index (id → expiry): `<prefix>{@workers}` (`@` is
    /// in no queue name, so no queue's keys can collide).
    pub fn workers(&self) -> String {
        format!("{}{{@workers}}", self.prefix)
    }

    /// One worker's record, in the index's slot.
    pub fn worker(&self, id: &str) -> String {
        format!("{}:{id}", self.workers())
    }

    /// The due index (queue → when it may next have work), with its
    /// `:marks` and `:wake` keys in its slot: `<prefix>{@due}`.
    pub fn due(&self) -> String {
        format!("{}{{@due}}", self.prefix)
    }

    /// The tenant registry (name → record): `<prefix>{@tenants}`.
    pub fn tenants(&self) -> String {
        format!("{}{{@tenants}}", self.prefix)
    }

    /// A tenant's own keys (dispatch bucket): `<prefix>{@t/<tenant>}`, a
    /// slot of its own, apart from its queues'.
    pub fn tenant(&self, tenant: &crate::job::TenantName) -> String {
        format!("{}{{@t/{tenant}}}", self.prefix)
    }

    /// The fleet's throughput per minute: `<prefix>{@throughput}`, a slot
    /// of its own (each tenant's is among its own keys).
    pub fn throughput(&self) -> String {
        format!("{}{{@throughput}}", self.prefix)
    }

    /// The published modules' index (queue → version): `<prefix>{@modules}`.
    pub fn modules(&self) -> String {
        format!("{}{{@modules}}", self.prefix)
    }

    /// One published module's bytes, in the index's slot.
    pub fn module(&self, queue: &QueueName, version: &str) -> String {
        format!("{}:{queue}:{version}", self.modules())
    }
}

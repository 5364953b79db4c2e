//! The Redis backend: the production queue server, shared by any number of
//! workers on any number of machines.
//!
//! # Keys
//!
//! Every key starts with the configured prefix (default `runtime:`), so
//! several systems can share one Redis. Every key of a queue carries the
//! queue's Redis Cluster hash tag, `{queue}`, so one queue lives on one node
//! and each of its state changes is a single function call on that node
//! ([`keys`] names them all):
//!
//! | key                          | type | holds                                   |
//! |------------------------------|------|-----------------------------------------|
//! | `P{q}:pending`               | zset | score -priority, member zero-padded seq |
//! | `P{q}:scheduled`             | zset | score due time (ms)                     |
//! | `P{q}:running`               | zset | score lease expiry (ms)                 |
//! | `P{q}:failed`                | zset | score time of failure (ms)              |
//! | `P{q}:unique`                | hash | unique key -> seq of the live job       |
//! | `P{q}:stats`                 | hash | `seq` (last job number; kept when the queue is removed), `done`, `on` (set by the first dispatch since it was new) |
//! | `P{q}:wake`                  | list | wake-up marker for blocked workers      |
//! | `P{q}:job:<seq>`             | string | what never changes: payload, times, tree, unique key (encoded by the host) |
//! | `P{q}:job:<seq>:m`           | string | what changes: `state\|attempts\|token\|lease\|run_at\|started\|priority\|max\|flags` |
//! | `P{q}:job:<seq>:x`           | hash | if needed: `u` unique key; `k`, `e`, `g` the last failure's kind, reason, log; `tree_jobs` |
//! | `P{q}:job:<seq>:h`           | list | one `n\|started\|ended:kind\|outcome` per failed attempt |
//! | `P{q}:tree:<seq>`            | hash | the count of the job tree rooted at `<seq>` (`jobs`, `live`) |
//! | `Pqueues`                    | set  | names of queues ever dispatched to      |
//! | `P{@workers}`, `P{@workers}:<id>` | zset, string | live workers ([`WorkerRegistry`](super::WorkerRegistry)) |
//! | `P{@modules}`, `P{@modules}:<q>:<version>` | hash, string | published modules ([`ModuleStore`](super::ModuleStore)) |
//! | `P{@due}`, `P{@due}:marks`, `P{@due}:wake` | zset, hash, list | the due index: queue → when it may next have work, times marked, wake-up marker ([`JobQueue::due`]) |
//! | `P{@tenants}`                | hash | registered tenants: name → record, JSON ([`TenantStore`](super::TenantStore)) |
//! | `P{@t/<tenant>}:bucket`      | hash | a tenant's dispatch bucket: `tokens`, `at` ([`TenantStore::take_dispatch`](super::TenantStore::take_dispatch)); expires a minute after it would be full |
//! | `P{@t/<tenant>}:flight`      | hash | a tenant's jobs in flight: holder (worker) → `jobs|expires ms` ([`TenantStore::take_flight`](super::TenantStore::take_flight)); a holder past its time holds nothing |
//! | `P{@t/<tenant>}:throughput`, `P{@throughput}` | hash, hash | a tenant's and the fleet's attempts per minute: minute modulo 120 → `minute|processed|failed`, a field of an earlier minute reading zero ([`TenantStore::add_throughput`](super::TenantStore::add_throughput)); at most 120 fields, expires 121 minutes after its last write |
//!
//! A record is plain strings so that a batch of jobs is read and written
//! with one `MGET` and one `MSET`. Records written by versions before this
//! layout (a hash of one field per attribute) are not read: such a job is
//! failed when claimed and reported as malformed, to be deleted.
//!
//! # Functions
//!
//! Each state change is one function of a library (`library.lua`, see
//! [`library`]) loaded once per server and called with `FCALL`; a call that
//! finds the library missing loads it and calls again. A claim writes the
//! attempt's start into the record's changing part, not the history: an
//! attempt gets its entry when it fails (a done job's record goes), and
//! a lease taken back writes its entry from that start. Time comes from the
//! caller's [`Clock`] as an argument, never from the server, so the
//! conformance suite runs unchanged on a manual clock.
//!
//! # Job trees on a cluster
//!
//! A follow-up and the count of its tree live in different queues, and so
//! possibly on different nodes. A follow-up is therefore three steps: a
//! reservation on the root's slot (the `tree` function: refused if the
//! tree is full), the enqueue on the follow-up's own slot, and, if the
//! enqueue found its unique key held and added nothing, a refund of the
//! reservation. A crash between them can only leave the tree counting a job
//! it does not have: the budget errs on the safe side. A follow-up with a
//! unique key first looks the key up, so one that would only return the
//! job holding it is never refused for the budget.
//!
//! # Waking workers without polling
//!
//! A worker with nothing to do blocks in `BLPOP` on its queues' `wake`
//! keys ([`listener`]). Dispatches push a marker; a claim that leaves
//! work behind pushes another, so a bulk dispatch wakes one idle worker
//! after another. The wait is also bounded by the queue's next due time or
//! lease expiry, which a small function reports, so delayed jobs start on
//! time without a polling loop.

mod codec;
mod connection;
mod keys;
mod library;
mod listener;
mod modules;
mod tenants;
mod workers;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::{Cmd, FromRedisValue, RedisError, Value};

pub use connection::redact;

use self::codec::{completion_args, decode_record, encode_fixed};
use self::connection::Conn;
use self::keys::Keys;
use self::library::Function;
use self::listener::{Waiting, Wakeups};
use super::clock::millis;
use super::{Ack, Claim, Clock, Completion, DueQueue, JobQueue, Lease, Page, StateCounts};
use crate::error::QueueError;
use crate::job::{
    JobId, JobRecord, JobState, Lineage, NewJob, QueueName, TREE_KEEP, TreeBudget, UnixMillis,
};

/// The key prefix when none is configured.
pub const DEFAULT_PREFIX: &str = "runtime:";

/// Jobs removed per purge call, so Redis is never blocked for long by one
/// queue's purge (each call deletes at most this many records). Default
/// 5,000: a few milliseconds of server time.
const PURGE_CHUNK: u64 = 5_000;

/// How often a process reading the due index repairs it from the queues:
/// the longest a job can wait unseen by workers serving every queue after
/// a crash between its dispatch and the mark that follows.
const DUE_REPAIR: Duration = Duration::from_secs(30);

/// Most due queues one read of the index returns; the next read starts
/// where this one ended, so more due queues than this are all reached.
const DUE_LIST: usize = 1000;

/// How long a process trusts that a queue it registered is still in the
/// `queues` set.
const REGISTER_AGAIN: Duration = Duration::from_secs(30);

/// The Redis queue backend. Cheap to share behind an `Arc`.
pub struct RedisBackend {
    shared: Arc<Shared>,
}

struct Shared {
    conn: Conn,
    /// The URL without credentials, for messages.
    name: String,
    keys: Keys,
    clock: Arc<dyn Clock>,
    /// Queues this process has registered in the `queues` set, and when.
    known: Mutex<HashMap<QueueName, Instant>>,
    /// The wake-up listeners of the queues waited on.
    wakeups: Arc<Wakeups>,
    /// When this process last repaired the due index.
    due_repaired: Mutex<Option<std::time::Instant>>,
    /// Where the next read of the due index starts.
    due_turn: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("url", &self.shared.name)
            .field("prefix", &self.shared.keys.prefix())
            .field("cluster", &self.is_cluster())
            .finish_non_exhaustive()
    }
}

impl RedisBackend {
    /// Connects to the Redis at `url` (`redis://`, `rediss://`,
    /// `redis+unix://`), detecting a cluster, with keys under `prefix`.
    /// Fails, naming the URL, if the server cannot be reached.
    pub async fn connect(
        url: &str,
        prefix: &str,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, QueueError> {
        let name = redact(url);
        let fail = |message: String| QueueError::Backend {
            backend: name.clone(),
            message,
        };
        if prefix.contains(['{', '}']) {
            return Err(fail(format!(
                "invalid key prefix {prefix:?}: it may not contain '{{' or '}}' (queue names form the cluster hash tag)"
            )));
        }
        let (mut conn, target) = connection::open(url).await.map_err(fail)?;
        // Every state change is a Redis function: a server without them
        // (before 7.0) is refused here, in words, rather than at the first
        // dispatch with "unknown command".
        let probe: Result<Value, RedisError> = redis::cmd("FUNCTION")
            .arg("LIST")
            .arg("LIBRARYNAME")
            .arg("runtime_")
            .query_async(&mut conn)
            .await;
        if let Err(e) = probe
            && e.to_string().to_ascii_lowercase().contains("unknown")
        {
            return Err(fail(format!(
                "this Redis has no functions ({e}): runtime needs Redis 7.0 or later"
            )));
        }
        Ok(RedisBackend {
            shared: Arc::new(Shared {
                conn,
                name,
                keys: Keys::new(prefix),
                clock,
                known: Mutex::new(HashMap::new()),
                wakeups: Wakeups::new(target),
                due_repaired: Mutex::new(None),
                due_turn: std::sync::atomic::AtomicU64::new(0),
            }),
        })
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        self.shared.keys.prefix()
    }

    /// Whether the server is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.shared.conn, Conn::Cluster(_))
    }

    /// The base key of a queue: `<prefix>{<queue>}`; every key of the queue
    /// starts with it.
    pub fn queue_key(&self, queue: &QueueName) -> String {
        self.shared.keys.base(queue)
    }

    /// Runs a raw command on the main connection (tests and admin use it
    /// to inspect the server).
    pub async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, QueueError> {
        let mut conn = self.shared.conn.clone();
        cmd.query_async(&mut conn).await.map_err(|e| self.err(e))
    }

    /// Runs a pipeline on the main connection.
    async fn query_pipe<T: FromRedisValue>(&self, pipe: &redis::Pipeline) -> Result<T, QueueError> {
        let mut conn = self.shared.conn.clone();
        pipe.query_async(&mut conn).await.map_err(|e| self.err(e))
    }

    fn err(&self, e: RedisError) -> QueueError {
        QueueError::Backend {
            backend: self.shared.name.clone(),
            message: e.to_string(),
        }
    }

    fn malformed(&self, id: &JobId, what: &str) -> QueueError {
        QueueError::Backend {
            backend: self.shared.name.clone(),
            message: format!(
                "job {id} is malformed in Redis ({what}); delete it with `runtime jobs delete {id}`"
            ),
        }
    }

    /// Calls library function `f` on `queue` with `now` and the extra
    /// `args`; the raw reply.
    async fn call_raw(
        &self,
        f: Function,
        queue: &QueueName,
        now: UnixMillis,
        args: impl FnOnce(&mut Cmd),
    ) -> Result<Value, QueueError> {
        self.call_key(f, &self.shared.keys.base(queue), now, args)
            .await
    }

    /// Calls library function `f` on `key` with `now` and the extra `args`;
    /// the raw reply.
    async fn call_key(
        &self,
        f: Function,
        key: &str,
        now: UnixMillis,
        args: impl FnOnce(&mut Cmd),
    ) -> Result<Value, QueueError> {
        let mut cmd = f.call(&[key]);
        cmd.arg(now);
        args(&mut cmd);
        let mut conn = self.shared.conn.clone();
        library::run(&mut conn, &cmd).await.map_err(|e| self.err(e))
    }

    fn reply_error(&self, f: Function, what: &str) -> QueueError {
        QueueError::Backend {
            backend: self.shared.name.clone(),
            message: format!("unexpected reply from the {f:?} function: {what}"),
        }
    }

    /// Converts a function's reply.
    fn reply<T: FromRedisValue>(&self, f: Function, reply: Value) -> Result<T, QueueError> {
        T::from_redis_value(reply).map_err(|e| self.reply_error(f, &e.to_string()))
    }

    /// [`call_raw`](Self::call_raw), its reply converted.
    async fn call<T: FromRedisValue>(
        &self,
        f: Function,
        queue: &QueueName,
        now: UnixMillis,
        args: impl FnOnce(&mut Cmd),
    ) -> Result<T, QueueError> {
        let reply = self.call_raw(f, queue, now, args).await?;
        self.reply(f, reply)
    }

    /// Marks `queue` due at `at` (ms) in the due index; nothing if `at` is
    /// negative (the call that returned it did not move the queue's next
    /// work earlier).
    async fn mark(&self, queue: &QueueName, at: i64, now: UnixMillis) {
        if at >= 0 {
            self.mark_all(&[(queue.clone(), at)], now).await;
        }
    }

    /// Marks each queue due at its time (ms) in one call. The changes the
    /// marks follow are made: a failure here is logged, not returned (a
    /// dispatch reported failed would be sent again), and the index's
    /// repair makes up for it.
    async fn mark_all(&self, marks: &[(QueueName, i64)], now: UnixMillis) {
        if marks.is_empty() {
            return;
        }
        let marked = self
            .call_key(Function::Mark, &self.shared.keys.due(), now, |cmd| {
                for (queue, at) in marks {
                    cmd.arg(queue.as_str()).arg(*at);
                }
            })
            .await
            .and_then(|reply| self.reply::<i64>(Function::Mark, reply));
        if let Err(e) = marked {
            let first = &marks[0].0;
            tracing::warn!(queue = %first, queues = marks.len(), error = %e, "could not mark queues due; workers serving every queue find their jobs at their next repair of the due index");
        }
    }

    /// When `queue` may next have work (ms), from its `peek`; -1 if never.
    async fn next_due_at(&self, queue: &QueueName, now: UnixMillis) -> Result<i64, QueueError> {
        let next: i64 = self.call(Function::Peek, queue, now, |_| {}).await?;
        Ok(if next < 0 {
            -1
        } else {
            i64::try_from(now).unwrap_or(i64::MAX).saturating_add(next)
        })
    }

    /// Marks every queue that may have work in the due index, from the
    /// queues themselves: the repair of a hint that a crash between a
    /// queue call and its mark, or data from before the index, left short.
    /// The queues are looked at [`DUE_LIST`] at a time, at once, and each
    /// such part marked in one call.
    async fn repair_due(&self) -> Result<(), QueueError> {
        let now = self.shared.clock.now();
        let queues = self.queues().await?;
        for part in queues.chunks(DUE_LIST) {
            let next = futures_util::future::try_join_all(
                part.iter().map(|queue| self.next_due_at(queue, now)),
            )
            .await?;
            let marks: Vec<(QueueName, i64)> = part
                .iter()
                .cloned()
                .zip(next)
                .filter(|&(_, at)| at >= 0)
                .collect();
            self.mark_all(&marks, now).await;
        }
        Ok(())
    }

    /// Adds `queue` to the set of queues, once per process every
    /// [`REGISTER_AGAIN`] (a queue removed by another process comes back
    /// to the set when this one dispatches there again).
    /// With `again`, adds it whatever this process last did: the queue's
    /// dispatch found it new (removed, or never used).
    async fn register(&self, queue: &QueueName, again: bool) -> Result<(), QueueError> {
        let fresh = |at: &Instant| at.elapsed() < REGISTER_AGAIN;
        if !again && self.lock_known().get(queue).is_some_and(fresh) {
            return Ok(());
        }
        let _added: i64 = self
            .query(
                redis::cmd("SADD")
                    .arg(self.shared.keys.queues())
                    .arg(queue.as_str()),
            )
            .await?;
        self.lock_known().insert(queue.clone(), Instant::now());
        Ok(())
    }

    /// The queue names `cmd` replies with, sorted; names this version
    /// cannot read are left out.
    async fn queue_names(&self, cmd: &redis::Cmd) -> Result<Vec<QueueName>, QueueError> {
        let names: Vec<String> = self.query(cmd).await?;
        let mut queues: Vec<QueueName> = names
            .into_iter()
            .filter_map(|n| QueueName::parse(&n).ok())
            .collect();
        queues.sort();
        Ok(queues)
    }

    fn lock_known(&self) -> std::sync::MutexGuard<'_, HashMap<QueueName, Instant>> {
        crate::sync::lock(&self.shared.known)
    }

    /// Enqueues checked jobs of one queue in one call, all with `lineage`
    /// (follow-ups) or none; each id with whether it is new (not the live
    /// job holding its unique key).
    async fn dispatch_group(
        &self,
        queue: &QueueName,
        jobs: &[NewJob],
        lineage: Option<&Lineage>,
        now: UnixMillis,
    ) -> Result<Vec<(JobId, bool)>, QueueError> {
        self.register(queue, false).await?;
        let (due_at, seqs, anew): (i64, Vec<(u64, u8)>, u8) = self
            .call(Function::Dispatch, queue, now, |cmd| {
                for job in jobs {
                    let run_at = job.options.run_at.due(now);
                    let key = job.options.unique_key.as_deref();
                    cmd.arg(encode_fixed(now, job, lineage))
                        .arg(job.options.priority)
                        .arg(job.options.max_attempts.get())
                        .arg(if key.is_some() { "1" } else { "0" })
                        .arg(key.unwrap_or_default())
                        .arg(run_at);
                }
            })
            .await?;
        if seqs.len() != jobs.len() {
            return Err(QueueError::Backend {
                backend: self.shared.name.clone(),
                message: "the dispatch function returned a short reply".into(),
            });
        }
        if anew == 1 {
            // Removed by another process since this one listed it.
            self.register(queue, true).await?;
        }
        self.mark(queue, due_at, now).await;
        Ok(seqs
            .into_iter()
            .map(|(seq, new)| (JobId::new(queue.clone(), seq), new == 1))
            .collect())
    }

    /// [`dispatch_group`](Self::dispatch_group) of one job.
    async fn dispatch_one(
        &self,
        queue: &QueueName,
        job: NewJob,
        lineage: Option<&Lineage>,
        now: UnixMillis,
    ) -> Result<(JobId, bool), QueueError> {
        let ids = self.dispatch_group(queue, &[job], lineage, now).await?;
        ids.into_iter().next().ok_or_else(|| QueueError::Backend {
            backend: self.shared.name.clone(),
            message: "the dispatch function returned no id".into(),
        })
    }

    /// Calls the `tree` function on the slot of `root`'s tree: `op` with
    /// `args`.
    async fn tree(
        &self,
        root: &JobId,
        op: &str,
        args: &[u64],
    ) -> Result<(String, u32), QueueError> {
        let (count, record) = (self.shared.keys.tree(root), self.shared.keys.job(root));
        let extra = format!("{record}:x");
        let mut cmd = Function::Tree.call(&[&count, &extra, &record]);
        cmd.arg(op).arg(args);
        let mut conn = self.shared.conn.clone();
        let reply = library::run(&mut conn, &cmd)
            .await
            .map_err(|e| self.err(e))?;
        FromRedisValue::from_redis_value(reply)
            .map_err(|_| self.malformed(root, "the tree function returned an unknown reply"))
    }

    /// The job of `queue` holding unique key `key` (as stored), if any.
    async fn holder(&self, queue: &QueueName, key: &str) -> Result<Option<JobId>, QueueError> {
        let unique = self.shared.keys.queue(queue).unique;
        let seq: Option<u64> = self.query(redis::cmd("HGET").arg(unique).arg(key)).await?;
        Ok(seq.map(|seq| JobId::new(queue.clone(), seq)))
    }

    /// A job record from a function's reply, with its fencing token and
    /// lease expiry.
    fn record(&self, queue: &QueueName, reply: Value) -> Result<(JobRecord, u64, u64), QueueError> {
        decode_record(queue, reply, |id, what| self.malformed(id, what))
    }

    /// The records of a function's reply that is a list of them.
    fn records(
        &self,
        queue: &QueueName,
        reply: Value,
    ) -> Result<Vec<(JobRecord, u64, u64)>, QueueError> {
        match reply {
            Value::Array(items) => items.into_iter().map(|r| self.record(queue, r)).collect(),
            _ => Err(QueueError::Backend {
                backend: self.shared.name.clone(),
                message: format!(
                    "a function on queue {queue} returned something other than a list of jobs"
                ),
            }),
        }
    }

    /// The ack for one result of the complete function.
    fn ack_of(&self, id: &JobId, result: &str) -> Result<Ack, QueueError> {
        match result {
            "stale" => Ok(Ack::Stale),
            "done" => Ok(Ack::Applied(None)),
            state => state_named(state)
                .map(|s| Ack::Applied(Some(s)))
                .ok_or_else(|| self.malformed(id, "complete returned an unknown state")),
        }
    }
}

fn state_named(name: &str) -> Option<JobState> {
    name.parse().ok()
}

#[async_trait]
impl JobQueue for RedisBackend {
    async fn dispatch(&self, job: NewJob) -> Result<JobId, QueueError> {
        let now = self.shared.clock.now();
        job.check(now)?;
        let queue = job.queue.clone();
        let (id, _) = self.dispatch_one(&queue, job, None, now).await?;
        Ok(id)
    }

    /// Atomic per queue: consecutive jobs of one queue go in one call.
    async fn dispatch_many(&self, jobs: Vec<NewJob>) -> Result<Vec<JobId>, QueueError> {
        let now = self.shared.clock.now();
        // All checked before any is enqueued: one bad job enqueues nothing.
        for job in &jobs {
            job.check(now)?;
        }
        let mut ids = Vec::with_capacity(jobs.len());
        for group in jobs.chunk_by(|a, b| a.queue == b.queue) {
            let group_ids = self
                .dispatch_group(&group[0].queue, group, None, now)
                .await?;
            ids.extend(group_ids.into_iter().map(|(id, _)| id));
        }
        Ok(ids)
    }

    async fn dispatch_follow_up(
        &self,
        mut job: NewJob,
        lineage: Lineage,
        budget: TreeBudget,
    ) -> Result<JobId, QueueError> {
        let now = self.shared.clock.now();
        job.check(now)?;
        if let Some(key) = job.options.unique_key.take() {
            let key = lineage.scoped_key(&key);
            if let Some(holder) = self.holder(&job.queue, &key).await? {
                return Ok(holder);
            }
            job.options.unique_key = Some(key);
        }
        let root = lineage.root.clone();
        let queue = lineage.parent.queue().clone();
        if lineage.depth > budget.max_depth {
            return Err(QueueError::TreeTooDeep {
                root,
                queue,
                depth: lineage.depth,
                limit: budget.max_depth,
            });
        }
        let keep = millis(TREE_KEEP);
        let args = [u64::from(lineage.depth), u64::from(budget.max_jobs), keep];
        let (status, jobs) = self.tree(&root, "reserve", &args).await?;
        match status.as_str() {
            "ok" => {}
            "full" => {
                return Err(QueueError::TreeFull {
                    root,
                    queue,
                    jobs,
                    limit: budget.max_jobs,
                });
            }
            "closed" => return Err(QueueError::TreeClosed { root }),
            _ => return Err(self.malformed(&root, "the tree function returned an unknown status")),
        }
        let target = job.queue.clone();
        let (id, new) = self.dispatch_one(&target, job, Some(&lineage), now).await?;
        if !new {
            // The key was taken between the look-up and the enqueue.
            self.tree(&root, "refund", &[]).await?;
        }
        Ok(id)
    }

    async fn leave_tree(&self, lineage: &Lineage) -> Result<(), QueueError> {
        self.tree(&lineage.root, "leave", &[]).await.map(|_| ())
    }

    async fn claim(
        &self,
        queues: &[QueueName],
        max: usize,
        lease: Duration,
    ) -> Result<Vec<Claim>, QueueError> {
        let now = self.shared.clock.now();
        let expires_at = now.saturating_add(millis(lease));
        let mut claims = Vec::new();
        for queue in queues {
            let want = max - claims.len();
            if want == 0 {
                break;
            }
            let reply = self
                .call_raw(Function::Claim, queue, now, |cmd| {
                    cmd.arg(want).arg(expires_at);
                })
                .await?;
            for (job, token, expires_at) in self.records(queue, reply)? {
                let lease = Lease {
                    id: job.id.clone(),
                    token,
                    expires_at,
                };
                claims.push(Claim { job, lease });
            }
        }
        Ok(claims)
    }

    async fn due(&self) -> Result<Vec<DueQueue>, QueueError> {
        let repair = {
            let mut repaired = crate::sync::lock(&self.shared.due_repaired);
            let now = std::time::Instant::now();
            let stale = repaired.is_none_or(|at| now.duration_since(at) >= DUE_REPAIR);
            if stale {
                *repaired = Some(now);
            }
            stale
        };
        if repair {
            self.repair_due().await?;
        }
        let now = self.shared.clock.now();
        let offset = self
            .shared
            .due_turn
            .fetch_add(DUE_LIST as u64, std::sync::atomic::Ordering::Relaxed);
        let reply = self
            .call_key(Function::Due, &self.shared.keys.due(), now, |cmd| {
                cmd.arg(offset).arg(DUE_LIST);
            })
            .await?;
        let items: Vec<Value> = self.reply(Function::Due, reply)?;
        let mut out = Vec::with_capacity(items.len() / 2);
        for pair in items.get(1..).unwrap_or_default().chunks(2) {
            let [name, marks] = pair else {
                return Err(self.reply_error(Function::Due, "an odd number of items"));
            };
            let name: String = self.reply(Function::Due, name.clone())?;
            let marks: u64 = self.reply(Function::Due, marks.clone())?;
            // A name that does not parse was never written by a queue call:
            // skipped, like the `queues` listing does.
            if let Ok(queue) = QueueName::parse(&name) {
                out.push(DueQueue { queue, marks });
            }
        }
        Ok(out)
    }

    async fn settle(&self, due: &DueQueue) -> Result<(), QueueError> {
        let now = self.shared.clock.now();
        let at = self.next_due_at(&due.queue, now).await?;
        let reply = self
            .call_key(Function::Settle, &self.shared.keys.due(), now, |cmd| {
                cmd.arg(due.queue.as_str()).arg(due.marks).arg(at);
            })
            .await?;
        self.reply::<i64>(Function::Settle, reply).map(drop)
    }

    async fn wait_for_due(
        &self,
        passing: &[QueueName],
        tenant: Option<&crate::job::TenantName>,
        timeout: Duration,
    ) -> Result<(), QueueError> {
        let index = self.shared.keys.due();
        let _waiting = self.shared.wakeups.wait_on(&format!("{index}:wake"));
        let notified = self.shared.wakeups.notified();
        tokio::pin!(notified);
        // Registered before looking, so a mark after the look still wakes us.
        notified.as_mut().enable();
        // The first queue not passed over (and of the tenant): among the
        // first ones, one more than those passed over or, for one tenant,
        // as many as a listing of due queues holds. Past those, the wait
        // runs its time.
        let window = match tenant {
            Some(_) => DUE_LIST.max(passing.len() + 1),
            None => passing.len() + 1,
        };
        let first: Vec<(String, f64)> = self
            .query(
                redis::cmd("ZRANGE")
                    .arg(&index)
                    .arg(0)
                    .arg(window - 1)
                    .arg("WITHSCORES"),
            )
            .await?;
        let now = self.shared.clock.now();
        let mut wait = timeout;
        let passing: std::collections::HashSet<&QueueName> = passing.iter().collect();
        let next = first.iter().find(|(name, _)| match QueueName::parse(name) {
            Ok(q) => !passing.contains(&q) && tenant.is_none_or(|t| q.is_in(t)),
            Err(_) => tenant.is_none(),
        });
        if let Some((_, at)) = next {
            // Scores are whole milliseconds; a negative or huge one is
            // taken as due now or as far off.
            let at = if at.is_finite() && *at > 0.0 {
                *at as u64
            } else {
                0
            };
            wait = wait.min(Duration::from_millis(at.saturating_sub(now)));
        }
        if !wait.is_zero() {
            let _ = tokio::time::timeout(wait, notified).await;
        }
        Ok(())
    }

    async fn wait_for_work(
        &self,
        queues: &[QueueName],
        timeout: Duration,
    ) -> Result<(), QueueError> {
        let _waiting: Vec<Waiting> = queues
            .iter()
            .map(|q| {
                let wake = self.shared.keys.queue(q).wake;
                self.shared.wakeups.wait_on(&wake)
            })
            .collect();
        let notified = self.shared.wakeups.notified();
        tokio::pin!(notified);
        // Registered before looking, so a marker popped after the look
        // still wakes us.
        notified.as_mut().enable();
        let now = self.shared.clock.now();
        let mut wait = timeout;
        for queue in queues {
            let next: i64 = self.call(Function::Peek, queue, now, |_| {}).await?;
            if let Ok(ms) = u64::try_from(next) {
                wait = wait.min(Duration::from_millis(ms));
            }
        }
        if !wait.is_zero() {
            let _ = tokio::time::timeout(wait, notified).await;
        }
        Ok(())
    }

    async fn renew(&self, lease: &Lease, extend: Duration) -> Result<Option<Lease>, QueueError> {
        let now = self.shared.clock.now();
        let expires_at = now.saturating_add(millis(extend));
        let renewed: Vec<i64> = self
            .call(Function::Renew, lease.id.queue(), now, |cmd| {
                cmd.arg(lease.id.seq()).arg(lease.token).arg(expires_at);
            })
            .await?;
        Ok((renewed.first() == Some(&1)).then(|| Lease {
            expires_at,
            ..lease.clone()
        }))
    }

    async fn complete(
        &self,
        lease: &Lease,
        completion: Completion,
        log: String,
    ) -> Result<Ack, QueueError> {
        let acks = self
            .complete_many(&[(lease.clone(), completion, log)])
            .await?;
        acks.into_iter()
            .next()
            .ok_or_else(|| self.malformed(&lease.id, "complete returned nothing"))
    }

    /// One function call per queue in the batch: its done acks first, as
    /// seq and token alone, then the others in full.
    async fn complete_many(
        &self,
        items: &[(Lease, Completion, String)],
    ) -> Result<Vec<Ack>, QueueError> {
        let now = self.shared.clock.now();
        let mut acks = vec![Ack::Stale; items.len()];
        let mut by_queue: Vec<(QueueName, Vec<usize>)> = Vec::new();
        for (i, (lease, _, _)) in items.iter().enumerate() {
            let queue = lease.id.queue();
            match by_queue.iter_mut().find(|(q, _)| q == queue) {
                Some((_, idx)) => idx.push(i),
                None => by_queue.push((queue.clone(), vec![i])),
            }
        }
        for (queue, mut idx) in by_queue {
            // Stable: done acks first, each part in the batch's order, as
            // the function answers.
            idx.sort_by_key(|&i| !matches!(items[i].1, Completion::Done));
            let done = idx
                .iter()
                .take_while(|&&i| matches!(items[i].1, Completion::Done))
                .count();
            let (due_at, results): (i64, Vec<String>) = self
                .call(Function::Complete, &queue, now, |cmd| {
                    cmd.arg(done);
                    for &i in &idx {
                        let (lease, completion, log) = &items[i];
                        cmd.arg(lease.id.seq()).arg(lease.token);
                        if let Some((action, kind, error, again)) = completion_args(completion, now)
                        {
                            cmd.arg(action).arg(kind).arg(error).arg(again).arg(log);
                        }
                    }
                })
                .await?;
            if results.len() != idx.len() {
                return Err(self.malformed(&items[idx[0]].0.id, "complete returned a short reply"));
            }
            self.mark(&queue, due_at, now).await;
            for (&i, result) in idx.iter().zip(&results) {
                acks[i] = self.ack_of(&items[i].0.id, result)?;
            }
        }
        Ok(acks)
    }

    async fn get(&self, id: &JobId) -> Result<Option<JobRecord>, QueueError> {
        let now = self.shared.clock.now();
        let reply = self
            .call_raw(Function::Read, id.queue(), now, |cmd| {
                cmd.arg(id.seq());
            })
            .await?;
        match reply {
            Value::Nil => Ok(None),
            reply => self.record(id.queue(), reply).map(|(rec, _, _)| Some(rec)),
        }
    }

    async fn list(
        &self,
        queue: &QueueName,
        state: JobState,
        page: Page,
    ) -> Result<Vec<JobRecord>, QueueError> {
        if page.limit == 0 {
            return Ok(Vec::new());
        }
        let now = self.shared.clock.now();
        let reply = self
            .call_raw(Function::List, queue, now, |cmd| {
                cmd.arg(state.as_str()).arg(page.offset).arg(page.limit);
            })
            .await?;
        Ok(self
            .records(queue, reply)?
            .into_iter()
            .map(|(rec, _, _)| rec)
            .collect())
    }

    async fn counts(&self, queue: &QueueName) -> Result<StateCounts, QueueError> {
        let k = self.shared.keys.queue(queue);
        let mut pipe = redis::pipe();
        for key in [&k.pending, &k.scheduled, &k.running, &k.failed] {
            pipe.cmd("ZCARD").arg(key);
        }
        pipe.cmd("HGET").arg(&k.stats).arg("done");
        let (pending, scheduled, running, failed, done): (u64, u64, u64, u64, Option<u64>) =
            self.query_pipe(&pipe).await?;
        Ok(StateCounts {
            pending,
            scheduled,
            running,
            failed,
            done: done.unwrap_or(0),
        })
    }

    async fn settings_warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        let name = &self.shared.name;
        let setting = |key: &'static str| async move {
            let reply: Result<Vec<String>, _> =
                self.query(redis::cmd("CONFIG").arg("GET").arg(key)).await;
            reply.ok().and_then(|kv| kv.get(1).cloned())
        };
        match setting("maxmemory-policy").await.as_deref() {
            Some("noeviction") => {}
            Some(policy) => warnings.push(format!(
                "Redis at {name} has maxmemory-policy {policy}: when it fills up it will silently evict keys, which loses jobs; set `maxmemory-policy noeviction`"
            )),
            None => warnings.push(format!(
                "cannot read maxmemory-policy of Redis at {name} (CONFIG GET refused): make sure it is `noeviction`, or a full Redis evicts jobs"
            )),
        }
        if setting("appendonly").await.as_deref() == Some("no") {
            warnings.push(format!(
                "Redis at {name} runs without AOF (appendonly no): a Redis restart loses the jobs written since its last snapshot; set `appendonly yes` and `appendfsync everysec`"
            ));
        }
        warnings
    }

    async fn queues(&self) -> Result<Vec<QueueName>, QueueError> {
        self.queue_names(redis::cmd("SMEMBERS").arg(self.shared.keys.queues()))
            .await
    }

    async fn retry(&self, id: &JobId) -> Result<(), QueueError> {
        let now = self.shared.clock.now();
        let result: String = self
            .call(Function::Retry, id.queue(), now, |cmd| {
                cmd.arg(id.seq());
            })
            .await?;
        match result.as_str() {
            "ok" => {
                let at = i64::try_from(now).unwrap_or(i64::MAX);
                self.mark(id.queue(), at, now).await;
                Ok(())
            }
            "missing" => Err(QueueError::NoSuchJob(id.clone())),
            other => Err(QueueError::WrongState {
                id: id.clone(),
                state: state_named(other).ok_or_else(|| self.malformed(id, "unknown state"))?,
                action: "retry",
                expected: "failed",
            }),
        }
    }

    async fn delete(&self, id: &JobId) -> Result<bool, QueueError> {
        let now = self.shared.clock.now();
        let result: String = self
            .call(Function::Delete, id.queue(), now, |cmd| {
                cmd.arg(id.seq());
            })
            .await?;
        match result.as_str() {
            "deleted" => Ok(true),
            "missing" => Ok(false),
            _ => Err(QueueError::WrongState {
                id: id.clone(),
                state: JobState::Running,
                action: "delete",
                expected: "pending, scheduled or failed",
            }),
        }
    }

    async fn set_paused(&self, queue: &QueueName, paused: bool) -> Result<bool, QueueError> {
        let now = self.shared.clock.now();
        let (changed, at): (i64, i64) = self
            .call(Function::Pause, queue, now, |cmd| {
                cmd.arg(if paused { "1" } else { "0" });
            })
            .await?;
        self.mark(queue, at, now).await;
        Ok(changed == 1)
    }

    async fn paused(&self, queues: &[QueueName]) -> Result<Vec<bool>, QueueError> {
        // One key per command: the queues are in slots of their own.
        let asks = queues.iter().map(|q| async move {
            let stats = self.shared.keys.queue(q).stats;
            let paused: bool = self
                .query(redis::cmd("HEXISTS").arg(stats).arg("paused"))
                .await?;
            Ok::<bool, QueueError>(paused)
        });
        futures_util::future::join_all(asks)
            .await
            .into_iter()
            .collect()
    }

    async fn purge(&self, queue: &QueueName) -> Result<u64, QueueError> {
        let mut total = 0;
        loop {
            let now = self.shared.clock.now();
            let removed: u64 = self
                .call(Function::Purge, queue, now, |cmd| {
                    cmd.arg(PURGE_CHUNK);
                })
                .await?;
            total += removed;
            if removed == 0 {
                return Ok(total);
            }
        }
    }

    async fn remove_queue(&self, queue: &QueueName) -> Result<u64, QueueError> {
        let mut total = 0;
        loop {
            let now = self.shared.clock.now();
            let removed: i64 = self
                .call(Function::Drop, queue, now, |cmd| {
                    cmd.arg(PURGE_CHUNK);
                })
                .await?;
            match u64::try_from(removed) {
                Ok(0) => break,
                Ok(n) => total += n,
                Err(_) => {
                    return Err(QueueError::QueueBusy {
                        queue: queue.clone(),
                    });
                }
            }
        }
        let due = self.shared.keys.due();
        let _: i64 = self
            .query(redis::cmd("ZREM").arg(&due).arg(queue.as_str()))
            .await?;
        let _: i64 = self
            .query(
                redis::cmd("HDEL")
                    .arg(format!("{due}:marks"))
                    .arg(queue.as_str()),
            )
            .await?;
        let _: i64 = self
            .query(
                redis::cmd("SREM")
                    .arg(self.shared.keys.queues())
                    .arg(queue.as_str()),
            )
            .await?;
        self.lock_known().remove(queue);
        Ok(total)
    }
}

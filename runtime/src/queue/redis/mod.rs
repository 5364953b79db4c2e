//! The Redis backend: the production queue server, shared by any number of
//! workers on any number of machines.
//!
//! # Keys
//!
//! Every key starts with the configured prefix (default `runtime:`), so
//! several systems can share one Redis. Every key of a queue carries the
//! queue's Redis Cluster hash tag, `{queue}`, so one queue lives on one node
//! and each of its state changes is a single Lua script on that node:
//!
//! | key                          | type | holds                                   |
//! |------------------------------|------|-----------------------------------------|
//! | `P{q}:pending`               | zset | score -priority, member zero-padded seq |
//! | `P{q}:scheduled`             | zset | score due time (ms)                     |
//! | `P{q}:running`               | zset | score lease expiry (ms)                 |
//! | `P{q}:failed`                | zset | score time of failure (ms)              |
//! | `P{q}:unique`                | hash | unique key -> seq of the live job       |
//! | `P{q}:stats`                 | hash | `seq` (last job number), `done`         |
//! | `P{q}:wake`                  | list | wake-up marker for blocked workers      |
//! | `P{q}:job:<seq>`             | hash | the job's fields                        |
//! | `P{q}:job:<seq>:h`           | list | one `n\|started\|ended:kind\|outcome` per attempt |
//! | `P{q}:tree:<seq>`            | hash | the count of the job tree rooted at `<seq>` (`jobs`, `live`) |
//! | `Pqueues`                    | set  | names of queues ever dispatched to      |
//!
//! # Scripts
//!
//! Each state change is one script from `src/queue/redis/*.lua` (with
//! `common.lua` prepended), called by SHA with `EVALSHA` and loaded again
//! on `NOSCRIPT` (after a restart or `SCRIPT FLUSH`). Time comes from the
//! caller's [`Clock`] as an argument, never from the server, so the
//! conformance suite runs unchanged on a manual clock.
//!
//! # Job trees on a cluster
//!
//! A follow-up and the count of its tree live in different queues, and so
//! possibly on different nodes. A follow-up is therefore three steps: a
//! reservation on the root's slot (`tree.lua`: refused if the tree is full),
//! the enqueue on the follow-up's own slot, and, if the enqueue found its
//! unique key held and added nothing, a refund of the reservation. A crash
//! between them can only leave the tree counting a job it does not have:
//! the budget errs on the safe side. A follow-up with a unique key first
//! looks the key up, so one that would only return the job holding it is
//! never refused for the budget.
//!
//! # Waking workers without polling
//!
//! A worker with nothing to do blocks in `BLPOP` on its queues' `wake`
//! keys (one listener task and connection per queue, so a cancelled wait
//! never swallows a marker). Dispatches push a marker; a claim that leaves
//! work behind pushes another, so a bulk dispatch wakes one idle worker
//! after another. The wait is also bounded by the queue's next due time or
//! lease expiry, which a small script reports, so delayed jobs start on
//! time without a polling loop.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, Pipeline, RedisError, RedisFuture, Script, Value};
use tokio::sync::Notify;

use super::clock::millis;
use super::{
    Ack, Claim, Clock, Completion, JobQueue, Lease, ModuleStore, Page, StateCounts, WorkerInfo,
    WorkerRegistry, module_version,
};
use crate::error::QueueError;
use crate::job::{
    AttemptRecord, FailureKind, JobId, JobRecord, JobState, Lineage, NewJob, Payload, QueueName,
    RunAt, TREE_KEEP, TreeBudget, UnixMillis,
};

/// The key prefix when none is configured.
pub const DEFAULT_PREFIX: &str = "runtime:";

/// How long connecting may take before Redis counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one command may take (a purge chunk or a big claim included).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one `BLPOP` blocks before the listener looks around again.
const BLOCK: Duration = Duration::from_secs(1);
/// Jobs removed per purge script call, so Redis is never blocked for long.
const PURGE_CHUNK: u64 = 5_000;

macro_rules! script {
    ($name:literal) => {
        Script::new(concat!(
            include_str!("common.lua"),
            include_str!(concat!($name, ".lua"))
        ))
    };
}

/// The scripts, each compiled into the binary and hashed once.
struct Scripts {
    dispatch: Script,
    tree: Script,
    claim: Script,
    complete: Script,
    renew: Script,
    peek: Script,
    read: Script,
    list: Script,
    retry: Script,
    delete: Script,
    purge: Script,
}

static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    dispatch: script!("dispatch"),
    // Its own keys (a tree's count and its root's record): no common part.
    tree: Script::new(include_str!("tree.lua")),
    claim: script!("claim"),
    complete: script!("complete"),
    renew: script!("renew"),
    peek: script!("peek"),
    read: script!("read"),
    list: script!("list"),
    retry: script!("retry"),
    delete: script!("delete"),
    purge: script!("purge"),
});

/// A connection to a single server (reconnecting by itself) or a cluster.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Where to open more connections (one per blocked listener).
#[derive(Clone)]
enum Target {
    Single(Box<redis::Client>),
    Cluster(Box<ClusterClient>),
}

impl Target {
    /// A connection for blocking commands: no response timeout shorter
    /// than the block itself.
    async fn blocking_conn(&self) -> Result<Conn, RedisError> {
        match self {
            Target::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(BLOCK + RESPONSE_TIMEOUT))
                    .set_number_of_retries(1);
                Ok(Conn::Single(
                    ConnectionManager::new_with_config((**client).clone(), config).await?,
                ))
            }
            Target::Cluster(client) => Ok(Conn::Cluster(client.get_async_connection().await?)),
        }
    }
}

/// The Redis queue backend. Cheap to share behind an `Arc`.
pub struct RedisBackend {
    shared: Arc<Shared>,
}

struct Shared {
    conn: Conn,
    target: Target,
    /// The URL without credentials, for messages.
    name: String,
    prefix: String,
    clock: Arc<dyn Clock>,
    /// Queues this process has registered in the `queues` set.
    known: Mutex<HashSet<QueueName>>,
    /// One wake-up listener per queue waited on.
    listeners: Mutex<HashMap<QueueName, Arc<Listener>>>,
    /// Notified when a listener pops a marker.
    work: Notify,
}

/// A queue's wake-up listener: blocks in `BLPOP` while anyone waits.
#[derive(Default)]
struct Listener {
    waiting: AtomicUsize,
    wanted: Notify,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("url", &self.shared.name)
            .field("prefix", &self.shared.prefix)
            .field("cluster", &matches!(self.shared.conn, Conn::Cluster(_)))
            .finish_non_exhaustive()
    }
}

/// The keys of one queue, in the order every script expects them.
struct QueueKeys {
    keys: [String; 7],
    job: String,
}

/// `(seq, HGETALL fields, attempt entries)` as the scripts return a job.
type RawRecord = (u64, HashMap<String, String>, Vec<String>);

/// `url` for messages and logs, without secrets.
///
/// The URL is taken apart by the parser the redis client uses, and put
/// back together from the parts that hold no secret: scheme, host, port,
/// a database number or socket path, the `db` and `protocol` query
/// parameters and the `#insecure` fragment. A password is `***`, and so is
/// a user name given without one (`redis-cli` reads `redis://secret@host`
/// as a password), every other query value (`?pass=`, `?password=`), any
/// other fragment or path. Text that does not parse as a URL is not shown
/// at all.
pub fn redact(url: &str) -> String {
    const HIDDEN: &str = "***";
    let Ok(parsed) = url::Url::parse(url) else {
        return "(the URL is not shown: it does not parse)".to_string();
    };
    // An `@` the parser did not take as the end of the credentials means
    // the text is not what its writer meant (`redis://pa#ss@host` is host
    // `pa`): any part of it may be the password.
    if url.contains('@') && parsed.username().is_empty() && parsed.password().is_none() {
        return "(the URL is not shown: its `@` is not where a password ends)".to_string();
    }
    let scheme = parsed.scheme();
    let unix = scheme.ends_with("unix");
    if parsed.cannot_be_a_base() {
        return format!("{scheme}:{HIDDEN}");
    }
    let mut out = format!("{scheme}://");
    match (parsed.username(), parsed.password()) {
        (_, Some(_)) if !parsed.username().is_empty() => {
            out.push_str(&format!("{}:{HIDDEN}@", parsed.username()));
        }
        ("", None) => {}
        _ => out.push_str(&format!("{HIDDEN}@")),
    }
    if let Some(host) = parsed.host() {
        out.push_str(&host.to_string());
    }
    if let Some(port) = parsed.port() {
        out.push_str(&format!(":{port}"));
    }
    let path = parsed.path();
    let db = path.trim_matches('/');
    if unix || db.bytes().all(|b| b.is_ascii_digit()) {
        out.push_str(path);
    } else {
        out.push('/');
        out.push_str(HIDDEN);
    }
    if parsed.query().is_some() {
        let pairs: Vec<String> = parsed
            .query_pairs()
            .map(|(key, value)| {
                let plain_value = value.bytes().all(|b| b.is_ascii_alphanumeric());
                match &*key {
                    "db" | "protocol" if plain_value => format!("{key}={value}"),
                    "db" | "protocol" | "user" | "pass" | "username" | "password" => {
                        format!("{key}={HIDDEN}")
                    }
                    _ => HIDDEN.to_string(),
                }
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    match parsed.fragment() {
        None => {}
        Some("insecure") => out.push_str("#insecure"),
        Some(_) => out.push_str(&format!("#{HIDDEN}")),
    }
    out
}

/// Why connecting failed and what to do about it: wrong credentials, no
/// server at the address, a host name that does not resolve, TLS trouble
/// each get their own hint.
async fn connect_failure(addr: &redis::ConnectionAddr, e: &RedisError) -> String {
    use redis::{ConnectionAddr, ErrorKind, ServerErrorKind};
    let set_it = "set the URL with --backend, RUNTIME_BACKEND or `backend` in the config";
    let wrong_password =
        e.kind() == ErrorKind::AuthenticationFailed || e.code() == Some("WRONGPASS");
    let no_password = e.code() == Some("NOAUTH");
    let (tls, host, port) = match addr {
        ConnectionAddr::Tcp(host, port) => (false, host.as_str(), *port),
        ConnectionAddr::TcpTls { host, port, .. } => (true, host.as_str(), *port),
        ConnectionAddr::Unix(path) => {
            let shown = path.display();
            return if wrong_password {
                format!(
                    "authentication failed ({e}): the server refused the user or password; check `?user=` and `?pass=` in the URL"
                )
            } else if no_password {
                "the server requires a password (NOAUTH) and the URL gives none: add `?pass=PASSWORD` after the socket path".to_string()
            } else if e.is_connection_refusal() && !path.exists() {
                format!(
                    "no socket at {shown}: is redis-server running with `unixsocket {shown}`? Else {set_it}"
                )
            } else if e.is_connection_refusal() {
                format!(
                    "nothing accepts connections on {shown} (connection refused): is redis-server running? Else {set_it}"
                )
            } else {
                format!("{shown}: {e}")
            };
        }
        _ => return e.to_string(),
    };
    if wrong_password {
        return format!(
            "authentication failed ({e}): the server refused the user or password; check them in the URL (redis://USER:PASSWORD@host:port, or redis://:PASSWORD@host:port for the default user)"
        );
    }
    if no_password {
        return "the server requires a password (NOAUTH) and the URL gives none: redis://:PASSWORD@host:port (or redis://USER:PASSWORD@host:port)".to_string();
    }
    if e.kind() == ErrorKind::Server(ServerErrorKind::NoPerm) || e.code() == Some("NOPERM") {
        return format!(
            "the Redis user may not run a command the runtime needs ({e}); give it the commands and keys it needs, or use another user"
        );
    }
    if e.is_connection_refusal() {
        return format!(
            "nothing listens on {host}:{port} (connection refused): is redis-server running there, on that port? Else {set_it}"
        );
    }
    if e.is_timeout() {
        return if tls {
            format!(
                "no TLS handshake with {host}:{port} within {}s: does that port serve TLS? rediss:// needs a TLS port; a plain one takes redis://",
                CONNECT_TIMEOUT.as_secs()
            )
        } else {
            format!(
                "no answer from {host}:{port} within {}s: is the host reachable, and is it Redis on that port?",
                CONNECT_TIMEOUT.as_secs()
            )
        };
    }
    if !e.is_io_error() {
        return format!("{host}:{port}: {e}");
    }
    let resolves = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::lookup_host((host, port)));
    if !matches!(resolves.await, Ok(Ok(_))) {
        return format!(
            "cannot resolve host {host:?} ({e}): check the host name in the URL, or {set_it}"
        );
    }
    if tls {
        format!(
            "TLS with {host}:{port} failed ({e}): check that the port serves TLS and the server's certificate (its name must match {host}, its issuer be trusted)"
        )
    } else if e.is_connection_dropped() {
        format!(
            "{host}:{port} closed the connection ({e}): if it serves TLS, use rediss://; else it may be full (maxclients)"
        )
    } else {
        format!("{host}:{port}: {e}")
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
        let client = redis::Client::open(url).map_err(|e| {
            fail(format!(
                "invalid Redis URL: {e}; use redis://host:port, rediss://host:port or redis+unix:///path/to/redis.sock"
            ))
        })?;
        let connected = async {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(RESPONSE_TIMEOUT))
                .set_number_of_retries(2);
            let mut single = ConnectionManager::new_with_config(client.clone(), config).await?;
            let info: String = redis::cmd("INFO")
                .arg("cluster")
                .query_async(&mut single)
                .await?;
            if info.contains("cluster_enabled:1") {
                let cluster = ClusterClient::builder(vec![url])
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(BLOCK + RESPONSE_TIMEOUT)
                    .build()?;
                let conn = cluster.get_async_connection().await?;
                Ok((Conn::Cluster(conn), Target::Cluster(Box::new(cluster))))
            } else {
                Ok((
                    Conn::Single(single),
                    Target::Single(Box::new(client.clone())),
                ))
            }
        };
        let (conn, target) = match connected.await {
            Ok(connected) => connected,
            Err(e) => {
                let why = connect_failure(client.get_connection_info().addr(), &e).await;
                return Err(fail(format!("cannot connect: {why}")));
            }
        };
        Ok(RedisBackend {
            shared: Arc::new(Shared {
                conn,
                target,
                name,
                prefix: prefix.to_string(),
                clock,
                known: Mutex::new(HashSet::new()),
                listeners: Mutex::new(HashMap::new()),
                work: Notify::new(),
            }),
        })
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.shared.prefix
    }

    /// Whether the server is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.shared.conn, Conn::Cluster(_))
    }

    /// The base key of a queue: `<prefix>{<queue>}`; every key of the queue
    /// starts with it.
    pub fn queue_key(&self, queue: &QueueName) -> String {
        format!("{}{{{}}}", self.shared.prefix, queue)
    }

    /// The live workers' index (id → expiry): `<prefix>{@workers}` (`@` is
    /// in no queue name, so no queue's keys can collide).
    fn workers_key(&self) -> String {
        format!("{}{{@workers}}", self.shared.prefix)
    }

    /// One worker's record, in the index's slot.
    fn worker_key(&self, id: &str) -> String {
        format!("{}:{id}", self.workers_key())
    }

    /// The published modules' index (queue → version): `<prefix>{@modules}`.
    fn modules_key(&self) -> String {
        format!("{}{{@modules}}", self.shared.prefix)
    }

    /// One published module's bytes, in the index's slot.
    fn module_key(&self, queue: &QueueName, version: &str) -> String {
        format!("{}:{queue}:{version}", self.modules_key())
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

    fn keys(&self, queue: &QueueName) -> QueueKeys {
        let base = self.queue_key(queue);
        let key = |suffix: &str| format!("{base}:{suffix}");
        QueueKeys {
            keys: [
                key("pending"),
                key("scheduled"),
                key("running"),
                key("failed"),
                key("unique"),
                key("stats"),
                key("wake"),
            ],
            job: format!("{base}:job:"),
        }
    }

    /// Runs `script` on `queue`'s keys with `now` and the extra `args`.
    async fn call<T: FromRedisValue>(
        &self,
        script: &Script,
        queue: &QueueName,
        now: UnixMillis,
        args: impl FnOnce(&mut redis::ScriptInvocation<'_>),
    ) -> Result<T, QueueError> {
        let k = self.keys(queue);
        let mut inv = script.prepare_invoke();
        for key in &k.keys {
            inv.key(key);
        }
        inv.arg(&k.job).arg(now);
        args(&mut inv);
        let mut conn = self.shared.conn.clone();
        inv.invoke_async(&mut conn).await.map_err(|e| self.err(e))
    }

    /// Adds `queue` to the set of queues, once per process.
    async fn register(&self, queue: &QueueName) -> Result<(), QueueError> {
        if self.lock_known().contains(queue) {
            return Ok(());
        }
        let key = format!("{}queues", self.shared.prefix);
        let _added: i64 = self
            .query(redis::cmd("SADD").arg(key).arg(queue.as_str()))
            .await?;
        self.lock_known().insert(queue.clone());
        Ok(())
    }

    fn lock_known(&self) -> std::sync::MutexGuard<'_, HashSet<QueueName>> {
        self.shared.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Enqueues checked jobs of one queue in one script, all with
    /// `lineage` (follow-ups) or none; each id with whether it is new (not
    /// the live job holding its unique key).
    async fn dispatch_group(
        &self,
        queue: &QueueName,
        jobs: &[NewJob],
        lineage: Option<&Lineage>,
        now: UnixMillis,
    ) -> Result<Vec<(JobId, bool)>, QueueError> {
        self.register(queue).await?;
        let (root, parent, depth) = match lineage {
            Some(l) => (
                l.root.to_string(),
                l.parent.to_string(),
                l.depth.to_string(),
            ),
            None => Default::default(),
        };
        let mut args: Vec<String> = Vec::with_capacity(jobs.len() * 9);
        for job in jobs {
            let run_at = match job.options.run_at {
                RunAt::Now => now,
                RunAt::After(d) => now.saturating_add(millis(d)),
                RunAt::At(t) => t,
            };
            args.push(job.payload.as_str().to_string());
            args.push(job.options.priority.to_string());
            args.push(job.options.max_attempts.to_string());
            let key = job.options.unique_key.as_deref();
            args.push(if key.is_some() { "1" } else { "0" }.to_string());
            args.push(key.unwrap_or_default().to_string());
            args.push(run_at.to_string());
            args.extend([root.clone(), parent.clone(), depth.clone()]);
        }
        let seqs: Vec<(u64, u8)> = self
            .call(&SCRIPTS.dispatch, queue, now, |inv| {
                inv.arg(args);
            })
            .await?;
        if seqs.len() != jobs.len() {
            return Err(QueueError::Backend {
                backend: self.shared.name.clone(),
                message: "dispatch script returned a short reply".into(),
            });
        }
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
            message: "dispatch script returned no id".into(),
        })
    }

    /// Runs `tree.lua` on the slot of `root`'s tree: `op` with `args`.
    async fn tree(
        &self,
        root: &JobId,
        op: &str,
        args: &[u64],
    ) -> Result<(String, u32), QueueError> {
        let base = self.queue_key(root.queue());
        let mut inv = SCRIPTS.tree.prepare_invoke();
        inv.key(format!("{base}:tree:{}", root.seq()))
            .key(format!("{base}:job:{}", root.seq()))
            .arg(op);
        for a in args {
            inv.arg(*a);
        }
        let mut conn = self.shared.conn.clone();
        inv.invoke_async(&mut conn).await.map_err(|e| self.err(e))
    }

    /// The job of `queue` holding unique key `key` (as stored), if any.
    async fn holder(&self, queue: &QueueName, key: &str) -> Result<Option<JobId>, QueueError> {
        let unique = &self.keys(queue).keys[4];
        let seq: Option<u64> = self.query(redis::cmd("HGET").arg(unique).arg(key)).await?;
        Ok(seq.map(|seq| JobId::new(queue.clone(), seq)))
    }

    /// A job record from a script's raw reply, with its fencing token and
    /// lease expiry.
    fn record(
        &self,
        queue: &QueueName,
        raw: RawRecord,
    ) -> Result<(JobRecord, u64, u64), QueueError> {
        decode_record(queue, raw, |id, what| self.malformed(id, what))
    }

    /// The ack for one result of the complete script.
    fn ack_of(&self, id: &JobId, result: &str) -> Result<Ack, QueueError> {
        match result {
            "stale" => Ok(Ack::Stale),
            "done" => Ok(Ack::Applied(None)),
            state => state_named(state)
                .map(|s| Ack::Applied(Some(s)))
                .ok_or_else(|| self.malformed(id, "complete returned an unknown state")),
        }
    }

    /// The listener for `queue`, started on first use.
    fn listener(&self, queue: &QueueName) -> Arc<Listener> {
        let mut listeners = self
            .shared
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(l) = listeners.get(queue) {
            return l.clone();
        }
        let listener = Arc::new(Listener::default());
        listeners.insert(queue.clone(), listener.clone());
        tokio::spawn(listen(
            Arc::downgrade(&self.shared),
            self.keys(queue).keys[6].clone(),
            listener.clone(),
        ));
        listener
    }
}

/// Blocks on one queue's wake key while anyone waits on the queue, and
/// wakes the waiters when a marker arrives. A marker popped after the last
/// waiter left is pushed back for another worker.
async fn listen(shared: Weak<Shared>, wake_key: String, listener: Arc<Listener>) {
    let mut conn: Option<Conn> = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        let wanted = listener.wanted.notified();
        tokio::pin!(wanted);
        wanted.as_mut().enable();
        if listener.waiting.load(Ordering::SeqCst) == 0 {
            let _ = tokio::time::timeout(BLOCK, wanted).await;
            if shared.strong_count() == 0 {
                return;
            }
            continue;
        }
        let Some(target) = shared.upgrade().map(|s| s.target.clone()) else {
            return;
        };
        let c = match &mut conn {
            Some(c) => c,
            None => match target.blocking_conn().await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "queue wake-up listener cannot connect to Redis");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            },
        };
        let popped: Result<Option<(String, String)>, RedisError> = redis::cmd("BLPOP")
            .arg(&wake_key)
            .arg(BLOCK.as_secs_f64())
            .query_async(c)
            .await;
        match popped {
            Ok(Some(_)) => {
                backoff = Duration::from_millis(100);
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                if listener.waiting.load(Ordering::SeqCst) > 0 {
                    shared.work.notify_waiters();
                } else {
                    let _: Result<i64, _> = redis::cmd("RPUSH")
                        .arg(&wake_key)
                        .arg("1")
                        .query_async(c)
                        .await;
                }
            }
            Ok(None) => backoff = Duration::from_millis(100),
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "queue wake-up listener lost Redis");
                conn = None;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Counts a waiter on a listener for as long as it lives.
struct Waiting(Arc<Listener>);

impl Waiting {
    fn new(listener: Arc<Listener>) -> Self {
        listener.waiting.fetch_add(1, Ordering::SeqCst);
        listener.wanted.notify_waiters();
        Waiting(listener)
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A job record from a script's raw reply (whatever a hand-edited or
/// older Redis holds), with its fencing token and lease expiry; a field
/// that does not read is the error `malformed` makes for it.
fn decode_record(
    queue: &QueueName,
    raw: RawRecord,
    malformed: impl Fn(&JobId, &str) -> QueueError,
) -> Result<(JobRecord, u64, u64), QueueError> {
    let (seq, fields, attempts) = raw;
    let id = JobId::new(queue.clone(), seq);
    let text = |name: &str| {
        fields
            .get(name)
            .ok_or_else(|| malformed(&id, &format!("no {name}")))
    };
    let number = |name: &str| -> Result<u64, QueueError> {
        fields
            .get(name)
            .map_or(Ok(0), |v| v.parse())
            .map_err(|_| malformed(&id, &format!("{name} is not a number")))
    };
    let state: JobState = text("state")?
        .parse()
        .map_err(|_| malformed(&id, "unknown state"))?;
    let payload = Payload::new(text("payload")?.clone())
        .map_err(|_| malformed(&id, "payload is not JSON"))?;
    let priority = text("priority")?
        .parse()
        .map_err(|_| malformed(&id, "priority is not a number"))?;
    let history = attempts
        .iter()
        .map(|entry| parse_attempt(entry).ok_or_else(|| malformed(&id, "attempt entry")))
        .collect::<Result<Vec<_>, _>>()?;
    let (token, lease_expires) = (number("token")?, number("lease_expires")?);
    let lineage = match fields.get("root") {
        None => None,
        Some(root) => {
            let id_of = |name: &str, text: Option<&String>| {
                text.and_then(|t| t.parse().ok())
                    .ok_or_else(|| malformed(&id, &format!("{name} is not a job id")))
            };
            Some(Lineage {
                root: id_of("root", Some(root))?,
                parent: id_of("parent", fields.get("parent"))?,
                depth: u32::try_from(number("depth")?).unwrap_or(u32::MAX),
            })
        }
    };
    let record = JobRecord {
        payload,
        state,
        priority,
        attempts: u32::try_from(number("attempts")?).unwrap_or(u32::MAX),
        max_attempts: u32::try_from(number("max_attempts")?).unwrap_or(u32::MAX),
        unique_key: fields.get("unique_key").cloned(),
        lineage,
        created_at: number("created_at")?,
        run_at: number("run_at")?,
        // Lenient: records from before kinds were kept have none, and
        // a kind this version does not know reads as none too.
        error_kind: fields.get("error_kind").and_then(|k| k.parse().ok()),
        error: fields.get("error").cloned(),
        history,
        log: fields.get("log").cloned().unwrap_or_default(),
        id: id.clone(),
    };
    Ok((record, token, lease_expires))
}

/// One `n|started|ended:kind|outcome` attempt entry (`n|started||` while it
/// runs). The kind is read from the host-written `ended` field only, never
/// from the outcome text; an entry from before kinds were kept (a bare
/// `ended`), or with a kind this version does not know, has none.
fn parse_attempt(entry: &str) -> Option<AttemptRecord> {
    let mut parts = entry.splitn(4, '|');
    let number = parts.next()?.parse().ok()?;
    let started_at = parts.next()?.parse().ok()?;
    let ended = parts.next()?;
    let outcome = parts.next()?;
    let (ended_at, kind) = if ended.is_empty() {
        (None, None)
    } else {
        let (at, kind) = match ended.split_once(':') {
            Some((at, kind)) => (at, kind.parse::<FailureKind>().ok()),
            None => (ended, None),
        };
        (Some(at.parse().ok()?), kind)
    };
    Some(AttemptRecord {
        number,
        started_at,
        ended_at,
        kind,
        outcome: ended_at.map(|_| outcome.to_string()),
    })
}

/// The complete script's action, failure kind, error and run-again time
/// for a completion.
fn completion_args(
    completion: &Completion,
    now: UnixMillis,
) -> (&'static str, &'static str, &str, UnixMillis) {
    match completion {
        Completion::Done => ("done", "", "", now),
        Completion::Release => ("release", "", "", now),
        Completion::Fail { kind, error } => ("fail", kind.as_str(), error, now),
        Completion::Retry { kind, error, delay } => (
            "retry",
            kind.as_str(),
            error,
            now.saturating_add(millis(*delay)),
        ),
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

    /// Atomic per queue: consecutive jobs of one queue go in one script.
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
            _ => return Err(self.malformed(&root, "the tree script returned an unknown status")),
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
            let raw: Vec<RawRecord> = self
                .call(&SCRIPTS.claim, queue, now, |inv| {
                    inv.arg(want).arg(expires_at);
                })
                .await?;
            for r in raw {
                let (job, token, expires_at) = self.record(queue, r)?;
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

    async fn wait_for_work(
        &self,
        queues: &[QueueName],
        timeout: Duration,
    ) -> Result<(), QueueError> {
        let _waiting: Vec<Waiting> = queues
            .iter()
            .map(|q| Waiting::new(self.listener(q)))
            .collect();
        let notified = self.shared.work.notified();
        tokio::pin!(notified);
        // Registered before looking, so a marker popped after the look
        // still wakes us.
        notified.as_mut().enable();
        let now = self.shared.clock.now();
        let mut wait = timeout;
        for queue in queues {
            let next: i64 = self.call(&SCRIPTS.peek, queue, now, |_| {}).await?;
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
            .call(&SCRIPTS.renew, lease.id.queue(), now, |inv| {
                inv.arg(lease.id.seq()).arg(lease.token).arg(expires_at);
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
        let now = self.shared.clock.now();
        let (action, kind, error, again) = completion_args(&completion, now);
        let results: Vec<String> = self
            .call(&SCRIPTS.complete, lease.id.queue(), now, |inv| {
                inv.arg(lease.id.seq())
                    .arg(lease.token)
                    .arg(action)
                    .arg(kind);
                inv.arg(error).arg(again).arg(log);
            })
            .await?;
        match results.first() {
            Some(result) => self.ack_of(&lease.id, result),
            None => Err(self.malformed(&lease.id, "complete returned nothing")),
        }
    }

    /// One script call per queue in the batch.
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
        for (queue, idx) in by_queue {
            let results: Vec<String> = self
                .call(&SCRIPTS.complete, &queue, now, |inv| {
                    for &i in &idx {
                        let (lease, completion, log) = &items[i];
                        let (action, kind, error, again) = completion_args(completion, now);
                        inv.arg(lease.id.seq())
                            .arg(lease.token)
                            .arg(action)
                            .arg(kind);
                        inv.arg(error).arg(again).arg(log);
                    }
                })
                .await?;
            if results.len() != idx.len() {
                return Err(self.malformed(&items[idx[0]].0.id, "complete returned a short reply"));
            }
            for (&i, result) in idx.iter().zip(&results) {
                acks[i] = self.ack_of(&items[i].0.id, result)?;
            }
        }
        Ok(acks)
    }

    async fn get(&self, id: &JobId) -> Result<Option<JobRecord>, QueueError> {
        let now = self.shared.clock.now();
        let raw: Option<RawRecord> = self
            .call(&SCRIPTS.read, id.queue(), now, |inv| {
                inv.arg(id.seq());
            })
            .await?;
        raw.map(|r| self.record(id.queue(), r).map(|(rec, _, _)| rec))
            .transpose()
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
        let raw: Vec<RawRecord> = self
            .call(&SCRIPTS.list, queue, now, |inv| {
                inv.arg(state.as_str()).arg(page.offset).arg(page.limit);
            })
            .await?;
        raw.into_iter()
            .map(|r| self.record(queue, r).map(|(rec, _, _)| rec))
            .collect()
    }

    async fn counts(&self, queue: &QueueName) -> Result<StateCounts, QueueError> {
        let k = self.keys(queue);
        let mut pipe = redis::pipe();
        for key in &k.keys[..4] {
            pipe.cmd("ZCARD").arg(key);
        }
        pipe.cmd("HGET").arg(&k.keys[5]).arg("done");
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
        let key = format!("{}queues", self.shared.prefix);
        let names: Vec<String> = self.query(redis::cmd("SMEMBERS").arg(key)).await?;
        let mut queues: Vec<QueueName> = names
            .into_iter()
            .filter_map(|n| QueueName::new(n).ok())
            .collect();
        queues.sort();
        Ok(queues)
    }

    async fn retry(&self, id: &JobId) -> Result<(), QueueError> {
        let now = self.shared.clock.now();
        let result: String = self
            .call(&SCRIPTS.retry, id.queue(), now, |inv| {
                inv.arg(id.seq());
            })
            .await?;
        match result.as_str() {
            "ok" => Ok(()),
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
            .call(&SCRIPTS.delete, id.queue(), now, |inv| {
                inv.arg(id.seq());
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

    async fn purge(&self, queue: &QueueName) -> Result<u64, QueueError> {
        let mut total = 0;
        loop {
            let now = self.shared.clock.now();
            let removed: u64 = self
                .call(&SCRIPTS.purge, queue, now, |inv| {
                    inv.arg(PURGE_CHUNK);
                })
                .await?;
            total += removed;
            if removed == 0 {
                return Ok(total);
            }
        }
    }
}

#[async_trait]
impl WorkerRegistry for RedisBackend {
    async fn heartbeat(&self, worker: &WorkerInfo, ttl: Duration) -> Result<(), QueueError> {
        let (set, record) = (self.workers_key(), self.worker_key(&worker.id));
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
        let set = self.workers_key();
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
        let keys: Vec<String> = ids.iter().map(|id| self.worker_key(id)).collect();
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
        let (set, record) = (self.workers_key(), self.worker_key(id));
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

#[async_trait]
impl ModuleStore for RedisBackend {
    async fn publish_module(&self, queue: &QueueName, bytes: &[u8]) -> Result<String, QueueError> {
        let version = module_version(bytes);
        let index = self.modules_key();
        let old: Option<String> = self
            .query(redis::cmd("HGET").arg(&index).arg(queue.as_str()))
            .await?;
        // The bytes first, under a key of their own version; then the
        // index points at them: a reader never sees a version without
        // its bytes.
        let _: () = self
            .query(
                redis::cmd("SET")
                    .arg(self.module_key(queue, &version))
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
                .query(redis::cmd("DEL").arg(self.module_key(queue, &old)))
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
        self.query(redis::cmd("HMGET").arg(self.modules_key()).arg(names))
            .await
    }

    async fn module(&self, queue: &QueueName) -> Result<Option<(String, Vec<u8>)>, QueueError> {
        let version: Option<String> = self
            .query(
                redis::cmd("HGET")
                    .arg(self.modules_key())
                    .arg(queue.as_str()),
            )
            .await?;
        let Some(version) = version else {
            return Ok(None);
        };
        let bytes: Option<Vec<u8>> = self
            .query(redis::cmd("GET").arg(self.module_key(queue, &version)))
            .await?;
        Ok(bytes.map(|b| (version, b)))
    }

    async fn withdraw_module(&self, queue: &QueueName) -> Result<bool, QueueError> {
        let index = self.modules_key();
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
            .query(redis::cmd("DEL").arg(self.module_key(queue, &version)))
            .await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        let cases = [
            ("redis://:s3cret@host:6379/0", "redis://***@host:6379/0"),
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("redis://alice:s3cret@host", "redis://alice:***@host"),
            (
                "rediss://alice:s3cret@host:6380/#insecure",
                "rediss://alice:***@host:6380/#insecure",
            ),
            ("redis://s3cret@host", "redis://***@host"),
            ("redis://:s3%40cr%3Aet@host", "redis://***@host"),
            ("redis://:s3cret@sec@host", "redis://***@host"),
            ("redis+unix:///tmp/r.sock", "redis+unix:///tmp/r.sock"),
            (
                "redis+unix:///tmp/r.sock?db=2&pass=s3cret",
                "redis+unix:///tmp/r.sock?db=2&pass=***",
            ),
            (
                "unix:///tmp/r.sock?user=bob&pass=s3cret",
                "unix:///tmp/r.sock?user=***&pass=***",
            ),
            (
                "redis://host?password=s3cret&protocol=resp3",
                "redis://host?password=***&protocol=resp3",
            ),
            ("redis://host/?s3cret", "redis://host/?***"),
            ("redis://host/?db=s3cret%20x", "redis://host/?db=***"),
            ("redis://host/s3cret", "redis://host/***"),
            ("redis://host/#s3cret", "redis://host/#***"),
            ("redis:s3cret", "redis:***"),
            (
                "redis://:s3cret@[::1",
                "(the URL is not shown: it does not parse)",
            ),
            ("s3cret", "(the URL is not shown: it does not parse)"),
            ("redis://:s3cret@host\n:6379", "redis://***@host:6379"),
            (
                "redis://pa#ss@host",
                "(the URL is not shown: its `@` is not where a password ends)",
            ),
            (
                "redis://user:1234/5678@host",
                "(the URL is not shown: its `@` is not where a password ends)",
            ),
        ];
        for (url, shown) in cases {
            assert_eq!(redact(url), shown, "{url}");
        }
    }

    /// Whatever the text, a secret placed anywhere in it comes out only
    /// where the URL parser reads it as the host, a socket path or the
    /// user name beside a password; never from a password, query,
    /// fragment or database path.
    #[test]
    fn no_password_survives_random_urls() {
        let mut rng = fastrand::Rng::with_seed(11);
        let alphabet: Vec<char> = "ab:/@?#&=%.[]+ \t\n3".chars().collect();
        let secret = "Zq9Xw";
        for _ in 0..20_000 {
            let mut pieces: Vec<String> = Vec::new();
            for _ in 0..rng.usize(1..8) {
                let noise: String = (0..rng.usize(0..6))
                    .map(|_| alphabet[rng.usize(..alphabet.len())])
                    .collect();
                pieces.push(noise);
                if rng.bool() {
                    pieces.push(secret.to_string());
                }
            }
            let scheme = ["redis://", "rediss://", "redis+unix://", "unix://", ""][rng.usize(..5)];
            let url = format!("{scheme}{}", pieces.concat());
            let shown = redact(&url);
            let where_shown = url::Url::parse(&url).is_ok_and(|u| {
                u.host_str().is_some_and(|h| h.contains(secret))
                    || (u.scheme().ends_with("unix") && u.path().contains(secret))
                    || (u.password().is_some() && u.username().contains(secret))
            });
            assert!(
                !shown.contains(secret) || where_shown,
                "{url:?} -> {shown:?}"
            );
        }
    }

    #[test]
    fn attempt_entries_parse_with_any_outcome() {
        let open = parse_attempt("2|1000||").expect("valid");
        assert_eq!(
            (open.number, open.started_at, open.ended_at, open.kind),
            (2, 1000, None, None)
        );
        assert_eq!(open.outcome, None);
        let done = parse_attempt("1|1000|1250:panic|panic: a|b").expect("valid");
        assert_eq!(done.ended_at, Some(1250));
        assert_eq!(done.kind, Some(FailureKind::Panic));
        assert_eq!(done.outcome.as_deref(), Some("panic: a|b"));
        assert!(parse_attempt("x|1||").is_none());
        assert!(parse_attempt("1|1000|soon:panic|x").is_none());
    }

    #[test]
    fn entries_from_before_kinds_have_none_whatever_their_text_says() {
        let old = parse_attempt("1|1000|1250|memory|memory limit 64 MiB exceeded").expect("valid");
        assert_eq!((old.ended_at, old.kind), (Some(1250), None));
        assert_eq!(
            old.outcome.as_deref(),
            Some("memory|memory limit 64 MiB exceeded")
        );
        let unknown = parse_attempt("1|1000|1250:meteor|hit").expect("valid");
        assert_eq!((unknown.ended_at, unknown.kind), (Some(1250), None));
    }

    /// Property tests of reading records back from Redis, which anyone
    /// with access to the server (or an older version) may have written:
    /// any field values give a record or a clean "malformed" error. Part
    /// of the `fuzz_` run (see the crate's `fuzz_tests` module).
    mod fuzz {
        use proptest::prelude::*;

        use super::*;

        fn malformed(id: &JobId, what: &str) -> QueueError {
            QueueError::Backend {
                backend: "redis://test".into(),
                message: format!("job {id} is malformed in Redis ({what})"),
            }
        }

        /// A value for a field: what the scripts write, or anything.
        fn field_value() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<String>(),
                any::<u64>().prop_map(|n| n.to_string()),
                any::<i64>().prop_map(|n| n.to_string()),
                Just("18446744073709551616".to_string()),
                prop::sample::select(JobState::ALL.map(JobState::as_str).to_vec())
                    .prop_map(str::to_string),
                prop::sample::select(FailureKind::ALL.map(FailureKind::as_str).to_vec())
                    .prop_map(str::to_string),
                Just("{}".to_string()),
                Just("q:1".to_string()),
                "[a-z0-9]{1,4}:[0-9+\\-]{0,21}",
            ]
        }

        fn fields() -> impl Strategy<Value = HashMap<String, String>> {
            let name = prop::sample::select(vec![
                "state",
                "payload",
                "priority",
                "token",
                "lease_expires",
                "root",
                "parent",
                "depth",
                "attempts",
                "max_attempts",
                "unique_key",
                "created_at",
                "run_at",
                "error_kind",
                "error",
                "log",
                "other",
            ]);
            prop::collection::hash_map(name.prop_map(str::to_string), field_value(), 0..17)
        }

        fn attempt_entry() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<String>(),
                "[0-9|:a-z_+\\-]{0,24}",
                (
                    any::<u32>(),
                    any::<u64>(),
                    any::<u64>(),
                    field_value(),
                    any::<String>()
                )
                    .prop_map(|(n, s, e, k, o)| format!("{n}|{s}|{e}:{k}|{o}")),
            ]
        }

        proptest! {
            #[test]
            fn fuzz_any_record_fields_give_a_record_or_a_clean_error(
                seq in any::<u64>(),
                fields in fields(),
                attempts in prop::collection::vec(attempt_entry(), 0..4),
            ) {
                let queue = QueueName::new("q").expect("valid");
                let complete = ["state", "payload", "priority"].iter().all(|f| fields.contains_key(*f));
                match decode_record(&queue, (seq, fields.clone(), attempts.clone()), malformed) {
                    Ok((record, token, _)) => {
                        prop_assert!(complete);
                        prop_assert_eq!(record.id, JobId::new(queue, seq));
                        prop_assert_eq!(Some(record.state.as_str()), fields.get("state").map(String::as_str));
                        prop_assert_eq!(Some(record.payload.as_str()), fields.get("payload").map(String::as_str));
                        prop_assert_eq!(record.history.len(), attempts.len());
                        prop_assert_eq!(token, fields.get("token").map_or(0, |t| t.parse().expect("decoded")));
                        prop_assert_eq!(record.lineage.is_some(), fields.contains_key("root"));
                    }
                    Err(e) => {
                        let message = e.to_string();
                        prop_assert!(message.contains(&format!("job q:{seq} is malformed")), "{}", message);
                    }
                }
            }

            #[test]
            fn fuzz_attempt_entries_never_panic(entry in attempt_entry()) {
                if let Some(a) = parse_attempt(&entry) {
                    // What reads back, written again, reads back the same.
                    let again = match (&a.ended_at, &a.kind) {
                        (None, _) => format!("{}|{}||", a.number, a.started_at),
                        (Some(at), None) => format!("{}|{}|{at}|{}", a.number, a.started_at, a.outcome.as_deref().unwrap_or("")),
                        (Some(at), Some(k)) => format!("{}|{}|{at}:{k}|{}", a.number, a.started_at, a.outcome.as_deref().unwrap_or("")),
                    };
                    let back = parse_attempt(&again);
                    prop_assert_eq!(back.as_ref(), Some(&a));
                    prop_assert_eq!(a.ended_at.is_some(), a.outcome.is_some());
                }
            }

            #[test]
            fn fuzz_attempt_entries_read_back_as_written(
                number in any::<u32>(),
                started in any::<u64>(),
                ended in prop::option::of((any::<u64>(), prop::option::of(prop::sample::select(FailureKind::ALL.to_vec())))),
                outcome in any::<String>(),
            ) {
                let entry = match ended {
                    None => format!("{number}|{started}||"),
                    Some((at, None)) => format!("{number}|{started}|{at}|{outcome}"),
                    Some((at, Some(kind))) => format!("{number}|{started}|{at}:{kind}|{outcome}"),
                };
                let expected = AttemptRecord {
                    number,
                    started_at: started,
                    ended_at: ended.map(|(at, _)| at),
                    kind: ended.and_then(|(_, kind)| kind),
                    outcome: ended.map(|_| outcome.clone()),
                };
                prop_assert_eq!(parse_attempt(&entry), Some(expected));
            }
        }
    }
}

//! The queue contract on a real Redis: the conformance suite, unchanged,
//! against a standalone server (over its unix socket) and against a local
//! 3-master Redis Cluster; then what only Redis has: the key layout, the
//! prefix, reloading the function library, records written by an older
//! version or garbled, the running set's encoding, and a clear error when
//! Redis is unreachable.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use runtime::job::FailureKind;
use runtime::queue::redis::RedisBackend;
use runtime::queue::{Claim, Completion, JobQueue, ManualClock, Page, SystemClock};
use runtime::{JobState, NewJob, Payload, QueueError, QueueName};
use runtime_tests::conformance::Server;
use runtime_tests::redis::{RedisCluster, RedisServer};

/// One server and one cluster per test binary; every test gets its own key
/// prefix, so tests never see each other's jobs.
static SERVER: OnceLock<RedisServer> = OnceLock::new();
static CLUSTER: OnceLock<RedisCluster> = OnceLock::new();
static NEXT_PREFIX: AtomicU64 = AtomicU64::new(0);

fn prefix() -> String {
    format!("t{}:", NEXT_PREFIX.fetch_add(1, Ordering::SeqCst))
}

fn server() -> &'static RedisServer {
    SERVER.get_or_init(RedisServer::start)
}

fn cluster() -> &'static RedisCluster {
    CLUSTER.get_or_init(RedisCluster::start)
}

async fn standalone(clock: Arc<ManualClock>) -> Arc<dyn Server> {
    let url = server().unix_url();
    Arc::new(
        RedisBackend::connect(&url, &prefix(), clock)
            .await
            .expect("connect to the test redis-server"),
    )
}

async fn clustered(clock: Arc<ManualClock>) -> Arc<dyn Server> {
    let url = tokio::task::spawn_blocking(|| cluster().url())
        .await
        .expect("start the cluster");
    let backend = RedisBackend::connect(&url, &prefix(), clock)
        .await
        .expect("connect to the test cluster");
    assert!(backend.is_cluster(), "the cluster is detected");
    Arc::new(backend)
}

mod on_redis {
    runtime_tests::queue_conformance!(super::standalone);
}

mod on_redis_cluster {
    runtime_tests::queue_conformance!(super::clustered);
}

fn q(name: &str) -> QueueName {
    QueueName::new(name).expect("valid queue name")
}

fn job(queue: &str) -> NewJob {
    NewJob::new(q(queue), Payload::new("{}").expect("valid payload"))
}

async fn connect(url: &str, prefix: &str) -> RedisBackend {
    RedisBackend::connect(url, prefix, Arc::new(SystemClock))
        .await
        .expect("connect")
}

#[tokio::test]
async fn every_key_starts_with_the_prefix_and_carries_the_queue_hash_tag() {
    let b = connect(&server().url(), "iris:").await;
    let id = b.dispatch(job("layout-a")).await.expect("dispatch");
    b.dispatch(job("layout-b")).await.expect("dispatch");
    let claim = claim_one(&b, "layout-a").await;
    assert_eq!(claim.job.id, id);
    let keys: Vec<String> = b.query(redis::cmd("KEYS").arg("*")).await.expect("KEYS");
    let ours: Vec<&String> = keys.iter().filter(|k| k.starts_with("iris:")).collect();
    assert!(!ours.is_empty());
    for key in &ours {
        let tagged = key.starts_with("iris:{layout-a}:") || key.starts_with("iris:{layout-b}:");
        // The due index, marked by the dispatches, has a slot of its own.
        let due = key.as_str() == "iris:{@due}" || key.starts_with("iris:{@due}:");
        assert!(
            tagged || due || key.as_str() == "iris:queues",
            "unexpected key {key}"
        );
    }
    assert!(ours.iter().any(|k| k.as_str() == "iris:{layout-a}:running"));
    assert!(ours.iter().any(|k| k.as_str() == "iris:{layout-b}:pending"));
    // Another prefix on the same server sees nothing of these.
    let other = connect(&server().url(), "other:").await;
    assert!(other.queues().await.expect("queues").is_empty());
    assert_eq!(
        other.counts(&q("layout-b")).await.expect("counts").pending,
        0
    );
}

#[tokio::test]
async fn reading_a_dispatch_bucket_writes_nothing() {
    use runtime::queue::{Rate, TenantStore};
    let b = connect(&server().url(), "bucket-read:").await;
    let zed = runtime::TenantName::new("zed").expect("tenant name");
    let rate = Rate {
        per_second: 1.0,
        burst: 5,
    };
    assert_eq!(b.dispatch_tokens(&zed, rate).await.expect("tokens"), 5.0);
    let keys: Vec<String> = b
        .query(redis::cmd("KEYS").arg("bucket-read:*"))
        .await
        .expect("KEYS");
    assert!(keys.is_empty(), "a read wrote {keys:?}");
    b.take_dispatch(&zed, 2, rate).await.expect("take");
    let left = b.dispatch_tokens(&zed, rate).await.expect("tokens");
    assert!(
        (3.0..3.5).contains(&left),
        "{left} tokens after taking 2 of 5"
    );
    let at: Option<String> = b
        .query(
            redis::cmd("HGET")
                .arg("bucket-read:{@t/zed}:bucket")
                .arg("at"),
        )
        .await
        .expect("HGET");
    assert!(at.is_some(), "the take wrote its bucket");
}

#[tokio::test]
async fn the_library_is_loaded_again_after_function_flush() {
    // A server of its own: FUNCTION FLUSH is server-wide, and the other
    // tests' calls on the shared one would meet it half way.
    let own = RedisServer::start();
    let b = connect(&own.url(), &prefix()).await;
    b.dispatch(job("flush")).await.expect("dispatch");
    let flush = || async {
        let _: String = b
            .query(redis::cmd("FUNCTION").arg("FLUSH"))
            .await
            .expect("FUNCTION FLUSH");
    };
    flush().await;
    let claims = b
        .claim(&[q("flush")], 1, Duration::from_secs(30))
        .await
        .expect("claim works after the library is gone");
    let lease = &claims.first().expect("a job").lease;
    flush().await;
    b.complete(lease, Completion::Done, String::new())
        .await
        .expect("complete works after the library is gone");
    assert_eq!(b.counts(&q("flush")).await.expect("counts").done, 1);
}

/// A record in the layout of versions before the current one (one hash
/// field per attribute), or one garbled by hand, is never run: a claim
/// moves it to failed, reading it names the job and says to delete it, and
/// deleting it works.
#[tokio::test]
async fn records_this_version_cannot_read_fail_with_a_clear_error() {
    let prefix = prefix();
    let b = connect(&server().url(), &prefix).await;
    let old = b.dispatch(job("legacy")).await.expect("dispatch");
    let garbled = b.dispatch(job("legacy")).await.expect("dispatch");
    let fine = b.dispatch(job("legacy")).await.expect("dispatch");
    let key = |id: &runtime::JobId| format!("{prefix}{{legacy}}:job:{}", id.seq());
    let _: () = b
        .query(
            redis::cmd("DEL")
                .arg(key(&old))
                .arg(format!("{}:m", key(&old))),
        )
        .await
        .expect("DEL");
    let _: i64 = b
        .query(
            redis::cmd("HSET")
                .arg(key(&old))
                .arg("state")
                .arg("pending")
                .arg("payload")
                .arg("{}")
                .arg("priority")
                .arg("0"),
        )
        .await
        .expect("HSET");
    let _: () = b
        .query(
            redis::cmd("SET")
                .arg(format!("{}:m", key(&garbled)))
                .arg("pending|x"),
        )
        .await
        .expect("SET");
    let claims = b
        .claim(&[q("legacy")], 10, Duration::from_secs(30))
        .await
        .expect("claim");
    let ids: Vec<_> = claims.iter().map(|c| c.job.id.clone()).collect();
    assert_eq!(ids, [fine], "only the readable job runs");
    let counts = b.counts(&q("legacy")).await.expect("counts");
    assert_eq!((counts.pending, counts.failed), (0, 2));
    for id in [&old, &garbled] {
        let err = b.get(id).await.expect_err("unreadable");
        let message = err.to_string();
        assert!(
            message.contains(&format!("job {id} is malformed"))
                && message.contains(&format!("runtime jobs delete {id}")),
            "{message}"
        );
        assert!(b.delete(id).await.expect("delete"), "{id}");
    }
    assert_eq!(b.counts(&q("legacy")).await.expect("counts").failed, 0);
}

/// Records and attempt entries written before failure kinds were kept
/// read back without a kind, whatever their text says (a handler's old
/// reason cannot turn into a host limit), and take kinds from then on.
#[tokio::test]
async fn records_from_before_failure_kinds_read_without_them() {
    let prefix = prefix();
    let b = connect(&server().url(), &prefix).await;
    let id = b.dispatch(job("old")).await.expect("dispatch");
    let claim = claim_one(&b, "old").await;
    let fail = Completion::Fail {
        kind: FailureKind::Handler,
        error: "first".into(),
    };
    b.complete(&claim.lease, fail, String::new())
        .await
        .expect("complete");
    // Rewrite it as an older version stored it: no error kind (`k`), and an
    // attempt entry `n|started|ended|outcome` whose outcome reads like a kind.
    let key = format!("{prefix}{{old}}:job:{}", id.seq());
    let old_reason = "memory|memory limit 64 MiB exceeded";
    let _: i64 = b
        .query(redis::cmd("HDEL").arg(format!("{key}:x")).arg("k"))
        .await
        .expect("HDEL");
    let _: i64 = b
        .query(
            redis::cmd("HSET")
                .arg(format!("{key}:x"))
                .arg("e")
                .arg(old_reason),
        )
        .await
        .expect("HSET");
    let entry = format!("1|1000|1250|{old_reason}");
    let _: String = b
        .query(
            redis::cmd("LSET")
                .arg(format!("{key}:h"))
                .arg(0)
                .arg(&entry),
        )
        .await
        .expect("LSET");
    let rec = b.get(&id).await.expect("get").expect("kept");
    assert_eq!(
        (rec.error_kind, rec.error.as_deref()),
        (None, Some(old_reason))
    );
    let first = &rec.history[0];
    assert_eq!(
        (first.ended_at, first.kind, first.outcome.as_deref()),
        (Some(1250), None, Some(old_reason))
    );
    // Run again: the new attempt has its kind, the old one still none.
    b.retry(&id).await.expect("retry");
    let claim = claim_one(&b, "old").await;
    let crash = Completion::Fail {
        kind: FailureKind::Timeout,
        error: "timeout after 1s".into(),
    };
    b.complete(&claim.lease, crash, String::new())
        .await
        .expect("complete");
    let rec = b.get(&id).await.expect("get").expect("kept");
    assert_eq!(rec.error_kind, Some(FailureKind::Timeout));
    assert_eq!(
        rec.history.iter().map(|a| a.kind).collect::<Vec<_>>(),
        [None, Some(FailureKind::Timeout)]
    );
}

#[tokio::test]
async fn unreachable_redis_is_a_clear_error_naming_the_url() {
    // A port nothing listens on: bind one, then let it go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a port");
    let url = format!("redis://:hunter2@127.0.0.1:{port}");
    let err = RedisBackend::connect(&url, "x:", Arc::new(SystemClock))
        .await
        .expect_err("nothing listens there");
    let text = err.to_string();
    assert!(matches!(err, QueueError::Backend { .. }), "{text}");
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(text.contains("cannot connect"), "{text}");
    assert!(
        !text.contains("hunter2"),
        "the password is not shown: {text}"
    );
    let bad = RedisBackend::connect("http://nope", "x:", Arc::new(SystemClock))
        .await
        .expect_err("not a Redis URL");
    assert!(bad.to_string().contains("invalid Redis URL"), "{bad}");
    let braces = RedisBackend::connect(&server().url(), "a{b}:", Arc::new(SystemClock))
        .await
        .expect_err("braces would break the hash tag");
    assert!(braces.to_string().contains("prefix"), "{braces}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_queues_on_different_cluster_nodes_work_side_by_side() {
    let cluster = tokio::task::spawn_blocking(cluster).await.expect("cluster");
    let b = connect(&cluster.url(), &prefix()).await;
    // Find two queues whose hash tags land on different nodes.
    let names = [
        "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta",
    ];
    let port_of = |name: &str| cluster.node_of(&format!("{{{name}}}")).port();
    let first = names[0];
    let second = names
        .iter()
        .copied()
        .find(|n| port_of(n) != port_of(first))
        .expect("some name lands on another node");
    for name in [first, second] {
        for _ in 0..3 {
            b.dispatch(job(name)).await.expect("dispatch");
        }
    }
    let claims = b
        .claim(&[q(first), q(second)], 10, Duration::from_secs(30))
        .await
        .expect("claim across nodes");
    assert_eq!(claims.len(), 6);
    for c in &claims {
        b.complete(&c.lease, Completion::Done, String::new())
            .await
            .expect("complete");
    }
    for name in [first, second] {
        let counts = b.counts(&q(name)).await.expect("counts");
        assert_eq!((counts.done, counts.pending), (3, 0), "{name}");
        // The queue's keys live on the node owning its hash tag.
        let stats = format!("{}:stats", b.queue_key(&q(name)));
        let node = cluster.node_of(&stats);
        assert_eq!(node.port(), port_of(name));
        assert_eq!(node.command(&["EXISTS", &stats]).expect("EXISTS"), ":1");
    }
    let listed = b
        .list(&q(second), JobState::Pending, Default::default())
        .await
        .expect("list");
    assert!(listed.is_empty());
}

/// A server without functions (Redis before 7.0; here one with `FUNCTION`
/// renamed away, which answers the same "unknown command") is refused when
/// connecting, saying which version is needed, not at the first dispatch.
#[tokio::test]
async fn a_server_without_functions_is_refused_in_words() {
    let old = RedisServer::start_with(&["--rename-command", "FUNCTION", ""]);
    let err = RedisBackend::connect(&old.url(), "x:", Arc::new(SystemClock))
        .await
        .expect_err("a server without functions is refused");
    let text = err.to_string();
    assert!(text.contains("needs Redis 7.0 or later"), "{text}");
    assert!(
        text.contains(&format!("127.0.0.1:{}", old.port())),
        "{text}"
    );
}

/// The one job `queue` has, claimed under a 30 s lease.
async fn claim_one(b: &RedisBackend, queue: &str) -> Claim {
    b.claim(&[q(queue)], 1, Duration::from_secs(30))
        .await
        .expect("claim")
        .pop()
        .expect("a job")
}

#[tokio::test]
async fn the_running_set_stays_a_skiplist_from_the_first_claim() {
    let b = connect(&server().url(), "skip:").await;
    for _ in 0..3 {
        b.dispatch(job("encoding")).await.expect("dispatch");
    }
    let encoding = || async {
        let e: String = b
            .query(
                redis::cmd("OBJECT")
                    .arg("ENCODING")
                    .arg("skip:{encoding}:running"),
            )
            .await
            .expect("OBJECT ENCODING");
        e
    };
    // A set of two short members would otherwise be a listpack, whose
    // every insert and removal scans all entries.
    let first = claim_one(&b, "encoding").await;
    claim_one(&b, "encoding").await;
    assert_eq!(encoding().await, "skiplist");
    let running = b
        .list(&q("encoding"), JobState::Running, Page::default())
        .await
        .expect("list running");
    assert_eq!(running.len(), 2, "only the two jobs are running");
    b.complete(&first.lease, Completion::Done, String::new())
        .await
        .expect("complete");
    claim_one(&b, "encoding").await;
    assert_eq!(encoding().await, "skiplist");
    assert_eq!(b.counts(&q("encoding")).await.expect("counts").running, 2);
}

#[tokio::test]
async fn a_job_done_after_a_failed_attempt_leaves_no_key_behind() {
    let b = connect(&server().url(), "gone:").await;
    let id = b.dispatch(job("history")).await.expect("dispatch");
    let first = claim_one(&b, "history").await;
    let retry = Completion::Retry {
        kind: FailureKind::Handler,
        error: "once more".into(),
        delay: Duration::ZERO,
    };
    b.complete(&first.lease, retry, "a log line".into())
        .await
        .expect("retry");
    let keys = || async {
        let keys: Vec<String> = b
            .query(redis::cmd("KEYS").arg("gone:{history}:job:*"))
            .await
            .expect("KEYS");
        keys
    };
    let kept = keys().await;
    assert!(
        kept.iter().any(|k| k.ends_with(":h")),
        "the failed attempt's entry is kept while the job lives: {kept:?}"
    );
    let second = claim_one(&b, "history").await;
    assert_eq!(second.job.id, id);
    b.complete(&second.lease, Completion::Done, String::new())
        .await
        .expect("done");
    assert_eq!(keys().await, Vec::<String>::new());
}

/// The due index's settle, called as a worker does after its look at the
/// queue: one that has not seen a mark made since (a dispatch between the
/// worker's look and its settle) leaves the queue due. The look and the
/// settle are one call in the backend, so the race is set up by calling
/// the library's function directly.
#[tokio::test]
async fn a_settle_that_missed_a_mark_leaves_the_queue_due() {
    let b = connect(&server().url(), "due:").await;
    let queue = q("race");
    let id = b.dispatch(job("race")).await.expect("dispatch");
    let listed = due_entry(&b, &queue).await.expect("race is due");
    let claimed = claim_one(&b, "race").await;
    assert_eq!(claimed.job.id, id);
    b.complete(&claimed.lease, Completion::Done, String::new())
        .await
        .expect("complete");
    // The worker looked and found nothing; now a job arrives (and marks
    // the queue), and only then does the worker's settle land.
    b.dispatch(job("race")).await.expect("dispatch");
    let libraries: redis::Value = b
        .query(
            redis::cmd("FUNCTION")
                .arg("LIST")
                .arg("LIBRARYNAME")
                .arg("runtime_*"),
        )
        .await
        .expect("FUNCTION LIST");
    let library = strings(&libraries)
        .into_iter()
        .find(|s| s.starts_with("runtime_") && s.len() == "runtime_".len() + 16)
        .expect("the library's name");
    let settle = |marks: u64| {
        let mut cmd = redis::cmd("FCALL");
        cmd.arg(format!("{library}_settle"))
            .arg(1)
            .arg("due:{@due}")
            .arg(0)
            .arg("race")
            .arg(marks)
            .arg(-1);
        cmd
    };
    let settled: i64 = b.query(&settle(listed.marks)).await.expect("settle");
    assert_eq!(
        settled, 0,
        "the settle missed a mark and must change nothing"
    );
    assert!(due_entry(&b, &queue).await.is_some());
    // With the latest marks, the same settle drops the queue.
    let now = due_entry(&b, &queue).await.expect("race is due");
    let settled: i64 = b.query(&settle(now.marks)).await.expect("settle");
    assert_eq!(settled, 1);
    assert!(due_entry(&b, &queue).await.is_none());
}

/// `queue`'s entry in the due index, if it is due.
async fn due_entry(b: &RedisBackend, queue: &QueueName) -> Option<runtime::queue::DueQueue> {
    b.due()
        .await
        .expect("due")
        .into_iter()
        .find(|d| &d.queue == queue)
}

/// Every string in a reply, depth first.
fn strings(value: &redis::Value) -> Vec<String> {
    match value {
        redis::Value::BulkString(bytes) => vec![String::from_utf8_lossy(bytes).into_owned()],
        redis::Value::SimpleString(s) => vec![s.clone()],
        redis::Value::Array(items) | redis::Value::Set(items) => {
            items.iter().flat_map(strings).collect()
        }
        redis::Value::Map(pairs) => pairs
            .iter()
            .flat_map(|(k, v)| strings(k).into_iter().chain(strings(v)))
            .collect(),
        _ => Vec::new(),
    }
}

/// A queue removed by one process and dispatched to again by another that
/// listed it a moment before is listed again at once, not after that
/// process's next periodic listing.
#[tokio::test]
async fn a_queue_removed_elsewhere_is_listed_again_by_its_next_dispatch() {
    let (a, b) = (
        connect(&server().url(), "again:").await,
        connect(&server().url(), "again:").await,
    );
    let queue = q("back");
    a.dispatch(job("back")).await.expect("dispatch");
    assert_eq!(
        b.queues().await.expect("queues"),
        std::slice::from_ref(&queue)
    );
    assert_eq!(b.remove_queue(&queue).await.expect("remove"), 1);
    assert_eq!(a.queues().await.expect("queues"), []);
    let id = a.dispatch(job("back")).await.expect("dispatch again");
    assert_eq!(a.queues().await.expect("queues"), [queue]);
    // Numbered on from before: an id is never given twice.
    assert_eq!(id.to_string(), "back:2");
}

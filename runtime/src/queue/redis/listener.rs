//! Waking idle workers without polling: one listener task per queue waited
//! on blocks in `BLPOP` on the queue's `wake` key, on a connection of its
//! own (so a cancelled wait never swallows a marker), and wakes the
//! process's waiters when a marker arrives.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use redis::RedisError;
use tokio::sync::Notify;
use tokio::sync::futures::Notified;

use super::connection::{BLOCK, Conn, Target};
use crate::retry::Backoff;

/// How a listener that lost Redis tries again.
const RECONNECT: Backoff = Backoff::RECONNECT;

/// The listeners of one backend and the waiters they wake.
pub(super) struct Wakeups {
    target: Target,
    /// One listener per wake key waited on (a queue's, or the due
    /// index's).
    listeners: Mutex<HashMap<String, Arc<Listener>>>,
    /// Notified when a listener pops a marker.
    work: Notify,
}

/// A queue's wake-up listener: blocks in `BLPOP` while anyone waits.
#[derive(Default)]
struct Listener {
    waiting: AtomicUsize,
    wanted: Notify,
}

impl Wakeups {
    pub fn new(target: Target) -> Arc<Self> {
        Arc::new(Wakeups {
            target,
            listeners: Mutex::new(HashMap::new()),
            work: Notify::new(),
        })
    }

    /// Counts a waiter on `wake_key` for as long as the guard lives,
    /// starting the key's listener on first use.
    pub fn wait_on(self: &Arc<Self>, wake_key: &str) -> Waiting {
        let mut listeners = crate::sync::lock(&self.listeners);
        let listener = match listeners.get(wake_key) {
            Some(l) => l.clone(),
            None => {
                let listener = Arc::new(Listener::default());
                listeners.insert(wake_key.to_string(), listener.clone());
                tokio::spawn(listen(
                    Arc::downgrade(self),
                    wake_key.to_string(),
                    listener.clone(),
                ));
                listener
            }
        };
        listener.waiting.fetch_add(1, Ordering::SeqCst);
        listener.wanted.notify_waiters();
        Waiting(listener)
    }

    /// Resolves when a listener pops a marker after this was enabled.
    pub fn notified(&self) -> Notified<'_> {
        self.work.notified()
    }
}

/// Blocks on one queue's wake key while anyone waits on the queue, and
/// wakes the waiters when a marker arrives. A marker popped after the last
/// waiter left is pushed back for another worker.
async fn listen(wakeups: Weak<Wakeups>, wake_key: String, listener: Arc<Listener>) {
    let mut conn: Option<Conn> = None;
    let mut failures = 0u32;
    loop {
        let wanted = listener.wanted.notified();
        tokio::pin!(wanted);
        wanted.as_mut().enable();
        if listener.waiting.load(Ordering::SeqCst) == 0 {
            let _ = tokio::time::timeout(BLOCK, wanted).await;
            if wakeups.strong_count() == 0 {
                return;
            }
            continue;
        }
        let Some(target) = wakeups.upgrade().map(|w| w.target.clone()) else {
            return;
        };
        let c = match &mut conn {
            Some(c) => c,
            None => match target.blocking_conn().await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let retry_in = RECONNECT.delay(failures);
                    tracing::warn!(error = %e, ?retry_in, "queue wake-up listener cannot connect to Redis");
                    tokio::time::sleep(retry_in).await;
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
                failures = 0;
                let Some(wakeups) = wakeups.upgrade() else {
                    return;
                };
                if listener.waiting.load(Ordering::SeqCst) > 0 {
                    wakeups.work.notify_waiters();
                } else {
                    let _: Result<i64, _> = redis::cmd("RPUSH")
                        .arg(&wake_key)
                        .arg("1")
                        .query_async(c)
                        .await;
                }
            }
            Ok(None) => failures = 0,
            Err(e) => {
                failures = failures.saturating_add(1);
                let retry_in = RECONNECT.delay(failures);
                tracing::warn!(error = %e, ?retry_in, "queue wake-up listener lost Redis");
                conn = None;
                tokio::time::sleep(retry_in).await;
            }
        }
    }
}

/// Counts a waiter on a listener for as long as it lives.
pub(super) struct Waiting(Arc<Listener>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

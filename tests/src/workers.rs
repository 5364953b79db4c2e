//! Running `runtime` against a test Redis: the CLI as a user runs it, and
//! `runtime worker` processes in the background (killed when dropped).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::redis::RedisServer;
use crate::{Run, TempDir, guests, runtime, runtime_bin};

/// A Redis, a cache dir, and the handlers of the test fixtures.
#[derive(Debug)]
pub struct Env {
    /// The Redis.
    pub redis: RedisServer,
    /// Cache dir, also where worker logs go.
    pub cache: TempDir,
    /// The handlers directory: the test fixtures unless a test sets its own.
    pub handlers: String,
}

impl Default for Env {
    fn default() -> Self {
        Self::new()
    }
}

impl Env {
    /// A fresh Redis and cache dir.
    pub fn new() -> Self {
        Env {
            redis: RedisServer::start(),
            cache: TempDir::new("worker"),
            handlers: guests::DIR.to_string(),
        }
    }

    /// Over an already started Redis.
    pub fn with(redis: RedisServer) -> Self {
        Env {
            redis,
            cache: TempDir::new("worker"),
            handlers: guests::DIR.to_string(),
        }
    }

    /// The Redis URL.
    pub fn url(&self) -> String {
        self.redis.url()
    }

    /// `runtime --backend <redis> --handlers <fixtures> ARGS`.
    pub fn run(&self, args: &[&str]) -> Run {
        let url = self.url();
        let mut all = vec!["--backend", &url, "--handlers", &self.handlers];
        all.extend_from_slice(args);
        runtime(self.cache.path(), &all, None)
    }

    /// `runtime dispatch QUEUE --file F EXTRA...`, with `lines` written to
    /// a new file F in the cache dir.
    pub fn dispatch_file(&self, queue: &str, lines: &str, extra: &[&str]) -> Run {
        let file = self.cache.path().join(format!(
            "{}-{}.jsonl",
            queue.replace('/', "."),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        ));
        std::fs::write(&file, lines).expect("write jobs");
        let file = file.display().to_string();
        let mut args = vec!["dispatch", queue, "--file", &file];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    /// `runtime dispatch QUEUE PAYLOAD EXTRA...`; the job id.
    pub fn dispatch(&self, queue: &str, payload: &str, extra: &[&str]) -> String {
        let mut args = vec!["dispatch", queue, payload];
        args.extend_from_slice(extra);
        let run = self.run(&args);
        run.expect_code(0);
        run.stdout().trim().to_string()
    }

    /// The queue's counts from `runtime queues --json`.
    pub fn counts(&self, queue: &str) -> Value {
        let run = self.run(&["queues", "--json"]);
        run.expect_code(0);
        run.json()
            .get(queue)
            .cloned()
            .unwrap_or_else(|| serde_json::json!({"pending": 0, "scheduled": 0, "running": 0, "failed": 0, "done": 0}))
    }

    /// One of the queue's counts.
    pub fn count(&self, queue: &str, state: &str) -> u64 {
        self.counts(queue)[state].as_u64().unwrap_or(0)
    }

    /// `runtime jobs show ID --json`.
    pub fn show(&self, id: &str) -> Value {
        let run = self.run(&["jobs", "show", id, "--json"]);
        run.expect_code(0);
        run.json()
    }

    /// Starts `runtime worker ARGS` in the background.
    pub fn worker(&self, args: &[&str]) -> RuntimeProcess {
        let log = log_path(self.cache.path(), "worker");
        let mut cmd = Command::new(runtime_bin());
        cmd.args([
            "--backend",
            &self.url(),
            "--handlers",
            &self.handlers,
            "worker",
        ])
        .args(args)
        .env("RUNTIME_CACHE_DIR", self.cache.path())
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUNTIME_CONFIG");
        let w = RuntimeProcess::spawn(cmd, log);
        w.wait_for_log("worker started", Duration::from_secs(30));
        w
    }
}

/// A new file for a background process's log in `dir`: `KIND-NANOS.log`.
pub fn log_path(dir: &std::path::Path, kind: &str) -> PathBuf {
    dir.join(format!(
        "{kind}-{}.log",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    ))
}

/// A `runtime` process in the background (a worker, a server), its
/// stderr in a log file; killed if still running when dropped.
#[derive(Debug)]
pub struct RuntimeProcess {
    child: Child,
    log: PathBuf,
}

impl RuntimeProcess {
    /// Starts `cmd` with no stdin or stdout and its stderr in a new file
    /// at `log`.
    pub fn spawn(mut cmd: Command, log: PathBuf) -> Self {
        let file = std::fs::File::create(&log).expect("create the process's log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start runtime");
        RuntimeProcess { child, log }
    }

    /// Whether it has exited, and how.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until its log contains `text`.
    pub fn wait_for_log(&self, text: &str, limit: Duration) {
        let log = || self.log();
        eventually(limit, &format!("the log to contain {text:?}"), || {
            log().contains(text)
        });
    }

    /// Sends it a signal: `TERM`, `KILL`...
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {}", self.child.id());
    }

    /// kill -9, and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit; its status code.
    pub fn wait(&mut self, limit: Duration) -> i32 {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "still running after {limit:?}; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RuntimeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `check` until it holds; panics naming `what` after `limit`.
pub fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

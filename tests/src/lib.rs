//! Helpers for the end-to-end tests. Each test file says what belongs in it:
//!
//! - `tests/sandbox.rs`: hostile and well-behaved guests run through the
//!   library (runtime + in-memory backend + worker), asserting final state
//!   and exact reason, and that the worker carries on.
//! - `tests/cli.rs`: the real `runtime` binary, run as a user runs it.
//! - `tests/cli_redis.rs`: the binary against a real Redis, used carelessly:
//!   bulk dispatch stopped and resumed, odd stored times, closed stdout,
//!   passwords, connection errors.
//! - `tests/invariants.rs`: properties of the code base itself.
//! - `tests/memory_queue.rs`: the queue conformance suite ([`conformance`])
//!   on the in-memory backend.
//! - `tests/redis_queue.rs`: the queue conformance suite on a real Redis and
//!   a real 3-master Redis Cluster, and the key layout.
//! - `tests/worker.rs`: `runtime worker` and the admin commands on a real
//!   Redis: kill -9, SIGTERM, restarts, wake-up, delayed jobs.
//! - `tests/guest_text.rs`: hostile guest text through `runtime dispatch`,
//!   `runtime jobs` and a worker's logs; failure kinds end to end; the
//!   worker log's bound per attempt.
//! - `tests/foreign.rs`: handlers built by Python and JavaScript toolchains
//!   (tests/foreign/, built by scripts/foreign.sh), through the library and
//!   the binary under the default config.
//! - `tests/containment.rs`: limits that hold for any component shape
//!   (several memories, tables, many core instances) and more jobs than
//!   the pool has places, with hand-written components (`components`),
//!   run through the library (`library`).
//! - `tests/followups.rs`: job trees' budgets, the sync mode's bounds, and
//!   guests' follow-ups refused past their limits, in memory and on Redis.
//! - `tests/serve.rs`: `runtime serve`, its HTTP API called over real
//!   sockets ([`serve`]) on a real Redis and in memory, with real workers;
//!   every answer checked against its own OpenAPI document ([`openapi`]);
//!   the client examples of examples/clients run against it.
//! - `tests/dashboard.rs`: the dashboard of `runtime serve` in a real
//!   headless Chromium driven through chromedriver ([`webdriver`]), with
//!   real workers on a real Redis.

pub mod components;
pub mod conformance;
pub mod http;
pub mod library;
pub mod openapi;
pub mod redis;
pub mod serve;
pub mod webdriver;
pub mod workers;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The guest modules built by `build.rs`: [`guests::DIR`], one constant per
/// hostile fixture (its queue name), and [`guests::JOBS_DIR`].
pub mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}

/// A handlers directory of its own with the fixture `job` (`<job>_job.wasm`)
/// as the handler of queue `job` of each of `tenants`
/// (`tenants/<tenant>/<job>_job.wasm`).
pub fn tenant_handlers(job: &str, tenants: &[&str]) -> TempDir {
    let dir = TempDir::new("tenant-handlers");
    let file = format!("{job}_job.wasm");
    for tenant in tenants {
        let own = dir.path().join("tenants").join(tenant);
        std::fs::create_dir_all(&own).expect("create the tenant's directory");
        std::fs::copy(
            std::path::Path::new(guests::DIR).join(&file),
            own.join(&file),
        )
        .expect("copy the fixture");
    }
    dir
}

/// A benchmark's job count: the environment variable `var` if it holds a
/// number, else `default`.
pub fn job_count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A multi-threaded tokio runtime with `threads` workers, as a worker
/// process runs (benchmarks and tests that drive the library).
pub fn tokio_runtime(threads: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The first attempt of job 1 of `queue` with `payload`, as a worker holds
/// it while it runs: what a benchmark hands the sandbox directly.
pub fn running_record(queue: &str, payload: &str) -> runtime::JobRecord {
    let queue = runtime::QueueName::new(queue).expect("valid queue");
    runtime::JobRecord {
        id: runtime::JobId::new(queue, 1),
        payload: runtime::Payload::new(payload).expect("valid payload"),
        state: runtime::JobState::Running,
        priority: 1,
        attempts: 1,
        max_attempts: 4,
        unique_key: None,
        lineage: None,
        created_at: 0,
        run_at: 0,
        error_kind: None,
        error: None,
        history: Vec::new(),
        log: String::new(),
    }
}

/// Whether a benchmark's `main` should run: not when `cargo test
/// --benches` only asks for the list of benchmarks. Warns when
/// `RUST_BACKTRACE` is set, which slows wasmtime down.
pub fn bench_runs() -> bool {
    if std::env::args().any(|a| a == "--list") {
        return false;
    }
    if std::env::var_os("RUST_BACKTRACE").is_some() {
        eprintln!("note: RUST_BACKTRACE is set; wasmtime gets slower with it");
    }
    true
}

/// A process's resident set size in bytes, from /proc (0 if it is gone).
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kib| kib.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The `runtime` binary of this build (same profile as the tests), or the
/// one `RUNTIME_BIN` names (a benchmark run against another build, e.g.
/// the soak of a baseline: every command of the run then uses it).
pub fn runtime_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("RUNTIME_BIN").filter(|b| !b.is_empty()) {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test> -> target/<profile>/runtime
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("runtime"))
        .unwrap_or_default();
    assert!(
        bin.is_file(),
        "{} is missing: build it first (cargo build --release --workspace)",
        bin.display()
    );
    bin
}

/// A fresh temporary directory for one test, removed when dropped.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new empty directory named after `name`.
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "runtime-test-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A finished run of the binary, which explains itself when an assertion
/// about it fails.
#[derive(Debug)]
pub struct Run {
    /// The command line.
    pub command: String,
    /// What it returned.
    pub output: Output,
}

impl Run {
    /// Exit status (-1 if killed by a signal).
    pub fn code(&self) -> i32 {
        self.output.status.code().unwrap_or(-1)
    }
    /// Standard output as text.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }
    /// Standard error as text.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }
    /// Panics, showing everything, unless the exit status is `code`.
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code(),
            code,
            "unexpected exit status\ncommand: {}\n--- stdout\n{}\n--- stderr\n{}",
            self.command,
            self.stdout(),
            self.stderr()
        );
        self
    }
    /// Standard output parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout()).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e})\ncommand: {}\n--- stdout\n{}\n--- stderr\n{}",
                self.command,
                self.stdout(),
                self.stderr()
            )
        })
    }
}

/// `runtime` with its own cache dir and none of the settings this
/// process's environment might pass down (handlers, config, backend,
/// prefix, backtraces).
pub fn runtime_command(cache: &Path) -> Command {
    let mut cmd = Command::new(runtime_bin());
    cmd.env("RUNTIME_CACHE_DIR", cache)
        .env_remove("RUNTIME_HANDLERS")
        .env_remove("RUNTIME_CONFIG")
        .env_remove("RUNTIME_BACKEND")
        .env_remove("RUNTIME_PREFIX")
        .env_remove("RUST_BACKTRACE");
    cmd
}

/// Runs `runtime ARGS` with its own cache dir and optional stdin.
pub fn runtime(cache: &Path, args: &[&str], stdin: Option<&[u8]>) -> Run {
    use std::io::Write;
    let mut cmd = runtime_command(cache);
    cmd.args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let command = format!("runtime {}", args.join(" "));
    let mut child = cmd.spawn().expect("spawn runtime");
    if let (Some(mut pipe), Some(bytes)) = (child.stdin.take(), stdin) {
        let _ = pipe.write_all(bytes);
    }
    let output = child.wait_with_output().expect("wait for runtime");
    Run { command, output }
}

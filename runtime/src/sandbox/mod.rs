//! The sandbox: one wasmtime [`Engine`] per process, each handler module
//! compiled once (and cached on disk), and a fresh `Store` and instance for
//! every attempt of every job.
//!
//! Cheap fresh instances come from the pooling allocator with
//! `pagemap_scan` and keep-resident memory (see [`engine_config`]), an
//! [`InstancePre`](wasmtime::component::InstancePre) per module, and epoch
//! interruption driven by one ticker thread. Every way a guest can misbehave
//! ends in a [`RunOutcome::Crashed`] with a readable reason, never a panic
//! or an error of the host.

mod cache;
pub mod capabilities;
pub mod compile;
mod host;
pub mod limits;
pub mod outbound;
pub mod output;
mod shape;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi::FsPerms;
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi_http::WasiHttpCtx;

use crate::error::LoadError;
use crate::job::{FailureKind, JobRecord};
pub use capabilities::{Capabilities, Dispatcher, Grants, Preopen};
use host::{
    Ceilings, EchoContext, HandlerPre, HostState, MAX_REASON_BYTES, MemoryLimiter, WitJob,
    WitOutcome,
};
pub use limits::Limits;
use limits::{Bytes, Millis};
use outbound::Outbound;
use output::JobOutput;
pub use shape::{Refusal, Shape};

/// Engine-wide settings, fixed for the life of the process. Serializable
/// so a compiler child process builds the very same engine.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SandboxConfig {
    /// Instances that may exist at once (the pool's size): at least the
    /// worker's concurrency. Default 256.
    pub max_instances: u32,
    /// The largest memory limit of any queue; pool slots are this big.
    /// Default 64 MiB.
    pub max_memory: u64,
    /// The largest per-job ceiling of any queue on core instances,
    /// memories and tables ([`Limits::core_instances`] ...): the pool
    /// holds this many of each for every instance.
    pub max_core_instances: u32,
    /// See [`SandboxConfig::max_core_instances`].
    pub max_memories: u32,
    /// See [`SandboxConfig::max_core_instances`].
    pub max_tables: u32,
    /// Bytes of each linear memory slot kept resident between jobs (the
    /// dirty pages of a job's working set up to this size are zeroed in
    /// place instead of returned to the kernel, which is what makes a fresh
    /// instance per job cheap). Pages a job touched beyond it go back to
    /// the kernel when the job ends; what stays is at most this much per
    /// memory slot of the pool. Default 1 MiB.
    pub keep_resident: usize,
    /// WebAssembly stack per call; deeper recursion traps as
    /// `stack overflow`. Default 512 KiB.
    pub max_wasm_stack: usize,
    /// Whether any queue uses a fuel budget (costs all guests some speed).
    pub fuel: bool,
    /// Where compiled modules are cached; `None` compiles on every start.
    pub cache_dir: Option<PathBuf>,
    /// Largest module accepted, bytes. Stops a huge file from being read
    /// into memory, stored in Redis by `runtime deploy`, and compiled.
    /// Default 32 MiB (a componentize-py handler is about 18 MB).
    /// Reason: `is N bytes, over the limit of 32 MiB (sandbox.max_module_mib)`.
    pub max_module_size: u64,
    /// Deepest nesting of components (a lone component is 1). Stops
    /// components nested thousands deep, whose compile takes memory
    /// quadratic in the depth (10,000 deep: 2.4 GB). Default 16.
    pub max_component_depth: u32,
    /// Component instances one instance creates, nested ones counted
    /// after flattening (a component instantiated twice, inside one
    /// instantiated twice, counts four); also the most components a module
    /// may define. Stops a few hundred bytes of components that
    /// instantiate each other in a chain from becoming millions of
    /// instances when the compiler flattens them (2^24 took 50 s and
    /// 4.6 GB to refuse). Default 1000; a QuickJS handler has 3.
    pub max_component_instances: u32,
    /// Largest function body, bytes. The compiler's time and memory grow
    /// with a function's size and one function cannot be split across
    /// threads: a single 7 MB function took 89 s and 3.8 GB. Default
    /// 1 MiB (a componentize-py handler's largest is 427 KB).
    pub max_function_size: u64,
    /// Longest one compile may take, in the compiler child process (see
    /// [`SandboxConfig::compiler`]), which is killed then. Stops a module
    /// that passes the structural checks but compiles for minutes (29 MB
    /// of small functions, say) from holding a compile slot and the
    /// cores. Default 60 s (an 18 MB componentize-py handler takes 10 to
    /// 30 s on two busy cores). Reason: `took longer than 60s to compile
    /// (sandbox.compile_timeout_ms)`.
    pub compile_timeout: Duration,
    /// Most memory one compile may take, in the compiler child process,
    /// on top of what its engine maps at start. Stops a module that
    /// passes the structural checks but needs gigabytes to compile.
    /// Default 1024 MiB (an 18 MB componentize-py or 12 MB SpiderMonkey
    /// handler needs 400 to 550 MiB). Reason: `needed more than 1024 MiB of
    /// memory to compile (sandbox.compile_memory_mib)`.
    pub compile_memory: u64,
    /// The program that compiles modules in a child process
    /// (`PROGRAM __compile`, which is the `runtime` binary: see
    /// [`compile::child_main`]), under `compile_timeout` and
    /// `compile_memory`. `None` compiles in this process, still checked
    /// for size and structure but without a bound on time or memory: for
    /// embedders that trust their modules. The `runtime` binary always
    /// compiles in a child.
    pub compiler: Option<PathBuf>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            max_instances: 256,
            max_memory: Limits::default().memory,
            max_core_instances: Limits::default().core_instances,
            max_memories: Limits::default().memories,
            max_tables: Limits::default().tables,
            keep_resident: 1 << 20,
            max_wasm_stack: 512 * 1024,
            fuel: false,
            cache_dir: None,
            max_module_size: 32 << 20,
            max_component_depth: 16,
            max_component_instances: 1000,
            max_function_size: 1 << 20,
            compile_timeout: Duration::from_secs(60),
            compile_memory: 1 << 30,
            compiler: None,
        }
    }
}

/// A place in the pool, held for the length of one attempt.
#[derive(Debug)]
pub struct Room {
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// The engine's settings for `config`: every instance of the pool has room
/// for the largest per-job ceiling of core instances, memories and tables,
/// so no job can take another's room. Compiled code depends on these
/// settings: whatever compiles modules for an engine must use the same.
pub fn engine_config(config: &SandboxConfig) -> Config {
    let n = config.max_instances.max(1);
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(n)
        .total_core_instances(n.saturating_mul(config.max_core_instances.max(1)))
        .total_memories(n.saturating_mul(config.max_memories.max(1)))
        .total_tables(n.saturating_mul(config.max_tables.max(1)))
        .max_core_instances_per_component(config.max_core_instances.max(1))
        .max_memories_per_component(config.max_memories.max(1))
        .max_tables_per_component(config.max_tables.max(1))
        .max_memories_per_module(config.max_memories.max(1))
        .max_tables_per_module(config.max_tables.max(1))
        .total_stacks(n)
        .max_memory_size(usize::try_from(config.max_memory).unwrap_or(usize::MAX))
        .table_elements(host::MAX_TABLE_ELEMENTS)
        .pagemap_scan(Enabled::Auto)
        .linear_memory_keep_resident(config.keep_resident)
        .table_keep_resident(TABLE_KEEP_RESIDENT);
    let mut wasm = Config::new();
    wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .epoch_interruption(true)
        .consume_fuel(config.fuel)
        .max_wasm_stack(config.max_wasm_stack)
        .concurrency_support(false);
    wasm
}

/// Bytes of each table slot kept resident between jobs: tables of real
/// handlers hold a few hundred functions, a few KiB.
const TABLE_KEEP_RESIDENT: usize = 64 << 10;

/// Milliseconds between epoch ticks.
const TICK: Duration = Duration::from_millis(1);

/// Ticks between checks of a running guest's deadline, which are also the
/// points where a busy guest yields its thread to other jobs.
const CHECK_EVERY_TICKS: u64 = 10;

/// The compiled-code side of the executor: engine, linker, module cache.
pub struct Sandbox {
    engine: Engine,
    linker: Linker<HostState>,
    loader: compile::Loader,
    fuel: bool,
    ticker_stop: Arc<AtomicBool>,
    stats: Arc<SandboxStats>,
    /// Handlers' HTTP requests, counted for the metrics.
    http: Arc<outbound::HttpMeter>,
    echo_logs: AtomicBool,
    room: Arc<tokio::sync::Semaphore>,
}

/// Counts kept by a sandbox as instances come and go.
#[derive(Debug, Default)]
pub struct SandboxStats {
    instances: AtomicU64,
    live: AtomicU64,
    memory: AtomicU64,
}

/// A reading of [`SandboxStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SandboxSnapshot {
    /// Instances created since start (one per attempt).
    pub instances_total: u64,
    /// Instances alive now.
    pub instances_live: u64,
    /// Linear memory held by the live instances, bytes.
    pub memory_bytes: u64,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("loader", &self.loader)
            .field("fuel", &self.fuel)
            .finish_non_exhaustive()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

/// A loaded handler module, ready to instantiate.
#[derive(Clone)]
pub struct Handler {
    pre: HandlerPre<HostState>,
    path: PathBuf,
    limits: Limits,
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handler")
            .field("path", &self.path)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Handler {
    /// The module file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Its limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}

/// What `runtime check` reports about a module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleReport {
    /// Interfaces and functions it imports.
    pub imports: Vec<String>,
    /// Interfaces and functions it exports.
    pub exports: Vec<String>,
    /// What one instance of it creates, counted as the limits count.
    pub shape: Shape,
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// The handler finished the job.
    Done,
    /// The handler asked to run again (after `delay`, or the backoff).
    Retry {
        /// Why.
        reason: String,
        /// Its own delay, if it asked for one.
        delay: Option<Duration>,
    },
    /// The handler failed the job for good.
    Fail {
        /// Why.
        reason: String,
    },
    /// The attempt was stopped: trap, panic, timeout, a limit. Retried with
    /// backoff while attempts remain.
    Crashed {
        /// What stopped it, as a fixed kind.
        kind: FailureKind,
        /// Why, in words, leading with the cause: `timeout after 100ms`,
        /// `panic: boom`.
        reason: String,
    },
}

impl RunOutcome {
    /// The kind and reason of an attempt that did not finish its job:
    /// [`FailureKind::Handler`] for the handler's own retry or fail, whatever
    /// its words say; `None` when it finished.
    pub fn failure(&self) -> Option<(FailureKind, &str)> {
        match self {
            RunOutcome::Done => None,
            RunOutcome::Retry { reason, .. } | RunOutcome::Fail { reason } => {
                Some((FailureKind::Handler, reason))
            }
            RunOutcome::Crashed { kind, reason } => Some((*kind, reason)),
        }
    }
}

/// What stopped an attempt, holding what its reason says. The one place a
/// crash's [`FailureKind`] and its words are made, so they always agree
/// and read the same whichever path found the crash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Crash {
    /// The wall-clock limit.
    Timeout(Duration),
    /// The job's memory limit, in bytes.
    Memory(u64),
    /// The output limit, in bytes.
    Output(u64),
    /// The per-attempt dispatch limit.
    DispatchLimit(u32),
    /// The message the guest reported before trapping.
    Panic(String),
    /// The status the guest exited with.
    Exit(i32),
    /// The WebAssembly call stack overflowed.
    StackOverflow,
    /// Fuel ran out: the queue's budget, if it set one.
    Fuel(Option<u64>),
    /// Any other trap of guest code.
    Trap(Trap),
    /// A host call failed or refused the guest: the root cause.
    Host(String),
    /// The handler module is missing or cannot be loaded: why.
    Load(String),
}

impl Crash {
    /// Its fixed kind.
    pub fn kind(&self) -> FailureKind {
        match self {
            Crash::Timeout(_) => FailureKind::Timeout,
            Crash::Memory(_) => FailureKind::Memory,
            Crash::Output(_) => FailureKind::Output,
            Crash::DispatchLimit(_) => FailureKind::DispatchLimit,
            Crash::Panic(_) => FailureKind::Panic,
            Crash::Exit(_) => FailureKind::Exit,
            Crash::StackOverflow => FailureKind::StackOverflow,
            Crash::Fuel(_) => FailureKind::Fuel,
            Crash::Trap(_) => FailureKind::Trap,
            Crash::Host(_) => FailureKind::Host,
            Crash::Load(_) => FailureKind::Load,
        }
    }

    /// Its reason, leading with the cause: `timeout after 100ms`,
    /// `memory limit 64 MiB exceeded`, `panic: boom`, `trap: unreachable`.
    /// Text a guest gave is bounded ([`MAX_REASON_BYTES`]).
    pub fn reason(&self) -> String {
        match self {
            Crash::Timeout(limit) => format!("timeout after {}", Millis(*limit)),
            Crash::Memory(limit) => format!("memory limit {} exceeded", Bytes(*limit)),
            Crash::Output(limit) => format!("output limit {} exceeded", Bytes(*limit)),
            Crash::DispatchLimit(limit) => format!("dispatch limit {limit} per job exceeded"),
            Crash::Panic(message) => format!("panic: {message}"),
            Crash::Exit(status) => format!("exited with status {status}"),
            Crash::StackOverflow => "stack overflow".to_string(),
            Crash::Fuel(Some(fuel)) => format!("fuel budget {fuel} exhausted"),
            Crash::Fuel(None) => "fuel exhausted".to_string(),
            Crash::Trap(Trap::UnreachableCodeReached) => "trap: unreachable".to_string(),
            Crash::Trap(trap) => {
                let text = trap.to_string();
                format!("trap: {}", text.trim_start_matches("wasm trap: "))
            }
            Crash::Host(cause) => {
                host::truncate(format!("host call failed: {cause}"), MAX_REASON_BYTES)
            }
            Crash::Load(why) => why.clone(),
        }
    }
}

impl From<Crash> for RunOutcome {
    fn from(crash: Crash) -> Self {
        RunOutcome::Crashed {
            kind: crash.kind(),
            reason: crash.reason(),
        }
    }
}

/// The result of one attempt.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// How it ended.
    pub outcome: RunOutcome,
    /// Its log: log lines, stdout and stderr.
    pub log: String,
    /// Wall-clock time, instantiation included.
    pub elapsed: Duration,
}

impl Sandbox {
    /// Builds the engine, starts its epoch ticker, and links the host.
    pub fn new(config: &SandboxConfig) -> Result<Self, LoadError> {
        let engine_error = |e: wasmtime::Error| LoadError::Invalid {
            path: PathBuf::from("<engine>"),
            message: format!("cannot configure the WebAssembly engine: {e:#}"),
        };
        let n = config.max_instances.max(1);
        let engine = Engine::new(&engine_config(config)).map_err(engine_error)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(engine_error)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(engine_error)?;
        host::Handler::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s).map_err(engine_error)?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = ticker_stop.clone();
            std::thread::Builder::new()
                .name("epoch-ticker".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| engine_error(wasmtime::Error::new(e)))?;
        }
        let loader = compile::Loader::new(&engine, config)?;
        Ok(Sandbox {
            engine,
            linker,
            loader,
            fuel: config.fuel,
            ticker_stop,
            stats: Arc::new(SandboxStats::default()),
            http: Arc::default(),
            echo_logs: AtomicBool::new(false),
            room: Arc::new(tokio::sync::Semaphore::new(n as usize)),
        })
    }

    /// Handlers' HTTP requests so far, per queue.
    pub fn http_requests(&self) -> Vec<(crate::job::QueueName, outbound::meter::QueueRequests)> {
        self.http.snapshot()
    }

    /// Instances and their memory, now.
    pub fn stats(&self) -> SandboxSnapshot {
        SandboxSnapshot {
            instances_total: self.stats.instances.load(Ordering::Relaxed),
            instances_live: self.stats.live.load(Ordering::Relaxed),
            memory_bytes: self.stats.memory.load(Ordering::Relaxed),
        }
    }

    /// Whether guests' log lines also go to this process's log (with the
    /// job's id, queue and attempt), besides the job's own log. A worker
    /// turns this on; a one-shot `runtime dispatch` prints the job's log
    /// itself.
    pub fn echo_guest_logs(&self, on: bool) {
        self.echo_logs.store(on, Ordering::Relaxed);
    }

    /// Reads and compiles the module at `path` for a queue with `limits`
    /// (see [`compile`] for every step and bound).
    fn compile(&self, path: &Path, limits: &Limits) -> Result<Component, LoadError> {
        let bytes = self.loader.read(path)?;
        check_header(path, &bytes)?;
        self.loader
            .compile_blocking(path, std::borrow::Cow::Owned(bytes), limits)
    }

    /// Compiles `bytes`, named `path` in errors.
    fn compile_bytes(
        &self,
        path: &Path,
        bytes: &[u8],
        limits: &Limits,
    ) -> Result<Component, LoadError> {
        check_header(path, bytes)?;
        self.loader
            .compile_blocking(path, std::borrow::Cow::Borrowed(bytes), limits)
    }

    /// Loads a handler module: checks its size and structure against the
    /// sandbox's limits and `limits`, compiles it (or loads it from the
    /// cache), checks that it implements the handler world and that this
    /// host provides everything it imports. Blocks while compiling; see
    /// [`Sandbox::load_async`] for async callers.
    pub fn load(&self, path: &Path, limits: Limits) -> Result<Handler, LoadError> {
        let component = self.compile(path, &limits)?;
        self.prepare(path, &component, limits)
    }

    /// Like [`Sandbox::load`], for a module in memory (one published with
    /// `runtime deploy`); `name` stands for it in errors and logs.
    pub fn load_bytes(
        &self,
        name: &Path,
        bytes: &[u8],
        limits: Limits,
    ) -> Result<Handler, LoadError> {
        let component = self.compile_bytes(name, bytes, &limits)?;
        self.prepare(name, &component, limits)
    }

    fn prepare(
        &self,
        path: &Path,
        component: &Component,
        limits: Limits,
    ) -> Result<Handler, LoadError> {
        let wrong_shape = |e: wasmtime::Error| LoadError::WrongShape {
            path: path.to_path_buf(),
            message: format!("{e:#}"),
        };
        let instance_pre = self
            .linker
            .instantiate_pre(component)
            .map_err(wrong_shape)?;
        let pre = HandlerPre::new(instance_pre).map_err(wrong_shape)?;
        Ok(Handler {
            pre,
            path: path.to_path_buf(),
            limits,
        })
    }

    /// Compiles a module and lists its imports and exports, without
    /// requiring that it fits the world (see [`Sandbox::load`] for that)
    /// or any one queue's ceilings: only what the engine's pool holds.
    pub fn inspect(&self, path: &Path) -> Result<ModuleReport, LoadError> {
        let bytes = self.loader.read(path)?;
        let component = self.compile_bytes(path, &bytes, &self.loader.pool_ceilings())?;
        let ty = component.component_type();
        Ok(ModuleReport {
            shape: self.loader.shape(path, &bytes)?,
            imports: ty
                .imports(&self.engine)
                .map(|(n, _)| n.to_string())
                .collect(),
            exports: ty
                .exports(&self.engine)
                .map(|(n, _)| n.to_string())
                .collect(),
        })
    }

    /// A place in the pool for one attempt, waiting while every place is
    /// taken. The pool holds [`SandboxConfig::max_instances`] instances of
    /// the largest shape any queue allows, so an attempt holding a place
    /// never finds the pool full: a job waits for room instead of failing
    /// for lack of it.
    pub async fn room(&self) -> Room {
        // Acquiring fails only on a closed semaphore, and this one is
        // never closed.
        Room {
            _permit: self.room.clone().acquire_owned().await.ok(),
        }
    }

    /// Runs one attempt of `job` in a fresh instance of `handler`, once
    /// there is room for it in the pool, reaching only what `caps` grants.
    pub async fn run(&self, handler: &Handler, job: &JobRecord, caps: Capabilities) -> RunReport {
        let room = self.room().await;
        self.run_in(room, handler, job, caps).await
    }

    /// Like [`Sandbox::run`], in a place of the pool already taken.
    pub async fn run_in(
        &self,
        room: Room,
        handler: &Handler,
        job: &JobRecord,
        caps: Capabilities,
    ) -> RunReport {
        let _room = room;
        let started = Instant::now();
        let limits = &handler.limits;
        let deadline = started + limits.timeout;
        let output = JobOutput::new(limits.output);
        let grants = &caps.grants;
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(output.clone())
            .stderr(output.clone())
            .max_random_size(limits::MAX_RANDOM_BYTES);
        for (name, value) in grants.env.iter() {
            wasi.env(name, value);
        }
        for dir in grants.files.iter() {
            // Checked to be a directory when the config was read; one
            // removed since then leaves the guest without it, and its
            // reads fail as they would for any missing file.
            let _ = wasi.preopened_dir(&dir.host, &dir.guest, FsPerms::ReadOnly);
        }
        let wasi = wasi.build();
        let outbound = Outbound::new(
            grants.http.clone(),
            job.id.queue().clone(),
            output.clone(),
            deadline,
            self.http.clone(),
        );
        let mut table = wasmtime::component::ResourceTable::new();
        table.set_max_capacity(limits::MAX_HOST_RESOURCES);
        let state = HostState {
            wasi,
            table,
            http: {
                let mut http = WasiHttpCtx::new();
                http.set_field_size_limit(limits::MAX_HTTP_FIELDS_BYTES);
                http
            },
            outbound,
            output: output.clone(),
            limiter: MemoryLimiter::new(
                usize::try_from(limits.memory).unwrap_or(usize::MAX),
                Ceilings {
                    instances: limits.core_instances as usize,
                    memories: limits.memories as usize,
                    tables: limits.tables as usize,
                },
                self.stats.clone(),
            ),
            panic: None,
            caps,
            dispatch_limit: limits.dispatches,
            dispatch_calls: 0,
            dispatch_exceeded: false,
            follow_ups: host::FollowUps::new(job, limits),
            deadline,
            timed_out: false,
            echo: self
                .echo_logs
                .load(Ordering::Relaxed)
                .then(|| EchoContext::new(job, limits.output)),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        if self.fuel {
            // Without a budget of its own, a queue's guests run unmetered.
            let _ = store.set_fuel(limits.fuel.unwrap_or(u64::MAX));
        }
        store.set_epoch_deadline(ticks_until(store.data().deadline));
        store.epoch_deadline_callback(|mut ctx| {
            let deadline = ctx.data().deadline;
            if Instant::now() >= deadline {
                ctx.data_mut().timed_out = true;
                return Err(wasmtime::format_err!("deadline reached"));
            }
            Ok(UpdateDeadline::Yield(ticks_until(deadline)))
        });
        let wit_job = WitJob {
            id: job.id.to_string(),
            // Its own name: the one it dispatches to its own queue with.
            queue: job.id.queue().name().to_string(),
            payload: job.payload.as_str().to_string(),
            attempt: job.attempts,
            max_attempts: job.max_attempts,
        };
        let result = {
            let call = async {
                let instance = handler.pre.instantiate_async(&mut store).await?;
                instance.call_handle(&mut store, &wit_job).await
            };
            let mut call = std::pin::pin!(call);
            // Most attempts end within their first poll (epochs make guest
            // code yield only every few milliseconds): a timer only for one
            // that waits.
            match crate::sync::poll_once(call.as_mut()).await {
                Poll::Ready(result) => Ok(result),
                // Epochs stop guest code; this also stops a guest blocked
                // in a host call (a WASI sleep or poll), by dropping the
                // call, at the same deadline as the epochs'.
                Poll::Pending => tokio::time::timeout_at(deadline.into(), call).await,
            }
        };
        let outcome = match result {
            Ok(Ok(outcome)) => match outcome {
                WitOutcome::Done => RunOutcome::Done,
                WitOutcome::Retry(r) => RunOutcome::Retry {
                    reason: host::truncate(r.reason, MAX_REASON_BYTES),
                    delay: r.delay_ms.map(Duration::from_millis),
                },
                WitOutcome::Fail(reason) => RunOutcome::Fail {
                    reason: host::truncate(reason, MAX_REASON_BYTES),
                },
            },
            Ok(Err(error)) => crash(store.data(), limits, &error).into(),
            // The epoch check or this timeout, whichever stopped it first:
            // the same crash.
            Err(_elapsed) => Crash::Timeout(limits.timeout).into(),
        };
        drop(store);
        RunReport {
            outcome,
            log: output.text(),
            elapsed: started.elapsed(),
        }
    }
}

/// Epoch ticks until the next deadline check: at most [`CHECK_EVERY_TICKS`],
/// and no later than the deadline itself.
fn ticks_until(deadline: Instant) -> u64 {
    let left = deadline.saturating_duration_since(Instant::now());
    let ticks = u64::try_from(left.as_millis() / TICK.as_millis()).unwrap_or(u64::MAX);
    ticks.clamp(1, CHECK_EVERY_TICKS)
}

/// What stopped an attempt, in the order it is looked for: the limit it
/// hit if any, else the panic it reported, else the trap.
fn crash(state: &HostState, limits: &Limits, error: &wasmtime::Error) -> Crash {
    if state.timed_out {
        return Crash::Timeout(limits.timeout);
    }
    if state.limiter.exceeded {
        return Crash::Memory(limits.memory);
    }
    if state.output.exceeded() {
        return Crash::Output(limits.output as u64);
    }
    if state.dispatch_exceeded {
        return Crash::DispatchLimit(limits.dispatches);
    }
    if let Some(message) = &state.panic {
        return Crash::Panic(message.clone());
    }
    if let Some(exit) = error.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return Crash::Exit(exit.0);
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::StackOverflow) => Crash::StackOverflow,
        Some(Trap::OutOfFuel) => Crash::Fuel(limits.fuel),
        Some(trap) => Crash::Trap(*trap),
        // A host call failed or refused the guest (a WASI call over a host
        // bound, a store limit): the cause leads; the wasm backtrace that
        // wraps it says nothing the job's owner can act on.
        None => Crash::Host(error.root_cause().to_string()),
    }
}

/// The first eight bytes tell a component from a core module from garbage;
/// say which, since the compiler's own message for the latter two is terse.
fn check_header(path: &Path, bytes: &[u8]) -> Result<(), LoadError> {
    const MAGIC: &[u8] = b"\0asm";
    const CORE_VERSION: &[u8] = &[1, 0, 0, 0];
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        return Err(LoadError::Invalid {
            path: path.to_path_buf(),
            message: "not a WebAssembly file (it does not start with the \\0asm magic number)"
                .into(),
        });
    }
    if &bytes[4..8] == CORE_VERSION {
        return Err(LoadError::WrongShape {
            path: path.to_path_buf(),
            message: "it is a core WebAssembly module, not a component; build the handler with `cargo build --target wasm32-wasip2`, which produces a component".into(),
        });
    }
    Ok(())
}

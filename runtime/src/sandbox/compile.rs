//! Compiling handler modules within bounds, whoever asks (`runtime check`,
//! a job's first run, worker start, hot swap, `runtime deploy`).
//!
//! A module goes through, in order:
//!
//! 1. the size cap (`sandbox.max_module_mib`), before its bytes are read;
//! 2. the structural pass ([`Shape`]): nesting, flattened instances,
//!    memories, tables, function size, against the `[sandbox]` limits and
//!    the queue's ceilings; milliseconds, and nothing is compiled yet;
//! 3. the disk cache, by SHA-256: a hit skips compiling;
//! 4. a compile slot: at most [`MAX_CONCURRENT_COMPILES`] compiles run at
//!    once, on threads of their own, never on the async threads; a request
//!    for bytes already being compiled waits for that compile instead of
//!    starting a second one;
//! 5. the compile itself, either in this process or, when the sandbox is
//!    given a compiler program (the `runtime` binary always is: itself), in
//!    a child process `runtime __compile` under a memory limit
//!    (`RLIMIT_DATA`, `sandbox.compile_memory_mib` above what the engine
//!    maps at start) and killed at a wall-clock limit
//!    (`sandbox.compile_timeout_ms`). The child builds its engine from the
//!    same [`SandboxConfig`], so its artifact is what this engine would
//!    have compiled; this process only maps it in.
//!
//! The child holds the bound for anything the structural pass misses: a
//! compile bomb fails its load with the limit it hit, after at most the
//! timeout, while this process's memory stays where it was.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::cache::ModuleCache;
use super::shape::{self, Refusal, Shape, Structure};
use super::{Handler, Limits, Sandbox, SandboxConfig, check_header, engine_config};
use crate::error::LoadError;

/// Compiles running at once in one sandbox (one per process in the
/// `runtime` binary). Each takes up to [`MAX_COMPILE_THREADS`] cores and
/// `sandbox.compile_memory_mib`; two keep a worker's first loads and hot
/// swaps moving without letting a burst of new modules take the machine.
pub const MAX_CONCURRENT_COMPILES: usize = 2;

/// Compiles waiting for a slot, at most. Each holds its module's bytes
/// (up to `sandbox.max_module_mib`), so a burst of new modules (a worker
/// serving many queues whose files all changed, say) cannot pile them up
/// in memory; a load that finds the queue full fails with a reason that
/// says to try again, and the callers that retry (a job's next attempt,
/// the next hot-swap round) do.
pub const MAX_QUEUED_COMPILES: usize = 8;

/// Threads one compile in a child process uses at most. The compiler's
/// memory grows with the functions it compiles at once, so without a cap
/// a module that compiles within `sandbox.compile_memory_mib` on a small
/// machine would not on a large one.
pub const MAX_COMPILE_THREADS: usize = 4;

/// The argument that makes the `runtime` binary a compiler child: it reads
/// a module on stdin and writes the compiled artifact on stdout.
pub const CHILD_COMMAND: &str = "__compile";

/// Exit statuses of the compiler child.
const CHILD_INVALID: i32 = 1;
const CHILD_HOST_ERROR: i32 = 2;
const CHILD_OUT_OF_MEMORY: i32 = 3;

/// Most of the child's stderr kept for an error message.
const MAX_CHILD_MESSAGE: u64 = 16 * 1024;

type Sha = [u8; 32];

/// Who gets a compile's result: a blocked caller or an awaiting task.
type Reply = Box<dyn FnOnce(Result<Component, LoadError>) + Send>;

/// The compile slots and the compiles in flight, shared by the compile
/// threads.
pub(super) struct Loader {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Loader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader")
            .field("cache", &self.shared.cache)
            .field("compiler", &self.shared.config.compiler)
            .finish_non_exhaustive()
    }
}

struct Shared {
    engine: Engine,
    cache: Option<ModuleCache>,
    config: SandboxConfig,
    /// `config` as the compiler child reads it.
    config_json: String,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Compile threads alive.
    threads: usize,
    /// Of those, the ones compiling; the others are about to take a task.
    busy: usize,
    /// Compiles waiting for a slot.
    queue: VecDeque<Task>,
    /// Everyone waiting for the compile of some bytes, queued or running:
    /// the name each knows them by, and where the result goes.
    waiting: HashMap<Sha, Vec<(PathBuf, Reply)>>,
}

struct Task {
    sha: Sha,
    path: PathBuf,
    bytes: Vec<u8>,
}

impl Loader {
    pub(super) fn new(engine: &Engine, config: &SandboxConfig) -> Result<Self, LoadError> {
        let config_json = serde_json::to_string(config).map_err(|e| LoadError::Compiler {
            path: PathBuf::from("<engine>"),
            message: format!("cannot pass the sandbox settings to the compiler: {e}"),
        })?;
        Ok(Loader {
            shared: Arc::new(Shared {
                engine: engine.clone(),
                cache: config
                    .cache_dir
                    .as_deref()
                    .map(|dir| ModuleCache::new(dir, engine)),
                config: config.clone(),
                config_json,
                state: Mutex::new(State::default()),
            }),
        })
    }

    fn structure(&self) -> Structure {
        let c = &self.shared.config;
        Structure {
            max_depth: c.max_component_depth,
            max_component_instances: u64::from(c.max_component_instances),
            max_function: c.max_function_size,
        }
    }

    /// The ceilings that fit the engine's pool: what any queue may allow.
    pub(super) fn pool_ceilings(&self) -> Limits {
        let c = &self.shared.config;
        Limits {
            core_instances: c.max_core_instances,
            memories: c.max_memories,
            tables: c.max_tables,
            ..Limits::default()
        }
    }

    fn too_big(&self, path: &Path, size: u64) -> LoadError {
        LoadError::Refused {
            path: path.to_path_buf(),
            refusal: Refusal::Loader {
                fact: format!(
                    "is {size} bytes, over the limit of {}",
                    super::limits::Bytes(self.shared.config.max_module_size)
                ),
                setting: "max_module_mib",
            },
        }
    }

    /// The bytes of `path`, refused without reading them all when the
    /// file is over the size cap.
    pub(super) fn read(&self, path: &Path) -> Result<Vec<u8>, LoadError> {
        let read_error = |e: std::io::Error| LoadError::Read {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let max = self.shared.config.max_module_size;
        let file = std::fs::File::open(path).map_err(read_error)?;
        let len = file.metadata().map_err(read_error)?.len();
        if len > max {
            return Err(self.too_big(path, len));
        }
        let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        // The file may grow after the look at its length.
        file.take(max.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(read_error)?;
        if bytes.len() as u64 > max {
            return Err(self.too_big(path, bytes.len() as u64));
        }
        Ok(bytes)
    }

    /// The shape of the component in `bytes`, named `path` in errors.
    pub(super) fn shape(&self, path: &Path, bytes: &[u8]) -> Result<Shape, LoadError> {
        shape::measure(bytes, &self.structure()).map_err(|p| p.into_error(path))
    }

    /// Compiles `bytes` (named `path` in errors) for a queue with
    /// `ceilings`, blocking the calling thread until it is done.
    pub(super) fn compile_blocking(
        &self,
        path: &Path,
        bytes: Cow<'_, [u8]>,
        ceilings: &Limits,
    ) -> Result<Component, LoadError> {
        let (tx, rx) = mpsc::channel();
        self.submit(
            path,
            bytes,
            ceilings,
            Box::new(move |result| {
                let _ = tx.send(result);
            }),
        );
        rx.recv().unwrap_or_else(|_| {
            Err(LoadError::Compiler {
                path: path.to_path_buf(),
                message: "the compile thread ended without an answer".into(),
            })
        })
    }

    /// Checks `bytes` and hands `reply` the compiled component: at once
    /// when the checks refuse them or the cache has them, else when a
    /// compile slot has compiled them (on that slot's thread). The checks
    /// take time linear in the size: call it off the async threads.
    pub(super) fn submit(
        &self,
        path: &Path,
        bytes: Cow<'_, [u8]>,
        ceilings: &Limits,
        reply: Reply,
    ) {
        match self.check(path, &bytes, ceilings) {
            Err(e) => reply(Err(e)),
            Ok(Ready::Cached(component)) => reply(Ok(component)),
            Ok(Ready::Compile(sha)) => self.enqueue(path, sha, bytes, reply),
        }
    }

    fn check(&self, path: &Path, bytes: &[u8], ceilings: &Limits) -> Result<Ready, LoadError> {
        if bytes.len() as u64 > self.shared.config.max_module_size {
            return Err(self.too_big(path, bytes.len() as u64));
        }
        let shape = self.shape(path, bytes)?;
        shape
            .within(ceilings)
            .map_err(|refusal| LoadError::Refused {
                path: path.to_path_buf(),
                refusal,
            })?;
        let sha: Sha = Sha256::digest(bytes).into();
        if let Some(component) = self
            .shared
            .cache
            .as_ref()
            .and_then(|cache| cache.load(&self.shared.engine, &sha))
        {
            return Ok(Ready::Cached(component));
        }
        Ok(Ready::Compile(sha))
    }

    /// Joins the compile of the same bytes if one is in flight, else
    /// queues one, starting a compile thread if a slot is free.
    fn enqueue(&self, path: &Path, sha: Sha, bytes: Cow<'_, [u8]>, reply: Reply) {
        let mut state = self.shared.lock();
        if let Some(waiters) = state.waiting.get_mut(&sha) {
            waiters.push((path.to_path_buf(), reply));
            return;
        }
        // Tasks a thread is about to take have a slot already.
        let waiting = state.queue.len() - state.queue.len().min(state.threads - state.busy);
        if waiting >= MAX_QUEUED_COMPILES {
            drop(state);
            reply(Err(LoadError::Compiler {
                path: path.to_path_buf(),
                message: format!(
                    "{MAX_QUEUED_COMPILES} other modules are waiting to compile; try again later"
                ),
            }));
            return;
        }
        state.waiting.insert(sha, vec![(path.to_path_buf(), reply)]);
        state.queue.push_back(Task {
            sha,
            path: path.to_path_buf(),
            bytes: bytes.into_owned(),
        });
        if state.threads >= MAX_CONCURRENT_COMPILES {
            return;
        }
        state.threads += 1;
        let shared = self.shared.clone();
        let spawned = std::thread::Builder::new()
            .name("compile".into())
            .spawn(move || shared.serve());
        if let Err(e) = spawned {
            state.threads -= 1;
            if state.threads == 0 {
                // No thread left to take the queue: fail what waits.
                let tasks: Vec<Task> = state.queue.drain(..).collect();
                let waiters: Vec<_> = tasks
                    .iter()
                    .filter_map(|t| state.waiting.remove(&t.sha))
                    .flatten()
                    .collect();
                drop(state);
                for (path, reply) in waiters {
                    reply(Err(LoadError::Compiler {
                        path,
                        message: format!("cannot start a compile thread: {e}"),
                    }));
                }
            }
        }
    }
}

enum Ready {
    Cached(Component),
    Compile(Sha),
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        crate::sync::lock(&self.state)
    }

    /// A compile thread: takes queued compiles until there are none.
    fn serve(&self) {
        loop {
            let task = {
                let mut state = self.lock();
                match state.queue.pop_front() {
                    Some(task) => {
                        state.busy += 1;
                        task
                    }
                    None => {
                        state.threads -= 1;
                        return;
                    }
                }
            };
            // A panic in the compiler must not leave its waiters waiting.
            let result =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.compile(&task)))
                    .unwrap_or_else(|_| {
                        Err(LoadError::Compiler {
                            path: task.path.clone(),
                            message: "the compiler panicked".into(),
                        })
                    });
            let waiters = {
                let mut state = self.lock();
                state.busy -= 1;
                state.waiting.remove(&task.sha).unwrap_or_default()
            };
            for (path, reply) in waiters {
                reply(match &result {
                    Ok(component) => Ok(component.clone()),
                    Err(e) => Err(renamed(e, path)),
                });
            }
        }
    }

    fn compile(&self, task: &Task) -> Result<Component, LoadError> {
        // A compile of the same bytes may have finished between the
        // caller's look at the cache and this one's turn.
        if let Some(component) = self
            .cache
            .as_ref()
            .and_then(|cache| cache.load(&self.engine, &task.sha))
        {
            return Ok(component);
        }
        tracing::info!(
            file = %task.path.display(),
            bytes = task.bytes.len(),
            "compiling handler module"
        );
        let started = std::time::Instant::now();
        let component = match &self.config.compiler {
            None => {
                let component = Component::from_binary(&self.engine, &task.bytes)
                    .map_err(|e| invalid(&task.path, &e))?;
                if let (Some(cache), Ok(artifact)) = (&self.cache, component.serialize()) {
                    cache.store(&task.sha, &artifact);
                }
                component
            }
            Some(program) => {
                let artifact = self.compile_in_child(program, task)?;
                self.cache_and_map(task, artifact)?
            }
        };
        tracing::info!(
            file = %task.path.display(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
            "compiled handler module"
        );
        Ok(component)
    }

    /// Caches the child's artifact and maps it in: from the cache file
    /// when there is one (this process then holds the code once, as file
    /// pages, not twice), else copied from memory.
    fn cache_and_map(&self, task: &Task, artifact: Vec<u8>) -> Result<Component, LoadError> {
        if let Some(cache) = &self.cache {
            cache.store(&task.sha, &artifact);
            if let Some(component) = cache.load(&self.engine, &task.sha) {
                return Ok(component);
            }
        }
        // SAFETY: the artifact was produced by `Engine::precompile_component`
        // in a child process running this same program, with an engine
        // built from this sandbox's own settings: it is as trusted as a
        // compile in this process (the same code reads the same input).
        // wasmtime still checks its header, version and engine settings
        // before using it.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(&self.engine, &artifact) };
        component.map_err(|e| LoadError::Compiler {
            path: task.path.clone(),
            message: format!("the compiler's output does not load: {e:#}"),
        })
    }

    /// Runs `program __compile` on the task's bytes; its artifact. Kills
    /// it at the timeout; reads at most `compile_memory` bytes of output
    /// (more cannot come from a child held to that much memory).
    fn compile_in_child(&self, program: &Path, task: &Task) -> Result<Vec<u8>, LoadError> {
        let path = &task.path;
        let host_error = |message: String| LoadError::Compiler {
            path: path.clone(),
            message,
        };
        let mut child = Command::new(program)
            .arg(CHILD_COMMAND)
            .arg(&self.config_json)
            // Nothing of this process's environment (credentials in a
            // backend URL, say) is the compiler's business.
            .env_clear()
            // The compiler's thread pool.
            .env("RAYON_NUM_THREADS", compile_threads().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                host_error(format!(
                    "cannot start the compiler process {}: {e}",
                    program.display()
                ))
            })?;
        let (Some(mut stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(host_error("the compiler process has no pipes".into()));
        };
        let limit = self.config.compile_memory;
        let (artifact, message, timed_out, status) = std::thread::scope(|s| {
            s.spawn(move || {
                // A child that died early closes its end: nothing to do.
                let _ = stdin.write_all(&task.bytes);
            });
            let (tx, rx) = mpsc::channel();
            s.spawn(move || {
                let mut out = Vec::new();
                let read = stdout.take(limit.saturating_add(1)).read_to_end(&mut out);
                let _ = tx.send(read.map(|_| out));
            });
            let message = s.spawn(move || {
                let mut stderr = stderr;
                let mut text = Vec::new();
                let _ = (&mut stderr).take(MAX_CHILD_MESSAGE).read_to_end(&mut text);
                let _ = std::io::copy(&mut stderr, &mut std::io::sink());
                String::from_utf8_lossy(&text).trim().to_string()
            });
            let (artifact, timed_out) = match rx.recv_timeout(self.config.compile_timeout) {
                Ok(read) => (read.ok(), false),
                Err(_) => (None, true),
            };
            let oversized = artifact.as_ref().is_some_and(|a| a.len() as u64 > limit);
            if timed_out || oversized {
                let _ = child.kill();
            }
            let status = child.wait();
            let message = message.join().unwrap_or_default();
            (artifact.filter(|_| !oversized), message, timed_out, status)
        });
        let status = status.map_err(|e| host_error(format!("waiting for the compiler: {e}")))?;
        if timed_out {
            return Err(refused(
                path,
                Refusal::CompileTime {
                    limit: self.config.compile_timeout,
                },
            ));
        }
        let memory = || {
            refused(
                path,
                Refusal::CompileMemory {
                    limit: self.config.compile_memory,
                },
            )
        };
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(0), _) => artifact.ok_or_else(memory),
            (Some(CHILD_INVALID), _) => Err(LoadError::Invalid {
                path: path.clone(),
                message,
            }),
            (Some(CHILD_OUT_OF_MEMORY), _) => Err(memory()),
            (Some(code), _) => Err(host_error(format!(
                "the compiler process failed (exit status {code}): {message}"
            ))),
            (None, Some(SIGXCPU)) => Err(refused(
                path,
                Refusal::CompileTime {
                    limit: self.config.compile_timeout,
                },
            )),
            // Rust reports a failed allocation like this, then aborts.
            (None, Some(SIGABRT)) if message.contains("memory allocation of") => Err(memory()),
            (None, Some(SIGKILL)) => Err(host_error(
                "the compiler process was killed (by the system's out-of-memory killer?)".into(),
            )),
            (None, signal) => Err(LoadError::Invalid {
                path: path.clone(),
                message: format!(
                    "compiling it crashed the compiler (signal {}): {message}",
                    signal.unwrap_or(0)
                ),
            }),
        }
    }
}

const SIGABRT: i32 = 6;
const SIGKILL: i32 = 9;
const SIGXCPU: i32 = 24;

fn refused(path: &Path, refusal: Refusal) -> LoadError {
    LoadError::Refused {
        path: path.to_path_buf(),
        refusal,
    }
}

fn invalid(path: &Path, e: &wasmtime::Error) -> LoadError {
    LoadError::Invalid {
        path: path.to_path_buf(),
        message: format!("{e:#}"),
    }
}

/// `e` as it concerns another name of the same bytes.
fn renamed(e: &LoadError, path: PathBuf) -> LoadError {
    match e.clone() {
        LoadError::Read { message, .. } => LoadError::Read { path, message },
        LoadError::Invalid { message, .. } => LoadError::Invalid { path, message },
        LoadError::WrongShape { message, .. } => LoadError::WrongShape { path, message },
        LoadError::Refused { refusal, .. } => LoadError::Refused { path, refusal },
        LoadError::Compiler { message, .. } => LoadError::Compiler { path, message },
        other => other,
    }
}

impl Sandbox {
    /// The bytes of the module file `path`, refused unread when it is over
    /// `sandbox.max_module_mib`.
    pub fn read_module(&self, path: &Path) -> Result<Vec<u8>, LoadError> {
        self.loader.read(path)
    }

    /// Like [`Sandbox::load`], without blocking the calling async thread:
    /// reading, checking and preparing run on blocking threads, and the
    /// compile, if any, in a compile slot. A queue's first job awaits this,
    /// so the worker keeps claiming, acking and renewing leases meanwhile.
    pub async fn load_async(
        self: &Arc<Self>,
        path: &Path,
        limits: Limits,
    ) -> Result<Handler, LoadError> {
        let lost = |path: &Path| LoadError::Compiler {
            path: path.to_path_buf(),
            message: "the loading thread ended without an answer".into(),
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let submitted = {
            let (sandbox, path, limits) = (self.clone(), path.to_path_buf(), limits.clone());
            tokio::task::spawn_blocking(move || {
                let bytes = sandbox.loader.read(&path)?;
                check_header(&path, &bytes)?;
                let reply: Reply = Box::new(move |result| {
                    let _ = tx.send(result);
                });
                sandbox
                    .loader
                    .submit(&path, Cow::Owned(bytes), &limits, reply);
                Ok::<(), LoadError>(())
            })
        };
        submitted.await.map_err(|_| lost(path))??;
        let component = rx.await.map_err(|_| lost(path))??;
        let (sandbox, name) = (self.clone(), path.to_path_buf());
        tokio::task::spawn_blocking(move || sandbox.prepare(&name, &component, limits))
            .await
            .map_err(|_| lost(path))?
    }
}

/// The compiler child (`runtime __compile SETTINGS`): limits itself, builds
/// the engine from the settings, reads a module on stdin, writes the
/// artifact on stdout. Returns its exit status: 0, or 1 when the module
/// does not compile (the reason on stderr), 2 on a host problem, 3 when
/// compiling ran out of memory.
pub fn child_main(args: &[OsString]) -> u8 {
    match child(args) {
        Ok(()) => 0,
        Err((status, message)) => {
            let _ = writeln!(std::io::stderr(), "{message}");
            u8::try_from(status).unwrap_or(2)
        }
    }
}

fn child(args: &[OsString]) -> Result<(), (i32, String)> {
    use rustix::process::{Resource, Rlimit, Signal, setrlimit};
    let host = |what: &str, e: &dyn std::fmt::Display| (CHILD_HOST_ERROR, format!("{what}: {e}"));
    // Die with the thread that started us: a compile nobody waits for
    // must not run on. Best effort: the CPU limit below stops it anyway.
    let _ = rustix::process::set_parent_process_death_signal(Some(Signal::KILL));
    // A crash at the memory limit must not write gigabytes of core.
    let no_core = Rlimit {
        current: Some(0),
        maximum: Some(0),
    };
    let _ = setrlimit(Resource::Core, no_core);
    let [settings] = args else {
        return Err((
            CHILD_HOST_ERROR,
            format!("usage: runtime {CHILD_COMMAND} SETTINGS"),
        ));
    };
    let config: SandboxConfig = settings
        .to_str()
        .ok_or_else(|| host("reading the settings", &"not UTF-8"))
        .and_then(|s| serde_json::from_str(s).map_err(|e| host("reading the settings", &e)))?;
    let engine = Engine::new(&engine_config(&config))
        .map_err(|e| host("cannot configure the WebAssembly engine", &format!("{e:#}")))?;
    // The engine's pool is mapped already and counts as data; the budget
    // comes on top of it, so the limit is on what compiling adds.
    let data = mapped_data().ok_or_else(|| host("reading /proc/self/status", &"no VmData"))?;
    let memory = Rlimit {
        current: Some(data.saturating_add(config.compile_memory)),
        maximum: Some(data.saturating_add(config.compile_memory)),
    };
    setrlimit(Resource::Data, memory).map_err(|e| host("limiting memory", &e))?;
    // The parent kills at the wall-clock limit; this stops a child whose
    // parent is gone before the death signal was set up.
    let cpu = config
        .compile_timeout
        .as_secs()
        .saturating_add(1)
        .saturating_mul(compile_threads() as u64);
    let cpu = Rlimit {
        current: Some(cpu),
        maximum: Some(cpu.saturating_add(1)),
    };
    setrlimit(Resource::Cpu, cpu).map_err(|e| host("limiting CPU time", &e))?;
    let mut bytes = Vec::new();
    std::io::stdin()
        .take(config.max_module_size.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| host("reading the module", &e))?;
    if bytes.len() as u64 > config.max_module_size {
        return Err((CHILD_INVALID, "the module is over the size limit".into()));
    }
    let artifact = engine.precompile_component(&bytes).map_err(|e| {
        let message = format!("{e:#}");
        // wasmtime reports a refused mapping as ENOMEM ("os error 12").
        if message.contains("os error 12") {
            (CHILD_OUT_OF_MEMORY, message)
        } else {
            (CHILD_INVALID, message)
        }
    })?;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(&artifact)
        .and_then(|()| stdout.flush())
        .map_err(|e| host("writing the artifact", &e))
}

/// Threads a compile in a child process uses: the cores, at most
/// [`MAX_COMPILE_THREADS`].
fn compile_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_COMPILE_THREADS))
}

/// This process's private writable memory (`VmData`), bytes: what
/// `RLIMIT_DATA` counts.
fn mapped_data() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmData:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

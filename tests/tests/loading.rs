//! Loading handler modules is bounded: compile bombs built here (nesting,
//! instances multiplied through nested components, one huge function,
//! more than a queue's ceilings, and modules that pass every check but
//! would compile for minutes) fail their load with the limit they hit,
//! quickly and without the loading process's memory growing; real shapes
//! pass; and a worker keeps serving its other queues while one queue's
//! module compiles.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use runtime::config::Config;
use runtime::sandbox::{Limits, Sandbox, SandboxConfig};
use runtime::{LoadError, NewJob, Payload, QueueName, Runtime, WorkerConfig};
use runtime_tests::workers::{Env, eventually};
use runtime_tests::{TempDir, guests, runtime_bin};
use wasm_encoder::{
    Alias, CodeSection, Component, ComponentAliasSection, ComponentInstanceSection,
    ComponentOuterAliasKind, Function, FunctionSection, InstanceSection, Instruction,
    MemorySection, MemoryType, Module, ModuleArg, ModuleSection, NestedComponentSection, RefType,
    TableSection, TableType, TypeSection, ValType,
};

// ---- compile bombs and shapes, built with wasm-encoder

/// A core module that defines `memories` memories and `tables` tables.
fn module(memories: u32, tables: u32) -> Module {
    let mut m = Module::new();
    if tables > 0 {
        let mut section = TableSection::new();
        for _ in 0..tables {
            section.table(TableType {
                element_type: RefType::FUNCREF,
                table64: false,
                minimum: 1,
                maximum: None,
                shared: false,
            });
        }
        m.section(&section);
    }
    if memories > 0 {
        let mut section = MemorySection::new();
        for _ in 0..memories {
            section.memory(MemoryType {
                minimum: 1,
                maximum: None,
                memory64: false,
                shared: false,
                page_size_log2: None,
            });
        }
        m.section(&section);
    }
    m
}

/// Core instances of module 0 of the enclosing component.
fn core_instances(times: u32) -> InstanceSection {
    let mut section = InstanceSection::new();
    for _ in 0..times {
        section.instantiate(0, Vec::<(&str, ModuleArg)>::new());
    }
    section
}

/// Instances of component `index` of the enclosing component.
fn component_instances(index: u32, times: u32) -> ComponentInstanceSection {
    let mut section = ComponentInstanceSection::new();
    for _ in 0..times {
        section.instantiate(
            index,
            Vec::<(&str, wasm_encoder::ComponentExportKind, u32)>::new(),
        );
    }
    section
}

/// A few hundred bytes: component 0 instantiates a module with a memory
/// once; component k instantiates component k-1 `fan` times; the root
/// instantiates the last. `fan` to the power `levels` core instances once
/// flattened, with components nested only two deep.
fn multiplying_bomb(levels: u32, fan: u32) -> Vec<u8> {
    let mut root = Component::new();
    let mut first = Component::new();
    first.section(&ModuleSection(&module(1, 0)));
    first.section(&core_instances(1));
    root.section(&NestedComponentSection(&first));
    for level in 1..=levels {
        let mut c = Component::new();
        let mut alias = ComponentAliasSection::new();
        alias.alias(Alias::Outer {
            kind: ComponentOuterAliasKind::Component,
            count: 1,
            index: level - 1,
        });
        c.section(&alias);
        c.section(&component_instances(0, fan));
        root.section(&NestedComponentSection(&c));
    }
    root.section(&component_instances(levels, 1));
    root.finish()
}

/// Components nested `depth` deep, each instantiating the one inside it.
fn nesting_bomb(depth: u32) -> Vec<u8> {
    let mut c = Component::new();
    c.section(&ModuleSection(&module(0, 0)));
    c.section(&core_instances(1));
    for _ in 0..depth {
        let mut outer = Component::new();
        outer.section(&NestedComponentSection(&c));
        outer.section(&component_instances(0, 1));
        c = outer;
    }
    c.finish()
}

/// A function of about `bytes` bytes of straight-line code: the
/// compiler's time and memory grow with it.
fn straight_line(bytes: usize) -> Function {
    let mut f = Function::new([]);
    // 7 bytes per round.
    for _ in 0..bytes / 7 {
        f.instruction(&Instruction::LocalGet(0));
        f.instruction(&Instruction::I32Const(1));
        f.instruction(&Instruction::I32Add);
        f.instruction(&Instruction::LocalSet(0));
    }
    f.instruction(&Instruction::LocalGet(0));
    f.instruction(&Instruction::End);
    f
}

/// A component whose one module has `count` functions of about `bytes`
/// bytes each.
fn functions(count: u32, bytes: usize) -> Vec<u8> {
    let mut m = Module::new();
    let mut types = TypeSection::new();
    types.ty().function([ValType::I32], [ValType::I32]);
    m.section(&types);
    let mut funcs = FunctionSection::new();
    for _ in 0..count {
        funcs.function(0);
    }
    m.section(&funcs);
    let body = straight_line(bytes);
    let mut code = CodeSection::new();
    for _ in 0..count {
        code.function(&body);
    }
    m.section(&code);
    let mut c = Component::new();
    c.section(&ModuleSection(&m));
    c.section(&core_instances(1));
    c.finish()
}

/// A component with `instances` core instances after flattening, of which
/// `memories` define a memory and `tables` others a table (a module has
/// at most one of each, as toolchains build them). Half of the empty
/// instances come from a nested component instantiated twice, so the
/// counts hold only if flattening is counted.
fn shaped(instances: u32, memories: u32, tables: u32) -> Vec<u8> {
    let empty = instances - memories - tables;
    let mut root = Component::new();
    root.section(&ModuleSection(&module(0, 0)));
    root.section(&ModuleSection(&module(1, 0)));
    root.section(&ModuleSection(&module(0, 1)));
    let mut nested = Component::new();
    nested.section(&ModuleSection(&module(0, 0)));
    nested.section(&core_instances(empty / 4));
    root.section(&NestedComponentSection(&nested));
    let mut section = InstanceSection::new();
    let counts = [(0, empty - 2 * (empty / 4)), (1, memories), (2, tables)];
    for (module, times) in counts {
        for _ in 0..times {
            section.instantiate(module, Vec::<(&str, ModuleArg)>::new());
        }
    }
    root.section(&section);
    root.section(&component_instances(0, 2));
    root.finish()
}

// ---- helpers

fn write(dir: &TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).expect("write module");
    path
}

/// The peak resident memory (`VmHWM`) of process `pid`, bytes.
fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

const MIB: u64 = 1 << 20;

/// Loads `bytes` (as `name`) with the default limits both in this process
/// (a library user's in-process compile) and with `runtime check` (its
/// peak memory sampled: other tests share this process's); both must be
/// refused with a reason ending in `reason`, fast, the latter within a
/// small memory.
fn refused_before_compiling(name: &str, bytes: &[u8], reason: &str) {
    let dir = TempDir::new("loading");
    let path = write(&dir, name, bytes);
    let sandbox = Sandbox::new(&SandboxConfig::default()).expect("sandbox");
    let started = Instant::now();
    let error = sandbox.load(&path, Limits::default()).expect_err("refused");
    let took = started.elapsed();
    assert!(error.to_string().ends_with(reason), "{error}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    let file = path.display().to_string();
    let (code, stderr, took, peak) = run_sampled(dir.path(), &["check", &file]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.trim_end().ends_with(reason), "{stderr}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(peak < 100 * MIB, "peak RSS {} MiB", peak / MIB);
}

/// Runs `runtime ARGS` to its end, sampling its peak memory as it runs;
/// exit status, stderr, time taken, peak memory of that process.
fn run_sampled(cache: &Path, args: &[&str]) -> (i32, String, Duration, u64) {
    let started = Instant::now();
    let mut child = Command::new(runtime_bin())
        .args(args)
        .env("RUNTIME_CACHE_DIR", cache)
        .env_remove("RUNTIME_CONFIG")
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn runtime");
    let mut peak = 0;
    loop {
        // VmHWM only grows; the last reading before exit is the peak.
        if let Some(now) = peak_rss(child.id()) {
            peak = peak.max(now);
        }
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let out = child.wait_with_output().expect("wait");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        started.elapsed(),
        peak,
    )
}

/// A payload the noop handler takes.
const ORDER: &str = r#"{"id":1,"customer":"c","items":[{"sku":"s","qty":1}]}"#;

/// Compiles `module` into `cache` with the default limits, so a test with
/// a tight compile time limit meant for a bomb does not depend on how
/// busy the machine is when its real handler compiles.
fn precompile(cache: &Path, module: &str) {
    let (code, stderr, _, _) = run_sampled(cache, &["check", module]);
    assert_eq!(code, 0, "{stderr}");
}

/// A config file in `dir`; its path as an argument.
fn config(dir: &TempDir, text: &str) -> String {
    write(dir, "runtime.toml", text.as_bytes())
        .display()
        .to_string()
}

/// A module that passes every structural check but takes long to compile
/// (about 29 MB of code in small functions: 35 to 120 s on two busy
/// cores, several seconds on the fastest machine): only the compile time
/// limit stops it.
fn slow_to_compile() -> Vec<u8> {
    functions(7000, 4200)
}

// ---- refused before compiling, in this process

#[test]
fn instances_multiplied_through_nested_components_are_refused_before_compiling() {
    // 669 bytes, 2^24 core instances once flattened: before these checks,
    // 50 s and 4.6 GB to fail.
    let bomb = multiplying_bomb(24, 2);
    assert!(bomb.len() < 1000, "{} bytes", bomb.len());
    refused_before_compiling(
        "bomb.wasm",
        &bomb,
        "bomb.wasm creates more than 1000 component instances (sandbox.max_component_instances)",
    );
}

#[test]
fn core_instances_are_counted_after_flattening() {
    // Within the component-instance limit (511 here), the core instances
    // multiply: 2^8 = 256 from 10 components.
    let dir = TempDir::new("loading");
    let path = write(&dir, "wide.wasm", &multiplying_bomb(8, 2));
    let sandbox = Sandbox::new(&SandboxConfig::default()).expect("sandbox");
    let error = sandbox.load(&path, Limits::default()).expect_err("refused");
    assert!(
        error
            .to_string()
            .ends_with("needs 256 core instances; the limit is 32 (max_core_instances)"),
        "{error}"
    );
}

#[test]
fn deeply_nested_components_are_refused_before_compiling() {
    // 179 KB nested 10,000 deep: before, 7.5 s and 2.4 GB; 50,000 deep
    // took more than 8 GB.
    refused_before_compiling(
        "bomb.wasm",
        &nesting_bomb(10_000),
        "bomb.wasm nests components more than 16 deep (sandbox.max_component_depth)",
    );
}

#[test]
fn one_huge_function_is_refused_before_compiling() {
    // 7 MB of one function: before, 89 s and 3.8 GB.
    refused_before_compiling(
        "bomb.wasm",
        &functions(1, 7_000_000),
        "bomb.wasm has a function of 7000004 bytes, over the limit of 1 MiB (sandbox.max_function_kib)",
    );
}

#[test]
fn a_module_over_the_size_cap_is_refused_unread() {
    let dir = TempDir::new("loading");
    let path = write(&dir, "big.wasm", &functions(3, 500_000));
    let config = SandboxConfig {
        max_module_size: MIB,
        ..SandboxConfig::default()
    };
    let sandbox = Sandbox::new(&config).expect("sandbox");
    let error = sandbox.load(&path, Limits::default()).expect_err("refused");
    let size = std::fs::metadata(&path).expect("stat").len();
    assert!(
        error.to_string().ends_with(&format!(
            "big.wasm is {size} bytes, over the limit of 1 MiB (sandbox.max_module_mib)"
        )),
        "{error}"
    );
    // The same through `runtime deploy`'s reading.
    let error = sandbox.read_module(&path).expect_err("refused");
    assert!(
        error.to_string().contains("sandbox.max_module_mib"),
        "{error}"
    );
}

#[test]
fn a_module_over_its_queues_ceilings_is_refused_naming_the_queue() {
    let dir = TempDir::new("loading");
    // 14 core instances: the shape of a componentize-py handler.
    let module = write(&dir, "python_like.wasm", &shaped(14, 1, 2));
    let config = Config::parse(&format!(
        "[queues.small]\nmodule = {module:?}\nmax_core_instances = 8\n\
         [queues.roomy]\nmodule = {module:?}\n\
         [queues.few-tables]\nmodule = {module:?}\nmax_tables = 1\n",
    ))
    .expect("config");
    let rt = Runtime::in_memory(dir.path().to_path_buf(), config).expect("runtime");
    let error = rt
        .registry()
        .handler(&QueueName::new("small").expect("name"))
        .expect_err("over the ceiling");
    assert!(
        error.to_string().ends_with(
            "python_like.wasm needs 14 core instances; queue small allows 8 (max_core_instances)"
        ),
        "{error}"
    );
    let error = rt
        .registry()
        .handler(&QueueName::new("few-tables").expect("name"))
        .expect_err("over the ceiling");
    assert!(
        error
            .to_string()
            .ends_with("needs 2 tables; queue few-tables allows 1 (max_tables)"),
        "{error}"
    );
    // Within the defaults it is compiled, and fails only for not being a
    // handler.
    let error = rt
        .registry()
        .handler(&QueueName::new("roomy").expect("name"))
        .expect_err("not a handler");
    assert!(matches!(error, LoadError::WrongShape { .. }), "{error}");
    // Memories multiply too: 6 modules with a memory, over the default 4.
    let path = write(&dir, "memories.wasm", &shaped(10, 6, 1));
    let error = rt
        .registry()
        .sandbox()
        .load(&path, Limits::default())
        .expect_err("over the ceiling");
    assert!(
        error
            .to_string()
            .ends_with("needs 6 memories; the limit is 4 (max_memories)"),
        "{error}"
    );
}

#[test]
fn real_toolchain_shapes_are_measured_as_the_pool_counts_them_and_pass() {
    let sandbox = Sandbox::new(&SandboxConfig::default()).expect("sandbox");
    // A Rust handler, as built: 3 core instances, 1 memory, 2 tables.
    let noop = PathBuf::from(guests::DIR).join("noop_job.wasm");
    let report = sandbox.inspect(&noop).expect("inspect");
    let s = report.shape;
    assert_eq!((s.core_instances, s.memories, s.tables), (3, 1, 2));
    sandbox.load(&noop, Limits::default()).expect("loads");
    // The shapes of QuickJS (8/2/2) and componentize-py (14/1/2) handlers
    // pass the default ceilings and compile.
    let dir = TempDir::new("loading");
    for (instances, memories, tables) in [(8, 2, 2), (14, 1, 2)] {
        let path = write(&dir, "shape.wasm", &shaped(instances, memories, tables));
        let report = sandbox.inspect(&path).expect("compiles");
        let s = report.shape;
        assert_eq!(
            (s.core_instances, s.memories, s.tables),
            (u64::from(instances), u64::from(memories), u64::from(tables))
        );
        let error = sandbox
            .load(&path, Limits::default())
            .expect_err("not a handler");
        assert!(matches!(error, LoadError::WrongShape { .. }), "{error}");
    }
}

// ---- bounded compiles, in a child process

#[test]
fn a_module_that_passes_the_checks_but_compiles_for_minutes_is_stopped_at_the_timeout() {
    let dir = TempDir::new("loading");
    let bomb = write(&dir, "slow.wasm", &slow_to_compile());
    let config = config(&dir, "[sandbox]\ncompile_timeout_ms = 3000\n");
    let (code, stderr, took, peak) = run_sampled(
        dir.path(),
        &["--config", &config, "check", &bomb.display().to_string()],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("slow.wasm took longer than 3s to compile (sandbox.compile_timeout_ms)"),
        "{stderr}"
    );
    assert!(took < Duration::from_secs(30), "{took:?}");
    // It holds the module's bytes twice at most; the compiler's memory is
    // the child's.
    assert!(peak < 200 * MIB, "peak RSS {} MiB", peak / MIB);
}

#[test]
fn a_compile_that_needs_more_memory_than_allowed_is_stopped_at_the_limit() {
    let dir = TempDir::new("loading");
    // One function just under 1 MiB takes the compiler about 500 MB.
    let bomb = write(&dir, "greedy.wasm", &functions(1, 1_000_000));
    let config = config(&dir, "[sandbox]\ncompile_memory_mib = 64\n");
    let (code, stderr, took, peak) = run_sampled(
        dir.path(),
        &["--config", &config, "check", &bomb.display().to_string()],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(
            "greedy.wasm needed more than 64 MiB of memory to compile (sandbox.compile_memory_mib)"
        ),
        "{stderr}"
    );
    assert!(took < Duration::from_secs(60), "{took:?}");
    assert!(peak < 200 * MIB, "peak RSS {} MiB", peak / MIB);
}

#[test]
fn library_users_can_compile_in_the_child_process_too() {
    let dir = TempDir::new("loading");
    let bomb = write(&dir, "slow.wasm", &slow_to_compile());
    let mut config = Config::parse(&format!(
        "cache_dir = {:?}\n[sandbox]\ncompile_timeout_ms = 2000\n[queues.slow]\nmodule = {bomb:?}\n",
        dir.path().join("cache")
    ))
    .expect("config");
    config.sandbox.compiler = Some(runtime_bin());
    let rt = Runtime::in_memory(PathBuf::from(guests::DIR), config).expect("runtime");
    let started = Instant::now();
    let error = rt
        .registry()
        .handler(&QueueName::new("slow").expect("name"))
        .expect_err("too slow");
    assert!(
        error
            .to_string()
            .ends_with("took longer than 2s to compile (sandbox.compile_timeout_ms)"),
        "{error}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    // A real handler compiles in the child (with the default time limit:
    // this machine is busy with other tests), is cached, and runs.
    let mut config =
        Config::parse(&format!("cache_dir = {:?}\n", dir.path().join("cache"))).expect("config");
    config.sandbox.compiler = Some(runtime_bin());
    let rt = Runtime::in_memory(PathBuf::from(guests::DIR), config).expect("runtime");
    let noop = QueueName::new(guests::NOOP).expect("name");
    rt.registry().handler(&noop).expect("noop loads");
    let tokio = tokio::runtime::Runtime::new().expect("tokio");
    let stats = tokio.block_on(async {
        let job = NewJob::new(noop.clone(), Payload::new(ORDER).expect("payload"));
        rt.dispatch(job).await.expect("dispatch");
        let worker = rt.worker(WorkerConfig {
            drain: true,
            ..WorkerConfig::default()
        });
        worker.run(std::future::pending()).await.expect("worker")
    });
    assert_eq!(stats.done, 1);
    let entries: Vec<PathBuf> = std::fs::read_dir(dir.path().join("cache"))
        .expect("cache dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    let cached = entries
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .count();
    assert_eq!(cached, 1, "the child's artifact is cached: {entries:?}");
}

#[test]
fn compiles_wait_for_two_slots_and_a_burst_beyond_the_queue_is_turned_away() {
    let dir = TempDir::new("loading");
    let config = SandboxConfig {
        compiler: Some(runtime_bin()),
        compile_timeout: Duration::from_secs(2),
        ..SandboxConfig::default()
    };
    let sandbox = Sandbox::new(&config).expect("sandbox");
    // Eleven different slow modules (16 MB each: seconds to compile on
    // any machine) at once: two compile, eight wait, one is turned away.
    let paths: Vec<PathBuf> = (0..11)
        .map(|i| write(&dir, &format!("slow{i}.wasm"), &functions(3800 + i, 4200)))
        .collect();
    let errors: Vec<String> = std::thread::scope(|s| {
        let loads: Vec<_> = paths
            .iter()
            .map(|path| s.spawn(|| sandbox.load(path, Limits::default())))
            .collect();
        loads
            .into_iter()
            .map(|l| match l.join().expect("load thread") {
                Ok(_) => "loaded".to_string(),
                Err(e) => e.to_string(),
            })
            .collect()
    });
    let turned_away = errors
        .iter()
        .filter(|e| e.ends_with("8 other modules are waiting to compile; try again later"))
        .count();
    let timed_out = errors
        .iter()
        .filter(|e| e.ends_with("took longer than 2s to compile (sandbox.compile_timeout_ms)"))
        .count();
    assert_eq!((turned_away, timed_out), (1, 10), "{errors:#?}");
}

// ---- a worker serving two queues while one queue's module compiles

#[test]
fn a_worker_keeps_serving_its_other_queues_while_a_compile_bomb_loads() {
    let env = Env::new();
    let dir = TempDir::new("loading");
    let bomb = dir.path().join("bomb.wasm");
    // Two queues share the bomb (one compile for both); noop is served
    // beside them.
    precompile(env.cache.path(), &format!("{}/noop_job.wasm", guests::DIR));
    let config = config(
        &dir,
        &format!(
            "[sandbox]\ncompile_timeout_ms = 5000\n\
             [queues.bomb-a]\nmodule = {bomb:?}\n[queues.bomb-b]\nmodule = {bomb:?}\n"
        ),
    );
    let w = env.worker(&[
        "--config",
        &config,
        guests::NOOP,
        "bomb-a",
        "bomb-b",
        "--lease",
        "2s",
        "--heartbeat",
        "300ms",
    ]);
    // The bomb arrives after start, so its first job loads it.
    let tmp = dir.path().join("bomb.tmp");
    std::fs::write(&tmp, slow_to_compile()).expect("write bomb");
    std::fs::rename(&tmp, &bomb).expect("rename bomb");
    let a = env.dispatch("bomb-a", "{}", &["--max-attempts", "1"]);
    let b = env.dispatch("bomb-b", "{}", &["--max-attempts", "1"]);
    let state = |id: &str| {
        env.show(id)["state"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    eventually(
        Duration::from_secs(20),
        "both bomb jobs to be claimed",
        || state(&a) == "running" && state(&b) == "running",
    );
    // While it compiles: other jobs are claimed, run and acked...
    let jobs: String = (0..20).map(|_| format!("{ORDER}\n")).collect();
    env.dispatch_file(guests::NOOP, &jobs, &[]).expect_code(0);
    eventually(Duration::from_secs(20), "the noop jobs to be done", || {
        env.count(guests::NOOP, "done") == 20
    });
    // ...and the worker keeps beating.
    let beat = || {
        env.run(&["workers", "--json"]).json()[0]["beat_at"]
            .as_u64()
            .unwrap_or_default()
    };
    let first = beat();
    eventually(Duration::from_secs(10), "another heartbeat", || {
        beat() > first
    });
    assert_eq!(
        (state(&a), state(&b)),
        ("running".to_string(), "running".to_string()),
        "the bomb finished loading before the other jobs were done: the test proves nothing\n{}",
        w.log()
    );
    // Then the bomb's jobs fail with the limit it hit (their leases, 2 s,
    // were renewed all along: a lapse would read `worker lost`).
    eventually(Duration::from_secs(60), "the bomb jobs to fail", || {
        state(&a) == "failed" && state(&b) == "failed"
    });
    for id in [&a, &b] {
        let error = env.show(id)["error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            error
                .ends_with("bomb.wasm took longer than 5s to compile (sandbox.compile_timeout_ms)"),
            "{id}: {error}"
        );
    }
    let log = w.log();
    let compiles = log
        .lines()
        .filter(|l| l.contains("compiling handler module") && l.contains("bomb.wasm"))
        .count();
    assert_eq!(compiles, 1, "one compile for both queues:\n{log}");
    // Later jobs fail at once with the same reason, without compiling.
    let c = env.dispatch("bomb-a", "{}", &["--max-attempts", "1"]);
    eventually(Duration::from_secs(20), "the next bomb job to fail", || {
        state(&c) == "failed"
    });
    assert!(
        env.show(&c)["error"]
            .as_str()
            .unwrap_or_default()
            .contains("sandbox.compile_timeout_ms")
    );
    assert_eq!(
        w.log()
            .lines()
            .filter(|l| l.contains("compiling handler module") && l.contains("bomb.wasm"))
            .count(),
        1
    );
    let peak = peak_rss(w.pid()).expect("worker alive");
    assert!(peak < 200 * MIB, "worker peak RSS {} MiB", peak / MIB);
}

// ---- every way a module gets loaded: sync dispatch, worker start, hot
// swap, deploy

#[test]
fn sync_dispatch_refuses_a_bomb_before_running_anything() {
    let dir = TempDir::new("loading");
    write(&dir, "bomb_job.wasm", &nesting_bomb(10_000));
    let handlers = dir.path().display().to_string();
    let (code, stderr, took, peak) = run_sampled(
        dir.path(),
        &["--handlers", &handlers, "dispatch", "bomb", "{}"],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("bomb_job.wasm nests components more than 16 deep"),
        "{stderr}"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(peak < 200 * MIB, "peak RSS {} MiB", peak / MIB);
}

#[test]
fn worker_start_hot_swap_and_deploy_refuse_bombs_and_keep_serving() {
    let mut env = Env::new();
    let dir = TempDir::new("loading");
    env.handlers = dir.path().display().to_string();
    let noop = format!("{}/noop_job.wasm", guests::DIR);
    precompile(env.cache.path(), &noop);
    write(&dir, "swap_job.wasm", &std::fs::read(&noop).expect("noop"));
    write(&dir, "slow_job.wasm", &slow_to_compile());
    let config = config(&dir, "[sandbox]\ncompile_timeout_ms = 3000\n");
    // Start: the slow module is refused at its limit, and the worker
    // starts anyway, serving the other queue.
    let started = Instant::now();
    let w = env.worker(&["--config", &config, "swap", "slow"]);
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(
        w.log()
            .contains("slow_job.wasm took longer than 3s to compile (sandbox.compile_timeout_ms)"),
        "{}",
        w.log()
    );
    env.dispatch("swap", ORDER, &["--max-attempts", "1"]);
    eventually(Duration::from_secs(20), "the first job to be done", || {
        env.count("swap", "done") == 1
    });
    // Hot swap: a bomb renamed into place is refused, logged with its
    // reason, and the version loaded before keeps serving.
    let tmp = write(&dir, "swap.tmp", &multiplying_bomb(24, 2));
    std::fs::rename(&tmp, dir.path().join("swap_job.wasm")).expect("rename");
    w.wait_for_log("sandbox.max_component_instances", Duration::from_secs(20));
    assert!(
        w.log().contains("new handler module cannot be loaded"),
        "{}",
        w.log()
    );
    env.dispatch("swap", ORDER, &["--max-attempts", "1"]);
    eventually(Duration::from_secs(20), "the next job to be done", || {
        env.count("swap", "done") == 2
    });
    // Deploy: checked first, with the same bounds; nothing is published.
    let huge = write(&dir, "huge.wasm", &functions(1, 2_000_000));
    let refused = env.run(&[
        "--config",
        &config,
        "deploy",
        "swap",
        &huge.display().to_string(),
    ]);
    refused.expect_code(2);
    assert!(
        refused
            .stderr()
            .contains("huge.wasm has a function of 2000002 bytes, over the limit of 1 MiB"),
        "{}",
        refused.stderr()
    );
    let slow = dir.path().join("slow_job.wasm").display().to_string();
    let started = Instant::now();
    let refused = env.run(&["--config", &config, "deploy", "swap", &slow]);
    refused.expect_code(2);
    assert!(
        refused.stderr().contains("took longer than 3s to compile"),
        "{}",
        refused.stderr()
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    env.dispatch("swap", ORDER, &["--max-attempts", "1"]);
    eventually(Duration::from_secs(20), "a job after the deploys", || {
        env.count("swap", "done") == 3
    });
    assert!(
        !w.log().contains("published module installed"),
        "{}",
        w.log()
    );
}

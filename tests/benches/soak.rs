//! Soak (a benchmark-style run, not a test): `cargo bench -p runtime-tests
//! --bench soak`.
//!
//! (f) One `runtime worker` process (concurrency 64) runs `SOAK_JOBS`
//!     trivial `noop` jobs (default 1,000,000) from a private Redis, fed in
//!     waves of 100,000 while it runs. Its RSS is sampled every 250 ms:
//!     start (before the first job), after the first wave (warm), peak and
//!     end. Flat means end ≈ warm: no per-job leak.
//! (g) The same worker with 1,000 jobs in flight at once (`nap` jobs that
//!     sleep 3 s, concurrency 1,000): its RSS idle, then with all 1,000
//!     instances alive.
//!
//! `RUNTIME_BIN=PATH` runs the same soak with another build's binary (for
//! a before/after in one session).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use runtime_tests::workers::Env;
use runtime_tests::{guests, runtime_bin};

const ORDER: &str = r#"{"id":42,"customer":"ada@example.com","items":[{"sku":"A-1","qty":2},{"sku":"B-7","qty":1}]}"#;
const WAVE: usize = 100_000;

/// `runtime worker ARGS` with the soak's config, logging only warnings (a
/// line per job would be measured too).
fn start_worker(env: &Env, args: &[&str]) -> Child {
    Command::new(runtime_bin())
        .args(["--backend", &env.url(), "--handlers", &env.handlers])
        .args([
            "--config",
            &env.cache.path().join("soak.toml").display().to_string(),
        ])
        .arg("worker")
        .args(args)
        .env("RUNTIME_CACHE_DIR", env.cache.path())
        .env("RUNTIME_LOG", "warn")
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null())
        .spawn()
        .expect("start worker")
}

/// A process's resident set size in MiB.
fn rss_mib(pid: u32) -> f64 {
    runtime_tests::rss_bytes(pid) as f64 / (1024.0 * 1024.0)
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

fn main() {
    let n = runtime_tests::job_count("SOAK_JOBS", 1_000_000);
    let env = Env::new();
    let admin = |args: &[&str]| {
        env.run(args).expect_code(0);
    };
    std::fs::write(
        env.cache.path().join("soak.toml"),
        "[sandbox]\nmax_instances = 1000\n",
    )
    .expect("write config");
    let wave = env.cache.path().join("wave.jsonl");
    std::fs::write(&wave, format!("{ORDER}\n").repeat(WAVE.min(n))).expect("write jobs");
    let wave = wave.display().to_string();
    // Warm the module cache.
    admin(&["dispatch", guests::NOOP, ORDER]);
    admin(&["worker", guests::NOOP, "--drain"]);
    let base_done = env.count(guests::NOOP, "done");

    // (f)
    let worker = start_worker(&env, &[guests::NOOP, "--concurrency", "64"]);
    let pid = worker.id();
    std::thread::sleep(Duration::from_millis(500));
    let start = rss_mib(pid);
    let mut samples: Vec<(f64, u64, f64)> = Vec::new();
    let mut warm = None;
    let waves = n.div_ceil(WAVE);
    let started = std::thread::scope(|scope| {
        scope.spawn(|| {
            for _ in 0..waves {
                admin(&["dispatch", guests::NOOP, "--file", &wave]);
            }
        });
        let started = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(250));
            let done = env.count(guests::NOOP, "done") - base_done;
            let rss = rss_mib(pid);
            samples.push((started.elapsed().as_secs_f64(), done, rss));
            if warm.is_none() && done >= WAVE as u64 {
                warm = Some(rss);
            }
            if done >= (waves * WAVE) as u64 {
                break;
            }
        }
        started
    });
    let elapsed = started.elapsed().as_secs_f64();
    let end = rss_mib(pid);
    stop(worker);
    let peak = samples.iter().map(|s| s.2).fold(start, f64::max);
    let warm = warm.unwrap_or(end);
    let done = samples.last().map_or(0, |s| s.1);
    println!(
        "(f) soak: {done} jobs in {elapsed:.1} s ({:.0} jobs/s) by one worker, concurrency 64",
        done as f64 / elapsed
    );
    println!(
        "    worker RSS: start {start:.1} MiB, after the first {WAVE} jobs {warm:.1} MiB, peak {peak:.1} MiB, end {end:.1} MiB (end/warm {:.3})",
        end / warm
    );
    let step = (samples.len() / 10).max(1);
    let trace: Vec<String> = samples
        .iter()
        .step_by(step)
        .map(|(t, d, r)| format!("{t:.0}s:{}k:{r:.1}", d / 1000))
        .collect();
    println!("    samples (time:jobs done:RSS MiB): {}", trace.join(" "));

    // (g)
    let worker = start_worker(&env, &[guests::NAP, "--concurrency", "1000"]);
    let pid = worker.id();
    std::thread::sleep(Duration::from_millis(500));
    let idle = rss_mib(pid);
    let naps = env.cache.path().join("naps.jsonl");
    std::fs::write(&naps, "{\"ms\":3000}\n".repeat(1000)).expect("write naps");
    admin(&[
        "dispatch",
        guests::NAP,
        "--file",
        &naps.display().to_string(),
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while env.count(guests::NAP, "running") < 1000 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let running = env.count(guests::NAP, "running");
    std::thread::sleep(Duration::from_millis(300));
    let busy = rss_mib(pid);
    stop(worker);
    println!(
        "(g) 1,000 in flight: worker RSS idle {idle:.1} MiB, with {running} nap jobs running {busy:.1} MiB ({:.0} KiB per job in flight)",
        (busy - idle) * 1024.0 / running.max(1) as f64
    );
}

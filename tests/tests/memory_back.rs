//! Memory goes back: after hostile jobs that touch all the memory and
//! tables a job may have, a `runtime worker` (real binary, real Redis)
//! returns near its resident size from before them, and the normal jobs
//! that ran beside them all succeeded.

use std::time::Duration;

use runtime_tests::workers::{Env, eventually};
use runtime_tests::{components, guests, rss_bytes};

const MIB: u64 = 1 << 20;

#[test]
fn a_worker_gives_back_what_hostile_jobs_touched() {
    let mut env = Env::new();
    let dir = env.cache.path().join("handlers");
    std::fs::create_dir_all(&dir).expect("handlers dir");
    // Each job writes 3 memories of 16 MiB (with the handler's own, 4: the
    // ceiling) and 8 full tables of 100,000 elements: 54 MiB of a 64 MiB
    // limit.
    let greedy = components::handler(&format!(
        "{}{}",
        components::memories_touched(3, 16),
        components::tables_filled(8, 100_000),
    ));
    std::fs::write(dir.join("greedy_job.wasm"), greedy).expect("write fixture");
    std::fs::copy(
        format!("{}/nap_job.wasm", guests::DIR),
        dir.join("nap_job.wasm"),
    )
    .expect("copy nap");
    env.handlers = dir.display().to_string();
    let config = env.cache.path().join("memory.toml");
    std::fs::write(&config, "[defaults]\nmemory_mib = 64\n").expect("write config");
    let config = config.display().to_string();

    let w = env.worker(&[
        "greedy",
        guests::NAP,
        "--concurrency",
        "8",
        "--config",
        &config,
    ]);
    // Warm: the pool touched by normal jobs, the allocator's arenas in use.
    let warm_up: String = (0..20).map(|_| "{\"ms\":1}\n").collect();
    env.dispatch_file(guests::NAP, &warm_up, &[]).expect_code(0);
    let limit = Duration::from_secs(60);
    eventually(limit, "warm-up jobs done", || {
        env.count(guests::NAP, "done") == 20
    });
    let baseline = rss_bytes(w.pid());

    // Hostile and normal jobs together.
    let hostile: String = (0..32).map(|_| "{}\n").collect();
    env.dispatch_file("greedy", &hostile, &[]).expect_code(0);
    env.dispatch_file(guests::NAP, &warm_up, &[]).expect_code(0);
    let mut peak = 0;
    eventually(limit, "hostile and normal jobs done", || {
        peak = peak.max(rss_bytes(w.pid()));
        env.count("greedy", "done") == 32 && env.count(guests::NAP, "done") == 40
    });
    assert_eq!(env.count(guests::NAP, "failed"), 0, "{}", w.log());
    let after = rss_bytes(w.pid());
    eprintln!(
        "worker RSS: {} MiB before the hostile jobs, {} MiB at their peak, {} MiB after",
        baseline / MIB,
        peak / MIB,
        after / MIB
    );
    // What pool places may keep between jobs: 8 places x (4 memories x
    // 1 MiB + 8 tables x 64 KiB) = 36 MiB; the rest is slack for the
    // allocator. With 4 MiB kept per memory slot, it kept over 60 MiB.
    assert!(
        after <= baseline + 48 * MIB,
        "RSS {} MiB after, {} MiB before",
        after / MIB,
        baseline / MIB
    );
}

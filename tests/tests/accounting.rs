//! Memory and pool accounting with real components: growths that wasmtime
//! fails stay within a job's memory limit, and for any pool size and
//! per-job ceilings the engine builds and every place of the pool can run a
//! job that uses every ceiling at once. Fixtures are hand-written
//! components (`runtime_tests::components`), run through the library on
//! the in-memory backend.
//!
//! The pool property runs 8 cases (each builds an engine and a pool);
//! `PROPTEST_CASES` does not change that.

use proptest::prelude::*;
use runtime::config::Config;
use runtime::job::FailureKind;
use runtime::sandbox::{RunOutcome, engine_config};
use runtime::worker::JobEvent;
use runtime_tests::library::{self, dispatch_once, runtime_with};
use runtime_tests::{TempDir, components};

fn outcome_of<'a>(events: &'a [JobEvent], queue: &str) -> Vec<&'a RunOutcome> {
    events
        .iter()
        .filter(|e| e.job.id.queue().as_str() == queue)
        .map(|e| &e.report.as_ref().expect("ran").outcome)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn growths_wasmtime_fails_still_count_toward_the_memory_limit() {
    // Grows its memory by 1 MiB, then grows a 64-bit table by 2^64 - 1
    // elements (a size that overflows, which wasmtime fails without
    // asking the limiter), 32 times: 33 MiB in all against a limit of
    // 4 MiB, in pool slots of 64 MiB (the built-in limit sizes the slots).
    let alternating = components::handler(
        "(core module $grow (memory 1) (table i64 1 funcref)
           (func $s (local $i i32)
             (loop $again
               (drop (memory.grow (i32.const 16)))
               (drop (table.grow (ref.null func) (i64.const -1)))
               (local.set $i (i32.add (local.get $i) (i32.const 1)))
               (br_if $again (i32.lt_u (local.get $i) (i32.const 32)))))
           (start $s))
         (core instance (instantiate $grow))",
    );
    let dir = TempDir::new("accounting");
    let rt = runtime_with(
        &dir,
        "[defaults]\nmemory_mib = 4",
        &[("alternating", alternating)],
    );
    dispatch_once(&rt, "alternating", "{}").await;
    dispatch_once(&rt, "hello", r#"{"name":"a"}"#).await;
    let events = library::drain(&rt, 2).await;
    match outcome_of(&events, "alternating")[..] {
        [RunOutcome::Crashed { kind, reason }] => {
            assert_eq!(*kind, FailureKind::Memory, "{reason}");
            assert_eq!(reason, "memory limit 4 MiB exceeded");
        }
        ref other => panic!("one attempt, ended by the memory limit: {other:?}"),
    }
    assert_eq!(outcome_of(&events, "hello"), [&RunOutcome::Done]);
    assert_eq!(
        rt.registry().sandbox().stats().memory_bytes,
        0,
        "every grant returned"
    );
}

/// A component using `instances` core instances (its handler's own
/// included), `memories` memories (of 1 MiB, the handler's of one page)
/// and `tables` tables (at least one of each: the config refuses 0).
fn at_ceilings(instances: u32, memories: u32, tables: u32) -> Vec<u8> {
    let extra_memories = memories as usize - 1;
    let table_instances = 1;
    let empty = instances as usize - 1 - extra_memories - table_instances;
    let mut extra = components::core_instances(empty);
    extra.push_str(&components::memories(extra_memories, 1));
    extra.push_str(&components::tables(1, tables as usize, 10));
    components::handler(&extra)
}

fn pool() -> impl Strategy<Value = (u32, u32, u32, u32)> {
    // (max_instances, core instances, memories, tables); a component needs
    // an instance for each extra memory and one for its tables.
    (1..=6u32, 1..=4u32, 1..=8u32).prop_flat_map(|(n, memories, tables)| {
        let least = memories + 1;
        (Just(n), least..=least + 40, Just(memories), Just(tables))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]

    #[test]
    fn fuzz_every_place_of_any_pool_runs_a_job_at_every_ceiling(
        (max_instances, instances, memories, tables) in pool(),
    ) {
        let config = format!(
            "[sandbox]\nmax_instances = {max_instances}\n\
             [defaults]\nmax_core_instances = {instances}\nmax_memories = {memories}\nmax_tables = {tables}\n"
        );
        let parsed = Config::parse(&config).expect("valid config");
        let engine = wasmtime::Engine::new(&engine_config(&parsed.sandbox()));
        prop_assert!(engine.is_ok(), "{config}: {:?}", engine.err());

        let dir = TempDir::new("accounting");
        let rt = runtime_with(&dir, &config, &[("full", at_ceilings(instances, memories, tables))]);
        let tokio = runtime_tests::tokio_runtime(2);
        let events = tokio.block_on(async {
            for _ in 0..max_instances {
                dispatch_once(&rt, "full", "{}").await;
            }
            library::drain(&rt, max_instances as usize).await
        });
        let outcomes = outcome_of(&events, "full");
        prop_assert_eq!(outcomes.len(), max_instances as usize);
        for outcome in outcomes {
            prop_assert_eq!(outcome, &RunOutcome::Done, "{}", config);
        }
        prop_assert_eq!(rt.registry().sandbox().stats().memory_bytes, 0);
    }
}

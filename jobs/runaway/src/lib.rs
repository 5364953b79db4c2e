//! The handler of queue `runaway`: misbehaves on purpose, to show that a
//! bad handler fails only its own job. The payload picks how:
//!
//! ```text
//! runtime dispatch runaway '{"mode": "loop"}'    # never returns: stopped by the timeout
//! runtime dispatch runaway '{"mode": "hoard"}'   # eats memory: stopped by the memory limit
//! runtime dispatch runaway '{"mode": "panic"}'   # panics: the message becomes the job's error
//! ```

use guest_sdk::{Job, warn};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum Mode {
    Loop,
    Hoard,
    Panic,
}

#[derive(Deserialize)]
struct Misbehave {
    mode: Mode,
}

fn handle(job: Job<Misbehave>) -> guest_sdk::Result {
    match job.payload.mode {
        Mode::Loop => {
            warn!("spinning forever");
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        Mode::Hoard => {
            warn!("allocating until something stops me");
            let mut hoard = Vec::new();
            loop {
                hoard.push(vec![7u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        Mode::Panic => panic!("attempt {} gave up", job.attempt),
    }
}

guest_sdk::export_handler!(handle);

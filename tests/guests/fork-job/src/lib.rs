//! Dispatches copies of itself: `copies` follow-ups with the same payload
//! to `queue` (default: its own queue), each with `delay_ms` and a unique
//! key (`key`, or `key_bytes` bytes of `k`) when given. A refused dispatch
//! is logged and skipped, or, with `strict`, fails the attempt (retried like
//! any error). Then asks to be retried after `retry_delay_ms` if given, and
//! is done otherwise.
use std::time::Duration;

use guest_sdk::DispatchOptions;

fn handle(job: guest_sdk::Job) -> guest_sdk::Result {
    let p = &job.payload;
    let queue = p["queue"].as_str().unwrap_or(&job.queue).to_string();
    let key = match (p["key"].as_str(), p["key_bytes"].as_u64()) {
        (Some(key), _) => Some(key.to_string()),
        (None, Some(n)) => Some("k".repeat(usize::try_from(n).unwrap_or(0))),
        (None, None) => None,
    };
    for _ in 0..p["copies"].as_u64().unwrap_or(0) {
        let mut options = DispatchOptions::new();
        if let Some(ms) = p["delay_ms"].as_u64() {
            options = options.delay(Duration::from_millis(ms));
        }
        if let Some(key) = &key {
            options = options.unique_key(key.clone());
        }
        match guest_sdk::dispatch_with(&queue, p, options) {
            Ok(id) => guest_sdk::info!("dispatched {id}"),
            Err(e) if p["strict"].as_bool() == Some(true) => return Err(e),
            Err(e) => guest_sdk::warn!("refused: {e}"),
        }
    }
    match p["retry_delay_ms"].as_u64() {
        Some(ms) => Err(guest_sdk::retry_after("later", Duration::from_millis(ms))),
        None => Ok(()),
    }
}

guest_sdk::export_handler!(handle);

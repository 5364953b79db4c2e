//! Leaves a secret in a static and on the heap, and fails if it finds one
//! left by an earlier job: proof that every job gets a fresh instance.
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

static RUNS: AtomicU64 = AtomicU64::new(0);
static SECRET: Mutex<Option<String>> = Mutex::new(None);

fn handle(job: guest_sdk::Job) -> guest_sdk::Result {
    let runs = RUNS.fetch_add(1, Ordering::SeqCst);
    let mut secret = SECRET.lock().map_err(|_| guest_sdk::fail("poisoned"))?;
    if runs != 0 || secret.is_some() {
        return Err(guest_sdk::fail(format!("saw an earlier job: runs={runs} secret={secret:?}")));
    }
    *secret = Some(job.payload["secret"].as_str().unwrap_or_default().to_string());
    Ok(())
}
guest_sdk::export_handler!(handle);

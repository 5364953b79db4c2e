//! Sleeps for `{"ms": N}` milliseconds in a WASI call, then succeeds (or,
//! with `"fail": true`, fails, so its record and attempt times stay): a job
//! that is reliably in flight when a worker is killed or stopped.
fn handle(job: guest_sdk::Job<serde_json::Value>) -> guest_sdk::Result {
    let ms = job.payload["ms"].as_u64().unwrap_or(0);
    std::thread::sleep(std::time::Duration::from_millis(ms));
    guest_sdk::info!("napped {ms} ms on attempt {}", job.attempt);
    if job.payload["fail"].as_bool() == Some(true) {
        return Err(guest_sdk::fail("napped, and failed as asked"));
    }
    Ok(())
}
guest_sdk::export_handler!(handle);

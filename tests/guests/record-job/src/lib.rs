//! Records each run it starts, then naps: dispatches `{"job": id,
//! "attempt": n}` to the queue named in the payload's `"to"`, then sleeps
//! `"ms"` milliseconds and succeeds. The chaos tests count the records to
//! prove that no job is lost and to see which ones ran twice.
fn handle(job: guest_sdk::Job<serde_json::Value>) -> guest_sdk::Result {
    let to = job.payload["to"].as_str().unwrap_or("runs").to_string();
    let record = serde_json::json!({ "job": job.id, "attempt": job.attempt });
    guest_sdk::dispatch(&to, &record)?;
    let ms = job.payload["ms"].as_u64().unwrap_or(0);
    std::thread::sleep(std::time::Duration::from_millis(ms));
    Ok(())
}
guest_sdk::export_handler!(handle);

//! Returns whatever the payload asks: done, retry (with optional delay),
//! fail; and dispatches the follow-ups it lists.
fn handle(job: guest_sdk::Job) -> guest_sdk::Result {
    for follow in job.payload["dispatch"].as_array().into_iter().flatten() {
        let queue = follow["queue"].as_str().unwrap_or("");
        let id = guest_sdk::dispatch(queue, &follow["payload"])?;
        guest_sdk::info!("dispatched {id}");
    }
    let until = job.payload["succeed_on_attempt"].as_u64().unwrap_or(1);
    if u64::from(job.attempt) >= until {
        return match job.payload["finally"].as_str() {
            Some(reason) => Err(guest_sdk::fail(reason)),
            None => Ok(()),
        };
    }
    match job.payload["retry_after_ms"].as_u64() {
        Some(ms) => Err(guest_sdk::retry_after("not yet", std::time::Duration::from_millis(ms))),
        None => Err(guest_sdk::Error::retry(format!("not yet (attempt {})", job.attempt))),
    }
}
guest_sdk::export_handler!(handle);

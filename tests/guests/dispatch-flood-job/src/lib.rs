//! Dispatches follow-up jobs without end.
fn handle(_job: guest_sdk::Job) -> guest_sdk::Result {
    let mut n = 0u64;
    loop {
        guest_sdk::dispatch("flood-target", &n)?;
        n += 1;
    }
}
guest_sdk::export_handler!(handle);

//! Panics with a message.
fn handle(job: guest_sdk::Job) -> guest_sdk::Result {
    let what = job.payload["what"].as_str().unwrap_or("boom");
    panic!("{what}");
}
guest_sdk::export_handler!(handle);

//! Sleeps forever in a WASI call (blocked in the host, not running wasm).
fn handle(_job: guest_sdk::Job) -> guest_sdk::Result {
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
guest_sdk::export_handler!(handle);

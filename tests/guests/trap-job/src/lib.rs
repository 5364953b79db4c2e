//! Executes `unreachable` directly (no panic machinery).
fn handle(_job: guest_sdk::Job) -> guest_sdk::Result {
    core::arch::wasm32::unreachable()
}
guest_sdk::export_handler!(handle);

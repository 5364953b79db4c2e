//! Fails with a 10 MB reason.
fn handle(_job: guest_sdk::Job) -> guest_sdk::Result {
    Err(guest_sdk::fail("y".repeat(10 << 20)))
}
guest_sdk::export_handler!(handle);

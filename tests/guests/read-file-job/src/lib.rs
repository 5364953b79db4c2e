//! Tries to read a host file; reports what happened.
fn handle(_job: guest_sdk::Job) -> guest_sdk::Result {
    match std::fs::read_to_string("/etc/passwd") {
        Ok(text) => Err(guest_sdk::fail(format!("read {} bytes of /etc/passwd", text.len()))),
        Err(e) => Err(guest_sdk::fail(format!("denied: {e}"))),
    }
}
guest_sdk::export_handler!(handle);

//! Tries to read environment variables; reports what happened.
fn handle(_job: guest_sdk::Job) -> guest_sdk::Result {
    let vars: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
    match std::env::var("PATH") {
        Ok(v) => Err(guest_sdk::fail(format!("PATH={v}; vars {vars:?}"))),
        Err(e) => Err(guest_sdk::fail(format!("denied: {e}; vars {vars:?}"))),
    }
}
guest_sdk::export_handler!(handle);

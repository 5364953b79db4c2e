//! Prints without end.
fn handle(_job: guest_sdk::Job) -> guest_sdk::Result {
    let line = "x".repeat(1000);
    loop {
        println!("{line}");
    }
}
guest_sdk::export_handler!(handle);

//! A loop that only calls a host import (the WASI monotonic clock).
fn handle(_job: guest_sdk::Job) -> guest_sdk::Result {
    loop {
        std::hint::black_box(std::time::Instant::now());
    }
}
guest_sdk::export_handler!(handle);

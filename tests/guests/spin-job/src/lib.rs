//! A tight loop that never returns and calls nothing.
fn handle(_job: guest_sdk::Job) -> guest_sdk::Result {
    let mut x: u64 = 0;
    loop {
        x = std::hint::black_box(x.wrapping_add(1));
    }
}
guest_sdk::export_handler!(handle);

//! Grows its heap until something stops it.
fn handle(_job: guest_sdk::Job) -> guest_sdk::Result {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(vec![1u8; 1 << 20]);
        std::hint::black_box(&hoard);
    }
}
guest_sdk::export_handler!(handle);

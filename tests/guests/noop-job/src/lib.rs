//! The benchmarks' trivial handler: parses a ~100-byte order and sums it.
//! `tests/benches/throughput.rs` does the same work natively as a baseline.
use serde::Deserialize;

#[derive(Deserialize)]
struct Item {
    sku: String,
    qty: u32,
}

#[derive(Deserialize)]
struct Order {
    id: u64,
    customer: String,
    items: Vec<Item>,
}

fn handle(job: guest_sdk::Job<Order>) -> guest_sdk::Result {
    let order = job.payload;
    let units: u32 = order.items.iter().map(|i| i.qty).sum();
    let skus: usize = order.items.iter().map(|i| i.sku.len()).sum();
    std::hint::black_box((order.id, order.customer.len(), units, skus));
    Ok(())
}
guest_sdk::export_handler!(handle);

//! Unbounded recursion: overflows the WebAssembly call stack.
#[allow(unconditional_recursion)]
fn down(n: u64) -> u64 {
    1 + down(std::hint::black_box(n + 1))
}
fn handle(_job: guest_sdk::Job) -> guest_sdk::Result {
    std::hint::black_box(down(0));
    Ok(())
}
guest_sdk::export_handler!(handle);

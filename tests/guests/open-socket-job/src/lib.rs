//! Tries to open a TCP connection to the host named in the payload.
fn handle(job: guest_sdk::Job) -> guest_sdk::Result {
    let addr = job.payload["addr"].as_str().unwrap_or("127.0.0.1:9");
    match std::net::TcpStream::connect(addr) {
        Ok(_) => Err(guest_sdk::fail(format!("connected to {addr}"))),
        Err(e) => Err(guest_sdk::fail(format!("denied: {e}"))),
    }
}
guest_sdk::export_handler!(handle);

//! The handler of queue `hello`: greets whoever the payload names.
//!
//! ```text
//! runtime dispatch hello '{"name": "Ada"}'
//! ```

use guest_sdk::{Job, info};
use serde::Deserialize;

#[derive(Deserialize)]
struct Greeting {
    name: String,
    #[serde(default)]
    shout: bool,
}

fn handle(job: Job<Greeting>) -> guest_sdk::Result {
    let Greeting { name, shout } = job.payload;
    if name.trim().is_empty() {
        return Err(guest_sdk::fail("name must not be empty"));
    }
    let greeting = format!("Hello, {name}!");
    info!(
        "{} (job {}, attempt {} of {})",
        if shout { greeting.to_uppercase() } else { greeting },
        job.id,
        job.attempt,
        job.max_attempts
    );
    Ok(())
}

guest_sdk::export_handler!(handle);

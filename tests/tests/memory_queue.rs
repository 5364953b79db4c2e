//! The queue contract on the in-memory backend: the conformance suite,
//! unchanged.

use std::sync::Arc;

use runtime::queue::{ManualClock, MemoryBackend};
use runtime_tests::conformance::Server;

async fn make(clock: Arc<ManualClock>) -> Arc<dyn Server> {
    Arc::new(MemoryBackend::new(clock))
}

runtime_tests::queue_conformance!(make);

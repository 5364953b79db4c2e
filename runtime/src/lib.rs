//! `runtime`: a WebAssembly-sandboxed job executor.
//!
//! Applications dispatch jobs (a queue name and a JSON payload); workers run
//! each attempt in a fresh WebAssembly instance of the queue's handler
//! module, so a handler that panics, traps, loops or eats memory fails only
//! its own job.
//!
//! # Layout
//!
//! - [`job`]: what a job is: ids, queue names, payloads, options, states, records.
//! - [`queue`]: the queue contract ([`JobQueue`], with the workers registry
//!   and the module store beside it, together a [`Backend`]), the in-memory
//!   and Redis backends.
//! - [`sandbox`]: the wasmtime engine, module loading and caching, the host
//!   side of the handler world, limits, and running one attempt.
//! - [`handlers`]: which module serves each queue, loaded once, hot-swapped,
//!   and each queue's settings resolved once.
//! - [`worker`]: the claim / run / ack loop with leases and graceful shutdown.
//! - [`metrics`]: a worker's counters and histograms, in the Prometheus format.
//! - [`retry`]: backoff between attempts.
//! - [`tenant`]: the tenant registry: access tokens (kept as hashes), creating,
//!   rotating, authenticating and removing tenants.
//! - [`sync`]: the one lock helper (a panic elsewhere does not poison the rest).
//! - [`text`]: guest text made safe to print (escapes controls and invisible characters).
//! - [`config`]: the TOML configuration and per-queue settings.
//! - [`time`]: parsing the times and delays people give, printing stored times.
//! - [`Runtime`]: the above put together, for embedding.
//! - `cli` (private): the `runtime` binary's subcommands, thin over the above.

pub mod config;
pub mod error;
mod executor;
pub mod handlers;
pub mod job;
pub mod metrics;
pub mod queue;
pub mod retry;
pub mod sandbox;
pub mod sync;
pub mod tenant;
pub mod text;
pub mod time;
pub mod worker;

#[cfg(test)]
mod fuzz_tests;

pub use error::{InputError, LoadError, QueueError};
pub use executor::Runtime;
pub use handlers::HandlerRegistry;
pub use job::{
    DispatchOptions, JobId, JobRecord, JobState, NewJob, Payload, QueueName, RunAt, TenantName,
};
pub use queue::{Backend, JobQueue, MemoryBackend};
pub use worker::{Worker, WorkerConfig};

//! `runtime`: a WebAssembly-sandboxed job executor.
//!
//! # Layout
//!
//! - [`job`]: what a job is: ids, queue names, payloads, options, states, records.
//! - [`queue`]: the queue contract ([`queue::QueueBackend`]), the in-memory
//!   backend, and the conformance suite every backend passes.

pub mod error;
pub mod job;
pub mod queue;

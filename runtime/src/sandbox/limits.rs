//! Per-queue limits on a handler, each with the abuse it stops.
//!
//! Every limit ends only the offending attempt, with a reason that names
//! the limit; the worker and all other jobs carry on. Set them per queue in
//! config (see [`crate::config`]); these are the defaults.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What one attempt of a handler may use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Wall-clock time for one attempt. Stops infinite loops and handlers
    /// that sleep or wait forever (also while blocked in a WASI call).
    /// Default 30 s. Reason: `timeout after 30s`.
    pub timeout: Duration,
    /// Linear memory of the instance, in bytes. Stops memory bombs from
    /// taking the host's memory. Default 64 MiB.
    /// Reason: `memory limit 64 MiB exceeded`.
    pub memory: u64,
    /// Optional budget of WebAssembly fuel (roughly, instructions), for
    /// deterministic CPU accounting. Off by default: turning it on for any
    /// queue makes all guest code somewhat slower. Reason:
    /// `fuel budget 1000000 exhausted`.
    pub fuel: Option<u64>,
    /// Bytes of output kept per attempt: log lines, stdout and stderr
    /// together. Stops a handler from filling the host's memory or the
    /// queue server with output. Default 64 KiB.
    /// Reason: `output limit 64 KiB exceeded`.
    pub output: usize,
    /// Follow-up jobs one attempt may dispatch. Stops dispatch floods.
    /// Default 100. Reason: `dispatch limit 100 per job exceeded`.
    pub dispatches: u32,
    /// Deepest a follow-up dispatched by this queue's handler may sit in
    /// its job tree (the root's own follow-ups are at depth 1). Stops
    /// chains of jobs that dispatch the next one without end, across
    /// attempts and queues alike. Default 32. Over it, the guest's
    /// `dispatch` returns an error naming `max_tree_depth` and the attempt
    /// carries on.
    pub tree_depth: u32,
    /// Most jobs a job tree may ever hold, root and done jobs included,
    /// for this queue's handler to dispatch another follow-up into it.
    /// Stops a handler that dispatches a few copies of itself from growing
    /// into millions of jobs: the per-attempt `dispatches` limit alone
    /// multiplies at every level. Default 1000. Over it, the guest's
    /// `dispatch` returns an error naming `max_tree_jobs` and the attempt
    /// carries on.
    pub tree_jobs: u32,
    /// Core WebAssembly instances one instance of the handler creates, all
    /// nested components counted. Each takes a slot of the worker's shared
    /// pool, so without a ceiling one job could take every slot and fail
    /// the jobs beside it. A Rust handler has 3, a QuickJS one 8, a
    /// componentize-py one 14. Default 32; a module needing more is refused
    /// when it loads.
    pub core_instances: u32,
    /// Linear memories of one instance of the handler (their sizes count
    /// together toward `memory`). Default 4; a module needing more is
    /// refused when it loads.
    pub memories: u32,
    /// Tables of one instance of the handler (their elements count toward
    /// `memory`). Default 8; a module needing more is refused when it loads.
    pub tables: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(30),
            memory: 64 * MIB,
            fuel: None,
            output: 64 * 1024,
            dispatches: 100,
            tree_depth: 32,
            tree_jobs: 1000,
            core_instances: 32,
            memories: 4,
            tables: 8,
        }
    }
}

const MIB: u64 = 1024 * 1024;

/// Most bytes one `wasi:random` call returns. The host builds the bytes
/// outside the job's memory before copying them in, and cannot be stopped
/// mid-call: at this size a call takes a few milliseconds, so neither the
/// host's memory nor the job's deadline can be pushed by a huge request.
/// Reason for more: `host call failed: requested len ... exceeds limit`.
pub const MAX_RANDOM_BYTES: u64 = 1 << 20;

/// Most host resources (streams, pollables, HTTP requests, header fields,
/// ...) one attempt holds at once. Each lives in the host's memory, outside
/// the job's memory limit; a guest creating them in a loop stops here
/// instead of growing the worker. With the two bounds below, what wasi:http
/// can make the host hold for one attempt stays in the tens of MiB: at
/// most this many header fields of [`MAX_HTTP_FIELDS_BYTES`] each, or a
/// third as many request bodies each buffering two chunks of
/// [`MAX_HTTP_BODY_CHUNK`], even when the requests are never sent.
pub const MAX_HOST_RESOURCES: usize = 2_000;

/// Most bytes of one set of HTTP header fields a guest builds, counted as
/// wasmtime holds them in memory (about twice their size on the wire).
/// Default of wasmtime: 128 KiB.
pub const MAX_HTTP_FIELDS_BYTES: usize = 16 * 1024;

/// Most bytes one write to an outgoing HTTP body copies out of the guest
/// (the host buffers one such write per body until it is sent). Default of
/// wasmtime: 1 MiB.
pub const MAX_HTTP_BODY_CHUNK: usize = 16 * 1024;

/// Bytes written the way people read them: `64 MiB`, `512 KiB`, `100 bytes`.
#[derive(Debug, Clone, Copy)]
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        if n >= MIB && n.is_multiple_of(MIB) {
            write!(f, "{} MiB", n / MIB)
        } else if n >= 1024 && n.is_multiple_of(1024) {
            write!(f, "{} KiB", n / 1024)
        } else {
            write!(f, "{n} bytes")
        }
    }
}

/// A duration written the way people read it: `30s`, `100ms`, `1.5s`.
#[derive(Debug, Clone, Copy)]
pub struct Millis(pub Duration);

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms >= 1000 && ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else if ms >= 1000 {
            write!(f, "{:.1}s", self.0.as_secs_f64())
        } else {
            write!(f, "{ms}ms")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_read_naturally() {
        assert_eq!(Bytes(64 * MIB).to_string(), "64 MiB");
        assert_eq!(Bytes(64 * 1024).to_string(), "64 KiB");
        assert_eq!(Bytes(1000).to_string(), "1000 bytes");
        assert_eq!(Millis(Duration::from_millis(100)).to_string(), "100ms");
        assert_eq!(Millis(Duration::from_secs(30)).to_string(), "30s");
        assert_eq!(Millis(Duration::from_millis(1500)).to_string(), "1.5s");
    }
}

//! Writing to stdout and stderr without panicking.
//!
//! `println!` panics when stdout is a pipe whose reader has gone
//! (`runtime jobs show ID | head -c 10`), and `eprintln!` likewise for
//! stderr. Every line the commands print goes through [`line`] (the
//! `outln!` macro) instead: once the reader is gone, output is dropped and
//! the command finishes what it was doing with its usual exit status, as
//! quietly as if everything had been read. Any other write error (a full
//! disk behind `> file`) is kept and reported by [`finish`], so a truncated
//! file never passes for a complete one.

use std::io::{self, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once stdout failed: nothing more is written.
static STDOUT_DONE: AtomicBool = AtomicBool::new(false);
/// The first stdout error that was not the reader going away.
static STDOUT_ERROR: Mutex<Option<io::Error>> = Mutex::new(None);

/// Writes one line to stdout.
pub fn line(args: std::fmt::Arguments<'_>) {
    if STDOUT_DONE.load(Ordering::Relaxed) {
        return;
    }
    let mut out = io::stdout().lock();
    if let Err(e) = writeln!(out, "{args}") {
        failed(e);
    }
}

fn failed(e: io::Error) {
    STDOUT_DONE.store(true, Ordering::Relaxed);
    if e.kind() != io::ErrorKind::BrokenPipe {
        let mut first = runtime::sync::lock(&STDOUT_ERROR);
        first.get_or_insert(e);
    }
}

/// Flushes stdout; the write error to report, if one other than the
/// reader going away happened.
pub fn finish() -> Option<io::Error> {
    if !STDOUT_DONE.load(Ordering::Relaxed)
        && let Err(e) = io::stdout().lock().flush()
    {
        failed(e);
    }
    runtime::sync::lock(&STDOUT_ERROR).take()
}

/// Writes one line to stderr; a failure is ignored (there is nowhere left
/// to report it).
pub fn err_line(args: std::fmt::Arguments<'_>) {
    let _ = writeln!(io::stderr().lock(), "{args}");
}

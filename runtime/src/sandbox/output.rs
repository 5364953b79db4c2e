//! The job's log: log lines, stdout and stderr of one attempt, in the order
//! written, in one bounded buffer. Writing past the bound ends the attempt
//! (`output limit 64 KiB exceeded`) rather than silently dropping output.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

use super::host::Level;
use super::limits;

/// One attempt's output. Cheap to clone: clones share the buffer.
#[derive(Debug, Clone)]
pub struct JobOutput(Arc<Mutex<Buffer>>);

#[derive(Debug)]
struct Buffer {
    text: Vec<u8>,
    limit: usize,
    exceeded: bool,
}

impl JobOutput {
    /// An empty log that holds at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        JobOutput(Arc::new(Mutex::new(Buffer {
            text: Vec::new(),
            limit,
            exceeded: false,
        })))
    }

    fn lock(&self) -> MutexGuard<'_, Buffer> {
        crate::sync::lock(&self.0)
    }

    /// Appends `bytes`; fails, and remembers it, if they do not fit.
    pub fn write(&self, bytes: &[u8]) -> Result<(), OutputLimitExceeded> {
        let mut buf = self.lock();
        if buf.exceeded || buf.text.len() + bytes.len() > buf.limit {
            buf.exceeded = true;
            return Err(OutputLimitExceeded(buf.limit));
        }
        buf.text.extend_from_slice(bytes);
        Ok(())
    }

    /// Appends one log line: `LEVEL message\n`.
    pub(crate) fn line(&self, level: Level, message: &str) -> Result<(), OutputLimitExceeded> {
        let level = level.as_str();
        let mut line = String::with_capacity(level.len() + message.len() + 2);
        line.push_str(level);
        line.push(' ');
        line.push_str(message);
        if !message.ends_with('\n') {
            line.push('\n');
        }
        self.write(line.as_bytes())
    }

    /// Whether a write was refused for lack of room.
    pub fn exceeded(&self) -> bool {
        self.lock().exceeded
    }

    /// The output so far, as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.lock().text).into_owned()
    }
}

/// The error an over-long write gets; its text is the job's reason.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("output limit {} exceeded", limits::Bytes(*.0 as u64))]
pub struct OutputLimitExceeded(pub usize);

impl IsTerminal for JobOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for JobOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl OutputStream for JobOutput {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        JobOutput::write(self, &bytes).map_err(|e| StreamError::Trap(wasmtime::Error::new(e)))
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        // Always offer room: a write past the limit then fails loudly
        // instead of leaving the guest waiting for room that never comes.
        Ok(64 * 1024)
    }
}

#[async_trait::async_trait]
impl Pollable for JobOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for JobOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(
            JobOutput::write(&self, buf)
                .map(|()| buf.len())
                .map_err(io::Error::other),
        )
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_bounded_and_remembers_overflow() {
        let out = JobOutput::new(16);
        out.line(Level::Info, "hello").expect("fits");
        assert_eq!(out.text(), "INFO hello\n");
        let err = out.write(b"0123456789").expect_err("does not fit");
        assert_eq!(err.to_string(), "output limit 16 bytes exceeded");
        assert!(out.exceeded());
        assert!(out.write(b"x").is_err(), "stays closed once exceeded");
        assert_eq!(out.text(), "INFO hello\n");
    }
}

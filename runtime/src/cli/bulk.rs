//! `runtime dispatch QUEUE --file FILE`: one job per line, streamed.
//!
//! A thread reads, checks and groups lines into chunks while the async
//! side sends the chunk before, so memory stays a few chunks whatever the
//! size of the input, and reading overlaps the round trips to the server.
//! Each chunk is one `dispatch_many` call, which a backend applies whole
//! or not at all (on Redis: one script), so after a bad line, a failed
//! call or Ctrl-C the command knows exactly which lines are in and says
//! the `--skip` to resume with. A chunk already on its way when Ctrl-C
//! comes is finished first.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use runtime::JobQueue;
use runtime::job::{DispatchOptions, JobId, MAX_PAYLOAD_BYTES, NewJob, Payload, QueueName};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use super::{CliResult, Exit};

/// Jobs per `dispatch_many` call at most: each chunk is one script on the
/// server, kept short so other clients are not held up.
const CHUNK_JOBS: usize = 1_000;

/// Payload bytes per chunk at most (a line of up to the 1 MiB payload
/// limit still fits): bounds the memory of a chunk, and the size of one
/// script call, when lines are large.
const CHUNK_BYTES: usize = 4 * 1024 * 1024;

/// Chunks read ahead of the one being sent. With [`CHUNK_BYTES`] this
/// caps the input held in memory at about 12 MiB, whatever the file size.
const READ_AHEAD: usize = 2;

/// How often the progress line is redrawn.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// Where the lines come from and what to do with them.
#[derive(Debug)]
pub struct Bulk<'a> {
    /// The queue.
    pub queue: QueueName,
    /// The options of every job.
    pub options: DispatchOptions,
    /// The file, or `-` for stdin.
    pub file: &'a Path,
    /// Lines to pass over first (a resumed run).
    pub skip: u64,
    /// Print a JSON summary instead of a sentence.
    pub json: bool,
}

/// Lines checked and ready to send: lines `first..=last` of the input.
struct Chunk {
    jobs: Vec<NewJob>,
    last: u64,
}

/// What the reading thread hands over.
enum Batch {
    Chunk(Chunk),
    /// The input cannot be used from this line on; lines before it were
    /// all in earlier chunks.
    Bad(anyhow::Error),
    /// All lines read; the last line's number.
    End(u64),
}

/// How far a run got.
#[derive(Debug, Default)]
struct Done {
    jobs: u64,
    /// Every line up to this one is in (or blank, or skipped).
    through: u64,
    first: Option<JobId>,
    last: Option<JobId>,
}

impl Done {
    /// "enqueued 131000 jobs (lines 1-131000)".
    fn sentence(&self, skip: u64) -> String {
        let lines = if self.through > skip {
            format!("lines {}-{}", skip + 1, self.through)
        } else {
            "no lines".to_string()
        };
        let plural = if self.jobs == 1 { "" } else { "s" };
        format!("enqueued {} job{plural} ({lines})", self.jobs)
    }
}

/// Streams the input into the queue.
pub async fn enqueue(backend: &dyn JobQueue, bulk: Bulk<'_>) -> CliResult {
    let input = open(bulk.file)?;
    let total = input.size;
    let read = Arc::new(AtomicU64::new(0));
    let (tx, mut rx) = mpsc::channel(READ_AHEAD);
    let reader = {
        let (queue, options, name, skip, read) = (
            bulk.queue.clone(),
            bulk.options.clone(),
            bulk.file.display().to_string(),
            bulk.skip,
            read.clone(),
        );
        std::thread::Builder::new()
            .name("read-jobs".into())
            .spawn(move || read_lines(input.reader, &name, skip, &queue, &options, &read, &tx))
            .context("starting the reader thread")?
    };
    // Signals are caught from here on, so a Ctrl-C can no longer cut a
    // chunk in half: it is seen between chunks.
    let mut interrupt = signal(SignalKind::interrupt()).context("catching SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("catching SIGTERM")?;
    let mut progress = Progress::new(total);
    let mut done = Done {
        through: bulk.skip,
        ..Done::default()
    };
    let outcome = loop {
        let next = tokio::select! {
            biased;
            _ = interrupt.recv() => break Stop::Interrupted,
            _ = terminate.recv() => break Stop::Interrupted,
            next = rx.recv() => next,
        };
        match next {
            Some(Batch::Chunk(chunk)) => {
                let lines = format!("{}-{}", done.through + 1, chunk.last);
                let count = chunk.jobs.len() as u64;
                match backend.dispatch_many(chunk.jobs).await {
                    Ok(ids) => {
                        done.first = done.first.take().or_else(|| ids.first().cloned());
                        done.last = ids.last().cloned().or(done.last.take());
                        done.jobs += count;
                        done.through = chunk.last;
                        progress.show(&done, read.load(Ordering::Relaxed));
                    }
                    Err(e) => {
                        // The call may have failed after the server applied
                        // it (a connection lost on the way back).
                        break Stop::Failed(anyhow::anyhow!(
                            "dispatching lines {lines} of {} failed: {e} (if the connection broke after the server got them, those lines went in too)",
                            bulk.file.display()
                        ));
                    }
                }
            }
            Some(Batch::Bad(e)) => break Stop::Failed(e),
            Some(Batch::End(last)) => {
                done.through = done.through.max(last);
                break Stop::Finished;
            }
            None => {
                break Stop::Failed(anyhow::anyhow!(
                    "the reader of {} stopped unexpectedly",
                    bulk.file.display()
                ));
            }
        }
    };
    progress.clear();
    // The reader may be blocked on a slow stdin: leave it; the process
    // ends with the command.
    drop(rx);
    if matches!(outcome, Stop::Finished) {
        let _ = reader.join();
    }
    summary(&bulk, &done, matches!(outcome, Stop::Finished));
    let resume = if done.through > bulk.skip {
        format!(
            "{}; resume with: --skip {}",
            done.sentence(bulk.skip),
            done.through
        )
    } else {
        "nothing was enqueued".to_string()
    };
    match outcome {
        Stop::Finished => Ok(Exit::Ok),
        Stop::Interrupted => {
            errln!("interrupted: {resume}");
            Ok(Exit::Interrupted)
        }
        Stop::Failed(e) => Err(anyhow::anyhow!("{e:#}\n{resume}")),
    }
}

/// Why the loop ended.
enum Stop {
    Finished,
    Interrupted,
    Failed(anyhow::Error),
}

/// Prints what went in: the ids' range, or a JSON summary.
fn summary(bulk: &Bulk<'_>, done: &Done, complete: bool) {
    let show = |id: &Option<JobId>| id.as_ref().map(ToString::to_string);
    if bulk.json {
        let summary = serde_json::json!({
            "queue": bulk.queue.as_str(),
            "count": done.jobs,
            "first": show(&done.first),
            "last": show(&done.last),
            "lines": done.through,
            "complete": complete,
        });
        outln!("{summary:#}");
        return;
    }
    if !complete {
        return;
    }
    match (show(&done.first), show(&done.last)) {
        (Some(a), Some(b)) => outln!(
            "dispatched {} jobs to {}: {a} .. {b}",
            done.jobs,
            bulk.queue
        ),
        _ => outln!(
            "dispatched no jobs: {} has no payload lines{}",
            bulk.file.display(),
            if bulk.skip > 0 {
                " after the skipped ones"
            } else {
                ""
            }
        ),
    }
}

/// An open input and its size, when known.
struct Input {
    reader: Box<dyn BufRead + Send>,
    size: Option<u64>,
}

fn open(file: &Path) -> anyhow::Result<Input> {
    // Large reads: a line is usually far shorter, and fewer system calls
    // matter at a million lines.
    const BUFFER: usize = 256 * 1024;
    if file == Path::new("-") {
        return Ok(Input {
            reader: Box::new(std::io::BufReader::with_capacity(BUFFER, std::io::stdin())),
            size: None,
        });
    }
    let opened =
        std::fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?;
    let meta = opened
        .metadata()
        .with_context(|| format!("cannot read {}", file.display()))?;
    if meta.is_dir() {
        anyhow::bail!(
            "{} is a directory: --file takes a file with one JSON payload per line",
            file.display()
        );
    }
    Ok(Input {
        reader: Box::new(std::io::BufReader::with_capacity(BUFFER, opened)),
        size: meta.is_file().then_some(meta.len()),
    })
}

/// One line, read with a bound on its length.
enum Line {
    Text(Vec<u8>),
    TooLong,
}

/// Reads one line into `buf` (without its `\n` or `\r\n`), reading at
/// most a little over [`MAX_PAYLOAD_BYTES`]: a longer line is refused
/// before it is held in memory. `None` at the end of the input.
fn next_line(
    reader: &mut dyn BufRead,
    buf: &mut Vec<u8>,
    read: &AtomicU64,
) -> std::io::Result<Option<Line>> {
    // The payload, a `\r` and the `\n`.
    let limit = MAX_PAYLOAD_BYTES as u64 + 2;
    buf.clear();
    let n = reader.take(limit).read_until(b'\n', buf)?;
    read.fetch_add(n as u64, Ordering::Relaxed);
    if n == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    } else if n as u64 == limit {
        return Ok(Some(Line::TooLong));
    }
    Ok(Some(Line::Text(std::mem::take(buf))))
}

/// The reading thread: lines to checked chunks, until the end, a bad line,
/// or the receiver going away.
fn read_lines(
    mut reader: Box<dyn BufRead + Send>,
    name: &str,
    skip: u64,
    queue: &QueueName,
    options: &DispatchOptions,
    read: &AtomicU64,
    tx: &mpsc::Sender<Batch>,
) {
    let mut n = 0u64;
    let mut buf = Vec::new();
    let mut jobs = Vec::new();
    let mut bytes = 0usize;
    let bad = |e: anyhow::Error| {
        let _ = tx.blocking_send(Batch::Bad(e));
    };
    // Skipped lines are passed over without being held, whatever their length.
    while n < skip {
        match reader.skip_until(b'\n') {
            Ok(0) => break,
            Ok(len) => {
                read.fetch_add(len as u64, Ordering::Relaxed);
                n += 1;
            }
            Err(e) => return bad(anyhow::Error::new(e).context(format!("cannot read {name}"))),
        }
    }
    loop {
        let line = match next_line(&mut reader, &mut buf, read) {
            Ok(None) => break,
            Ok(Some(line)) => line,
            Err(e) => return bad(anyhow::Error::new(e).context(format!("cannot read {name}"))),
        };
        n += 1;
        let text = match line {
            Line::Text(bytes) => bytes,
            Line::TooLong => {
                return bad(anyhow::anyhow!(
                    "{name} line {n}: longer than the payload limit of {MAX_PAYLOAD_BYTES} bytes; put large data elsewhere and pass its location"
                ));
            }
        };
        let text = match String::from_utf8(text) {
            Ok(text) => text,
            Err(_) => return bad(anyhow::anyhow!("{name} line {n}: not UTF-8 text")),
        };
        if text.trim().is_empty() {
            buf = text.into_bytes();
            continue;
        }
        let size = text.len();
        let payload = match Payload::new(text) {
            Ok(payload) => payload,
            Err(e) => return bad(anyhow::anyhow!("{name} line {n}: {e}")),
        };
        if !jobs.is_empty() && (jobs.len() == CHUNK_JOBS || bytes + size > CHUNK_BYTES) {
            let chunk = Chunk {
                jobs: std::mem::take(&mut jobs),
                last: n - 1,
            };
            bytes = 0;
            if tx.blocking_send(Batch::Chunk(chunk)).is_err() {
                return;
            }
        }
        bytes += size;
        jobs.push(NewJob {
            queue: queue.clone(),
            payload,
            options: options.clone(),
        });
    }
    if !jobs.is_empty()
        && tx
            .blocking_send(Batch::Chunk(Chunk { jobs, last: n }))
            .is_err()
    {
        return;
    }
    let _ = tx.blocking_send(Batch::End(n));
}

/// The progress line on stderr, when it is a terminal; nothing otherwise.
struct Progress {
    on: bool,
    total: Option<u64>,
    started: Instant,
    drawn: Option<Instant>,
}

impl Progress {
    fn new(total: Option<u64>) -> Self {
        Progress {
            on: std::io::stderr().is_terminal(),
            total,
            started: Instant::now(),
            drawn: None,
        }
    }

    fn show(&mut self, done: &Done, read: u64) {
        if !self.on || self.drawn.is_some_and(|t| t.elapsed() < PROGRESS_EVERY) {
            return;
        }
        self.drawn = Some(Instant::now());
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = done.jobs as f64 / secs;
        let share = match self.total {
            Some(total) if total > 0 => format!("{:>3}%  ", read.saturating_mul(100) / total),
            _ => String::new(),
        };
        let _ = write!(
            std::io::stderr().lock(),
            "\r\x1b[K{share}{} jobs enqueued, line {}, {rate:.0} jobs/s",
            done.jobs,
            done.through
        );
    }

    fn clear(&self) {
        if self.on && self.drawn.is_some() {
            let _ = write!(std::io::stderr().lock(), "\r\x1b[K");
        }
    }
}

/// The single payload of `dispatch QUEUE -`, read from stdin: at most one
/// byte past the limit is read, so a huge or endless stdin is refused
/// without being held.
pub fn read_stdin_payload() -> anyhow::Result<Payload> {
    let mut bytes = Vec::new();
    std::io::stdin()
        .lock()
        .take(MAX_PAYLOAD_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .context("reading the payload from stdin")?;
    if bytes.len() > MAX_PAYLOAD_BYTES {
        anyhow::bail!(
            "the payload on stdin is over the limit of {MAX_PAYLOAD_BYTES} bytes (stopped reading there); put large data elsewhere and pass its location"
        );
    }
    let text = String::from_utf8(bytes).context("the payload on stdin is not UTF-8 text")?;
    Ok(Payload::new(text)?)
}

//! What a job is: its identity, the options it is dispatched with, its
//! states, and the record kept of it. Shared by every backend.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::InputError;

/// Milliseconds since the Unix epoch: the only time format stored in job
/// records, so every backend (and Redis scripts) agree on it.
pub type UnixMillis = u64;

/// Longest allowed queue name, in bytes.
pub const MAX_QUEUE_NAME_LEN: usize = 64;

/// Largest payload accepted by `dispatch`, in bytes of JSON text (1 MiB).
///
/// Payloads are copied into every attempt's sandbox and, with Redis, stored
/// on the server; big data belongs in object storage with its URL in the
/// payload.
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

/// Priority of a job whose dispatch does not say.
pub const DEFAULT_PRIORITY: i32 = 1;

/// Longest unique key, in bytes. Keys are stored on the queue server
/// beside every job that holds one; an idempotency key needs no more.
pub const MAX_UNIQUE_KEY_BYTES: usize = 256;

/// Most attempts a job may be given (`max_attempts`). Every attempt runs the
/// handler again and adds an entry to the job's history on the queue
/// server: a job asking for billions would keep workers busy, and its
/// record growing, for ever. 100 attempts at the default backoff (capped
/// at an hour) span about four days.
pub const MAX_ATTEMPTS: u32 = 100;

/// How unique keys given by handlers start, as stored: a handler's key `k`
/// for a follow-up it dispatches from a job of queue `q` is kept as
/// `@q:k`. An application's key may not start with `@`, so the two can
/// never be equal: a handler can hold only keys of its own queue's
/// follow-ups, never the key of a job an application dispatches (see
/// [`DispatchOptions::unique_key`]).
pub const HANDLER_KEY_PREFIX: char = '@';

/// Furthest a job may be put off: a delay, a run-at time (from now) or a
/// handler's retry delay of at most one year. Far enough for any schedule a
/// queue serves; near enough that no job waits forever and every time stays
/// representable.
pub const MAX_DELAY: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Why an attempt did not finish its job: a fixed kind, kept beside the
/// free-text reason, so a handler's own words can never pass for a limit
/// of the host (a handler that fails with `memory limit 16 MiB exceeded`
/// is still of kind [`FailureKind::Handler`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The handler returned `retry` or `fail`; the reason is its own text.
    Handler,
    /// The attempt ran out of wall-clock time.
    Timeout,
    /// The job's memory limit (linear memories and tables together).
    Memory,
    /// The queue's fuel budget.
    Fuel,
    /// The output limit (log lines, stdout, stderr).
    Output,
    /// The per-attempt dispatch limit. (A job tree's budget does not end
    /// the attempt: the guest's `dispatch` returns an error it may handle.)
    DispatchLimit,
    /// The WebAssembly call stack overflowed.
    StackOverflow,
    /// The guest panicked (and said so before trapping).
    Panic,
    /// The guest called `exit`.
    Exit,
    /// Any other trap of guest code (`unreachable`, out-of-bounds access...).
    Trap,
    /// A host call the guest made failed or was refused (a WASI call
    /// without a grant, a resource limit of the host).
    Host,
    /// The handler module is missing or cannot be loaded.
    Load,
    /// The worker running the attempt was lost (its lease expired).
    WorkerLost,
}

impl FailureKind {
    /// Every kind.
    pub const ALL: [FailureKind; 13] = [
        FailureKind::Handler,
        FailureKind::Timeout,
        FailureKind::Memory,
        FailureKind::Fuel,
        FailureKind::Output,
        FailureKind::DispatchLimit,
        FailureKind::StackOverflow,
        FailureKind::Panic,
        FailureKind::Exit,
        FailureKind::Trap,
        FailureKind::Host,
        FailureKind::Load,
        FailureKind::WorkerLost,
    ];

    /// The snake_case name used in records, JSON, logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Handler => "handler",
            FailureKind::Timeout => "timeout",
            FailureKind::Memory => "memory",
            FailureKind::Fuel => "fuel",
            FailureKind::Output => "output",
            FailureKind::DispatchLimit => "dispatch_limit",
            FailureKind::StackOverflow => "stack_overflow",
            FailureKind::Panic => "panic",
            FailureKind::Exit => "exit",
            FailureKind::Trap => "trap",
            FailureKind::Host => "host",
            FailureKind::Load => "load",
            FailureKind::WorkerLost => "worker_lost",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FailureKind {
    type Err = InputError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FailureKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| InputError::FailureKind(s.to_string()))
    }
}

/// The tenant whose queues keep their bare names: what a deployment with a
/// single tenant uses, with no tenant written anywhere.
pub const DEFAULT_TENANT: &str = "default";

/// The subdirectory of the handlers directory that holds one directory
/// per tenant (see [`QueueName::handler_path`]).
pub const TENANTS_DIR: &str = "tenants";

/// The config section of the queue written `name` (valid or not), as TOML
/// writes its key: `queues.resize`, or quoted, `queues."acme/resize"`, when
/// the name holds anything but letters, digits, `-` and `_`.
pub fn config_section(name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if bare {
        format!("queues.{name}")
    } else {
        format!("queues.{name:?}")
    }
}

/// Whether `name` is 1 to 64 of `a-z`, `0-9`, `-` and `_`, starting with a
/// letter or digit: the rule for a tenant's name and a queue's own name.
fn valid_name(name: &str) -> bool {
    let valid_start = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let valid_rest = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    name.len() <= MAX_QUEUE_NAME_LEN && valid_start && valid_rest
}

/// A tenant's name: the namespace of a set of queues, their handlers and
/// their grants. Same alphabet and length as a queue's name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantName(Arc<str>);

impl TenantName {
    /// Validates `name`.
    pub fn new(name: impl Into<String>) -> Result<Self, InputError> {
        let name = name.into();
        if !valid_name(&name) {
            return Err(InputError::TenantName(name));
        }
        Ok(TenantName(name.into()))
    }

    /// The default tenant.
    pub fn default_tenant() -> Self {
        TenantName(DEFAULT_TENANT.into())
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is the default tenant.
    pub fn is_default(&self) -> bool {
        &*self.0 == DEFAULT_TENANT
    }
}

impl fmt::Display for TenantName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for TenantName {
    type Error = InputError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        TenantName::new(s)
    }
}

impl From<TenantName> for String {
    fn from(t: TenantName) -> String {
        t.0.to_string()
    }
}

impl FromStr for TenantName {
    type Err = InputError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TenantName::new(s)
    }
}

/// A queue's name: its tenant and its own name, each 1 to 64 of `a-z`,
/// `0-9`, `-` and `_`, starting with a letter or digit. Written
/// `tenant/queue` (`acme/resize`), or the queue's own name alone in the
/// default tenant (`resize`), which is how every name of a single-tenant
/// deployment looks. The written form is the one identity: Redis keys,
/// job ids, metrics and listings all use it, so two tenants' queues of the
/// same own name never meet.
///
/// Lowercase only, so a name maps to one handler file on every file system
/// (`my-queue` is served by `my_queue_job.wasm`), and free of `:`, `{` and
/// `}`, which structure job ids and Redis keys.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
// Shared rather than owned: every job id, lease and record carries its
// queue's name, and a clone per claim and per ack is then a count, not
// a copy.
pub struct QueueName(Arc<str>);

impl QueueName {
    /// Validates `name`, a queue's own name, in the default tenant.
    pub fn new(name: impl Into<String>) -> Result<Self, InputError> {
        let name = name.into();
        if !valid_name(&name) {
            return Err(InputError::QueueName(name));
        }
        Ok(QueueName(name.into()))
    }

    /// Queue `name` (its own name, without a tenant) of `tenant`.
    pub fn in_tenant(tenant: &TenantName, name: &str) -> Result<Self, InputError> {
        if name.contains('/') {
            return Err(InputError::OtherTenant(name.to_string()));
        }
        if tenant.is_default() {
            return QueueName::new(name);
        }
        if !valid_name(name) {
            return Err(InputError::QueueName(name.to_string()));
        }
        Ok(QueueName(format!("{tenant}/{name}").into()))
    }

    /// Parses a written name: `tenant/queue`, or `queue` in the default
    /// tenant (`default/queue` is the same queue, written `queue`).
    pub fn parse(written: &str) -> Result<Self, InputError> {
        match written.split_once('/') {
            None => QueueName::new(written),
            Some((tenant, name)) => {
                let tenant = TenantName::new(tenant)?;
                QueueName::in_tenant(&tenant, name).map_err(|e| match e {
                    InputError::OtherTenant(_) => InputError::QueueName(written.to_string()),
                    e => e,
                })
            }
        }
    }

    /// A name as a caller acting within `tenant` writes it (`--tenant`, or
    /// an API token of the tenant): with no tenant, as [`QueueName::parse`]
    /// reads it; with one, a bare name is that tenant's queue, a name in
    /// full must be of that tenant, and any other is refused.
    pub fn read_in(tenant: Option<&TenantName>, written: &str) -> Result<Self, InputError> {
        let Some(tenant) = tenant else {
            return QueueName::parse(written);
        };
        match written.split_once('/') {
            None => QueueName::in_tenant(tenant, written),
            Some((t, _)) if t == tenant.as_str() => QueueName::parse(written),
            Some(_) => Err(InputError::OutsideTenant {
                name: written.to_string(),
                tenant: tenant.to_string(),
            }),
        }
    }

    /// Queue `name` of this queue's tenant: how a name a handler gives is
    /// read, so that no name it writes reaches another tenant.
    pub fn sibling(&self, name: &str) -> Result<Self, InputError> {
        QueueName::in_tenant(&self.tenant(), name)
    }

    /// The written name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The queue's tenant.
    pub fn tenant(&self) -> TenantName {
        match self.parts() {
            (Some(tenant), _) => TenantName(tenant.into()),
            (None, _) => TenantName::default_tenant(),
        }
    }

    /// Whether this is a queue of `tenant`.
    pub fn is_in(&self, tenant: &TenantName) -> bool {
        match self.parts() {
            (Some(own), _) => own == tenant.as_str(),
            (None, _) => tenant.is_default(),
        }
    }

    /// The queue's own name, without its tenant.
    pub fn name(&self) -> &str {
        self.parts().1
    }

    /// The written tenant (`None`: the default tenant) and the own name.
    fn parts(&self) -> (Option<&str>, &str) {
        match self.0.split_once('/') {
            Some((tenant, name)) => (Some(tenant), name),
            None => (None, &self.0),
        }
    }

    /// The file name of the handler module serving this queue under the
    /// naming rule: queue `my-queue` is crate `my-queue-job`, whose cargo
    /// artifact is `my_queue_job.wasm`.
    pub fn handler_file_name(&self) -> String {
        format!("{}_job.wasm", self.name().replace('-', "_"))
    }

    /// This queue's section in the config, as TOML writes it:
    /// `queues.resize`, or `queues."acme/resize"` (a `/` needs quotes).
    pub fn config_section(&self) -> String {
        config_section(&self.0)
    }

    /// Where the naming rule puts this queue's handler module under
    /// `dir`: in `dir` for the default tenant, in
    /// `dir/tenants/<tenant>/` otherwise (`dir/tenants/acme/resize_job.wasm`).
    /// Under `tenants/` rather than in `dir/<tenant>/`, so no directory a
    /// build writes beside the modules (cargo's `deps/`, `build/`) can
    /// pass for a tenant's.
    pub fn handler_path(&self, dir: &std::path::Path) -> std::path::PathBuf {
        match self.parts() {
            (Some(tenant), _) => dir
                .join(TENANTS_DIR)
                .join(tenant)
                .join(self.handler_file_name()),
            (None, _) => dir.join(self.handler_file_name()),
        }
    }
}

impl fmt::Display for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for QueueName {
    type Error = InputError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        QueueName::parse(&s)
    }
}

impl From<QueueName> for String {
    fn from(q: QueueName) -> String {
        q.0.to_string()
    }
}

impl FromStr for QueueName {
    type Err = InputError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        QueueName::parse(s)
    }
}

/// A job's id: its queue and a number unique within that queue, written
/// `queue:number` (for example `hello:17`), so an id alone finds its job.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JobId {
    queue: QueueName,
    seq: u64,
}

impl JobId {
    /// The id of job number `seq` of `queue`.
    pub fn new(queue: QueueName, seq: u64) -> Self {
        JobId { queue, seq }
    }
    /// The queue the job belongs to.
    pub fn queue(&self) -> &QueueName {
        &self.queue
    }
    /// The job's number within its queue; increasing in dispatch order.
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

impl JobId {
    /// An id as a caller acting within `tenant` writes it: its queue read
    /// as [`QueueName::read_in`] reads a name.
    pub fn read_in(tenant: Option<&TenantName>, written: &str) -> Result<Self, InputError> {
        let id: JobId = written.parse()?;
        let queue_part = written.rsplit_once(':').map_or("", |(q, _)| q);
        let queue = QueueName::read_in(tenant, queue_part)?;
        Ok(JobId::new(queue, id.seq))
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.queue, self.seq)
    }
}

impl FromStr for JobId {
    type Err = InputError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InputError::JobId(s.to_string());
        let (queue, seq) = s.rsplit_once(':').ok_or_else(bad)?;
        let queue = QueueName::parse(queue).map_err(|_| bad())?;
        let seq = seq.parse().map_err(|_| bad())?;
        Ok(JobId { queue, seq })
    }
}

impl TryFrom<String> for JobId {
    type Error = InputError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<JobId> for String {
    fn from(id: JobId) -> String {
        id.to_string()
    }
}

/// A payload: JSON text, validated and size-checked once at construction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
// Shared rather than owned, like `QueueName`: a backend hands out copies
// of a record per claim, and a payload may be a mebibyte.
pub struct Payload(Arc<str>);

impl Payload {
    /// Checks that `json` is one JSON document of at most
    /// [`MAX_PAYLOAD_BYTES`].
    pub fn new(json: impl Into<String>) -> Result<Self, InputError> {
        let json = json.into();
        if json.len() > MAX_PAYLOAD_BYTES {
            return Err(InputError::PayloadTooLarge {
                size: json.len(),
                limit: MAX_PAYLOAD_BYTES,
            });
        }
        if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&json) {
            return Err(InputError::PayloadJson(e.to_string()));
        }
        Ok(Payload(json.into()))
    }
    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Payload {
    type Error = InputError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Payload::new(s)
    }
}

impl From<Payload> for String {
    fn from(p: Payload) -> String {
        p.0.to_string()
    }
}

/// When a job may first run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunAt {
    /// As soon as a worker is free.
    #[default]
    Now,
    /// This long after dispatch (a delay).
    #[serde(with = "duration_ms")]
    After(Duration),
    /// At this time (a date).
    At(UnixMillis),
}

impl RunAt {
    /// When a job dispatched at `now` with this `RunAt` is due: what every
    /// backend stores as its run-at time. A time in the past is due at
    /// once; a delay too long to add saturates (checked delays never are).
    pub fn due(self, now: UnixMillis) -> UnixMillis {
        match self {
            RunAt::Now => now,
            RunAt::After(delay) => now.saturating_add(whole_millis(delay)),
            RunAt::At(at) => at,
        }
    }
}

/// Attempts a job gets in all: 1 to [`MAX_ATTEMPTS`], held by the type, so
/// a job can never be dispatched with none (it would fail without running)
/// or with so many that it keeps workers busy for ever (see
/// [`MAX_ATTEMPTS`]). Default [`MaxAttempts::DEFAULT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct MaxAttempts(u32);

impl MaxAttempts {
    /// Attempts a job gets when its dispatch does not say: 4.
    pub const DEFAULT: MaxAttempts = MaxAttempts(4);
    /// One attempt: no retries.
    pub const ONE: MaxAttempts = MaxAttempts(1);

    /// Checks `attempts` against 1 to [`MAX_ATTEMPTS`].
    pub fn new(attempts: u32) -> Result<Self, InputError> {
        if attempts == 0 {
            return Err(InputError::ZeroAttempts);
        }
        if attempts > MAX_ATTEMPTS {
            return Err(InputError::TooManyAttempts {
                attempts,
                limit: MAX_ATTEMPTS,
            });
        }
        Ok(MaxAttempts(attempts))
    }

    /// The number of attempts.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl Default for MaxAttempts {
    fn default() -> Self {
        MaxAttempts::DEFAULT
    }
}

impl TryFrom<u32> for MaxAttempts {
    type Error = InputError;
    fn try_from(attempts: u32) -> Result<Self, Self::Error> {
        MaxAttempts::new(attempts)
    }
}

impl From<MaxAttempts> for u32 {
    fn from(attempts: MaxAttempts) -> u32 {
        attempts.0
    }
}

impl fmt::Display for MaxAttempts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for MaxAttempts {
    type Err = InputError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let attempts = s
            .trim()
            .parse()
            .map_err(|_| InputError::AttemptsNotANumber(s.to_string()))?;
        MaxAttempts::new(attempts)
    }
}

/// How a job is dispatched; `Default` gives the documented defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DispatchOptions {
    /// Higher runs first; FIFO within one priority. Default 1.
    pub priority: i32,
    /// When the job may first run, at most [`MAX_DELAY`] from now. Default
    /// now.
    pub run_at: RunAt,
    /// Attempts in all, 1 to [`MAX_ATTEMPTS`]. Default 4.
    pub max_attempts: MaxAttempts,
    /// While a job with this key is pending, scheduled or running in the
    /// same queue, dispatching another returns the existing job's id.
    ///
    /// 1 to [`MAX_UNIQUE_KEY_BYTES`] bytes, no control characters, not
    /// starting with [`HANDLER_KEY_PREFIX`]. The key is released when its
    /// job is done, fails for good, or is deleted; the longest a job can
    /// hold it is [`MAX_DELAY`] plus its attempts. Keys given by handlers
    /// for their follow-ups are scoped to the dispatching job's queue
    /// (stored as `@queue:key`): a handler can deduplicate only its own
    /// queue's follow-ups, and can never take, or hold back, the key of a
    /// job an application dispatches.
    pub unique_key: Option<String>,
}

impl DispatchOptions {
    /// Checks every option against its limit, as every backend does before
    /// it enqueues anything: a delay or run-at time at most [`MAX_DELAY`]
    /// from `now`, and the unique key (see [`check_unique_key`]); the
    /// attempts were checked when their [`MaxAttempts`] was made. A run-at
    /// time in the past is fine: the job is due at once.
    pub fn check(&self, now: UnixMillis) -> Result<(), InputError> {
        match self.run_at {
            RunAt::Now => {}
            RunAt::After(delay) => check_delay(delay)?,
            RunAt::At(at) => {
                let latest = now.saturating_add(whole_millis(MAX_DELAY));
                if at > latest {
                    return Err(InputError::RunAtTooFar {
                        ahead: Duration::from_millis(at - now),
                        limit: MAX_DELAY,
                    });
                }
            }
        }
        if let Some(key) = &self.unique_key {
            check_unique_key(key)?;
        }
        Ok(())
    }
}

/// Checks a delay (a dispatch's, or the one a handler asks to be retried
/// after) against [`MAX_DELAY`].
pub fn check_delay(delay: Duration) -> Result<(), InputError> {
    if delay > MAX_DELAY {
        return Err(InputError::DelayTooLong {
            delay,
            limit: MAX_DELAY,
        });
    }
    Ok(())
}

/// Checks a unique key as given: 1 to [`MAX_UNIQUE_KEY_BYTES`] bytes, no
/// control characters (keys are shown by the admin commands), and not
/// starting with [`HANDLER_KEY_PREFIX`], which marks the keys handlers give.
pub fn check_unique_key(key: &str) -> Result<(), InputError> {
    if key.len() > MAX_UNIQUE_KEY_BYTES {
        return Err(InputError::UniqueKeyTooLong {
            size: key.len(),
            limit: MAX_UNIQUE_KEY_BYTES,
        });
    }
    let problem = if key.is_empty() {
        "it is empty"
    } else if key.chars().any(char::is_control) {
        "it contains a control character"
    } else if key.starts_with(HANDLER_KEY_PREFIX) {
        "keys starting with '@' are reserved for the keys handlers give their follow-ups"
    } else {
        return Ok(());
    };
    Err(InputError::UniqueKey {
        key: key.to_string(),
        problem,
    })
}

fn whole_millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A long span of time as people say it in a message: `365 days`,
/// `3.5 hours`, `90 s`, `250 ms`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Span(pub Duration);

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs_f64();
        let (value, unit) = if secs >= 86_400.0 {
            (secs / 86_400.0, "days")
        } else if secs >= 3_600.0 {
            (secs / 3_600.0, "hours")
        } else if secs >= 1.0 {
            (secs, "s")
        } else {
            return write!(f, "{} ms", self.0.as_millis());
        };
        let rounded = (value * 10.0).round() / 10.0;
        let text = format!("{rounded:.1}");
        let text = text.strip_suffix(".0").unwrap_or(&text);
        // Rounding must not make a value over a limit read as the limit.
        let near = match value.partial_cmp(&rounded) {
            Some(std::cmp::Ordering::Greater) => "just over ",
            Some(std::cmp::Ordering::Less) => "just under ",
            _ => "",
        };
        write!(f, "{near}{text} {unit}")
    }
}

/// Where a follow-up sits in its job tree. Every job a handler dispatches
/// belongs to the tree of the job whose handler dispatched it; a job
/// dispatched from outside (by an application, or `runtime dispatch`) is
/// the root of a tree of its own and has no lineage.
///
/// A tree is bounded by the dispatching queue's [`TreeBudget`]: its depth,
/// and the number of jobs it ever held, root included. Done jobs still
/// count, and retrying an attempt does not give the tree a new budget, so
/// a handler that dispatches copies of itself stops at the budget however
/// it goes about it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Lineage {
    /// The tree's root: the job dispatched from outside that started it.
    pub root: JobId,
    /// The job whose handler dispatched this one.
    pub parent: JobId,
    /// How far below the root: 1 for the root's own follow-ups.
    pub depth: u32,
}

impl Lineage {
    /// The lineage of a follow-up dispatched by the handler of `parent`.
    pub fn child_of(parent: &JobRecord) -> Self {
        match &parent.lineage {
            Some(up) => Lineage {
                root: up.root.clone(),
                parent: parent.id.clone(),
                depth: up.depth.saturating_add(1),
            },
            None => Lineage {
                root: parent.id.clone(),
                parent: parent.id.clone(),
                depth: 1,
            },
        }
    }

    /// A unique key a handler gave, as stored: scoped to the dispatching
    /// job's queue (`@queue:key`; no queue name holds `:`), so it can only
    /// ever equal a key another handler of that queue gave.
    pub fn scoped_key(&self, key: &str) -> String {
        format!("{HANDLER_KEY_PREFIX}{}:{key}", self.parent.queue())
    }
}

/// How long the queue server keeps a job tree's count after the tree's
/// last follow-up, when follow-ups that never finished hold it (failed,
/// then deleted): two years, twice the furthest a job may be put off, so
/// only a tree with a job waiting (or retrying) longer than that loses it.
/// Bounds what such trees leave behind.
pub const TREE_KEEP: Duration = Duration::from_secs(2 * 365 * 24 * 60 * 60);

/// How far a job tree may grow by a follow-up, as the queue of the job
/// dispatching it allows (`max_tree_depth`, `max_tree_jobs`; see
/// [`crate::sandbox::Limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeBudget {
    /// Deepest a follow-up may be below the root.
    pub max_depth: u32,
    /// Most jobs the tree may ever hold, root included.
    pub max_jobs: u32,
}

impl Default for DispatchOptions {
    fn default() -> Self {
        DispatchOptions {
            priority: DEFAULT_PRIORITY,
            run_at: RunAt::Now,
            max_attempts: MaxAttempts::DEFAULT,
            unique_key: None,
        }
    }
}

/// A job to dispatch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewJob {
    /// Where it goes.
    pub queue: QueueName,
    /// What the handler gets.
    pub payload: Payload,
    /// How.
    pub options: DispatchOptions,
}

impl NewJob {
    /// A job with default options.
    pub fn new(queue: QueueName, payload: Payload) -> Self {
        NewJob {
            queue,
            payload,
            options: DispatchOptions::default(),
        }
    }

    /// Checks its options (see [`DispatchOptions::check`]); the payload was
    /// checked when it was made.
    pub fn check(&self, now: UnixMillis) -> Result<(), InputError> {
        self.options.check(now)
    }
}

/// Where a job is in its life. Done jobs are removed and only counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Ready to run.
    Pending,
    /// Waiting for its time: delayed at dispatch, or waiting to retry.
    Scheduled,
    /// Claimed by a worker under a lease.
    Running,
    /// Out of attempts or failed explicitly; kept until retried or deleted.
    Failed,
}

impl JobState {
    /// Every state, in lifecycle order.
    pub const ALL: [JobState; 4] = [
        JobState::Pending,
        JobState::Scheduled,
        JobState::Running,
        JobState::Failed,
    ];

    /// The lowercase name used in the CLI and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Scheduled => "scheduled",
            JobState::Running => "running",
            JobState::Failed => "failed",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = InputError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| InputError::JobState(s.to_string()))
    }
}

/// One attempt of a job, as recorded on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// 1-based.
    pub number: u32,
    /// When a worker claimed it.
    pub started_at: UnixMillis,
    /// When it ended; `None` while running.
    pub ended_at: Option<UnixMillis>,
    /// Why it did not finish, as a fixed kind; `None` while running, and for
    /// attempts recorded before kinds were kept.
    #[serde(default)]
    pub kind: Option<FailureKind>,
    /// The reason it did not finish, in words (`timeout after 100ms`...);
    /// a handler's own text when `kind` is [`FailureKind::Handler`].
    pub outcome: Option<String>,
}

/// Everything known about a job that is not done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    /// Its id (which names its queue).
    pub id: JobId,
    /// The handler's input.
    pub payload: Payload,
    /// Its state.
    pub state: JobState,
    /// Higher runs first.
    pub priority: i32,
    /// Attempts started so far.
    pub attempts: u32,
    /// Attempts it gets in all.
    pub max_attempts: u32,
    /// Its unique key, if dispatched with one (a handler's as stored,
    /// `@queue:key`).
    pub unique_key: Option<String>,
    /// Its place in a job tree, if a handler dispatched it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lineage: Option<Lineage>,
    /// When it was dispatched.
    pub created_at: UnixMillis,
    /// When it becomes runnable (scheduled jobs); otherwise when it last did.
    pub run_at: UnixMillis,
    /// The kind of the last attempt's error: what tells a host limit from
    /// a handler's own words. `None` with no error, and for errors recorded
    /// before kinds were kept.
    #[serde(default)]
    pub error_kind: Option<FailureKind>,
    /// The last attempt's error, if it had one, in words.
    pub error: Option<String>,
    /// Every attempt so far, oldest first.
    pub history: Vec<AttemptRecord>,
    /// The log captured from the last finished attempt (log lines, stdout,
    /// stderr), bounded by the queue's output limit.
    pub log: String,
}

/// Serde for a `Duration` as whole milliseconds.
pub(crate) mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_follow_the_documented_alphabet() {
        for ok in ["hello", "my-queue-name", "q_1", "9lives"] {
            assert!(QueueName::new(ok).is_ok(), "{ok}");
        }
        let too_long = "a".repeat(MAX_QUEUE_NAME_LEN + 1);
        for bad in [
            "",
            "-x",
            "Hello",
            "a:b",
            "a b",
            "{x}",
            "é",
            too_long.as_str(),
        ] {
            assert!(QueueName::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_queue_name_is_its_tenant_and_its_own_name() {
        let acme = TenantName::new("acme").expect("valid tenant");
        let q = QueueName::in_tenant(&acme, "resize").expect("valid");
        assert_eq!(q.as_str(), "acme/resize");
        assert_eq!((q.tenant(), q.name()), (acme.clone(), "resize"));
        assert_eq!("acme/resize".parse::<QueueName>(), Ok(q.clone()));
        // The default tenant's queues keep their bare names, however
        // written.
        let bare = QueueName::new("resize").expect("valid");
        assert!(bare.tenant().is_default());
        assert_eq!("default/resize".parse::<QueueName>(), Ok(bare.clone()));
        assert_ne!(bare, q);
        assert!(q.is_in(&acme) && !bare.is_in(&acme));
        assert!(bare.is_in(&TenantName::default_tenant()));
        let id: JobId = "acme/resize:7".parse().expect("valid id");
        assert_eq!((id.queue(), id.seq()), (&q, 7));
        assert_eq!(id.to_string(), "acme/resize:7");
        for bad in [
            "acme/",
            "/resize",
            "Acme/resize",
            "a/b/c",
            "acme/{x}",
            "acme:x/y",
        ] {
            assert!(bad.parse::<QueueName>().is_err(), "{bad}");
        }
        // A queue's own name never carries a tenant.
        assert!(QueueName::new("acme/resize").is_err());
    }

    #[test]
    fn a_sibling_stays_in_its_tenant_whatever_it_is_called() {
        let acme = QueueName::parse("acme/resize").expect("valid");
        assert_eq!(
            acme.sibling("thumbs").expect("valid").as_str(),
            "acme/thumbs"
        );
        let default = QueueName::new("resize").expect("valid");
        assert_eq!(default.sibling("thumbs").expect("valid").as_str(), "thumbs");
        for other in [
            "beta/thumbs",
            "default/thumbs",
            "acme/thumbs",
            "/thumbs",
            "../beta/x",
        ] {
            assert!(
                matches!(acme.sibling(other), Err(InputError::OtherTenant(_))),
                "{other}"
            );
            assert!(default.sibling(other).is_err(), "{other}");
        }
    }

    #[test]
    fn a_tenants_handlers_sit_in_its_own_directory() {
        let dir = std::path::Path::new("/srv/handlers");
        let acme = QueueName::parse("acme/my-queue").expect("valid");
        assert_eq!(
            acme.handler_path(dir),
            dir.join("tenants").join("acme").join("my_queue_job.wasm")
        );
        // Cargo's own directories beside the modules are no tenant's.
        let deps = QueueName::parse("deps/my-queue").expect("valid");
        assert_eq!(
            deps.handler_path(dir),
            dir.join("tenants").join("deps").join("my_queue_job.wasm")
        );
        let bare = QueueName::new("my-queue").expect("valid");
        assert_eq!(bare.handler_path(dir), dir.join("my_queue_job.wasm"));
        assert_eq!(acme.config_section(), r#"queues."acme/my-queue""#);
        assert_eq!(bare.config_section(), "queues.my-queue");
    }

    #[test]
    fn handler_file_name_follows_the_cargo_rule() {
        let q = QueueName::new("my-queue-name").expect("valid");
        assert_eq!(q.handler_file_name(), "my_queue_name_job.wasm");
    }

    #[test]
    fn job_ids_round_trip_through_text() {
        let id: JobId = "my-queue:42".parse().expect("valid id");
        assert_eq!(id.queue().as_str(), "my-queue");
        assert_eq!(id.seq(), 42);
        assert_eq!(id.to_string(), "my-queue:42");
        for bad in ["", "q", "q:", ":1", "q:x", "Q:1"] {
            assert!(bad.parse::<JobId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn dispatch_options_are_checked_against_their_limits() {
        let now = 1_000_000;
        let ok = |o: DispatchOptions| o.check(now);
        let year = u64::try_from(MAX_DELAY.as_millis()).expect("fits");
        assert!(ok(DispatchOptions::default()).is_ok());
        let run_at = |run_at| DispatchOptions {
            run_at,
            ..Default::default()
        };
        assert!(ok(run_at(RunAt::After(MAX_DELAY))).is_ok());
        assert!(ok(run_at(RunAt::At(now + year))).is_ok());
        assert!(ok(run_at(RunAt::At(0))).is_ok(), "the past is due at once");
        let err = ok(run_at(RunAt::After(Duration::from_secs(400 * 86_400)))).expect_err("far");
        assert_eq!(
            err.to_string(),
            "delay of 400 days is over the limit of 365 days; dispatch the job when it is nearer due (from a scheduler, or a job that waits in steps)"
        );
        let err = ok(run_at(RunAt::At(now + year + 1))).expect_err("far");
        assert!(
            err.to_string()
                .starts_with("run-at time is just over 365 days from now"),
            "{err}"
        );
        let err = ok(run_at(RunAt::At(u64::MAX))).expect_err("far");
        assert!(
            matches!(err, InputError::RunAtTooFar { .. }),
            "no overflow: {err}"
        );
        assert_eq!(
            MaxAttempts::new(MAX_ATTEMPTS).map(MaxAttempts::get),
            Ok(MAX_ATTEMPTS)
        );
        assert_eq!(MaxAttempts::new(0), Err(InputError::ZeroAttempts));
        assert!(matches!(
            MaxAttempts::new(u32::MAX),
            Err(InputError::TooManyAttempts {
                attempts: u32::MAX,
                limit: MAX_ATTEMPTS
            })
        ));
        assert_eq!("7".parse::<MaxAttempts>().map(u32::from), Ok(7));
        assert_eq!("0".parse::<MaxAttempts>(), Err(InputError::ZeroAttempts));
        assert!(matches!(
            "-1".parse::<MaxAttempts>(),
            Err(InputError::AttemptsNotANumber(_))
        ));
        assert!(
            serde_json::from_str::<MaxAttempts>("0").is_err(),
            "no zero from JSON either"
        );
        assert!(check_unique_key(&"k".repeat(MAX_UNIQUE_KEY_BYTES)).is_ok());
        assert!(check_unique_key("ada@example.com").is_ok());
        for bad in ["", "a\u{1b}[2J", "@q:k", "tab\t"] {
            assert!(
                matches!(check_unique_key(bad), Err(InputError::UniqueKey { .. })),
                "{bad:?}"
            );
        }
        let err = check_unique_key(&"k".repeat(1 << 20)).expect_err("long");
        assert_eq!(
            err.to_string(),
            "unique key is 1048576 bytes, over the limit of 256 bytes; use a short identifier (a hash of a long value, say)"
        );
    }

    #[test]
    fn run_at_resolves_to_a_due_time() {
        let now = 1_000_000;
        assert_eq!(RunAt::Now.due(now), now);
        assert_eq!(RunAt::After(Duration::from_secs(2)).due(now), now + 2000);
        assert_eq!(RunAt::At(5).due(now), 5, "the past is kept: due at once");
        assert_eq!(RunAt::After(Duration::MAX).due(now), u64::MAX);
    }

    #[test]
    fn spans_read_naturally_and_never_round_onto_a_limit() {
        assert_eq!(Span(MAX_DELAY).to_string(), "365 days");
        assert_eq!(Span(Duration::from_secs(90)).to_string(), "90 s");
        assert_eq!(Span(Duration::from_millis(250)).to_string(), "250 ms");
        assert_eq!(
            Span(Duration::from_secs(3 * 3600 + 1800)).to_string(),
            "3.5 hours"
        );
        assert_eq!(
            Span(MAX_DELAY + Duration::from_millis(1)).to_string(),
            "just over 365 days"
        );
        assert!(
            Span(Duration::from_millis(u64::MAX))
                .to_string()
                .ends_with(" days")
        );
    }

    #[test]
    fn follow_ups_inherit_their_root_and_scope_their_keys() {
        let id = |s: &str| s.parse::<JobId>().expect("valid id");
        let mut root = JobRecord {
            id: id("a:1"),
            payload: Payload::new("{}").expect("valid"),
            state: JobState::Running,
            priority: 1,
            attempts: 1,
            max_attempts: 4,
            unique_key: None,
            lineage: None,
            created_at: 0,
            run_at: 0,
            error_kind: None,
            error: None,
            history: Vec::new(),
            log: String::new(),
        };
        let child = Lineage::child_of(&root);
        assert_eq!(
            (child.root.clone(), child.parent.clone(), child.depth),
            (id("a:1"), id("a:1"), 1)
        );
        assert_eq!(child.scoped_key("k"), "@a:k");
        root.id = id("b:7");
        root.lineage = Some(child);
        let grandchild = Lineage::child_of(&root);
        assert_eq!(
            (
                grandchild.root.clone(),
                grandchild.parent.clone(),
                grandchild.depth
            ),
            (id("a:1"), id("b:7"), 2)
        );
        assert_eq!(grandchild.scoped_key("@x:y"), "@b:@x:y");
    }

    #[test]
    fn payloads_must_be_one_json_document_within_the_limit() {
        assert!(Payload::new(r#"{"a": [1, 2]}"#).is_ok());
        assert!(Payload::new("null").is_ok());
        assert!(matches!(Payload::new("{"), Err(InputError::PayloadJson(_))));
        assert!(matches!(
            Payload::new("1 2"),
            Err(InputError::PayloadJson(_))
        ));
        let big = format!("\"{}\"", "x".repeat(MAX_PAYLOAD_BYTES));
        assert!(matches!(
            Payload::new(big),
            Err(InputError::PayloadTooLarge { .. })
        ));
    }
}

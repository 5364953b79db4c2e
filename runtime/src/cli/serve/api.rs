//! The JSON API under `/v1`: jobs, queues, workers and tenants.
//!
//! Every handler reads names in its caller's tenant, as the CLI does with
//! `--tenant`: a tenant token's requests name its queues bare (`resize`),
//! and any name of another tenant is refused. The admin writes names in
//! full (`acme/resize`, percent-encoded in a path as `acme%2Fresize`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use futures_util::StreamExt;
use runtime::job::{
    DispatchOptions, JobId, MAX_PAYLOAD_BYTES, MaxAttempts, NewJob, Payload, QueueName, RunAt,
};
use runtime::queue::{Clock, Page, StateCounts, SystemClock, WorkerInfo};
use runtime::tenant::{self, Usage};
use runtime::{JobRecord, JobState, TenantName};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::problem::Problem;
use super::{AppState, Who};

/// Largest body of a single dispatch: the largest payload and room for
/// its options and JSON escapes.
pub const MAX_JOB_BODY: usize = MAX_PAYLOAD_BYTES + 64 * 1024;

/// Largest body of a batch.
pub const MAX_BATCH_BODY: usize = 16 * 1024 * 1024;

/// Most jobs in one batch: one all-or-nothing call to the queue server,
/// kept as short as the CLI's bulk chunks so other clients are not held up.
pub const MAX_BATCH_JOBS: usize = 1_000;

/// Most jobs in one listing page.
const MAX_LIMIT: usize = 1_000;

/// A job to dispatch: its payload and, optionally, how.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DispatchBody {
    /// What the handler gets: any JSON, at most 1 MiB.
    #[schema(value_type = Value)]
    payload: Box<RawValue>,
    /// Higher runs first (default 1).
    priority: Option<i32>,
    /// Attempts in all, 1 to 100 (default 4).
    max_attempts: Option<u32>,
    /// Run no sooner than this from now: `30s`, `5m`, `1h 30m`; at most 365 days.
    delay: Option<String>,
    /// Run no sooner than this time: RFC 3339 with a zone, e.g.
    /// `2026-12-01T09:00:00Z`; at most 365 days from now.
    run_at: Option<String>,
    /// While a job with this key is pending, scheduled or running in the
    /// queue, dispatching returns that job instead of adding another.
    unique_key: Option<String>,
}

/// A dispatched job.
#[derive(Debug, Serialize, ToSchema)]
pub struct Dispatched {
    /// Its id, `queue:number`.
    id: String,
    /// Its queue.
    queue: String,
    /// `pending`, `scheduled` or `running`; `done` when a job of the same
    /// unique key was returned and has finished since.
    state: String,
}

/// A dispatched batch.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchDispatched {
    /// Jobs enqueued.
    count: usize,
    /// Their ids, in the order given.
    ids: Vec<String>,
}

/// One attempt of a job.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptView {
    /// 1-based.
    number: u32,
    /// When a worker claimed it, ms since the Unix epoch.
    started_at: u64,
    /// When it ended; `null` while running.
    ended_at: Option<u64>,
    /// Why it did not finish, as a fixed kind (`timeout`, `memory`,
    /// `trap`, `handler`...); `null` when it did, or while running.
    kind: Option<&'static str>,
    /// The reason in words.
    error: Option<String>,
}

/// A job that is not done (done jobs are removed).
#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    /// `queue:number`.
    id: String,
    queue: String,
    #[schema(value_type = String, example = "pending")]
    state: JobState,
    /// The handler's input, as dispatched: any JSON.
    #[schema(value_type = Value)]
    payload: Box<RawValue>,
    priority: i32,
    /// Attempts started so far.
    attempts: u32,
    max_attempts: u32,
    unique_key: Option<String>,
    /// ms since the Unix epoch.
    created_at: u64,
    /// When it becomes runnable (scheduled), else when it last did; ms.
    run_at: u64,
    /// The last attempt's error kind.
    error_kind: Option<&'static str>,
    /// The last attempt's error, in words.
    error: Option<String>,
    /// Every attempt, oldest first.
    history: Vec<AttemptView>,
    /// The log of the last finished attempt (log lines, stdout, stderr).
    log: String,
    /// The job whose handler dispatched this one, if any.
    parent: Option<String>,
}

impl JobView {
    fn of(job: JobRecord) -> Self {
        let payload = RawValue::from_string(job.payload.as_str().to_string())
            .unwrap_or_else(|_| null_value());
        JobView {
            id: job.id.to_string(),
            queue: job.id.queue().to_string(),
            state: job.state,
            payload,
            priority: job.priority,
            attempts: job.attempts,
            max_attempts: job.max_attempts,
            unique_key: job.unique_key,
            created_at: job.created_at,
            run_at: job.run_at,
            error_kind: job.error_kind.map(|k| k.as_str()),
            error: job.error,
            history: job
                .history
                .into_iter()
                .map(|a| AttemptView {
                    number: a.number,
                    started_at: a.started_at,
                    ended_at: a.ended_at,
                    kind: a.kind.map(|k| k.as_str()),
                    error: a.outcome,
                })
                .collect(),
            log: job.log,
            parent: job.lineage.map(|l| l.parent.to_string()),
        }
    }
}

fn null_value() -> Box<RawValue> {
    RawValue::from_string("null".to_string()).unwrap_or_default()
}

/// A page of jobs.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobPage {
    jobs: Vec<JobView>,
    /// Pass as `cursor` for the next page; `null` on the last. A cursor is
    /// a position: jobs leaving the state between pages shift the pages
    /// after them.
    next_cursor: Option<String>,
}

/// Which jobs to list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// `pending` (default), `scheduled`, `running` or `failed`.
    state: Option<String>,
    /// Jobs per page, 1 to 1000 (default 20).
    limit: Option<usize>,
    /// From the previous page's `next_cursor`.
    cursor: Option<String>,
}

/// A queue's counts and whether it is paused.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueView {
    pub queue: String,
    #[serde(flatten)]
    pub counts: StateCounts,
    pub paused: bool,
}

/// Every queue the caller sees.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueList {
    queues: Vec<QueueView>,
}

/// What a pause or resume did.
#[derive(Debug, Serialize, ToSchema)]
pub struct Paused {
    queue: String,
    /// Whether the queue is paused now.
    paused: bool,
    /// Whether this request changed that.
    changed: bool,
}

/// How many jobs an action took.
#[derive(Debug, Serialize, ToSchema)]
pub struct Affected {
    queue: String,
    /// Jobs retried, or removed.
    count: u64,
}

/// A retried job.
#[derive(Debug, Serialize, ToSchema)]
pub struct Retried {
    id: String,
    /// Always `pending`.
    state: &'static str,
}

/// The live workers.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkerList {
    workers: Vec<WorkerInfo>,
}

/// A tenant and what it uses of its quotas.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantView {
    pub name: String,
    /// Whether it has a token (`runtime tenants create`).
    pub registered: bool,
    pub usage: Usage,
}

/// Every tenant.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantList {
    tenants: Vec<TenantView>,
}

/// A tenant to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    /// 1 to 64 of a-z, 0-9, '-', '_'.
    name: String,
}

/// A tenant created, with its token: shown this once, kept only as a hash.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantCreated {
    name: String,
    token: String,
}

fn queue_in(caller: &Caller, written: &str) -> Result<QueueName, Problem> {
    Ok(QueueName::read_in(caller.tenant(), written)?)
}

fn job_in(caller: &Caller, written: &str) -> Result<JobId, Problem> {
    Ok(JobId::read_in(caller.tenant(), written)?)
}

pub fn no_job(id: &JobId) -> Problem {
    Problem::not_found(format!(
        "no job {id}: it may be done (done jobs are removed) or deleted"
    ))
}

/// Bytes of request bodies held at once by every request being read,
/// server-wide, at most: past it a request is answered 503, so slow or
/// stalled uploads cannot pile up memory.
pub const BODIES_HELD: usize = 256 << 20;

/// How long a request body may take to arrive, in all.
const BODY_TIME: Duration = Duration::from_secs(60);

/// The bytes of request bodies being read, against [`BODIES_HELD`].
#[derive(Debug, Default)]
pub struct BodyBudget {
    used: AtomicUsize,
}

/// What one body holds of the budget, given back when it is dropped.
struct Held<'a> {
    budget: &'a BodyBudget,
    bytes: usize,
}

impl Held<'_> {
    fn add(&mut self, bytes: usize) -> Result<(), Problem> {
        let before = self.budget.used.fetch_add(bytes, Ordering::Relaxed);
        self.bytes += bytes;
        if before + bytes > BODIES_HELD {
            let mut p = Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is reading too many large request bodies at once: try again shortly",
            );
            p.retry_after = Some(1);
            return Err(p);
        }
        Ok(())
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// A request body read chunk by chunk: at most `limit` bytes, all within
/// [`BODY_TIME`], held against the server's [`BodyBudget`].
struct Chunks<'a> {
    stream: axum::body::BodyDataStream,
    held: Held<'a>,
    deadline: tokio::time::Instant,
    limit: usize,
}

impl<'a> Chunks<'a> {
    fn new(budget: &'a BodyBudget, body: Body, limit: usize) -> Self {
        Chunks {
            stream: body.into_data_stream(),
            held: Held { budget, bytes: 0 },
            deadline: tokio::time::Instant::now() + BODY_TIME,
            limit,
        }
    }

    async fn next(&mut self) -> Result<Option<Bytes>, Problem> {
        let next = tokio::time::timeout_at(self.deadline, self.stream.next())
            .await
            .map_err(|_| {
                Problem::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the request body took longer than {} s to arrive",
                        BODY_TIME.as_secs()
                    ),
                )
            })?;
        match next {
            None => Ok(None),
            Some(Err(e)) => Err(Problem::bad_request(format!("reading the body: {e}"))),
            Some(Ok(chunk)) => {
                if self.held.bytes + chunk.len() > self.limit {
                    return Err(too_large(self.limit));
                }
                self.held.add(chunk.len())?;
                Ok(Some(chunk))
            }
        }
    }
}

/// Reads a whole body of at most `limit` bytes.
pub async fn read_body(budget: &BodyBudget, body: Body, limit: usize) -> Result<Bytes, Problem> {
    let mut chunks = Chunks::new(budget, body, limit);
    let mut all = Vec::new();
    while let Some(chunk) = chunks.next().await? {
        all.extend_from_slice(&chunk);
    }
    Ok(all.into())
}

fn too_large(limit: usize) -> Problem {
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "the request body is over {}: a payload may be at most 1 MiB; send big batches as several requests",
            runtime::error::size(limit as u64)
        ),
    )
}

/// The job `body` asks for, checked as the queue server would check it.
fn new_job(queue: &QueueName, body: &[u8], now: u64) -> Result<NewJob, Problem> {
    let body: DispatchBody = serde_json::from_slice(body)
        .map_err(|e| Problem::bad_request(format!("invalid job: {e}")))?;
    let payload = Payload::new(body.payload.get())?;
    let run_at = match (&body.delay, &body.run_at) {
        (Some(_), Some(_)) => {
            return Err(Problem::bad_request("give `delay` or `run_at`, not both"));
        }
        (Some(d), None) => RunAt::After(
            runtime::time::parse_delay(d)
                .map_err(|e| Problem::bad_request(format!("invalid value for delay: {e}")))?,
        ),
        (None, Some(t)) => RunAt::At(
            runtime::time::parse_run_at(t, now)
                .map_err(|e| Problem::bad_request(format!("invalid value for run_at: {e}")))?,
        ),
        (None, None) => RunAt::Now,
    };
    let options = DispatchOptions {
        priority: body.priority.unwrap_or(runtime::job::DEFAULT_PRIORITY),
        run_at,
        max_attempts: match body.max_attempts {
            Some(n) => MaxAttempts::new(n)?,
            None => MaxAttempts::DEFAULT,
        },
        unique_key: body.unique_key,
    };
    let job = NewJob {
        queue: queue.clone(),
        payload,
        options,
    };
    job.check(now)?;
    Ok(job)
}

/// Dispatch one job.
#[utoipa::path(
    post, path = "/v1/queues/{queue}/jobs", tag = "jobs",
    params(("queue" = String, Path, description = "The queue (a tenant's bare name, or `tenant/queue` for the admin)")),
    request_body = DispatchBody,
    responses(
        (status = 201, description = "Enqueued (or, with a unique key held, the job holding it)", body = Dispatched),
        (status = 400, description = "Invalid job", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 1 MiB and 64 KiB, or a payload over 1 MiB", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "More jobs at once than the tenant's dispatch_burst", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the tenant's rate or backlog; see Retry-After", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])),
)]
pub async fn dispatch(
    State(state): State<Arc<AppState>>,
    Who(caller): Who,
    Path(queue): Path<String>,
    body: Body,
) -> Result<(StatusCode, Json<Dispatched>), Problem> {
    let queue = queue_in(&caller, &queue)?;
    let body = read_body(&state.bodies, body, MAX_JOB_BODY).await?;
    let job = new_job(&queue, &body, SystemClock.now())?;
    let unique = job.options.unique_key.is_some();
    let scheduled = job.options.run_at != RunAt::Now;
    let jobs = &state.backend.jobs;
    let id = jobs.dispatch(job).await?;
    let state = if unique {
        match jobs.get(&id).await? {
            Some(record) => record.state.as_str(),
            None => "done",
        }
    } else if scheduled {
        JobState::Scheduled.as_str()
    } else {
        JobState::Pending.as_str()
    };
    Ok((
        StatusCode::CREATED,
        Json(Dispatched {
            id: id.to_string(),
            queue: queue.to_string(),
            state: state.to_string(),
        }),
    ))
}

/// Dispatch up to 1,000 jobs at once, all or none.
#[utoipa::path(
    post, path = "/v1/queues/{queue}/batch", tag = "jobs",
    params(("queue" = String, Path, description = "The queue")),
    request_body(
        description = "A JSON array of jobs, or NDJSON: one job object per line (blank lines skipped). Each job is shaped as a single dispatch's body.",
        content(
            (Vec<DispatchBody> = "application/json"),
            (DispatchBody = "application/x-ndjson"),
        ),
    ),
    responses(
        (status = 201, description = "Every job enqueued", body = BatchDispatched),
        (status = 400, description = "A job is invalid (its 0-based `index` is named); nothing was enqueued", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Over 16 MiB or 1,000 jobs; nothing was enqueued", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "More jobs than the tenant's dispatch_burst; nothing was enqueued", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the tenant's rate or backlog; nothing was enqueued", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])),
)]
pub async fn batch(
    State(state): State<Arc<AppState>>,
    Who(caller): Who,
    Path(queue): Path<String>,
    body: Body,
) -> Result<(StatusCode, Json<BatchDispatched>), Problem> {
    let queue = queue_in(&caller, &queue)?;
    let now = SystemClock.now();
    let jobs = read_batch(&state.bodies, &queue, body, now).await?;
    if jobs.is_empty() {
        return Err(Problem::bad_request(
            "the batch has no jobs: send a JSON array of jobs, or one job object per line",
        ));
    }
    let ids = state.backend.jobs.dispatch_many(jobs).await?;
    Ok((
        StatusCode::CREATED,
        Json(BatchDispatched {
            count: ids.len(),
            ids: ids.iter().map(ToString::to_string).collect(),
        }),
    ))
}

/// The jobs of a batch body, each checked; the first bad one ends the
/// read with its index. NDJSON is read line by line as it arrives, each
/// byte looked at once.
async fn read_batch(
    budget: &BodyBudget,
    queue: &QueueName,
    body: Body,
    now: u64,
) -> Result<Vec<NewJob>, Problem> {
    let mut chunks = Chunks::new(budget, body, MAX_BATCH_BODY);
    let mut jobs = Vec::new();
    // The bytes not yet taken as lines; the first `scanned` hold no newline.
    let mut pending: Vec<u8> = Vec::new();
    let mut scanned = 0usize;
    // `None` until the first non-blank byte says which form it is.
    let mut array: Option<bool> = None;
    let take_line = |line: &[u8], jobs: &mut Vec<NewJob>| -> Result<(), Problem> {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        if jobs.len() == MAX_BATCH_JOBS {
            return Err(too_many_jobs());
        }
        let index = jobs.len();
        jobs.push(new_job(queue, line, now).map_err(|p| p.at(index))?);
        Ok(())
    };
    while let Some(chunk) = chunks.next().await? {
        if array.is_none() {
            array = chunk
                .iter()
                .find(|b| !b.is_ascii_whitespace())
                .map(|&b| b == b'[');
        }
        pending.extend_from_slice(&chunk);
        if array != Some(false) {
            continue;
        }
        let mut start = 0;
        while let Some(at) = pending[scanned..].iter().position(|&b| b == b'\n') {
            let end = scanned + at;
            take_line(&pending[start..end], &mut jobs)?;
            start = end + 1;
            scanned = start;
        }
        pending.drain(..start);
        scanned = pending.len();
        if pending.len() > MAX_JOB_BODY {
            return Err(Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "a line of the batch is over {}: a job may be at most 1 MiB of payload and its options; nothing was enqueued",
                    runtime::error::size(MAX_JOB_BODY as u64)
                ),
            )
            .at(jobs.len()));
        }
    }
    if array == Some(true) {
        let elements: Vec<&RawValue> = serde_json::from_slice(&pending).map_err(|e| {
            Problem::bad_request(format!("the batch is not a JSON array of jobs: {e}"))
        })?;
        if elements.len() > MAX_BATCH_JOBS {
            return Err(too_many_jobs());
        }
        for (index, element) in elements.iter().enumerate() {
            jobs.push(new_job(queue, element.get().as_bytes(), now).map_err(|p| p.at(index))?);
        }
    } else {
        take_line(&pending, &mut jobs)?;
    }
    Ok(jobs)
}

fn too_many_jobs() -> Problem {
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "more than {MAX_BATCH_JOBS} jobs in one batch: send them as several batches; nothing was enqueued"
        ),
    )
}

/// One job.
#[utoipa::path(
    get, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "The job id, `queue:number`")),
    responses(
        (status = 200, body = JobView),
        (status = 404, description = "No such job (done jobs are removed)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])),
)]
pub async fn get_job(
    State(state): State<Arc<AppState>>,
    Who(caller): Who,
    Path(id): Path<String>,
) -> Result<Json<JobView>, Problem> {
    let id = job_in(&caller, &id)?;
    match state.backend.jobs.get(&id).await? {
        Some(job) => Ok(Json(JobView::of(job))),
        None => Err(no_job(&id)),
    }
}

/// A queue's jobs in one state, in the order they will be taken.
#[utoipa::path(
    get, path = "/v1/queues/{queue}/jobs", tag = "jobs",
    params(("queue" = String, Path, description = "The queue"), ListQuery),
    responses(
        (status = 200, body = JobPage),
        (status = 400, description = "Bad state, limit or cursor", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])),
)]
pub async fn list_jobs(
    State(state): State<Arc<AppState>>,
    Who(caller): Who,
    Path(queue): Path<String>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<JobPage>, Problem> {
    let queue = queue_in(&caller, &queue)?;
    let Query(query) = query.map_err(|e| Problem::bad_request(e.body_text()))?;
    let job_state: JobState = query.state.as_deref().unwrap_or("pending").parse()?;
    let limit = query.limit.unwrap_or(20);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(Problem::bad_request(format!(
            "limit {limit} is out of range: give 1 to {MAX_LIMIT}"
        )));
    }
    let offset = match &query.cursor {
        None => 0,
        Some(c) => c
            .parse::<usize>()
            .ok()
            .filter(|&o| o < 1 << 50)
            .ok_or_else(|| {
                Problem::bad_request(format!(
                    "invalid cursor {c:?}: pass a previous page's next_cursor as it was"
                ))
            })?,
    };
    // One more than asked says whether a next page exists.
    let page = Page {
        offset,
        limit: limit + 1,
    };
    let mut jobs = state.backend.jobs.list(&queue, job_state, page).await?;
    let next_cursor = (jobs.len() > limit).then(|| (offset + limit).to_string());
    jobs.truncate(limit);
    Ok(Json(JobPage {
        jobs: jobs.into_iter().map(JobView::of).collect(),
        next_cursor,
    }))
}

/// Run a failed job again with a fresh set of attempts.
#[utoipa::path(
    post, path = "/v1/jobs/{id}/retry", tag = "jobs",
    params(("id" = String, Path, description = "The job id")),
    responses(
        (status = 200, body = Retried),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The job is not failed", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])),
)]
pub async fn retry_job(
    State(state): State<Arc<AppState>>,
    Who(caller): Who,
    Path(id): Path<String>,
) -> Result<Json<Retried>, Problem> {
    let id = job_in(&caller, &id)?;
    state.backend.jobs.retry(&id).await?;
    Ok(Json(Retried {
        id: id.to_string(),
        state: JobState::Pending.as_str(),
    }))
}

/// Remove a job that is not running.
#[utoipa::path(
    delete, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "The job id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The job is running", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])),
)]
pub async fn delete_job(
    State(state): State<Arc<AppState>>,
    Who(caller): Who,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    let id = job_in(&caller, &id)?;
    if state.backend.jobs.delete(&id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(no_job(&id))
    }
}

/// Retry every failed job of a queue.
#[utoipa::path(
    post, path = "/v1/queues/{queue}/retry-failed", tag = "queues",
    params(("queue" = String, Path, description = "The queue")),
    responses((status = 200, body = Affected)),
    security(("bearer" = [])),
)]
pub async fn retry_failed(
    State(state): State<Arc<AppState>>,
    Who(caller): Who,
    Path(queue): Path<String>,
) -> Result<Json<Affected>, Problem> {
    let queue = queue_in(&caller, &queue)?;
    let count = runtime::queue::retry_all_failed(&*state.backend.jobs, &queue).await?;
    Ok(Json(Affected {
        queue: queue.to_string(),
        count,
    }))
}

/// Remove every job of a queue that is not running.
#[utoipa::path(
    post, path = "/v1/queues/{queue}/purge", tag = "queues",
    params(("queue" = String, Path, description = "The queue")),
    responses((status = 200, body = Affected)),
    security(("bearer" = [])),
)]
pub async fn purge(
    State(state): State<Arc<AppState>>,
    Who(caller): Who,
    Path(queue): Path<String>,
) -> Result<Json<Affected>, Problem> {
    let queue = queue_in(&caller, &queue)?;
    let count = state.backend.jobs.purge(&queue).await?;
    Ok(Json(Affected {
        queue: queue.to_string(),
        count,
    }))
}

/// Pause a queue: no worker claims its jobs, which stay where they are.
#[utoipa::path(
    post, path = "/v1/queues/{queue}/pause", tag = "queues",
    params(("queue" = String, Path, description = "The queue")),
    responses((status = 200, body = Paused)),
    security(("bearer" = [])),
)]
pub async fn pause(
    State(state): State<Arc<AppState>>,
    who: Who,
    Path(queue): Path<String>,
) -> Result<Json<Paused>, Problem> {
    set_paused(&state, &who.0, &queue, true).await
}

/// Resume a paused queue.
#[utoipa::path(
    post, path = "/v1/queues/{queue}/resume", tag = "queues",
    params(("queue" = String, Path, description = "The queue")),
    responses((status = 200, body = Paused)),
    security(("bearer" = [])),
)]
pub async fn resume(
    State(state): State<Arc<AppState>>,
    who: Who,
    Path(queue): Path<String>,
) -> Result<Json<Paused>, Problem> {
    set_paused(&state, &who.0, &queue, false).await
}

async fn set_paused(
    state: &AppState,
    caller: &Caller,
    queue: &str,
    paused: bool,
) -> Result<Json<Paused>, Problem> {
    let queue = queue_in(caller, queue)?;
    let changed = state.backend.jobs.set_paused(&queue, paused).await?;
    Ok(Json(Paused {
        queue: queue.to_string(),
        paused,
        changed,
    }))
}

/// Every queue the caller sees, with its counts.
#[utoipa::path(
    get, path = "/v1/queues", tag = "queues",
    responses((status = 200, body = QueueList)),
    security(("bearer" = [])),
)]
pub async fn queues(
    State(state): State<Arc<AppState>>,
    Who(caller): Who,
) -> Result<Json<QueueList>, Problem> {
    Ok(Json(QueueList {
        queues: queue_views(&state, &caller).await?,
    }))
}

/// The queues `caller` sees, with counts and pauses.
pub async fn queue_views(state: &AppState, caller: &Caller) -> Result<Vec<QueueView>, Problem> {
    let jobs = &*state.backend.jobs;
    let rows =
        runtime::queue::counts_of(jobs, |q| caller.tenant().is_none_or(|t| q.is_in(t))).await?;
    let names: Vec<QueueName> = rows.iter().map(|(q, _)| q.clone()).collect();
    let paused = jobs.paused(&names).await?;
    Ok(rows
        .into_iter()
        .zip(paused)
        .map(|((q, counts), paused)| QueueView {
            queue: q.to_string(),
            counts,
            paused,
        })
        .collect())
}

/// One queue's counts.
#[utoipa::path(
    get, path = "/v1/queues/{queue}", tag = "queues",
    params(("queue" = String, Path, description = "The queue")),
    responses((status = 200, body = QueueView)),
    security(("bearer" = [])),
)]
pub async fn queue(
    State(state): State<Arc<AppState>>,
    Who(caller): Who,
    Path(queue): Path<String>,
) -> Result<Json<QueueView>, Problem> {
    let queue = queue_in(&caller, &queue)?;
    let jobs = &state.backend.jobs;
    let counts = jobs.counts(&queue).await?;
    let paused = jobs
        .paused(std::slice::from_ref(&queue))
        .await?
        .first()
        .copied()
        .unwrap_or(false);
    Ok(Json(QueueView {
        queue: queue.to_string(),
        counts,
        paused,
    }))
}

/// The live workers. A tenant sees those serving its queues (or every
/// queue), with only its own queues named.
#[utoipa::path(
    get, path = "/v1/workers", tag = "workers",
    responses((status = 200, body = WorkerList)),
    security(("bearer" = [])),
)]
pub async fn workers(
    State(state): State<Arc<AppState>>,
    Who(caller): Who,
) -> Result<Json<WorkerList>, Problem> {
    Ok(Json(WorkerList {
        workers: worker_list(&state, &caller).await?,
    }))
}

/// The workers `caller` sees, sorted by host and pid.
pub async fn worker_list(state: &AppState, caller: &Caller) -> Result<Vec<WorkerInfo>, Problem> {
    let mut workers = state.backend.workers.workers().await?;
    if let Some(tenant) = caller.tenant() {
        let own = |served: &String| {
            served == "*"
                || served == &format!("{tenant}/*")
                || QueueName::parse(served).is_ok_and(|q| q.is_in(tenant))
        };
        workers.retain_mut(|w| {
            w.queues.retain(own);
            !w.queues.is_empty()
        });
    }
    workers.sort_by(|a, b| (&a.host, a.pid).cmp(&(&b.host, b.pid)));
    Ok(workers)
}

/// Every tenant, registered or with queues, and its use of its quotas
/// (admin only).
#[utoipa::path(
    get, path = "/v1/tenants", tag = "tenants",
    responses(
        (status = 200, body = TenantList),
        (status = 403, description = "Not the admin", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])),
)]
pub async fn tenants(
    State(state): State<Arc<AppState>>,
    Who(caller): Who,
) -> Result<Json<TenantList>, Problem> {
    admin_only(&caller)?;
    Ok(Json(TenantList {
        tenants: tenant_views(&state, None).await?,
    }))
}

/// One tenant's use of its quotas: the admin's, or the tenant's own.
#[utoipa::path(
    get, path = "/v1/tenants/{tenant}", tag = "tenants",
    params(("tenant" = String, Path, description = "The tenant")),
    responses(
        (status = 200, body = TenantView),
        (status = 403, description = "Another tenant's", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant: no token and no queues", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])),
)]
pub async fn tenant(
    State(state): State<Arc<AppState>>,
    Who(caller): Who,
    Path(name): Path<String>,
) -> Result<Json<TenantView>, Problem> {
    let name = TenantName::new(name)?;
    if caller.tenant().is_some_and(|t| *t != name) {
        return Err(Problem::forbidden(format!(
            "tenant {name} is not yours: a tenant token sees only its own tenant"
        )));
    }
    let mut views = tenant_views(&state, Some(&name)).await?;
    views.pop().map(Json).ok_or_else(|| {
        Problem::not_found(format!("no tenant {name}: it has no token and no queues"))
    })
}

/// Tenants with their usage: every one, or only `only`.
pub async fn tenant_views(
    state: &AppState,
    only: Option<&TenantName>,
) -> Result<Vec<TenantView>, Problem> {
    let backend = &state.backend;
    let records = backend.tenants.tenant_records().await?;
    let queues =
        runtime::queue::counts_of(&*backend.jobs, |q| only.is_none_or(|t| q.is_in(t))).await?;
    let mut names: Vec<(TenantName, bool)> = records
        .iter()
        .map(|r| (r.name.clone(), true))
        .chain(queues.iter().map(|(q, _)| (q.tenant(), false)))
        .filter(|(t, _)| only.is_none_or(|o| o == t))
        .collect();
    names.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    names.dedup_by(|a, b| a.0 == b.0);
    let quotas = state.config.quotas();
    let now = SystemClock.now();
    let mut views = Vec::with_capacity(names.len());
    for (name, registered) in names {
        let settings = state.config.tenant(&name);
        let usage =
            tenant::usage(backend, &name, &settings, quotas.of(&name), &queues, now).await?;
        views.push(TenantView {
            name: name.to_string(),
            registered,
            usage,
        });
    }
    Ok(views)
}

/// Create a tenant with a token (admin only). The token is in this answer
/// only.
#[utoipa::path(
    post, path = "/v1/tenants", tag = "tenants",
    request_body = NewTenant,
    responses(
        (status = 201, body = TenantCreated),
        (status = 400, description = "An invalid name or body", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the admin", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "It exists", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 4 KiB", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])),
)]
pub async fn create_tenant(
    State(state): State<Arc<AppState>>,
    Who(caller): Who,
    body: Body,
) -> Result<(StatusCode, Json<TenantCreated>), Problem> {
    admin_only(&caller)?;
    let body = read_body(&state.bodies, body, 4096).await?;
    let new: NewTenant = serde_json::from_slice(&body)
        .map_err(|e| Problem::bad_request(format!("invalid tenant: {e}")))?;
    let name = TenantName::new(new.name)?;
    match tenant::create(&*state.backend.tenants, &name, SystemClock.now()).await {
        Ok((_, token)) => Ok((
            StatusCode::CREATED,
            Json(TenantCreated {
                name: name.to_string(),
                token: token.expose().to_string(),
            }),
        )),
        Err(e @ tenant::TenantError::Exists(_)) => {
            Err(Problem::new(StatusCode::CONFLICT, e.to_string()))
        }
        Err(tenant::TenantError::Queue(e)) => Err(e.into()),
        Err(e) => Err(Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            e.to_string(),
        )),
    }
}

fn admin_only(caller: &Caller) -> Result<(), Problem> {
    match caller {
        Caller::Admin => Ok(()),
        Caller::Tenant(t) => Err(Problem::forbidden(format!(
            "only the admin token sees every tenant; tenant {t}'s token sees /v1/tenants/{t}"
        ))),
    }
}

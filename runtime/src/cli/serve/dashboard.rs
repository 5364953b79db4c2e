//! The web dashboard: server-rendered pages over the same calls as the
//! API, with a little JavaScript (confirmations, live counts) from an
//! embedded file.
//!
//! Safety of what is shown: every text that reaches a page, guest text
//! above all (payloads, logs, errors), goes through [`esc`] (HTML) after
//! [`runtime::text`] (controls and invisible characters made visible);
//! every response carries a Content-Security-Policy that allows scripts
//! only from this server's own files, so even a missed escape would run
//! no script. Changes are POSTed forms carrying a CSRF token tied to the
//! session, and the session cookie is `HttpOnly` and `SameSite=Strict`.

use std::fmt::Write;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use runtime::job::{JobId, QueueName};
use runtime::queue::{Clock, Page, SystemClock};
use runtime::{JobRecord, JobState, text};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::AppState;
use super::api::{self, read_body};
use super::auth::Caller;
use super::problem::Problem;

/// The session cookie: the token the user logged in with.
pub const COOKIE: &str = "runtime_token";

/// Jobs per page of a queue.
const PAGE: usize = 25;

/// The Content-Security-Policy of every response: scripts, styles and
/// images only from this server, no inline script or style, no framing,
/// forms only to this server.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const CSS: &str = include_str!("assets/app.css");
const JS: &str = include_str!("assets/app.js");

/// `s` safe inside HTML text and quoted attributes.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Guest text on one line: made visible, then escaped.
fn guest(s: &str) -> String {
    esc(&text::escape(s))
}

/// Guest text of many lines (a log): each line made visible, then escaped.
fn guest_lines(s: &str) -> String {
    let lines: Vec<String> = text::lines(s).map(|l| esc(&l)).collect();
    lines.join("\n")
}

/// `s` as one path segment.
fn seg(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Who the browser is, from its session cookie; the admin when the
/// server takes requests without tokens.
async fn viewer(state: &AppState, headers: &HeaderMap) -> Result<Viewer, Response> {
    let Some(admin) = state.auth.admin_hash() else {
        return Ok(Viewer {
            caller: Caller::Admin,
            session: String::new(),
        });
    };
    let Some(token) = cookie(headers) else {
        return Err(Redirect::to("/login").into_response());
    };
    match state
        .auth
        .check(&*state.backend.tenants, admin, &token)
        .await
    {
        Ok(caller) => {
            state.admit(&caller).map_err(IntoResponse::into_response)?;
            Ok(Viewer {
                caller,
                session: token,
            })
        }
        Err(p) if p.status == StatusCode::UNAUTHORIZED.as_u16() => {
            Err(Redirect::to("/login?expired=1").into_response())
        }
        Err(p) => Err(p.into_response()),
    }
}

impl FromRequestParts<Arc<AppState>> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Response> {
        viewer(state, &parts.headers).await
    }
}

/// The session token of a request's cookie.
pub fn cookie(headers: &HeaderMap) -> Option<String> {
    cookie_named(headers, COOKIE)
}

/// The value of cookie `name`, decoded; `None` if absent or empty.
fn cookie_named(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| {
            url::form_urlencoded::parse(format!("t={value}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        })
        .filter(|t| !t.is_empty())
}

/// A logged-in browser (an extractor: a page's handler takes one, and a
/// browser without a session is sent to the login page).
pub struct Viewer {
    caller: Caller,
    /// Its session token ("" without tokens).
    session: String,
}

impl Viewer {
    fn csrf(&self, state: &AppState) -> String {
        let mut h = Sha256::new();
        h.update(b"runtime dashboard csrf\0");
        h.update(state.csrf_secret);
        h.update(b"\0");
        h.update(self.session.as_bytes());
        runtime::tenant::hex(&h.finalize())
    }

    /// Whether a form's `csrf` field is this session's.
    fn csrf_ok(&self, state: &AppState, given: &str) -> bool {
        runtime::tenant::same_secret(self.csrf(state).as_bytes(), given.as_bytes())
    }
}

/// A whole page around `body`.
fn page(state: &AppState, viewer: &Viewer, title: &str, body: &str) -> Response {
    let mut nav = String::from(r#"<a href="/">Queues</a> <a href="/workers">Workers</a>"#);
    if viewer.caller == Caller::Admin {
        nav.push_str(r#" <a href="/tenants">Tenants</a>"#);
    }
    let who = match &viewer.caller {
        Caller::Admin if !state.auth.required() => "admin (no tokens: loopback only)".to_string(),
        Caller::Admin => "admin".to_string(),
        Caller::Tenant(t) => format!("tenant {}", esc(t.as_str())),
    };
    let logout = if state.auth.required() {
        format!(
            r#"<form method="post" action="/logout" class="inline"><input type="hidden" name="csrf" value="{}"><button type="submit">Log out</button></form>"#,
            viewer.csrf(state)
        )
    } else {
        String::new()
    };
    html(
        StatusCode::OK,
        &format!(
            r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · runtime</title><link rel="stylesheet" href="/assets/app.css"><script src="/assets/app.js" defer></script></head>
<body><header><strong>runtime</strong> <nav>{nav}</nav> <span class="who">{who}</span> {logout}</header>
<main>{body}</main></body></html>"#,
            title = esc(title),
        ),
    )
}

/// An HTML response with the dashboard's headers.
fn html(status: StatusCode, body: &str) -> Response {
    let mut response = (status, body.to_string()).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// An error as a page (the problem's words).
fn error_page(state: &AppState, viewer: &Viewer, problem: &Problem) -> Response {
    let mut response = page(
        state,
        viewer,
        &problem.title,
        &format!(
            r#"<h1>{}</h1><p class="error">{}</p><p><a href="/">Back to the queues</a></p>"#,
            esc(&problem.title),
            esc(&problem.detail)
        ),
    );
    *response.status_mut() =
        StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response
}

fn state_links(
    queue: &QueueName,
    current: JobState,
    counts: &runtime::queue::StateCounts,
) -> String {
    let mut out = String::from(r#"<nav class="tabs">"#);
    for s in JobState::ALL {
        let class = if s == current {
            r#" class="current""#
        } else {
            ""
        };
        let _ = write!(
            out,
            r#"<a href="/queues/{}?state={s}"{class}>{s} <span class="count">{}</span></a>"#,
            seg(queue.as_str()),
            counts.get(s)
        );
    }
    out.push_str("</nav>");
    out
}

/// An action button: a POSTed form with the CSRF token, confirmed first.
fn action(viewer: &Viewer, state: &AppState, path: &str, label: &str, confirm: &str) -> String {
    format!(
        r#"<form method="post" action="{path}" class="inline" data-confirm="{}"><input type="hidden" name="csrf" value="{}"><button type="submit">{}</button></form>"#,
        esc(confirm),
        viewer.csrf(state),
        esc(label)
    )
}

fn time(ms: u64) -> String {
    esc(&runtime::time::format_millis(ms))
}

/// What an action did, by a fixed code in the query (no free text is
/// echoed back into a page).
fn notice(did: Option<&str>) -> &'static str {
    match did {
        Some("paused") => "Paused: workers take none of its jobs until it is resumed.",
        Some("resumed") => "Resumed: workers take its jobs again.",
        Some("purged") => "Purged: every job that was not running is removed.",
        Some("retried-failed") => "Every failed job is pending again.",
        Some("retried") => "Pending again with a fresh set of attempts.",
        Some("deleted") => "Deleted.",
        _ => "",
    }
}

fn notice_html(did: Option<&str>) -> String {
    match notice(did) {
        "" => String::new(),
        text => format!(r#"<p class="notice">{text}</p>"#),
    }
}

#[derive(Debug, Deserialize)]
pub struct DidQuery {
    did: Option<String>,
}

/// `/`: every queue with live counts, and the throughput chart.
pub async fn overview(
    State(state): State<Arc<AppState>>,
    viewer: Viewer,
    Query(q): Query<DidQuery>,
) -> Response {
    let queues = match api::queue_views(&state, &viewer.caller).await {
        Ok(q) => q,
        Err(p) => return error_page(&state, &viewer, &p),
    };
    let mut rows = String::new();
    for q in &queues {
        let (name, c) = (q.queue.as_str(), q.counts);
        let _ = write!(
            rows,
            r#"<tr data-queue="{}"><td><a href="/queues/{}">{}</a></td><td data-count="pending">{}</td><td data-count="scheduled">{}</td><td data-count="running">{}</td><td data-count="failed">{}</td><td data-count="done">{}</td><td data-paused>{}</td></tr>"#,
            esc(name),
            seg(name),
            esc(name),
            c.pending,
            c.scheduled,
            c.running,
            c.failed,
            c.done,
            if q.paused { "paused" } else { "" }
        );
    }
    if queues.is_empty() {
        rows.push_str(r#"<tr><td colspan="7">No queues yet: dispatch a job.</td></tr>"#);
    }
    let body = format!(
        r#"{notice}<h1>Queues</h1>
<table data-live-queues><thead><tr><th>Queue</th><th>Pending</th><th>Scheduled</th><th>Running</th><th>Failed</th><th>Done</th><th></th></tr></thead><tbody>{rows}</tbody></table>
<h2>Processed and failed per minute, last hour</h2>
<img id="chart" src="/ui/throughput.svg" alt="processed and failed per minute over the last hour" width="720" height="200">
<form method="get" action="/jobs" class="search"><label>Find a job by id <input name="id" placeholder="queue:17" required></label> <button type="submit">Open</button></form>"#,
        notice = notice_html(q.did.as_deref()),
    );
    page(&state, &viewer, "Queues", &body)
}

#[derive(Debug, Deserialize)]
pub struct QueueQuery {
    state: Option<String>,
    cursor: Option<usize>,
    did: Option<String>,
}

/// `/queues/{queue}`: its jobs in one state, a page at a time, and its
/// actions.
pub async fn queue(
    State(state): State<Arc<AppState>>,
    viewer: Viewer,
    Path(queue): Path<String>,
    query: Result<Query<QueueQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    match queue_page(&state, &viewer, &queue, query).await {
        Ok(r) => r,
        Err(p) => error_page(&state, &viewer, &p),
    }
}

async fn queue_page(
    state: &AppState,
    viewer: &Viewer,
    written: &str,
    query: Result<Query<QueueQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let Query(query) = query.map_err(|e| Problem::bad_request(e.body_text()))?;
    let queue = QueueName::read_in(viewer.caller.tenant(), written)?;
    let job_state: JobState = query.state.as_deref().unwrap_or("pending").parse()?;
    let offset = query.cursor.unwrap_or(0).min(1 << 50);
    let jobs_api = &state.backend.jobs;
    let counts = jobs_api.counts(&queue).await?;
    let paused = jobs_api
        .paused(std::slice::from_ref(&queue))
        .await?
        .first()
        .copied()
        .unwrap_or(false);
    let page_of = Page {
        offset,
        limit: PAGE + 1,
    };
    let mut jobs = jobs_api.list(&queue, job_state, page_of).await?;
    let more = jobs.len() > PAGE;
    jobs.truncate(PAGE);
    let q = seg(queue.as_str());
    let mut rows = String::new();
    for job in &jobs {
        let error = job
            .error
            .as_deref()
            .map(|e| truncate(e, 160))
            .unwrap_or_default();
        let _ = write!(
            rows,
            r#"<tr><td><a href="/jobs/{}">{}</a></td><td>{}</td><td>{}/{}</td><td>{}</td><td class="guest">{}</td></tr>"#,
            seg(&job.id.to_string()),
            esc(&job.id.to_string()),
            time(job.created_at),
            job.attempts,
            job.max_attempts,
            time(job.run_at),
            guest(&error)
        );
    }
    if jobs.is_empty() {
        let _ = write!(
            rows,
            r#"<tr><td colspan="5">No {job_state} jobs.</td></tr>"#
        );
    }
    let mut pager = String::new();
    if offset > 0 {
        let _ = write!(
            pager,
            r#"<a href="/queues/{q}?state={job_state}&amp;cursor={}">Newer</a> "#,
            offset.saturating_sub(PAGE)
        );
    }
    if more {
        let _ = write!(
            pager,
            r#"<a href="/queues/{q}?state={job_state}&amp;cursor={}" rel="next">Next page</a>"#,
            offset + PAGE
        );
    }
    let name = esc(queue.as_str());
    let pause = if paused {
        action(
            viewer,
            state,
            &format!("/queues/{q}/resume"),
            "Resume",
            &format!("Resume {}? Workers will take its jobs again.", queue),
        )
    } else {
        action(
            viewer,
            state,
            &format!("/queues/{q}/pause"),
            "Pause",
            &format!(
                "Pause {}? Workers will take none of its jobs until it is resumed.",
                queue
            ),
        )
    };
    let body = format!(
        r#"{notice}<h1>Queue {name}{badge}</h1>
<p class="actions">{pause} {retry_all} {purge}</p>
{tabs}
<form method="get" action="/jobs" class="search"><input type="hidden" name="queue" value="{name}"><label>Job id or number <input name="id" placeholder="17" required></label> <button type="submit">Open</button></form>
<table><thead><tr><th>Job</th><th>Dispatched</th><th>Attempts</th><th>Runs at</th><th>Error</th></tr></thead><tbody>{rows}</tbody></table>
<p class="pager">{pager}</p>"#,
        notice = notice_html(query.did.as_deref()),
        badge = if paused {
            r#" <span class="badge">paused</span>"#
        } else {
            ""
        },
        retry_all = action(
            viewer,
            state,
            &format!("/queues/{q}/retry-failed"),
            "Retry all failed",
            &format!("Retry every failed job of {}?", queue)
        ),
        purge = action(
            viewer,
            state,
            &format!("/queues/{q}/purge"),
            "Purge",
            &format!(
                "Remove every job of {} that is not running? This cannot be undone.",
                queue
            )
        ),
        tabs = state_links(&queue, job_state, &counts),
    );
    Ok(page(state, viewer, &format!("Queue {queue}"), &body))
}

/// At most `max` characters of `s`, with an ellipsis if cut.
fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[derive(Debug, Deserialize)]
pub struct FindQuery {
    id: String,
    queue: Option<String>,
}

/// `/jobs?id=...`: the search box; a bare number is read in `queue`.
pub async fn find(
    State(state): State<Arc<AppState>>,
    viewer: Viewer,
    query: Result<Query<FindQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return error_page(
            &state,
            &viewer,
            &Problem::bad_request("give a job id, `queue:number`"),
        );
    };
    let id = q.id.trim();
    let written = match (&q.queue, id.parse::<u64>()) {
        (Some(queue), Ok(n)) => format!("{queue}:{n}"),
        _ => id.to_string(),
    };
    match JobId::read_in(viewer.caller.tenant(), &written) {
        Ok(id) => Redirect::to(&format!("/jobs/{}", seg(&id.to_string()))).into_response(),
        Err(e) => error_page(&state, &viewer, &e.into()),
    }
}

/// `/jobs/{id}`: payload, attempts, error, log, and its actions.
pub async fn job(
    State(state): State<Arc<AppState>>,
    viewer: Viewer,
    Path(id): Path<String>,
    Query(q): Query<DidQuery>,
) -> Response {
    let found = async {
        let id = JobId::read_in(viewer.caller.tenant(), &id)?;
        match state.backend.jobs.get(&id).await? {
            Some(job) => Ok(job),
            None => Err(api::no_job(&id)),
        }
    };
    match found.await {
        Ok(job) => job_page(&state, &viewer, &job, q.did.as_deref()),
        Err(p) => {
            // Deleted, or retried and run to its end since: the action's
            // notice, and why the job is not there.
            if p.status == StatusCode::NOT_FOUND.as_u16() && !notice(q.did.as_deref()).is_empty() {
                let body = format!(
                    r#"{}<p>The job is no longer there: done jobs are removed.</p><p><a href="/">Back to the queues</a></p>"#,
                    notice_html(q.did.as_deref())
                );
                return page(&state, &viewer, "Job", &body);
            }
            error_page(&state, &viewer, &p)
        }
    }
}

fn job_page(state: &AppState, viewer: &Viewer, job: &JobRecord, did: Option<&str>) -> Response {
    let id = job.id.to_string();
    let path = format!("/jobs/{}", seg(&id));
    // Shown as JSON of the same value (hidden characters as JSON escapes),
    // so the text on the page is the payload: `guest_lines` would double
    // every backslash of JSON's own escapes.
    let payload = match serde_json::from_str::<serde_json::Value>(job.payload.as_str())
        .and_then(|v| serde_json::to_string_pretty(&v))
    {
        Ok(pretty) => esc(&text::json_safe(&pretty)),
        Err(_) => guest_lines(job.payload.as_str()),
    };
    let mut attempts = String::new();
    for a in &job.history {
        let took = a
            .ended_at
            .map(|end| format!("{} ms", end.saturating_sub(a.started_at)))
            .unwrap_or_else(|| "running".into());
        let _ = write!(
            attempts,
            r#"<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class="guest">{}</td></tr>"#,
            a.number,
            time(a.started_at),
            esc(&took),
            a.kind.map_or("", |k| k.as_str()),
            guest(a.outcome.as_deref().unwrap_or(""))
        );
    }
    if job.history.is_empty() {
        attempts.push_str(r#"<tr><td colspan="5">Not run yet.</td></tr>"#);
    }
    let mut actions = String::new();
    if job.state == JobState::Failed {
        actions.push_str(&action(
            viewer,
            state,
            &format!("{path}/retry"),
            "Retry",
            &format!("Run {id} again with a fresh set of attempts?"),
        ));
    }
    if job.state != JobState::Running {
        actions.push(' ');
        actions.push_str(&action(
            viewer,
            state,
            &format!("{path}/delete"),
            "Delete",
            &format!("Delete {id}? This cannot be undone."),
        ));
    }
    let queue = job.id.queue();
    let error = match &job.error {
        Some(e) => format!(
            r#"<h2>Error</h2><p class="error guest">{}{}</p>"#,
            job.error_kind
                .map(|k| format!("[{}] ", k.as_str()))
                .unwrap_or_default(),
            guest(e)
        ),
        None => String::new(),
    };
    let body = format!(
        r#"{notice}<h1>Job {eid}</h1>
<p class="actions">{actions}</p>
<dl><dt>Queue</dt><dd><a href="/queues/{q}">{qname}</a></dd><dt>State</dt><dd data-state>{st}</dd>
<dt>Attempts</dt><dd>{att} of {max}</dd><dt>Priority</dt><dd>{prio}</dd>
<dt>Dispatched</dt><dd>{created}</dd><dt>Runs at</dt><dd>{run_at}</dd>
<dt>Unique key</dt><dd class="guest">{key}</dd></dl>
<h2>Payload</h2><pre class="guest" data-payload>{payload}</pre>
{error}
<h2>Attempts</h2><table><thead><tr><th>#</th><th>Started</th><th>Took</th><th>Crash kind</th><th>Error</th></tr></thead><tbody>{attempts}</tbody></table>
<h2>Log of the last attempt</h2><pre class="guest" data-log>{log}</pre>"#,
        notice = notice_html(did),
        eid = esc(&id),
        q = seg(queue.as_str()),
        qname = esc(queue.as_str()),
        st = job.state,
        att = job.attempts,
        max = job.max_attempts,
        prio = job.priority,
        created = time(job.created_at),
        run_at = time(job.run_at),
        key = guest(job.unique_key.as_deref().unwrap_or("")),
        log = guest_lines(&job.log),
    );
    page(state, viewer, &format!("Job {id}"), &body)
}

/// `/workers`.
pub async fn workers(State(state): State<Arc<AppState>>, viewer: Viewer) -> Response {
    let workers = match api::worker_list(&state, &viewer.caller).await {
        Ok(w) => w,
        Err(p) => return error_page(&state, &viewer, &p),
    };
    let now = SystemClock.now();
    let mut rows = String::new();
    for w in &workers {
        let _ = write!(
            rows,
            "<tr><td>{}</td><td>{}</td><td>{}/{}</td><td>{}</td><td>{} ago</td><td>{}</td></tr>",
            esc(&w.host),
            w.pid,
            w.in_flight,
            w.concurrency,
            esc(&runtime::time::format_age(w.started_at, now)),
            esc(&runtime::time::format_age(w.beat_at, now)),
            esc(&w.queues.join(", "))
        );
    }
    if workers.is_empty() {
        rows.push_str(r#"<tr><td colspan="6">No live workers.</td></tr>"#);
    }
    let body = format!(
        "<h1>Workers</h1><table><thead><tr><th>Host</th><th>Pid</th><th>In flight</th><th>Up</th><th>Last beat</th><th>Queues</th></tr></thead><tbody>{rows}</tbody></table>"
    );
    page(&state, &viewer, "Workers", &body)
}

/// `/tenants` (admin).
pub async fn tenants(State(state): State<Arc<AppState>>, viewer: Viewer) -> Response {
    if viewer.caller != Caller::Admin {
        return error_page(
            &state,
            &viewer,
            &Problem::forbidden("only the admin sees every tenant"),
        );
    }
    let tenants = match api::tenant_views(&state, None).await {
        Ok(t) => t,
        Err(p) => return error_page(&state, &viewer, &p),
    };
    let limit = |m: Option<u64>| m.map_or("no limit".to_string(), |m| m.to_string());
    let mut rows = String::new();
    for t in &tenants {
        let u = &t.usage;
        let _ = write!(
            rows,
            "<tr><td>{}</td><td>{}</td><td>{} / {}</td><td>{} / {}</td><td>{} ms / {}</td><td>{} / {}</td></tr>",
            esc(&t.name),
            if t.registered { "yes" } else { "no" },
            u.in_flight.used,
            limit(u.in_flight.max),
            u.backlog.used,
            limit(u.backlog.max),
            u.run_time.used_ms,
            u.run_time
                .max_ms
                .map_or("no limit".into(), |m| format!("{m} ms")),
            esc(&runtime::error::size(u.module_storage.used)),
            u.module_storage
                .max
                .map_or("no limit".into(), |m| esc(&runtime::error::size(m))),
        );
    }
    if tenants.is_empty() {
        rows.push_str(r#"<tr><td colspan="6">No tenants.</td></tr>"#);
    }
    let body = format!(
        "<h1>Tenants</h1><table><thead><tr><th>Tenant</th><th>Token</th><th>In flight</th><th>Waiting</th><th>Run time this period</th><th>Modules</th></tr></thead><tbody>{rows}</tbody></table>"
    );
    page(&state, &viewer, "Tenants", &body)
}

/// Minutes the overview's chart covers.
const CHART_MINUTES: u64 = 60;

/// `/ui/throughput.svg`: jobs processed and failed per minute over the last
/// hour, the fleet's for the admin, a tenant's own for its token; drawn
/// here, so the page needs no script to show it. Only numbers reach the
/// picture.
pub async fn throughput_chart(State(state): State<Arc<AppState>>, viewer: Viewer) -> Response {
    let now_minute = SystemClock.now() / 60_000;
    let from = now_minute.saturating_sub(CHART_MINUTES - 1);
    let minutes = match state
        .backend
        .tenants
        .throughput(viewer.caller.tenant(), from, CHART_MINUTES as usize)
        .await
    {
        Ok(m) => m,
        Err(e) => return Problem::from(e).into_response(),
    };
    let points: Vec<(u64, u64)> = minutes.iter().map(|t| (t.processed, t.failed)).collect();
    let mut response = svg_chart(&points).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("image/svg+xml"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A line chart of (processed, failed) per minute, oldest first.
fn svg_chart(points: &[(u64, u64)]) -> String {
    let (width, height, left, bottom, top) = (720.0, 200.0, 48.0, 22.0, 12.0);
    let plot_w = width - left - 8.0;
    let plot_h = height - bottom - top;
    let peak = points
        .iter()
        .map(|p| p.0.max(p.1))
        .max()
        .unwrap_or(0)
        .max(1);
    let step = plot_w / (points.len().max(2) - 1) as f64;
    let line = |pick: fn(&(u64, u64)) -> u64| -> String {
        points
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let x = left + i as f64 * step;
                let y = top + plot_h * (1.0 - pick(p) as f64 / peak as f64);
                format!("{x:.1},{y:.1}")
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let (total, failed) = points
        .iter()
        .fold((0u64, 0u64), |(a, b), p| (a + p.0, b + p.1));
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">
<rect width="{width}" height="{height}" fill="#fff"/>
<line x1="{left}" y1="{top}" x2="{left}" y2="{base}" stroke="#d9dde6"/>
<line x1="{left}" y1="{base}" x2="{right}" y2="{base}" stroke="#d9dde6"/>
<text x="{lx}" y="{ty}" text-anchor="end" fill="#5b6478">{peak}</text>
<text x="{lx}" y="{base}" text-anchor="end" fill="#5b6478">0</text>
<text x="{left}" y="{ly}" fill="#5b6478">60 min ago</text>
<text x="{right}" y="{ly}" text-anchor="end" fill="#5b6478">now</text>
<polyline fill="none" stroke="#2456d6" stroke-width="1.5" points="{processed}"/>
<polyline fill="none" stroke="#b42318" stroke-width="1.5" points="{failed_line}"/>
<text x="{mid}" y="{ly}" text-anchor="middle"><tspan fill="#2456d6">processed {total}</tspan> <tspan fill="#b42318">failed {failed}</tspan></text>
</svg>"##,
        base = top + plot_h,
        right = width - 8.0,
        lx = left - 4.0,
        ty = top + 8.0,
        ly = height - 6.0,
        mid = left + plot_w / 2.0,
        processed = line(|p| p.0),
        failed_line = line(|p| p.1),
    )
}

/// The fields of a URL-encoded form body.
async fn form(state: &AppState, body: Body) -> Result<Vec<(String, String)>, Problem> {
    let bytes = read_body(&state.bodies, body, 16 * 1024).await?;
    Ok(url::form_urlencoded::parse(&bytes)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect())
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// A POSTed form of the logged-in viewer with its CSRF token (a form from
/// another site never gets here: see `same_site`): the viewer, or the
/// answer to give instead.
async fn checked_form(state: &AppState, parts: &Parts, body: Body) -> Result<Viewer, Response> {
    let viewer = viewer(state, &parts.headers).await?;
    let fields = form(state, body)
        .await
        .map_err(IntoResponse::into_response)?;
    if !field(&fields, "csrf").is_some_and(|c| viewer.csrf_ok(state, c)) {
        return Err(Problem::forbidden(
            "the form's CSRF token is missing or stale: reload the page and try again",
        )
        .into_response());
    }
    Ok(viewer)
}

/// `POST /queues/{queue}/{action}`: pause, resume, purge, retry-failed.
pub async fn queue_action(
    State(state): State<Arc<AppState>>,
    Path((queue, what)): Path<(String, String)>,
    request: axum::extract::Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let viewer = match checked_form(&state, &parts, body).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let done = async {
        let queue = QueueName::read_in(viewer.caller.tenant(), &queue)?;
        let jobs = &state.backend.jobs;
        let did = match what.as_str() {
            "pause" => {
                jobs.set_paused(&queue, true).await?;
                "paused"
            }
            "resume" => {
                jobs.set_paused(&queue, false).await?;
                "resumed"
            }
            "purge" => {
                jobs.purge(&queue).await?;
                "purged"
            }
            "retry-failed" => {
                runtime::queue::retry_all_failed(&**jobs, &queue).await?;
                "retried-failed"
            }
            _ => return Err(Problem::not_found("no such action")),
        };
        Ok::<_, Problem>(format!("/queues/{}?did={did}", seg(queue.as_str())))
    };
    match done.await {
        Ok(to) => Redirect::to(&to).into_response(),
        Err(p) => error_page(&state, &viewer, &p),
    }
}

/// `POST /jobs/{id}/{action}`: retry, delete.
pub async fn job_action(
    State(state): State<Arc<AppState>>,
    Path((id, what)): Path<(String, String)>,
    request: axum::extract::Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let viewer = match checked_form(&state, &parts, body).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let done = async {
        let id = JobId::read_in(viewer.caller.tenant(), &id)?;
        let jobs = &state.backend.jobs;
        let did = match what.as_str() {
            "retry" => {
                jobs.retry(&id).await?;
                "retried"
            }
            "delete" => {
                if !jobs.delete(&id).await? {
                    return Err(api::no_job(&id));
                }
                "deleted"
            }
            _ => return Err(Problem::not_found("no such action")),
        };
        Ok::<_, Problem>(format!("/jobs/{}?did={did}", seg(&id.to_string())))
    };
    match done.await {
        Ok(to) => Redirect::to(&to).into_response(),
        Err(p) => error_page(&state, &viewer, &p),
    }
}

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    expired: Option<String>,
}

/// The cookie that ties a login form to the browser it was sent to.
const LOGIN_COOKIE: &str = "runtime_login";

/// Who fills in the login form whose cookie is `nonce`, for its CSRF
/// token: the token is tied to a random value only that browser holds, so
/// no other site can log it in with a token of its choosing.
fn login_viewer(nonce: &str) -> Viewer {
    Viewer {
        caller: Caller::Admin,
        session: format!("login\0{nonce}"),
    }
}

/// `; Secure` when the request came over HTTPS through a proxy that says
/// so: the cookie then never travels over plain HTTP.
fn secure(headers: &HeaderMap) -> &'static str {
    let https = headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    if https { "; Secure" } else { "" }
}

/// `GET /login`.
pub async fn login_form(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Response {
    if !state.auth.required() {
        return Redirect::to("/").into_response();
    }
    let nonce = match super::random_secret() {
        Ok(bytes) => runtime::tenant::hex(&bytes),
        Err(e) => {
            return Problem::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"))
                .into_response();
        }
    };
    let csrf = login_viewer(&nonce).csrf(&state);
    let note = if q.expired.is_some() {
        r#"<p class="error">That token is not valid (any more): log in again.</p>"#
    } else {
        ""
    };
    let mut response = html(
        StatusCode::OK,
        &format!(
            r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Log in · runtime</title><link rel="stylesheet" href="/assets/app.css"></head>
<body><main class="login"><h1>runtime</h1>{note}
<form method="post" action="/login"><input type="hidden" name="csrf" value="{csrf}"><label>Token <input type="password" name="token" autocomplete="current-password" required autofocus></label> <button type="submit">Log in</button></form>
<p>The admin token, or a tenant's token from <code>runtime tenants create</code>.</p></main></body></html>"#
        ),
    );
    if let Ok(cookie) = HeaderValue::from_str(&format!(
        "{LOGIN_COOKIE}={nonce}; Path=/login; HttpOnly; SameSite=Strict{}",
        secure(&headers)
    )) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// `POST /login`: checks the token, then keeps it in the session cookie.
pub async fn login(
    State(state): State<Arc<AppState>>,
    request: axum::extract::Request,
) -> Response {
    let Some(admin) = state.auth.admin_hash() else {
        return Redirect::to("/").into_response();
    };
    let (parts, body) = request.into_parts();
    let fields = match form(&state, body).await {
        Ok(f) => f,
        Err(p) => return p.into_response(),
    };
    let nonce = cookie_named(&parts.headers, LOGIN_COOKIE).unwrap_or_default();
    if nonce.is_empty()
        || !login_viewer(&nonce).csrf_ok(&state, field(&fields, "csrf").unwrap_or(""))
    {
        return Problem::forbidden(
            "the login form's CSRF token is missing or stale: reload the login page and try again",
        )
        .into_response();
    }
    let token = field(&fields, "token").unwrap_or("").trim().to_string();
    match state
        .auth
        .check(&*state.backend.tenants, admin, &token)
        .await
    {
        Ok(_) => {
            let value: String = url::form_urlencoded::byte_serialize(token.as_bytes()).collect();
            let mut response = Redirect::to("/").into_response();
            if let Ok(cookie) = HeaderValue::from_str(&format!(
                "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict{}",
                secure(&parts.headers)
            )) {
                response.headers_mut().insert(header::SET_COOKIE, cookie);
            }
            response
        }
        Err(_) => Redirect::to("/login?expired=1").into_response(),
    }
}

/// `POST /logout`: forgets the session cookie.
pub async fn logout(
    State(state): State<Arc<AppState>>,
    request: axum::extract::Request,
) -> Response {
    let (parts, body) = request.into_parts();
    if let Err(r) = checked_form(&state, &parts, body).await {
        return r;
    }
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("runtime_token=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    response
}

/// `/assets/app.css`, `/assets/app.js`: embedded in the binary.
pub async fn asset(Path(name): Path<String>) -> Response {
    let (kind, body) = match name.as_str() {
        "app.css" => ("text/css; charset=utf-8", CSS),
        "app.js" => ("text/javascript; charset=utf-8", JS),
        _ => return Problem::not_found("no such asset").into_response(),
    };
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=300"),
    );
    response
}

/// Whether a request may act on its session cookie alone: a safe method
/// (the API's reads, for the pages' live counts). Changes need a bearer
/// token, or a dashboard form with its CSRF token.
pub fn cookie_allowed(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_leaves_no_markup_and_shows_hidden_characters() {
        let hostile = "<script>alert(1)</script><img src=x onerror=\"alert(2)\"> ' & \u{202e}";
        let shown = guest(hostile);
        assert!(!shown.contains('<') && !shown.contains('>') && !shown.contains('"'));
        assert!(!shown.contains('\''));
        assert!(shown.contains("&lt;script&gt;"));
        assert!(shown.contains("\\u{202e}"), "{shown}");
        let log = guest_lines("a\n<b>\r\n");
        assert_eq!(log, "a\n&lt;b&gt;\\r");
    }

    #[test]
    fn the_session_cookie_is_found_among_others_and_decoded() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; runtime_token=rt%2Bx%3D; b=2"),
        );
        assert_eq!(cookie(&h).as_deref(), Some("rt+x="));
        h.insert(header::COOKIE, HeaderValue::from_static("runtime_token="));
        assert_eq!(cookie(&h), None);
    }

    #[test]
    fn the_chart_scales_to_its_peak_and_holds_only_numbers() {
        let svg = svg_chart(&[(0, 0), (10, 2), (5, 5)]);
        assert!(svg.contains(">10</text>"), "{svg}");
        assert!(svg.contains("processed 15") && svg.contains("failed 7"));
        let empty = svg_chart(&[]);
        assert!(empty.starts_with("<svg") && empty.contains("processed 0"));
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary() {
        assert_eq!(truncate("ééé", 2), "éé…");
        assert_eq!(truncate("ab", 2), "ab");
    }
}

//! `runtime serve`, end to end: the real binary serving its HTTP API on
//! loopback, called over real sockets, in front of a real Redis with real
//! `runtime worker` processes running real guests, and in memory with its
//! own in-process workers. Every response a test gets is checked against
//! the server's own OpenAPI document at the end of the test; the client
//! examples of examples/clients are run against a live server.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use runtime_tests::openapi::Document;
use runtime_tests::serve::{Response, ServeProcess, request};
use runtime_tests::workers::{Env, eventually};
use runtime_tests::{TempDir, guests, root, runtime, tenant_handlers};
use serde_json::{Value, json};

/// Generous: a loaded 2-core machine.
const BOUND: Duration = Duration::from_secs(60);

/// An admin token (at least 16 characters).
const ADMIN: &str = "admin-token-of-the-serve-tests-0123456789";

/// Requests to a server as one caller: a bearer token, or none.
struct As<'a> {
    server: &'a ServeProcess,
    auth: Option<String>,
}

impl<'a> As<'a> {
    /// No token: the admin on a server without tokens.
    fn anyone(server: &'a ServeProcess) -> Self {
        As { server, auth: None }
    }

    /// With `Authorization: Bearer TOKEN`.
    fn token(server: &'a ServeProcess, token: &str) -> Self {
        As {
            server,
            auth: Some(format!("Bearer {token}")),
        }
    }

    fn call(&self, method: &str, path: &str, content_type: Option<&str>, body: &[u8]) -> Response {
        let mut headers = Vec::new();
        if let Some(auth) = &self.auth {
            headers.push(("Authorization", auth.as_str()));
        }
        if let Some(t) = content_type {
            headers.push(("Content-Type", t));
        }
        self.server.request(method, path, &headers, body)
    }

    fn get(&self, path: &str) -> Response {
        self.call("GET", path, None, b"")
    }

    fn post(&self, path: &str, body: &Value) -> Response {
        self.call(
            "POST",
            path,
            Some("application/json"),
            body.to_string().as_bytes(),
        )
    }

    fn post_raw(&self, path: &str, content_type: &str, body: &[u8]) -> Response {
        self.call("POST", path, Some(content_type), body)
    }

    fn delete(&self, path: &str) -> Response {
        self.call("DELETE", path, None, b"")
    }

    /// POST /v1/queues/{queue}/jobs with `body`: 201, and the job's id.
    fn dispatch(&self, queue: &str, body: &Value) -> String {
        let r = self.post(&format!("/v1/queues/{}/jobs", encode(queue)), body);
        r.expect(201);
        r.json()["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no id:\n{r}"))
            .to_string()
    }

    /// GET /v1/queues/{queue}: its counts.
    fn counts(&self, queue: &str) -> Value {
        let r = self.get(&format!("/v1/queues/{}", encode(queue)));
        r.expect(200);
        r.json()
    }

    /// One count of GET /v1/queues/{queue}.
    fn count(&self, queue: &str, state: &str) -> u64 {
        self.counts(queue)[state].as_u64().unwrap_or(u64::MAX)
    }

    /// GET /v1/jobs/{id}.
    fn job(&self, id: &str) -> Response {
        self.get(&format!("/v1/jobs/{}", encode(id)))
    }
}

/// A name or id as a path segment: a tenant's slash is `%2F`.
fn encode(name: &str) -> String {
    name.replace('/', "%2F")
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

/// The server's OpenAPI document (fetched without being recorded).
fn openapi(server: &ServeProcess) -> Document {
    let r = request(server.addr(), "GET", "/v1/openapi.json", &[], b"");
    r.expect(200);
    Document::new(r.json())
}

/// Every response this test got from `server` fits its OpenAPI document.
fn documented(server: &ServeProcess) {
    let exchanges = server.exchanges();
    assert!(!exchanges.is_empty(), "no requests were made");
    openapi(server).check_all(&exchanges);
}

/// A config file in `dir` with `text`; its path.
fn config(dir: &Path, text: &str) -> String {
    let path = dir.join(format!("runtime-{}.toml", now_ms()));
    std::fs::write(&path, text).expect("write the config");
    path.display().to_string()
}

/// `n` jobs for a batch: payload `{"ms": 1, "n": i}` and `extra` fields.
fn jobs(n: usize, extra: &Value) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let mut job = json!({"payload": {"ms": 1, "n": i}});
            for (k, v) in extra.as_object().into_iter().flatten() {
                job[k] = v.clone();
            }
            job
        })
        .collect()
}

fn ndjson(jobs: &[Value]) -> Vec<u8> {
    jobs.iter()
        .map(|j| format!("{j}\n"))
        .collect::<String>()
        .into_bytes()
}

#[test]
fn one_job_dispatched_with_every_option_is_run_by_a_worker() {
    let env = Env::new();
    let server = env.serve(&[], &[]);
    let api = As::anyone(&server);
    let path = format!("/v1/queues/{}/jobs", guests::NAP);

    // Every option but a time: pending, and a unique key held while it is.
    let options = json!({
        "payload": {"ms": 1},
        "priority": 7,
        "max_attempts": 2,
        "unique_key": "order-17",
    });
    let first = api.post(&path, &options);
    first.expect(201);
    assert_eq!(first.media_type(), "application/json", "{first}");
    assert_eq!(
        first.json(),
        json!({"id": "nap:1", "queue": "nap", "state": "pending"})
    );
    let again = api.post(&path, &options);
    again.expect(201);
    assert_eq!(again.json()["id"], "nap:1", "the key is held: {again}");
    assert_eq!(api.count(guests::NAP, "pending"), 1);
    let job = api.job("nap:1");
    job.expect(200);
    let job = job.json();
    assert_eq!(job["id"], "nap:1");
    assert_eq!(job["queue"], "nap");
    assert_eq!(job["state"], "pending");
    assert_eq!(job["payload"], json!({"ms": 1}));
    assert_eq!(job["priority"], 7);
    assert_eq!(job["max_attempts"], 2);
    assert_eq!(job["attempts"], 0);
    assert_eq!(job["unique_key"], "order-17");
    assert_eq!(job["history"], json!([]));

    // A delay and a time to run at: scheduled, at the time asked.
    let before = now_ms();
    let delayed = api.post(&path, &json!({"payload": {"ms": 1}, "delay": "1h"}));
    delayed.expect(201);
    let after = now_ms();
    assert_eq!(delayed.json()["state"], "scheduled", "{delayed}");
    let delayed = api.job(delayed.json()["id"].as_str().unwrap_or_default());
    let run_at = delayed.json()["run_at"].as_u64().unwrap_or_default();
    assert!(
        (before + 3_600_000..=after + 3_600_000).contains(&run_at),
        "run_at {run_at} is not an hour after {before}..{after}:\n{delayed}"
    );
    let at = now_ms() / 1000 * 1000 + 2 * 3_600_000;
    let timed = api.post(
        &path,
        &json!({"payload": {"ms": 1}, "run_at": runtime::time::format_millis(at)}),
    );
    timed.expect(201);
    assert_eq!(timed.json()["state"], "scheduled", "{timed}");
    let timed = api.job(timed.json()["id"].as_str().unwrap_or_default());
    assert_eq!(timed.json()["run_at"], at, "{timed}");
    // Any JSON is a payload, not only an object.
    let listed = api.dispatch(guests::NAP, &json!({"payload": [1, "two"], "delay": "1h"}));
    let shown = api.job(&listed);
    assert_eq!(shown.json()["payload"], json!([1, "two"]), "{shown}");
    let both = api.post(
        &path,
        &json!({"payload": {}, "delay": "1h", "run_at": runtime::time::format_millis(at)}),
    );
    assert_eq!(
        both.problem(400),
        "give `delay` or `run_at`, not both",
        "{both}"
    );
    assert_eq!(api.count(guests::NAP, "scheduled"), 3);

    // A real worker runs the pending one: done jobs are removed.
    let worker = env.worker(&[guests::NAP]);
    eventually(BOUND, "nap:1 to be done", || api.job("nap:1").status == 404);
    let gone = api.job("nap:1");
    assert!(gone.problem(404).contains("no job nap:1"), "{gone}");
    let counts = api.counts(guests::NAP);
    assert_eq!(
        (&counts["done"], &counts["pending"], &counts["scheduled"]),
        (&json!(1), &json!(0), &json!(3)),
        "{counts}"
    );
    // Its key is free again: the same dispatch is a new job.
    let next = api.post(&path, &options);
    next.expect(201);
    assert_ne!(next.json()["id"], "nap:1", "{next}");
    let workers = api.get("/v1/workers");
    workers.expect(200);
    let listed = workers.json();
    assert_eq!(
        listed["workers"].as_array().map(Vec::len),
        Some(1),
        "{workers}"
    );
    assert_eq!(listed["workers"][0]["pid"], worker.pid(), "{workers}");
    assert_eq!(listed["workers"][0]["queues"], json!(["nap"]), "{workers}");
    let queues = api.get("/v1/queues");
    queues.expect(200);
    assert_eq!(queues.json()["queues"][0]["queue"], "nap", "{queues}");
    assert_eq!(queues.json()["queues"][0]["paused"], false, "{queues}");
    documented(&server);
}

#[test]
fn a_batch_goes_in_whole_or_not_at_all() {
    let env = Env::new();
    let server = env.serve(&[], &[]);
    let api = As::anyone(&server);
    let batch = format!("/v1/queues/{}/batch", guests::NAP);
    let pending = || api.count(guests::NAP, "pending");

    let array = api.post(&batch, &Value::Array(jobs(3, &json!({}))));
    array.expect(201);
    assert_eq!(
        array.json(),
        json!({"count": 3, "ids": ["nap:1", "nap:2", "nap:3"]})
    );
    // NDJSON, blank lines skipped; and the same streamed in chunks that
    // cut lines anywhere.
    let lines = ndjson(&jobs(3, &json!({"priority": 2})));
    let mut spaced = lines.clone();
    spaced.splice(0..0, b"\n  \n".iter().copied());
    let nd = api.post_raw(&batch, "application/x-ndjson", &spaced);
    nd.expect(201);
    assert_eq!(nd.json()["ids"], json!(["nap:4", "nap:5", "nap:6"]));
    let (a, rest) = lines.split_at(7);
    let (b, c) = rest.split_at(rest.len() / 2);
    let chunked = server.request_chunked(
        "POST",
        &batch,
        &[("Content-Type", "application/x-ndjson")],
        &[a, b, c],
    );
    chunked.expect(201);
    assert_eq!(chunked.json()["count"], 3, "{chunked}");
    assert_eq!(pending(), 9);

    // The third job is bad: the whole batch is refused, saying which.
    let mut bad = jobs(5, &json!({}));
    bad[2]["max_attempts"] = json!(0);
    let refused = api.post(&batch, &Value::Array(bad.clone()));
    assert_eq!(
        refused.problem(400),
        "max attempts must be at least 1",
        "{refused}"
    );
    assert_eq!(refused.json()["index"], 2, "{refused}");
    let refused = api.post_raw(&batch, "application/x-ndjson", &ndjson(&bad));
    refused.problem(400);
    assert_eq!(refused.json()["index"], 2, "{refused}");
    let mut unknown = jobs(3, &json!({}));
    unknown[2]["colour"] = json!("red");
    let refused = api.post(&batch, &Value::Array(unknown));
    assert!(
        refused.problem(400).contains("unknown field `colour`"),
        "{refused}"
    );
    assert_eq!(refused.json()["index"], 2, "{refused}");
    assert_eq!(pending(), 9, "nothing of a refused batch is enqueued");

    // Bounds: 1,000 jobs go in; 1,001 do not, in either form.
    let most = api.post(&batch, &Value::Array(jobs(1000, &json!({}))));
    most.expect(201);
    assert_eq!(most.json()["count"], 1000);
    assert_eq!(pending(), 1009);
    let over = api.post(&batch, &Value::Array(jobs(1001, &json!({}))));
    assert!(
        over.problem(413)
            .contains("more than 1000 jobs in one batch"),
        "{over}"
    );
    let over = api.post_raw(
        &batch,
        "application/x-ndjson",
        &ndjson(&jobs(1001, &json!({}))),
    );
    over.problem(413);
    // Over 16 MiB of body, refused as it arrives.
    let big = json!({"payload": {"blob": "x".repeat(1_000_000)}});
    let huge = api.post(&batch, &Value::Array(vec![big; 17]));
    assert!(
        huge.problem(413).contains("the request body is over 16"),
        "{huge}"
    );
    assert_eq!(pending(), 1009, "nothing of a refused batch is enqueued");

    // Empty, and not a batch at all.
    for empty in [&b"[]"[..], b"", b"\n\n  \n"] {
        let r = api.post_raw(&batch, "application/json", empty);
        assert!(r.problem(400).contains("the batch has no jobs"), "{r}");
    }
    let broken = api.post_raw(&batch, "application/json", br#"[{"payload": {}},"#);
    assert!(
        broken
            .problem(400)
            .contains("the batch is not a JSON array of jobs"),
        "{broken}"
    );
    assert_eq!(pending(), 1009);
    documented(&server);
}

#[test]
fn listing_by_state_pages_through_every_job_exactly_once() {
    let env = Env::new();
    let server = env.serve(&[], &[]);
    let api = As::anyone(&server);
    let r = api.post(
        &format!("/v1/queues/{}/batch", guests::NAP),
        &Value::Array(jobs(25, &json!({"delay": "1h"}))),
    );
    r.expect(201);
    let dispatched: BTreeSet<String> = r.json()["ids"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|id| id.as_str().map(str::to_string))
        .collect();
    assert_eq!(dispatched.len(), 25);

    let list = |query: &str| api.get(&format!("/v1/queues/{}/jobs?{query}", guests::NAP));
    let mut seen = Vec::new();
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            Some(c) => format!("state=scheduled&limit=10&cursor={c}"),
            None => "state=scheduled&limit=10".to_string(),
        };
        let page = list(&query);
        page.expect(200);
        let body = page.json();
        let jobs = body["jobs"].as_array().cloned().unwrap_or_default();
        pages.push(jobs.len());
        for job in &jobs {
            assert_eq!(job["state"], "scheduled", "{page}");
            seen.push(job["id"].as_str().unwrap_or_default().to_string());
        }
        match &body["next_cursor"] {
            Value::Null => break,
            Value::String(next) => cursor = Some(next.clone()),
            other => panic!("next_cursor is {other}:\n{page}"),
        }
        assert!(pages.len() < 10, "the cursor does not end: {pages:?}");
    }
    assert_eq!(pages, vec![10, 10, 5]);
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "a job came twice: {seen:?}");
    assert_eq!(unique, dispatched);
    // A page that ends exactly at the last job has no next one.
    let whole = list("state=scheduled&limit=25");
    assert_eq!(whole.json()["jobs"].as_array().map(Vec::len), Some(25));
    assert_eq!(whole.json()["next_cursor"], Value::Null, "{whole}");
    let short = list("state=scheduled&limit=24");
    assert_eq!(short.json()["next_cursor"], "24", "{short}");
    // Defaults: pending, 20 a page.
    let pending = list("");
    pending.expect(200);
    assert_eq!(pending.json(), json!({"jobs": [], "next_cursor": null}));
    let default = list("state=scheduled");
    assert_eq!(default.json()["jobs"].as_array().map(Vec::len), Some(20));
    assert_eq!(default.json()["next_cursor"], "20", "{default}");

    // Bad queries, each a problem.
    let bad_state = list("state=bogus");
    let detail = bad_state.problem(400);
    assert_eq!(
        detail,
        "invalid state \"bogus\": use pending, scheduled, running or failed"
    );
    let cli = env.run(&["jobs", "list", guests::NAP, "--state", "bogus"]);
    assert!(
        cli.expect_code(2).stderr().contains(&detail),
        "{}",
        cli.stderr()
    );
    for query in ["limit=0", "limit=1001", "limit=ten", "limit=-1"] {
        let r = list(query);
        assert!(r.problem(400).contains("limit"), "{query}:\n{r}");
    }
    for query in ["cursor=abc", "cursor=-3", "cursor=99999999999999999999999"] {
        let r = list(query);
        assert!(r.problem(400).contains("cursor"), "{query}:\n{r}");
    }
    let unknown = list("colour=red");
    assert!(unknown.problem(400).contains("colour"), "{unknown}");
    documented(&server);
}

#[test]
fn failed_jobs_are_listed_retried_deleted_and_purged() {
    let env = Env::new();
    let server = env.serve(&[], &[]);
    let api = As::anyone(&server);
    let q = guests::NAP;
    let r = api.post(
        &format!("/v1/queues/{q}/batch"),
        &json!([
            {"payload": {"fail": true}, "max_attempts": 1},
            {"payload": {"fail": true}, "max_attempts": 1},
            {"payload": {"fail": true}, "max_attempts": 1},
        ]),
    );
    r.expect(201);
    let mut drain = env.worker(&[q, "--drain"]);
    assert_eq!(drain.wait(BOUND), 0, "{}", drain.log());
    assert_eq!(api.count(q, "failed"), 3);
    let failed = api.get(&format!("/v1/queues/{q}/jobs?state=failed"));
    failed.expect(200);
    let listed = failed.json();
    let ids: Vec<String> = listed["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|j| j["id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(ids.len(), 3, "{failed}");
    let job = &listed["jobs"][0];
    assert_eq!(job["state"], "failed", "{failed}");
    assert_eq!(job["error"], "napped, and failed as asked", "{failed}");
    assert_eq!(job["attempts"], 1, "{failed}");
    assert_eq!(job["history"][0]["number"], 1, "{failed}");
    assert!(job["history"][0]["ended_at"].is_u64(), "{failed}");
    assert!(
        job["log"]
            .as_str()
            .is_some_and(|l| l.contains("napped 0 ms")),
        "{failed}"
    );

    // One retried: pending with a fresh set of attempts; not twice.
    let retried = api.post(&format!("/v1/jobs/{}/retry", ids[0]), &json!(null));
    retried.expect(200);
    assert_eq!(retried.json(), json!({"id": ids[0], "state": "pending"}));
    let twice = api.post(&format!("/v1/jobs/{}/retry", ids[0]), &json!(null));
    let detail = twice.problem(409);
    assert_eq!(
        detail,
        format!(
            "job {} is pending; retry applies only to failed jobs",
            ids[0]
        )
    );
    let cli = env.run(&["jobs", "retry", &ids[0]]);
    assert!(
        cli.expect_code(2).stderr().contains(&detail),
        "{}",
        cli.stderr()
    );
    let missing = api.post(&format!("/v1/jobs/{q}:999/retry"), &json!(null));
    let detail = missing.problem(404);
    let cli = env.run(&["jobs", "retry", &format!("{q}:999")]);
    assert!(
        cli.expect_code(2).stderr().contains(&detail),
        "{}",
        cli.stderr()
    );

    // The rest at once.
    let all = api.post(&format!("/v1/queues/{q}/retry-failed"), &json!(null));
    all.expect(200);
    assert_eq!(all.json(), json!({"queue": q, "count": 2}));
    let none = api.post(&format!("/v1/queues/{q}/retry-failed"), &json!(null));
    assert_eq!(none.json()["count"], 0, "{none}");
    let counts = api.counts(q);
    assert_eq!(
        (&counts["pending"], &counts["failed"]),
        (&json!(3), &json!(0))
    );

    // Deleted: 204 without a body, then no such job.
    let deleted = api.delete(&format!("/v1/jobs/{}", ids[0]));
    deleted.expect(204);
    assert!(deleted.body.is_empty(), "{deleted}");
    let detail = api.job(&ids[0]).problem(404);
    assert_eq!(
        detail,
        format!(
            "no job {}: it may be done (done jobs are removed) or deleted",
            ids[0]
        )
    );
    let cli = env.run(&["jobs", "show", &ids[0]]);
    assert!(
        cli.expect_code(2).stderr().contains(&detail),
        "{}",
        cli.stderr()
    );
    api.delete(&format!("/v1/jobs/{}", ids[0])).problem(404);

    // Purged: every job that is not running.
    let purged = api.post(&format!("/v1/queues/{q}/purge"), &json!(null));
    purged.expect(200);
    assert_eq!(purged.json(), json!({"queue": q, "count": 2}));
    assert_eq!(api.count(q, "pending"), 0);

    // A running job is not deleted, nor purged.
    let long = api.dispatch(q, &json!({"payload": {"ms": 120_000}}));
    let _worker = env.worker(&[q]);
    eventually(BOUND, "the long job to be running", || {
        api.job(&long).json()["state"] == "running"
    });
    let busy = api.delete(&format!("/v1/jobs/{long}"));
    let detail = busy.problem(409);
    let cli = env.run(&["jobs", "delete", &long]);
    assert!(
        cli.expect_code(2).stderr().contains(&detail),
        "{}",
        cli.stderr()
    );
    let purged = api.post(&format!("/v1/queues/{q}/purge"), &json!(null));
    assert_eq!(purged.json()["count"], 0, "{purged}");
    assert_eq!(api.job(&long).json()["state"], "running");
    documented(&server);
}

#[test]
fn a_paused_queue_keeps_its_jobs_until_it_is_resumed() {
    let env = Env::new();
    let server = env.serve(&[], &[]);
    let api = As::anyone(&server);
    let (nap, other) = (guests::NAP, guests::OUTCOMES);
    let pause = api.post(&format!("/v1/queues/{nap}/pause"), &json!(null));
    pause.expect(200);
    assert_eq!(
        pause.json(),
        json!({"queue": nap, "paused": true, "changed": true})
    );
    let again = api.post(&format!("/v1/queues/{nap}/pause"), &json!(null));
    assert_eq!(again.json()["changed"], false, "{again}");
    let held = api.dispatch(nap, &json!({"payload": {"ms": 1}}));
    assert_eq!(api.counts(nap)["paused"], true);

    // A worker of both queues takes a later job of the other queue and
    // leaves the paused queue's.
    let _worker = env.worker(&[nap, other]);
    let later = api.dispatch(other, &json!({"payload": {}}));
    eventually(BOUND, "the other queue's job to be done", || {
        api.count(other, "done") == 1
    });
    assert_eq!(api.job(&later).status, 404);
    let job = api.job(&held);
    job.expect(200);
    assert_eq!(job.json()["state"], "pending", "{job}");
    let queues = api.get("/v1/queues");
    queues.expect(200);
    let listed = queues.json();
    let row = |name: &str| {
        listed["queues"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|q| q["queue"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no queue {name}:\n{queues}"))
    };
    assert_eq!(row(nap)["paused"], true);
    assert_eq!(row(nap)["pending"], 1);
    assert_eq!(row(other)["paused"], false);
    assert_eq!(row(other)["done"], 1);

    let resume = api.post(&format!("/v1/queues/{nap}/resume"), &json!(null));
    resume.expect(200);
    assert_eq!(
        resume.json(),
        json!({"queue": nap, "paused": false, "changed": true})
    );
    eventually(BOUND, "the held job to run once resumed", || {
        api.job(&held).status == 404
    });
    let counts = api.counts(nap);
    assert_eq!(
        (&counts["done"], &counts["pending"], &counts["paused"]),
        (&json!(1), &json!(0), &json!(false)),
        "{counts}"
    );
    documented(&server);
}

#[test]
fn errors_are_problems_in_the_clis_words() {
    let env = Env::new();
    let server = env.serve(&[], &[]);
    let api = As::anyone(&server);
    let nap = format!("/v1/queues/{}/jobs", guests::NAP);

    // The same mistake gets the same words from the API and the CLI.
    let bad_queue = api.post("/v1/queues/Bad/jobs", &json!({"payload": {}}));
    let detail = bad_queue.problem(400);
    assert!(detail.starts_with("invalid queue name \"Bad\""), "{detail}");
    let cli = env.run(&["dispatch", "Bad", "{}"]);
    assert!(
        cli.expect_code(2).stderr().contains(&detail),
        "{}",
        cli.stderr()
    );
    for path in [
        "/v1/queues/Bad",
        "/v1/queues/Bad/pause",
        "/v1/queues/Bad/purge",
    ] {
        let r = if path.ends_with("Bad") {
            api.get(path)
        } else {
            api.post(path, &json!(null))
        };
        assert_eq!(r.problem(400), detail, "{path}");
    }
    let zero = api.post(&nap, &json!({"payload": {}, "max_attempts": 0}));
    let detail = zero.problem(400);
    let cli = env.run(&["dispatch", guests::NAP, "{}", "--max-attempts", "0"]);
    assert!(
        cli.expect_code(2).stderr().contains(&detail),
        "{}",
        cli.stderr()
    );
    let bad_id = api.get("/v1/jobs/nap");
    let detail = bad_id.problem(400);
    let cli = env.run(&["jobs", "show", "nap"]);
    assert!(
        cli.expect_code(2).stderr().contains(&detail),
        "{}",
        cli.stderr()
    );
    let delay = api.post(&nap, &json!({"payload": {}, "delay": "5x"}));
    let detail = delay.problem(400);
    let reason = detail
        .strip_prefix("invalid value for delay: ")
        .unwrap_or_else(|| panic!("{detail}"));
    let cli = env.run(&["dispatch", guests::NAP, "{}", "--delay", "5x"]);
    assert!(
        cli.expect_code(2).stderr().contains(reason),
        "{}",
        cli.stderr()
    );
    let far = api.post(
        &nap,
        &json!({"payload": {}, "run_at": "2099-01-01T00:00:00Z"}),
    );
    let detail = far.problem(400);
    let reason = detail
        .strip_prefix("invalid value for run_at: ")
        .unwrap_or_else(|| panic!("{detail}"));
    let reason = reason.split(" (latest now").next().unwrap_or_default();
    let cli = env.run(&[
        "dispatch",
        guests::NAP,
        "{}",
        "--run-at",
        "2099-01-01T00:00:00Z",
    ]);
    assert!(
        cli.expect_code(2).stderr().contains(reason),
        "{}",
        cli.stderr()
    );
    let tenant = api.post("/v1/tenants", &json!({"name": "Bad"}));
    let detail = tenant.problem(400);
    let cli = env.run(&["tenants", "create", "Bad"]);
    assert!(
        cli.expect_code(2).stderr().contains(&detail),
        "{}",
        cli.stderr()
    );
    let long = api.post("/v1/tenants", &json!({"name": "x".repeat(5000)}));
    assert!(
        long.problem(413).contains("the request body is over"),
        "{long}"
    );

    // A payload over 1 MiB, in a body within the limit of one job's.
    let blob = "x".repeat(1 << 20);
    let large = api.post(&nap, &json!({"payload": {"blob": blob}}));
    let detail = large.problem(413);
    let cli = runtime(
        env.cache.path(),
        &["--backend", &env.url(), "dispatch", guests::NAP, "-"],
        Some(json!({"blob": blob}).to_string().as_bytes()),
    );
    let said = cli.expect_code(2).stderr();
    for words in [
        "over the limit of 1048576 bytes",
        "; put large data elsewhere and pass its location",
    ] {
        assert!(detail.contains(words), "{detail}");
        assert!(said.contains(words), "{said}");
    }
    // A body over the limit of one job's: refused before it is read whole.
    let over = api.post_raw(&nap, "application/json", &vec![b' '; (1 << 20) + 65 * 1024]);
    assert!(
        over.problem(413).contains("the request body is over"),
        "{over}"
    );

    // Bodies that are not a job.
    let malformed = api.post_raw(&nap, "application/json", br#"{"payload": {"#);
    assert!(
        malformed.problem(400).starts_with("invalid job: "),
        "{malformed}"
    );
    let unknown = api.post(&nap, &json!({"payload": {}, "colour": "red"}));
    assert!(
        unknown.problem(400).contains("unknown field `colour`"),
        "{unknown}"
    );
    let no_payload = api.post(&nap, &json!({"priority": 2}));
    assert!(no_payload.problem(400).contains("payload"), "{no_payload}");

    // Paths and methods the server does not have.
    for path in [
        "/nope",
        "/v1/nope",
        "/v1/queues/nap/jobs/extra",
        "/v2/queues",
    ] {
        let r = api.get(path);
        assert!(r.problem(404).contains("no such path"), "{path}:\n{r}");
    }
    for (method, path) in [
        ("PUT", "/v1/queues"),
        ("DELETE", "/v1/queues/nap"),
        ("GET", "/v1/queues/nap/batch"),
        ("PATCH", "/v1/jobs/nap:1"),
    ] {
        let r = api.call(method, path, None, b"");
        assert!(
            r.problem(405).contains("does not take that method"),
            "{method} {path}:\n{r}"
        );
        assert!(r.header("allow").is_some(), "{method} {path}:\n{r}");
    }
    assert_eq!(api.count(guests::NAP, "pending"), 0, "nothing went in");
    documented(&server);
}

/// A handlers directory with the `nap` fixture as the handler of queue
/// `nap` of the default tenant and of each of `tenants`.
fn nap_handlers(tenants: &[&str]) -> TempDir {
    let handlers = tenant_handlers("nap", tenants);
    std::fs::copy(
        Path::new(guests::DIR).join("nap_job.wasm"),
        handlers.path().join("nap_job.wasm"),
    )
    .expect("copy the fixture");
    handlers
}

/// A tenant created by the admin over the API: its token.
fn create_tenant(admin: &As, name: &str) -> String {
    let r = admin.post("/v1/tenants", &json!({"name": name}));
    r.expect(201);
    let body = r.json();
    assert_eq!(body["name"], name, "{r}");
    body["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token:\n{r}"))
        .to_string()
}

#[test]
fn tokens_decide_who_sees_and_changes_what() {
    let mut env = Env::new();
    let handlers = nap_handlers(&["alpha", "beta"]);
    env.handlers = handlers.path().display().to_string();
    let server = env.serve(&[], &[("RUNTIME_ADMIN_TOKEN", ADMIN)]);
    server.wait_for_log("requests need a token");
    let anyone = As::anyone(&server);
    let admin = As::token(&server, ADMIN);

    // Without a token, or with a wrong one: 401 and how to authenticate.
    for caller in [
        As::anyone(&server),
        As::token(&server, "not-the-admin-token-at-all"),
    ] {
        let r = caller.get("/v1/queues");
        r.problem(401);
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer realm=\"runtime\""),
            "{r}"
        );
    }
    let r = server.request(
        "GET",
        "/v1/queues",
        &[("Authorization", "Basic YWRtaW4=")],
        b"",
    );
    r.problem(401);
    anyone
        .post(
            &format!("/v1/queues/{}/jobs", guests::NAP),
            &json!({"payload": {}}),
        )
        .problem(401);
    // Probes need no token.
    anyone.get("/healthz").expect(200);
    anyone.get("/readyz").expect(200);

    let alpha_token = create_tenant(&admin, "alpha");
    let beta_token = create_tenant(&admin, "beta");
    let exists = admin.post("/v1/tenants", &json!({"name": "alpha"}));
    assert!(
        exists.problem(409).contains("tenant alpha exists already"),
        "{exists}"
    );
    let alpha = As::token(&server, &alpha_token);
    let beta = As::token(&server, &beta_token);

    // A tenant names its queues bare; its jobs are its own.
    let r = alpha.post(
        &format!("/v1/queues/{}/jobs", guests::NAP),
        &json!({"payload": {"ms": 1}}),
    );
    r.expect(201);
    assert_eq!(
        r.json(),
        json!({"id": "alpha/nap:1", "queue": "alpha/nap", "state": "pending"})
    );
    let b_id = beta.dispatch(guests::NAP, &json!({"payload": {"ms": 1}}));
    assert_eq!(b_id, "beta/nap:1");
    admin.dispatch(guests::NAP, &json!({"payload": {"ms": 1}}));
    assert_eq!(
        alpha.dispatch(guests::NAP, &json!({"payload": {"ms": 1}})),
        "alpha/nap:2"
    );
    for id in ["nap:1", "alpha/nap:1"] {
        let own = alpha.job(id);
        own.expect(200);
        assert_eq!(own.json()["id"], "alpha/nap:1", "{own}");
    }
    let names = |caller: &As| -> Vec<String> {
        let r = caller.get("/v1/queues");
        r.expect(200);
        r.json()["queues"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|q| q["queue"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(names(&alpha), vec!["alpha/nap"]);
    assert_eq!(names(&beta), vec!["beta/nap"]);
    assert_eq!(names(&admin), vec!["alpha/nap", "beta/nap", "nap"]);

    // Another tenant's queues and jobs are refused, before the queue server.
    let theirs = alpha.job(&b_id);
    let detail = theirs.problem(403);
    assert!(detail.contains("is outside tenant alpha"), "{detail}");
    alpha
        .delete(&format!("/v1/jobs/{}", encode(&b_id)))
        .problem(403);
    alpha
        .post(&format!("/v1/jobs/{}/retry", encode(&b_id)), &json!(null))
        .problem(403);
    for action in ["purge", "pause", "retry-failed"] {
        alpha
            .post(&format!("/v1/queues/beta%2Fnap/{action}"), &json!(null))
            .problem(403);
    }
    alpha.get("/v1/queues/beta%2Fnap").problem(403);
    alpha.get("/v1/queues/beta%2Fnap/jobs").problem(403);
    alpha
        .post("/v1/queues/beta%2Fnap/jobs", &json!({"payload": {}}))
        .problem(403);
    beta.job(&b_id).expect(200);
    assert_eq!(admin.count("beta/nap", "pending"), 1, "untouched");
    assert_eq!(admin.counts("beta/nap")["paused"], false, "untouched");
    // A bare id is read in the caller's own tenant: alpha/nap:2 is not
    // beta's nap:2.
    let bare = beta.job("nap:2");
    assert!(bare.problem(404).contains("no job beta/nap:2"), "{bare}");

    // Tenants: the admin sees all, a tenant only itself.
    let all = admin.get("/v1/tenants");
    all.expect(200);
    let listed: Vec<String> = all.json()["tenants"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| t["name"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(listed, vec!["alpha", "beta", "default"], "{all}");
    alpha.get("/v1/tenants").problem(403);
    alpha
        .post("/v1/tenants", &json!({"name": "gamma"}))
        .problem(403);
    let own = alpha.get("/v1/tenants/alpha");
    own.expect(200);
    assert_eq!(own.json()["name"], "alpha");
    assert_eq!(own.json()["registered"], true);
    assert_eq!(own.json()["usage"]["backlog"]["used"], 2, "{own}");
    alpha.get("/v1/tenants/beta").problem(403);
    admin.get("/v1/tenants/beta").expect(200);
    admin.get("/v1/tenants/nobody").problem(404);
    // Workers: a tenant sees those that serve its queues, the admin all.
    let _default = env.worker(&[guests::NAP]);
    let _alpha = env.worker(&["alpha/nap"]);
    let served = |caller: &As| -> Vec<Value> {
        let r = caller.get("/v1/workers");
        r.expect(200);
        r.json()["workers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|w| w["queues"].clone())
            .collect()
    };
    assert_eq!(served(&alpha), vec![json!(["alpha/nap"])]);
    assert_eq!(served(&beta), Vec::<Value>::new());
    let mut all = served(&admin);
    all.sort_by_key(Value::to_string);
    assert_eq!(all, vec![json!(["alpha/nap"]), json!(["nap"])]);

    // Metrics cover every tenant: the admin's only.
    let metrics = admin.get("/metrics");
    metrics.expect(200);
    assert!(metrics.media_type().starts_with("text/plain"), "{metrics}");
    assert!(metrics.text().contains("# TYPE"), "{metrics}");
    alpha.get("/metrics").problem(403);
    anyone.get("/metrics").problem(401);
    documented(&server);
}

/// `printf %s TOKEN | sha256sum`, as the README says to make the config's
/// `serve.admin_token_sha256`.
fn sha256_hex(token: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run sha256sum");
    child
        .stdin
        .take()
        .expect("sha256sum's stdin")
        .write_all(token.as_bytes())
        .expect("write to sha256sum");
    let out = child.wait_with_output().expect("sha256sum's output");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let hex = text
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    assert_eq!(hex.len(), 64, "{text}");
    hex
}

#[test]
fn the_admin_token_hash_in_the_config_works_the_same_and_allows_any_address() {
    let env = Env::new();
    let file = config(
        env.cache.path(),
        &format!("[serve]\nadmin_token_sha256 = \"{}\"\n", sha256_hex(ADMIN)),
    );
    let url = env.url();
    let server = ServeProcess::start(
        env.cache.path(),
        &[
            "--backend",
            &url,
            "--config",
            &file,
            "serve",
            "--listen",
            "0.0.0.0:0",
        ],
        &[],
    );
    assert!(
        server.log().contains("serving http://0.0.0.0:"),
        "{}",
        server.log()
    );
    let r = As::anyone(&server).get("/v1/queues");
    r.problem(401);
    assert!(r.header("www-authenticate").is_some(), "{r}");
    As::token(&server, "admin-token-of-the-serve-tests-012345678X")
        .get("/v1/queues")
        .problem(401);
    let admin = As::token(&server, ADMIN);
    admin.get("/v1/queues").expect(200);
    let token = create_tenant(&admin, "acme");
    let acme = As::token(&server, &token);
    assert_eq!(
        acme.dispatch(guests::NAP, &json!({"payload": {}})),
        "acme/nap:1"
    );
    acme.get("/v1/tenants").problem(403);
    acme.get("/metrics").problem(403);
    admin.get("/metrics").expect(200);
    documented(&server);
}

#[test]
fn without_an_admin_token_only_loopback_is_served_and_every_caller_is_the_admin() {
    let cache = TempDir::new("serve-open");
    let mut open = ServeProcess::spawn(cache.path(), &["serve", "--listen", "0.0.0.0:0"], &[]);
    assert_eq!(open.wait(BOUND), 2, "{}", open.log());
    let said = open.log();
    assert!(
        said.contains("error: refusing to listen on 0.0.0.0:0 without tokens"),
        "{said}"
    );
    for why in [
        "anyone who reaches it",
        "RUNTIME_ADMIN_TOKEN",
        "serve.admin_token_sha256",
        "loopback",
    ] {
        assert!(said.contains(why), "{why}: {said}");
    }
    let mut short = ServeProcess::spawn(
        cache.path(),
        &["serve", "--listen", "127.0.0.1:0"],
        &[("RUNTIME_ADMIN_TOKEN", "too-short")],
    );
    assert_eq!(short.wait(BOUND), 2, "{}", short.log());
    assert!(
        short.log().contains("RUNTIME_ADMIN_TOKEN is too short"),
        "{}",
        short.log()
    );

    let server = ServeProcess::start(cache.path(), &["serve", "--listen", "127.0.0.1:0"], &[]);
    let log = server.log();
    let warning = log
        .lines()
        .find(|l| l.contains("every request acts as the admin"))
        .unwrap_or_else(|| panic!("no warning:\n{log}"));
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains("no admin token"), "{warning}");
    // The admin's own requests, with no token or any.
    let anyone = As::anyone(&server);
    anyone.get("/v1/tenants").expect(200);
    As::token(&server, "whatever").get("/metrics").expect(200);
    documented(&server);
}

#[test]
fn a_tenants_dispatch_rate_answers_429_with_retry_after_in_the_clis_words() {
    let env = Env::new();
    // One job per 100 s after a burst of two: the third is refused however
    // slowly the requests go.
    let file = config(
        env.cache.path(),
        "[tenants.acme]\ndispatch_rate = 0.01\ndispatch_burst = 2\n",
    );
    let server = env.serve(&["--config", &file], &[]);
    let api = As::anyone(&server);
    let path = "/v1/queues/acme%2Fnap/jobs";
    // More at once than the burst is never admitted: no use waiting.
    let three = json!([{"payload": {}}, {"payload": {}}, {"payload": {}}]);
    let burst = api.post("/v1/queues/acme%2Fnap/batch", &three);
    let detail = burst.problem(422);
    assert_eq!(
        detail,
        "dispatch refused: 3 jobs at once is more than tenant acme's dispatch_burst (2): dispatch fewer at a time; nothing was dispatched"
    );
    assert_eq!(burst.header("retry-after"), None, "{burst}");
    // A refused dispatch takes no tokens: two go in, the third waits.
    api.post(path, &json!({"payload": {}})).expect(201);
    api.post(path, &json!({"payload": {}})).expect(201);
    let refused = api.post(path, &json!({"payload": {}}));
    let detail = refused.problem(429);
    let retry_after: u64 = refused
        .header("retry-after")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After in seconds:\n{refused}"));
    assert!((1..=100).contains(&retry_after), "{refused}");
    assert_eq!(refused.json()["retry_after"], retry_after, "{refused}");
    let words = "dispatch refused: tenant acme is over its dispatch rate (0.01 jobs/s, bursts of 2): try again in";
    assert!(detail.starts_with(words), "{detail}");
    let cli = env.run(&["--config", &file, "dispatch", "acme/nap", "{}"]);
    let said = cli.expect_code(2).stderr();
    assert!(said.contains(&format!("error: {words}")), "{said}");
    // A batch too: nothing of it goes in.
    let batch = api.post("/v1/queues/acme%2Fnap/batch", &json!([{"payload": {}}]));
    batch.problem(429);
    assert!(batch.header("retry-after").is_some(), "{batch}");
    // Other tenants are untouched.
    api.post("/v1/queues/beta%2Fnap/jobs", &json!({"payload": {}}))
        .expect(201);
    assert_eq!(api.count("acme/nap", "pending"), 2);
    documented(&server);
}

#[test]
fn a_tenants_request_rate_on_the_server_answers_429_with_retry_after() {
    let env = Env::new();
    // One request per 100 s, bursts of one.
    let file = config(env.cache.path(), "[serve]\ntenant_request_rate = 0.01\n");
    let server = env.serve(&["--config", &file], &[("RUNTIME_ADMIN_TOKEN", ADMIN)]);
    let admin = As::token(&server, ADMIN);
    let acme = As::token(&server, &create_tenant(&admin, "acme"));
    let beta = As::token(&server, &create_tenant(&admin, "beta"));
    acme.get("/v1/queues").expect(200);
    let refused = acme.get("/v1/queues");
    let detail = refused.problem(429);
    assert!(
        detail.starts_with("tenant acme is over its request rate on this server"),
        "{detail}"
    );
    assert!(detail.contains("serve.tenant_request_rate"), "{detail}");
    let retry_after: u64 = refused
        .header("retry-after")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After in seconds:\n{refused}"));
    assert!((1..=100).contains(&retry_after), "{refused}");
    assert_eq!(refused.json()["retry_after"], retry_after, "{refused}");
    acme.post("/v1/queues/nap/jobs", &json!({"payload": {}}))
        .problem(429);
    // The dashboard's pages and picture draw on the same bucket.
    let gamma = create_tenant(&admin, "gamma");
    let cookie = format!("runtime_token={gamma}");
    let page = server.request("GET", "/", &[("Cookie", &cookie)], b"");
    assert_eq!(page.status, 200, "{page}");
    let again = server.request("GET", "/ui/throughput.svg", &[("Cookie", &cookie)], b"");
    assert!(
        again
            .problem(429)
            .starts_with("tenant gamma is over its request rate"),
        "{again}"
    );
    // Each tenant has its own bucket; the admin has none.
    beta.get("/v1/queues").expect(200);
    for _ in 0..3 {
        admin.get("/v1/queues").expect(200);
    }
    assert_eq!(admin.count("acme/nap", "pending"), 0);
    documented(&server);
}

#[test]
fn readiness_follows_the_queue_server_and_health_does_not() {
    let mut env = Env::new();
    let server = env.serve(&[], &[]);
    let api = As::anyone(&server);
    let health = api.get("/healthz");
    health.expect(200);
    assert_eq!(health.json(), json!({"status": "ok"}));
    let ready = api.get("/readyz");
    ready.expect(200);
    assert_eq!(ready.json(), json!({"status": "ready"}));
    api.dispatch(guests::NAP, &json!({"payload": {}}));

    env.redis.kill();
    let started = Instant::now();
    let down = api.get("/readyz");
    down.problem(503);
    // Its own bound is 2 s; a hung answer would be a failed probe.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "/readyz took {:?}",
        started.elapsed()
    );
    api.get("/healthz").expect(200);
    let refused = api.post(
        &format!("/v1/queues/{}/jobs", guests::NAP),
        &json!({"payload": {}}),
    );
    refused.problem(503);
    documented(&server);
}

#[test]
fn sigterm_stops_the_server_at_once_when_nothing_is_in_flight() {
    let env = Env::new();
    let mut server = env.serve(&["--grace", "120s"], &[]);
    As::anyone(&server).get("/v1/queues").expect(200);
    documented(&server);
    let started = Instant::now();
    assert_eq!(server.terminate(BOUND), 0, "{}", server.log());
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "it waited {:?}, as if for the grace period",
        started.elapsed()
    );
    assert!(server.log().contains("stopped"), "{}", server.log());
}

#[test]
fn in_memory_the_server_runs_jobs_itself() {
    let cache = TempDir::new("serve-memory");
    let mut server = ServeProcess::start(
        cache.path(),
        &[
            "--handlers",
            guests::DIR,
            "serve",
            "--listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    assert!(
        server.log().contains("over the in-memory queue"),
        "{}",
        server.log()
    );
    let api = As::anyone(&server);
    let done = api.dispatch(guests::NAP, &json!({"payload": {"ms": 1}}));
    eventually(BOUND, "the job to be done", || api.job(&done).status == 404);
    assert_eq!(api.count(guests::NAP, "done"), 1);

    let failing = api.dispatch(
        guests::NAP,
        &json!({"payload": {"fail": true}, "max_attempts": 1}),
    );
    eventually(BOUND, "the job to fail", || {
        api.job(&failing).json()["state"] == "failed"
    });
    let job = api.job(&failing).json();
    assert_eq!(job["error"], "napped, and failed as asked", "{job}");
    assert_eq!(job["attempts"], 1, "{job}");
    assert!(job["error_kind"].is_string(), "{job}");
    assert_eq!(
        job["history"][0]["error"], "napped, and failed as asked",
        "{job}"
    );
    let counts = api.counts(guests::NAP);
    assert_eq!(
        (&counts["done"], &counts["failed"]),
        (&json!(1), &json!(1)),
        "{counts}"
    );
    // The dashboard's chart counts both attempts, the failure as failed.
    eventually(BOUND, "the chart to count both attempts", || {
        let chart = api.get("/ui/throughput.svg");
        chart.status == 200
            && chart.text().contains("processed 2")
            && chart.text().contains("failed 1")
    });
    let workers = api.get("/v1/workers");
    workers.expect(200);
    assert_eq!(
        workers.json()["workers"][0]["pid"],
        server.pid(),
        "{workers}"
    );
    documented(&server);
    assert_eq!(server.terminate(BOUND), 0, "{}", server.log());
    let log = server.log();
    assert!(
        log.contains("in-process worker stopped done=1 failed=1"),
        "{log}"
    );
}

/// The routes of the server's router under `/v1`, read from its source:
/// (method, path) for each method of each `.route(...)`.
fn router_routes() -> Vec<(String, String)> {
    let source = std::fs::read_to_string(root().join("runtime/src/cli/serve/mod.rs"))
        .expect("read runtime/src/cli/serve/mod.rs");
    assert!(
        source.contains(".nest(\"/v1\", v1)"),
        "the API is no longer nested under /v1"
    );
    let start = source
        .find("let v1 = Router::new()")
        .expect("the router of /v1 in runtime/src/cli/serve/mod.rs");
    let block = &source[start..];
    let block = &block[..block.find(';').unwrap_or(block.len())];
    let mut routes = Vec::new();
    for piece in block.split(".route(").skip(1) {
        let path = piece.split('"').nth(1).expect("a route's path");
        for method in ["get", "post", "put", "patch", "delete"] {
            let call = format!("{method}(");
            let named = piece.match_indices(&call).any(|(at, _)| {
                piece[..at]
                    .chars()
                    .last()
                    .is_none_or(|c| !(c.is_alphanumeric() || c == '_'))
            });
            if named {
                routes.push((method.to_string(), format!("/v1{path}")));
            }
        }
    }
    assert!(routes.len() >= 16, "read too few routes: {routes:?}");
    routes
}

#[test]
fn every_route_under_v1_is_in_the_openapi_document_and_nothing_else_is() {
    let env = Env::new();
    let server = env.serve(&[], &[]);
    let doc = openapi(&server);
    assert_eq!(doc.json()["openapi"], "3.1.0");
    let routes = router_routes();
    // The document describes the API; it need not describe itself.
    let api: Vec<&(String, String)> = routes
        .iter()
        .filter(|(_, path)| path != "/v1/openapi.json")
        .collect();
    let mut operations = doc.operations();
    operations.sort();
    let mut served: Vec<(String, String)> = api.iter().map(|r| (*r).clone()).collect();
    served.sort();
    assert_eq!(
        served, operations,
        "the router's routes and the document's operations differ"
    );
    // And the server answers each as a route, not as an unknown path.
    let any = As::anyone(&server);
    for (method, path) in &routes {
        let target = path
            .replace("{queue}", guests::NAP)
            .replace("{id}", "nap:1")
            .replace("{tenant}", "default");
        let r = any.call(
            &method.to_ascii_uppercase(),
            &target,
            Some("application/json"),
            b"{}",
        );
        let unknown = r.status == 405 || (r.status == 404 && r.text().contains("no such path"));
        assert!(!unknown, "{method} {target} is not served:\n{r}");
    }
    documented(&server);
}

#[test]
fn the_openapi_check_fails_on_what_the_document_does_not_say() {
    let cache = TempDir::new("serve-openapi");
    let server = ServeProcess::start(cache.path(), &["serve", "--listen", "127.0.0.1:0"], &[]);
    let doc = openapi(&server);
    let ok = br#"{"id": "nap:1", "queue": "nap", "state": "pending"}"#;
    doc.check("POST", "/v1/queues/nap/jobs", 201, "application/json", ok)
        .expect("a real answer fits");
    let problem = br#"{"type": "about:blank", "title": "Bad Request", "status": 400, "detail": "x", "index": 2}"#;
    doc.check(
        "POST",
        "/v1/queues/nap/batch",
        400,
        "application/problem+json",
        problem,
    )
    .expect("a problem fits");
    doc.check("DELETE", "/v1/jobs/nap:1", 204, "", b"")
        .expect("no body fits");
    let bad: [(&str, &str, u16, &str, &[u8]); 8] = [
        ("POST", "/v1/queues/nap/jobs", 418, "application/json", ok),
        ("POST", "/v1/queues/nap/jobs", 201, "text/plain", ok),
        (
            "POST",
            "/v1/queues/nap/jobs",
            201,
            "application/json",
            br#"{"id": "nap:1", "queue": "nap"}"#,
        ),
        (
            "POST",
            "/v1/queues/nap/jobs",
            201,
            "application/json",
            br#"{"id": 1, "queue": "nap", "state": "pending"}"#,
        ),
        (
            "GET",
            "/v1/queues/nap/jobs",
            200,
            "application/json",
            br#"{"jobs": [{"id": "nap:1"}], "next_cursor": null}"#,
        ),
        (
            "POST",
            "/v1/queues/nap/batch",
            400,
            "application/problem+json",
            br#"{"type": "about:blank", "title": "x", "status": "400", "detail": "x"}"#,
        ),
        ("DELETE", "/v1/jobs/nap:1", 204, "application/json", b"{}"),
        ("PUT", "/v1/queues", 200, "application/json", b"{}"),
    ];
    for (method, path, status, media, body) in bad {
        assert!(
            doc.check(method, path, status, media, body).is_err(),
            "{method} {path} {status} {media} {} passed",
            String::from_utf8_lossy(body)
        );
    }
    // The same, through the check of a test's exchanges.
    let exchanges = vec![runtime_tests::serve::Exchange {
        method: "GET".into(),
        path: "/v1/queues".into(),
        response: Response {
            status: 418,
            headers: vec![("content-type".into(), "application/json".into())],
            body: b"{}".to_vec(),
        },
    }];
    let caught = std::panic::catch_unwind(|| doc.check_all(&exchanges));
    assert!(caught.is_err(), "an undocumented status passed the check");
}

/// Runs a client example with `env`, bounded; its exit status, stdout and
/// stderr.
fn run_client(program: &str, args: &[&str], env: &[(&str, String)]) -> (i32, String, String) {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_remove("RUNTIME_TOKEN")
        .env_remove("RUNTIME_URL")
        .env_remove("RUNTIME_QUEUE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in env {
        cmd.env(name, value);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let mut stdout = child.stdout.take().expect("the client's stdout");
    let mut stderr = child.stderr.take().expect("the client's stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + BOUND;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{program} {args:?} did not finish within {BOUND:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    (status.code().unwrap_or(-1), stdout, stderr)
}

#[test]
fn the_client_examples_dispatch_and_wait_for_the_outcome() {
    let handlers = nap_handlers(&["acme"]);
    let mut env = Env::new();
    env.handlers = handlers.path().display().to_string();
    let server = env.serve(&[], &[("RUNTIME_ADMIN_TOKEN", ADMIN)]);
    let _worker = env.worker(&["--all"]);
    let clients = root().join("examples/clients");
    let script = |name: &str| clients.join(name).display().to_string();
    // The README quotes each example whole: what it shows is what runs here.
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    for name in ["dispatch.sh", "dispatch.py", "dispatch.mjs"] {
        let text = std::fs::read_to_string(clients.join(name)).expect("an example");
        assert!(
            readme.contains(text.trim_end()),
            "README.md does not quote examples/clients/{name} as it is"
        );
    }
    let runs: [(&str, String); 3] = [
        ("bash", script("dispatch.sh")),
        ("python3", script("dispatch.py")),
        ("node", script("dispatch.mjs")),
    ];
    let env_of = |token: &str| {
        vec![
            ("RUNTIME_URL", server.url()),
            ("RUNTIME_TOKEN", token.to_string()),
        ]
    };
    let mut ids = BTreeSet::new();
    for (program, file) in &runs {
        let (code, out, err) = run_client(program, &[file, "nap", r#"{"ms": 1}"#], &env_of(ADMIN));
        assert_eq!(code, 0, "{file}:\n{out}\n{err}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{file}:\n{out}\n{err}");
        assert!(lines[0].starts_with("nap:"), "{file}:\n{out}");
        assert_eq!(lines[1], "done", "{file}:\n{out}");
        ids.insert(lines[0].to_string());

        // A tenant's queue, named in full by the admin; the job fails.
        let (code, out, err) = run_client(
            program,
            &[file, "acme/nap", r#"{"fail": true}"#],
            &env_of(ADMIN),
        );
        assert_eq!(code, 1, "{file}:\n{out}\n{err}");
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines.first().is_some_and(|l| l.starts_with("acme/nap:")),
            "{file}:\n{out}"
        );
        assert_eq!(
            lines.get(1).copied(),
            Some("failed: napped, and failed as asked"),
            "{file}:\n{out}\n{err}"
        );
        ids.insert(lines[0].to_string());

        // Refused: a wrong token.
        let (code, out, err) = run_client(
            program,
            &[file, "nap"],
            &env_of("not-a-token-of-this-server"),
        );
        assert_eq!(code, 2, "{file}:\n{out}\n{err}");
        assert!(err.contains("dispatch refused"), "{file}:\n{out}\n{err}");
    }
    assert_eq!(ids.len(), 6, "{ids:?}");
    let admin = As::token(&server, ADMIN);
    assert_eq!(admin.count("nap", "done"), 3);
    assert_eq!(admin.count("acme/nap", "failed"), 3);
    documented(&server);
}

#[test]
fn the_dashboard_login_needs_its_form_token() {
    let env = Env::new();
    let server = env.serve(&[], &[("RUNTIME_ADMIN_TOKEN", ADMIN)]);
    let form = server.request("GET", "/login", &[], b"");
    assert_eq!(form.status, 200, "{form}");
    let page = form.text();
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the login form carries a CSRF token")
        .to_string();
    // The token is tied to a cookie sent with the form.
    let nonce = form
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .expect("the login form's cookie")
        .to_string();
    assert!(nonce.starts_with("runtime_login="), "{nonce}");
    let form_type = ("Content-Type", "application/x-www-form-urlencoded");
    // A form posted from elsewhere has neither: refused, no session.
    let forged = server.request(
        "POST",
        "/login",
        &[form_type],
        format!("token={ADMIN}").as_bytes(),
    );
    assert_eq!(forged.status, 403, "{forged}");
    assert_eq!(forged.header("set-cookie"), None, "{forged}");
    // Another browser's token without its cookie: refused too.
    let borrowed = server.request(
        "POST",
        "/login",
        &[form_type],
        format!("csrf={csrf}&token={ADMIN}").as_bytes(),
    );
    assert_eq!(borrowed.status, 403, "{borrowed}");
    // And a form sent from another site, whatever it holds.
    let cross = server.request(
        "POST",
        "/login",
        &[
            form_type,
            ("Cookie", &nonce),
            ("Origin", "https://evil.example"),
        ],
        format!("csrf={csrf}&token={ADMIN}").as_bytes(),
    );
    assert_eq!(cross.status, 403, "{cross}");
    let logged_in = server.request(
        "POST",
        "/login",
        &[form_type, ("Cookie", &nonce)],
        format!("csrf={csrf}&token={ADMIN}").as_bytes(),
    );
    assert_eq!(logged_in.status, 303, "{logged_in}");
    let cookie = logged_in.header("set-cookie").expect("a session cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
}

#[test]
fn without_tokens_other_sites_and_other_host_names_are_refused() {
    let env = Env::new();
    let server = env.serve(&[], &[]);
    let job = br#"{"payload": {"ms": 1}}"#;
    let path = format!("/v1/queues/{}/jobs", guests::NAP);
    // A form another site's page sends, and a fetch marked cross-site.
    for headers in [
        vec![
            ("Origin", "https://evil.example"),
            ("Content-Type", "text/plain"),
        ],
        vec![("Sec-Fetch-Site", "cross-site")],
    ] {
        let r = server.request("POST", &path, &headers, job);
        assert!(r.problem(403).contains("another site"), "{r}");
    }
    // A page whose name was pointed at this address (DNS rebinding).
    let rebound = server.request("GET", "/v1/queues", &[("Host", "rebind.evil.example")], b"");
    assert!(rebound.problem(403).contains("loopback"), "{rebound}");
    assert_eq!(
        env.count(guests::NAP, "pending") + env.count(guests::NAP, "done"),
        0,
        "nothing was dispatched"
    );
    // This server's own pages, and clients without an Origin, are served.
    let own = format!("http://{}", server.addr());
    let r = server.request("POST", &path, &[("Origin", own.as_str())], job);
    assert_eq!(r.status, 201, "{r}");
}

#[test]
fn a_batch_line_is_read_once_however_slowly_it_arrives() {
    let env = Env::new();
    let server = env.serve(&[], &[]);
    // One line of 4 MiB sent in small chunks: read once, refused as too
    // long for a job as soon as it passes the limit, with its index.
    let mut line = b"{\"payload\":\"".to_vec();
    line.resize(4 << 20, b'a');
    let chunks: Vec<&[u8]> = line.chunks(16 * 1024).collect();
    let started = Instant::now();
    let r = server.request_chunked(
        "POST",
        &format!("/v1/queues/{}/batch", guests::NAP),
        &[],
        &chunks,
    );
    assert_eq!(r.status, 413, "{r}");
    assert_eq!(r.json()["index"], 0, "{r}");
    assert!(
        started.elapsed() < BOUND,
        "a long line took {:?}",
        started.elapsed()
    );
}

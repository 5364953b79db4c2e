//! The dashboard of `runtime serve` driven in a real headless Chromium
//! (through chromedriver, [`runtime_tests::webdriver`]): each test starts
//! the real binary as `runtime serve` with an admin token over a Redis of
//! its own, and where jobs must run, real `runtime worker` processes on the
//! same Redis with the guest fixtures.
//!
//! The browser logs in through the form, follows the pages' links, answers
//! the confirmation dialogs, and reads the live counts as the page's own
//! script refreshes them. When a test fails, screenshots of the page it was
//! on and of the pages it used go to a directory named on stderr
//! ([`Shots`]).
//!
//! Chromium and chromedriver come from scripts/browser.sh.

use std::cell::RefCell;
use std::time::Duration;

use runtime_tests::serve::ServeProcess;
use runtime_tests::webdriver::Browser;
use runtime_tests::workers::{Env, eventually};
use runtime_tests::{TempDir, guests, tenant_handlers};
use serde_json::{Value, json};

/// The admin token `runtime serve` is started with.
const ADMIN: &str = "dashboard-admin-token-0123456789abcdef";

/// How long the CLI-side waits may take on a loaded machine.
const WAIT: Duration = Duration::from_secs(60);

/// A `runtime serve` with an admin token over `env`'s Redis, and a
/// browser.
#[derive(Debug)]
struct Dashboard {
    browser: Browser,
    serve: ServeProcess,
    env: Env,
}

impl Dashboard {
    /// `runtime serve` over `env`'s Redis and handlers, and a browser.
    fn start(env: Env) -> Self {
        let serve = env.serve(&[], &[("RUNTIME_ADMIN_TOKEN", ADMIN)]);
        let browser = Browser::start();
        Dashboard {
            browser,
            serve,
            env,
        }
    }

    /// The URL of `path` on the server.
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.serve.url())
    }

    /// Opens `path`.
    fn open(&self, path: &str) {
        self.browser.goto(&self.url(path));
    }

    /// Logs in through the form with `token`; waits for the queues page.
    fn login(&self, token: &str) {
        self.open("/login");
        let b = &self.browser;
        b.find("form[action=\"/login\"] input[type=password][name=token]")
            .send_keys(token);
        b.find_by_text("form[action=\"/login\"] button", "Log in")
            .click();
        b.wait_until("the queues page after logging in", || {
            match (b.path(), b.try_find("table[data-live-queues]")) {
                (path, Some(_)) if path == "/" => Ok(()),
                (path, _) => Err(format!("{path}: {}", b.text_of("body").unwrap_or_default())),
            }
        });
    }

    /// Clicks the button `label` of a form that asks first; waits for the
    /// dialog, answers it (OK if `accept`), and returns its text.
    fn confirm(&self, label: &str, accept: bool) -> String {
        let b = &self.browser;
        b.find_by_text("form[data-confirm] button[type=submit]", label)
            .click();
        let text = b.wait_for_alert();
        if accept {
            b.accept_alert();
        } else {
            b.dismiss_alert();
        }
        text
    }

    /// Waits until the page shows the notice `text`.
    fn wait_for_notice(&self, text: &str) {
        self.browser
            .wait_for_text("p.notice", &format!("to be {text:?}"), |t| t == text);
    }

    /// The row of `queue` on the queues page, cell by cell, as the page
    /// shows it now.
    fn row(&self, queue: &str) -> Option<Value> {
        self.browser
            .try_execute(
                r#"const row = document.querySelector(`tr[data-queue="${CSS.escape(arguments[0])}"]`);
                if (!row) return null;
                const cells = {};
                for (const c of row.querySelectorAll("[data-count]")) cells[c.dataset.count] = c.textContent;
                cells.paused = row.querySelector("[data-paused]").textContent;
                return cells;"#,
                &[json!(queue)],
            )
            .ok()
            .filter(|v| !v.is_null())
    }

    /// Waits until the queues page (already open, not reloaded: its
    /// script refreshes the counts) shows `want` for `queue`: counts by
    /// state and `paused` ("paused" or "").
    fn wait_for_row(&self, queue: &str, want: &Value) {
        let matches = |row: &Value| {
            want.as_object()
                .into_iter()
                .flatten()
                .all(|(k, v)| row.get(k).and_then(Value::as_str) == v.as_str())
        };
        self.browser.wait_until(
            &format!("the queues page to show {queue} as {want}"),
            || match self.row(queue) {
                Some(row) if matches(&row) => Ok(()),
                Some(row) => Err(row.to_string()),
                None => Err(format!("no row for {queue} on {}", self.browser.url())),
            },
        );
    }

    /// `runtime queues --json`: whether `queue` is paused.
    fn paused(&self, queue: &str) -> bool {
        let all = self.env.run(&["queues", "--json"]).expect_code(0).json();
        all[queue]["paused"]
            .as_bool()
            .unwrap_or_else(|| panic!("no {queue} in `runtime queues --json`: {all}"))
    }

    /// Sends `body` as a form POST to `path` from the page, with its
    /// cookie; status, final URL and body of the answer.
    fn post_from_page(&self, path: &str, body: &str) -> Value {
        self.browser.execute(
            r#"return fetch(arguments[0], {
                method: "POST",
                credentials: "same-origin",
                headers: { "Content-Type": "application/x-www-form-urlencoded" },
                body: arguments[1],
            }).then(async (r) => ({ status: r.status, url: r.url, body: await r.text() }));"#,
            &[json!(path), json!(body)],
        )
    }
}

/// When the test fails: screenshots (and the markup) of the page the
/// browser is on and of the pages the test used, and the server's log, in
/// a directory that is kept and named on stderr beside the panic.
#[derive(Debug)]
struct Shots<'a> {
    dashboard: &'a Dashboard,
    pages: RefCell<Vec<String>>,
}

impl<'a> Shots<'a> {
    fn new(dashboard: &'a Dashboard) -> Self {
        Shots {
            dashboard,
            pages: RefCell::new(vec!["/".to_string()]),
        }
    }

    /// Takes `path` too, if the test fails.
    fn page(&self, path: &str) {
        let mut pages = self.pages.borrow_mut();
        if !pages.iter().any(|p| p == path) {
            pages.push(path.to_string());
        }
    }
}

impl Drop for Shots<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        // Nothing here may panic: the thread is unwinding already.
        let name = std::thread::current()
            .name()
            .unwrap_or("dashboard")
            .replace("::", "-");
        let dir = std::env::temp_dir().join(format!(
            "dashboard-failure-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or_default()
        ));
        if std::fs::create_dir_all(&dir).is_err() {
            eprintln!("no screenshots: cannot create {}", dir.display());
            return;
        }
        let d = self.dashboard;
        let b = &d.browser;
        let mut notes = Vec::new();
        if let Some(text) = b.alert_text() {
            notes.push(format!("a dialog was open: {text:?} (dismissed)"));
            let _ = b.try_command("POST", "/alert/dismiss", None);
        }
        let shoot = |file: &str, what: String| {
            let png = dir.join(format!("{file}.png"));
            if let Ok(source) = b.try_source() {
                let _ = std::fs::write(dir.join(format!("{file}.html")), source);
            }
            match b.try_screenshot(&png) {
                Ok(()) => format!("{file}.png: {what}"),
                Err(e) => format!("{file}.png: {what}: not taken: {e}"),
            }
        };
        let current = b
            .try_command("GET", "/url", None)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        notes.push(shoot("0-current", current));
        for (i, path) in self.pages.borrow().iter().enumerate() {
            let url = d.url(path);
            notes.push(match b.try_goto(&url) {
                Ok(()) => shoot(&format!("{}-page", i + 1), url),
                Err(e) => format!("{url}: not opened: {e}"),
            });
        }
        let _ = std::fs::write(dir.join("serve.log"), d.serve.log());
        let _ = std::fs::write(dir.join("README.txt"), notes.join("\n") + "\n");
        eprintln!(
            "dashboard test failed: screenshots of its pages and the server's log are in {}",
            dir.display()
        );
    }
}

/// `s` as one URL path segment, as the dashboard writes it.
fn seg(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A config granting the `http` fixture the directory `data` as `/data`.
fn grant_data(env: &Env, data: &TempDir) -> String {
    let file = env.cache.path().join("grants.toml");
    std::fs::write(
        &file,
        format!(
            "[queues.{}.files]\n\"/data\" = {:?}\n",
            guests::HTTP,
            data.path().display().to_string()
        ),
    )
    .expect("write the config");
    file.display().to_string()
}

/// A job fails for good, is found on its queue's failed tab, opened, shown
/// with its error, and retried from its page; a worker then runs it to
/// the end.
///
/// A retry starts the attempts afresh, so a fixture that succeeds on a
/// later attempt would fail again; the job's outcome must depend on
/// something the test changes instead. The `http` fixture reading a file
/// of a granted directory does: it fails while the file is missing and
/// succeeds once the test has written it. The first worker is stopped
/// before the retry, so the page the retry lands on shows the job pending
/// however fast the machine is; a second worker then takes it.
#[test]
fn a_failed_job_is_opened_from_the_failed_tab_retried_and_done() {
    let data = TempDir::new("dashboard-data");
    let d = Dashboard::start(Env::new());
    let shots = Shots::new(&d);
    let config = grant_data(&d.env, &data);
    let queue = guests::HTTP;
    let mut first = d.env.worker(&[queue, "--config", &config]);
    let id = d.env.dispatch(
        queue,
        r#"{"read_file":"/data/ready.txt"}"#,
        &["--max-attempts", "1", "--config", &config],
    );
    let job_path = format!("/jobs/{}", seg(&id));
    let queue_path = format!("/queues/{}", seg(queue));
    shots.page(&format!("{queue_path}?state=failed"));
    shots.page(&job_path);
    eventually(WAIT, &format!("{id} to fail"), || {
        d.env.count(queue, "failed") == 1
    });
    first.signal("TERM");
    assert_eq!(first.wait(WAIT), 0, "{}", first.log());

    d.login(ADMIN);
    let b = &d.browser;
    assert_eq!(b.text_of("header .who").as_deref(), Some("admin"));
    d.wait_for_row(queue, &json!({"pending": "0", "failed": "1", "done": "0"}));
    b.find(&format!("tr[data-queue=\"{queue}\"] a")).click();
    b.wait_for_text("h1", "to name the queue", |t| t == format!("Queue {queue}"));
    let tab = b.find("nav.tabs a[href$=\"state=failed\"]");
    assert_eq!(tab.text(), "failed 1");
    tab.click();
    b.wait_for_text("nav.tabs a.current", "to be the failed tab", |t| {
        t == "failed 1"
    });
    assert_eq!(b.path(), format!("{queue_path}?state=failed"));
    let link = b.find_by_text("main table a", &id);
    assert_eq!(link.attr("href"), Some(job_path.clone()));
    let listed = b.text_of("main table tbody").unwrap_or_default();
    assert!(
        listed.contains("1/1") && listed.contains("read /data/ready.txt"),
        "the failed tab shows the attempts and the error: {listed}"
    );
    link.click();

    b.wait_for_text("h1", "to name the job", |t| t == format!("Job {id}"));
    assert_eq!(b.text_of("[data-state]").as_deref(), Some("failed"));
    let error = b.text_of("p.error").unwrap_or_default();
    assert!(
        error.starts_with("[handler] read /data/ready.txt: "),
        "the job's error: {error}"
    );
    let payload = b.text_of("pre[data-payload]").unwrap_or_default();
    assert!(
        payload.contains("\"read_file\": \"/data/ready.txt\""),
        "{payload}"
    );
    let attempts = b.text_of("main table tbody").unwrap_or_default();
    assert!(attempts.contains("handler"), "the attempts: {attempts}");

    std::fs::write(data.path().join("ready.txt"), "hello").expect("write the file");
    let asked = d.confirm("Retry", true);
    assert_eq!(
        asked,
        format!("Run {id} again with a fresh set of attempts?")
    );
    d.wait_for_notice("Pending again with a fresh set of attempts.");
    assert_eq!(b.path(), format!("{job_path}?did=retried"));
    assert_eq!(b.text_of("[data-state]").as_deref(), Some("pending"));
    assert!(
        b.try_find("form[action$=\"/retry\"]").is_none(),
        "a pending job offers no retry"
    );

    let second = d.env.worker(&[queue, "--config", &config]);
    d.open("/");
    d.wait_for_row(
        queue,
        &json!({"pending": "0", "running": "0", "failed": "0", "done": "1"}),
    );
    assert!(second.log().contains(&id), "{}", second.log());
    // Done jobs are removed: its page now says so.
    d.open(&job_path);
    let gone = b.text_of("p.error").unwrap_or_default();
    assert!(gone.starts_with(&format!("no job {id}")), "{gone}");
}

/// A queue paused from its page (after a dismissed confirmation that
/// changed nothing) keeps a new job pending while a worker serving it
/// runs another queue's jobs; resumed, the job is done.
#[test]
fn a_paused_queue_keeps_its_jobs_pending_until_resumed() {
    let d = Dashboard::start(Env::new());
    let shots = Shots::new(&d);
    let (held, other) = (guests::NAP, guests::OUTCOMES);
    let queue_path = format!("/queues/{}", seg(held));
    shots.page(&queue_path);
    let worker = d.env.worker(&[held, other]);
    d.env.dispatch(held, r#"{"ms":0}"#, &[]);
    d.env.dispatch(other, "{}", &[]);
    eventually(WAIT, "the first jobs to be done", || {
        d.env.count(held, "done") == 1 && d.env.count(other, "done") == 1
    });

    d.login(ADMIN);
    let b = &d.browser;
    d.wait_for_row(held, &json!({"pending": "0", "done": "1", "paused": ""}));
    b.find(&format!("tr[data-queue=\"{held}\"] a")).click();
    b.wait_for_text("h1", "to name the queue", |t| t == format!("Queue {held}"));

    // Cancel: nothing is sent, the queue still runs its jobs.
    b.execute("window.__still_here = true; return null;", &[]);
    let asked = d.confirm("Pause", false);
    assert_eq!(
        asked,
        format!("Pause {held}? Workers will take none of its jobs until it is resumed.")
    );
    assert_eq!(
        b.execute("return window.__still_here === true;", &[]),
        true,
        "a dismissed confirmation left the page: now on {}",
        b.url()
    );
    assert_eq!(b.path(), queue_path, "a dismissed confirmation submitted");
    assert!(
        b.try_find("p.notice").is_none(),
        "a dismissed confirmation submitted"
    );
    assert!(!d.paused(held), "a dismissed pause paused {held}");
    d.env.dispatch(held, r#"{"ms":0}"#, &[]);
    eventually(WAIT, &format!("a second job of {held} to be done"), || {
        d.env.count(held, "done") == 2
    });

    // OK: paused.
    d.confirm("Pause", true);
    d.wait_for_notice("Paused: workers take none of its jobs until it is resumed.");
    assert_eq!(b.path(), format!("{queue_path}?did=paused"));
    assert_eq!(b.text_of("h1 .badge").as_deref(), Some("paused"));
    assert!(d.paused(held), "`runtime queues` says {held} is paused");

    d.open("/");
    d.wait_for_row(
        held,
        &json!({"pending": "0", "done": "2", "paused": "paused"}),
    );
    let waiting = d.env.dispatch(held, r#"{"ms":0}"#, &[]);
    d.wait_for_row(
        held,
        &json!({"pending": "1", "done": "2", "paused": "paused"}),
    );
    // The worker takes a job of its other queue dispatched after it, and
    // leaves the paused one where it is.
    d.env.dispatch(other, "{}", &[]);
    d.wait_for_row(other, &json!({"pending": "0", "done": "2"}));
    let row = d.row(held).unwrap_or_default();
    assert_eq!(
        row,
        json!({"pending": "1", "scheduled": "0", "running": "0", "failed": "0", "done": "2", "paused": "paused"}),
        "{held} after the worker ran a later job of {other}"
    );
    let shown = d.env.show(&waiting);
    assert_eq!(
        (shown["state"].as_str(), shown["attempts"].as_u64()),
        (Some("pending"), Some(0)),
        "{shown}"
    );

    d.open(&queue_path);
    let asked = d.confirm("Resume", true);
    assert_eq!(
        asked,
        format!("Resume {held}? Workers will take its jobs again.")
    );
    d.wait_for_notice("Resumed: workers take its jobs again.");
    assert!(b.try_find("h1 .badge").is_none());
    d.open("/");
    d.wait_for_row(held, &json!({"pending": "0", "done": "3", "paused": ""}));
    assert!(worker.log().contains(&waiting), "{}", worker.log());
}

/// A tenant's token sees its own queues only: the other tenant's queue
/// and job pages are errors, and there is no Tenants page for it.
#[test]
fn a_tenant_sees_only_its_own_queues() {
    let handlers = tenant_handlers(guests::OUTCOMES, &["acme", "beta"]);
    let mut env = Env::new();
    env.handlers = handlers.path().display().to_string();
    let d = Dashboard::start(env);
    let shots = Shots::new(&d);
    let token = |tenant: &str| {
        let run = d.env.run(&["tenants", "create", tenant]);
        run.expect_code(0).stdout().trim().to_string()
    };
    let acme = token("acme");
    token("beta");
    let dispatch = |tenant: &str| {
        let run = d
            .env
            .run(&["--tenant", tenant, "dispatch", guests::OUTCOMES, "{}"]);
        run.expect_code(0).stdout().trim().to_string()
    };
    let (acme_job, beta_job) = (dispatch("acme"), dispatch("beta"));
    let acme_queue = format!("acme/{}", guests::OUTCOMES);
    let beta_queue = format!("beta/{}", guests::OUTCOMES);
    let beta_path = format!("/queues/{}", seg(&beta_queue));
    shots.page(&beta_path);
    shots.page("/tenants");

    // The admin sees both, and the Tenants page.
    d.login(ADMIN);
    let b = &d.browser;
    d.wait_for_row(&acme_queue, &json!({"pending": "1"}));
    d.wait_for_row(&beta_queue, &json!({"pending": "1"}));
    b.find("nav a[href=\"/tenants\"]").click();
    let tenants = b.wait_for_text("main table", "to list both tenants", |t| {
        t.contains("acme") && t.contains("beta")
    });
    assert!(!tenants.contains(&acme), "a token on the Tenants page");
    b.find_by_text("header form[action=\"/logout\"] button", "Log out")
        .click();
    b.wait_until("the login page after logging out", || {
        let path = b.path();
        (path == "/login").then_some(()).ok_or(path)
    });

    d.login(&acme);
    assert_eq!(b.text_of("header .who").as_deref(), Some("tenant acme"));
    d.wait_for_row(&acme_queue, &json!({"pending": "1"}));
    assert!(d.row(&beta_queue).is_none(), "acme sees {beta_queue}");
    let overview = b.text_of("main").unwrap_or_default();
    assert!(!overview.contains("beta"), "acme's overview: {overview}");
    assert!(
        b.try_find("a[href=\"/tenants\"]").is_none(),
        "a Tenants link for a tenant"
    );
    // The live counts come from the API, which answers acme's queues only.
    let listed = b.execute(
        "return fetch('/v1/queues').then((r) => r.json()).then((j) => j.queues.map((q) => q.queue));",
        &[],
    );
    assert_eq!(listed, json!([acme_queue]));

    // Its own queue and job open from the overview.
    b.find(&format!("tr[data-queue=\"{acme_queue}\"] a"))
        .click();
    b.find_by_text("main table a", &acme_job).click();
    b.wait_for_text("h1", "to name acme's job", |t| {
        t == format!("Job {acme_job}")
    });

    for path in [
        beta_path.clone(),
        format!("/jobs/{}", seg(&beta_job)),
        "/tenants".to_string(),
    ] {
        d.open(&path);
        let error = b.text_of("p.error").unwrap_or_else(|| {
            panic!(
                "{path} is no error page for acme: {}",
                b.text_of("body").unwrap_or_default()
            )
        });
        let main = b.text_of("main").unwrap_or_default();
        assert!(
            !main.contains(&beta_job) && b.try_find("main table").is_none(),
            "{path} shows beta's jobs to acme: {main}"
        );
        let expected = if path == "/tenants" {
            "only the admin sees every tenant".to_string()
        } else {
            format!("\"{beta_queue}\" is outside tenant acme")
        };
        assert!(error.contains(&expected), "{path}: {error}");
        let status = b.execute(
            "return fetch(arguments[0]).then((r) => r.status);",
            &[json!(path)],
        );
        assert_eq!(status, 403, "{path}: {error}");
    }
}

/// Hostile text in a job's payload, error and log shows as text on its
/// page and its queue's page: no element made of it, no script run.
#[test]
fn guest_text_is_shown_as_text_and_never_runs() {
    const SCRIPT: &str = "<script>window.__pwned=1</script>";
    const IMG: &str = "<img src=x onerror=\"window.__pwned=2\">";
    let d = Dashboard::start(Env::new());
    let shots = Shots::new(&d);
    let queue = guests::PANIC;
    let _worker = d.env.worker(&[queue]);
    // The fixture panics with `what`: its error and its log carry it.
    let payload = json!({ "what": format!("{SCRIPT}{IMG}"), "hidden": "\u{202e}" });
    let id = d
        .env
        .dispatch(queue, &payload.to_string(), &["--max-attempts", "1"]);
    let job_path = format!("/jobs/{}", seg(&id));
    let queue_path = format!("/queues/{}?state=failed", seg(queue));
    shots.page(&job_path);
    shots.page(&queue_path);
    eventually(WAIT, &format!("{id} to fail"), || {
        d.env.count(queue, "failed") == 1
    });
    let record = d.env.show(&id);
    for field in ["error", "log"] {
        let text = record[field].as_str().unwrap_or_default();
        assert!(
            text.contains(SCRIPT) && text.contains(IMG),
            "the fixture put the text in its {field}: {record}"
        );
    }

    d.login(ADMIN);
    let b = &d.browser;
    d.open(&job_path);
    b.wait_for_text("h1", "to name the job", |t| t == format!("Job {id}"));
    let shown = |css: &str| {
        b.text_of(css)
            .unwrap_or_else(|| panic!("no {css} on {job_path}"))
    };
    // The payload shows as JSON of the same value, its hidden character
    // as a JSON escape.
    let payload_shown = shown("pre[data-payload]");
    assert!(
        payload_shown.contains(SCRIPT) && payload_shown.contains("\\u202e"),
        "the payload as text: {payload_shown}"
    );
    let read_back: Value = serde_json::from_str(&payload_shown)
        .unwrap_or_else(|e| panic!("the payload shown is not JSON ({e}): {payload_shown}"));
    assert_eq!(read_back, payload);
    for css in ["pre[data-log]", "p.error"] {
        let text = shown(css);
        assert!(
            text.contains(SCRIPT) && text.contains(IMG),
            "{css} as text: {text}"
        );
    }
    assert_untouched(b, &job_path);

    d.open(&queue_path);
    let row = b.wait_for_text("main table tbody", "to list the failed job", |t| {
        t.contains(&id)
    });
    assert!(
        row.contains(&format!("panic: {SCRIPT}{IMG}")),
        "the error column as text: {row}"
    );
    assert_untouched(b, &queue_path);
}

/// No element was made of guest text on the open page, and no script of
/// it ran: the only script is the dashboard's own file.
fn assert_untouched(b: &Browser, page: &str) {
    let seen = b.execute(
        r#"return {
            pwned: typeof window.__pwned,
            inside: document.querySelectorAll(".guest *, pre[data-payload] *, pre[data-log] *").length,
            images: document.querySelectorAll("main img").length,
            scripts: Array.from(document.scripts).map((s) => s.getAttribute("src")),
        };"#,
        &[],
    );
    assert_eq!(
        seen,
        json!({"pwned": "undefined", "inside": 0, "images": 0, "scripts": ["/assets/app.js"]}),
        "{page}"
    );
}

/// A change POSTed from the logged-in browser without the form's CSRF
/// token, or with a wrong one, is refused with 403 and changes nothing;
/// the API does not take the session cookie for a change at all. The
/// page's own token works.
#[test]
fn a_change_without_the_csrf_token_is_refused() {
    let d = Dashboard::start(Env::new());
    let shots = Shots::new(&d);
    let queue = guests::NAP;
    let queue_path = format!("/queues/{}", seg(queue));
    shots.page(&queue_path);
    d.env.dispatch(queue, r#"{"ms":0}"#, &[]);

    d.login(ADMIN);
    let b = &d.browser;
    d.open(&queue_path);
    let token = b
        .find("form[action$=\"/pause\"] input[name=csrf]")
        .attr("value")
        .unwrap_or_default();
    assert_eq!(token.len(), 64, "the pause form's CSRF token: {token:?}");
    let pause = format!("{queue_path}/pause");
    for body in [String::new(), format!("csrf={}", "0".repeat(64))] {
        let answer = d.post_from_page(&pause, &body);
        assert_eq!(answer["status"], 403, "POST {pause} {body:?}: {answer}");
        assert!(
            answer["body"]
                .as_str()
                .is_some_and(|t| t.contains("CSRF token is missing or stale")),
            "{answer}"
        );
        assert!(!d.paused(queue), "POST {pause} {body:?} paused it");
    }
    let api = d.post_from_page(&format!("/v1/queues/{}/pause", seg(queue)), "");
    assert_eq!(api["status"], 401, "the API took the cookie: {api}");
    assert!(!d.paused(queue), "the API paused it on a cookie");

    // A form built in the page and submitted without the field.
    b.execute(
        r#"const form = document.createElement("form");
        form.method = "post";
        form.action = arguments[0];
        document.body.appendChild(form);
        form.submit();
        return null;"#,
        &[json!(pause)],
    );
    b.wait_for_text("body", "to refuse the form", |t| {
        t.contains("CSRF token is missing or stale")
    });
    let status = b.execute(
        "return performance.getEntriesByType('navigation')[0].responseStatus;",
        &[],
    );
    assert_eq!(status, 403, "the form's answer");
    assert!(!d.paused(queue), "a form without the token paused it");

    // The page's own token is taken.
    let answer = d.post_from_page(&pause, &format!("csrf={token}"));
    assert_eq!(answer["status"], 200, "{answer}");
    assert!(
        answer["url"]
            .as_str()
            .is_some_and(|u| u.ends_with(&format!("{queue_path}?did=paused"))),
        "{answer}"
    );
    assert!(d.paused(queue));
}

//! Handlers reaching the outside world through what the operator grants.

use std::time::{Duration, Instant};

use runtime_tests::http::{Reply, TestServer};
use runtime_tests::{TempDir, guests, runtime, runtime_command};
use serde_json::{Value, json};

/// The SDK's HTTP client imports `wasi:http/outgoing-handler`, and only in
/// handlers that use it: the others keep the imports they had.
#[test]
fn only_handlers_that_call_http_import_wasi_http() {
    let cache = TempDir::new("outbound");
    for (file, uses_http) in [
        (format!("{}/{}_job.wasm", guests::DIR, guests::HTTP), true),
        (format!("{}/send_email_job.wasm", guests::JOBS_DIR), true),
        (format!("{}/hello_job.wasm", guests::JOBS_DIR), false),
    ] {
        let run = runtime(cache.path(), &["check", &file], None);
        run.expect_code(0);
        let out = run.stdout();
        assert!(
            out.contains("ok: implements runtime:job/handler@0.1.0"),
            "{out}"
        );
        assert_eq!(
            out.contains("wasi:http/outgoing-handler@0.2."),
            uses_http,
            "{file}: {out}"
        );
    }
}

/// A generous bound for one command on a loaded 2-core machine.
const BOUND: Duration = Duration::from_secs(120);

/// One sync `runtime dispatch` of the `http` fixture under `config`
/// (written to a file), with `env` set for the command.
struct Dispatch {
    report: Value,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Dispatch {
    /// Every log line of every attempt.
    fn log(&self) -> String {
        self.report["runs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|run| run["log"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    fn state(&self) -> &str {
        self.report["state"].as_str().unwrap_or_default()
    }
}

fn dispatch(config: &str, payload: &Value, env: &[(&str, &str)]) -> Dispatch {
    dispatch_to(guests::DIR, guests::HTTP, config, &payload.to_string(), env)
}

/// One sync `runtime dispatch QUEUE PAYLOAD --json` of the handlers in
/// `handlers` under `config`, with `env` set for the command; checks that
/// it printed a JSON report.
fn dispatch_to(
    handlers: &str,
    queue: &str,
    config: &str,
    payload: &str,
    env: &[(&str, &str)],
) -> Dispatch {
    let cache = TempDir::new("outbound");
    let file = cache.path().join("runtime.toml");
    std::fs::write(&file, config).expect("write config");
    let file = file.display().to_string();
    let mut cmd = runtime_command(cache.path());
    cmd.args([
        "--handlers",
        handlers,
        "--config",
        &file,
        "dispatch",
        queue,
        payload,
        "--max-attempts",
        "1",
        "--json",
    ])
    .env("RUNTIME_LOG", "debug");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let started = Instant::now();
    let out = cmd.output().expect("run runtime");
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not a JSON report ({e}): {stdout}\nstderr: {stderr}"));
    assert!(took < BOUND, "took {took:?}");
    Dispatch {
        report,
        stdout,
        stderr,
        took,
    }
}

/// A `requests` payload of GETs to `urls`.
fn gets(urls: &[String]) -> Value {
    let requests: Vec<Value> = urls
        .iter()
        .map(|u| json!({"method": "GET", "url": u}))
        .collect();
    json!({ "requests": requests })
}

/// The loopback server's address opened to handlers, and names resolved
/// to it: the grant every test that wants traffic needs.
fn opened(server: &TestServer, queue_section: &str) -> String {
    let ip = server.addr().ip();
    format!(
        "[sandbox]\nallow_private_networks = [\"{ip}/32\"]\n\
         resolve = {{ \"api.test\" = [\"{ip}\"], \"a.svc.test\" = [\"{ip}\"], \"svc.test\" = [\"{ip}\"] }}\n\
         [queues.{}]\n{queue_section}\n",
        guests::HTTP
    )
}

/// A loopback server answering `path` with `reply`, its port, and the
/// config that opens it to the `http` fixture as `http://api.test:<port>`,
/// with `extra` settings for the queue.
fn granted(path: &str, reply: Reply, extra: &str) -> (TestServer, u16, String) {
    let server = TestServer::start();
    server.route(path, reply);
    let port = server.addr().port();
    let config = opened(
        &server,
        &format!("allowed_outbound_hosts = [\"http://api.test:{port}\"]\n{extra}"),
    );
    (server, port, config)
}

#[test]
fn an_allowed_host_is_reached_with_the_host_header_of_the_url() {
    let (server, port, config) = granted("/hello", Reply::ok("hi there"), "");
    let payload = json!({"requests": [{"method": "POST", "url": format!("http://api.test:{port}/hello"),
        "headers": {"x-test": "1"}, "body": "ping", "show_body": true}]});
    let d = dispatch(&config, &payload, &[]);
    assert_eq!(d.state(), "done", "{}", d.stdout);
    let got = server.wait_for_requests(1);
    assert_eq!(got[0].method, "POST");
    assert_eq!(
        got[0].header("host"),
        Some(format!("api.test:{port}").as_str())
    );
    assert_eq!(got[0].body_text(), "ping");
    let log = d.log();
    assert!(log.contains("status 200 body-bytes 8"), "{log}");
    assert!(log.contains("body \"hi there\""), "{log}");
    assert!(
        log.contains("INFO http POST api.test 200 "),
        "one line per request, no headers or bodies: {log}"
    );
    assert!(!log.contains("x-test") && !log.contains("ping"), "{log}");
}

#[test]
fn a_host_scheme_or_port_not_listed_is_denied_before_any_connection() {
    let server = TestServer::start();
    server.route("/", Reply::ok("no"));
    let port = server.addr().port();
    let config = opened(
        &server,
        &format!("allowed_outbound_hosts = [\"https://api.test:{port}\", \"http://a.svc.test:1\"]"),
    );
    let d = dispatch(
        &config,
        &gets(&[
            format!("http://api.test:{port}/"),
            format!("http://a.svc.test:{port}/"),
            format!("http://svc.test:{port}/"),
        ]),
        &[],
    );
    assert_eq!(d.state(), "failed");
    let log = d.log();
    assert_eq!(log.matches("error HttpRequestDenied").count(), 3, "{log}");
    assert!(
        log.contains(&format!(
            "http GET api.test denied: add \"http://api.test:{port}\" to allowed_outbound_hosts of [queues.{}]",
            guests::HTTP
        )),
        "the line names the entry and the setting: {log}"
    );
    assert_eq!(server.connections(), 0, "nothing reached the server");
}

#[test]
fn a_wildcard_allows_subdomains_but_not_the_bare_domain() {
    let server = TestServer::start();
    server.route("/", Reply::ok("yes"));
    let port = server.addr().port();
    let config = opened(
        &server,
        &format!("allowed_outbound_hosts = [\"http://*.svc.test:{port}\"]"),
    );
    let sub = dispatch(
        &config,
        &gets(&[format!("http://A.SVC.test.:{port}/")]),
        &[],
    );
    assert_eq!(sub.state(), "done", "{}", sub.log());
    assert_eq!(server.wait_for_requests(1).len(), 1);
    let bare = dispatch(&config, &gets(&[format!("http://svc.test:{port}/")]), &[]);
    assert!(
        bare.log().contains("error HttpRequestDenied"),
        "{}",
        bare.log()
    );
    assert_eq!(server.connections(), 1, "only the subdomain's request");
}

#[test]
fn private_addresses_are_prohibited_without_the_grant_whatever_their_form() {
    let server = TestServer::start();
    server.route("/", Reply::ok("leak"));
    let port = server.addr().port();
    // Listed hosts, but no allow_private_networks: a name resolving to
    // loopback, the literal address, and its IPv4-mapped IPv6 form.
    let ip = server.addr().ip();
    let config = format!(
        "[sandbox]\nresolve = {{ \"api.test\" = [\"{ip}\"] }}\n[queues.{}]\n\
         allowed_outbound_hosts = [\"http://api.test:{port}\", \"http://{ip}:{port}\", \"http://[::ffff:{ip}]:{port}\"]\n",
        guests::HTTP
    );
    let d = dispatch(
        &config,
        &gets(&[
            format!("http://api.test:{port}/"),
            format!("http://{ip}:{port}/"),
            format!("http://[::ffff:{ip}]:{port}/"),
        ]),
        &[],
    );
    let log = d.log();
    assert_eq!(
        log.matches("error DestinationIpProhibited").count(),
        3,
        "{log}"
    );
    assert!(
        log.contains("allow_private_networks") && log.contains("loopback"),
        "the line names the address's range and the setting: {log}"
    );
    assert_eq!(server.connections(), 0, "nothing reached the server");
}

#[test]
fn a_stalled_server_times_out_and_a_long_body_is_cut() {
    let (server, port, config) = granted(
        "/stall",
        Reply::stall(),
        "http_timeout_ms = 300\nhttp_max_response_kib = 16",
    );
    server.route("/huge", Reply::huge(64 * 1024));
    let d = dispatch(
        &config,
        &gets(&[format!("http://api.test:{port}/stall")]),
        &[],
    );
    assert!(
        d.log().contains("error ConnectionReadTimeout"),
        "{}",
        d.log()
    );
    assert!(d.took < Duration::from_secs(30), "{:?}", d.took);
    let d = dispatch(
        &config,
        &gets(&[format!("http://api.test:{port}/huge")]),
        &[],
    );
    assert!(
        d.log().contains("error HttpResponseBodySize"),
        "{}",
        d.log()
    );
}

#[test]
fn requests_past_the_per_attempt_limit_are_denied() {
    let (server, port, config) = granted("/", Reply::ok("ok"), "http_max_requests = 2");
    let url = format!("http://api.test:{port}/");
    let d = dispatch(
        &config,
        &json!({"requests": [{"url": url}], "repeat": 3}),
        &[],
    );
    let log = d.log();
    assert_eq!(log.matches("status 200").count(), 2, "{log}");
    assert_eq!(log.matches("error HttpRequestDenied").count(), 1, "{log}");
    assert!(log.contains("http_max_requests"), "{log}");
    assert_eq!(server.wait_for_requests(2).len(), 2);
    assert_eq!(server.connections(), 2);
}

#[test]
fn a_redirect_to_a_private_address_is_handed_to_the_guest_not_followed() {
    let (server, port, config) = granted(
        "/go",
        Reply::redirect("http://169.254.169.254/latest/meta-data/"),
        "",
    );
    let payload = json!({"requests": [{"url": format!("http://api.test:{port}/go"), "show_headers": ["location"]}]});
    let d = dispatch(&config, &payload, &[]);
    let log = d.log();
    assert!(log.contains("status 302"), "{log}");
    assert!(
        log.contains("header location: http://169.254.169.254/latest/meta-data/"),
        "{log}"
    );
    assert_eq!(server.wait_for_requests(1).len(), 1);
    assert_eq!(server.connections(), 1, "no second request");
}

#[test]
fn settings_reach_the_guest_and_secrets_no_output() {
    const SECRET: &str = "sk-live-0123456789abcdef-SECRET";
    let config = format!(
        "[queues.{}.env]\nPLAIN = \"visible-setting\"\nKEY = {{ from_env = \"RUNTIME_TEST_MAILER_KEY\" }}\n",
        guests::HTTP
    );
    let d = dispatch(
        &config,
        &json!({"env": ["PLAIN", "KEY", "HOME", "PATH"]}),
        &[("RUNTIME_TEST_MAILER_KEY", SECRET)],
    );
    assert_eq!(d.state(), "done", "{}", d.stdout);
    let log = d.log();
    assert!(
        log.contains(&format!("env KEY length {}", SECRET.len())),
        "{log}"
    );
    assert!(log.contains("env PLAIN length 15"), "{log}");
    assert!(
        log.contains("env HOME missing") && log.contains("env PATH missing"),
        "nothing of the worker's own environment: {log}"
    );
    assert!(
        !d.stdout.contains(SECRET) && !d.stderr.contains(SECRET),
        "the secret is in no output"
    );

    // Without the variable, the command refuses to start, naming the key,
    // not a value.
    let cache = TempDir::new("outbound");
    let file = cache.path().join("runtime.toml");
    std::fs::write(&file, &config).expect("write config");
    let file = file.display().to_string();
    let run = runtime(
        cache.path(),
        &[
            "--handlers",
            guests::DIR,
            "--config",
            &file,
            "dispatch",
            guests::HTTP,
            "{}",
        ],
        None,
    );
    assert_ne!(run.code(), 0);
    let err = run.stderr();
    assert!(
        err.contains("env.KEY") && err.contains("RUNTIME_TEST_MAILER_KEY"),
        "{err}"
    );
}

#[test]
fn a_granted_directory_is_readable_and_nothing_else() {
    let dir = TempDir::new("outbound-files");
    let shown = dir.path().join("shown");
    std::fs::create_dir(&shown).expect("mkdir");
    std::fs::write(shown.join("a.txt"), "hello").expect("write");
    std::fs::write(dir.path().join("secret.txt"), "outside").expect("write");
    #[cfg(unix)]
    std::os::unix::fs::symlink(dir.path().join("secret.txt"), shown.join("link")).expect("symlink");
    let config = format!(
        "[queues.{}.files]\n\"/data\" = {:?}\n",
        guests::HTTP,
        shown.display().to_string()
    );
    let read = dispatch(&config, &json!({"read_file": "/data/a.txt"}), &[]);
    assert!(
        read.log()
            .contains("read /data/a.txt bytes 5 text \"hello\""),
        "{}",
        read.log()
    );
    for payload in [
        json!({"write_file": "/data/new.txt"}),
        json!({"read_file": "/data/../secret.txt"}),
        json!({"read_file": "/data/link"}),
        json!({"read_file": "/etc/passwd"}),
    ] {
        let d = dispatch(&config, &payload, &[]);
        assert_eq!(d.state(), "failed", "{payload}: {}", d.log());
        assert!(!d.stdout.contains("outside"), "{payload}: {}", d.stdout);
    }
    assert!(!shown.join("new.txt").exists());
}

/// `welcome-email` renders and dispatches; `send-email` posts the result to
/// a mail API on loopback, opened for that one address, with its URL and key
/// from settings. Without the grant, the same handler is denied before any
/// connection.
#[test]
fn a_welcome_email_is_rendered_then_delivered_over_http_and_denied_without_the_grant() {
    const KEY: &str = "mk-test-4f1d2a9c-not-a-real-key";
    let server = TestServer::start();
    server.route(
        "/v1/send",
        Reply::ok(r#"{"id":"msg-42"}"#).header("content-type", "application/json"),
    );
    let ip = server.addr().ip();
    let port = server.addr().port();
    let env = format!(
        "[queues.send-email.env]\nMAILER_URL = \"http://mailer.test:{port}/v1/send\"\nMAILER_KEY = {{ from_env = \"MAILER_KEY\" }}\n"
    );
    let granted = format!(
        "[sandbox]\nallow_private_networks = [\"{ip}/32\"]\nresolve = {{ \"mailer.test\" = [\"{ip}\"] }}\n\
         [queues.send-email]\nallowed_outbound_hosts = [\"http://mailer.test:{port}\"]\n{env}"
    );
    let welcome =
        json!({"to": "ada@example.com", "name": "Ada <script>", "product": "Acme"}).to_string();
    let run_with = |config: &str| {
        let d = dispatch_to(
            guests::JOBS_DIR,
            "welcome-email",
            config,
            &welcome,
            &[("MAILER_KEY", KEY)],
        );
        assert!(
            !d.stdout.contains(KEY) && !d.stderr.contains(KEY),
            "the key is in no output"
        );
        d.report
    };

    let report = run_with(&granted);
    assert_eq!(report["state"], "done", "{report}");
    let delivery = &report["followups"][0];
    assert_eq!(delivery["state"], "done", "{report}");
    let got = server.wait_for_requests(1);
    assert_eq!(got[0].method, "POST");
    assert_eq!(got[0].path, "/v1/send");
    assert_eq!(
        got[0].header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    let email: Value = serde_json::from_str(&got[0].body_text()).expect("a JSON email");
    assert_eq!(email["to"], "ada@example.com");
    assert_eq!(email["subject"], "Welcome to Acme, Ada <script>!");
    assert!(
        email["html"]
            .as_str()
            .unwrap_or_default()
            .contains("Ada &lt;script&gt;"),
        "{email}"
    );
    let log = delivery["runs"][0]["log"].as_str().unwrap_or_default();
    assert!(log.contains("msg-42"), "{log}");

    let denied = run_with(&format!(
        "[sandbox]\nallow_private_networks = [\"{ip}/32\"]\nresolve = {{ \"mailer.test\" = [\"{ip}\"] }}\n{env}"
    ));
    let delivery = &denied["followups"][0];
    assert_ne!(delivery["state"], "done", "{denied}");
    let log: String = delivery["runs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|run| run["log"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        log.contains(&format!(
            "add \"http://mailer.test:{port}\" to allowed_outbound_hosts of [queues.send-email]"
        )),
        "{log}"
    );
    assert_eq!(
        server.connections(),
        1,
        "only the granted run's request arrived"
    );
}

/// A request in flight ends with its job: the job's deadline bounds the
/// wait however long `http_timeout_ms` is.
#[test]
fn a_request_in_flight_dies_with_its_jobs_deadline() {
    let (server, port, config) = granted(
        "/stall",
        Reply::stall(),
        "http_timeout_ms = 600000\ntimeout_ms = 500",
    );
    let d = dispatch(
        &config,
        &gets(&[format!("http://api.test:{port}/stall")]),
        &[],
    );
    assert_eq!(d.state(), "failed", "{}", d.stdout);
    assert_eq!(server.wait_for_connections(1), 1);
    assert!(
        d.took < Duration::from_secs(60),
        "bounded by the 500 ms job timeout, not the 10-minute HTTP timeout: {:?}",
        d.took
    );
}

/// `https` speaks TLS with the URL's host as SNI: a listener that is not a
/// TLS server gets a ClientHello naming the host, and the guest a TLS
/// error, never a plaintext request.
#[test]
fn https_speaks_tls_with_the_hosts_name_as_sni() {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let hello = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        let mut first = vec![0u8; 4096];
        let n = stream.read(&mut first).expect("read");
        first.truncate(n);
        // Closing without answering: the handshake cannot complete.
        first
    });
    let config = format!(
        "[sandbox]\nallow_private_networks = [\"{ip}/32\"]\nresolve = {{ \"secure.test\" = [\"{ip}\"] }}\n\
         [queues.{q}]\nallowed_outbound_hosts = [\"https://secure.test:{port}\"]\n",
        ip = addr.ip(),
        port = addr.port(),
        q = guests::HTTP,
    );
    let d = dispatch(
        &config,
        &gets(&[format!("https://secure.test:{}/", addr.port())]),
        &[],
    );
    let first = hello.join().expect("listener thread");
    assert_eq!(
        first.first(),
        Some(&0x16),
        "a TLS handshake record, not plaintext"
    );
    assert!(
        first
            .windows(b"secure.test".len())
            .any(|w| w == b"secure.test"),
        "the ClientHello names the host (SNI)"
    );
    assert!(!first.starts_with(b"GET"), "no plaintext request");
    let log = d.log();
    assert!(
        log.contains("error TlsProtocolError") || log.contains("error ConnectionTerminated"),
        "{log}"
    );
}

/// A guest that builds requests and never sends them cannot make the host
/// hold more than a bounded amount for it: header fields, body writes and
/// host resources are all capped, whatever the guest asks for.
#[test]
fn requests_built_but_never_sent_hold_a_bounded_amount_of_the_hosts_memory() {
    let config = format!("[queues.{}]\noutput_kib = 256\n", guests::HTTP);
    let d = dispatch(&config, &json!({"hoard": 100_000}), &[]);
    let log = d.log();
    let (requests, bytes) = log
        .lines()
        .rev()
        .find_map(|line| {
            let rest = line.strip_prefix("INFO hoard ")?;
            let (requests, rest) = rest.split_once(" requests ")?;
            let bytes = rest.strip_suffix(" bytes")?;
            Some((requests.parse::<u64>().ok()?, bytes.parse::<u64>().ok()?))
        })
        .unwrap_or_else(|| panic!("no progress line: {log}"));
    assert!(requests >= 100, "the guest got going: {log}");
    assert!(
        requests < 2_000,
        "host resources per attempt stop it: {requests} requests"
    );
    assert!(
        bytes <= 32 << 20,
        "the host took {bytes} bytes of unsent bodies for {requests} requests"
    );
}

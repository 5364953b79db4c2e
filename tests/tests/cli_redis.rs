//! The `runtime` binary against a real Redis, used carelessly: bulk
//! dispatch that streams, stops cleanly (bad line, Redis gone, Ctrl-C) and
//! resumes; stored times of any size; stdout closed early; passwords that
//! never reach any output; connection errors that say what is wrong.

use std::io::Write;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use runtime_tests::redis::RedisServer;
use runtime_tests::workers::{Env, eventually};
use runtime_tests::{Run, TempDir, guests, runtime, runtime_bin};

/// `runtime --backend URL ARGS` with its own cache dir.
fn run_with(url: &str, cache: &TempDir, args: &[&str]) -> Run {
    let mut all = vec!["--backend", url, "--handlers", guests::DIR];
    all.extend_from_slice(args);
    runtime(cache.path(), &all, None)
}

/// `runtime --backend <env's redis> ARGS` started in the background with
/// stdin, stdout and stderr piped.
fn spawn(env: &Env, args: &[&str]) -> Child {
    Command::new(runtime_bin())
        .args(["--backend", &env.url(), "--handlers", &env.handlers])
        .args(args)
        .env("RUNTIME_CACHE_DIR", env.cache.path())
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn runtime")
}

/// Lines `{"n":from}` .. `{"n":to}`, each ending in `\n`.
fn lines(from: u64, to: u64) -> String {
    (from..=to).map(|n| format!("{{\"n\":{n}}}\n")).collect()
}

/// `dispatch --file -` fed lines 1-1500 on stdin, left open, once the first
/// chunk (1,000 jobs) is enqueued.
fn first_chunk_from_stdin(env: &Env) -> (Child, ChildStdin) {
    let mut child = spawn(env, &["dispatch", guests::NAP, "--file", "-"]);
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(lines(1, 1500).as_bytes())
        .expect("write lines");
    eventually(
        Duration::from_secs(30),
        "the first chunk to be enqueued",
        || env.count(guests::NAP, "pending") == 1000,
    );
    (child, stdin)
}

/// Waits for `child`; its exit status, stdout and stderr.
fn finish(child: Child) -> (i32, String, String) {
    let out = child.wait_with_output().expect("wait for runtime");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

#[test]
fn a_bad_line_stops_bulk_dispatch_before_its_chunk_and_skip_resumes_after_the_rest() {
    let env = Env::new();
    let file = env.cache.path().join("jobs.jsonl");
    let mut text = lines(1, 2500).replace("{\"n\":1700}", "{\"n\":");
    // Windows line ends are lines too.
    text = text.replace("{\"n\":5}\n", "{\"n\":5}\r\n");
    std::fs::write(&file, &text).expect("write");
    let path = file.display().to_string();
    let run = env.run(&["dispatch", guests::NAP, "--file", &path]);
    run.expect_code(2);
    let stderr = run.stderr();
    assert!(
        stderr.contains(&format!("{path} line 1700: payload is not valid JSON")),
        "{stderr}"
    );
    assert!(
        stderr.contains("enqueued 1000 jobs (lines 1-1000); resume with: --skip 1000"),
        "{stderr}"
    );
    assert_eq!(env.count(guests::NAP, "pending"), 1000);

    std::fs::write(&file, lines(1, 2500)).expect("fix the line");
    let resumed = env.run(&["dispatch", guests::NAP, "--file", &path, "--skip", "1000"]);
    resumed.expect_code(0);
    assert!(
        resumed
            .stdout()
            .contains("dispatched 1500 jobs to nap: nap:1001 .. nap:2500"),
        "{}",
        resumed.stdout()
    );
    // No progress line when stderr is not a terminal.
    assert_eq!(resumed.stderr(), "");
    assert_eq!(env.count(guests::NAP, "pending"), 2500);
    // Every line went in once, in order: job n carries line n.
    let last = env.show("nap:2500");
    assert_eq!(last["payload"], "{\"n\":2500}");
    let fifth = env.show("nap:5");
    assert_eq!(fifth["payload"], "{\"n\":5}");

    let json = env.run(&[
        "dispatch",
        guests::NAP,
        "--file",
        &path,
        "--skip",
        "2499",
        "--json",
    ]);
    let summary = json.expect_code(0).json();
    assert_eq!(summary["count"], 1);
    assert_eq!(summary["lines"], 2500);
    assert_eq!(summary["complete"], true);
}

#[test]
fn a_line_too_long_or_not_text_is_named_without_being_held() {
    let env = Env::new();
    let file = env.cache.path().join("jobs.jsonl");
    let path = file.display().to_string();
    let long = format!("{{}}\n\"{}\"\n{{}}\n", "x".repeat(3 << 20));
    let cases: [(&[u8], &str); 2] = [
        (
            long.as_bytes(),
            "line 2: longer than the payload limit of 1048576 bytes",
        ),
        (b"{}\n\"\xff\xfe\"\n", "line 2: not UTF-8 text"),
    ];
    for (text, expected) in cases {
        std::fs::write(&file, text).expect("write");
        let run = env.run(&["dispatch", guests::NAP, "--file", &path]);
        run.expect_code(2);
        assert!(run.stderr().contains(expected), "{}", run.stderr());
        assert!(
            run.stderr().contains("nothing was enqueued"),
            "{}",
            run.stderr()
        );
    }
    assert_eq!(env.count(guests::NAP, "pending"), 0);
    std::fs::write(&file, "{}\n{}\n").expect("write");
    let past = env.run(&["dispatch", guests::NAP, "--file", &path, "--skip", "5"]);
    past.expect_code(0);
    assert!(
        past.stdout()
            .contains("has no payload lines after the skipped ones"),
        "{}",
        past.stdout()
    );
}

#[test]
fn bulk_dispatch_streams_stdin_and_ctrl_c_stops_between_chunks() {
    let env = Env::new();
    // The first chunk goes in while the input is still open: nothing
    // waits for the end of it.
    let (child, stdin) = first_chunk_from_stdin(&env);
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(status.success());
    let (code, _, stderr) = finish(child);
    assert_eq!(code, 130, "{stderr}");
    assert!(
        stderr.contains("interrupted: enqueued 1000 jobs (lines 1-1000); resume with: --skip 1000"),
        "{stderr}"
    );
    assert_eq!(env.count(guests::NAP, "pending"), 1000);
    drop(stdin);
}

#[test]
fn when_redis_goes_away_bulk_dispatch_says_how_far_it_got_and_skip_resumes() {
    let redis = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let mut env = Env::with(redis);
    let (child, mut stdin) = first_chunk_from_stdin(&env);
    env.redis.kill();
    // Fills the second chunk (lines 1001-2000), which then cannot go in.
    stdin
        .write_all(lines(1501, 2100).as_bytes())
        .expect("write lines");
    drop(stdin);
    let (code, _, stderr) = finish(child);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("dispatching lines 1001-2000 of - failed"),
        "{stderr}"
    );
    assert!(
        stderr.contains("enqueued 1000 jobs (lines 1-1000); resume with: --skip 1000"),
        "{stderr}"
    );

    env.redis.restart();
    assert_eq!(env.count(guests::NAP, "pending"), 1000);
    let mut child = spawn(
        &env,
        &["dispatch", guests::NAP, "--file", "-", "--skip", "1000"],
    );
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(lines(1, 2100).as_bytes())
        .expect("write lines");
    drop(stdin);
    let (code, stdout, stderr) = finish(child);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("dispatched 1100 jobs to nap: nap:1001 .. nap:2100"),
        "{stdout}"
    );
    assert_eq!(env.count(guests::NAP, "pending"), 2100);
}

#[test]
fn bulk_dispatch_holds_a_few_chunks_not_the_input() {
    let env = Env::new();
    let mut child = spawn(&env, &["dispatch", guests::NAP, "--file", "-"]);
    let mut stdin = child.stdin.take().expect("stdin");
    // 100 lines of 1,000,000 bytes each: 100 MB of input.
    let big = format!("\"{}\"\n", "x".repeat(999_997));
    for _ in 0..100 {
        stdin.write_all(big.as_bytes()).expect("write a line");
    }
    // All but the last chunk are sent while stdin is still open.
    eventually(Duration::from_secs(60), "96 jobs to be enqueued", || {
        env.count(guests::NAP, "pending") >= 96
    });
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).expect("status");
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status");
    drop(stdin);
    let (code, stdout, stderr) = finish(child);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("dispatched 100 jobs"), "{stdout}");
    assert!(
        peak_kib < 80 * 1024,
        "peak RSS {peak_kib} KiB while streaming 100 MB of input"
    );
}

#[test]
fn a_terminal_gets_a_progress_line_on_stderr() {
    let env = Env::new();
    let file = env.cache.path().join("jobs.jsonl");
    std::fs::write(&file, lines(1, 3000)).expect("write");
    let command = format!(
        "'{}' --backend '{}' --handlers '{}' dispatch {} --file '{}'",
        runtime_bin().display(),
        env.url(),
        env.handlers,
        guests::NAP,
        file.display()
    );
    // `script` runs the command on a pseudo-terminal and copies what it
    // writes there.
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("RUNTIME_CACHE_DIR", env.cache.path())
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null())
        .output()
        .expect("run script (util-linux)");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{screen}");
    assert!(screen.contains("jobs enqueued, line 1000"), "{screen:?}");
    assert!(screen.contains("dispatched 3000 jobs to nap"), "{screen:?}");
}

#[test]
fn stored_times_of_any_size_print_and_offsets_name_the_same_instant() {
    let env = Env::new();
    let id = env.dispatch(guests::NAP, "{}", &["--delay", "1h"]);
    assert_eq!(id, "nap:1");
    // A record is only numbers in Redis: anything that can write there
    // (another version, a script, a hand) may leave any u64.
    for (key, value) in [
        (
            "runtime:{nap}:job:1:m",
            "scheduled|0|0||18446744073709551615||0|3|",
        ),
        ("runtime:{nap}:job:1", "9223372036854775808|||||{}"),
    ] {
        let reply = env.redis.command(&["SET", key, value]).expect("SET");
        assert_eq!(reply, "+OK");
    }
    env.redis
        .command(&[
            "RPUSH",
            "runtime:{nap}:job:1:h",
            "1|18446744073709551615|18446744073709551615|done",
        ])
        .expect("RPUSH");
    let list = env.run(&["jobs", "list", guests::NAP, "--state", "scheduled"]);
    list.expect_code(0);
    assert!(
        list.stdout()
            .contains("run at 18446744073709551615 ms after 1970-01-01T00:00:00Z"),
        "{}",
        list.stdout()
    );
    let show = env.run(&["jobs", "show", "nap:1"]);
    show.expect_code(0);
    assert!(
        show.stdout()
            .contains("created:   9223372036854775808 ms after"),
        "{}",
        show.stdout()
    );
    assert_eq!(env.show("nap:1")["run_at"], u64::MAX);

    // Ten days from now, whole seconds, given with a +02:00 offset.
    let at = (now_ms() / 1000 + 10 * 86_400) * 1000;
    let local = runtime::time::format_millis(at + 2 * 3_600_000).replace('Z', "+02:00");
    let id = env.dispatch(guests::NAP, "{}", &["--run-at", &local]);
    assert_eq!(env.show(&id)["run_at"], at);
    let show = env.run(&["jobs", "show", &id]);
    assert!(
        show.stdout()
            .contains(&format!("run at:    {}", runtime::time::format_millis(at))),
        "{}",
        show.stdout()
    );
}

#[test]
fn a_closed_stdout_ends_admin_commands_quietly() {
    let env = Env::new();
    let id = env.dispatch(guests::NAP, r#"{"a":1}"#, &[]);
    let file = env.cache.path().join("jobs.jsonl");
    std::fs::write(&file, lines(1, 10)).expect("write");
    let path = file.display().to_string();
    let cases: &[&[&str]] = &[
        &["jobs", "list", guests::NAP],
        &["jobs", "list", guests::NAP, "--json"],
        &["jobs", "show", &id],
        &["jobs", "show", &id, "--json"],
        &["queues"],
        &["queues", "--json"],
        &["workers"],
        &["workers", "--json"],
        &["dispatch", guests::NAP, "{}"],
        &["dispatch", guests::NAP, "{}", "--json"],
        &["dispatch", guests::NAP, "--file", &path],
        &["dispatch", guests::NAP, "--file", &path, "--json"],
    ];
    for args in cases {
        let mut child = spawn(&env, args);
        drop(child.stdout.take());
        drop(child.stdin.take());
        let (code, _, stderr) = finish(child);
        assert_eq!(code, 0, "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?} was not quiet: {stderr}");
    }
    // The commands did their work all the same: 1 + 2 + 20 jobs.
    assert_eq!(env.count(guests::NAP, "pending"), 23);
}

#[test]
fn passwords_never_reach_errors_warnings_logs_or_listings() {
    let env = Env::new();
    let secret = "s3cret-pw";
    let reply = env
        .redis
        .command(&["CONFIG", "SET", "requirepass", secret])
        .expect("CONFIG SET requirepass");
    assert_eq!(reply, "+OK");
    let port = env.redis.port();
    let socket = env.redis.socket().display().to_string();
    let tcp = format!("redis://:{secret}@127.0.0.1:{port}");
    let unix = format!("redis+unix://{socket}?pass={secret}");

    let wrong: &[(String, &str)] = &[
        (
            format!("redis+unix://{socket}?pass=wrong-pw"),
            "authentication failed",
        ),
        (
            format!("redis://:wrong-pw@127.0.0.1:{port}"),
            "authentication failed",
        ),
        (
            format!("redis://bob:wrong-pw@127.0.0.1:{port}/0"),
            "authentication failed",
        ),
        (
            format!("redis://127.0.0.1:{port}/?password=wrong-pw"),
            "the server requires a password (NOAUTH)",
        ),
        (
            format!("redis+unix://{socket}"),
            "the server requires a password (NOAUTH)",
        ),
    ];
    for (url, hint) in wrong {
        for format in ["human", "json"] {
            let run = run_with(url, &env.cache, &["--log-format", format, "queues"]);
            run.expect_code(2);
            let stderr = run.stderr();
            assert!(stderr.contains(hint), "{url}: {stderr}");
            assert!(!stderr.contains("wrong-pw"), "{url}: {stderr}");
            assert!(
                !stderr.contains("is redis-server running"),
                "{url}: {stderr}"
            );
        }
    }

    for url in [&tcp, &unix] {
        let id = run_with(url, &env.cache, &["dispatch", guests::NAP, "{}"]);
        id.expect_code(0);
        for args in [&["queues"][..], &["jobs", "list", guests::NAP, "--json"]] {
            let run = run_with(url, &env.cache, args);
            run.expect_code(0);
            assert!(!run.stdout().contains(secret) && !run.stderr().contains(secret));
        }
    }

    // A worker names its backend in its start-up warnings (AOF is off):
    // redacted, in both log formats. Its handlers path is a file: it says so.
    let not_a_dir = env.cache.path().join("handlers-file");
    std::fs::write(&not_a_dir, b"").expect("write");
    for format in ["human", "json"] {
        let log = env.cache.path().join(format!("worker-{format}.log"));
        let mut worker = Command::new(runtime_bin())
            .args(["--backend", &unix, "--log-format", format, "--handlers"])
            .arg(&not_a_dir)
            .args(["worker", guests::NAP])
            .env("RUNTIME_CACHE_DIR", env.cache.path())
            .env_remove("RUST_BACKTRACE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start worker");
        let read = || std::fs::read_to_string(&log).unwrap_or_default();
        eventually(Duration::from_secs(30), "worker started", || {
            read().contains("worker started")
        });
        let workers = run_with(&tcp, &env.cache, &["workers", "--json"]);
        workers.expect_code(0);
        let _ = worker.kill();
        let _ = worker.wait();
        let text = read();
        assert!(text.contains("appendonly no"), "{text}");
        assert!(text.contains("?pass=***"), "{text}");
        assert!(
            text.contains(&format!(
                "the handlers directory {} is a file, not a directory",
                not_a_dir.display()
            )),
            "{text}"
        );
        for output in [text, workers.stdout(), workers.stderr()] {
            assert!(!output.contains(secret), "{output}");
        }
    }
}

/// A loopback port nothing listens on (just released by the OS).
fn unused_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a free port")
}

#[test]
fn connection_errors_say_what_is_wrong() {
    let env = Env::new();
    let missing = env.cache.path().join("no.sock");
    let cases: Vec<(String, &str)> = vec![
        (
            format!("redis://127.0.0.1:{}", unused_port()),
            "(connection refused): is redis-server running there, on that port?",
        ),
        (
            format!("redis+unix://{}", missing.display()),
            "no socket at",
        ),
        (
            "redis://no-such-host.invalid:6379".to_string(),
            "cannot resolve host \"no-such-host.invalid\"",
        ),
        (
            format!("rediss://127.0.0.1:{}", env.redis.port()),
            "does that port serve TLS? rediss:// needs a TLS port",
        ),
    ];
    for (url, hint) in cases {
        let run = run_with(&url, &env.cache, &["queues"]);
        run.expect_code(2);
        assert!(run.stderr().contains(hint), "{url}: {}", run.stderr());
    }
}

#[test]
fn tls_trouble_gets_a_tls_hint() {
    let dir = TempDir::new("tls");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run openssl (it makes the test's self-signed certificate)");
    assert!(made.success());
    let tls_port = unused_port().to_string();
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let redis = RedisServer::start_with(&[
        "--save",
        "",
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-auth-clients",
        "no",
    ]);
    let env = Env::with(redis);
    let untrusted = run_with(
        &format!("rediss://localhost:{tls_port}"),
        &env.cache,
        &["queues"],
    );
    untrusted.expect_code(2);
    assert!(
        untrusted
            .stderr()
            .contains(&format!("TLS with localhost:{tls_port} failed")),
        "{}",
        untrusted.stderr()
    );
    assert!(
        untrusted.stderr().contains("certificate"),
        "{}",
        untrusted.stderr()
    );
    let plain = run_with(
        &format!("redis://127.0.0.1:{tls_port}"),
        &env.cache,
        &["queues"],
    );
    plain.expect_code(2);
    assert!(
        plain.stderr().contains("closed the connection") && plain.stderr().contains("rediss://"),
        "{}",
        plain.stderr()
    );
}

//! The real `runtime` binary, run as a user runs it: exit statuses, the
//! human and JSON reports, and clear errors for bad input.

use runtime_tests::{Run, TempDir, guests, runtime};

fn jobs() -> String {
    guests::JOBS_DIR.to_string()
}

#[test]
fn dispatch_runs_the_job_in_process_and_reports_it() {
    let cache = TempDir::new("cli");
    let run = runtime(
        cache.path(),
        &[
            "--handlers",
            &jobs(),
            "dispatch",
            "hello",
            r#"{"name":"Ada"}"#,
        ],
        None,
    );
    run.expect_code(0);
    let out = run.stdout();
    assert!(out.contains("hello:1 attempt 1/4: done"), "{out}");
    assert!(
        out.contains("INFO Hello, Ada! (job hello:1, attempt 1 of 4)"),
        "{out}"
    );
    assert!(out.contains("hello:1: done after 1 attempt"), "{out}");
}

#[test]
fn dispatch_json_has_id_state_attempts_and_error() {
    let cache = TempDir::new("cli");
    let run = runtime(
        cache.path(),
        &[
            "--handlers",
            &jobs(),
            "dispatch",
            "hello",
            r#"{"name":"Ada"}"#,
            "--json",
        ],
        None,
    );
    let json = run.expect_code(0).json();
    assert_eq!(json["id"], "hello:1");
    assert_eq!(json["queue"], "hello");
    assert_eq!(json["state"], "done");
    assert_eq!(json["attempts"], 1);
    assert!(json["error"].is_null());
    assert!(
        json["runs"][0]["log"]
            .as_str()
            .unwrap_or_default()
            .contains("Hello, Ada!")
    );
}

#[test]
fn a_failing_job_exits_1_after_its_attempts_with_the_reason() {
    let cache = TempDir::new("cli");
    let run = runtime(
        cache.path(),
        &[
            "--handlers",
            guests::DIR,
            "dispatch",
            guests::PANIC,
            r#"{"what":"out of cheese"}"#,
            "--max-attempts",
            "2",
            "--json",
        ],
        None,
    );
    let json = run.expect_code(1).json();
    assert_eq!(json["state"], "failed");
    assert_eq!(json["attempts"], 2);
    assert_eq!(json["error"], "panic: out of cheese");
    assert_eq!(json["runs"].as_array().map(Vec::len), Some(2));
}

#[test]
fn a_runaway_job_is_stopped_by_the_configured_timeout() {
    let cache = TempDir::new("cli");
    let config = cache.path().join("runtime.toml");
    std::fs::write(&config, "[queues.spin]\ntimeout_ms = 100\n").expect("write config");
    let started = std::time::Instant::now();
    let run = runtime(
        cache.path(),
        &[
            "--config",
            &config.display().to_string(),
            "--handlers",
            guests::DIR,
            "dispatch",
            guests::SPIN,
            "{}",
            "--max-attempts",
            "1",
        ],
        None,
    );
    run.expect_code(1);
    assert!(
        run.stdout()
            .contains("spin:1: failed [timeout] after 1 attempt: timeout after 100ms"),
        "{}",
        run.stdout()
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

#[test]
fn follow_up_jobs_run_in_sync_mode_too() {
    let cache = TempDir::new("cli");
    let config = cache.path().join("runtime.toml");
    let hello = format!("{}/hello_job.wasm", guests::JOBS_DIR);
    std::fs::write(&config, format!("[queues.hello]\nmodule = {hello:?}\n")).expect("write");
    let payload = r#"{"dispatch":[{"queue":"hello","payload":{"name":"child"}}]}"#;
    let run = runtime(
        cache.path(),
        &[
            "--config",
            &config.display().to_string(),
            "--handlers",
            guests::DIR,
            "dispatch",
            guests::OUTCOMES,
            payload,
            "--json",
        ],
        None,
    );
    let json = run.expect_code(0).json();
    assert_eq!(json["followups"][0]["id"], "hello:1");
    assert_eq!(json["followups"][0]["state"], "done");
}

#[test]
fn bad_input_is_exit_2_before_anything_runs() {
    let cache = TempDir::new("cli");
    let handlers = jobs();
    let cases: &[(&[&str], &str)] = &[
        (
            &["dispatch", "hello", "{not json"],
            "payload is not valid JSON",
        ),
        (&["dispatch", "Hello", "{}"], "invalid queue name \"Hello\""),
        (&["dispatch", "a:b", "{}"], "invalid queue name"),
        (
            &["dispatch", "hello", "{}", "--max-attempts", "0"],
            "for '--max-attempts <MAX_ATTEMPTS>': max attempts must be at least 1",
        ),
        (
            &["dispatch", "nobody", "{}"],
            "no handler for queue nobody: looked for",
        ),
        (
            &["dispatch", "hello", "{}", "--delay", "soon"],
            "invalid value 'soon'",
        ),
        (&["dispatch"], "required arguments"),
    ];
    for (args, expected) in cases {
        let run = refused(&cache, &["--handlers", handlers.as_str()], args, expected);
        assert!(
            run.stdout().is_empty(),
            "{args:?} ran something: {}",
            run.stdout()
        );
    }
}

/// `runtime FIRST.. ARGS..`, which must exit 2 saying `expected`.
fn refused(cache: &TempDir, first: &[&str], args: &[&str], expected: &str) -> Run {
    let all: Vec<&str> = first.iter().chain(args).copied().collect();
    let run = runtime(cache.path(), &all, None);
    run.expect_code(2);
    assert!(
        run.stderr().contains(expected),
        "{args:?}: {}",
        run.stderr()
    );
    run
}

/// Queue names, job ids, states and attempts are parsed with the
/// arguments: a bad one is refused before the command connects to
/// anything, naming the argument and saying what a good one looks like.
#[test]
fn bad_arguments_name_themselves_and_the_rule() {
    let cache = TempDir::new("cli");
    let backend = "redis://127.0.0.1:1";
    let cases: &[(&[&str], &str)] = &[
        (
            &["jobs", "show", "nope"],
            "invalid value 'nope' for '<ID>': invalid job id \"nope\": a job id looks like `queue:number`",
        ),
        (
            &["jobs", "list", "q", "--state", "done"],
            "for '--state <STATE>': invalid state \"done\": use pending, scheduled, running or failed",
        ),
        (
            &["jobs", "retry", "--all-failed", "Q"],
            "for '--all-failed <QUEUE>': invalid queue name \"Q\"",
        ),
        (
            &["worker", "ok", "not:ok"],
            "for '[QUEUES]...': invalid queue name \"not:ok\"",
        ),
        (&["queues", "purge", "A"], "invalid queue name \"A\""),
        (
            &["dispatch", "q", "{}", "--max-attempts", "101"],
            "for '--max-attempts <MAX_ATTEMPTS>': max attempts 101 is over the limit of 100",
        ),
        (
            &["dispatch", "q", "{}", "--max-attempts", "x"],
            "max attempts \"x\" is not a whole number; give 1 to 100",
        ),
    ];
    for (args, expected) in cases {
        let run = refused(&cache, &["--backend", backend], args, expected);
        assert!(
            !run.stderr().contains("127.0.0.1:1"),
            "{args:?} tried the backend: {}",
            run.stderr()
        );
    }
}

#[test]
fn an_oversized_payload_is_refused() {
    let cache = TempDir::new("cli");
    let big = format!("\"{}\"", "x".repeat(1024 * 1024));
    let run = runtime(
        cache.path(),
        &["--handlers", &jobs(), "dispatch", "hello", "-"],
        Some(big.as_bytes()),
    );
    run.expect_code(2);
    assert!(
        run.stderr().contains("over the limit of 1048576 bytes"),
        "{}",
        run.stderr()
    );
}

#[test]
fn payload_can_come_from_stdin() {
    let cache = TempDir::new("cli");
    let run = runtime(
        cache.path(),
        &["--handlers", &jobs(), "dispatch", "hello", "-"],
        Some(br#"{"name":"stdin"}"#),
    );
    run.expect_code(0);
    assert!(run.stdout().contains("Hello, stdin!"), "{}", run.stdout());
}

#[test]
fn a_config_typo_names_the_key() {
    let cache = TempDir::new("cli");
    let config = cache.path().join("runtime.toml");
    std::fs::write(&config, "[defaults]\ntimeout = 5\n").expect("write config");
    let run = runtime(
        cache.path(),
        &[
            "--config",
            &config.display().to_string(),
            "dispatch",
            "hello",
            "{}",
        ],
        None,
    );
    run.expect_code(2);
    assert!(
        run.stderr().contains("unknown field `timeout`"),
        "{}",
        run.stderr()
    );
}

#[test]
fn check_accepts_a_handler_and_lists_its_imports() {
    let cache = TempDir::new("cli");
    let file = format!("{}/hello_job.wasm", guests::JOBS_DIR);
    let run = runtime(cache.path(), &["check", &file], None);
    run.expect_code(0);
    let out = run.stdout();
    assert!(out.contains("runtime:job/log@0.1.0"), "{out}");
    assert!(out.contains("wasi:cli/stdout@"), "{out}");
    assert!(
        out.contains("ok: implements runtime:job/handler@0.1.0"),
        "{out}"
    );
}

#[test]
fn check_refuses_corrupt_and_wrong_shaped_files() {
    let cache = TempDir::new("cli");
    let dir = cache.path();
    let garbage = dir.join("garbage.wasm");
    std::fs::write(&garbage, b"this is not wasm").expect("write");
    let truncated = dir.join("truncated.wasm");
    let hello = std::fs::read(format!("{}/hello_job.wasm", guests::JOBS_DIR)).expect("read hello");
    std::fs::write(&truncated, &hello[..hello.len() / 2]).expect("write");
    let core = dir.join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").expect("write");
    let component = dir.join("empty-component.wasm");
    std::fs::write(&component, b"\0asm\x0d\0\x01\0").expect("write");
    let cases = [
        (garbage, "not a WebAssembly file"),
        (truncated, "is not a valid WebAssembly component"),
        (core, "is a core WebAssembly module, not a component"),
        (component, "does not implement the handler world"),
        (dir.join("missing.wasm"), "cannot read handler module"),
    ];
    for (path, expected) in cases {
        let run = runtime(cache.path(), &["check", &path.display().to_string()], None);
        run.expect_code(2);
        assert!(
            run.stderr().contains(expected),
            "{}: {}",
            path.display(),
            run.stderr()
        );
    }
}

#[test]
fn a_restart_loads_the_compiled_module_from_the_cache() {
    let cache = TempDir::new("cli");
    let args = [
        "--handlers",
        guests::JOBS_DIR,
        "dispatch",
        "hello",
        r#"{"name":"c"}"#,
    ];
    runtime(cache.path(), &args, None).expect_code(0);
    let entries: Vec<_> = std::fs::read_dir(cache.path())
        .expect("cache dir exists after a run")
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
        .collect();
    assert_eq!(entries.len(), 1, "one compiled entry for hello");
    let modified = entries[0]
        .metadata()
        .and_then(|m| m.modified())
        .expect("mtime");
    runtime(cache.path(), &args, None).expect_code(0);
    let again = entries[0]
        .metadata()
        .and_then(|m| m.modified())
        .expect("mtime");
    assert_eq!(modified, again, "the entry was reused, not rewritten");
}

#[test]
fn times_without_a_zone_or_out_of_range_are_refused_before_anything_runs() {
    let cache = TempDir::new("cli");
    let handlers = jobs();
    let cases: &[(&[&str], &str)] = &[
        (
            &["--run-at", "2026-12-01T09:00:00"],
            "has no offset from UTC; add one: RFC 3339 with a zone: 2026-12-01T09:00:00Z (UTC) or 2026-12-01T09:00:00+02:00",
        ),
        (
            &["--run-at", "1969-12-31T23:59:59Z"],
            "is before 1970-01-01T00:00:00Z",
        ),
        (
            &["--run-at", "9999-12-31T23:59:59+02:00"],
            "is more than 365 days from now",
        ),
        (&["--run-at", "tomorrow"], "is not a time"),
        (&["--delay", "100000000years"], "is longer than 365 days"),
        (&["--delay", "99999999999999999999999h"], "is not a delay"),
        (&["--delay", "366days"], "is longer than 365 days"),
    ];
    for (flags, expected) in cases {
        let mut args = vec!["--handlers", handlers.as_str(), "dispatch", "hello", "{}"];
        args.extend_from_slice(flags);
        let run = runtime(cache.path(), &args, None);
        run.expect_code(2);
        assert!(
            run.stderr().contains(expected),
            "{flags:?}: {}",
            run.stderr()
        );
        assert!(run.stdout().is_empty(), "{flags:?}: {}", run.stdout());
        assert!(!run.stderr().contains("panicked"), "{}", run.stderr());
    }
}

/// Runs `runtime ARGS` with its stdout a pipe whose reader is already
/// gone, as after `| head -c 10`; its exit status and stderr.
fn with_closed_stdout(cache: &std::path::Path, args: &[&str]) -> (i32, String) {
    use std::process::{Command, Stdio};
    let mut child = Command::new(runtime_tests::runtime_bin())
        .args(args)
        .env("RUNTIME_CACHE_DIR", cache)
        .env_remove("RUNTIME_BACKEND")
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn runtime");
    // Close the only reading end before the child writes anything.
    drop(child.stdout.take());
    let output = child.wait_with_output().expect("wait for runtime");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_closed_stdout_ends_every_command_quietly() {
    let cache = TempDir::new("cli");
    let hello = format!("{}/hello_job.wasm", guests::JOBS_DIR);
    let jobs = jobs();
    let cases: &[(&[&str], i32)] = &[
        (
            &[
                "--handlers",
                &jobs,
                "dispatch",
                "hello",
                r#"{"name":"Ada"}"#,
            ],
            0,
        ),
        (
            &[
                "--handlers",
                &jobs,
                "dispatch",
                "hello",
                r#"{"name":"Ada"}"#,
                "--json",
            ],
            0,
        ),
        (
            &[
                "--handlers",
                guests::DIR,
                "dispatch",
                guests::PANIC,
                "{}",
                "--max-attempts",
                "1",
            ],
            1,
        ),
        (&["check", &hello], 0),
        (&["--help"], 0),
        (&["jobs", "list", "--help"], 0),
        (&["--version"], 0),
    ];
    for (args, code) in cases {
        let (status, stderr) = with_closed_stdout(cache.path(), args);
        assert_eq!(status, *code, "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?} was not quiet: {stderr}");
    }
}

#[test]
fn a_stdout_that_cannot_be_written_is_an_error_not_a_silent_loss() {
    let cache = TempDir::new("cli");
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("open /dev/full");
    let output = std::process::Command::new(runtime_tests::runtime_bin())
        .args([
            "--handlers",
            &jobs(),
            "dispatch",
            "hello",
            r#"{"name":"Ada"}"#,
            "--json",
        ])
        .env("RUNTIME_CACHE_DIR", cache.path())
        .env_remove("RUST_BACKTRACE")
        .stdout(full)
        .output()
        .expect("run runtime");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cannot write the output"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_wrong_handlers_path_says_what_is_wrong() {
    let cache = TempDir::new("cli");
    let dir = cache.path();
    let file = dir.join("not-a-dir");
    std::fs::write(&file, b"").expect("write");
    let with_dir = dir.join("handlers");
    std::fs::create_dir_all(with_dir.join("hello_job.wasm")).expect("mkdir");
    let config = dir.join("runtime.toml");
    std::fs::write(
        &config,
        format!("[queues.hello]\nmodule = {:?}\n", dir.display().to_string()),
    )
    .expect("write config");
    let show = |p: &std::path::Path| p.display().to_string();
    let cases: Vec<(Vec<String>, String)> = vec![
        (
            vec!["--handlers".into(), show(&file)],
            format!(
                "the handlers directory {} is a file, not a directory",
                show(&file)
            ),
        ),
        (
            vec!["--handlers".into(), show(&dir.join("missing"))],
            format!(
                "the handlers directory {} does not exist",
                show(&dir.join("missing"))
            ),
        ),
        (
            vec!["--handlers".into(), show(&with_dir)],
            format!(
                "{} is a directory, not a module file",
                show(&with_dir.join("hello_job.wasm"))
            ),
        ),
        (
            vec!["--config".into(), show(&config)],
            format!("{} is a directory, not a module file", show(dir)),
        ),
    ];
    for (flags, expected) in cases {
        let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
        args.extend(["dispatch", "hello", "{}"]);
        let run = runtime(cache.path(), &args, None);
        run.expect_code(2);
        assert!(
            run.stderr().contains(&expected),
            "{args:?}: {}",
            run.stderr()
        );
        assert!(!run.stderr().contains("looked for"), "{}", run.stderr());
    }
}

#[test]
fn a_payload_on_stdin_is_read_only_up_to_the_limit() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let cache = TempDir::new("cli");
    let mut child = Command::new(runtime_tests::runtime_bin())
        .args(["--handlers", &jobs(), "dispatch", "hello", "-"])
        .env("RUNTIME_CACHE_DIR", cache.path())
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn runtime");
    let mut stdin = child.stdin.take().expect("stdin");
    // An endless payload: the writer stops when the reader goes away, or
    // after 256 MiB if it never does.
    let writer = std::thread::spawn(move || {
        let block = vec![b' '; 64 * 1024];
        let mut written = 0usize;
        while written < 256 << 20 {
            match stdin.write(&block) {
                Ok(n) => written += n,
                Err(_) => break,
            }
        }
        written
    });
    let output = child.wait_with_output().expect("wait");
    let written = writer.join().expect("writer");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("over the limit of 1048576 bytes (stopped reading there)"),
        "{stderr}"
    );
    assert!(
        written < 16 << 20,
        "the command read {written} bytes of a payload limited to 1 MiB"
    );
}

#[test]
fn secrets_in_the_config_or_environment_are_not_printed() {
    let cache = TempDir::new("cli");
    let config = cache.path().join("runtime.toml");
    std::fs::write(&config, "backend = \"redis://:s3cret@127.0.0.1:1\" x\n").expect("write");
    let run = runtime(
        cache.path(),
        &["--config", &config.display().to_string(), "queues"],
        None,
    );
    run.expect_code(2);
    assert!(run.stderr().contains("line 1, column"), "{}", run.stderr());
    assert!(!run.stderr().contains("s3cret"), "{}", run.stderr());

    let help = std::process::Command::new(runtime_tests::runtime_bin())
        .arg("--help")
        .env("RUNTIME_BACKEND", "redis://:s3cret@127.0.0.1:1")
        .output()
        .expect("run runtime --help");
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("RUNTIME_BACKEND"), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
}

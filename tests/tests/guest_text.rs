//! Guest text is data: what a hostile handler logs, prints, fails or
//! panics with reaches `runtime dispatch`, `runtime jobs show|list` and a
//! `runtime worker`'s log (human and JSON) as inert text, never as terminal
//! control or a line of its own; a handler's failure never passes for a
//! limit of the host; and a guest writing its whole output budget as tiny
//! lines fills the worker's log only up to its output limit.

use std::time::Duration;

use runtime::sandbox::Limits;
use runtime_tests::workers::{Env, RuntimeProcess};
use runtime_tests::{TempDir, guests, runtime};
use serde_json::Value;

/// What tests/guests/forge-job logs and fails with (kept equal to its
/// `HOSTILE`): every line it tries to forge holds `FORGED`.
const HOSTILE: &str = "clear\x1b[2J\x1b[31mred\rFORGED over\u{9b}31m \u{202e}exe.txt\nFORGED forge:1: done after 1 attempt\n2026-01-01T00:00:00.000000Z  INFO runtime::cli::worker: FORGED job done job=forge:1 outcome=\"done\"";

/// How `runtime::text::escape` shows the start of [`HOSTILE`].
const HOSTILE_ESCAPED_START: &str =
    "clear\\x1b[2J\\x1b[31mred\\rFORGED over\\u{9b}31m \\u{202e}exe.txt\\nFORGED";

/// Panics if `out` holds a character that drives a terminal or hides
/// itself: any control character but the newline that ends a line, and the
/// bidi and zero-width format characters.
fn assert_inert(what: &str, out: &str) {
    let raw = out.chars().find(|&c| {
        (c.is_control() && c != '\n')
            || matches!(
                c,
                '\u{200b}'..='\u{200f}'
                    | '\u{2028}'..='\u{202e}'
                    | '\u{2066}'..='\u{2069}'
                    | '\u{feff}'
            )
    });
    assert!(raw.is_none(), "{what} holds a raw {raw:?}:\n{out}");
}

/// How the lines [`HOSTILE`] tries to forge begin.
const FORGED_STARTS: [&str; 2] = ["FORGED", "2026-01-01T00:00:00.000000Z"];

/// Panics if a line the guest tried to forge shows as a line of `out`
/// (the job's log, shown line by line behind `  | `, may hold them: that
/// mark says whose they are).
fn assert_no_forged_line(what: &str, out: &str) {
    for line in out.lines() {
        assert!(
            !FORGED_STARTS.iter().any(|start| line.starts_with(start)),
            "{what} shows a forged line:\n{line}\n--- all of it:\n{out}"
        );
    }
}

fn assert_safe(what: &str, out: &str) {
    assert_inert(what, out);
    assert_no_forged_line(what, out);
}

/// `runtime --handlers <fixtures> dispatch ...` on the in-memory default.
fn dispatch_here(cache: &TempDir, args: &[&str]) -> runtime_tests::Run {
    let mut all = vec!["--handlers", guests::DIR, "dispatch"];
    all.extend_from_slice(args);
    runtime(cache.path(), &all, None)
}

#[test]
fn dispatch_reports_hostile_guest_text_as_inert_data() {
    let cache = TempDir::new("guest-text");
    for payload in [
        r#"{"mode":"fail"}"#,
        r#"{"mode":"retry"}"#,
        r#"{"mode":"panic"}"#,
    ] {
        let run = dispatch_here(&cache, &[guests::FORGE, payload, "--max-attempts", "2"]);
        run.expect_code(1);
        let what = format!("runtime dispatch {payload}");
        assert_safe(&format!("stdout of {what}"), &run.stdout());
        assert_safe(&format!("stderr of {what}"), &run.stderr());
        let expected = match payload {
            r#"{"mode":"fail"}"# => {
                format!("forge:1 attempt 1/2: fail [handler]: {HOSTILE_ESCAPED_START}")
            }
            r#"{"mode":"retry"}"# => {
                format!("forge:1 attempt 2/2: retry [handler]: {HOSTILE_ESCAPED_START}")
            }
            _ => format!("forge:1 attempt 2/2: crashed [panic]: panic: {HOSTILE_ESCAPED_START}"),
        };
        assert!(run.stdout().contains(&expected), "{}", run.stdout());
    }
    // The summary names the kind before the guest's words.
    let run = dispatch_here(&cache, &[guests::FORGE, "{}", "--max-attempts", "1"]);
    let summary = format!("forge:1: failed [handler] after 1 attempt: {HOSTILE_ESCAPED_START}");
    assert!(run.stdout().contains(&summary), "{}", run.stdout());
    // The log's lines are shown one by one, each marked as the log's.
    assert!(
        run.stdout()
            .contains("  | INFO clear\\x1b[2J\\x1b[31mred\\rFORGED over"),
        "{}",
        run.stdout()
    );
    // JSON keeps the text as it was: it is data, escaped by JSON alone.
    let run = dispatch_here(
        &cache,
        &[guests::FORGE, "{}", "--max-attempts", "1", "--json"],
    );
    let json = run.expect_code(1).json();
    assert_eq!(
        (&json["error_kind"], &json["error"]),
        (&Value::from("handler"), &Value::from(HOSTILE))
    );
    let first = &json["runs"][0];
    assert_eq!(
        (&first["outcome"], &first["kind"], &first["error"]),
        (
            &Value::from("fail"),
            &Value::from("handler"),
            &Value::from(HOSTILE)
        )
    );
    assert!(
        first["log"].as_str().unwrap_or_default().contains(HOSTILE),
        "{first}"
    );
}

/// Runs `runtime worker ARGS --drain` until it exits by itself.
fn drain(env: &Env, args: &[&str]) -> RuntimeProcess {
    let mut all = args.to_vec();
    all.push("--drain");
    let mut w = env.worker(&all);
    assert_eq!(w.wait(Duration::from_secs(60)), 0, "{}", w.log());
    w
}

#[test]
fn a_worker_log_and_the_admin_commands_show_hostile_guest_text_as_inert_data() {
    let env = Env::new();
    let failed = env.dispatch(guests::FORGE, "{}", &["--max-attempts", "1"]);
    let panicked = env.dispatch(
        guests::FORGE,
        r#"{"mode":"panic"}"#,
        &["--max-attempts", "1"],
    );
    let w = drain(&env, &[guests::FORGE]);
    let log = w.log();
    assert_safe("the worker's human log", &log);
    // The job's error is one quoted field, after its kind.
    assert!(
        log.contains(&format!("kind=\"handler\" error=\"{HOSTILE_ESCAPED_START}")),
        "{log}"
    );
    assert!(
        log.contains("kind=\"panic\" error=\"panic: clear\\x1b[2J"),
        "{log}"
    );
    // The guest's own lines are echoed, escaped.
    assert!(
        log.contains(" guest: clear\\x1b[2J\\x1b[31mred\\rFORGED over"),
        "{log}"
    );

    let shown = env.run(&["jobs", "show", &failed]);
    shown.expect_code(0);
    assert_safe("runtime jobs show", &shown.stdout());
    let out = shown.stdout();
    assert!(
        out.contains(&format!("error:     [handler] {HOSTILE_ESCAPED_START}")),
        "{out}"
    );
    assert!(
        out.contains(&format!("ms): [handler] {HOSTILE_ESCAPED_START}")),
        "{out}"
    );
    let shown = env.run(&["jobs", "show", &panicked]);
    assert_safe("runtime jobs show", &shown.expect_code(0).stdout());
    assert!(
        shown
            .stdout()
            .contains("error:     [panic] panic: clear\\x1b[2J"),
        "{}",
        shown.stdout()
    );

    let listed = env.run(&["jobs", "list", guests::FORGE, "--state", "failed"]);
    let out = listed.expect_code(0).stdout();
    assert_safe("runtime jobs list", &out);
    assert_eq!(out.lines().count(), 2, "{out}");

    let shown = env.run(&["jobs", "show", &failed, "--json"]);
    assert_inert("runtime jobs show --json", &shown.expect_code(0).stdout());
    let listed = env.run(&["jobs", "list", guests::FORGE, "--state", "failed", "--json"]);
    assert_inert("runtime jobs list --json", &listed.expect_code(0).stdout());
    let json = shown.json();
    assert_eq!(
        (&json["error_kind"], &json["error"]),
        (&Value::from("handler"), &Value::from(HOSTILE))
    );
    assert_eq!(json["history"][0]["kind"], "handler");
    assert_eq!(env.show(&panicked)["error_kind"], "panic");
}

/// The worker's JSON log, one object per line.
fn json_lines(w: &RuntimeProcess) -> Vec<Value> {
    w.log()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}")))
        .collect()
}

#[test]
fn a_json_worker_log_keeps_hostile_guest_text_inside_its_values() {
    let env = Env::new();
    let id = env.dispatch(guests::FORGE, "{}", &["--max-attempts", "1"]);
    let w = drain(&env, &[guests::FORGE, "--log-format", "json"]);
    assert_inert("the worker's JSON log", &w.log());
    let lines = json_lines(&w);
    let guest: Vec<&Value> = lines.iter().filter(|l| l["target"] == "guest").collect();
    assert_eq!(guest.len(), 2, "{lines:#?}");
    for (line, level) in guest.iter().zip(["INFO", "WARN"]) {
        let mut keys: Vec<&String> = line
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        keys.sort();
        assert_eq!(
            keys,
            [
                "attempt",
                "job",
                "level",
                "message",
                "queue",
                "target",
                "tenant",
                "timestamp"
            ],
            "{line}"
        );
        assert_eq!(
            (&line["message"], &line["level"], &line["job"]),
            (
                &Value::from(HOSTILE),
                &Value::from(level),
                &Value::from(id.as_str())
            )
        );
    }
    let failed = lines
        .iter()
        .find(|l| l["message"] == "job failed")
        .unwrap_or_else(|| panic!("no job failed line in {lines:#?}"));
    assert_eq!(
        (&failed["kind"], &failed["error"], &failed["level"]),
        (
            &Value::from("handler"),
            &Value::from(HOSTILE),
            &Value::from("WARN")
        )
    );
    // Nothing the guest wrote became a record of its own.
    assert!(
        lines
            .iter()
            .all(|l| l["target"] == "guest" || l["message"] != HOSTILE),
        "{lines:#?}"
    );
}

#[test]
fn a_handler_cannot_make_its_failure_look_like_a_host_limit() {
    let claim = "memory limit 64 MiB exceeded";
    let cache = TempDir::new("guest-text");
    let forged_payload = format!(r#"{{"finally":"{claim}"}}"#);
    let forged = dispatch_here(&cache, &[guests::OUTCOMES, &forged_payload]);
    let real = dispatch_here(&cache, &[guests::MEMORY_BOMB, "{}", "--max-attempts", "1"]);
    assert!(
        forged.expect_code(1).stdout().contains(&format!(
            "outcomes:1: failed [handler] after 1 attempt: {claim}"
        )),
        "{}",
        forged.stdout()
    );
    assert!(
        real.expect_code(1).stdout().contains(&format!(
            "memory-bomb:1: failed [memory] after 1 attempt: {claim}"
        )),
        "{}",
        real.stdout()
    );
    let forged_json = dispatch_here(&cache, &[guests::OUTCOMES, &forged_payload, "--json"]);
    let real_json = dispatch_here(
        &cache,
        &[guests::MEMORY_BOMB, "{}", "--max-attempts", "1", "--json"],
    );
    let (forged_json, real_json) = (forged_json.json(), real_json.json());
    assert_eq!(forged_json["error"], real_json["error"], "the same words");
    assert_eq!(
        (&forged_json["error_kind"], &real_json["error_kind"]),
        (&Value::from("handler"), &Value::from("memory"))
    );

    // On Redis: the records, the listing and the worker's log tell them apart.
    let env = Env::new();
    let forged = env.dispatch(guests::OUTCOMES, &forged_payload, &[]);
    let real = env.dispatch(guests::MEMORY_BOMB, "{}", &["--max-attempts", "1"]);
    let w = drain(
        &env,
        &[
            guests::OUTCOMES,
            guests::MEMORY_BOMB,
            "--log-format",
            "json",
        ],
    );
    for (id, kind) in [(&forged, "handler"), (&real, "memory")] {
        let record = env.show(id);
        assert_eq!(
            (&record["error_kind"], &record["error"]),
            (&Value::from(kind), &Value::from(claim))
        );
        assert_eq!(record["history"][0]["kind"], kind, "{record}");
        let line = json_lines(&w)
            .into_iter()
            .find(|l| l["message"] == "job failed" && l["job"] == id.as_str())
            .unwrap_or_else(|| panic!("no job failed line for {id}:\n{}", w.log()));
        assert_eq!(
            (&line["kind"], &line["error"]),
            (&Value::from(kind), &Value::from(claim))
        );
    }
    let listed = env.run(&["jobs", "list", guests::OUTCOMES, "--state", "failed"]);
    assert!(
        listed
            .expect_code(0)
            .stdout()
            .contains(&format!("error: [handler] {claim}")),
        "{}",
        listed.stdout()
    );
    let listed = env.run(&["jobs", "list", guests::MEMORY_BOMB, "--state", "failed"]);
    assert!(
        listed
            .expect_code(0)
            .stdout()
            .contains(&format!("error: [memory] {claim}")),
        "{}",
        listed.stdout()
    );
}

/// Most bytes one attempt's lines may take in the worker's log beyond its
/// output limit: the line saying the echo stopped, and the attempt's own
/// `job failed` line.
const ATTEMPT_LOG_SLACK: usize = 1024;

#[test]
fn a_flooding_guest_fills_the_worker_log_only_up_to_its_output_limit() {
    let limit = Limits::default().output;
    let env = Env::new();
    for format in ["human", "json"] {
        let id = env.dispatch(
            guests::FORGE,
            r#"{"mode":"flood"}"#,
            &["--max-attempts", "1"],
        );
        let w = drain(&env, &[guests::FORGE, "--log-format", format]);
        let log = w.log();
        let marker = match format {
            "human" => format!("job={id} "),
            _ => format!("\"job\":\"{id}\""),
        };
        let attempt: Vec<&str> = log.lines().filter(|l| l.contains(&marker)).collect();
        let bytes: usize = attempt.iter().map(|l| l.len() + 1).sum();
        let echoed = attempt.iter().filter(|l| l.contains("guest")).count();
        println!(
            "{format}: {bytes} bytes of worker log for the attempt ({echoed} lines echoed), output limit {limit}"
        );
        assert!(
            bytes <= limit + ATTEMPT_LOG_SLACK,
            "{format}: {bytes} bytes of worker log for one attempt, over {limit} + {ATTEMPT_LOG_SLACK}"
        );
        assert!(
            echoed > 100,
            "{format}: the echo ran ({echoed} lines):\n{log}"
        );
        assert!(
            attempt
                .iter()
                .any(|l| l.contains("filled its share of this log")),
            "{format}: one line says the echo stopped:\n{log}"
        );
        assert!(
            attempt
                .iter()
                .any(|l| l.contains("output limit 64 KiB exceeded")),
            "{format}: the attempt's own line:\n{log}"
        );
        // The job's own log keeps every line that fit its output limit.
        let record = env.show(&id);
        let kept = record["log"].as_str().unwrap_or_default().lines().count();
        assert!(
            kept > 10 * echoed,
            "{format}: the job's log has the lines that fit ({kept}, echoed {echoed})"
        );
        assert_eq!(record["error_kind"], "output", "{record}");
    }
}

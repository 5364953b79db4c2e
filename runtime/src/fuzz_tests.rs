//! Property tests of everything that parses outside input: payloads, queue
//! names, job ids, states and failure kinds, dispatch options, times and
//! delays, and config text. Each property says what the input is accepted
//! for, judged by a rule written out here independently of the code under
//! test, and that no input makes it panic.
//!
//! The normal test run tries 256 cases per property (proptest's default,
//! a few seconds in all). A longer run, over every `fuzz_` property of the
//! crate (these, the Redis record decoder's and the memory limiter's):
//!
//! ```sh
//! PROPTEST_CASES=100000 cargo test --release -p runtime fuzz_
//! ```

use std::time::Duration;

use proptest::prelude::*;

use crate::config::Config;
use crate::job::{
    DispatchOptions, FailureKind, JobId, JobState, MAX_ATTEMPTS, MAX_DELAY, MAX_PAYLOAD_BYTES,
    MAX_QUEUE_NAME_LEN, MAX_UNIQUE_KEY_BYTES, MaxAttempts, Payload, QueueName, RunAt,
};
use crate::time::{format_millis, parse_delay, parse_run_at};

/// The last millisecond of the year 9999, the end of the calendar form.
const LAST_CALENDAR_MS: u64 = 253_402_300_799_999;

fn max_delay_ms() -> u64 {
    u64::try_from(MAX_DELAY.as_millis()).expect("a year of milliseconds fits u64")
}

/// Text made of JSON's own characters, so that many cases are documents
/// and many are near misses.
fn json_ish() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        r#"[\[\]{}",:0-9a-z .eE+\\-]{0,40}"#,
        r#"\{"[a-z]{0,5}":( ?(-?[0-9]{1,4}(\.[0-9]{1,3})?([eE][+-]?[0-9]{1,4})?|"[^"\\]{0,6}"|true|null|\[\]))\} ?[\{\[0-9]?"#,
    ]
}

/// The documented queue name alphabet, as a rule on characters.
fn is_queue_name(s: &str) -> bool {
    let mut chars = s.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    s.len() <= MAX_QUEUE_NAME_LEN
        && matches!(first, 'a'..='z' | '0'..='9')
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '-' | '_'))
}

/// A written queue name: an own name, or `tenant/name` with both parts
/// following the alphabet.
fn is_written_queue(s: &str) -> bool {
    match s.split_once('/') {
        None => is_queue_name(s),
        Some((tenant, name)) => is_queue_name(tenant) && is_queue_name(name),
    }
}

fn written_queue_ish() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z0-9_\\-/.]{0,70}",
        "(default|acme|[a-z]{1,3})/[a-z0-9_\\-/.]{0,8}",
        "[a-zA-Z0-9_\\-:{}./ é]{0,40}",
    ]
}

fn queue_name_ish() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z0-9_\\-]{0,70}",
        "[a-zA-Z0-9_\\-:{}. é]{0,66}",
    ]
}

fn valid_queue() -> impl Strategy<Value = QueueName> {
    "[a-z0-9][a-z0-9_\\-]{0,63}"
        .prop_map(|s| QueueName::new(s).expect("generated from the alphabet"))
}

fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        (0..=max_delay_ms() / 1000 + 2, 0..1_000_000_000u32).prop_map(|(s, n)| Duration::new(s, n)),
        (any::<u64>(), 0..1_000_000_000u32).prop_map(|(s, n)| Duration::new(s, n)),
        Just(MAX_DELAY),
        Just(MAX_DELAY + Duration::from_nanos(1)),
    ]
}

fn run_at() -> impl Strategy<Value = (RunAt, u64)> {
    let now = prop_oneof![any::<u64>(), 0..=LAST_CALENDAR_MS, Just(u64::MAX)];
    (now, duration(), any::<u64>(), 0..3u8, any::<i64>()).prop_map(
        |(now, delay, at, which, offset)| {
            let run_at = match which {
                0 => RunAt::Now,
                1 => RunAt::After(delay),
                // Near the limit half the time, anywhere the other half.
                _ if offset % 2 == 0 => RunAt::At(
                    now.saturating_add(max_delay_ms())
                        .saturating_add_signed(offset % 3),
                ),
                _ => RunAt::At(at),
            };
            (run_at, now)
        },
    )
}

fn unique_key() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        any::<String>().prop_map(Some),
        "@?[ -~]{0,8}".prop_map(Some),
        "[a-z]{250,260}".prop_map(Some),
        "[a-z]{0,4}[\\x00-\\x1f\\x7f\u{80}-\u{9f}][a-z]{0,4}".prop_map(Some),
    ]
}

/// The documented unique key rule.
fn key_ok(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_UNIQUE_KEY_BYTES
        && !key.chars().any(char::is_control)
        && !key.starts_with('@')
}

/// Text shaped like RFC 3339 times, with and without offsets, in and out
/// of every range.
fn time_ish() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[+-]?[0-9]{1,6}-[0-9]{1,2}-[0-9]{1,2}[T ][0-9]{1,2}:[0-9]{2}(:[0-9]{2}(\\.[0-9]{1,12})?)?(Z|z|[+-][0-9]{2}(:?[0-9]{2})?)?(\\[[A-Za-z/_!]{0,12}\\])?",
        "[0-9T:.Z+\\- ]{0,30}",
    ]
}

fn delay_ish() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "([0-9]{1,22} ?(ns|us|ms|s|sec|m|min|h|hr|d|day|days|w|week|M|month|y|year|years|x)? ?){0,4}",
    ]
}

/// Config text built from the file's real keys and sections, with values
/// of every kind (too large, negative, of the wrong type) and some noise.
fn config_ish() -> impl Strategy<Value = String> {
    let section = prop_oneof![
        Just("[defaults]".to_string()),
        Just("[sandbox]".to_string()),
        "\\[queues\\.[a-zA-Z0-9_\\-]{0,8}\\]",
        Just("[queues]".to_string()),
        "\\[[a-z.]{0,10}\\]",
    ];
    let key = prop_oneof![
        Just("memory_mib"),
        Just("timeout_ms"),
        Just("fuel"),
        Just("output_kib"),
        Just("max_dispatches"),
        Just("max_tree_depth"),
        Just("max_tree_jobs"),
        Just("backoff_base_ms"),
        Just("backoff_cap_ms"),
        Just("concurrency"),
        Just("weight"),
        Just("max_core_instances"),
        Just("max_memories"),
        Just("max_tables"),
        Just("max_instances"),
        Just("max_wasm_stack_kib"),
        Just("keep_resident_kib"),
        Just("module"),
        Just("backend"),
        Just("prefix"),
        Just("handlers"),
        Just("cache_dir"),
        Just("unknown"),
    ];
    let value = prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        (0u64..100).prop_map(|n| n.to_string()),
        Just("18446744073709551615".to_string()),
        Just("1e999".to_string()),
        Just("nan".to_string()),
        "\"[ -~]{0,12}\"",
        Just("true".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
    ];
    let line = prop_oneof![
        section,
        (key, value).prop_map(|(k, v)| format!("{k} = {v}")),
        "[ -~]{0,20}",
    ];
    prop_oneof![
        prop::collection::vec(line, 0..12).prop_map(|lines| lines.join("\n")),
        any::<String>(),
    ]
}

#[test]
fn payload_numbers_out_of_f64_range_are_json() {
    for text in [r#"{"a":1e309}"#, "-1e400", "[1e999999]"] {
        assert!(Payload::new(text).is_ok(), "{text}");
        assert!(serde_json::from_str::<serde_json::Value>(text).is_err());
    }
}

proptest! {
    #[test]
    fn fuzz_payload_is_valid_iff_one_json_document_within_the_limit(text in json_ish()) {
        let json_ok = match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(_) => true,
            // A number beyond f64's range is valid JSON text (RFC 8259
            // leaves ranges to the reader) that serde_json's `Value` will
            // not hold; payloads take it, as other languages' handlers read
            // it (see `payload_numbers_out_of_f64_range_are_json`). The
            // rest of such a text is not judged here.
            Err(e) if e.to_string().starts_with("number out of range") => {
                return Ok(());
            }
            Err(_) => false,
        };
        let accepted = Payload::new(text.clone());
        prop_assert_eq!(accepted.is_ok(), json_ok && text.len() <= MAX_PAYLOAD_BYTES, "{:?}", text);
        if let Ok(p) = accepted {
            prop_assert_eq!(p.as_str(), text.as_str());
            // A payload survives the record's serde round trip unchanged.
            let stored = serde_json::to_string(&p).expect("a payload serializes");
            prop_assert_eq!(serde_json::from_str::<Payload>(&stored).expect("and reads back"), p);
        } else if let Err(e) = accepted {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn fuzz_payload_size_limit_is_exact(extra in 0usize..64, over in any::<bool>()) {
        // A valid document padded with whitespace to just under or just
        // over the limit.
        let target = if over { MAX_PAYLOAD_BYTES + 1 + extra } else { MAX_PAYLOAD_BYTES - extra };
        let text = format!("{}1", " ".repeat(target - 1));
        prop_assert_eq!(Payload::new(text).is_ok(), !over);
    }

    #[test]
    fn fuzz_queue_name_accepts_exactly_the_documented_alphabet(text in queue_name_ish()) {
        match QueueName::new(text.clone()) {
            Ok(name) => {
                prop_assert!(is_queue_name(&text), "accepted {:?}", text);
                prop_assert_eq!(name.as_str(), text.as_str());
                prop_assert_eq!(name.to_string().parse::<QueueName>().expect("round trip"), name.clone());
                let file = name.handler_file_name();
                prop_assert!(file.ends_with("_job.wasm") && !file.contains('-'), "{}", file);
            }
            Err(e) => {
                prop_assert!(!is_queue_name(&text), "refused {:?}", text);
                prop_assert!(!e.to_string().is_empty());
            }
        }
    }

    #[test]
    fn fuzz_written_queue_names_parse_exactly_the_grammar(text in written_queue_ish()) {
        match QueueName::parse(&text) {
            Ok(name) => {
                prop_assert!(is_written_queue(&text), "accepted {:?}", text);
                // One spelling per queue: the default tenant's is bare.
                let expected = text.strip_prefix("default/").unwrap_or(&text);
                prop_assert_eq!(name.as_str(), expected);
                prop_assert_eq!(name.to_string().parse::<QueueName>().expect("round trip"), name.clone());
                let own = text.rsplit_once('/').map_or(text.as_str(), |(_, n)| n);
                prop_assert_eq!(name.name(), own);
                // A handler's name never leaves its tenant, and its file
                // never leaves the handlers directory.
                prop_assert_eq!(name.sibling(&text).is_ok(), !text.contains('/'));
                let dir = std::path::Path::new("/handlers");
                let path = name.handler_path(dir);
                prop_assert!(path.starts_with(dir), "{}", path.display());
                prop_assert!(
                    path.components().all(|c| matches!(c, std::path::Component::Normal(_) | std::path::Component::RootDir)),
                    "{}", path.display()
                );
            }
            Err(e) => {
                prop_assert!(!is_written_queue(&text), "refused {:?}", text);
                prop_assert!(!e.to_string().is_empty());
            }
        }
    }

    #[test]
    fn fuzz_job_id_round_trips(queue in valid_queue(), seq in any::<u64>()) {
        let id = JobId::new(queue, seq);
        prop_assert_eq!(id.to_string().parse::<JobId>().expect("own id parses"), id);
    }

    #[test]
    fn fuzz_job_id_parses_only_queue_colon_number(text in prop_oneof![any::<String>(), "[a-z0-9_\\-:+/]{0,12}"]) {
        let expected = text
            .rsplit_once(':')
            .filter(|(q, _)| is_written_queue(q))
            .and_then(|(_, n)| n.parse::<u64>().ok());
        match text.parse::<JobId>() {
            Ok(id) => {
                prop_assert_eq!(Some(id.seq()), expected, "{:?}", text);
                prop_assert_eq!(id.to_string().parse::<JobId>().expect("reparses"), id);
            }
            Err(e) => {
                prop_assert_eq!(expected, None, "{:?}", text);
                prop_assert!(!e.to_string().is_empty());
            }
        }
    }

    #[test]
    fn fuzz_states_and_kinds_parse_only_their_names(text in prop_oneof![any::<String>(), "[a-z_]{0,15}"]) {
        let state = text.parse::<JobState>();
        prop_assert_eq!(state.ok(), JobState::ALL.into_iter().find(|s| s.as_str() == text));
        let kind = text.parse::<FailureKind>();
        prop_assert_eq!(kind.ok(), FailureKind::ALL.into_iter().find(|k| k.as_str() == text));
    }

    #[test]
    fn fuzz_dispatch_options_refuse_exactly_what_the_limits_say(
        max_attempts in prop_oneof![any::<u32>(), 0..=MAX_ATTEMPTS + 1],
        (run_at, now) in run_at(),
        unique_key in unique_key(),
        priority in any::<i32>(),
    ) {
        let time_ok = match run_at {
            RunAt::Now => true,
            RunAt::After(d) => d <= MAX_DELAY,
            RunAt::At(at) => at <= now.saturating_add(max_delay_ms()),
        };
        let expected = (1..=MAX_ATTEMPTS).contains(&max_attempts)
            && time_ok
            && unique_key.as_deref().is_none_or(key_ok);
        // Attempts are checked when their type is made, the rest by `check`.
        let checked = MaxAttempts::new(max_attempts).and_then(|max_attempts| {
            DispatchOptions { priority, run_at, max_attempts, unique_key: unique_key.clone() }.check(now)
        });
        prop_assert_eq!(
            checked.is_ok(),
            expected,
            "{} attempts, {:?}, key {:?} at {}",
            max_attempts,
            run_at,
            unique_key,
            now
        );
        if let Err(e) = checked {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn fuzz_format_millis_never_fails_and_run_at_reads_it_back(
        ms in prop_oneof![any::<u64>(), 0..=LAST_CALENDAR_MS],
        ahead in 0..=2 * max_delay_ms(),
    ) {
        let text = format_millis(ms);
        prop_assert!(!text.is_empty());
        if ms <= LAST_CALENDAR_MS {
            // Any `now` from which `ms` is at most a year ahead accepts it.
            let now = ms.saturating_sub(ahead);
            let parsed = parse_run_at(&text, now);
            if ms - now <= max_delay_ms() {
                prop_assert_eq!(parsed, Ok(ms), "{}", text);
            } else {
                prop_assert!(parsed.is_err(), "{} from {}", text, now);
            }
        }
    }

    #[test]
    fn fuzz_parse_run_at_never_panics_and_keeps_its_bounds(
        text in time_ish(),
        now in prop_oneof![any::<u64>(), 0..=LAST_CALENDAR_MS, Just(u64::MAX)],
    ) {
        match parse_run_at(&text, now) {
            Ok(ms) => prop_assert!(ms <= now.saturating_add(max_delay_ms()), "{:?} -> {}", text, ms),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn fuzz_parse_delay_never_panics_and_keeps_its_bound(text in delay_ish()) {
        match parse_delay(&text) {
            Ok(d) => prop_assert!(d <= MAX_DELAY, "{:?} -> {:?}", text, d),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn fuzz_parse_delay_reads_back_what_humantime_writes(d in duration()) {
        let text = humantime::format_duration(d).to_string();
        let parsed = parse_delay(&text);
        if d <= MAX_DELAY {
            prop_assert_eq!(parsed, Ok(d), "{}", text);
        } else {
            prop_assert!(parsed.is_err(), "{}", text);
        }
    }

    #[test]
    fn fuzz_config_parse_never_panics(text in config_ish()) {
        // Whatever parses is usable: settings for any queue, and engine
        // settings, come out without overflow.
        if let Ok(config) = Config::parse(&text) {
            let queue = QueueName::new("q").expect("valid");
            let _ = config.queue(&queue);
            for name in config.queues.keys() {
                let _ = config.queue(&QueueName::parse(name).expect("validated by parse"));
            }
            let _ = config.sandbox();
        }
    }
}

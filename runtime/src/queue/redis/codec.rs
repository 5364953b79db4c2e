//! A job's record as stored: the part that never changes (written once at
//! dispatch, read only here), the part that does (which the library's
//! functions rewrite), the last failure and the attempt entries; and how a function's reply becomes a [`JobRecord`]
//! without a map per job. Whatever a hand-edited server or another version
//! holds, decoding gives a record or a "malformed" error naming the job.

use redis::Value;

use super::super::Completion;
use super::super::clock::millis;
use crate::error::QueueError;
use crate::job::{
    AttemptRecord, FailureKind, JobId, JobRecord, JobState, Lineage, NewJob, Payload, QueueName,
    UnixMillis,
};

/// The part of a record that never changes, as its key holds it:
/// `created_at|root|parent|depth|key length|<key><payload>` (root, parent
/// and depth empty outside a job tree; the key length empty without a key).
/// The key is counted, not delimited, as it may hold any character.
pub(super) fn encode_fixed(
    created_at: UnixMillis,
    job: &NewJob,
    lineage: Option<&Lineage>,
) -> String {
    let key = job.options.unique_key.as_deref();
    let payload = job.payload.as_str();
    let mut d = String::with_capacity(48 + payload.len() + key.map_or(0, str::len));
    d.push_str(&created_at.to_string());
    d.push('|');
    if let Some(l) = lineage {
        d.push_str(&format!("{}|{}|{}", l.root, l.parent, l.depth));
    } else {
        d.push_str("||");
    }
    d.push('|');
    if let Some(key) = key {
        d.push_str(&key.len().to_string());
    }
    d.push('|');
    d.push_str(key.unwrap_or_default());
    d.push_str(payload);
    d
}

/// [`encode_fixed`]'s parts, read back.
struct Fixed {
    created_at: UnixMillis,
    lineage: Option<Lineage>,
    unique_key: Option<String>,
    payload: Payload,
}

fn decode_fixed(d: &str) -> Result<Fixed, &'static str> {
    let mut parts = d.splitn(6, '|');
    let mut next = || parts.next().ok_or("the fixed part is cut short");
    let created_at = next()?.parse().map_err(|_| "created_at is not a number")?;
    let (root, parent, depth) = (next()?, next()?, next()?);
    let key_len = next()?;
    let rest = next()?;
    let lineage = if root.is_empty() {
        None
    } else {
        Some(Lineage {
            root: root.parse().map_err(|_| "root is not a job id")?,
            parent: parent.parse().map_err(|_| "parent is not a job id")?,
            depth: depth.parse().map_err(|_| "depth is not a number")?,
        })
    };
    let (unique_key, payload) = if key_len.is_empty() {
        (None, rest)
    } else {
        let n: usize = key_len
            .parse()
            .map_err(|_| "the key length is not a number")?;
        if !rest.is_char_boundary(n) {
            return Err("the unique key is cut short");
        }
        let (key, payload) = rest.split_at(n);
        (Some(key.to_string()), payload)
    };
    let payload = Payload::new(payload).map_err(|_| "payload is not JSON")?;
    Ok(Fixed {
        created_at,
        lineage,
        unique_key,
        payload,
    })
}

/// The part of a record that changes, as its `:m` key holds it:
/// `state|attempts|token|lease expiry|run at|attempt started|priority|max
/// attempts|flags` (lease and started empty unless running; the flags tell
/// the functions what else to read, and are nothing to the host).
#[derive(Debug, PartialEq, Eq)]
struct Mutable {
    state: JobState,
    attempts: u32,
    token: u64,
    lease_expires: UnixMillis,
    run_at: UnixMillis,
    started_at: Option<UnixMillis>,
    priority: i32,
    max_attempts: u32,
}

fn decode_mutable(m: &str) -> Result<Mutable, &'static str> {
    let mut parts = m.split('|');
    let mut next = || parts.next().ok_or("the changing part is cut short");
    let state = next()?.parse().map_err(|_| "unknown state")?;
    let attempts = next()?.parse().map_err(|_| "attempts is not a number")?;
    let token = next()?.parse().map_err(|_| "token is not a number")?;
    let lease = next()?;
    let lease_expires = if lease.is_empty() {
        0
    } else {
        lease.parse().map_err(|_| "lease expiry is not a number")?
    };
    let run_at = next()?.parse().map_err(|_| "run_at is not a number")?;
    let started = next()?;
    let started_at = if started.is_empty() {
        None
    } else {
        Some(
            started
                .parse()
                .map_err(|_| "attempt start is not a number")?,
        )
    };
    let priority = next()?.parse().map_err(|_| "priority is not a number")?;
    let max_attempts = next()?
        .parse()
        .map_err(|_| "max_attempts is not a number")?;
    let _flags = next()?;
    if parts.next().is_some() {
        return Err("the changing part has too many fields");
    }
    Ok(Mutable {
        state,
        attempts,
        token,
        lease_expires,
        run_at,
        started_at,
        priority,
        max_attempts,
    })
}

/// Text out of a reply element: `None` for nil, an error for anything but
/// a UTF-8 string.
fn text(value: Value) -> Result<Option<String>, &'static str> {
    match value {
        Value::Nil => Ok(None),
        Value::BulkString(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| "a field is not UTF-8"),
        Value::SimpleString(s) => Ok(Some(s)),
        _ => Err("a field is not a string"),
    }
}

/// A job record from a function's reply, `{seq, d, m}` or `{seq, d, m, k,
/// e, g, entries}` (whatever a hand-edited or older Redis holds), or the
/// string `seq\nm\nd` (a claimed job that never failed), with its
/// fencing token and lease expiry; what does not read is the error
/// `malformed` makes for it.
pub(super) fn decode_record(
    queue: &QueueName,
    reply: Value,
    malformed: impl Fn(&JobId, &str) -> QueueError,
) -> Result<(JobRecord, u64, u64), QueueError> {
    let unknown = || malformed(&JobId::new(queue.clone(), 0), "the reply is not a record");
    let items = match reply {
        Value::Array(items) => items,
        Value::BulkString(joined) => {
            let joined = std::str::from_utf8(&joined).map_err(|_| unknown())?;
            // Split at the first two newlines: the seq and the changing
            // part have none; the fixed part is the rest, whatever it holds.
            let mut parts = joined.splitn(3, '\n');
            let seq = parts
                .next()
                .and_then(|s| s.parse().ok())
                .ok_or_else(unknown)?;
            let id = JobId::new(queue.clone(), seq);
            let bad = |what: &str| malformed(&id, what);
            let m = parts.next().ok_or_else(|| bad("no changing part"))?;
            let d = parts.next().ok_or_else(|| bad("no fixed part"))?;
            let parts = Parts {
                d,
                m,
                kind: None,
                error: None,
                log: None,
                entries: Vec::new(),
            };
            return assemble(id, parts, &malformed);
        }
        _ => return Err(unknown()),
    };
    let mut items = items.into_iter();
    let seq = match items.next() {
        Some(Value::Int(seq)) => u64::try_from(seq).ok(),
        Some(Value::BulkString(seq)) => std::str::from_utf8(&seq).ok().and_then(|s| s.parse().ok()),
        _ => None,
    }
    .ok_or_else(unknown)?;
    let id = JobId::new(queue.clone(), seq);
    let bad = |what: &str| malformed(&id, what);
    let mut field = || text(items.next().unwrap_or(Value::Nil)).map_err(bad);
    let d = field()?.ok_or_else(|| bad("no fixed part: written by another version?"))?;
    let m = field()?.ok_or_else(|| bad("no changing part: written by another version?"))?;
    let (kind, error, log) = (field()?, field()?, field()?);
    let entries = match items.next() {
        None | Some(Value::Nil) => Vec::new(),
        Some(Value::Array(entries)) => entries,
        Some(_) => return Err(bad("the attempt entries are not a list")),
    };
    let parts = Parts {
        d: &d,
        m: &m,
        kind,
        error,
        log,
        entries,
    };
    assemble(id, parts, &malformed)
}

/// A record's parts as read from a reply, before decoding.
struct Parts<'a> {
    d: &'a str,
    m: &'a str,
    kind: Option<String>,
    error: Option<String>,
    log: Option<String>,
    entries: Vec<Value>,
}

/// The record of job `id` from its parts, with its fencing token and lease
/// expiry.
fn assemble(
    id: JobId,
    parts: Parts<'_>,
    malformed: &impl Fn(&JobId, &str) -> QueueError,
) -> Result<(JobRecord, u64, u64), QueueError> {
    let bad = |what: &str| malformed(&id, what);
    let Parts {
        d,
        m,
        kind,
        error,
        log,
        entries,
    } = parts;
    let fixed = decode_fixed(d).map_err(bad)?;
    let changing = decode_mutable(m).map_err(bad)?;
    let mut history = Vec::with_capacity(entries.len() + 1);
    for entry in entries {
        let entry = text(entry).map_err(bad)?.unwrap_or_default();
        history.push(parse_attempt(&entry).ok_or_else(|| bad("attempt entry"))?);
    }
    // The running attempt is kept in the changing part, not as an entry.
    if let Some(started_at) = changing.started_at {
        history.push(AttemptRecord {
            number: changing.attempts,
            started_at,
            ended_at: None,
            kind: None,
            outcome: None,
        });
    }
    let record = JobRecord {
        payload: fixed.payload,
        state: changing.state,
        priority: changing.priority,
        attempts: changing.attempts,
        max_attempts: changing.max_attempts,
        unique_key: fixed.unique_key,
        lineage: fixed.lineage,
        created_at: fixed.created_at,
        run_at: changing.run_at,
        // Lenient: a kind this version does not know reads as none.
        error_kind: kind.and_then(|k| k.parse().ok()),
        error,
        history,
        log: log.unwrap_or_default(),
        id,
    };
    Ok((record, changing.token, changing.lease_expires))
}

/// One `n|started|ended:kind|outcome` attempt entry. The kind is read from
/// the host-written `ended` field only, never from the outcome text; an
/// entry from before kinds were kept (a bare `ended`), or with a kind this
/// version does not know, has none.
pub(super) fn parse_attempt(entry: &str) -> Option<AttemptRecord> {
    let mut parts = entry.splitn(4, '|');
    let number = parts.next()?.parse().ok()?;
    let started_at = parts.next()?.parse().ok()?;
    let ended = parts.next()?;
    let outcome = parts.next()?;
    let (ended_at, kind) = if ended.is_empty() {
        (None, None)
    } else {
        let (at, kind) = match ended.split_once(':') {
            Some((at, kind)) => (at, kind.parse::<FailureKind>().ok()),
            None => (ended, None),
        };
        (Some(at.parse().ok()?), kind)
    };
    Some(AttemptRecord {
        number,
        started_at,
        ended_at,
        kind,
        outcome: ended_at.map(|_| outcome.to_string()),
    })
}

/// The complete function's action, failure kind, error and run-again time
/// for a completion; `None` for done, which goes as seq and token alone.
pub(super) fn completion_args(
    completion: &Completion,
    now: UnixMillis,
) -> Option<(&'static str, &'static str, &str, UnixMillis)> {
    match completion {
        Completion::Done => None,
        Completion::Release => Some(("release", "", "", now)),
        Completion::Fail { kind, error } => Some(("fail", kind.as_str(), error, now)),
        Completion::Retry { kind, error, delay } => Some((
            "retry",
            kind.as_str(),
            error,
            now.saturating_add(millis(*delay)),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::DispatchOptions;

    #[test]
    fn attempt_entries_parse_with_any_outcome() {
        let open = parse_attempt("2|1000||").expect("valid");
        assert_eq!(
            (open.number, open.started_at, open.ended_at, open.kind),
            (2, 1000, None, None)
        );
        assert_eq!(open.outcome, None);
        let done = parse_attempt("1|1000|1250:panic|panic: a|b").expect("valid");
        assert_eq!(done.ended_at, Some(1250));
        assert_eq!(done.kind, Some(FailureKind::Panic));
        assert_eq!(done.outcome.as_deref(), Some("panic: a|b"));
        assert!(parse_attempt("x|1||").is_none());
        assert!(parse_attempt("1|1000|soon:panic|x").is_none());
    }

    #[test]
    fn entries_from_before_kinds_have_none_whatever_their_text_says() {
        let old = parse_attempt("1|1000|1250|memory|memory limit 64 MiB exceeded").expect("valid");
        assert_eq!((old.ended_at, old.kind), (Some(1250), None));
        assert_eq!(
            old.outcome.as_deref(),
            Some("memory|memory limit 64 MiB exceeded")
        );
        let unknown = parse_attempt("1|1000|1250:meteor|hit").expect("valid");
        assert_eq!((unknown.ended_at, unknown.kind), (Some(1250), None));
    }

    /// What dispatch writes reads back as the record it describes.
    #[test]
    fn a_dispatched_record_reads_back() {
        let queue = QueueName::new("q").expect("valid");
        let mut job = NewJob::new(queue.clone(), Payload::new(r#"{"a":"|1|"}"#).expect("json"));
        job.options = DispatchOptions {
            unique_key: Some("k|é|9".into()),
            ..Default::default()
        };
        let root = JobId::new(queue.clone(), 1);
        let lineage = Lineage {
            root: root.clone(),
            parent: root,
            depth: 2,
        };
        let d = encode_fixed(7, &job, Some(&lineage));
        let reply = Value::Array(vec![
            Value::Int(5),
            Value::BulkString(d.into_bytes()),
            Value::BulkString(b"running|2|9|40|7|30|-3|4|uf".to_vec()),
            Value::BulkString(b"timeout".to_vec()),
            Value::BulkString(b"took long".to_vec()),
            Value::Nil,
            Value::Array(vec![Value::BulkString(
                b"1|10|20:timeout|took long".to_vec(),
            )]),
        ]);
        let (rec, token, lease) = decode_record(&queue, reply, |_, what| QueueError::Backend {
            backend: "test".into(),
            message: what.into(),
        })
        .expect("reads");
        assert_eq!((token, lease), (9, 40));
        assert_eq!(rec.payload.as_str(), r#"{"a":"|1|"}"#);
        assert_eq!(rec.unique_key.as_deref(), Some("k|é|9"));
        assert_eq!(rec.lineage, Some(lineage));
        assert_eq!(
            (rec.state, rec.attempts, rec.max_attempts, rec.priority),
            (JobState::Running, 2, 4, -3)
        );
        assert_eq!((rec.created_at, rec.run_at), (7, 7));
        assert_eq!(rec.error_kind, Some(FailureKind::Timeout));
        assert_eq!(rec.log, "");
        let numbers: Vec<_> = rec
            .history
            .iter()
            .map(|a| (a.number, a.started_at, a.ended_at))
            .collect();
        assert_eq!(numbers, [(1, 10, Some(20)), (2, 30, None)]);
    }

    #[test]
    fn a_claimed_record_as_one_string_reads_like_the_list() {
        let queue = QueueName::new("q").expect("valid");
        let mut job = NewJob::new(
            queue.clone(),
            Payload::new(r#"{"a":"x\ny"}"#).expect("json"),
        );
        job.options = DispatchOptions {
            // The fixed part comes last, so newlines in it are its own.
            unique_key: Some("k\n|\n".into()),
            ..Default::default()
        };
        let d = encode_fixed(7, &job, None);
        let m = "running|1|3|40|7|30|0|4|u";
        let error = |_: &JobId, what: &str| QueueError::Backend {
            backend: "test".into(),
            message: what.into(),
        };
        let joined = Value::BulkString(format!("5\n{m}\n{d}").into_bytes());
        let list = Value::Array(vec![
            Value::Int(5),
            Value::BulkString(d.into_bytes()),
            Value::BulkString(m.as_bytes().to_vec()),
        ]);
        let one = decode_record(&queue, joined, error).expect("reads");
        assert_eq!(one, decode_record(&queue, list, error).expect("reads"));
        assert_eq!(one.0.unique_key.as_deref(), Some("k\n|\n"));
        assert_eq!(one.0.payload.as_str(), r#"{"a":"x\ny"}"#);
        for cut in ["5", "5\nrunning|1|3|40|7|30|0|4|u", "x\n\n", ""] {
            let reply = Value::BulkString(cut.as_bytes().to_vec());
            assert!(decode_record(&queue, reply, error).is_err(), "{cut:?}");
        }
    }

    /// Property tests of reading records back from Redis, which anyone
    /// with access to the server (or an older version) may have written:
    /// any reply gives a record or a clean "malformed" error. Part of the
    /// `fuzz_` run (see the crate's `fuzz_tests` module).
    mod fuzz {
        use proptest::prelude::*;

        use super::*;

        fn malformed(id: &JobId, what: &str) -> QueueError {
            QueueError::Backend {
                backend: "redis://test".into(),
                message: format!("job {id} is malformed in Redis ({what})"),
            }
        }

        /// A number as the functions write it, or anything.
        fn number() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<u64>().prop_map(|n| n.to_string()),
                any::<i64>().prop_map(|n| n.to_string()),
                Just("18446744073709551616".to_string()),
                Just(String::new()),
                "[0-9a-z+\\-|]{0,6}",
            ]
        }

        /// A changing part: well formed or not.
        fn changing() -> impl Strategy<Value = String> {
            let state = prop_oneof![
                prop::sample::select(JobState::ALL.map(JobState::as_str).to_vec())
                    .prop_map(str::to_string),
                "[a-z|]{0,8}",
            ];
            prop_oneof![
                (state, prop::collection::vec(number(), 7), "[a-z|]{0,3}")
                    .prop_map(|(s, n, f)| format!("{s}|{}|{f}", n.join("|"))),
                any::<String>(),
            ]
        }

        /// A fixed part: well formed or not.
        fn fixed() -> impl Strategy<Value = String> {
            let id = prop_oneof![
                Just("q:1".to_string()),
                Just(String::new()),
                "[a-z:0-9|]{0,6}"
            ];
            prop_oneof![
                (
                    number(),
                    id.clone(),
                    id,
                    number(),
                    number(),
                    any::<String>(),
                    prop_oneof![Just("{}".to_string()), any::<String>()]
                )
                    .prop_map(|(c, r, p, d, n, k, j)| format!("{c}|{r}|{p}|{d}|{n}|{k}{j}")),
                any::<String>(),
            ]
        }

        fn bulk(s: Option<String>) -> Value {
            s.map_or(Value::Nil, |s| Value::BulkString(s.into_bytes()))
        }

        fn attempt_entry() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<String>(),
                "[0-9|:a-z_+\\-]{0,24}",
                (
                    any::<u32>(),
                    any::<u64>(),
                    any::<u64>(),
                    prop::sample::select(FailureKind::ALL.map(FailureKind::as_str).to_vec()),
                    any::<String>()
                )
                    .prop_map(|(n, s, e, k, o)| format!("{n}|{s}|{e}:{k}|{o}")),
            ]
        }

        proptest! {
            #[test]
            fn fuzz_any_record_reply_gives_a_record_or_a_clean_error(
                seq in any::<u64>(),
                d in prop::option::of(fixed()),
                m in prop::option::of(changing()),
                failure in prop::option::of((any::<String>(), any::<String>(), any::<String>())),
                attempts in prop::collection::vec(attempt_entry(), 0..4),
                short in any::<bool>(),
            ) {
                let queue = QueueName::new("q").expect("valid");
                let seq = seq >> 1;
                let mut items = vec![Value::Int(i64::try_from(seq).expect("63 bits")), bulk(d.clone()), bulk(m.clone())];
                if !short {
                    let (k, e, g) = match failure.clone() {
                        Some((k, e, g)) => (Some(k), Some(e), Some(g)),
                        None => (None, None, None),
                    };
                    items.extend([bulk(k), bulk(e), bulk(g)]);
                    items.push(Value::Array(attempts.iter().map(|a| Value::BulkString(a.clone().into_bytes())).collect()));
                }
                // A claim's one-string form of the short reply reads the same.
                if short && let (Some(d), Some(m)) = (&d, &m) && !m.contains('\n') {
                    let joined = Value::BulkString(format!("{seq}\n{m}\n{d}").into_bytes());
                    let as_list = decode_record(&queue, Value::Array(items.clone()), malformed);
                    let as_one = decode_record(&queue, joined, malformed);
                    prop_assert_eq!(as_list.ok(), as_one.ok());
                }
                match decode_record(&queue, Value::Array(items), malformed) {
                    Ok((record, token, _)) => {
                        prop_assert!(d.is_some() && m.is_some());
                        prop_assert_eq!(record.id, JobId::new(queue, seq));
                        let m = m.expect("some");
                        prop_assert!(m.starts_with(record.state.as_str()));
                        prop_assert!(d.expect("some").ends_with(record.payload.as_str()));
                        let token = token.to_string();
                        prop_assert_eq!(m.split('|').nth(2), Some(token.as_str()));
                        let running = !m.split('|').nth(5).unwrap_or_default().is_empty();
                        let entries = if short { 0 } else { attempts.len() };
                        prop_assert_eq!(record.history.len(), entries + usize::from(running));
                    }
                    Err(e) => {
                        let message = e.to_string();
                        prop_assert!(message.contains(&format!("job q:{seq} is malformed")), "{}", message);
                    }
                }
            }

            #[test]
            fn fuzz_attempt_entries_never_panic(entry in attempt_entry()) {
                if let Some(a) = parse_attempt(&entry) {
                    // What reads back, written again, reads back the same.
                    let again = match (&a.ended_at, &a.kind) {
                        (None, _) => format!("{}|{}||", a.number, a.started_at),
                        (Some(at), None) => format!("{}|{}|{at}|{}", a.number, a.started_at, a.outcome.as_deref().unwrap_or("")),
                        (Some(at), Some(k)) => format!("{}|{}|{at}:{k}|{}", a.number, a.started_at, a.outcome.as_deref().unwrap_or("")),
                    };
                    let back = parse_attempt(&again);
                    prop_assert_eq!(back.as_ref(), Some(&a));
                    prop_assert_eq!(a.ended_at.is_some(), a.outcome.is_some());
                }
            }

            #[test]
            fn fuzz_attempt_entries_read_back_as_written(
                number in any::<u32>(),
                started in any::<u64>(),
                ended in prop::option::of((any::<u64>(), prop::option::of(prop::sample::select(FailureKind::ALL.to_vec())))),
                outcome in any::<String>(),
            ) {
                let entry = match ended {
                    None => format!("{number}|{started}||"),
                    Some((at, None)) => format!("{number}|{started}|{at}|{outcome}"),
                    Some((at, Some(kind))) => format!("{number}|{started}|{at}:{kind}|{outcome}"),
                };
                let expected = AttemptRecord {
                    number,
                    started_at: started,
                    ended_at: ended.map(|(at, _)| at),
                    kind: ended.and_then(|(_, kind)| kind),
                    outcome: ended.map(|_| outcome.clone()),
                };
                prop_assert_eq!(parse_attempt(&entry), Some(expected));
            }
        }
    }
}

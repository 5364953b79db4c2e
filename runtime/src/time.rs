//! Times as people write them and as the runtime prints them.
//!
//! Job records keep times as [`UnixMillis`]: any `u64` can be stored (a
//! record may come from an older version, another tool, or a hand-edited
//! Redis), so printing one never fails: [`format_millis`] falls back to
//! the plain number past the year 9999. Parsing takes RFC 3339 with an
//! offset (`2026-12-01T09:00:00Z`, `2026-12-01T09:00:00+02:00`) and
//! refuses a time without one: guessing a zone would run jobs hours off.
//! Delays and run-at times further than [`MAX_DELAY`] from now are
//! refused here, before they reach a backend.
//!
//! Every function here takes arbitrary text or numbers and returns an
//! error, never panics (the unit tests feed them random input).

use std::time::Duration;

use jiff::Timestamp;

use crate::job::{MAX_DELAY, UnixMillis};

/// Forms accepted for a point in time, for error messages.
const TIME_FORMS: &str = "RFC 3339 with a zone: 2026-12-01T09:00:00Z (UTC) or 2026-12-01T09:00:00+02:00 (an offset from UTC)";

/// Forms accepted for a delay, for error messages.
const DELAY_FORMS: &str = "a number and a unit: 30s, 5m, 1h 30m, 2days";

/// A time or delay a person gave that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TimeError {
    /// A date and time without `Z` or an offset (a zone name alone, as in
    /// `[Europe/Paris]`, is not enough: there is no time zone database).
    #[error("{text:?} has no offset from UTC; add one: {TIME_FORMS}")]
    NoZone {
        /// What was given.
        text: String,
    },
    /// Not a time at all.
    #[error("{text:?} is not a time ({reason}); use {TIME_FORMS}")]
    Invalid {
        /// What was given.
        text: String,
        /// What the parser said.
        reason: String,
    },
    /// Before 1970-01-01T00:00:00Z, which job records cannot hold.
    #[error("{text:?} is before 1970-01-01T00:00:00Z, the earliest time a job can run at")]
    BeforeEpoch {
        /// What was given.
        text: String,
    },
    /// Further from now than [`MAX_DELAY`].
    #[error(
        "{text:?} is more than {} from now; a job can be put off at most that long (latest now: {latest})",
        describe(MAX_DELAY)
    )]
    TooFar {
        /// What was given.
        text: String,
        /// The latest time accepted now.
        latest: String,
    },
    /// Not a duration.
    #[error("{text:?} is not a delay ({reason}); use {DELAY_FORMS}")]
    InvalidDelay {
        /// What was given.
        text: String,
        /// What the parser said.
        reason: String,
    },
    /// A delay longer than [`MAX_DELAY`].
    #[error(
        "delay {text:?} is longer than {}, the longest a job can be put off",
        describe(MAX_DELAY)
    )]
    DelayTooLong {
        /// What was given.
        text: String,
    },
}

/// Parses a point in time (RFC 3339 with `Z` or an offset) to Unix
/// milliseconds, refusing times before the epoch and more than
/// [`MAX_DELAY`] after `now`. A time in the past (after the epoch) is
/// accepted: the job is due at once.
pub fn parse_run_at(text: &str, now: UnixMillis) -> Result<UnixMillis, TimeError> {
    let timestamp = match text.parse::<Timestamp>() {
        Ok(t) => t,
        Err(e) => {
            // A date and time that only lacks its offset (the likeliest
            // mistake), or that has one but is out of any range a job can
            // have, gets a message of its own.
            if let Ok(pieces) = jiff::fmt::temporal::Pieces::parse(text)
                && pieces.time().is_some()
            {
                return Err(match pieces.offset() {
                    None => TimeError::NoZone { text: text.into() },
                    Some(_) if pieces.date().year() < 1970 => {
                        TimeError::BeforeEpoch { text: text.into() }
                    }
                    Some(_) => TimeError::TooFar {
                        text: text.into(),
                        latest: format_millis(now.saturating_add(millis(MAX_DELAY))),
                    },
                });
            }
            return Err(TimeError::Invalid {
                text: text.into(),
                reason: e.to_string(),
            });
        }
    };
    let ms = u64::try_from(timestamp.as_millisecond())
        .map_err(|_| TimeError::BeforeEpoch { text: text.into() })?;
    let latest = now.saturating_add(millis(MAX_DELAY));
    if ms > latest {
        return Err(TimeError::TooFar {
            text: text.into(),
            latest: format_millis(latest),
        });
    }
    Ok(ms)
}

/// Parses a delay (`30s`, `5m`, `1h 30m`, `2days`), refusing one longer
/// than [`MAX_DELAY`].
pub fn parse_delay(text: &str) -> Result<Duration, TimeError> {
    let delay = humantime::parse_duration(text).map_err(|e| TimeError::InvalidDelay {
        text: text.into(),
        reason: e.to_string(),
    })?;
    if delay > MAX_DELAY {
        return Err(TimeError::DelayTooLong { text: text.into() });
    }
    Ok(delay)
}

/// A wait for a person: `350ms`, `2s`, `1m 5s` (whole milliseconds,
/// rounded up so a wait is never shown shorter than it is).
pub fn format_wait(wait: Duration) -> String {
    let ms = u64::try_from(wait.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX);
    humantime::format_duration(Duration::from_millis(ms)).to_string()
}

/// A stored time as RFC 3339 in UTC with milliseconds
/// (`2026-12-01T07:00:00.000Z`); past the year 9999, where the calendar
/// form ends, the number itself. Never fails, for any value.
pub fn format_millis(ms: UnixMillis) -> String {
    match i64::try_from(ms)
        .ok()
        .and_then(|ms| Timestamp::from_millisecond(ms).ok())
    {
        Some(t) => format!("{t:.3}"),
        None => format!("{ms} ms after 1970-01-01T00:00:00Z (past the year 9999)"),
    }
}

/// How long ago `then` was at `now`, rounded down to seconds (`3m 20s`);
/// `0s` for a time in the future. Never fails, for any values.
pub fn format_age(then: UnixMillis, now: UnixMillis) -> String {
    let secs = now.saturating_sub(then) / 1000;
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

/// A duration in whole days when it is one (`365 days`), else as
/// humantime writes it.
fn describe(d: Duration) -> String {
    const DAY: u64 = 24 * 60 * 60;
    if d.subsec_nanos() == 0 && d.as_secs().is_multiple_of(DAY) {
        format!("{} days", d.as_secs() / DAY)
    } else {
        humantime::format_duration(d).to_string()
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-23T00:00:00Z.
    const NOW: UnixMillis = 1_795_392_000_000;

    #[test]
    fn offsets_and_utc_name_the_same_instant() {
        let utc = parse_run_at("2026-12-01T07:00:00Z", NOW).expect("utc");
        let plus2 = parse_run_at("2026-12-01T09:00:00+02:00", NOW).expect("offset");
        let minus5 = parse_run_at("2026-12-01T02:00:00-05:00", NOW).expect("negative offset");
        assert_eq!(utc, plus2);
        assert_eq!(utc, minus5);
        assert_eq!(format_millis(utc), "2026-12-01T07:00:00.000Z");
        let frac = parse_run_at("2026-12-01T07:00:00.250Z", NOW).expect("fraction");
        assert_eq!(frac - utc, 250);
    }

    #[test]
    fn a_time_without_a_zone_is_refused_with_the_accepted_forms() {
        let e = parse_run_at("2026-12-01T09:00:00", NOW).expect_err("no zone");
        assert!(matches!(e, TimeError::NoZone { .. }), "{e:?}");
        let text = e.to_string();
        assert!(text.contains("2026-12-01T09:00:00Z"), "{text}");
        assert!(text.contains("+02:00"), "{text}");
        let e = parse_run_at("next tuesday", NOW).expect_err("garbage");
        assert!(matches!(e, TimeError::Invalid { .. }), "{e:?}");
        assert!(e.to_string().contains("RFC 3339"), "{e}");
    }

    #[test]
    fn times_before_the_epoch_or_past_the_limit_are_refused() {
        let e = parse_run_at("1969-12-31T23:59:59Z", NOW).expect_err("before epoch");
        assert!(matches!(e, TimeError::BeforeEpoch { .. }), "{e:?}");
        assert_eq!(parse_run_at("1970-01-01T00:00:00Z", NOW), Ok(0));
        let latest = NOW + millis(MAX_DELAY);
        assert_eq!(parse_run_at(&format_millis(latest), NOW), Ok(latest));
        let e = parse_run_at(&format_millis(latest + 1), NOW).expect_err("too far");
        assert!(e.to_string().contains("365 days"), "{e}");
        for far in ["9999-12-31T23:59:59Z", "9999-12-31T23:59:59+02:00"] {
            let e = parse_run_at(far, NOW).expect_err("far");
            assert!(matches!(e, TimeError::TooFar { .. }), "{far}: {e}");
        }
        let e = parse_run_at("-009999-01-01T00:00:00Z", NOW).expect_err("early");
        assert!(matches!(e, TimeError::BeforeEpoch { .. }), "{e}");
        let e = parse_run_at("2026-12-01T09:00:00[Europe/Paris]", NOW).expect_err("name");
        assert!(matches!(e, TimeError::NoZone { .. }), "{e}");
        // A clock at the end of time does not overflow the limit.
        assert!(parse_run_at("2026-12-01T07:00:00Z", u64::MAX).is_ok());
    }

    #[test]
    fn delays_are_bounded() {
        assert_eq!(parse_delay("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_delay("365days"), Ok(MAX_DELAY));
        let e = parse_delay("366days").expect_err("too long");
        assert!(matches!(e, TimeError::DelayTooLong { .. }), "{e:?}");
        for huge in [
            "100000000years",
            "18446744073709551615s",
            "99999999999999999999999h",
        ] {
            assert!(parse_delay(huge).is_err(), "{huge}");
        }
        let e = parse_delay("soon").expect_err("not a delay");
        assert!(e.to_string().contains("30s, 5m"), "{e}");
    }

    #[test]
    fn every_stored_time_prints() {
        assert_eq!(format_millis(0), "1970-01-01T00:00:00.000Z");
        for ms in [
            u64::MAX,
            u64::MAX - 1,
            i64::MAX as u64,
            i64::MAX as u64 + 1,
            253_402_300_799_999, // 9999-12-31T23:59:59.999Z
            253_402_300_800_000,
        ] {
            let text = format_millis(ms);
            assert!(!text.is_empty(), "{ms}");
        }
        assert!(format_millis(u64::MAX).starts_with("18446744073709551615 ms"));
        assert_eq!(format_age(NOW - 200_000, NOW), "3m 20s");
        assert_eq!(format_age(u64::MAX, 0), "0s");
        assert!(!format_age(0, u64::MAX).is_empty());
    }

    /// Random text and numbers through every function: errors are fine,
    /// panics are not.
    #[test]
    fn random_input_never_panics() {
        let mut rng = fastrand::Rng::with_seed(7);
        let alphabet: Vec<char> = "0123456789-+:.TZtz WQ[]/_eyadsmhunμ\u{0}\u{202e}é"
            .chars()
            .collect();
        for _ in 0..50_000 {
            let len = rng.usize(0..40);
            let text: String = (0..len)
                .map(|_| alphabet[rng.usize(..alphabet.len())])
                .collect();
            let _ = parse_run_at(&text, rng.u64(..));
            let _ = parse_delay(&text);
            let _ = format_millis(rng.u64(..));
            let _ = format_age(rng.u64(..), rng.u64(..));
        }
        // Valid shapes with extreme fields.
        for text in [
            "9999-12-31T23:59:59.999999999+23:59",
            "-009999-01-01T00:00:00Z",
            "+009999-12-31T23:59:59Z",
            "0000-01-01T00:00:00-23:59",
            "2026-02-30T00:00:00Z",
            "2026-12-01T24:00:00Z",
            "2026-12-31T23:59:60Z",
        ] {
            let _ = parse_run_at(text, NOW);
            let _ = parse_run_at(text, 0);
            let _ = parse_run_at(text, u64::MAX);
        }
    }
}

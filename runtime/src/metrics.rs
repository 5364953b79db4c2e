//! A worker's metrics, in the Prometheus text format: what the worker
//! counts as attempts start and end ([`Metrics`]), plus readings taken when
//! scraped (queue depth, sandbox instances and memory, the process's RSS).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::job::{JobState, QueueName};
use crate::queue::{AttemptEnd, StateCounts};
use crate::sandbox::outbound::meter::{self as http_meter, QueueRequests};
use crate::sandbox::{RunOutcome, RunReport, SandboxSnapshot};

/// Upper bounds of the run-time histogram's buckets, seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 120.0,
];

/// Counters and histograms of one worker process, per queue.
#[derive(Debug, Default)]
pub struct Metrics {
    queues: Mutex<BTreeMap<QueueName, Arc<QueueMeter>>>,
}

/// One queue's counters, taken once per queue by the worker so that an
/// attempt's start and end touch only its own queue's lock, never the map.
#[derive(Debug, Default)]
pub struct QueueMeter(Mutex<QueueMetrics>);

#[derive(Debug, Default)]
struct QueueMetrics {
    in_flight: u64,
    processed: u64,
    done: u64,
    retried: BTreeMap<&'static str, u64>,
    failed: BTreeMap<&'static str, u64>,
    handed_back: u64,
    stale: u64,
    durations: Histogram,
}

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, d: Duration) {
        let secs = d.as_secs_f64();
        for (bound, n) in BUCKETS.iter().zip(&mut self.counts) {
            if secs <= *bound {
                *n += 1;
            }
        }
        self.count += 1;
        self.sum += secs;
    }
}

/// Why an attempt did not finish its job, as a metric label: its failure
/// kind, never its text (so a label set stays small whatever guests say).
fn reason(outcome: &RunOutcome) -> &'static str {
    outcome.failure().map_or("none", |(kind, _)| kind.as_str())
}

impl QueueMeter {
    fn lock(&self) -> MutexGuard<'_, QueueMetrics> {
        crate::sync::lock(&self.0)
    }

    /// An attempt started.
    pub fn started(&self) {
        self.lock().in_flight += 1;
    }

    /// An attempt ended (its end is recorded later, see
    /// [`QueueMeter::finished`]): it is no longer in flight.
    pub fn ended(&self) {
        let mut m = self.lock();
        m.in_flight = m.in_flight.saturating_sub(1);
    }

    /// An attempt's end was recorded: `report` is `None` if it was handed
    /// back (or never ran); `end` says what was recorded.
    pub fn finished(&self, report: Option<&RunReport>, end: AttemptEnd) {
        let mut m = self.lock();
        let why = report.map_or("none", |r| reason(&r.outcome));
        if let Some(report) = report {
            m.processed += 1;
            m.durations.observe(report.elapsed);
        }
        match end {
            AttemptEnd::Done => m.done += 1,
            AttemptEnd::Retried => *m.retried.entry(why).or_default() += 1,
            AttemptEnd::Failed => *m.failed.entry(why).or_default() += 1,
            AttemptEnd::HandedBack => m.handed_back += 1,
            AttemptEnd::Stale => m.stale += 1,
        }
    }
}

impl Metrics {
    /// The counters of `queue` (the name is copied only the first time a
    /// queue is seen).
    pub fn queue(&self, queue: &QueueName) -> Arc<QueueMeter> {
        let mut queues = crate::sync::lock(&self.queues);
        match queues.get(queue) {
            Some(m) => m.clone(),
            None => queues.entry(queue.clone()).or_default().clone(),
        }
    }

    /// Jobs in flight in this worker now, all queues.
    pub fn in_flight(&self) -> u64 {
        let queues = crate::sync::lock(&self.queues);
        queues.values().map(|m| m.lock().in_flight).sum()
    }

    /// Everything, in the Prometheus text exposition format (0.0.4), with
    /// the readings taken at scrape time.
    pub fn render(&self, readings: &Readings) -> String {
        let mut out = String::new();
        let meters = crate::sync::lock(&self.queues);
        let held: Vec<(&QueueName, MutexGuard<'_, QueueMetrics>)> =
            meters.iter().map(|(q, m)| (q, m.lock())).collect();
        let queues: Vec<(&QueueName, &QueueMetrics)> =
            held.iter().map(|(q, m)| (*q, &**m)).collect();
        let per_queue = |out: &mut String,
                         name: &str,
                         kind: &str,
                         help: &str,
                         value: fn(&QueueMetrics) -> u64| {
            family(out, name, kind, help, |out| {
                for (q, m) in queues.iter() {
                    let q = Labels(q);
                    let _ = writeln!(out, "{name}{{{q}}} {}", value(m));
                }
            });
        };
        per_queue(
            &mut out,
            "runtime_jobs_processed_total",
            "counter",
            "Attempts that ran to an outcome.",
            |m| m.processed,
        );
        per_queue(
            &mut out,
            "runtime_jobs_done_total",
            "counter",
            "Attempts that finished their job.",
            |m| m.done,
        );
        for (name, help, pick) in [
            (
                "runtime_jobs_retried_total",
                "Attempts that ended in a retry, by reason.",
                (|m: &QueueMetrics| &m.retried)
                    as fn(&QueueMetrics) -> &BTreeMap<&'static str, u64>,
            ),
            (
                "runtime_jobs_failed_total",
                "Attempts that failed their job for good, by reason.",
                |m: &QueueMetrics| &m.failed,
            ),
        ] {
            family(&mut out, name, "counter", help, |out| {
                for (q, m) in queues.iter() {
                    let q = Labels(q);
                    for (reason, n) in pick(m) {
                        let _ = writeln!(out, "{name}{{{q},reason=\"{reason}\"}} {n}");
                    }
                }
            });
        }
        per_queue(
            &mut out,
            "runtime_jobs_handed_back_total",
            "counter",
            "Jobs handed back at shutdown (not counted as attempts).",
            |m| m.handed_back,
        );
        per_queue(
            &mut out,
            "runtime_jobs_stale_total",
            "counter",
            "Attempts whose lease had been lost when they ended.",
            |m| m.stale,
        );
        family(
            &mut out,
            "runtime_job_duration_seconds",
            "histogram",
            "Run time of attempts, instantiation included.",
            |out| {
                for (q, m) in queues.iter() {
                    let h = &m.durations;
                    let buckets = BUCKETS.iter().copied().zip(h.counts.iter().copied());
                    histogram(
                        out,
                        "runtime_job_duration_seconds",
                        q,
                        buckets,
                        h.count,
                        h.sum,
                    );
                }
            },
        );
        per_queue(
            &mut out,
            "runtime_jobs_in_flight",
            "gauge",
            "Jobs running in this worker now.",
            |m| m.in_flight,
        );
        family(
            &mut out,
            "runtime_queue_jobs",
            "gauge",
            "Jobs in the queue by state (all workers), read when scraped.",
            |out| {
                for (q, c) in &readings.depth {
                    let q = Labels(q);
                    for state in [
                        JobState::Pending,
                        JobState::Scheduled,
                        JobState::Running,
                        JobState::Failed,
                    ] {
                        let _ = writeln!(
                            out,
                            "runtime_queue_jobs{{{q},state=\"{state}\"}} {}",
                            c.get(state)
                        );
                    }
                }
            },
        );
        family(
            &mut out,
            "runtime_http_requests_total",
            "counter",
            "Handlers' outbound HTTP requests, by how they ended.",
            |out| {
                for (q, r) in &readings.http {
                    let q = Labels(q);
                    for (outcome, n) in &r.outcomes {
                        let _ = writeln!(
                            out,
                            "runtime_http_requests_total{{{q},outcome=\"{outcome}\"}} {n}"
                        );
                    }
                }
            },
        );
        family(
            &mut out,
            "runtime_http_request_duration_seconds",
            "histogram",
            "Time from sending a handler's HTTP request to its response's headers.",
            |out| {
                for (q, r) in &readings.http {
                    let buckets = http_meter::BUCKETS
                        .iter()
                        .copied()
                        .zip(r.buckets.iter().copied());
                    let name = "runtime_http_request_duration_seconds";
                    histogram(out, name, q, buckets, r.count, r.sum);
                }
            },
        );
        let mut single = vec![
            (
                "runtime_backend_up",
                "gauge",
                "Whether the queue backend answered this scrape.",
                u64::from(readings.backend_up),
            ),
            (
                "runtime_sandbox_instances_total",
                "counter",
                "WebAssembly instances created, one per attempt.",
                readings.sandbox.instances_total,
            ),
            (
                "runtime_sandbox_instances_live",
                "gauge",
                "WebAssembly instances alive now.",
                readings.sandbox.instances_live,
            ),
            (
                "runtime_sandbox_memory_bytes",
                "gauge",
                "Linear memory held by live instances.",
                readings.sandbox.memory_bytes,
            ),
        ];
        if let Some(rss) = readings.rss_bytes {
            single.push((
                "process_resident_memory_bytes",
                "gauge",
                "Resident set size of the worker process.",
                rss,
            ));
        }
        for (name, kind, help, value) in single {
            family(&mut out, name, kind, help, |out| {
                let _ = writeln!(out, "{name} {value}");
            });
        }
        out
    }
}

/// One queue's samples of histogram `name`: its cumulative `buckets`
/// (upper bound, count), then +Inf, sum and count.
fn histogram(
    out: &mut String,
    name: &str,
    q: &QueueName,
    buckets: impl Iterator<Item = (f64, u64)>,
    count: u64,
    sum: f64,
) {
    let q = Labels(q);
    for (bound, n) in buckets {
        let _ = writeln!(out, "{name}_bucket{{{q},le=\"{bound}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "{name}_bucket{{{q},le=\"+Inf\"}} {count}\n{name}_sum{{{q}}} {sum}\n{name}_count{{{q}}} {count}"
    );
}

/// A queue's labels: its tenant and its full name.
struct Labels<'a>(&'a QueueName);

impl std::fmt::Display for Labels<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "tenant=\"{}\",queue=\"{}\"", self.0.tenant(), self.0)
    }
}

/// One metric family: its HELP and TYPE lines, then its samples.
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: impl FnOnce(&mut String)) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    samples(out);
}

/// What is read at scrape time rather than counted.
#[derive(Debug, Clone, Default)]
pub struct Readings {
    /// Each served queue's counts, if the backend answered.
    pub depth: Vec<(QueueName, StateCounts)>,
    /// Whether it did.
    pub backend_up: bool,
    /// The sandbox's instances and memory.
    pub sandbox: SandboxSnapshot,
    /// Handlers' HTTP requests, per queue.
    pub http: Vec<(QueueName, QueueRequests)>,
    /// This process's resident set size, where the OS tells.
    pub rss_bytes: Option<u64>,
}

/// This process's resident set size, from `/proc/self/status` (Linux).
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::RunReport;

    fn report(outcome: RunOutcome, ms: u64) -> RunReport {
        RunReport {
            outcome,
            log: String::new(),
            elapsed: Duration::from_millis(ms),
        }
    }

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn every_queue_series_carries_its_tenant() {
        let m = Metrics::default();
        for name in ["acme/resize", "resize"] {
            let meter = m.queue(&QueueName::parse(name).expect("valid"));
            meter.started();
            meter.ended();
            meter.finished(Some(&report(RunOutcome::Done, 3)), AttemptEnd::Done);
        }
        let text = m.render(&Readings::default());
        let at = |s: &str| value(&text, s);
        assert_eq!(
            at("runtime_jobs_done_total{tenant=\"acme\",queue=\"acme/resize\"}"),
            Some(1.0)
        );
        assert_eq!(
            at("runtime_jobs_done_total{tenant=\"default\",queue=\"resize\"}"),
            Some(1.0)
        );
        assert_eq!(
            at("runtime_job_duration_seconds_count{tenant=\"acme\",queue=\"acme/resize\"}"),
            Some(1.0)
        );
        // Every sample line of a queue names its tenant first.
        for line in text.lines().filter(|l| l.contains("queue=")) {
            assert!(line.contains("{tenant=\""), "{line}");
        }
    }

    #[test]
    fn counts_by_outcome_and_reason_with_cumulative_buckets() {
        let m = Metrics::default();
        let q = QueueName::new("q").expect("valid");
        let meter = m.queue(&q);
        for _ in 0..4 {
            meter.started();
        }
        // Three end; their ends are recorded after.
        for _ in 0..3 {
            meter.ended();
        }
        meter.finished(Some(&report(RunOutcome::Done, 3)), AttemptEnd::Done);
        let timeout = RunOutcome::Crashed {
            kind: crate::job::FailureKind::Timeout,
            reason: "timeout after 100ms".into(),
        };
        meter.finished(Some(&report(timeout, 100)), AttemptEnd::Retried);
        let fail = RunOutcome::Fail {
            reason: "no".into(),
        };
        meter.finished(Some(&report(fail, 2000)), AttemptEnd::Failed);
        assert_eq!(m.in_flight(), 1);
        let text = m.render(&Readings::default());
        let at = |s: &str| value(&text, s);
        assert_eq!(
            at("runtime_jobs_processed_total{tenant=\"default\",queue=\"q\"}"),
            Some(3.0)
        );
        assert_eq!(
            at("runtime_jobs_done_total{tenant=\"default\",queue=\"q\"}"),
            Some(1.0)
        );
        assert_eq!(
            at("runtime_jobs_retried_total{tenant=\"default\",queue=\"q\",reason=\"timeout\"}"),
            Some(1.0)
        );
        assert_eq!(
            at("runtime_jobs_failed_total{tenant=\"default\",queue=\"q\",reason=\"handler\"}"),
            Some(1.0)
        );
        assert_eq!(
            at("runtime_jobs_in_flight{tenant=\"default\",queue=\"q\"}"),
            Some(1.0)
        );
        // Buckets count everything at or below their bound.
        let bucket = |le: &str| {
            at(&format!(
                "runtime_job_duration_seconds_bucket{{tenant=\"default\",queue=\"q\",le=\"{le}\"}}"
            ))
        };
        assert_eq!(bucket("0.0025"), Some(0.0));
        assert_eq!(bucket("0.005"), Some(1.0));
        assert_eq!(bucket("0.1"), Some(2.0));
        assert_eq!(bucket("1"), Some(2.0));
        assert_eq!(bucket("5"), Some(3.0));
        assert_eq!(bucket("+Inf"), Some(3.0));
        assert_eq!(
            at("runtime_job_duration_seconds_count{tenant=\"default\",queue=\"q\"}"),
            Some(3.0)
        );
        let sum =
            at("runtime_job_duration_seconds_sum{tenant=\"default\",queue=\"q\"}").expect("sum");
        assert!((sum - 2.103).abs() < 1e-9, "{sum}");
        // Every family is announced once, before its samples.
        for name in ["runtime_jobs_done_total", "runtime_job_duration_seconds"] {
            assert_eq!(
                text.matches(&format!("# TYPE {name} ")).count(),
                1,
                "{text}"
            );
        }
    }

    #[test]
    fn http_requests_are_counted_by_outcome_with_a_duration_histogram() {
        let meter = crate::sandbox::outbound::HttpMeter::default();
        let q = QueueName::new("mail").expect("valid");
        meter.record(&q, "2xx", Some(Duration::from_millis(30)));
        meter.record(&q, "2xx", Some(Duration::from_millis(3)));
        meter.record(&q, "denied", None);
        let readings = Readings {
            http: meter.snapshot(),
            ..Readings::default()
        };
        let text = Metrics::default().render(&readings);
        let at = |s: &str| value(&text, s);
        assert_eq!(
            at("runtime_http_requests_total{tenant=\"default\",queue=\"mail\",outcome=\"2xx\"}"),
            Some(2.0)
        );
        assert_eq!(
            at("runtime_http_requests_total{tenant=\"default\",queue=\"mail\",outcome=\"denied\"}"),
            Some(1.0)
        );
        assert_eq!(
            at(
                "runtime_http_request_duration_seconds_bucket{tenant=\"default\",queue=\"mail\",le=\"0.005\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            at(
                "runtime_http_request_duration_seconds_bucket{tenant=\"default\",queue=\"mail\",le=\"0.05\"}"
            ),
            Some(2.0)
        );
        assert_eq!(
            at("runtime_http_request_duration_seconds_count{tenant=\"default\",queue=\"mail\"}"),
            Some(2.0),
            "denied requests are not timed"
        );
    }
}

//! Configuration as data: a TOML file (`runtime.toml`), validated at start
//! with errors that name the key, and overridable by flags and environment
//! variables (`RUNTIME_HANDLERS`, `RUNTIME_CACHE_DIR`, ...).
//!
//! ```toml
//! handlers = "handlers"          # where `<queue>_job.wasm` files live
//!
//! [defaults]                     # limits for every queue
//! timeout_ms = 30000
//! memory_mib = 64
//!
//! [queues.resize-image]          # one queue's overrides
//! module = "/opt/handlers/resizer.wasm"
//! timeout_ms = 120000
//! memory_mib = 256
//! concurrency = 4                # at most 4 of its jobs at once per worker
//! weight = 2                     # twice the share of a weight-1 queue
//! ```
//!
//! Unknown keys are errors, so a typo does not silently fall back to a
//! default. Per-queue sections are plain tables so that, later, they can sit
//! under a tenant.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::job::{MAX_DELAY, QueueName, TenantName, config_section};
use crate::queue::{DispatchQuota, Quotas, Rate, RunTimeBudget};
use crate::retry::Backoff;
use crate::sandbox::outbound::allow::RequestHost;
use crate::sandbox::outbound::{AllowList, Network};
use crate::sandbox::{Grants, Limits, Preopen, SandboxConfig};

/// Where handler modules are looked up when neither flag, environment nor
/// config says: `handlers` in the current directory.
pub const DEFAULT_HANDLERS_DIR: &str = "handlers";

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The queue server, e.g. `redis://127.0.0.1:6379`; unset means the
    /// embedded in-memory backend.
    pub backend: Option<String>,
    /// Prefix of every Redis key (default `runtime:`).
    pub prefix: Option<String>,
    /// Directory of handler modules (`<queue>_job.wasm`).
    pub handlers: Option<PathBuf>,
    /// Directory for compiled-module cache entries.
    pub cache_dir: Option<PathBuf>,
    /// Engine-wide settings.
    #[serde(default)]
    pub sandbox: SandboxSection,
    /// Settings for every queue.
    #[serde(default)]
    pub defaults: QueueSection,
    /// Per-queue overrides, by queue name.
    #[serde(default)]
    pub queues: BTreeMap<String, QueueSection>,
    /// Settings for every tenant.
    #[serde(default)]
    pub tenant_defaults: TenantSection,
    /// Per-tenant overrides, by tenant name.
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantSection>,
    /// `runtime serve`: the HTTP API and dashboard.
    #[serde(default)]
    pub serve: ServeSection,
}

/// Settings of `runtime serve`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeSection {
    /// Where it listens, `HOST:PORT` (default `127.0.0.1:8080`).
    pub listen: Option<String>,
    /// The admin token's SHA-256, in lowercase hex (`printf %s "$TOKEN" |
    /// sha256sum`): the token itself is never stored. With an admin token
    /// every request needs a token (the admin's, or a tenant's); without
    /// one the server takes requests without tokens, and so listens only
    /// on a loopback address.
    pub admin_token_sha256: Option<String>,
    /// Requests a second each tenant may make to the API of one server
    /// (bursts of twice that); unset: no limit. Dispatches are also held
    /// to the tenant's `dispatch_rate`, across the fleet.
    pub tenant_request_rate: Option<f64>,
}

impl ServeSection {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(hash) = &self.admin_token_sha256
            && (hash.len() != 64 || !hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        {
            return Err(ConfigError::Value {
                key: "serve.admin_token_sha256".into(),
                message: "not a SHA-256 in lowercase hex (64 of 0-9, a-f): give the output of `printf %s \"$TOKEN\" | sha256sum`, not the token".into(),
            });
        }
        if let Some(rate) = self.tenant_request_rate
            && !(rate.is_finite() && (0.001..=1e6).contains(&rate))
        {
            return Err(ConfigError::Value {
                key: "serve.tenant_request_rate".into(),
                message: format!(
                    "{rate} is not a rate: give requests a second, from 0.001 to 1000000"
                ),
            });
        }
        Ok(())
    }
}

/// Settings of a tenant (or, under `[tenant_defaults]`, of all tenants).
/// Every key is optional; unset keys inherit.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSection {
    /// This tenant's share of a worker serving several tenants, relative
    /// to theirs. Default 1.
    pub weight: Option<u32>,
    /// The part of a worker's slots this tenant gets first whenever it has
    /// work, 0 to 1. Default 0.
    pub min_share: Option<f64>,
    /// The most of a worker's slots this tenant may hold at once, 0 to 1.
    /// Default 1.
    pub max_share: Option<f64>,
    /// Jobs per second this tenant may dispatch, on average, counted
    /// over every process (the CLI, the library, handlers' follow-ups).
    /// Default: no limit.
    pub dispatch_rate: Option<f64>,
    /// Jobs it may dispatch at once: the token bucket's size. Default: the
    /// rate rounded up, at least 1.
    pub dispatch_burst: Option<u32>,
    /// Most jobs waiting (pending and scheduled) in its queues; a dispatch
    /// that would pass it is refused. Default: no limit.
    pub max_backlog: Option<u64>,
    /// Most of its jobs running at once over every worker of the fleet;
    /// past it, its jobs wait. Default: no limit.
    pub max_in_flight: Option<u64>,
    /// Seconds of run time its attempts may take in each period, summed
    /// over every worker; past it, its jobs wait for the next period.
    /// Default: no limit.
    pub cpu_budget_s: Option<f64>,
    /// The period of `cpu_budget_s`, seconds; periods start at multiples
    /// of it since the Unix epoch. Default 3600.
    pub cpu_period_s: Option<u64>,
    /// MiB its published modules (`runtime deploy`) may take together.
    /// Default: no limit.
    pub module_storage_mib: Option<f64>,
    /// The most this tenant's queues may be given. Default: no ceiling.
    pub ceilings: Option<Ceilings>,
}

/// The most a tenant's queues may be given (`[tenants.NAME.ceilings]`, or
/// `[tenant_defaults.ceilings]` for every tenant, key by key). A queue
/// section that sets more is a config error naming both keys; what a
/// queue inherits from `[defaults]` or the built-in defaults is lowered to
/// the ceiling (hosts outside it are dropped).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ceilings {
    /// Linear memory per instance, MiB.
    pub memory_mib: Option<u64>,
    /// Wall-clock time per attempt, ms.
    pub timeout_ms: Option<u64>,
    /// Fuel per attempt (a queue without a fuel budget gets this one).
    pub fuel: Option<u64>,
    /// Output kept per attempt, KiB.
    pub output_kib: Option<u64>,
    /// Follow-up dispatches per attempt.
    pub max_dispatches: Option<u32>,
    /// HTTP connect, first-byte and between-bytes timeout, ms.
    pub http_timeout_ms: Option<u64>,
    /// Largest HTTP response body, KiB.
    pub http_max_response_kib: Option<u64>,
    /// HTTP requests per attempt.
    pub http_max_requests: Option<u32>,
    /// Entries a queue's `allowed_outbound_hosts` must each fall within.
    pub allowed_outbound_hosts: Option<Vec<String>>,
}

impl Ceilings {
    /// The numeric ceilings by key, in the order of
    /// [`QueueSection::ceilinged`].
    fn numbers(&self) -> [(&'static str, Option<u64>); 8] {
        [
            ("memory_mib", self.memory_mib),
            ("timeout_ms", self.timeout_ms),
            ("fuel", self.fuel),
            ("output_kib", self.output_kib),
            ("max_dispatches", self.max_dispatches.map(u64::from)),
            ("http_timeout_ms", self.http_timeout_ms),
            ("http_max_response_kib", self.http_max_response_kib),
            ("http_max_requests", self.http_max_requests.map(u64::from)),
        ]
    }

    /// Whether this section sets `name`.
    fn sets(&self, name: &str) -> bool {
        name == "allowed_outbound_hosts" && self.allowed_outbound_hosts.is_some()
            || self
                .numbers()
                .iter()
                .any(|(n, v)| *n == name && v.is_some())
    }

    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        for (name, value) in self.numbers() {
            positive(key, name, value)?;
        }
        if let Some(hosts) = &self.allowed_outbound_hosts {
            AllowList::parse(hosts).map_err(|e| ConfigError::Value {
                key: format!("{key}.allowed_outbound_hosts"),
                message: e.to_string(),
            })?;
        }
        Ok(())
    }

    /// These ceilings over `base`, key by key.
    fn over(&self, base: &Ceilings) -> Ceilings {
        Ceilings {
            memory_mib: self.memory_mib.or(base.memory_mib),
            timeout_ms: self.timeout_ms.or(base.timeout_ms),
            fuel: self.fuel.or(base.fuel),
            output_kib: self.output_kib.or(base.output_kib),
            max_dispatches: self.max_dispatches.or(base.max_dispatches),
            http_timeout_ms: self.http_timeout_ms.or(base.http_timeout_ms),
            http_max_response_kib: self.http_max_response_kib.or(base.http_max_response_kib),
            http_max_requests: self.http_max_requests.or(base.http_max_requests),
            allowed_outbound_hosts: self
                .allowed_outbound_hosts
                .clone()
                .or_else(|| base.allowed_outbound_hosts.clone()),
        }
    }

    /// The hosts' entries, parsed (checked by `validate`).
    fn hosts(&self) -> Option<AllowList> {
        self.allowed_outbound_hosts
            .as_ref()
            .map(|h| AllowList::parse(h).unwrap_or_default())
    }

    /// Lowers `s` to these ceilings.
    fn hold(&self, s: &mut QueueSettings) {
        let l = &mut s.limits;
        if let Some(mib) = self.memory_mib {
            l.memory = l.memory.min(mib.saturating_mul(1 << 20));
        }
        if let Some(ms) = self.timeout_ms {
            l.timeout = l.timeout.min(Duration::from_millis(ms));
        }
        if let Some(fuel) = self.fuel {
            l.fuel = Some(l.fuel.unwrap_or(u64::MAX).min(fuel));
        }
        if let Some(kib) = self.output_kib {
            let bytes = usize::try_from(kib.saturating_mul(1024)).unwrap_or(usize::MAX);
            l.output = l.output.min(bytes);
        }
        if let Some(n) = self.max_dispatches {
            l.dispatches = l.dispatches.min(n);
        }
        let mut http = (*s.grants.http).clone();
        if let Some(ms) = self.http_timeout_ms {
            http.timeout = http.timeout.min(Duration::from_millis(ms));
        }
        if let Some(kib) = self.http_max_response_kib {
            http.max_response = http.max_response.min(kib.saturating_mul(1024));
        }
        if let Some(n) = self.http_max_requests {
            http.max_requests = http.max_requests.min(n);
        }
        if let Some(hosts) = self.hosts() {
            http.allow = http.allow.within(&hosts);
        }
        let mut grants = (*s.grants).clone();
        grants.http = Arc::new(http);
        s.grants = Arc::new(grants);
    }
}

/// One tenant's settings with every default applied.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TenantSettings {
    /// Its share of a worker when several tenants have work.
    pub weight: u32,
    /// The part of a worker's slots it gets first when it has work.
    pub min_share: f64,
    /// The most of a worker's slots it may hold.
    pub max_share: f64,
    /// Most of its jobs running at once over the whole fleet.
    pub max_in_flight: Option<u64>,
    /// Run time its attempts may take per period, ms.
    pub cpu_budget_ms: Option<u64>,
    /// That period, ms.
    pub cpu_period_ms: u64,
    /// Bytes its published modules may take together.
    pub module_storage_bytes: Option<u64>,
}

/// The period of a tenant's run-time budget unless set: an hour.
const CPU_PERIOD_MS: u64 = 3_600_000;

/// The longest period of a run-time budget: a year, in seconds.
const MAX_CPU_PERIOD_S: u64 = 366 * 24 * 3600;

/// The largest run-time budget, seconds: far beyond any fleet's year, and
/// its ms well within range.
const MAX_CPU_BUDGET_S: f64 = 1e12;

impl Default for TenantSettings {
    fn default() -> Self {
        TenantSettings {
            weight: 1,
            min_share: 0.0,
            max_share: 1.0,
            max_in_flight: None,
            cpu_budget_ms: None,
            cpu_period_ms: CPU_PERIOD_MS,
            module_storage_bytes: None,
        }
    }
}

impl TenantSettings {
    /// Its run-time budget, if it has one.
    pub fn run_time(&self) -> Option<RunTimeBudget> {
        Some(RunTimeBudget {
            budget_ms: self.cpu_budget_ms?,
            period_ms: self.cpu_period_ms,
        })
    }
}

impl TenantSection {
    /// Checks the section's own values, and its shares once applied over
    /// `base` (what it inherits): a `min_share` above an inherited
    /// `max_share` is as wrong as one above its own.
    fn validate(&self, key: &str, base: TenantSettings) -> Result<(), ConfigError> {
        positive(key, "weight", self.weight.map(u64::from))?;
        if let Some(ceilings) = &self.ceilings {
            ceilings.validate(&format!("{key}.ceilings"))?;
        }
        positive(key, "dispatch_burst", self.dispatch_burst.map(u64::from))?;
        positive(key, "max_backlog", self.max_backlog)?;
        positive(key, "max_in_flight", self.max_in_flight)?;
        positive(key, "cpu_period_s", self.cpu_period_s)?;
        if let Some(mib) = self.module_storage_mib
            && !(mib > 0.0 && mib <= 1e6)
        {
            return Err(ConfigError::Value {
                key: format!("{key}.module_storage_mib"),
                message: format!("{mib} is not a size: give MiB, more than 0 and at most 1000000"),
            });
        }
        if let Some(s) = self.cpu_budget_s
            && !(0.001..=MAX_CPU_BUDGET_S).contains(&s)
        {
            return Err(ConfigError::Value {
                key: format!("{key}.cpu_budget_s"),
                message: format!(
                    "{s} is not a budget: give seconds of run time per period, from 0.001 to {MAX_CPU_BUDGET_S}"
                ),
            });
        }
        if let Some(s) = self.cpu_period_s
            && s > MAX_CPU_PERIOD_S
        {
            return Err(ConfigError::Value {
                key: format!("{key}.cpu_period_s"),
                message: format!("{s} is longer than a year ({MAX_CPU_PERIOD_S} s)"),
            });
        }
        if let Some(rate) = self.dispatch_rate
            && !(rate.is_finite() && rate > 0.0)
        {
            return Err(ConfigError::Value {
                key: format!("{key}.dispatch_rate"),
                message: format!("{rate} is not a rate: give jobs per second, more than 0"),
            });
        }
        for (name, value) in [("min_share", self.min_share), ("max_share", self.max_share)] {
            if let Some(v) = value
                && !(0.0..=1.0).contains(&v)
            {
                return Err(ConfigError::Value {
                    key: format!("{key}.{name}"),
                    message: format!("{v} is not a part of a worker: give a number from 0 to 1"),
                });
            }
        }
        let TenantSettings {
            min_share: min,
            max_share: max,
            ..
        } = self.apply(base);
        if min > max {
            // Named by the key this section sets; the other one it inherits.
            let (name, message) = match (self.min_share, self.max_share) {
                (Some(_), Some(_)) => {
                    ("min_share", format!("{min} is more than max_share ({max})"))
                }
                (Some(_), None) => (
                    "min_share",
                    format!("{min} is more than the max_share it inherits ({max})"),
                ),
                _ => (
                    "max_share",
                    format!("{max} is less than the min_share it inherits ({min})"),
                ),
            };
            return Err(ConfigError::Value {
                key: format!("{key}.{name}"),
                message,
            });
        }
        Ok(())
    }

    /// This section's dispatch quotas, over `base`'s key by key.
    fn dispatch_quota(&self, base: Option<&TenantSection>) -> DispatchQuota {
        let per_second = self.dispatch_rate.or(base.and_then(|b| b.dispatch_rate));
        let burst = self.dispatch_burst.or(base.and_then(|b| b.dispatch_burst));
        DispatchQuota {
            rate: per_second.map(|per_second| Rate {
                per_second,
                burst: burst.unwrap_or_else(|| default_burst(per_second)),
            }),
            max_backlog: self.max_backlog.or(base.and_then(|b| b.max_backlog)),
        }
    }

    fn apply(&self, base: TenantSettings) -> TenantSettings {
        TenantSettings {
            weight: self.weight.unwrap_or(base.weight),
            min_share: self.min_share.unwrap_or(base.min_share),
            max_share: self.max_share.unwrap_or(base.max_share),
            max_in_flight: self.max_in_flight.or(base.max_in_flight),
            // Validated: whole ms of a budget within a year's worth.
            cpu_budget_ms: self
                .cpu_budget_s
                .map(|s| (s * 1000.0).round() as u64)
                .or(base.cpu_budget_ms),
            cpu_period_ms: self
                .cpu_period_s
                .map_or(base.cpu_period_ms, |s| s.saturating_mul(1000)),
            // Validated: within a million MiB.
            module_storage_bytes: self
                .module_storage_mib
                .map(|mib| (mib * 1024.0 * 1024.0).round() as u64)
                .or(base.module_storage_bytes),
        }
    }
}

/// Engine-wide settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxSection {
    /// Instances alive at once; at least the worker concurrency. Default 256.
    pub max_instances: Option<u32>,
    /// WebAssembly stack per call, KiB. Default 512.
    pub max_wasm_stack_kib: Option<usize>,
    /// Linear memory kept resident per pool slot between jobs, KiB.
    /// Default 1024.
    pub keep_resident_kib: Option<usize>,
    /// Largest handler module accepted, MiB. Default 32.
    pub max_module_mib: Option<u64>,
    /// Deepest nesting of components in a module. Default 16.
    pub max_component_depth: Option<u32>,
    /// Component instances one instance of a module creates, after
    /// flattening. Default 1000.
    pub max_component_instances: Option<u32>,
    /// Largest function body in a module, KiB. Default 1024.
    pub max_function_kib: Option<u64>,
    /// Longest one compile of a module may take, ms. Default 60000.
    pub compile_timeout_ms: Option<u64>,
    /// Most memory one compile of a module may take, MiB. Default 1024.
    pub compile_memory_mib: Option<u64>,
    /// The program that compiles modules in a child process (see
    /// [`SandboxConfig::compiler`]); not read from the file: the `runtime`
    /// binary sets it to itself.
    #[serde(skip)]
    pub compiler: Option<PathBuf>,
    /// Networks handlers' outbound HTTP may reach although they are
    /// loopback, private, link-local or otherwise internal, e.g.
    /// `["10.1.2.3/32"]`. Default: none.
    pub allow_private_networks: Option<Vec<String>>,
    /// Names the host resolves to these addresses instead of asking DNS,
    /// like a hosts file: `resolve = { "mailer.internal" = ["10.1.2.3"] }`.
    /// The addresses still pass the private-network check.
    pub resolve: Option<BTreeMap<String, Vec<IpAddr>>>,
}

impl SandboxSection {
    fn validate(&self) -> Result<(), ConfigError> {
        let keys = [
            ("max_module_mib", self.max_module_mib),
            (
                "max_component_depth",
                self.max_component_depth.map(u64::from),
            ),
            (
                "max_component_instances",
                self.max_component_instances.map(u64::from),
            ),
            ("max_function_kib", self.max_function_kib),
            ("compile_timeout_ms", self.compile_timeout_ms),
            ("compile_memory_mib", self.compile_memory_mib),
        ];
        for (name, value) in keys {
            if value == Some(0) {
                return Err(ConfigError::Value {
                    key: format!("sandbox.{name}"),
                    message: "must be greater than 0".into(),
                });
            }
        }
        for (i, network) in self.allow_private_networks.iter().flatten().enumerate() {
            network.parse::<Network>().map_err(|e| ConfigError::Value {
                key: format!("sandbox.allow_private_networks[{i}]"),
                message: e.to_string(),
            })?;
        }
        for name in self.resolve.iter().flatten().map(|(name, _)| name) {
            // Written as the sender looks a request's host up, or never
            // found: an address or a trailing dot would be dead entries.
            let looked_up = matches!(
                RequestHost::parse(name),
                Some(RequestHost::Name(normal)) if normal == *name
            );
            if !looked_up {
                return Err(ConfigError::Value {
                    key: format!("sandbox.resolve.{name}"),
                    message: "write the host name in lower case, as in allowed_outbound_hosts (letters, digits, '-' and '.'; a name, not an address; no trailing dot)".into(),
                });
            }
        }
        Ok(())
    }

    /// `allow_private_networks`, parsed (checked by `validate`).
    fn private_networks(&self) -> Vec<Network> {
        self.allow_private_networks
            .iter()
            .flatten()
            .filter_map(|n| n.parse().ok())
            .collect()
    }
}

/// Settings of a queue (or, under `[defaults]`, of all queues). Every key is
/// optional; unset keys inherit.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSection {
    /// The handler module, instead of the naming rule (queues only).
    pub module: Option<PathBuf>,
    /// Wall-clock time per attempt, ms.
    pub timeout_ms: Option<u64>,
    /// Linear memory per instance, MiB.
    pub memory_mib: Option<u64>,
    /// Fuel budget per attempt.
    pub fuel: Option<u64>,
    /// Output (log, stdout, stderr) kept per attempt, KiB.
    pub output_kib: Option<u64>,
    /// Follow-up dispatches per attempt.
    pub max_dispatches: Option<u32>,
    /// Deepest a follow-up this queue's handler dispatches may be in its
    /// job tree. Default 32.
    pub max_tree_depth: Option<u32>,
    /// Most jobs a job tree may hold for this queue's handler to add one.
    /// Default 1000.
    pub max_tree_jobs: Option<u32>,
    /// First retry's nominal delay, ms.
    pub backoff_base_ms: Option<u64>,
    /// Longest retry delay, ms.
    pub backoff_cap_ms: Option<u64>,
    /// Most of this queue's jobs one worker runs at once.
    pub concurrency: Option<usize>,
    /// This queue's share of a worker's capacity, relative to the other
    /// queues it serves. Default 1.
    pub weight: Option<u32>,
    /// Core WebAssembly instances one instance of the handler may create.
    pub max_core_instances: Option<u32>,
    /// Linear memories one instance of the handler may have.
    pub max_memories: Option<u32>,
    /// Tables one instance of the handler may have.
    pub max_tables: Option<u32>,
    /// Where the handler's HTTP requests may go: `scheme://host[:port]`
    /// entries, `*.` wildcards for subdomains. Default: nowhere.
    pub allowed_outbound_hosts: Option<Vec<String>>,
    /// Connect, first-byte and between-bytes timeout of its HTTP requests,
    /// ms. Default 10000.
    pub http_timeout_ms: Option<u64>,
    /// Largest HTTP response body, KiB. Default 1024.
    pub http_max_response_kib: Option<u64>,
    /// HTTP requests per attempt. Default 20.
    pub http_max_requests: Option<u32>,
    /// Environment variables handed to the handler: a literal, or
    /// `{ from_env = "NAME" }` taken from the worker's own environment.
    pub env: Option<BTreeMap<String, EnvValue>>,
    /// Directories the handler may read: guest path = host directory.
    pub files: Option<BTreeMap<String, PathBuf>>,
}

/// A value of `[queues.NAME.env]`. `Debug` shows where a value comes from,
/// never the value itself.
#[derive(Clone, Deserialize)]
#[serde(untagged)]
pub enum EnvValue {
    /// Given in the config itself.
    Literal(String),
    /// Read from the worker's environment when the queue's settings are
    /// resolved: the way to hand a secret over without writing it in the
    /// file.
    FromEnv(FromEnv),
}

impl std::fmt::Debug for EnvValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EnvValue::Literal(_) => f.write_str("Literal(..)"),
            EnvValue::FromEnv(from) => write!(f, "FromEnv({:?})", from.from_env),
        }
    }
}

/// `{ from_env = "NAME" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FromEnv {
    /// The worker's environment variable.
    pub from_env: String,
}

/// One queue's settings with every default applied.
#[derive(Debug, Clone)]
pub struct QueueSettings {
    /// Module path from config, if mapped.
    pub module: Option<PathBuf>,
    /// Sandbox limits.
    pub limits: Limits,
    /// Retry delays.
    pub backoff: Backoff,
    /// Most jobs of the queue in flight in one worker; `None`: no cap
    /// beyond the worker's concurrency.
    pub concurrency: Option<usize>,
    /// Share of a worker's capacity when several queues have work.
    pub weight: u32,
    /// What the queue's handler may reach: HTTP hosts, environment,
    /// directories.
    pub grants: Arc<Grants>,
}

/// A configuration problem, naming the key or file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {message}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The file is not valid TOML or has unknown keys or wrong types.
    #[error("invalid config file {}: {message}", .path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, naming the key and line.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid config: {key}: {message}")]
    Value {
        /// The dotted key, e.g. `queues.hello.timeout_ms`.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// A TOML error as its line, column and message, without the parser's
/// quote of the line: that line may be `backend = "redis://:password@..."`.
fn parse_message(text: &str, e: &toml::de::Error) -> String {
    let Some(start) = e.span().map(|span| span.start) else {
        return e.message().to_string();
    };
    let before = text.get(..start).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    format!("line {line}, column {column}: {}", e.message())
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<text>"),
            message: parse_message(text, &e),
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.defaults.module.is_some() {
            return Err(ConfigError::Value {
                key: "defaults.module".into(),
                message: "a module belongs to one queue: set it under [queues.<name>]".into(),
            });
        }
        self.sandbox.validate()?;
        self.serve.validate()?;
        self.defaults.validate("defaults")?;
        for (name, section) in &self.queues {
            let queue = QueueName::parse(name).map_err(|e| ConfigError::Value {
                key: config_section(name),
                message: e.to_string(),
            })?;
            if queue.as_str() != name {
                return Err(ConfigError::Value {
                    key: config_section(name),
                    message: format!(
                        "the default tenant's queues are written without it: use [{}]",
                        queue.config_section()
                    ),
                });
            }
            section.validate(&config_section(name))?;
        }
        self.tenant_defaults
            .validate("tenant_defaults", TenantSettings::default())?;
        let inherited = self.tenant_defaults.apply(TenantSettings::default());
        for (name, section) in &self.tenants {
            let key = tenant_section(name);
            TenantName::new(name.as_str()).map_err(|e| ConfigError::Value {
                key: key.clone(),
                message: e.to_string(),
            })?;
            section.validate(&key, inherited)?;
        }
        let sections = std::iter::once(("tenant_defaults".to_string(), &self.tenant_defaults))
            .chain(self.tenants.iter().map(|(n, s)| (tenant_section(n), s)));
        for (key, section) in sections {
            let base = (key != "tenant_defaults").then_some(&self.tenant_defaults);
            if section.dispatch_burst.is_some() && section.dispatch_quota(base).rate.is_none() {
                return Err(ConfigError::Value {
                    key: format!("{key}.dispatch_burst"),
                    message:
                        "a burst without a dispatch_rate limits nothing: set dispatch_rate too"
                            .into(),
                });
            }
        }
        for (name, section) in &self.queues {
            if let Ok(queue) = QueueName::parse(name) {
                self.check_ceilings(&queue, section)?;
            }
        }
        Ok(())
    }

    /// Every tenant's dispatch quotas (see [`crate::queue::quota`]).
    pub fn quotas(&self) -> Quotas {
        let defaults = self.tenant_defaults.dispatch_quota(None);
        let tenants = self
            .tenants
            .iter()
            .filter_map(|(name, section)| {
                let name = TenantName::new(name.as_str()).ok()?;
                Some((name, section.dispatch_quota(Some(&self.tenant_defaults))))
            })
            .collect();
        Quotas { defaults, tenants }
    }

    /// `tenant`'s ceilings: its own over `[tenant_defaults.ceilings]`.
    fn ceilings(&self, tenant: &TenantName) -> Ceilings {
        let base = self.tenant_defaults.ceilings.clone().unwrap_or_default();
        match self.own_ceilings(tenant) {
            Some(own) => own.over(&base),
            None => base,
        }
    }

    fn own_ceilings(&self, tenant: &TenantName) -> Option<&Ceilings> {
        self.tenants.get(tenant.as_str())?.ceilings.as_ref()
    }

    /// Refuses a queue section that sets more than its tenant's ceiling,
    /// naming the queue's key and the ceiling's.
    fn check_ceilings(&self, queue: &QueueName, section: &QueueSection) -> Result<(), ConfigError> {
        let tenant = queue.tenant();
        let ceilings = self.ceilings(&tenant);
        let ceiling_key = |name: &str| match self.own_ceilings(&tenant) {
            Some(own) if own.sets(name) => {
                format!("{}.ceilings.{name}", tenant_section(tenant.as_str()))
            }
            _ => format!("tenant_defaults.ceilings.{name}"),
        };
        let key = |name: &str| format!("{}.{name}", queue.config_section());
        for ((name, value), (_, ceiling)) in section.ceilinged().into_iter().zip(ceilings.numbers())
        {
            if let (Some(value), Some(ceiling)) = (value, ceiling)
                && value > ceiling
            {
                return Err(ConfigError::Value {
                    key: key(name),
                    message: format!(
                        "{value} is above tenant {tenant}'s ceiling of {ceiling} ({})",
                        ceiling_key(name)
                    ),
                });
            }
        }
        if let (Some(hosts), Some(ceiling)) = (&section.allowed_outbound_hosts, ceilings.hosts()) {
            let beyond = AllowList::parse(hosts).unwrap_or_default().beyond(&ceiling);
            if let Some(first) = beyond.first() {
                return Err(ConfigError::Value {
                    key: key("allowed_outbound_hosts"),
                    message: format!(
                        "{first} is outside tenant {tenant}'s ceiling ({} allows {})",
                        ceiling_key("allowed_outbound_hosts"),
                        ceilings
                            .allowed_outbound_hosts
                            .unwrap_or_default()
                            .join(", ")
                    ),
                });
            }
        }
        Ok(())
    }

    /// The settings of `tenant`: its section over `[tenant_defaults]` over
    /// the built-in defaults.
    pub fn tenant(&self, tenant: &TenantName) -> TenantSettings {
        let with_defaults = self.tenant_defaults.apply(TenantSettings::default());
        match self.tenants.get(tenant.as_str()) {
            Some(section) => section.apply(with_defaults),
            None => with_defaults,
        }
    }

    /// The settings of `queue`: its section over `[defaults]` over the
    /// built-in defaults.
    pub fn queue(&self, queue: &QueueName) -> QueueSettings {
        let with_defaults = self.default_queue();
        let mut settings = match self.queues.get(queue.as_str()) {
            Some(section) => section.apply(with_defaults, &self.sandbox),
            None => with_defaults,
        };
        self.ceilings(&queue.tenant()).hold(&mut settings);
        settings
    }

    /// The settings of a queue without a section of its own: `[defaults]`
    /// over the built-in defaults.
    pub fn default_queue(&self) -> QueueSettings {
        let base = QueueSettings {
            module: None,
            limits: Limits::default(),
            backoff: Backoff::default(),
            concurrency: None,
            weight: 1,
            grants: Arc::default(),
        };
        self.defaults.apply(base, &self.sandbox)
    }

    /// The first `{ from_env = "NAME" }` value whose variable the process's
    /// environment lacks, as an error naming both: a command that runs
    /// handlers calls this before it starts, so a worker never runs a
    /// handler without the secret it was configured with.
    pub fn missing_env(&self) -> Result<(), ConfigError> {
        let sections = std::iter::once(("defaults".to_string(), &self.defaults)).chain(
            self.queues
                .iter()
                .map(|(name, section)| (config_section(name), section)),
        );
        for (key, section) in sections {
            for (name, value) in section.env.iter().flatten() {
                if let EnvValue::FromEnv(from) = value
                    && std::env::var_os(&from.from_env).is_none()
                {
                    return Err(ConfigError::Value {
                        key: format!("{key}.env.{name}"),
                        message: format!(
                            "the environment variable {} is not set: set it for this command (the value is read from there)",
                            from.from_env
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// Engine settings that fit every configured queue.
    pub fn sandbox(&self) -> SandboxConfig {
        let defaults = SandboxConfig::default();
        let sections = || std::iter::once(&self.defaults).chain(self.queues.values());
        let max_memory = sections()
            .filter_map(|s| s.memory_mib)
            .map(|mib| mib.saturating_mul(1 << 20))
            .fold(Limits::default().memory, u64::max);
        let built_in = Limits::default();
        let largest = |pick: fn(&QueueSection) -> Option<u32>, default: u32| {
            sections().filter_map(pick).fold(default, u32::max)
        };
        SandboxConfig {
            max_instances: self.sandbox.max_instances.unwrap_or(defaults.max_instances),
            max_memory,
            max_core_instances: largest(|s| s.max_core_instances, built_in.core_instances),
            max_memories: largest(|s| s.max_memories, built_in.memories),
            max_tables: largest(|s| s.max_tables, built_in.tables),
            keep_resident: self
                .sandbox
                .keep_resident_kib
                .map_or(defaults.keep_resident, |k| k.saturating_mul(1024)),
            max_wasm_stack: self
                .sandbox
                .max_wasm_stack_kib
                .map_or(defaults.max_wasm_stack, |k| k.saturating_mul(1024)),
            // Metered when any queue or tenant ceiling sets a budget.
            fuel: sections().any(|s| s.fuel.is_some())
                || std::iter::once(&self.tenant_defaults)
                    .chain(self.tenants.values())
                    .any(|t| t.ceilings.as_ref().is_some_and(|c| c.fuel.is_some())),
            cache_dir: self.cache_dir.clone(),
            max_module_size: self
                .sandbox
                .max_module_mib
                .map_or(defaults.max_module_size, |m| m.saturating_mul(1 << 20)),
            max_component_depth: self
                .sandbox
                .max_component_depth
                .unwrap_or(defaults.max_component_depth),
            max_component_instances: self
                .sandbox
                .max_component_instances
                .unwrap_or(defaults.max_component_instances),
            max_function_size: self
                .sandbox
                .max_function_kib
                .map_or(defaults.max_function_size, |k| k.saturating_mul(1024)),
            compile_timeout: self
                .sandbox
                .compile_timeout_ms
                .map_or(defaults.compile_timeout, Duration::from_millis),
            compile_memory: self
                .sandbox
                .compile_memory_mib
                .map_or(defaults.compile_memory, |m| m.saturating_mul(1 << 20)),
            compiler: self.sandbox.compiler.clone(),
        }
    }
}

/// A dispatch bucket's size when not given: the rate rounded up, at least 1.
fn default_burst(per_second: f64) -> u32 {
    // A float-to-int `as` saturates: any rate gives a size.
    (per_second.ceil() as u32).max(1)
}

/// A tenant's section key: `tenants.acme`.
fn tenant_section(name: &str) -> String {
    format!("tenants.{name}")
}

/// `Err` naming `section.name` if `value` is 0.
fn positive(section: &str, name: &str, value: Option<u64>) -> Result<(), ConfigError> {
    match value {
        Some(0) => Err(ConfigError::Value {
            key: format!("{section}.{name}"),
            message: "must be greater than 0".into(),
        }),
        _ => Ok(()),
    }
}

impl QueueSection {
    /// The keys a tenant's ceilings bound, in the order of
    /// [`Ceilings::numbers`].
    fn ceilinged(&self) -> [(&'static str, Option<u64>); 8] {
        [
            ("memory_mib", self.memory_mib),
            ("timeout_ms", self.timeout_ms),
            ("fuel", self.fuel),
            ("output_kib", self.output_kib),
            ("max_dispatches", self.max_dispatches.map(u64::from)),
            ("http_timeout_ms", self.http_timeout_ms),
            ("http_max_response_kib", self.http_max_response_kib),
            ("http_max_requests", self.http_max_requests.map(u64::from)),
        ]
    }

    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let positive = |name: &str, value: Option<u64>| positive(key, name, value);
        positive("timeout_ms", self.timeout_ms)?;
        positive("memory_mib", self.memory_mib)?;
        positive("fuel", self.fuel)?;
        positive("output_kib", self.output_kib)?;
        positive(
            "concurrency",
            self.concurrency
                .map(|n| u64::try_from(n).unwrap_or(u64::MAX)),
        )?;
        positive("weight", self.weight.map(u64::from))?;
        positive("max_core_instances", self.max_core_instances.map(u64::from))?;
        positive("max_memories", self.max_memories.map(u64::from))?;
        positive("max_tables", self.max_tables.map(u64::from))?;
        positive("max_tree_depth", self.max_tree_depth.map(u64::from))?;
        positive("max_tree_jobs", self.max_tree_jobs.map(u64::from))?;
        self.validate_grants(key)?;
        let longest = u64::try_from(MAX_DELAY.as_millis()).unwrap_or(u64::MAX);
        if let Some(cap) = self.backoff_cap_ms
            && cap > longest
        {
            return Err(ConfigError::Value {
                key: format!("{key}.backoff_cap_ms"),
                message: format!(
                    "{cap} is more than a year ({longest} ms), the longest a job may wait"
                ),
            });
        }
        if let (Some(base), Some(cap)) = (self.backoff_base_ms, self.backoff_cap_ms)
            && base > cap
        {
            return Err(ConfigError::Value {
                key: format!("{key}.backoff_base_ms"),
                message: format!("{base} is more than backoff_cap_ms ({cap})"),
            });
        }
        Ok(())
    }

    /// The grants of a queue with this section over `inherited`: each key
    /// set here replaces the inherited one whole (an `env` table here is
    /// the queue's whole environment).
    fn grants(&self, inherited: &Grants, sandbox: &SandboxSection) -> Grants {
        let mut http = (*inherited.http).clone();
        if let Some(hosts) = &self.allowed_outbound_hosts {
            // Checked by `validate`; were it not, nothing would be allowed.
            http.allow = AllowList::parse(hosts).unwrap_or_default();
        }
        http.private = sandbox.private_networks().into();
        http.resolve = Arc::new(sandbox.resolve.clone().unwrap_or_default());
        if let Some(ms) = self.http_timeout_ms {
            http.timeout = Duration::from_millis(ms);
        }
        if let Some(kib) = self.http_max_response_kib {
            http.max_response = kib.saturating_mul(1024);
        }
        if let Some(n) = self.http_max_requests {
            http.max_requests = n;
        }
        let env = match &self.env {
            Some(env) => env
                .iter()
                .filter_map(|(name, value)| {
                    let value = match value {
                        EnvValue::Literal(v) => v.clone(),
                        // Missing: the guest finds the variable unset; a
                        // command that runs handlers refuses to start first
                        // (see `Config::missing_env`).
                        EnvValue::FromEnv(from) => std::env::var(&from.from_env).ok()?,
                    };
                    Some((name.clone(), value))
                })
                .collect(),
            None => inherited.env.clone(),
        };
        let files = match &self.files {
            Some(files) => files
                .iter()
                .map(|(guest, host)| Preopen {
                    guest: guest.clone(),
                    host: host.clone(),
                })
                .collect(),
            None => inherited.files.clone(),
        };
        Grants {
            http: Arc::new(http),
            env,
            files,
        }
    }

    /// Checks the grant keys of this section (`key` is its dotted name).
    fn validate_grants(&self, key: &str) -> Result<(), ConfigError> {
        if let Some(hosts) = &self.allowed_outbound_hosts {
            AllowList::parse(hosts).map_err(|e| ConfigError::Value {
                key: format!("{key}.allowed_outbound_hosts"),
                message: e.to_string(),
            })?;
        }
        let positive = |name: &str, value: Option<u64>| positive(key, name, value);
        positive("http_timeout_ms", self.http_timeout_ms)?;
        positive("http_max_response_kib", self.http_max_response_kib)?;
        for (name, value) in self.env.iter().flatten() {
            let bad = |message: String| ConfigError::Value {
                key: format!("{key}.env.{name}"),
                message,
            };
            if name.is_empty() || name.contains(['=', '\0']) {
                return Err(bad(
                    "an environment variable's name must be non-empty, without '=' or NUL".into(),
                ));
            }
            match value {
                EnvValue::Literal(v) if v.contains('\0') => {
                    return Err(bad("the value contains a NUL character".into()));
                }
                EnvValue::FromEnv(from)
                    if from.from_env.is_empty() || from.from_env.contains(['=', '\0']) =>
                {
                    return Err(bad(format!(
                        "from_env {:?} is not an environment variable's name",
                        from.from_env
                    )));
                }
                _ => {}
            }
        }
        for (guest, host) in self.files.iter().flatten() {
            let bad = |message: String| ConfigError::Value {
                key: format!("{key}.files.{guest}"),
                message,
            };
            if !guest.starts_with('/') || guest.split('/').any(|part| part == "..") {
                return Err(bad(
                    "the path the handler sees must be absolute, without '..', e.g. \"/templates\""
                        .into(),
                ));
            }
            if !host.is_dir() {
                return Err(bad(format!(
                    "{} is not a directory (paths are relative to the directory the command runs in)",
                    host.display()
                )));
            }
        }
        Ok(())
    }

    fn apply(&self, mut s: QueueSettings, sandbox: &SandboxSection) -> QueueSettings {
        s.grants = Arc::new(self.grants(&s.grants, sandbox));
        if let Some(module) = &self.module {
            s.module = Some(module.clone());
        }
        if let Some(ms) = self.timeout_ms {
            s.limits.timeout = Duration::from_millis(ms);
        }
        if let Some(mib) = self.memory_mib {
            s.limits.memory = mib.saturating_mul(1 << 20);
        }
        if let Some(fuel) = self.fuel {
            s.limits.fuel = Some(fuel);
        }
        if let Some(kib) = self.output_kib {
            s.limits.output = usize::try_from(kib.saturating_mul(1024)).unwrap_or(usize::MAX);
        }
        if let Some(n) = self.max_dispatches {
            s.limits.dispatches = n;
        }
        if let Some(n) = self.max_tree_depth {
            s.limits.tree_depth = n;
        }
        if let Some(n) = self.max_tree_jobs {
            s.limits.tree_jobs = n;
        }
        if let Some(ms) = self.backoff_base_ms {
            s.backoff.base = Duration::from_millis(ms);
        }
        if let Some(ms) = self.backoff_cap_ms {
            s.backoff.cap = Duration::from_millis(ms);
        }
        if let Some(n) = self.concurrency {
            s.concurrency = Some(n);
        }
        if let Some(w) = self.weight {
            s.weight = w;
        }
        if let Some(n) = self.max_core_instances {
            s.limits.core_instances = n;
        }
        if let Some(n) = self.max_memories {
            s.limits.memories = n;
        }
        if let Some(n) = self.max_tables {
            s.limits.tables = n;
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(name: &str) -> QueueName {
        QueueName::new(name).expect("valid")
    }

    fn refused(text: &str) -> String {
        Config::parse(text)
            .expect_err("an invalid config")
            .to_string()
    }

    #[test]
    fn tenant_settings_come_from_their_section_over_the_defaults() {
        let config = Config::parse(
            "[tenant_defaults]\nmax_share = 0.5\ncpu_period_s = 60\n[tenants.acme]\nweight = 3\nmin_share = 0.25\nmax_in_flight = 7\ncpu_budget_s = 1.5\nmodule_storage_mib = 0.5\n",
        )
        .expect("valid");
        let acme = TenantName::new("acme").expect("tenant");
        let beta = TenantName::new("beta").expect("tenant");
        assert_eq!(
            config.tenant(&acme),
            TenantSettings {
                weight: 3,
                min_share: 0.25,
                max_share: 0.5,
                max_in_flight: Some(7),
                cpu_budget_ms: Some(1500),
                cpu_period_ms: 60_000,
                module_storage_bytes: Some(512 * 1024),
            }
        );
        assert_eq!(
            config.tenant(&acme).run_time(),
            Some(RunTimeBudget {
                budget_ms: 1500,
                period_ms: 60_000
            })
        );
        assert_eq!(config.tenant(&beta).run_time(), None);
        assert_eq!(
            config.tenant(&beta),
            TenantSettings {
                max_share: 0.5,
                cpu_period_ms: 60_000,
                ..TenantSettings::default()
            }
        );
    }

    #[test]
    fn tenant_sections_are_checked_with_what_they_inherit() {
        assert_eq!(
            refused("[tenants.acme]\nmin_share = 1.5\n"),
            "invalid config: tenants.acme.min_share: 1.5 is not a part of a worker: give a number from 0 to 1"
        );
        assert_eq!(
            refused("[tenants.acme]\nweight = 0\n"),
            "invalid config: tenants.acme.weight: must be greater than 0"
        );
        assert_eq!(
            refused("[tenants.acme]\nmin_share = 0.6\nmax_share = 0.5\n"),
            "invalid config: tenants.acme.min_share: 0.6 is more than max_share (0.5)"
        );
        assert_eq!(
            refused("[tenant_defaults]\nmax_share = 0.5\n[tenants.acme]\nmin_share = 0.6\n"),
            "invalid config: tenants.acme.min_share: 0.6 is more than the max_share it inherits (0.5)"
        );
        assert_eq!(
            refused("[tenant_defaults]\nmin_share = 0.6\n[tenants.acme]\nmax_share = 0.5\n"),
            "invalid config: tenants.acme.max_share: 0.5 is less than the min_share it inherits (0.6)"
        );
        assert_eq!(
            refused("[tenants.acme]\ncpu_budget_s = -1\n"),
            "invalid config: tenants.acme.cpu_budget_s: -1 is not a budget: give seconds of run time per period, from 0.001 to 1000000000000"
        );
        assert_eq!(
            refused("[tenant_defaults]\ncpu_period_s = 0\n"),
            "invalid config: tenant_defaults.cpu_period_s: must be greater than 0"
        );
        assert_eq!(
            refused("[tenants.acme]\nmodule_storage_mib = 0\n"),
            "invalid config: tenants.acme.module_storage_mib: 0 is not a size: give MiB, more than 0 and at most 1000000"
        );
        assert!(refused("[tenants.Acme]\n").starts_with("invalid config: tenants.Acme: "));
        assert!(refused("[tenants.acme]\nshare = 1\n").contains("unknown field `share`"));
    }

    #[test]
    fn queue_sections_override_defaults_which_override_built_ins() {
        let config = Config::parse(
            r#"
            [defaults]
            timeout_ms = 5000
            [queues.big]
            memory_mib = 256
            module = "x/big.wasm"
            "#,
        )
        .expect("valid config");
        let big = config.queue(&q("big"));
        assert_eq!(big.limits.timeout, Duration::from_secs(5));
        assert_eq!(big.limits.memory, 256 << 20);
        assert_eq!(big.module, Some(PathBuf::from("x/big.wasm")));
        let other = config.queue(&q("other"));
        assert_eq!(other.limits.memory, 64 << 20);
        assert_eq!(other.module, None);
        assert_eq!(
            config.sandbox().max_memory,
            256 << 20,
            "pool fits the biggest"
        );
        assert!(!config.sandbox().fuel);
    }

    #[test]
    fn a_queue_setting_above_its_tenants_ceiling_is_refused_naming_both() {
        let ceilings = "[tenant_defaults.ceilings]\nmemory_mib = 64\nallowed_outbound_hosts = [\"https://*.example.com\"]\n[tenants.acme.ceilings]\ntimeout_ms = 5000\n";
        assert_eq!(
            refused(&format!(
                "{ceilings}[queues.\"acme/x\"]\ntimeout_ms = 6000\n"
            )),
            "invalid config: queues.\"acme/x\".timeout_ms: 6000 is above tenant acme's ceiling of 5000 (tenants.acme.ceilings.timeout_ms)"
        );
        assert_eq!(
            refused(&format!("{ceilings}[queues.\"beta/x\"]\nmemory_mib = 65\n")),
            "invalid config: queues.\"beta/x\".memory_mib: 65 is above tenant beta's ceiling of 64 (tenant_defaults.ceilings.memory_mib)"
        );
        assert_eq!(
            refused(&format!(
                "{ceilings}[queues.x]\nallowed_outbound_hosts = [\"https://a.example.com\", \"https://evil.test\"]\n"
            )),
            "invalid config: queues.x.allowed_outbound_hosts: https://evil.test is outside tenant default's ceiling (tenant_defaults.ceilings.allowed_outbound_hosts allows https://*.example.com)"
        );
        let fine = Config::parse(&format!(
            "{ceilings}[queues.\"acme/x\"]\ntimeout_ms = 5000\nmemory_mib = 64\nallowed_outbound_hosts = [\"https://a.example.com\"]\n"
        ));
        assert!(fine.is_ok(), "{fine:?}");
        assert!(
            refused("[tenants.acme.ceilings]\nfuel = 0\n")
                .starts_with("invalid config: tenants.acme.ceilings.fuel: ")
        );
        assert!(
            refused("[tenant_defaults.ceilings]\nallowed_outbound_hosts = [\"ftp://x\"]\n")
                .starts_with("invalid config: tenant_defaults.ceilings.allowed_outbound_hosts: ")
        );
        assert!(
            refused("[tenants.acme.ceilings]\nconcurrency = 1\n")
                .contains("unknown field `concurrency`")
        );
    }

    #[test]
    fn dispatch_quotas_come_from_the_tenants_section_over_the_defaults() {
        let config = Config::parse(
            "[tenant_defaults]\ndispatch_rate = 2.5\nmax_backlog = 1000\n[tenants.acme]\ndispatch_burst = 10\n[tenants.beta]\nmax_backlog = 5\ndispatch_rate = 100\n",
        )
        .expect("config");
        let quotas = config.quotas();
        let of = |name: &str| quotas.of(&TenantName::new(name).expect("tenant"));
        let rate = |per_second, burst| Some(Rate { per_second, burst });
        assert_eq!(of("acme").rate, rate(2.5, 10));
        assert_eq!(of("acme").max_backlog, Some(1000));
        assert_eq!(
            of("beta").rate,
            rate(100.0, 100),
            "the burst is the rate rounded up"
        );
        assert_eq!(of("beta").max_backlog, Some(5));
        assert_eq!(of("other").rate, rate(2.5, 3));
        assert!(Config::default().quotas().is_unlimited());
        assert_eq!(
            refused("[tenants.acme]\ndispatch_burst = 10\n"),
            "invalid config: tenants.acme.dispatch_burst: a burst without a dispatch_rate limits nothing: set dispatch_rate too"
        );
        for bad in ["0", "-1", "nan", "inf"] {
            assert!(
                refused(&format!("[tenant_defaults]\ndispatch_rate = {bad}\n"))
                    .starts_with("invalid config: tenant_defaults.dispatch_rate: "),
                "{bad}"
            );
        }
        assert!(
            refused("[tenants.acme]\nmax_backlog = 0\n")
                .starts_with("invalid config: tenants.acme.max_backlog: ")
        );
    }

    #[test]
    fn what_a_tenants_queue_inherits_is_lowered_to_its_ceiling() {
        let config = Config::parse(
            "[defaults]\nmemory_mib = 256\nhttp_max_requests = 50\nallowed_outbound_hosts = [\"https://api.example.com\", \"https://evil.test\"]\n[tenants.acme.ceilings]\nmemory_mib = 32\nfuel = 1000\noutput_kib = 8\nmax_dispatches = 2\nhttp_max_requests = 5\nhttp_timeout_ms = 100\nhttp_max_response_kib = 4\nallowed_outbound_hosts = [\"https://*.example.com\"]\n[queues.\"acme/small\"]\nmemory_mib = 16\nfuel = 10\n",
        )
        .expect("config");
        let held = config.queue(&QueueName::parse("acme/any").expect("queue"));
        assert_eq!(held.limits.memory, 32 << 20);
        assert_eq!(held.limits.fuel, Some(1000));
        assert_eq!(held.limits.output, 8 << 10);
        assert_eq!(held.limits.dispatches, 2);
        let http = &held.grants.http;
        assert_eq!((http.max_requests, http.max_response), (5, 4 << 10));
        assert_eq!(http.timeout, Duration::from_millis(100));
        assert!(http.allow.allows("https", "api.example.com", None));
        assert!(!http.allow.allows("https", "evil.test", None));
        let small = config.queue(&QueueName::parse("acme/small").expect("queue"));
        assert_eq!(
            (small.limits.memory, small.limits.fuel),
            (16 << 20, Some(10))
        );
        // Other tenants keep what they inherit.
        let beta = config.queue(&QueueName::parse("beta/any").expect("queue"));
        assert_eq!((beta.limits.memory, beta.limits.fuel), (256 << 20, None));
        assert!(beta.grants.http.allow.allows("https", "evil.test", None));
    }

    #[test]
    fn a_tenants_queue_has_its_own_section() {
        let config = Config::parse(
            r#"
            [queues."acme/big"]
            memory_mib = 256
            "#,
        )
        .expect("valid config");
        let acme = QueueName::parse("acme/big").expect("valid");
        assert_eq!(config.queue(&acme).limits.memory, 256 << 20);
        assert_eq!(config.queue(&q("big")).limits.memory, 64 << 20);
        let spelled = Config::parse("[queues.\"default/big\"]\nmemory_mib = 8")
            .expect_err("the default tenant written out");
        assert!(spelled.to_string().contains("[queues.big]"), "{spelled}");
        let bad = Config::parse("[queues.\"Acme/big\"]\nmemory_mib = 8").expect_err("bad tenant");
        assert!(bad.to_string().contains("invalid tenant name"), "{bad}");
        let over = Config::parse("[queues.\"acme/big\"]\nmemory_mib = 0").expect_err("bad value");
        assert!(over.to_string().contains(r#"queues."acme/big""#), "{over}");
    }

    #[test]
    fn mistakes_name_the_key() {
        let typo = Config::parse("[defaults]\ntimeout = 5").expect_err("unknown key");
        assert!(
            typo.to_string().contains("unknown field `timeout`"),
            "{typo}"
        );
        let zero = Config::parse("[queues.a]\ntimeout_ms = 0").expect_err("zero");
        assert!(zero.to_string().contains("queues.a.timeout_ms"), "{zero}");
        let name = Config::parse("[queues.Bad]\ntimeout_ms = 1").expect_err("bad name");
        assert!(name.to_string().contains("queues.Bad"), "{name}");
        let tree = Config::parse("[queues.a]\nmax_tree_jobs = 0").expect_err("zero");
        assert!(
            tree.to_string().contains("queues.a.max_tree_jobs"),
            "{tree}"
        );
        let cap = Config::parse("[defaults]\nbackoff_cap_ms = 40000000000").expect_err("cap");
        assert!(
            cap.to_string().contains("defaults.backoff_cap_ms")
                && cap.to_string().contains("more than a year"),
            "{cap}"
        );
        let budget =
            Config::parse("[queues.a]\nmax_tree_depth = 3\nmax_tree_jobs = 50").expect("valid");
        let limits = budget.queue(&q("a")).limits;
        assert_eq!((limits.tree_depth, limits.tree_jobs), (3, 50));
        assert_eq!(budget.queue(&q("b")).limits.tree_jobs, 1000, "the default");
        let module = Config::parse("[defaults]\nmodule = \"x\"").expect_err("module");
        assert!(module.to_string().contains("defaults.module"), "{module}");
    }

    #[test]
    fn a_parse_error_names_the_place_without_quoting_a_password() {
        for text in [
            "backend = \"redis://:s3cret@host:6379\" x",
            "prefix = \"a\"\nbackend = [\"redis://:s3cret@host\"]",
        ] {
            let e = Config::parse(text).expect_err("invalid").to_string();
            assert!(!e.contains("s3cret"), "{e}");
            assert!(e.contains("line "), "{e}");
        }
        let e = Config::parse("prefix = \"a\"\nbackend = 1").expect_err("type");
        assert!(e.to_string().contains("line 2, column 11"), "{e}");
    }

    #[test]
    fn grants_come_from_the_queue_section_and_nothing_is_granted_by_default() {
        let dir = std::env::temp_dir();
        let text = format!(
            r#"
            [sandbox]
            allow_private_networks = ["10.1.2.3/32"]
            resolve = {{ "mailer.test" = ["10.1.2.3"] }}
            [queues.mail]
            allowed_outbound_hosts = ["https://api.mailer.example"]
            http_timeout_ms = 2500
            http_max_response_kib = 8
            http_max_requests = 3
            files = {{ "/templates" = {dir:?} }}
            [queues.mail.env]
            URL = "https://api.mailer.example/send"
            KEY = {{ from_env = "RUNTIME_CONFIG_TEST_NEVER_SET" }}
            "#
        );
        let config = Config::parse(&text).expect("valid config");
        let mail = config.queue(&q("mail")).grants;
        assert!(mail.http.allow.allows("https", "api.mailer.example", None));
        assert!(!mail.http.allow.allows("https", "evil.example", None));
        assert_eq!(mail.http.timeout, Duration::from_millis(2500));
        assert_eq!(mail.http.max_response, 8 * 1024);
        assert_eq!(mail.http.max_requests, 3);
        assert_eq!(mail.http.private.len(), 1);
        assert_eq!(mail.http.resolve.get("mailer.test").map(Vec::len), Some(1));
        assert_eq!(
            mail.env.as_ref(),
            [(
                "URL".to_string(),
                "https://api.mailer.example/send".to_string()
            )],
            "a from_env value whose variable is unset is left out"
        );
        assert_eq!(mail.files.len(), 1);
        let missing = config.missing_env().expect_err("unset variable");
        assert!(
            missing.to_string().contains("queues.mail.env.KEY")
                && missing
                    .to_string()
                    .contains("RUNTIME_CONFIG_TEST_NEVER_SET"),
            "{missing}"
        );
        let shown = format!("{config:?} {mail:?}");
        assert!(
            !shown.contains("api.mailer.example/send"),
            "Debug shows no env value: {shown}"
        );
        let other = config.queue(&q("other")).grants;
        assert!(other.http.allow.is_empty() && other.env.is_empty() && other.files.is_empty());
    }

    #[test]
    fn malformed_grants_are_refused_naming_the_key_and_the_accepted_forms() {
        for (text, key, words) in [
            (
                "[queues.a]\nallowed_outbound_hosts = [\"localhost\"]",
                "queues.a.allowed_outbound_hosts",
                "scheme://host[:port]",
            ),
            (
                "[queues.a]\nallowed_outbound_hosts = [\"*\"]",
                "queues.a.allowed_outbound_hosts",
                "scheme://host[:port]",
            ),
            (
                "[queues.a]\nallowed_outbound_hosts = [\"https://api.example.com/v1\"]",
                "queues.a.allowed_outbound_hosts",
                "scheme://host[:port]",
            ),
            (
                "[sandbox]\nallow_private_networks = [\"10.0.0.1/8\"]",
                "sandbox.allow_private_networks[0]",
                "10.0.0.0/8",
            ),
            (
                "[queues.a]\nhttp_timeout_ms = 0",
                "queues.a.http_timeout_ms",
                "greater than 0",
            ),
            ("[queues.a.env]\n\"A=B\" = \"x\"", "queues.a.env.A=B", "'='"),
            (
                "[queues.a.files]\n\"templates\" = \"/\"",
                "queues.a.files.templates",
                "absolute",
            ),
            (
                "[queues.a.files]\n\"/t\" = \"/no/such/dir/anywhere\"",
                "queues.a.files./t",
                "not a directory",
            ),
            (
                "[sandbox.resolve]\n\"Mailer.Test\" = [\"10.1.2.3\"]",
                "sandbox.resolve.Mailer.Test",
                "lower case",
            ),
        ] {
            let e = Config::parse(text).expect_err(text).to_string();
            assert!(e.contains(key) && e.contains(words), "{text}: {e}");
        }
    }
}

//! `runtime tenants`: every tenant (registered or with queues), its
//! queues and jobs per state; `show` one tenant; `create`, `rotate-token`
//! and `remove` for the registry.

use std::collections::BTreeMap;

use runtime::QueueName;
use runtime::error::InputError;
use runtime::job::TenantName;
use runtime::queue::{Clock, StateCounts, SystemClock};
use runtime::tenant::{self, TenantRecord, Token};
use serde::Serialize;

use super::{Cli, CliResult, Exit};

/// Show the tenants, registered or with queues, with their jobs per state;
/// create, rotate the token of, or remove one (needs --backend).
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Option<Action>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Every tenant, registered or with queues, with its jobs per state
    /// (what `runtime tenants` alone shows).
    List,
    /// One tenant's queues, with their jobs per state.
    Show {
        /// The tenant. (Not called `tenant`: that is the global
        /// `--tenant`, which the command is checked against.)
        #[arg(value_name = "TENANT")]
        name: TenantName,
    },
    /// What each tenant uses against its quotas: jobs in flight over the
    /// fleet, backlog, run time this period, published modules' size and
    /// its dispatch bucket.
    Usage {
        /// Only this tenant.
        #[arg(value_name = "TENANT")]
        name: Option<TenantName>,
    },
    /// Register a tenant and print its access token (shown this once).
    Create {
        /// The tenant.
        #[arg(value_name = "TENANT")]
        name: TenantName,
    },
    /// Give a tenant a new token; the old one stops working at once.
    RotateToken {
        /// The tenant.
        #[arg(value_name = "TENANT")]
        name: TenantName,
    },
    /// Remove a tenant: its registry record, its queues with all their
    /// jobs, its published modules.
    Remove {
        /// The tenant.
        #[arg(value_name = "TENANT")]
        name: TenantName,
        /// Go ahead: nothing removed comes back.
        #[arg(long)]
        yes: bool,
    },
}

impl Action {
    fn tenant(&self) -> Option<&TenantName> {
        match self {
            Action::Show { name }
            | Action::Create { name }
            | Action::RotateToken { name }
            | Action::Remove { name, .. } => Some(name),
            Action::Usage { name } => name.as_ref(),
            Action::List => None,
        }
    }
}

/// One tenant's totals over its queues, and its registry record.
#[derive(Debug, Default, Serialize)]
struct Usage {
    registered: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_hint: Option<String>,
    queues: u64,
    #[serde(flatten)]
    jobs: StateCounts,
}

impl Usage {
    fn register(&mut self, record: &TenantRecord) {
        self.registered = true;
        self.token_hint = Some(record.token_hint.clone());
    }

    fn add(&mut self, counts: StateCounts) {
        self.queues += 1;
        self.jobs += counts;
    }
}

pub async fn run(cli: &Cli, args: &Args) -> CliResult {
    let config = cli.config()?;
    let backend = cli.require_backend(&config, "runtime tenants").await?;
    if let Some(named) = args.action.as_ref().and_then(Action::tenant)
        && let Some(own) = cli.tenant().filter(|own| *own != named)
    {
        return Err(InputError::OutsideTenant {
            name: named.to_string(),
            tenant: own.to_string(),
        }
        .into());
    }
    let now = SystemClock.now();
    match &args.action {
        Some(Action::Create { name }) => {
            let (record, token) = tenant::create(&*backend.tenants, name, now).await?;
            return print_token("created", &record, &token, args.json);
        }
        Some(Action::RotateToken { name }) => {
            let (record, token) = tenant::rotate_token(&*backend.tenants, name, now).await?;
            return print_token("new token for", &record, &token, args.json);
        }
        Some(Action::Remove { name, yes }) => {
            if !yes {
                anyhow::bail!(
                    "removing tenant {name} deletes its registry record, its queues with all their jobs and its published modules, for good: add --yes to go ahead"
                );
            }
            let removal = tenant::remove(&backend, name).await?;
            if args.json {
                outln!("{}", serde_json::to_string_pretty(&removal)?);
            } else {
                outln!(
                    "removed tenant {name}: {} queues, {} jobs, {} published modules{}",
                    removal.queues,
                    removal.jobs,
                    removal.modules,
                    if removal.registered {
                        "; its token no longer works"
                    } else {
                        "; it had no registration left"
                    }
                );
            }
            return Ok(Exit::Ok);
        }
        Some(Action::List | Action::Show { .. } | Action::Usage { .. }) | None => {}
    }
    let only = args
        .action
        .as_ref()
        .and_then(Action::tenant)
        .or(cli.tenant());
    let queues =
        runtime::queue::counts_of(&*backend.jobs, |q| only.is_none_or(|t| q.is_in(t))).await?;
    let records = match only {
        Some(t) => backend
            .tenants
            .tenant_record(t)
            .await?
            .into_iter()
            .collect(),
        None => backend.tenants.tenant_records().await?,
    };
    if let Some(Action::Show { name: tenant }) = &args.action {
        return show(tenant, records.first(), &queues, args.json);
    }
    if let Some(Action::Usage { .. }) = &args.action {
        // Every tenant the registry, the queues or the config know of.
        let mut tenants: std::collections::BTreeSet<TenantName> =
            records.iter().map(|r| r.name.clone()).collect();
        tenants.extend(queues.iter().map(|(q, _)| q.tenant()));
        tenants.extend(
            config
                .tenants
                .keys()
                .filter_map(|t| TenantName::new(t).ok()),
        );
        tenants.retain(|t| only.is_none_or(|o| o == t));
        if let Some(o) = only {
            tenants.insert(o.clone());
        }
        let quotas = config.quotas();
        let mut all = Vec::with_capacity(tenants.len());
        for t in tenants {
            let settings = config.tenant(&t);
            let used = tenant::usage(&backend, &t, &settings, quotas.of(&t), &queues, now).await?;
            all.push((t, used));
        }
        return print_usage(&all, args.json);
    }
    let mut usage: BTreeMap<TenantName, Usage> = BTreeMap::new();
    for record in records {
        usage
            .entry(record.name.clone())
            .or_default()
            .register(&record);
    }
    for (queue, counts) in &queues {
        usage.entry(queue.tenant()).or_default().add(*counts);
    }
    if args.json {
        let map: BTreeMap<&str, &Usage> = usage.iter().map(|(t, u)| (t.as_str(), u)).collect();
        outln!("{}", serde_json::to_string_pretty(&map)?);
        return Ok(Exit::Ok);
    }
    let width = usage
        .keys()
        .map(|t| t.as_str().len())
        .max()
        .unwrap_or(0)
        .max(6);
    outln!(
        "{:<width$}  {:>8}  {:>6}  {:>9}  {:>9}  {:>9}  {:>9}  {:>9}",
        "TENANT",
        "TOKEN",
        "QUEUES",
        "PENDING",
        "SCHEDULED",
        "RUNNING",
        "FAILED",
        "DONE"
    );
    for (t, u) in &usage {
        outln!(
            "{:<width$}  {:>8}  {:>6}  {:>9}  {:>9}  {:>9}  {:>9}  {:>9}",
            t.as_str(),
            u.token_hint
                .as_ref()
                .map_or("-".into(), |h| format!("…{h}")),
            u.queues,
            u.jobs.pending,
            u.jobs.scheduled,
            u.jobs.running,
            u.jobs.failed,
            u.jobs.done
        );
    }
    if usage.is_empty() {
        outln!("(no tenants yet: `runtime tenants create NAME` registers one)");
    }
    Ok(Exit::Ok)
}

/// Prints a tenant's new token: on stdout alone (or as JSON), with what
/// to do with it on stderr.
fn print_token(done: &str, record: &TenantRecord, token: &Token, json: bool) -> CliResult {
    let name = &record.name;
    if json {
        let out = serde_json::json!({ "tenant": name.as_str(), "token": token.expose() });
        outln!("{out}");
    } else {
        errln!("{done} tenant {name}; its token:");
        outln!("{}", token.expose());
    }
    errln!(
        "keep the token now: the registry keeps only its hash, so it is never shown again (`runtime tenants rotate-token {name}` makes a new one)"
    );
    Ok(Exit::Ok)
}

/// One tenant's record and queues.
fn show(
    tenant: &TenantName,
    record: Option<&TenantRecord>,
    queues: &[(QueueName, StateCounts)],
    json: bool,
) -> CliResult {
    if json {
        let out = serde_json::json!({
            "tenant": tenant.as_str(),
            "registered": record.is_some(),
            "created_at": record.map(|r| r.created_at),
            "token_made_at": record.map(|r| r.token_made_at),
            "token_hint": record.map(|r| &r.token_hint),
            "queues": super::queues::by_queue_value(queues),
        });
        outln!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(Exit::Ok);
    }
    match record {
        Some(r) => outln!(
            "tenant {tenant}: registered {}; token …{} made {}",
            super::jobs::time(r.created_at),
            r.token_hint,
            super::jobs::time(r.token_made_at)
        ),
        None => outln!(
            "tenant {tenant}: not registered, so it has no token (`runtime tenants create {tenant}` registers it)"
        ),
    }
    let mut total = Usage::default();
    for (queue, c) in queues {
        total.add(*c);
        outln!(
            "{}  pending {}  scheduled {}  running {}  failed {}  done {}",
            queue,
            c.pending,
            c.scheduled,
            c.running,
            c.failed,
            c.done
        );
    }
    outln!(
        "tenant {tenant}: {} queues, {} pending, {} scheduled, {} running, {} failed, {} done",
        total.queues,
        total.jobs.pending,
        total.jobs.scheduled,
        total.jobs.running,
        total.jobs.failed,
        total.jobs.done
    );
    Ok(Exit::Ok)
}

/// `used/max`, or `used` alone without a limit.
fn against(used: String, max: Option<String>) -> String {
    match max {
        Some(max) => format!("{used}/{max}"),
        None => used,
    }
}

/// A period: in days, hours or minutes when it is whole ones.
fn period(ms: u64) -> String {
    for (unit, name) in [(86_400_000, "d"), (3_600_000, "h"), (60_000, "m")] {
        if ms.is_multiple_of(unit) {
            return format!("{}{name}", ms / unit);
        }
    }
    seconds(ms)
}

/// A run time: ms, or seconds to a tenth.
fn seconds(ms: u64) -> String {
    runtime::sandbox::limits::Millis(std::time::Duration::from_millis(ms)).to_string()
}

/// Each tenant's usage against its quotas.
fn print_usage(all: &[(TenantName, tenant::Usage)], json: bool) -> CliResult {
    if json {
        let map: BTreeMap<&str, &tenant::Usage> =
            all.iter().map(|(t, u)| (t.as_str(), u)).collect();
        outln!("{}", serde_json::to_string_pretty(&map)?);
        return Ok(Exit::Ok);
    }
    let rows: Vec<[String; 6]> = all
        .iter()
        .map(|(t, u)| {
            let n = |m: tenant::Measure| against(m.used.to_string(), m.max.map(|x| x.to_string()));
            let run_time = match u.run_time.max_ms {
                Some(max) => format!(
                    "{}/{} per {}",
                    seconds(u.run_time.used_ms),
                    seconds(max),
                    period(u.run_time.period_ms)
                ),
                None => "-".into(),
            };
            let modules = against(
                runtime::error::size(u.module_storage.used),
                u.module_storage.max.map(runtime::error::size),
            );
            let dispatch = u.dispatch.map_or("-".into(), |d| {
                format!(
                    "{:.0}/{} tokens at {}/s",
                    d.tokens.floor(),
                    d.burst,
                    d.per_second
                )
            });
            [
                t.to_string(),
                n(u.in_flight),
                n(u.backlog),
                run_time,
                modules,
                dispatch,
            ]
        })
        .collect();
    let head = [
        "TENANT",
        "IN FLIGHT",
        "BACKLOG",
        "RUN TIME",
        "MODULES",
        "DISPATCH",
    ];
    let widths: Vec<usize> = (0..head.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([head[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: [&str; 6]| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        out
    };
    outln!("{}", line(head));
    for r in &rows {
        outln!("{}", line([&r[0], &r[1], &r[2], &r[3], &r[4], &r[5]]));
    }
    if rows.is_empty() {
        outln!("(no tenants yet: `runtime tenants create NAME` registers one)");
    }
    Ok(Exit::Ok)
}

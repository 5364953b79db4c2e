//! `runtime tenants`: every tenant with queues, its queues and jobs per
//! state; `runtime tenants show TENANT`: one tenant's queues.

use std::collections::BTreeMap;

use runtime::QueueName;
use runtime::error::InputError;
use runtime::job::TenantName;
use runtime::queue::StateCounts;
use serde::Serialize;

use super::{Cli, CliResult, Exit};

/// Show the tenants that have queues, with their jobs per state (needs
/// --backend).
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
    /// One tenant's queues, with their jobs per state.
    Show {
        /// The tenant. (Not called `tenant`: that is the global
        /// `--tenant`, which the command is checked against.)
        #[arg(value_name = "TENANT")]
        name: TenantName,
    },
}

/// One tenant's totals over its queues.
#[derive(Debug, Default, Serialize)]
struct Usage {
    queues: u64,
    #[serde(flatten)]
    jobs: StateCounts,
}

impl Usage {
    fn add(&mut self, counts: StateCounts) {
        self.queues += 1;
        self.jobs += counts;
    }
}

pub async fn run(cli: &Cli, args: &Args) -> CliResult {
    let config = cli.config()?;
    let backend = cli.require_backend(&config, "runtime tenants").await?.jobs;
    let only = match &args.action {
        Some(Action::Show { name: tenant }) => {
            if let Some(own) = cli.tenant().filter(|own| *own != tenant) {
                return Err(InputError::OutsideTenant {
                    name: tenant.to_string(),
                    tenant: own.to_string(),
                }
                .into());
            }
            Some(tenant)
        }
        None => cli.tenant(),
    };
    let queues = super::queues::counts_of(&*backend, |q| only.is_none_or(|t| q.is_in(t))).await?;
    if let Some(Action::Show { name: tenant }) = &args.action {
        return show(tenant, &queues, args.json);
    }
    let mut usage: BTreeMap<TenantName, Usage> = BTreeMap::new();
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
        "{:<width$}  {:>6}  {:>9}  {:>9}  {:>9}  {:>9}  {:>9}",
        "TENANT",
        "QUEUES",
        "PENDING",
        "SCHEDULED",
        "RUNNING",
        "FAILED",
        "DONE"
    );
    for (t, u) in &usage {
        outln!(
            "{:<width$}  {:>6}  {:>9}  {:>9}  {:>9}  {:>9}  {:>9}",
            t.as_str(),
            u.queues,
            u.jobs.pending,
            u.jobs.scheduled,
            u.jobs.running,
            u.jobs.failed,
            u.jobs.done
        );
    }
    if usage.is_empty() {
        outln!("(no tenants with queues yet)");
    }
    Ok(Exit::Ok)
}

/// One tenant's queues.
fn show(tenant: &TenantName, queues: &[(QueueName, StateCounts)], json: bool) -> CliResult {
    if json {
        outln!("{}", super::queues::by_queue_json(queues)?);
        return Ok(Exit::Ok);
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

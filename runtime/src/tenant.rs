//! The tenant registry's side of the host: access tokens, the records the
//! registry keeps ([`TenantRecord`]), and the operations over a backend's
//! [`TenantStore`]: create a tenant, rotate its token, authenticate a
//! token, remove a tenant with all its data.
//!
//! A token is `rt_<tenant>_<64 hex digits>`: 32 bytes from the operating
//! system's random source after the tenant's name, so a server finds the
//! one record to check without trying every tenant. The registry keeps
//! only the token's SHA-256 and its last four digits (to tell tokens apart
//! in listings); checking a token hashes it and compares the hashes in time
//! that does not depend on where they differ. A token is shown once, when
//! it is made.
//!
//! A tenant needs no record to have queues: the operator's own tools (the
//! CLI, the library) name tenants directly. The record is what lets a
//! tenant in from outside, with its token.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::TenantSettings;
use crate::error::QueueError;
use crate::job::{QueueName, TenantName, UnixMillis};
use crate::queue::{Backend, DispatchQuota, RunTimeBudget, StateCounts, TenantStore};

/// What every token starts with.
pub const TOKEN_PREFIX: &str = "rt_";

/// Random bytes in a token.
const TOKEN_BYTES: usize = 32;

/// A tenant's access token, as handed to the tenant once. `Debug` does not
/// show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// A new token for `tenant`, from the operating system's random source.
    fn generate(tenant: &TenantName) -> Result<Token, TenantError> {
        let mut bytes = [0u8; TOKEN_BYTES];
        getrandom::getrandom(&mut bytes).map_err(|e| TenantError::Random(e.to_string()))?;
        Ok(Token(format!("{TOKEN_PREFIX}{tenant}_{}", hex(&bytes))))
    }

    /// The token's text, to hand to the tenant.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The tenant a token's text names, if it has a token's form.
    pub fn tenant_of(text: &str) -> Option<TenantName> {
        let rest = text.strip_prefix(TOKEN_PREFIX)?;
        let (tenant, secret) = rest.rsplit_once('_')?;
        let secret_form =
            secret.len() == 2 * TOKEN_BYTES && secret.bytes().all(|b| b.is_ascii_hexdigit());
        if !secret_form {
            return None;
        }
        TenantName::new(tenant).ok()
    }

    /// The last four digits, kept in the clear to tell tokens apart.
    fn hint(&self) -> String {
        self.0[self.0.len() - 4..].to_string()
    }
}

/// What the registry keeps of a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantRecord {
    /// The tenant.
    pub name: TenantName,
    /// When it was created (ms since the Unix epoch).
    pub created_at: UnixMillis,
    /// When its current token was made.
    pub token_made_at: UnixMillis,
    /// The current token's last four digits.
    pub token_hint: String,
    /// The current token's SHA-256, hex.
    #[serde(rename = "token_sha256")]
    token_hash: String,
}

impl TenantRecord {
    /// Its token's SHA-256, hex: not a secret, and what a write that
    /// replaces the record checks it replaces.
    pub fn token_hash(&self) -> &str {
        &self.token_hash
    }

    fn new(name: &TenantName, created_at: UnixMillis, token: &Token, now: UnixMillis) -> Self {
        TenantRecord {
            name: name.clone(),
            created_at,
            token_made_at: now,
            token_hint: token.hint(),
            token_hash: hex(&Sha256::digest(token.expose().as_bytes())),
        }
    }

    /// Whether `text` is this tenant's current token. The hashes are
    /// compared in time that does not depend on where they differ.
    pub fn accepts(&self, text: &str) -> bool {
        let given = hex(&Sha256::digest(text.as_bytes()));
        same_secret(given.as_bytes(), self.token_hash.as_bytes())
    }
}

/// Whether two secrets (or their hashes) are equal, in time that does not
/// depend on where they differ.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A registry operation that could not be done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TenantError {
    /// Creating a tenant that has a record already.
    #[error("tenant {0} exists already (rotate its token with `runtime tenants rotate-token {0}`)")]
    Exists(TenantName),
    /// The tenant has no record.
    #[error(
        "no tenant {0} in the registry (create it with `runtime tenants create {0}`; `runtime tenants` lists them)"
    )]
    NotFound(TenantName),
    /// The tenant's record changed while its token was being rotated.
    #[error(
        "tenant {0} was changed meanwhile (its token rotated, or it was removed): see `runtime tenants show {0}`, then rotate again if you still mean to"
    )]
    Changed(TenantName),
    /// Removing a tenant while some of its jobs run.
    #[error(
        "tenant {tenant} has jobs running in {}: its other data is removed; stop the workers serving it or wait for its jobs to end, then remove it again",
        in_queues(.queues)
    )]
    Running {
        /// The tenant.
        tenant: TenantName,
        /// Its queues with running jobs.
        queues: Vec<QueueName>,
    },
    /// The operating system's random source failed.
    #[error("no random bytes for a token: {0}")]
    Random(String),
    /// The backend failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Registers `tenant` with a new token; returns its record and the token,
/// which is shown this once.
pub async fn create(
    store: &dyn TenantStore,
    tenant: &TenantName,
    now: UnixMillis,
) -> Result<(TenantRecord, Token), TenantError> {
    let token = Token::generate(tenant)?;
    let record = TenantRecord::new(tenant, now, &token, now);
    if !store.write_tenant(&record, None).await? {
        return Err(TenantError::Exists(tenant.clone()));
    }
    Ok((record, token))
}

/// Gives `tenant` a new token; the old one stops working at once.
pub async fn rotate_token(
    store: &dyn TenantStore,
    tenant: &TenantName,
    now: UnixMillis,
) -> Result<(TenantRecord, Token), TenantError> {
    let old = store
        .tenant_record(tenant)
        .await?
        .ok_or_else(|| TenantError::NotFound(tenant.clone()))?;
    let token = Token::generate(tenant)?;
    let record = TenantRecord::new(tenant, old.created_at, &token, now);
    if !store.write_tenant(&record, Some(&old)).await? {
        return Err(TenantError::Changed(tenant.clone()));
    }
    Ok((record, token))
}

/// The tenant whose current token `text` is, if any. Anything else
/// (malformed, unknown tenant, old token) is `None`, alike.
pub async fn authenticate(
    store: &dyn TenantStore,
    text: &str,
) -> Result<Option<TenantName>, QueueError> {
    let Some(tenant) = Token::tenant_of(text) else {
        return Ok(None);
    };
    let record = store.tenant_record(&tenant).await?;
    Ok(record.filter(|r| r.accepts(text)).map(|r| r.name))
}

/// What removing a tenant took away.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Removal {
    /// Whether it had a registry record.
    pub registered: bool,
    /// Its queues removed.
    pub queues: u64,
    /// Their jobs removed.
    pub jobs: u64,
    /// Its published modules withdrawn.
    pub modules: u64,
}

/// Removes `tenant`: its registry record first (its token stops working),
/// then each of its queues with all their jobs, in bounded chunks
/// ([`JobQueue::remove_queue`]), and its published modules. A queue with
/// running jobs is left (with its published module) and named in the
/// error; removing again once they end finishes the job.
///
/// [`JobQueue::remove_queue`]: crate::queue::JobQueue::remove_queue
pub async fn remove(backend: &Backend, tenant: &TenantName) -> Result<Removal, TenantError> {
    let mut removal = Removal {
        registered: backend.tenants.remove_tenant(tenant).await?,
        ..Removal::default()
    };
    let queues: Vec<QueueName> = backend
        .jobs
        .queues()
        .await?
        .into_iter()
        .filter(|q| q.is_in(tenant))
        .collect();
    let mut busy = Vec::new();
    for queue in &queues {
        match backend.jobs.remove_queue(queue).await {
            Ok(jobs) => {
                removal.queues += 1;
                removal.jobs += jobs;
            }
            Err(QueueError::QueueBusy { .. }) => busy.push(queue.clone()),
            Err(e) => return Err(e.into()),
        }
    }
    // Every published module of the tenant, its queues' with jobs or not
    // (a busy queue keeps its own, to finish its jobs with).
    for queue in backend.modules.published().await? {
        if queue.is_in(tenant) && !busy.contains(&queue) {
            removal.modules += u64::from(backend.modules.withdraw_module(&queue).await?);
        }
    }
    if busy.is_empty() {
        Ok(removal)
    } else {
        Err(TenantError::Running {
            tenant: tenant.clone(),
            queues: busy,
        })
    }
}

/// One measure of a tenant against its quota (`max`: `None` is no limit).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Measure {
    /// What it uses now.
    pub used: u64,
    /// Its quota.
    pub max: Option<u64>,
}

/// A tenant's run time this period against its budget.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RunTimeUse {
    /// Its attempts' run time this period, ms (counted only with a budget).
    pub used_ms: u64,
    /// Its budget per period, ms.
    pub max_ms: Option<u64>,
    /// The period, ms.
    pub period_ms: u64,
    /// When this period began (ms since the Unix epoch).
    pub period_started_at: UnixMillis,
}

/// A tenant's dispatch bucket against its rate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
pub struct DispatchUse {
    /// Tokens its bucket holds now: jobs it may dispatch at once.
    pub tokens: f64,
    /// The bucket's size.
    pub burst: u32,
    /// Jobs per second it refills by.
    pub per_second: f64,
}

/// What a tenant uses against each of its quotas.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Usage {
    /// Its jobs in flight over the fleet: with a `max_in_flight`, the
    /// slots its ledger holds (claimed jobs included); without, its
    /// running jobs.
    pub in_flight: Measure,
    /// Its jobs waiting (pending and scheduled) against `max_backlog`.
    pub backlog: Measure,
    /// Its run time this period against `cpu_budget_s`.
    pub run_time: RunTimeUse,
    /// Bytes its published modules take against `module_storage_mib`.
    pub module_storage: Measure,
    /// Its dispatch bucket, if it has a `dispatch_rate`.
    pub dispatch: Option<DispatchUse>,
}

/// What `tenant` uses of its quotas (`settings`, `quota`: the config's),
/// with `queues` its queues' counts.
pub async fn usage(
    backend: &Backend,
    tenant: &TenantName,
    settings: &TenantSettings,
    quota: DispatchQuota,
    queues: &[(QueueName, StateCounts)],
    now: UnixMillis,
) -> Result<Usage, QueueError> {
    let mut counts = StateCounts::default();
    for (_, c) in queues.iter().filter(|(q, _)| q.is_in(tenant)) {
        counts += *c;
    }
    let in_flight = match settings.max_in_flight {
        Some(_) => backend.tenants.in_flight(tenant).await?,
        None => counts.running,
    };
    let budget = settings.run_time();
    let period_ms = settings.cpu_period_ms.max(1);
    let period_started_at = RunTimeBudget {
        budget_ms: 0,
        period_ms,
    }
    .period_at(now);
    let run_time = match budget {
        Some(_) => {
            backend
                .tenants
                .charge_run_time(tenant, period_started_at, period_ms, 0)
                .await?
        }
        None => 0,
    };
    let dispatch = match quota.rate {
        Some(rate) => Some(DispatchUse {
            tokens: backend.tenants.dispatch_tokens(tenant, rate).await?,
            burst: rate.burst,
            per_second: rate.per_second,
        }),
        None => None,
    };
    Ok(Usage {
        in_flight: Measure {
            used: in_flight,
            max: settings.max_in_flight,
        },
        backlog: Measure {
            used: counts.pending + counts.scheduled,
            max: quota.max_backlog,
        },
        run_time: RunTimeUse {
            used_ms: run_time,
            max_ms: budget.map(|b| b.budget_ms),
            period_ms,
            period_started_at,
        },
        module_storage: Measure {
            used: module_storage(backend, tenant).await?,
            max: settings.module_storage_bytes,
        },
        dispatch,
    })
}

/// Bytes `tenant`'s published modules take.
pub async fn module_storage(backend: &Backend, tenant: &TenantName) -> Result<u64, QueueError> {
    Ok(module_sizes(backend, tenant)
        .await?
        .iter()
        .map(|(_, n)| n)
        .sum())
}

/// `tenant`'s published modules, by queue, with their sizes in bytes.
async fn module_sizes(
    backend: &Backend,
    tenant: &TenantName,
) -> Result<Vec<(QueueName, u64)>, QueueError> {
    let queues: Vec<QueueName> = backend
        .modules
        .published()
        .await?
        .into_iter()
        .filter(|q| q.is_in(tenant))
        .collect();
    let sizes = backend.modules.module_sizes(&queues).await?;
    Ok(queues
        .into_iter()
        .zip(sizes)
        .filter_map(|(q, size)| Some((q, size?)))
        .collect())
}

/// Publishes `bytes` as `queue`'s module ([`ModuleStore::publish_module`])
/// if its tenant's published modules stay within `max` bytes, counting
/// this one instead of the one it replaces. Deploys of one tenant at the
/// same moment are each checked against what the others found, so they
/// can pass the quota together.
///
/// [`ModuleStore::publish_module`]: crate::queue::ModuleStore::publish_module
pub async fn publish(
    backend: &Backend,
    queue: &QueueName,
    bytes: &[u8],
    max: Option<u64>,
) -> Result<String, QueueError> {
    if let Some(max) = max {
        let tenant = queue.tenant();
        // The others: this queue's module, if any, is the one replaced.
        let used = module_sizes(backend, &tenant)
            .await?
            .iter()
            .filter(|(q, _)| q != queue)
            .map(|(_, n)| n)
            .sum::<u64>();
        let adding = bytes.len() as u64;
        if used.saturating_add(adding) > max {
            return Err(QueueError::ModuleStorageFull {
                tenant,
                used,
                adding,
                max,
            });
        }
    }
    backend.modules.publish_module(queue, bytes).await
}

/// `queue a` or `queues a, b`.
fn in_queues(queues: &[QueueName]) -> String {
    let names: Vec<&str> = queues.iter().map(QueueName::as_str).collect();
    match names.as_slice() {
        [one] => format!("queue {one}"),
        _ => format!("queues {}", names.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(name: &str) -> TenantName {
        TenantName::new(name).expect("tenant name")
    }

    #[test]
    fn a_token_names_its_tenant_and_only_its_own_hash_accepts_it() {
        let acme = tenant("acme_corp-1");
        let token = Token::generate(&acme).expect("token");
        assert_eq!(Token::tenant_of(token.expose()), Some(acme.clone()));
        let record = TenantRecord::new(&acme, 1, &token, 2);
        assert!(record.accepts(token.expose()));
        let other = Token::generate(&acme).expect("token");
        assert_ne!(other, token, "two tokens alike");
        assert!(!record.accepts(other.expose()));
        assert!(!record.accepts(""));
        assert_eq!(
            record.token_hint,
            &token.expose()[token.expose().len() - 4..]
        );
        assert!(!format!("{record:?}{token:?}").contains(token.expose()));
    }

    #[test]
    fn text_not_in_a_tokens_form_names_no_tenant() {
        let digits = "0".repeat(64);
        assert_eq!(
            Token::tenant_of(&format!("rt_acme_{digits}")),
            Some(tenant("acme"))
        );
        for bad in [
            String::new(),
            format!("acme_{digits}"),
            format!("rt_acme_{}", "0".repeat(63)),
            format!("rt_acme_{}g", "0".repeat(63)),
            format!("rt_Acme_{digits}"),
            format!("rt__{digits}"),
            format!("rt_{digits}"),
        ] {
            assert_eq!(Token::tenant_of(&bad), None, "{bad}");
        }
    }
}

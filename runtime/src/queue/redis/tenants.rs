//! The tenant registry on Redis: one hash, `<prefix>{@tenants}`, of
//! tenant name → record (JSON). Creating and replacing a record is one
//! function call, so two operators racing cannot both create a tenant or
//! bring a removed one back.
//!
//! A tenant's own keys (dispatch bucket, jobs in flight, run time,
//! throughput) are under `<prefix>{@t/<tenant>}`; the fleet's throughput
//! is `<prefix>{@throughput}`. Throughput is kept as a hash per tenant and
//! one for the fleet, of a field per minute modulo [`THROUGHPUT_MINUTES`]
//! (`minute|processed|failed`, the minute telling a field's current
//! counts from those of a minute that had it before), each hash expiring
//! [`THROUGHPUT_KEEP_MS`] after its last write: at most
//! [`THROUGHPUT_MINUTES`] fields per hash, whatever happens.

use std::time::Duration;

use async_trait::async_trait;

use super::RedisBackend;
use super::library::Function;
use crate::error::QueueError;
use crate::job::{TenantName, UnixMillis};
use crate::queue::{Rate, THROUGHPUT_MINUTES, Taken, TenantStore, Throughput, throughput_window};
use crate::tenant::TenantRecord;

/// How long a throughput hash is kept after its last write: the minutes
/// kept and one more, so a minute is never gone before it is too old to
/// be read.
const THROUGHPUT_KEEP_MS: u64 = (THROUGHPUT_MINUTES as u64 + 1) * 60_000;

/// The field of a throughput hash that holds `minute`.
fn throughput_field(minute: u64) -> String {
    (minute % THROUGHPUT_MINUTES as u64).to_string()
}

impl RedisBackend {
    /// A tenant's throughput hash, or with `None` the fleet's.
    fn throughput_key(&self, tenant: Option<&TenantName>) -> String {
        match tenant {
            Some(tenant) => format!("{}:throughput", self.shared.keys.tenant(tenant)),
            None => self.shared.keys.throughput(),
        }
    }

    /// The counts of `minute` in `held`, a field of a throughput hash
    /// (`minute|processed|failed`): zero if the field is empty or holds
    /// another minute.
    fn throughput_of(&self, minute: u64, held: Option<&str>) -> Result<Throughput, QueueError> {
        let Some(held) = held else {
            return Ok(Throughput::default());
        };
        let mut parts = held.split('|').map(str::parse::<u64>);
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(Ok(at)), Some(Ok(processed)), Some(Ok(failed)), None) => Ok(if at == minute {
                Throughput { processed, failed }
            } else {
                Throughput::default()
            }),
            _ => Err(QueueError::Backend {
                backend: self.shared.name.clone(),
                message: format!("a throughput count cannot be read ({held:?})"),
            }),
        }
    }

    /// Calls the `flight` function on `tenant`'s ledger with `args`;
    /// returns what it granted and the tenant's total.
    async fn flight(
        &self,
        tenant: &TenantName,
        args: impl FnOnce(&mut redis::Cmd),
    ) -> Result<(u64, u64), QueueError> {
        let now = self.shared.clock.now();
        let key = format!("{}:flight", self.shared.keys.tenant(tenant));
        let reply = self.call_key(Function::Flight, &key, now, args).await?;
        self.reply(Function::Flight, reply)
    }

    fn decode_tenant(&self, name: &str, json: &str) -> Result<TenantRecord, QueueError> {
        serde_json::from_str(json).map_err(|e| QueueError::Backend {
            backend: self.shared.name.clone(),
            message: format!("the registry's record of tenant {name:?} cannot be read ({e}); remove the tenant and create it again"),
        })
    }
}

#[async_trait]
impl TenantStore for RedisBackend {
    async fn write_tenant(
        &self,
        record: &TenantRecord,
        replacing: Option<&TenantRecord>,
    ) -> Result<bool, QueueError> {
        let json = serde_json::to_string(record).map_err(|e| QueueError::Backend {
            backend: self.shared.name.clone(),
            message: format!("cannot encode the record of tenant {}: {e}", record.name),
        })?;
        let now = self.shared.clock.now();
        let reply = self
            .call_key(
                Function::Registry,
                &self.shared.keys.tenants(),
                now,
                |cmd| {
                    cmd.arg(replacing.map_or("create", TenantRecord::token_hash))
                        .arg(record.name.as_str())
                        .arg(json);
                },
            )
            .await?;
        Ok(self.reply::<i64>(Function::Registry, reply)? == 1)
    }

    async fn tenant_record(&self, tenant: &TenantName) -> Result<Option<TenantRecord>, QueueError> {
        let json: Option<String> = self
            .query(
                redis::cmd("HGET")
                    .arg(self.shared.keys.tenants())
                    .arg(tenant.as_str()),
            )
            .await?;
        json.map(|j| self.decode_tenant(tenant.as_str(), &j))
            .transpose()
    }

    async fn tenant_records(&self) -> Result<Vec<TenantRecord>, QueueError> {
        let all: Vec<(String, String)> = self
            .query(redis::cmd("HGETALL").arg(self.shared.keys.tenants()))
            .await?;
        let mut records = all
            .iter()
            .map(|(name, json)| self.decode_tenant(name, json))
            .collect::<Result<Vec<_>, _>>()?;
        records.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(records)
    }

    async fn take_dispatch(
        &self,
        tenant: &TenantName,
        jobs: u64,
        rate: Rate,
    ) -> Result<Taken, QueueError> {
        let now = self.shared.clock.now();
        let key = format!("{}:bucket", self.shared.keys.tenant(tenant));
        let reply = self
            .call_key(Function::Bucket, &key, now, |cmd| {
                cmd.arg(jobs).arg(rate.per_second).arg(rate.burst);
            })
            .await?;
        let (taken, wait, _): (i64, u64, String) = self.reply(Function::Bucket, reply)?;
        Ok(if taken == 1 {
            Taken::Yes
        } else {
            Taken::No {
                wait: Duration::from_millis(wait),
            }
        })
    }

    async fn take_flight(
        &self,
        tenant: &TenantName,
        holder: &str,
        want: u64,
        max: u64,
        until: UnixMillis,
    ) -> Result<u64, QueueError> {
        let (granted, _) = self
            .flight(tenant, |cmd| {
                cmd.arg("take").arg(holder).arg(want).arg(max).arg(until);
            })
            .await?;
        Ok(granted)
    }

    async fn give_flight(
        &self,
        tenant: &TenantName,
        holder: &str,
        n: u64,
    ) -> Result<(), QueueError> {
        self.flight(tenant, |cmd| {
            cmd.arg("give").arg(holder).arg(n);
        })
        .await?;
        Ok(())
    }

    async fn hold_flight(
        &self,
        tenant: &TenantName,
        holder: &str,
        until: UnixMillis,
    ) -> Result<(), QueueError> {
        self.flight(tenant, |cmd| {
            cmd.arg("hold").arg(holder).arg(until);
        })
        .await?;
        Ok(())
    }

    async fn in_flight(&self, tenant: &TenantName) -> Result<u64, QueueError> {
        let (_, total) = self
            .flight(tenant, |cmd| {
                cmd.arg("count");
            })
            .await?;
        Ok(total)
    }

    async fn refund_dispatch(
        &self,
        tenant: &TenantName,
        jobs: u64,
        rate: Rate,
    ) -> Result<(), QueueError> {
        let now = self.shared.clock.now();
        let key = format!("{}:bucket", self.shared.keys.tenant(tenant));
        let refund = -i64::try_from(jobs).unwrap_or(i64::MAX);
        let reply = self
            .call_key(Function::Bucket, &key, now, |cmd| {
                cmd.arg(refund).arg(rate.per_second).arg(rate.burst);
            })
            .await?;
        let _: (i64, u64, String) = self.reply(Function::Bucket, reply)?;
        Ok(())
    }

    async fn dispatch_tokens(&self, tenant: &TenantName, rate: Rate) -> Result<f64, QueueError> {
        let now = self.shared.clock.now();
        let key = format!("{}:bucket", self.shared.keys.tenant(tenant));
        let reply = self
            .call_key(Function::Bucket, &key, now, |cmd| {
                cmd.arg(0).arg(rate.per_second).arg(rate.burst);
            })
            .await?;
        let (_, _, tokens): (i64, u64, String) = self.reply(Function::Bucket, reply)?;
        tokens
            .parse()
            .map_err(|_| self.reply_error(Function::Bucket, "tokens that are not a number"))
    }

    async fn charge_run_time(
        &self,
        tenant: &TenantName,
        period: UnixMillis,
        period_ms: u64,
        ms: u64,
    ) -> Result<u64, QueueError> {
        let now = self.shared.clock.now();
        let key = format!("{}:runtime", self.shared.keys.tenant(tenant));
        let reply = self
            .call_key(Function::RunTime, &key, now, |cmd| {
                cmd.arg(period).arg(period_ms).arg(ms);
            })
            .await?;
        self.reply(Function::RunTime, reply)
    }

    async fn add_throughput(
        &self,
        minute: u64,
        counts: &[(TenantName, Throughput)],
    ) -> Result<(), QueueError> {
        if counts.is_empty() {
            return Ok(());
        }
        let now = self.shared.clock.now();
        let field = throughput_field(minute);
        let mut fleet = Throughput::default();
        let mut adds: Vec<(String, Throughput)> = counts
            .iter()
            .map(|(tenant, n)| {
                fleet += *n;
                (self.throughput_key(Some(tenant)), *n)
            })
            .collect();
        adds.push((self.throughput_key(None), fleet));
        // One call per hash, each in its own slot, all sent at once.
        let calls = adds.iter().map(|(key, n)| async {
            let reply = self
                .call_key(Function::Throughput, key, now, |cmd| {
                    cmd.arg(minute)
                        .arg(&field)
                        .arg(n.processed)
                        .arg(n.failed)
                        .arg(THROUGHPUT_KEEP_MS);
                })
                .await?;
            self.reply::<i64>(Function::Throughput, reply)
        });
        futures_util::future::try_join_all(calls).await?;
        Ok(())
    }

    async fn throughput(
        &self,
        tenant: Option<&TenantName>,
        from_minute: u64,
        minutes: usize,
    ) -> Result<Vec<Throughput>, QueueError> {
        let window: Vec<Option<u64>> =
            throughput_window(from_minute, minutes, self.shared.clock.now()).collect();
        let fields: Vec<String> = window
            .iter()
            .flatten()
            .map(|&m| throughput_field(m))
            .collect();
        let held: Vec<Option<String>> = if fields.is_empty() {
            Vec::new()
        } else {
            self.query(
                redis::cmd("HMGET")
                    .arg(self.throughput_key(tenant))
                    .arg(fields),
            )
            .await?
        };
        let mut held = held.into_iter();
        window
            .into_iter()
            .map(|minute| match minute {
                Some(m) => self.throughput_of(m, held.next().flatten().as_deref()),
                None => Ok(Throughput::default()),
            })
            .collect()
    }

    async fn remove_tenant(&self, tenant: &TenantName) -> Result<bool, QueueError> {
        let base = self.shared.keys.tenant(tenant);
        let _: i64 = self
            .query(
                redis::cmd("DEL")
                    .arg(format!("{base}:bucket"))
                    .arg(format!("{base}:flight"))
                    .arg(format!("{base}:runtime"))
                    .arg(self.throughput_key(Some(tenant))),
            )
            .await?;
        let removed: i64 = self
            .query(
                redis::cmd("HDEL")
                    .arg(self.shared.keys.tenants())
                    .arg(tenant.as_str()),
            )
            .await?;
        Ok(removed == 1)
    }
}

//! The tenant registry on Redis: one hash, `<prefix>{@tenants}`, of
//! tenant name → record (JSON). Creating and replacing a record is one
//! function call, so two operators racing cannot both create a tenant or
//! bring a removed one back.

use std::time::Duration;

use async_trait::async_trait;

use super::RedisBackend;
use super::library::Function;
use crate::error::QueueError;
use crate::job::{TenantName, UnixMillis};
use crate::queue::{Rate, Taken, TenantStore};
use crate::tenant::TenantRecord;

impl RedisBackend {
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

    async fn remove_tenant(&self, tenant: &TenantName) -> Result<bool, QueueError> {
        let base = self.shared.keys.tenant(tenant);
        let _: i64 = self
            .query(
                redis::cmd("DEL")
                    .arg(format!("{base}:bucket"))
                    .arg(format!("{base}:flight"))
                    .arg(format!("{base}:runtime")),
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

//! Tenants (interface.md §8): their SIP domains and limit overrides, and
//! removing everything a tenant owns.

use super::{corrupt, Result, Store, StoreError};
use crate::domain::TenantId;
use sqlx::Row;

/// A tenant as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantRecord {
    pub tenant: TenantId,
    /// Lower case, sorted.
    pub sip_domains: Vec<String>,
    pub limits: TenantLimits,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A tenant's overrides of the global limits (`None`: the global one).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TenantLimits {
    pub devices_per_user: Option<u32>,
    pub calls_per_second: Option<u32>,
}

fn limit(v: Option<i64>) -> Option<u32> {
    v.map(|n| n.clamp(0, i64::from(u32::MAX)) as u32)
}

impl Store {
    /// Create or replace a tenant: its SIP domains (lower case) and limits.
    /// True when created. A domain another tenant holds →
    /// `StoreError::DomainTaken`, nothing written.
    pub async fn put_tenant(&self, tenant: &TenantId, sip_domains: &[String], limits: TenantLimits, now_ms: i64) -> Result<bool> {
        let _gate = self.writing().await;
        let mut tx = self.pool.begin().await?;
        let created = sqlx::query(
            "INSERT INTO tenants (tenant_id, devices_per_user, calls_per_second, created_at, updated_at) VALUES ($1, $2, $3, $4, $4) \
             ON CONFLICT (tenant_id) DO NOTHING",
        )
        .bind(tenant.as_str())
        .bind(limits.devices_per_user.map(i64::from))
        .bind(limits.calls_per_second.map(i64::from))
        .bind(now_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        if !created {
            sqlx::query("UPDATE tenants SET devices_per_user = $1, calls_per_second = $2, updated_at = $3 WHERE tenant_id = $4")
                .bind(limits.devices_per_user.map(i64::from))
                .bind(limits.calls_per_second.map(i64::from))
                .bind(now_ms)
                .bind(tenant.as_str())
                .execute(&mut *tx)
                .await?;
        }
        for domain in sip_domains {
            let holder: Option<String> =
                sqlx::query_scalar("SELECT tenant_id FROM tenant_domains WHERE domain = $1").bind(domain.as_str()).fetch_optional(&mut *tx).await?;
            if holder.as_deref().is_some_and(|h| h != tenant.as_str()) {
                return Err(StoreError::DomainTaken(domain.clone()));
            }
        }
        sqlx::query("DELETE FROM tenant_domains WHERE tenant_id = $1").bind(tenant.as_str()).execute(&mut *tx).await?;
        for domain in sip_domains {
            sqlx::query("INSERT INTO tenant_domains (domain, tenant_id) VALUES ($1, $2)")
                .bind(domain.as_str())
                .bind(tenant.as_str())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(created)
    }

    /// One tenant, if it exists.
    pub async fn tenant(&self, tenant: &TenantId) -> Result<Option<TenantRecord>> {
        Ok(self.tenants_where(Some(tenant)).await?.into_iter().next())
    }

    /// Every tenant, by id.
    pub async fn tenants(&self) -> Result<Vec<TenantRecord>> {
        self.tenants_where(None).await
    }

    async fn tenants_where(&self, only: Option<&TenantId>) -> Result<Vec<TenantRecord>> {
        let filter = if only.is_some() { " WHERE tenant_id = $1" } else { "" };
        let sql = format!("SELECT tenant_id, devices_per_user, calls_per_second, created_at, updated_at FROM tenants{filter} ORDER BY tenant_id");
        let mut q = sqlx::query(&sql);
        if let Some(t) = only {
            q = q.bind(t.as_str());
        }
        let rows = q.fetch_all(&self.pool).await?;
        let dsql = format!("SELECT domain, tenant_id FROM tenant_domains{filter} ORDER BY domain");
        let mut dq = sqlx::query(&dsql);
        if let Some(t) = only {
            dq = dq.bind(t.as_str());
        }
        let domains = dq.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let id: String = r.get(0);
                Ok(TenantRecord {
                    tenant: TenantId::parse(&id).map_err(corrupt("tenants.tenant_id"))?,
                    sip_domains: domains.iter().filter(|d| d.get::<String, _>(1) == id).map(|d| d.get::<String, _>(0)).collect(),
                    limits: TenantLimits { devices_per_user: limit(r.get(1)), calls_per_second: limit(r.get(2)) },
                    created_at: r.get(3),
                    updated_at: r.get(4),
                })
            })
            .collect()
    }

    /// The tenant whose SIP domains hold `domain` (any case), else `default`.
    pub async fn tenant_for_domain(&self, domain: &str) -> Result<TenantId> {
        let holder: Option<String> = sqlx::query_scalar("SELECT tenant_id FROM tenant_domains WHERE domain = $1")
            .bind(domain.to_ascii_lowercase())
            .fetch_optional(&self.pool)
            .await?;
        match holder {
            Some(t) => TenantId::parse(&t).map_err(corrupt("tenant_domains.tenant_id")),
            None => Ok(TenantId::default_tenant()),
        }
    }

    /// Delete a tenant and everything it owns: users, devices, push claims,
    /// calls, queued callbacks and callback URLs, API keys, console
    /// sessions of its keys, the apps it owns (with their credentials and
    /// health) and its SIP domains. False if unknown. `default` cannot be
    /// deleted (`StoreError::DefaultTenant`).
    pub async fn delete_tenant(&self, tenant: &TenantId) -> Result<bool> {
        if tenant.is_default() {
            return Err(StoreError::DefaultTenant);
        }
        let t = tenant.as_str();
        let gate = self.writing().await;
        let mut tx = self.pool.begin().await?;
        let statements = [
            "DELETE FROM devices WHERE tenant_id = $1",
            "DELETE FROM users WHERE tenant_id = $1",
            "DELETE FROM push_claims WHERE tenant_id = $1",
            "DELETE FROM calls WHERE tenant_id = $1",
            "DELETE FROM callback_outbox WHERE tenant_id = $1",
            "DELETE FROM app_callbacks WHERE tenant_id = $1",
            "DELETE FROM console_sessions WHERE key_id IN (SELECT id FROM api_keys WHERE tenant_id = $1)",
            "DELETE FROM api_keys WHERE tenant_id = $1",
            "DELETE FROM credential_health WHERE app_id IN (SELECT app_id FROM apps WHERE owner_tenant = $1)",
            "DELETE FROM webhook_events WHERE app_id IN (SELECT app_id FROM apps WHERE owner_tenant = $1)",
            "DELETE FROM callback_outbox WHERE app_id IN (SELECT app_id FROM apps WHERE owner_tenant = $1)",
            "DELETE FROM app_callbacks WHERE app_id IN (SELECT app_id FROM apps WHERE owner_tenant = $1)",
            "DELETE FROM app_credentials WHERE app_id IN (SELECT app_id FROM apps WHERE owner_tenant = $1)",
            "DELETE FROM apps WHERE owner_tenant = $1",
            "DELETE FROM tenant_domains WHERE tenant_id = $1",
        ];
        for sql in statements {
            sqlx::query(sql).bind(t).execute(&mut *tx).await?;
        }
        let gone = sqlx::query("DELETE FROM tenants WHERE tenant_id = $1").bind(t).execute(&mut *tx).await?.rows_affected() > 0;
        tx.commit().await?;
        drop(gate);
        if gone {
            // Every cached user of the tenant goes (on every node).
            self.all_devices_changed().await;
        }
        Ok(gone)
    }
}

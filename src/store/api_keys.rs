//! API keys: only the SHA-256 of a key is stored; a revoked key keeps its
//! row (`revoked_at`) for the audit trail. A key with a tenant is a tenant
//! key (it acts inside that tenant only); without, an operator key.

use super::{corrupt, Result, Store};
use crate::domain::{AppId, Reach, TenantId};
use sqlx::Row;

/// An API key as stored (without the key).
#[derive(Clone, Debug)]
pub struct ApiKeyRecord {
    pub id: String,
    pub name: String,
    pub scopes: Vec<String>,
    pub app: Option<AppId>,
    /// `None`: an operator key.
    pub tenant: Option<TenantId>,
}

/// A live key and what its tenant allows it.
#[derive(Clone, Debug)]
pub struct LiveKey {
    pub record: ApiKeyRecord,
    /// The tenant's `calls_per_second` override, if it sets one.
    pub calls_per_second: Option<u32>,
}

const KEY_COLUMNS: &str = "k.id, k.name, k.scopes, k.app_id, k.tenant_id, t.calls_per_second";

fn live_key(r: &sqlx::any::AnyRow) -> Result<LiveKey> {
    let app = r.get::<Option<String>, _>(3).map(|a| AppId::parse(&a).map_err(corrupt("api_keys.app_id"))).transpose()?;
    let tenant = r.get::<Option<String>, _>(4).map(|t| TenantId::parse(&t).map_err(corrupt("api_keys.tenant_id"))).transpose()?;
    Ok(LiveKey {
        record: ApiKeyRecord {
            id: r.get(0),
            name: r.get(1),
            scopes: r.get::<String, _>(2).split(',').filter(|s| !s.is_empty()).map(str::to_string).collect(),
            app,
            tenant,
        },
        calls_per_second: r.get::<Option<i64>, _>(5).map(|n| n.clamp(0, i64::from(u32::MAX)) as u32),
    })
}

impl Store {
    pub async fn create_api_key(&self, key: &ApiKeyRecord, key_hash: &str, now_ms: i64) -> Result<()> {
        let _gate = self.writing().await;
        sqlx::query("INSERT INTO api_keys (id, name, key_hash, scopes, app_id, tenant_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(&key.id)
            .bind(&key.name)
            .bind(key_hash)
            .bind(key.scopes.join(","))
            .bind(key.app.as_ref().map(|a| a.as_str()))
            .bind(key.tenant.as_ref().map(TenantId::as_str))
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Revoke a key the reach may revoke (an operator: any key; a tenant:
    /// that tenant's keys); false if unknown, already revoked or another
    /// tenant's (the same answer).
    pub async fn revoke_api_key(&self, reach: &Reach, id: &str, now_ms: i64) -> Result<bool> {
        let _gate = self.writing().await;
        let r = match reach.tenant() {
            None => {
                sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                    .bind(now_ms)
                    .bind(id)
                    .execute(&self.pool)
                    .await?
            }
            Some(t) => {
                sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL AND tenant_id = $3")
                    .bind(now_ms)
                    .bind(id)
                    .bind(t.as_str())
                    .execute(&self.pool)
                    .await?
            }
        };
        Ok(r.rows_affected() > 0)
    }

    /// The live (not revoked) key with this hash. Read on every request, so
    /// a revocation on any node is in effect at once everywhere.
    pub async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<LiveKey>> {
        self.live_key_where("key_hash", key_hash).await
    }

    /// The live key with this id (a console session is checked against it
    /// on every request).
    pub async fn api_key_by_id(&self, id: &str) -> Result<Option<LiveKey>> {
        self.live_key_where("id", id).await
    }

    /// The live key whose `column` (`key_hash` or `id`) is `value`.
    async fn live_key_where(&self, column: &'static str, value: &str) -> Result<Option<LiveKey>> {
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM api_keys k LEFT JOIN tenants t ON t.tenant_id = k.tenant_id WHERE k.{column} = $1 AND k.revoked_at IS NULL"
        );
        let row = sqlx::query(&sql).bind(value).fetch_optional(&self.pool).await?;
        row.as_ref().map(live_key).transpose()
    }
}

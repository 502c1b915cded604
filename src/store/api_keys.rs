//! API keys: only the SHA-256 of a key is stored; a revoked key keeps its
//! row (`revoked_at`) for the audit trail.

use super::{Result, Store, StoreError};
use crate::domain::AppId;
use sqlx::Row;

/// An API key as stored (without the key).
#[derive(Clone, Debug)]
pub struct ApiKeyRecord {
    pub id: String,
    pub name: String,
    pub scopes: Vec<String>,
    pub app: Option<AppId>,
}

impl Store {
    pub async fn create_api_key(&self, key: &ApiKeyRecord, key_hash: &str, now_ms: i64) -> Result<()> {
        let _gate = self.writing().await;
        sqlx::query("INSERT INTO api_keys (id, name, key_hash, scopes, app_id, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&key.id)
            .bind(&key.name)
            .bind(key_hash)
            .bind(key.scopes.join(","))
            .bind(key.app.as_ref().map(|a| a.as_str()))
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Revoke a key; false if unknown or already revoked.
    pub async fn revoke_api_key(&self, id: &str, now_ms: i64) -> Result<bool> {
        let _gate = self.writing().await;
        let r = sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(now_ms)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// The live (not revoked) key with this hash. Read on every request, so
    /// a revocation on any node is in effect at once everywhere.
    pub async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKeyRecord>> {
        let row = sqlx::query("SELECT id, name, scopes, app_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL")
            .bind(key_hash)
            .fetch_optional(&self.pool)
            .await?;
        let Some(r) = row else { return Ok(None) };
        let app = match r.get::<Option<String>, _>(3) {
            Some(a) => Some(AppId::parse(&a).map_err(|e| StoreError::Corrupt(e.to_string()))?),
            None => None,
        };
        Ok(Some(ApiKeyRecord {
            id: r.get(0),
            name: r.get(1),
            scopes: r.get::<String, _>(2).split(',').filter(|s| !s.is_empty()).map(str::to_string).collect(),
            app,
        }))
    }
}

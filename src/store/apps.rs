//! Apps and their credentials (APNs, FCM, the Webex webhook secret): a
//! public summary plus a sealed secret per (app, kind).

use super::{corrupt, Result, Store, StoreError};
use crate::domain::{AppId, CredentialKind, Provider};
use crate::secret::Secret;
use sqlx::Row;

/// Provider credentials as stored: public summary + opened secret.
#[derive(Clone, Debug)]
pub struct StoredCredentials {
    pub kind: CredentialKind,
    pub summary: serde_json::Value,
    pub secret: Secret<String>,
    pub updated_at: i64,
}

/// The envelope context (AAD) of an app's credentials.
pub(super) fn cred_context(app: &str, kind: &str) -> String {
    format!("app:{app}:{kind}")
}

impl Store {
    /// Create the app if needed and replace its credentials of `kind`.
    pub async fn put_credentials(
        &self,
        app: &AppId,
        kind: CredentialKind,
        summary: &serde_json::Value,
        secret: &Secret<String>,
        lookup_key: Option<&str>,
        now_ms: i64,
    ) -> Result<()> {
        let sealed = self.keys.seal(&cred_context(app.as_str(), kind.as_str()), secret.expose().as_bytes());
        let _gate = self.writing().await;
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO apps (app_id, created_at) VALUES ($1, $2) ON CONFLICT (app_id) DO NOTHING")
            .bind(app.as_str())
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO app_credentials (app_id, provider, summary, secret, updated_at, lookup_key) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (app_id, provider) DO UPDATE SET summary = excluded.summary, secret = excluded.secret, \
             updated_at = excluded.updated_at, lookup_key = excluded.lookup_key",
        )
        .bind(app.as_str())
        .bind(kind.as_str())
        .bind(summary.to_string())
        .bind(sealed)
        .bind(now_ms)
        .bind(lookup_key)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn delete_credentials(&self, app: &AppId, kind: CredentialKind) -> Result<bool> {
        let _gate = self.writing().await;
        let r = sqlx::query("DELETE FROM app_credentials WHERE app_id = $1 AND provider = $2")
            .bind(app.as_str())
            .bind(kind.as_str())
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    pub async fn app_exists(&self, app: &AppId) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM apps WHERE app_id = $1").bind(app.as_str()).fetch_optional(&self.pool).await?;
        Ok(row.is_some())
    }

    /// Public summaries of an app's credentials; `None` if the app is unknown.
    pub async fn app_summary(&self, app: &AppId) -> Result<Option<Vec<(String, serde_json::Value, i64)>>> {
        if !self.app_exists(app).await? {
            return Ok(None);
        }
        let rows = sqlx::query("SELECT provider, summary, updated_at FROM app_credentials WHERE app_id = $1 ORDER BY provider")
            .bind(app.as_str())
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::new();
        for r in rows {
            let summary: String = r.get(1);
            let v = serde_json::from_str(&summary).map_err(corrupt("credential summary"))?;
            out.push((r.get::<String, _>(0), v, r.get::<i64, _>(2)));
        }
        Ok(Some(out))
    }

    /// The (opened) credentials of an app of one kind.
    pub async fn credentials(&self, app: &AppId, kind: CredentialKind) -> Result<Option<StoredCredentials>> {
        let row = sqlx::query("SELECT summary, secret, updated_at FROM app_credentials WHERE app_id = $1 AND provider = $2")
            .bind(app.as_str())
            .bind(kind.as_str())
            .fetch_optional(&self.pool)
            .await?;
        let Some(r) = row else { return Ok(None) };
        let summary: String = r.get(0);
        let sealed: String = r.get(1);
        Ok(Some(StoredCredentials {
            kind,
            summary: serde_json::from_str(&summary).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            secret: self.keys.open_string(&cred_context(app.as_str(), kind.as_str()), &sealed)?,
            updated_at: r.get(2),
        }))
    }

    /// When an app's credentials of `kind` last changed, without opening them.
    pub async fn credentials_updated_at(&self, app: &AppId, kind: CredentialKind) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT updated_at FROM app_credentials WHERE app_id = $1 AND provider = $2")
            .bind(app.as_str())
            .bind(kind.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get::<i64, _>(0)))
    }

    /// The app whose `provider` credentials carry `lookup_key` (APNs: the
    /// bundle id; FCM: the project id). With several, the oldest app id wins.
    pub async fn app_for_lookup(&self, provider: Provider, lookup_key: &str) -> Result<Option<AppId>> {
        let row = sqlx::query("SELECT app_id FROM app_credentials WHERE provider = $1 AND lookup_key = $2 ORDER BY app_id LIMIT 1")
            .bind(provider.as_str())
            .bind(lookup_key)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(r) => Ok(Some(AppId::parse(&r.get::<String, _>(0)).map_err(corrupt("app_id"))?)),
            None => Ok(None),
        }
    }

    pub async fn has_credentials(&self, app: &AppId, kind: CredentialKind) -> Result<bool> {
        Ok(self.credentials_updated_at(app, kind).await?.is_some())
    }
}

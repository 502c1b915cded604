//! Apps and their credentials (APNs, FCM, the Webex webhook secret): a
//! public summary plus a sealed secret per (app, kind).
//!
//! An app is shared (`owner_tenant` NULL: an operator made it, every
//! tenant's devices may use it) or owned by one tenant. Every method takes
//! the `Reach` it acts with: an operator's sees every app; a tenant's sees
//! the shared apps and its own, and to it another tenant's app does not
//! exist. App ids are global: a tenant cannot take an id that exists.

use super::{corrupt, Result, Store, StoreError};
use crate::domain::{AppId, CredentialKind, Provider, Reach, TenantId};
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

/// An app as the console lists it.
#[derive(Clone, Debug)]
pub struct AppListing {
    pub app: AppId,
    /// `None`: shared.
    pub owner: Option<TenantId>,
}

/// The envelope context (AAD) of an app's credentials.
pub(super) fn cred_context(app: &str, kind: &str) -> String {
    format!("app:{app}:{kind}")
}

/// ` AND <alias>.owner_tenant …` and ` AND <alias>.app_id = …` for a reach,
/// numbering parameters from `n`; and the values to bind, in order.
pub(super) fn visible(reach: &Reach, alias: &str, mut n: usize) -> (String, Vec<String>) {
    let (mut sql, mut binds) = (String::new(), Vec::new());
    if let Some(t) = reach.tenant() {
        sql.push_str(&format!(" AND ({alias}.owner_tenant IS NULL OR {alias}.owner_tenant = ${n})"));
        binds.push(t.as_str().to_string());
        n += 1;
    }
    if let Some(a) = reach.app() {
        sql.push_str(&format!(" AND {alias}.app_id = ${n}"));
        binds.push(a.as_str().to_string());
    }
    (sql, binds)
}

fn owner_of(raw: Option<String>) -> Result<Option<TenantId>> {
    raw.map(|t| TenantId::parse(&t).map_err(corrupt("apps.owner_tenant"))).transpose()
}

impl Store {
    /// Create the app if needed (shared for an operator reach, else owned by
    /// the reach's tenant) and replace its credentials of `kind`. A tenant
    /// may only change apps it owns: an app id that exists as a shared app
    /// or another tenant's → `StoreError::AppTaken`, nothing written.
    #[allow(clippy::too_many_arguments)]
    pub async fn put_credentials(
        &self,
        reach: &Reach,
        app: &AppId,
        kind: CredentialKind,
        summary: &serde_json::Value,
        secret: &Secret<String>,
        lookup_key: Option<&str>,
        now_ms: i64,
    ) -> Result<()> {
        if !reach.admits(app) {
            return Err(StoreError::UnknownApp(app.clone()));
        }
        let sealed = self.keys.seal(&cred_context(app.as_str(), kind.as_str()), secret.expose().as_bytes());
        let _gate = self.writing().await;
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO apps (app_id, created_at, owner_tenant) VALUES ($1, $2, $3) ON CONFLICT (app_id) DO NOTHING")
            .bind(app.as_str())
            .bind(now_ms)
            .bind(reach.tenant().map(TenantId::as_str))
            .execute(&mut *tx)
            .await?;
        let lock = if self.backend == super::Backend::Postgres { " FOR UPDATE" } else { "" };
        let row = sqlx::query(&format!("SELECT owner_tenant FROM apps WHERE app_id = $1{lock}")).bind(app.as_str()).fetch_one(&mut *tx).await?;
        let owner = owner_of(row.get::<Option<String>, _>(0))?;
        if let Some(t) = reach.tenant() {
            if owner.as_ref() != Some(t) {
                return Err(StoreError::AppTaken(app.clone()));
            }
        }
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

    /// Delete an app's credentials of `kind`; whether there were any. An app
    /// the reach does not see → `UnknownApp`; a shared app or another
    /// tenant's, for a tenant → `AppTaken`.
    pub async fn delete_credentials(&self, reach: &Reach, app: &AppId, kind: CredentialKind) -> Result<bool> {
        match self.visible_app(reach, app).await? {
            None => return Err(StoreError::UnknownApp(app.clone())),
            Some(owner) if reach.tenant().is_some() && owner.as_ref() != reach.tenant() => return Err(StoreError::AppTaken(app.clone())),
            Some(_) => {}
        }
        let _gate = self.writing().await;
        let r = sqlx::query("DELETE FROM app_credentials WHERE app_id = $1 AND provider = $2")
            .bind(app.as_str())
            .bind(kind.as_str())
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// `Some(owner)` when the reach sees the app (`owner` `None`: shared);
    /// `None` when it does not exist or belongs to a tenant the reach does
    /// not (the same answer).
    pub async fn visible_app(&self, reach: &Reach, app: &AppId) -> Result<Option<Option<TenantId>>> {
        let (clause, binds) = visible(reach, "a", 2);
        let sql = format!("SELECT a.owner_tenant FROM apps a WHERE a.app_id = $1{clause}");
        let mut q = sqlx::query_scalar::<_, Option<String>>(&sql).bind(app.as_str());
        for b in &binds {
            q = q.bind(b.as_str());
        }
        match q.fetch_optional(&self.pool).await? {
            Some(owner) => Ok(Some(owner_of(owner)?)),
            None => Ok(None),
        }
    }

    pub async fn app_exists(&self, reach: &Reach, app: &AppId) -> Result<bool> {
        Ok(self.visible_app(reach, app).await?.is_some())
    }

    /// Public summaries of an app's credentials; `None` if the reach does
    /// not see the app.
    pub async fn app_summary(&self, reach: &Reach, app: &AppId) -> Result<Option<Vec<(String, serde_json::Value, i64)>>> {
        if !self.app_exists(reach, app).await? {
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

    /// The (opened) credentials of an app of one kind, if the reach sees it.
    pub async fn credentials(&self, reach: &Reach, app: &AppId, kind: CredentialKind) -> Result<Option<StoredCredentials>> {
        let (clause, binds) = visible(reach, "a", 3);
        let sql = format!(
            "SELECT c.summary, c.secret, c.updated_at FROM app_credentials c JOIN apps a ON a.app_id = c.app_id WHERE c.app_id = $1 AND c.provider = $2{clause}"
        );
        let mut q = sqlx::query(&sql).bind(app.as_str()).bind(kind.as_str());
        for b in &binds {
            q = q.bind(b.as_str());
        }
        let Some(r) = q.fetch_optional(&self.pool).await? else { return Ok(None) };
        let summary: String = r.get(0);
        let sealed: String = r.get(1);
        Ok(Some(StoredCredentials {
            kind,
            summary: serde_json::from_str(&summary).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            secret: self.keys.open_string(&cred_context(app.as_str(), kind.as_str()), &sealed)?,
            updated_at: r.get(2),
        }))
    }

    /// When an app's credentials of `kind` last changed, without opening
    /// them (`None`: none, or an app the reach does not see).
    pub async fn credentials_updated_at(&self, reach: &Reach, app: &AppId, kind: CredentialKind) -> Result<Option<i64>> {
        let (clause, binds) = visible(reach, "a", 3);
        let sql =
            format!("SELECT c.updated_at FROM app_credentials c JOIN apps a ON a.app_id = c.app_id WHERE c.app_id = $1 AND c.provider = $2{clause}");
        let mut q = sqlx::query(&sql).bind(app.as_str()).bind(kind.as_str());
        for b in &binds {
            q = q.bind(b.as_str());
        }
        Ok(q.fetch_optional(&self.pool).await?.map(|r| r.get::<i64, _>(0)))
    }

    /// The app the reach sees whose `provider` credentials carry
    /// `lookup_key` (APNs: the bundle id; FCM: the project id). With
    /// several, the reach's own app wins, then the oldest app id.
    pub async fn app_for_lookup(&self, reach: &Reach, provider: Provider, lookup_key: &str) -> Result<Option<AppId>> {
        let (clause, binds) = visible(reach, "a", 3);
        let sql = format!(
            "SELECT c.app_id FROM app_credentials c JOIN apps a ON a.app_id = c.app_id WHERE c.provider = $1 AND c.lookup_key = $2{clause} \
             ORDER BY CASE WHEN a.owner_tenant IS NULL THEN 1 ELSE 0 END, c.app_id LIMIT 1"
        );
        let mut q = sqlx::query(&sql).bind(provider.as_str()).bind(lookup_key);
        for b in &binds {
            q = q.bind(b.as_str());
        }
        match q.fetch_optional(&self.pool).await? {
            Some(r) => Ok(Some(AppId::parse(&r.get::<String, _>(0)).map_err(corrupt("app_id"))?)),
            None => Ok(None),
        }
    }

    pub async fn has_credentials(&self, reach: &Reach, app: &AppId, kind: CredentialKind) -> Result<bool> {
        Ok(self.credentials_updated_at(reach, app, kind).await?.is_some())
    }

    /// The apps the reach sees with credentials of `kind`, by id (at most 100).
    pub async fn apps_with_credentials(&self, reach: &Reach, kind: CredentialKind) -> Result<Vec<AppId>> {
        let (clause, binds) = visible(reach, "a", 2);
        let sql = format!(
            "SELECT c.app_id FROM app_credentials c JOIN apps a ON a.app_id = c.app_id WHERE c.provider = $1{clause} ORDER BY c.app_id LIMIT 100"
        );
        let mut q = sqlx::query(&sql).bind(kind.as_str());
        for b in &binds {
            q = q.bind(b.as_str());
        }
        q.fetch_all(&self.pool).await?.iter().map(|r| AppId::parse(&r.get::<String, _>(0)).map_err(corrupt("app_id"))).collect()
    }

    /// The apps the reach sees, sorted (at most 1000).
    pub async fn apps(&self, reach: &Reach) -> Result<Vec<AppListing>> {
        let (clause, binds) = visible(reach, "a", 1);
        let sql = format!("SELECT a.app_id, a.owner_tenant FROM apps a WHERE 1 = 1{clause} ORDER BY a.app_id LIMIT 1000");
        let mut q = sqlx::query(&sql);
        for b in &binds {
            q = q.bind(b.as_str());
        }
        let mut out = Vec::new();
        for r in q.fetch_all(&self.pool).await? {
            out.push(AppListing { app: AppId::parse(&r.get::<String, _>(0)).map_err(corrupt("app_id"))?, owner: owner_of(r.get(1))? });
        }
        Ok(out)
    }
}

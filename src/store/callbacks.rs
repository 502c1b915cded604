//! Delivery callbacks: the outbox of call reports to POST to apps'
//! callback URLs (interface.md §7). Rows are written with the report
//! (`write_batch`), leased by one node at a time while it posts them, and
//! deleted when the receiver took them or the retry time ran out.

use super::{corrupt, Result, Store, StoreError};
use crate::domain::{AppId, Reach, Scope, TenantId};
use crate::secret::Secret;
use sqlx::Row;
use std::collections::HashSet;

/// The envelope context (AAD) of a callback secret. The tenant `default`
/// keeps the context its secrets were sealed with before tenants (as an
/// app credential of kind `callback`).
pub(super) fn callback_context(tenant: &str, app: &str) -> String {
    if tenant == TenantId::DEFAULT {
        super::apps::cred_context(app, "callback")
    } else {
        format!("callback:{tenant}/{app}")
    }
}

/// A tenant's callback URL for an app, secret opened.
#[derive(Clone, Debug)]
pub struct CallbackTarget {
    pub summary: serde_json::Value,
    pub secret: Secret<String>,
    pub updated_at: i64,
}

/// A report to post to `app`'s callback URL (queued with the call report).
#[derive(Clone, Debug)]
pub struct PendingCallback {
    pub app: AppId,
    pub body: String,
}

/// A queued callback leased to this node.
#[derive(Clone, Debug)]
pub struct LeasedCallback {
    pub id: String,
    pub tenant: TenantId,
    pub app: AppId,
    pub call_id: String,
    pub body: String,
    pub attempts: i32,
    pub created_at: i64,
}

impl Store {
    /// Set the scope's callback for `app` (an app its tenant sees: its own
    /// or a shared one, else `UnknownApp`).
    pub async fn put_callback(&self, scope: &Scope, app: &AppId, summary: &serde_json::Value, secret: &Secret<String>, now_ms: i64) -> Result<()> {
        if !scope.admits(app) || !self.app_exists(&Reach::of(scope), app).await? {
            return Err(StoreError::UnknownApp(app.clone()));
        }
        let tenant = scope.tenant_id().as_str();
        let sealed = self.keys.seal(&callback_context(tenant, app.as_str()), secret.expose().as_bytes());
        let _gate = self.writing().await;
        sqlx::query(
            "INSERT INTO app_callbacks (tenant_id, app_id, summary, secret, updated_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (tenant_id, app_id) DO UPDATE SET summary = excluded.summary, secret = excluded.secret, updated_at = excluded.updated_at",
        )
        .bind(tenant)
        .bind(app.as_str())
        .bind(summary.to_string())
        .bind(sealed)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Remove the scope's callback for `app`; whether there was one.
    pub async fn delete_callback(&self, scope: &Scope, app: &AppId) -> Result<bool> {
        if !scope.admits(app) {
            return Ok(false);
        }
        let _gate = self.writing().await;
        let r = sqlx::query("DELETE FROM app_callbacks WHERE tenant_id = $1 AND app_id = $2")
            .bind(scope.tenant_id().as_str())
            .bind(app.as_str())
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// The scope's callback for `app`, secret opened.
    pub async fn callback(&self, scope: &Scope, app: &AppId) -> Result<Option<CallbackTarget>> {
        if !scope.admits(app) {
            return Ok(None);
        }
        let tenant = scope.tenant_id().as_str();
        let row = sqlx::query("SELECT summary, secret, updated_at FROM app_callbacks WHERE tenant_id = $1 AND app_id = $2")
            .bind(tenant)
            .bind(app.as_str())
            .fetch_optional(&self.pool)
            .await?;
        let Some(r) = row else { return Ok(None) };
        Ok(Some(CallbackTarget {
            summary: serde_json::from_str(&r.get::<String, _>(0)).map_err(corrupt("callback summary"))?,
            secret: self.keys.open_string(&callback_context(tenant, app.as_str()), &r.get::<String, _>(1))?,
            updated_at: r.get(2),
        }))
    }

    /// Every (tenant, app) with a callback URL: what the call path checks a
    /// report against (its own tenant's pairs only) before queueing it.
    pub async fn callback_targets(&self) -> Result<HashSet<(TenantId, AppId)>> {
        let rows = sqlx::query("SELECT tenant_id, app_id FROM app_callbacks").fetch_all(&self.pool).await?;
        Ok(rows.iter().filter_map(|r| Some((TenantId::parse(&r.get::<String, _>(0)).ok()?, AppId::parse(&r.get::<String, _>(1)).ok()?))).collect())
    }

    /// Lease up to `limit` due callbacks for `lease_ms` (another node takes
    /// them over only once the lease has run out).
    pub async fn lease_callbacks(&self, now_ms: i64, lease_ms: i64, limit: i64) -> Result<Vec<LeasedCallback>> {
        let rows = sqlx::query(
            "SELECT id, app_id, call_id, body, attempts, created_at, leased_until, tenant_id FROM callback_outbox \
             WHERE next_at <= $1 AND leased_until <= $1 ORDER BY next_at LIMIT $2",
        )
        .bind(now_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for r in rows {
            let id: String = r.get(0);
            let seen: i64 = r.get(6);
            let _gate = self.writing().await;
            // Compare-and-set on the lease: one node wins each row.
            let won = sqlx::query("UPDATE callback_outbox SET leased_until = $1 WHERE id = $2 AND leased_until = $3")
                .bind(now_ms + lease_ms)
                .bind(&id)
                .bind(seen)
                .execute(&self.pool)
                .await?
                .rows_affected()
                == 1;
            let (Ok(app), Ok(tenant)) = (AppId::parse(&r.get::<String, _>(1)), TenantId::parse(&r.get::<String, _>(7))) else { continue };
            if won {
                out.push(LeasedCallback { id, tenant, app, call_id: r.get(2), body: r.get(3), attempts: r.get(4), created_at: r.get(5) });
            }
        }
        Ok(out)
    }

    /// The receiver took it (or it is given up): forget it.
    pub async fn callback_done(&self, id: &str) -> Result<()> {
        let _gate = self.writing().await;
        sqlx::query("DELETE FROM callback_outbox WHERE id = $1").bind(id).execute(&self.pool).await?;
        Ok(())
    }

    /// Try again at `next_at` (the lease ends).
    pub async fn callback_retry(&self, id: &str, attempts: i32, next_at: i64) -> Result<()> {
        let _gate = self.writing().await;
        sqlx::query("UPDATE callback_outbox SET attempts = $1, next_at = $2, leased_until = 0 WHERE id = $3")
            .bind(attempts)
            .bind(next_at)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Callbacks still queued (for tests and the console).
    pub async fn callbacks_queued(&self) -> Result<i64> {
        Ok(sqlx::query("SELECT COUNT(*) FROM callback_outbox").fetch_one(&self.pool).await?.get::<i64, _>(0))
    }
}

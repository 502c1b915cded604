//! Delivery callbacks: the outbox of call reports to POST to apps'
//! callback URLs (interface.md §7). Rows are written with the report
//! (`write_batch`), leased by one node at a time while it posts them, and
//! deleted when the receiver took them or the retry time ran out.

use super::{Result, Store};
use crate::domain::{AppId, CredentialKind};
use sqlx::Row;
use std::collections::HashSet;

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
    pub app: AppId,
    pub call_id: String,
    pub body: String,
    pub attempts: i32,
    pub created_at: i64,
}

impl Store {
    /// The apps that have a callback URL.
    pub async fn callback_apps(&self) -> Result<HashSet<AppId>> {
        let rows = sqlx::query("SELECT app_id FROM app_credentials WHERE provider = $1").bind(CredentialKind::Callback.as_str()).fetch_all(&self.pool).await?;
        Ok(rows.iter().filter_map(|r| AppId::parse(&r.get::<String, _>(0)).ok()).collect())
    }

    /// Lease up to `limit` due callbacks for `lease_ms` (another node takes
    /// them over only once the lease has run out).
    pub async fn lease_callbacks(&self, now_ms: i64, lease_ms: i64, limit: i64) -> Result<Vec<LeasedCallback>> {
        let rows = sqlx::query(
            "SELECT id, app_id, call_id, body, attempts, created_at, leased_until FROM callback_outbox \
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
            let Ok(app) = AppId::parse(&r.get::<String, _>(1)) else { continue };
            if won {
                out.push(LeasedCallback { id, app, call_id: r.get(2), body: r.get(3), attempts: r.get(4), created_at: r.get(5) });
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

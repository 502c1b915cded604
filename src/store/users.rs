//! End users, `(tenant, user id)`: the id every device belongs to, and for
//! UDS and Acrobits users the Argon2 hash of their password.

use super::{Result, Store};
use crate::domain::{Scope, UserId};
use sqlx::Row;

impl Store {
    /// Create or replace a user's password hash in the scope's tenant; true
    /// when created. Two single statements (no read-then-write transaction,
    /// which SQLite refuses under concurrent writers with SQLITE_BUSY_SNAPSHOT).
    pub async fn upsert_user(&self, scope: &Scope, user: &UserId, password_hash: Option<&str>, now_ms: i64) -> Result<bool> {
        let tenant = scope.tenant_id().as_str();
        let _gate = self.writing().await;
        let created = sqlx::query(
            "INSERT INTO users (tenant_id, user_id, password_hash, created_at, updated_at) VALUES ($1, $2, $3, $4, $4) \
             ON CONFLICT (tenant_id, user_id) DO NOTHING",
        )
        .bind(tenant)
        .bind(user.as_str())
        .bind(password_hash)
        .bind(now_ms)
        .execute(&self.pool)
        .await?
        .rows_affected()
            > 0;
        if !created {
            sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE tenant_id = $3 AND user_id = $4")
                .bind(password_hash)
                .bind(now_ms)
                .bind(tenant)
                .bind(user.as_str())
                .execute(&self.pool)
                .await?;
        }
        Ok(created)
    }

    /// Delete a user of the scope's tenant and their devices; false if unknown.
    pub async fn delete_user(&self, scope: &Scope, user: &UserId) -> Result<bool> {
        let tenant = scope.tenant_id().as_str();
        let gate = self.writing().await;
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM devices WHERE tenant_id = $1 AND user_id = $2").bind(tenant).bind(user.as_str()).execute(&mut *tx).await?;
        let r = sqlx::query("DELETE FROM users WHERE tenant_id = $1 AND user_id = $2").bind(tenant).bind(user.as_str()).execute(&mut *tx).await?;
        tx.commit().await?;
        drop(gate);
        self.devices_changed(scope.tenant_id(), vec![user.as_str().to_string()]).await;
        Ok(r.rows_affected() > 0)
    }

    /// Whether the scope's tenant has this user (and, for a scope narrowed
    /// to an app, whether the user has a device of that app: a user an
    /// app-bound key cannot see does not exist for it).
    pub async fn user_exists(&self, scope: &Scope, user: &UserId) -> Result<bool> {
        let row = match scope.app() {
            None => {
                sqlx::query("SELECT 1 FROM users WHERE tenant_id = $1 AND user_id = $2")
                    .bind(scope.tenant_id().as_str())
                    .bind(user.as_str())
                    .fetch_optional(&self.pool)
                    .await?
            }
            Some(app) => {
                sqlx::query("SELECT 1 FROM devices WHERE tenant_id = $1 AND user_id = $2 AND app_id = $3 LIMIT 1")
                    .bind(scope.tenant_id().as_str())
                    .bind(user.as_str())
                    .bind(app.as_str())
                    .fetch_optional(&self.pool)
                    .await?
            }
        };
        Ok(row.is_some())
    }

    /// The stored password hash of a user of the scope's tenant (`None`:
    /// unknown user or no password).
    pub async fn password_hash(&self, scope: &Scope, user: &UserId) -> Result<Option<String>> {
        let row = sqlx::query("SELECT password_hash FROM users WHERE tenant_id = $1 AND user_id = $2")
            .bind(scope.tenant_id().as_str())
            .bind(user.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.and_then(|r| r.get::<Option<String>, _>(0)))
    }
}

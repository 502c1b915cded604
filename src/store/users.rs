//! End users: the id every device belongs to, and for UDS and Acrobits
//! users the Argon2 hash of their password.

use super::{Result, Store};
use crate::domain::UserId;
use sqlx::Row;

impl Store {
    /// Create or replace a user's password hash; true when created. Two
    /// single statements (no read-then-write transaction, which SQLite
    /// refuses under concurrent writers with SQLITE_BUSY_SNAPSHOT).
    pub async fn upsert_user(&self, user: &UserId, password_hash: Option<&str>, now_ms: i64) -> Result<bool> {
        let _gate = self.writing().await;
        let created = sqlx::query(
            "INSERT INTO users (user_id, password_hash, created_at, updated_at) VALUES ($1, $2, $3, $3) ON CONFLICT (user_id) DO NOTHING",
        )
        .bind(user.as_str())
        .bind(password_hash)
        .bind(now_ms)
        .execute(&self.pool)
        .await?
        .rows_affected()
            > 0;
        if !created {
            sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE user_id = $3")
                .bind(password_hash)
                .bind(now_ms)
                .bind(user.as_str())
                .execute(&self.pool)
                .await?;
        }
        Ok(created)
    }

    /// Delete a user and their devices; false if unknown.
    pub async fn delete_user(&self, user: &UserId) -> Result<bool> {
        let gate = self.writing().await;
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM devices WHERE user_id = $1").bind(user.as_str()).execute(&mut *tx).await?;
        let r = sqlx::query("DELETE FROM users WHERE user_id = $1").bind(user.as_str()).execute(&mut *tx).await?;
        tx.commit().await?;
        drop(gate);
        self.devices_changed(vec![user.as_str().to_string()]).await;
        Ok(r.rows_affected() > 0)
    }

    pub async fn user_exists(&self, user: &UserId) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM users WHERE user_id = $1").bind(user.as_str()).fetch_optional(&self.pool).await?;
        Ok(row.is_some())
    }

    /// The stored password hash (`None`: unknown user or no password).
    pub async fn password_hash(&self, user: &UserId) -> Result<Option<String>> {
        let row = sqlx::query("SELECT password_hash FROM users WHERE user_id = $1").bind(user.as_str()).fetch_optional(&self.pool).await?;
        Ok(row.and_then(|r| r.get::<Option<String>, _>(0)))
    }
}

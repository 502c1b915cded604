//! Webhook replay keys: a signed Webex envelope is acted on once, on any
//! node, within 24 hours (a unique key, so two nodes cannot both win).

use super::{Result, Store};
use crate::domain::AppId;

/// How long a replay key is remembered.
pub const REPLAY_WINDOW_MS: i64 = 24 * 3600 * 1000;

impl Store {
    /// Remember `replay_key` for `app`; false when it was already seen.
    pub async fn remember_webhook(&self, app: &AppId, replay_key: &str, now_ms: i64) -> Result<bool> {
        let _gate = self.writing().await;
        let r =
            sqlx::query("INSERT INTO webhook_events (app_id, replay_key, seen_at) VALUES ($1, $2, $3) ON CONFLICT (app_id, replay_key) DO NOTHING")
                .bind(app.as_str())
                .bind(replay_key)
                .bind(now_ms)
                .execute(&self.pool)
                .await?;
        Ok(r.rows_affected() > 0)
    }
}

#[cfg(test)]
mod tests {
    use crate::domain::AppId;
    use crate::store::test_support::store;

    #[tokio::test]
    async fn a_replay_key_is_taken_once_per_app_until_pruned() {
        let (s, _d) = store().await;
        let (a, b) = (AppId::parse("app.a").unwrap(), AppId::parse("app.b").unwrap());
        assert!(s.remember_webhook(&a, "k1", 1_000).await.unwrap());
        assert!(!s.remember_webhook(&a, "k1", 2_000).await.unwrap());
        assert!(s.remember_webhook(&b, "k1", 2_000).await.unwrap(), "another app's key space");
        assert_eq!(s.prune(0, 0, 1_500).await.unwrap(), (0, 0, 1));
        assert!(s.remember_webhook(&a, "k1", 3_000).await.unwrap());
    }
}

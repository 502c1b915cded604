//! Credential health: what the providers last said about each app's
//! credentials (interface.md §7). Written by the dispatcher, read by
//! `GET /v1/apps/{app}` and the console.

use super::{corrupt, Result, Store};
use crate::domain::{AppId, Provider, Reach};
use sqlx::Row;

/// The last success and the last refusal of one app's credentials at one
/// provider (epoch ms).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CredentialHealth {
    pub last_success_at: Option<i64>,
    pub last_failure_at: Option<i64>,
    /// The provider's reason for the last refusal (`InvalidProviderToken`,
    /// `SENDER_ID_MISMATCH`, …).
    pub last_reason: Option<String>,
}

/// What the health says, as the API names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthState {
    /// The last answer was a success.
    Ok,
    /// The last answer refused the credentials.
    Failing,
    /// No answer yet.
    Unknown,
}

impl HealthState {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Ok => "ok",
            HealthState::Failing => "failing",
            HealthState::Unknown => "unknown",
        }
    }
}

impl CredentialHealth {
    pub fn state(&self) -> HealthState {
        match (self.last_success_at, self.last_failure_at) {
            (None, None) => HealthState::Unknown,
            (Some(_), None) => HealthState::Ok,
            (None, Some(_)) => HealthState::Failing,
            (Some(ok), Some(bad)) => {
                if ok >= bad {
                    HealthState::Ok
                } else {
                    HealthState::Failing
                }
            }
        }
    }
}

impl Store {
    /// Record a success (`reason` = `None`) or a refusal at `at_ms`.
    pub async fn record_credential_health(&self, app: &AppId, provider: Provider, at_ms: i64, refused: Option<&str>) -> Result<()> {
        let _gate = self.writing().await;
        let sql = match refused {
            None => {
                "INSERT INTO credential_health (app_id, provider, last_success_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (app_id, provider) DO UPDATE SET last_success_at = excluded.last_success_at"
            }
            Some(_) => {
                "INSERT INTO credential_health (app_id, provider, last_failure_at, last_reason) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (app_id, provider) DO UPDATE SET last_failure_at = excluded.last_failure_at, last_reason = excluded.last_reason"
            }
        };
        let mut q = sqlx::query(sql).bind(app.as_str()).bind(provider.as_str()).bind(at_ms);
        if let Some(reason) = refused {
            q = q.bind(reason.chars().take(300).collect::<String>());
        }
        q.execute(&self.pool).await?;
        Ok(())
    }

    /// The health of an app's credentials per provider (`apns`, `fcm`), if
    /// the reach sees the app (else none).
    pub async fn credential_health(&self, reach: &Reach, app: &AppId) -> Result<Vec<(Provider, CredentialHealth)>> {
        let (clause, binds) = super::apps::visible(reach, "a", 2);
        let sql = format!(
            "SELECT h.provider, h.last_success_at, h.last_failure_at, h.last_reason FROM credential_health h JOIN apps a ON a.app_id = h.app_id \
             WHERE h.app_id = $1{clause} ORDER BY h.provider"
        );
        let mut q = sqlx::query(&sql).bind(app.as_str());
        for b in &binds {
            q = q.bind(b.as_str());
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let provider =
                    Provider::parse(&r.get::<String, _>(0)).map_err(|_| super::StoreError::Corrupt("credential_health provider".into()))?;
                Ok((provider, CredentialHealth { last_success_at: r.get(1), last_failure_at: r.get(2), last_reason: r.get(3) }))
            })
            .collect()
    }

    /// Every app with certificate credentials and the certificate's notAfter
    /// (epoch seconds), from the stored summaries.
    pub async fn certificate_expiries(&self) -> Result<Vec<(AppId, Provider, i64)>> {
        let rows = sqlx::query("SELECT app_id, provider, summary FROM app_credentials ORDER BY app_id").fetch_all(&self.pool).await?;
        let mut out = Vec::new();
        for r in rows {
            let summary: serde_json::Value = serde_json::from_str(&r.get::<String, _>(2)).map_err(corrupt("credential summary"))?;
            let Some(t) = summary.get("notAfter").and_then(|v| v.as_i64()) else { continue };
            let (Ok(app), Ok(provider)) = (AppId::parse(&r.get::<String, _>(0)), Provider::parse(&r.get::<String, _>(1))) else { continue };
            out.push((app, provider, t));
        }
        Ok(out)
    }
}

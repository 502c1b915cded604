//! What the operator console reads and writes: provider minutes, recent
//! calls with filters, device counts, and console sessions. Every query is
//! bounded (an index range or a LIMIT) so the page stays cheap with a big
//! history.

use super::{Result, Store};
use crate::domain::{AppId, CallReport, Provider, Reach};
use sqlx::Row;

/// Upper bounds (ms) of the latency buckets; a last bucket takes the rest.
pub const LATENCY_BUCKETS_MS: [f64; 12] = [1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0];

/// Provider requests of one minute (epoch minutes) on this node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProviderMinute {
    pub requests: i64,
    pub errors: i64,
    pub buckets: [i64; 13],
}

impl ProviderMinute {
    pub fn record(&mut self, ms: f64, error: bool) {
        self.requests += 1;
        self.errors += i64::from(error);
        let i = LATENCY_BUCKETS_MS.iter().position(|b| ms <= *b).unwrap_or(LATENCY_BUCKETS_MS.len());
        self.buckets[i] += 1;
    }

    pub fn add(&mut self, other: &ProviderMinute) {
        self.requests += other.requests;
        self.errors += other.errors;
        for (a, b) in self.buckets.iter_mut().zip(other.buckets) {
            *a += b;
        }
    }

    /// The latency below which `q` of the requests fell (a bucket's upper
    /// bound; `None` with no requests).
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total: i64 = self.buckets.iter().sum();
        if total == 0 {
            return None;
        }
        let want = (q * total as f64).ceil().max(1.0) as i64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= want {
                return Some(LATENCY_BUCKETS_MS.get(i).copied().unwrap_or(10_000.0));
            }
        }
        None
    }
}

/// What signed a console session in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionSigner {
    /// An API key, by id.
    Key(String),
    /// The admin token, by a fingerprint (a hash of its hash): a session
    /// ends when the relay runs with another admin token.
    AdminToken(String),
}

/// One row of the console's call list.
#[derive(Clone, Debug)]
pub struct RecentCall {
    pub tenant: String,
    pub user: String,
    pub push_id: String,
    pub created_at: i64,
    pub report: CallReport,
}

impl Store {
    /// Add this node's minutes to the shared ones.
    pub async fn add_provider_minutes(&self, minutes: &[(i64, Provider, ProviderMinute)]) -> Result<()> {
        if minutes.is_empty() {
            return Ok(());
        }
        let _gate = self.writing().await;
        let mut tx = self.pool.begin().await?;
        for (minute, provider, m) in minutes {
            let mut q = sqlx::query(
                "INSERT INTO provider_minutes (minute, provider, requests, errors, b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11, b12) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) \
                 ON CONFLICT (minute, provider) DO UPDATE SET requests = provider_minutes.requests + excluded.requests, \
                 errors = provider_minutes.errors + excluded.errors, b0 = provider_minutes.b0 + excluded.b0, \
                 b1 = provider_minutes.b1 + excluded.b1, b2 = provider_minutes.b2 + excluded.b2, b3 = provider_minutes.b3 + excluded.b3, \
                 b4 = provider_minutes.b4 + excluded.b4, b5 = provider_minutes.b5 + excluded.b5, b6 = provider_minutes.b6 + excluded.b6, \
                 b7 = provider_minutes.b7 + excluded.b7, b8 = provider_minutes.b8 + excluded.b8, b9 = provider_minutes.b9 + excluded.b9, \
                 b10 = provider_minutes.b10 + excluded.b10, b11 = provider_minutes.b11 + excluded.b11, b12 = provider_minutes.b12 + excluded.b12",
            )
            .bind(*minute)
            .bind(provider.as_str())
            .bind(m.requests)
            .bind(m.errors);
            for b in m.buckets {
                q = q.bind(b);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The provider minutes from `since_minute` on, oldest first.
    pub async fn provider_minutes(&self, since_minute: i64) -> Result<Vec<(i64, Provider, ProviderMinute)>> {
        let rows = sqlx::query(
            "SELECT minute, provider, requests, errors, b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11, b12 \
             FROM provider_minutes WHERE minute >= $1 ORDER BY minute",
        )
        .bind(since_minute)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for r in rows {
            let Ok(provider) = Provider::parse(&r.get::<String, _>(1)) else { continue };
            let mut m = ProviderMinute { requests: r.get(2), errors: r.get(3), buckets: [0; 13] };
            for (i, b) in m.buckets.iter_mut().enumerate() {
                *b = r.get(4 + i);
            }
            out.push((r.get(0), provider, m));
        }
        Ok(out)
    }

    /// The newest calls the reach sees (at most `limit`), optionally only
    /// those with a device of `outcome` and of `app`; looks at the calls
    /// since `since_ms` only. A reach narrowed to an app sees that app's
    /// calls, and only their lines of that app.
    pub async fn recent_calls(
        &self,
        reach: &Reach,
        outcome: Option<&str>,
        app: Option<&AppId>,
        since_ms: i64,
        limit: i64,
    ) -> Result<Vec<RecentCall>> {
        let app = app.or(reach.app());
        let mut sql = String::from("SELECT user_id, push_id, created_at, report, tenant_id FROM calls WHERE created_at >= $1");
        let mut n = 1;
        if reach.tenant().is_some() {
            n += 1;
            sql.push_str(&format!(" AND tenant_id = ${n}"));
        }
        if outcome.is_some() {
            n += 1;
            sql.push_str(&format!(" AND outcomes LIKE ${n}"));
        }
        if app.is_some() {
            n += 1;
            sql.push_str(&format!(" AND app_ids LIKE ${n}"));
        }
        n += 1;
        sql.push_str(&format!(" ORDER BY created_at DESC LIMIT ${n}"));
        let mut q = sqlx::query(&sql).bind(since_ms);
        if let Some(t) = reach.tenant() {
            q = q.bind(t.as_str());
        }
        if let Some(o) = outcome {
            q = q.bind(format!("%,{o},%"));
        }
        if let Some(a) = app {
            q = q.bind(format!("%,{},%", a.as_str()));
        }
        let rows = q.bind(limit).fetch_all(&self.pool).await?;
        let mut out = Vec::new();
        for r in rows {
            let Ok(report) = serde_json::from_str::<CallReport>(&r.get::<String, _>(3)) else { continue };
            out.push(RecentCall { tenant: r.get(4), user: r.get(0), push_id: r.get(1), created_at: r.get(2), report: report.only_app(reach.app()) });
        }
        Ok(out)
    }

    /// Devices per dialect the reach sees.
    pub async fn devices_per_dialect(&self, reach: &Reach) -> Result<Vec<(String, i64)>> {
        let (filter, binds) = super::reach_filter(reach, 1);
        let sql = format!("SELECT dialect, COUNT(*) FROM devices WHERE 1 = 1{filter} GROUP BY dialect ORDER BY dialect");
        let mut q = sqlx::query(&sql);
        for b in &binds {
            q = q.bind(b.as_str());
        }
        let rows = q.fetch_all(&self.pool).await?;
        Ok(rows.iter().map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1))).collect())
    }

    /// Start a console session (the id is stored hashed), signed in by an
    /// API key (`key_id`) or by the admin token (its fingerprint).
    pub async fn console_session_start(&self, id_hash: &str, csrf: &str, signer: &SessionSigner, expires_at: i64) -> Result<()> {
        let (key_id, admin_fp) = match signer {
            SessionSigner::Key(id) => (Some(id.as_str()), None),
            SessionSigner::AdminToken(fp) => (None, Some(fp.as_str())),
        };
        let _gate = self.writing().await;
        sqlx::query("INSERT INTO console_sessions (id_hash, csrf, key_id, admin_fp, expires_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(id_hash)
            .bind(csrf)
            .bind(key_id)
            .bind(admin_fp)
            .bind(expires_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A session not yet expired: its CSRF token and what signed it in (to
    /// be checked again by the caller: the key may be revoked, the admin
    /// token changed).
    pub async fn console_session(&self, id_hash: &str, now_ms: i64) -> Result<Option<(String, SessionSigner)>> {
        let row = sqlx::query("SELECT csrf, key_id, admin_fp FROM console_sessions WHERE id_hash = $1 AND expires_at > $2")
            .bind(id_hash)
            .bind(now_ms)
            .fetch_optional(&self.pool)
            .await?;
        let Some(r) = row else { return Ok(None) };
        let signer = match (r.get::<Option<String>, _>(1), r.get::<Option<String>, _>(2)) {
            (Some(key), _) => SessionSigner::Key(key),
            (None, Some(fp)) => SessionSigner::AdminToken(fp),
            (None, None) => return Ok(None),
        };
        Ok(Some((r.get(0), signer)))
    }

    /// End a session (and every expired one).
    pub async fn console_session_end(&self, id_hash: &str, now_ms: i64) -> Result<()> {
        let _gate = self.writing().await;
        sqlx::query("DELETE FROM console_sessions WHERE id_hash = $1 OR expires_at <= $2").bind(id_hash).bind(now_ms).execute(&self.pool).await?;
        Ok(())
    }
}

impl Store {
    /// Forget provider minutes older than `before_minute` and expired sessions.
    pub async fn prune_console(&self, before_minute: i64, now_ms: i64) -> Result<()> {
        let _gate = self.writing().await;
        sqlx::query("DELETE FROM provider_minutes WHERE minute < $1").bind(before_minute).execute(&self.pool).await?;
        sqlx::query("DELETE FROM console_sessions WHERE expires_at <= $1").bind(now_ms).execute(&self.pool).await?;
        Ok(())
    }
}

//! Call reports and push claims (one push per pushid and device across
//! nodes, within the ring window), and their retention.

use super::events::ClaimKey;
use super::{Result, Store, StoreError, StoreEvent};
use crate::domain::{CallId, CallReport, DevicePkid, UserId};
use sqlx::Row;

/// One device's push claim to take.
#[derive(Clone, Debug)]
pub struct ClaimRequest {
    pub push_id: String,
    pub user: UserId,
    pub device: DevicePkid,
    pub call: CallId,
    pub expires_at: i64,
}

/// The outcome the holder of a push claim had for its device.
#[derive(Clone, Debug)]
pub struct ClaimOutcome {
    pub push_id: String,
    pub user: UserId,
    pub call: CallId,
    pub delivery: crate::domain::Delivery,
}

/// One call's report, as written.
#[derive(Clone, Debug)]
pub struct CallRecord {
    pub call: CallId,
    pub user: UserId,
    pub push_id: String,
    pub created_ms: i64,
    pub ring_ends_ms: i64,
    pub report: CallReport,
    /// Reports to post to apps' callback URLs, queued with the report.
    pub callbacks: Vec<super::PendingCallback>,
    /// The apps of the call's devices (the console filters by app).
    pub apps: Vec<crate::domain::AppId>,
}

/// A stored call, as a cancel needs it.
#[derive(Clone, Debug)]
pub struct CallInfo {
    pub user: UserId,
    pub push_id: String,
    pub report: CallReport,
}

/// Distinct values as `,a,b,` (so `LIKE '%,a,%'` finds one).
fn tag_list<'a>(values: impl Iterator<Item = &'a str>) -> String {
    let mut v: Vec<&str> = values.collect();
    v.sort_unstable();
    v.dedup();
    format!(",{},", v.join(","))
}

impl Store {
    pub async fn save_call(&self, record: &CallRecord) -> Result<()> {
        self.save_calls(std::slice::from_ref(record)).await
    }

    /// Store several call reports in one transaction (group commit).
    pub async fn save_calls(&self, records: &[CallRecord]) -> Result<()> {
        self.write_batch(records, &[]).await
    }

    /// Call reports and push-claim outcomes, in one transaction.
    pub async fn write_batch(&self, records: &[CallRecord], outcomes: &[ClaimOutcome]) -> Result<()> {
        let _gate = self.writing().await;
        let mut tx = self.pool.begin().await?;
        for o in outcomes {
            let json = serde_json::to_string(&o.delivery).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            sqlx::query("UPDATE push_claims SET delivery = $1 WHERE push_id = $2 AND user_id = $3 AND device_pkid = $4 AND call_id = $5")
                .bind(json)
                .bind(&o.push_id)
                .bind(o.user.as_str())
                .bind(o.delivery.device.as_str())
                .bind(o.call.as_str())
                .execute(&mut *tx)
                .await?;
        }
        for rec in records {
            let json = serde_json::to_string(&rec.report).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            sqlx::query(
                "INSERT INTO calls (call_id, user_id, push_id, created_at, ring_ends_at, report, outcomes, app_ids) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (call_id) DO UPDATE SET report = excluded.report, outcomes = excluded.outcomes, app_ids = excluded.app_ids",
            )
            .bind(rec.call.as_str())
            .bind(rec.user.as_str())
            .bind(rec.push_id.as_str())
            .bind(rec.created_ms)
            .bind(rec.ring_ends_ms)
            .bind(json)
            .bind(tag_list(rec.report.deliveries.iter().map(|d| d.outcome.as_str())))
            .bind(tag_list(rec.apps.iter().map(|a| a.as_str())))
            .execute(&mut *tx)
            .await?;
            for cb in &rec.callbacks {
                let now = crate::domain::now_ms();
                sqlx::query(
                    "INSERT INTO callback_outbox (id, app_id, call_id, body, attempts, created_at, next_at, leased_until) VALUES ($1, $2, $3, $4, 0, $5, $5, 0)",
                )
                .bind(uuid::Uuid::new_v4().to_string())
                .bind(cb.app.as_str())
                .bind(rec.call.as_str())
                .bind(&cb.body)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        if !outcomes.is_empty() {
            let settled = outcomes.iter().map(|o| ClaimKey { push_id: o.push_id.clone(), user: o.user.as_str().to_string(), device: o.delivery.device.as_str().to_string() }).collect();
            self.publish(StoreEvent::ClaimsSettled { claims: settled }).await;
        }
        Ok(())
    }

    /// Claim the push of `push_id` to one device for `call` until
    /// `expires_at`. `None`: claimed now; `Some(other)`: another call
    /// (possibly on another node) holds a live claim.
    pub async fn claim_push(&self, push_id: &str, user: &UserId, device: &DevicePkid, call: &CallId, expires_at: i64, now_ms: i64) -> Result<Option<CallId>> {
        let req = ClaimRequest { push_id: push_id.to_string(), user: user.clone(), device: device.clone(), call: call.clone(), expires_at };
        Ok(self.claim_pushes(std::slice::from_ref(&req), now_ms).await?.remove(0))
    }

    /// `claim_push` for several devices in one transaction (group commit).
    pub async fn claim_pushes(&self, reqs: &[ClaimRequest], now_ms: i64) -> Result<Vec<Option<CallId>>> {
        let _gate = self.writing().await;
        let mut tx = self.pool.begin().await?;
        let mut out = Vec::with_capacity(reqs.len());
        for r in reqs {
            let claimed = sqlx::query(
                "INSERT INTO push_claims (push_id, user_id, device_pkid, call_id, expires_at) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (push_id, user_id, device_pkid) DO UPDATE SET call_id = excluded.call_id, expires_at = excluded.expires_at, delivery = NULL \
                 WHERE push_claims.expires_at < $6",
            )
            .bind(&r.push_id)
            .bind(r.user.as_str())
            .bind(r.device.as_str())
            .bind(r.call.as_str())
            .bind(r.expires_at)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                > 0;
            if claimed {
                out.push(None);
                continue;
            }
            let row = sqlx::query("SELECT call_id FROM push_claims WHERE push_id = $1 AND user_id = $2 AND device_pkid = $3")
                .bind(&r.push_id)
                .bind(r.user.as_str())
                .bind(r.device.as_str())
                .fetch_optional(&mut *tx)
                .await?;
            out.push(match row {
                Some(row) => Some(CallId::parse(&row.get::<String, _>(0)).map_err(|e| StoreError::Corrupt(e.to_string()))?),
                None => None,
            });
        }
        tx.commit().await?;
        Ok(out)
    }

    /// The outcome the holder of a push claim recorded, if any yet.
    pub async fn claim_outcome(&self, push_id: &str, user: &UserId, device: &DevicePkid) -> Result<Option<crate::domain::Delivery>> {
        let row = sqlx::query("SELECT delivery FROM push_claims WHERE push_id = $1 AND user_id = $2 AND device_pkid = $3")
            .bind(push_id)
            .bind(user.as_str())
            .bind(device.as_str())
            .fetch_optional(&self.pool)
            .await?;
        match row.and_then(|r| r.get::<Option<String>, _>(0)) {
            Some(j) => Ok(Some(serde_json::from_str(&j).map_err(|e| StoreError::Corrupt(e.to_string()))?)),
            None => Ok(None),
        }
    }

    /// Delete expired push claims, call reports older than `calls_before`
    /// and webhook replay keys older than `webhooks_before`.
    pub async fn prune(&self, now_ms: i64, calls_before: i64, webhooks_before: i64) -> Result<(u64, u64, u64)> {
        let _gate = self.writing().await;
        let claims = sqlx::query("DELETE FROM push_claims WHERE expires_at < $1").bind(now_ms).execute(&self.pool).await?.rows_affected();
        let calls = sqlx::query("DELETE FROM calls WHERE created_at < $1").bind(calls_before).execute(&self.pool).await?.rows_affected();
        let hooks = sqlx::query("DELETE FROM webhook_events WHERE seen_at < $1").bind(webhooks_before).execute(&self.pool).await?.rows_affected();
        Ok((claims, calls, hooks))
    }


    /// Who a call was for, its pushid, and its report (for cancels).
    pub async fn call_info(&self, call: &CallId) -> Result<Option<CallInfo>> {
        let row = sqlx::query("SELECT user_id, push_id, report FROM calls WHERE call_id = $1").bind(call.as_str()).fetch_optional(&self.pool).await?;
        let Some(r) = row else { return Ok(None) };
        Ok(Some(CallInfo {
            user: UserId::parse(&r.get::<String, _>(0)).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            push_id: r.get(1),
            report: serde_json::from_str(&r.get::<String, _>(2)).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        }))
    }

    pub async fn call_report(&self, call: &CallId) -> Result<Option<CallReport>> {
        let row = sqlx::query("SELECT report FROM calls WHERE call_id = $1").bind(call.as_str()).fetch_optional(&self.pool).await?;
        match row {
            Some(r) => Ok(Some(serde_json::from_str(&r.get::<String, _>(0)).map_err(|e| StoreError::Corrupt(e.to_string()))?)),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Channel;
    use crate::store::test_support::store;
    use crate::domain::{Delivery, Outcome};


    #[tokio::test]
    async fn a_push_claim_is_held_until_it_expires_and_carries_the_outcome() {
        let (s, _d) = store().await;
        let (u, d) = (UserId::parse("alice").unwrap(), DevicePkid::parse("phone").unwrap());
        let (c1, c2) = (CallId::new(), CallId::new());
        assert_eq!(s.claim_push("p", &u, &d, &c1, 10_000, 1_000).await.unwrap(), None);
        assert_eq!(s.claim_push("p", &u, &d, &c2, 10_000, 2_000).await.unwrap(), Some(c1.clone()));
        assert_eq!(s.claim_outcome("p", &u, &d).await.unwrap(), None);
        let delivery = Delivery::new(&d, Channel::Apns, Outcome::Delivered, Some(200), None, 1);
        s.write_batch(&[], &[ClaimOutcome { push_id: "p".into(), user: u.clone(), call: c1.clone(), delivery: delivery.clone() }]).await.unwrap();
        assert_eq!(s.claim_outcome("p", &u, &d).await.unwrap(), Some(delivery));
        // After the ring end the pushid may be pushed again.
        assert_eq!(s.claim_push("p", &u, &d, &c2, 50_000, 20_000).await.unwrap(), None);
        assert_eq!(s.claim_outcome("p", &u, &d).await.unwrap(), None, "a new claim starts without an outcome");
    }

    #[tokio::test]
    async fn prune_deletes_old_calls_and_expired_claims_only() {
        let (s, _d) = store().await;
        let u = UserId::parse("alice").unwrap();
        for (created, id) in [(1_000, CallId::new()), (90_000, CallId::new())] {
            let rec = CallRecord { call: id.clone(), user: u.clone(), push_id: "p".into(), created_ms: created, ring_ends_ms: created + 30_000, report: CallReport::new(&id, vec![]), callbacks: vec![], apps: vec![] };
            s.save_call(&rec).await.unwrap();
        }
        s.claim_push("old", &u, &DevicePkid::parse("a").unwrap(), &CallId::new(), 5_000, 0).await.unwrap();
        s.claim_push("live", &u, &DevicePkid::parse("a").unwrap(), &CallId::new(), 500_000, 0).await.unwrap();
        assert_eq!(s.prune(100_000, 50_000, 0).await.unwrap(), (1, 1, 0));
        assert_eq!(s.prune(100_000, 50_000, 0).await.unwrap(), (0, 0, 0));
    }
}


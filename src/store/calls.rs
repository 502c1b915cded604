//! Call reports and push claims (one push per pushid and device across
//! nodes, within the ring window), and their retention.

use super::events::ClaimKey;
use super::{Result, Store, StoreError, StoreEvent};
use crate::domain::{CallId, CallReport, DevicePkid, Scope, TenantId, UserId};
use sqlx::Row;

/// One device's push claim to take.
#[derive(Clone, Debug)]
pub struct ClaimRequest {
    pub push_id: String,
    pub tenant: TenantId,
    pub user: UserId,
    pub device: DevicePkid,
    pub call: CallId,
    pub expires_at: i64,
}

/// The outcome the holder of a push claim had for its device.
#[derive(Clone, Debug)]
pub struct ClaimOutcome {
    pub push_id: String,
    pub tenant: TenantId,
    pub user: UserId,
    pub call: CallId,
    pub delivery: crate::domain::Delivery,
}

/// One call's report, as written.
#[derive(Clone, Debug)]
pub struct CallRecord {
    pub call: CallId,
    pub tenant: TenantId,
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

/// Rows per multi-row statement (well under SQLite's and PostgreSQL's
/// limits on bound parameters).
const ROWS_PER_STATEMENT: usize = 200;

/// `($1, $2, …), ($k+1, …)`: `rows` tuples of `width` parameters numbered from 1.
fn value_tuples(rows: usize, width: usize) -> String {
    let mut sql = String::with_capacity(rows * width * 5);
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..width {
            if c > 0 {
                sql.push_str(", ");
            }
            sql.push('$');
            sql.push_str(&(1 + r * width + c).to_string());
        }
        sql.push(')');
    }
    sql
}

impl Store {
    pub async fn save_call(&self, record: &CallRecord) -> Result<()> {
        self.write_batch(&[], 0, &[], std::slice::from_ref(record)).await.map(drop)
    }

    /// Claim the push of `push_id` to one device of the scope for `call`
    /// until `expires_at`. `None`: claimed now; `Some(other)`: another call
    /// (possibly on another node) holds a live claim.
    #[allow(clippy::too_many_arguments)]
    pub async fn claim_push(
        &self,
        scope: &Scope,
        push_id: &str,
        user: &UserId,
        device: &DevicePkid,
        call: &CallId,
        expires_at: i64,
        now_ms: i64,
    ) -> Result<Option<CallId>> {
        let req = ClaimRequest {
            push_id: push_id.to_string(),
            tenant: scope.tenant_id().clone(),
            user: user.clone(),
            device: device.clone(),
            call: call.clone(),
            expires_at,
        };
        Ok(self.write_batch(std::slice::from_ref(&req), now_ms, &[], &[]).await?.remove(0))
    }

    /// Everything a call writes, for any number of calls, in one
    /// transaction (the group commit of `dispatch`): push-claim outcomes,
    /// new push claims (answered like `claim_push`, in order; a claim
    /// repeated within the batch is held by its first occurrence), and call
    /// reports with their queued callbacks. A few multi-row statements per
    /// batch, not one per call.
    ///
    /// Durability: these rows matter for the ring window and the report, not
    /// for years, so the commit does not wait for the disk. The batch goes
    /// through the store's own call writer (`writer`): on SQLite a
    /// thread with its own connection and `synchronous = NORMAL` (WAL: a
    /// crash of the relay loses nothing; a power cut may lose the last
    /// commits, until the next registration or checkpoint syncs the log), on
    /// PostgreSQL a connection with `synchronous_commit = off` (the same
    /// bargain). Registrations, credentials and keys keep
    /// `sqlite.synchronous` (default `full`) and the server's setting.
    pub async fn write_batch(
        &self,
        claims: &[ClaimRequest],
        now_ms: i64,
        outcomes: &[ClaimOutcome],
        records: &[CallRecord],
    ) -> Result<Vec<Option<CallId>>> {
        let plan = plan_batch(claims, now_ms, outcomes, records, self.backend == super::Backend::Postgres)?;
        // On SQLite the writer thread takes the write queue (`writing`) itself.
        let written = self.call_writer.write(plan).await?;
        if !outcomes.is_empty() {
            // Every waiter on this node hears of every settled claim; the
            // other nodes only of those a duplicate call marked as waited
            // on (`wait_on_claim`): no NOTIFY, and no wake-up of every
            // node's listener, for the calls nobody repeated. Sent after
            // the commit, from the pool.
            self.tell_this_node(settled(outcomes));
            if !written.waited.is_empty() {
                self.tell_other_nodes(StoreEvent::ClaimsSettled { claims: written.waited }).await;
            }
        }
        Ok(written.holders)
    }

    /// Mark a push claim of the scope as waited on by a duplicate call, so
    /// that the node which settles it tells the others (PostgreSQL; a
    /// no-op on SQLite, where every waiter is on this node). Call it before
    /// reading the claim's outcome: a settle that comes after the mark sees
    /// it (the row lock orders the two), one that came before is read.
    pub async fn wait_on_claim(&self, scope: &Scope, push_id: &str, user: &UserId, device: &DevicePkid) -> Result<()> {
        if self.backend != super::Backend::Postgres {
            return Ok(());
        }
        let sql = format!("UPDATE push_claims SET waited = 1 WHERE {CLAIM_KEY} AND delivery IS NULL");
        claim_query(&sql, scope, push_id, user, device).execute(&self.pool).await?;
        Ok(())
    }

    /// The outcome the holder of a push claim of the scope recorded, if any yet.
    pub async fn claim_outcome(&self, scope: &Scope, push_id: &str, user: &UserId, device: &DevicePkid) -> Result<Option<crate::domain::Delivery>> {
        let sql = format!("SELECT delivery FROM push_claims WHERE {CLAIM_KEY}");
        let row = claim_query(&sql, scope, push_id, user, device).fetch_optional(&self.pool).await?;
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

    /// Who a call of the scope was for, its pushid, and its report (for
    /// cancels). A scope narrowed to an app sees a call only when one of its
    /// devices was of that app, and only those devices' lines.
    pub async fn call_info(&self, scope: &Scope, call: &CallId) -> Result<Option<CallInfo>> {
        let mut sql = String::from("SELECT user_id, push_id, report FROM calls WHERE call_id = $1 AND tenant_id = $2");
        if scope.app().is_some() {
            sql.push_str(" AND app_ids LIKE $3");
        }
        let mut q = sqlx::query(&sql).bind(call.as_str()).bind(scope.tenant_id().as_str());
        if let Some(app) = scope.app() {
            q = q.bind(format!("%,{},%", app.as_str()));
        }
        let Some(r) = q.fetch_optional(&self.pool).await? else { return Ok(None) };
        let report: CallReport = serde_json::from_str(&r.get::<String, _>(2)).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(Some(CallInfo {
            user: UserId::parse(&r.get::<String, _>(0)).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            push_id: r.get(1),
            report: report.only_app(scope.app()),
        }))
    }

    /// A call report of the scope (see `call_info`).
    pub async fn call_report(&self, scope: &Scope, call: &CallId) -> Result<Option<CallReport>> {
        Ok(self.call_info(scope, call).await?.map(|i| i.report))
    }
}

/// One push claim, by its key: `$1`–`$4` are (pushid, tenant, user, device).
const CLAIM_KEY: &str = "push_id = $1 AND tenant_id = $2 AND user_id = $3 AND device_pkid = $4";

/// `sql` (which selects a claim by `CLAIM_KEY`) with the key bound, the
/// tenant the scope's.
fn claim_query<'q>(
    sql: &'q str,
    scope: &'q Scope,
    push_id: &'q str,
    user: &'q UserId,
    device: &'q DevicePkid,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    sqlx::query(sql).bind(push_id).bind(scope.tenant_id().as_str()).bind(user.as_str()).bind(device.as_str())
}

/// The `ClaimsSettled` event of these outcomes.
pub(super) fn settled(outcomes: &[ClaimOutcome]) -> StoreEvent {
    let claims = outcomes
        .iter()
        .map(|o| ClaimKey {
            push_id: o.push_id.clone(),
            tenant: o.tenant.as_str().to_string(),
            user: o.user.as_str().to_string(),
            device: o.delivery.device.as_str().to_string(),
        })
        .collect();
    StoreEvent::ClaimsSettled { claims }
}

/// What a batch answers.
pub(crate) struct Written {
    /// Per claim request, in order: `None` if its call took the claim, else
    /// the call that holds it.
    pub(crate) holders: Vec<Option<CallId>>,
    /// PostgreSQL: the settled claims a duplicate call waits on.
    pub(crate) waited: Vec<ClaimKey>,
}

/// Row tags of the PostgreSQL batch: a claim taken, a settled claim waited on.
const TAKEN: &str = "c";
const WAITED: &str = "w";
/// PostgreSQL's outcome updates answer each settled claim, tagged `WAITED`
/// ('w') when a duplicate call marked it.
const WAITED_RETURNING: &str = " RETURNING CASE WHEN push_claims.waited <> 0 THEN 'w' ELSE 'n' END AS tag, \
     push_claims.push_id, push_claims.tenant_id, push_claims.user_id, push_claims.device_pkid";

/// A value bound to one of a batch's statements.
pub(crate) enum Param {
    Text(String),
    /// A tenant id: shared, no copy per row.
    Tenant(TenantId),
    Int(i64),
}

/// One statement of a batch, its parameters in order (`$1`, `$2`, …).
#[derive(Default)]
pub(crate) struct Statement {
    pub(crate) sql: String,
    pub(crate) params: Vec<Param>,
}

/// Runs a batch's statements on one backend: `sqlx` on PostgreSQL, and
/// rusqlite on the SQLite call-writer thread (`writer`), where every
/// future is ready at once. Answers the rows, every column as text.
pub(crate) trait Exec {
    async fn rows(&mut self, statement: &Statement) -> Result<Vec<Vec<String>>>;
}

/// What one `write_batch` writes, planned before it reaches a connection,
/// and run the same way on both backends (`BatchPlan::run`).
pub(crate) struct BatchPlan {
    /// Outcome updates, run first.
    outcomes: Vec<Statement>,
    /// Claim upserts, each returning the keys it took.
    claims: Vec<Statement>,
    /// Reports and queued callbacks.
    reports: Vec<Statement>,
    /// Per claim request: the index of its first occurrence in the batch,
    /// and its call.
    firsts: Vec<usize>,
    calls: Vec<CallId>,
    /// Each distinct claim key (pushid, tenant, user, device) → the index
    /// of its first occurrence.
    first_of: std::collections::HashMap<[String; 4], usize>,
}

/// Plan a batch: a few multi-row statements for the outcomes, the claims
/// (an upsert that only overwrites expired claims, a claim repeated within
/// the batch written once) and the reports, and one insert per callback.
///
/// `postgres`: outcome updates answer the claims a duplicate call waits on
/// (`Store::wait_on_claim`); and when everything fits in one statement of each
/// kind, join them into one statement of data-modifying `WITH` clauses
/// (`BatchPlan::combine`), so the batch is one round trip and needs no
/// `BEGIN`/`COMMIT`.
pub(super) fn plan_batch(
    claims: &[ClaimRequest],
    now_ms: i64,
    outcomes: &[ClaimOutcome],
    records: &[CallRecord],
    postgres: bool,
) -> Result<BatchPlan> {
    let mut plan = BatchPlan {
        outcomes: Vec::new(),
        claims: Vec::new(),
        reports: Vec::new(),
        firsts: Vec::new(),
        calls: Vec::new(),
        first_of: Default::default(),
    };
    for chunk in outcomes.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "WITH v (push_id, tenant_id, user_id, device_pkid, call_id, delivery) AS (VALUES {}) \
             UPDATE push_claims SET delivery = v.delivery FROM v \
             WHERE push_claims.push_id = v.push_id AND push_claims.tenant_id = v.tenant_id AND push_claims.user_id = v.user_id \
             AND push_claims.device_pkid = v.device_pkid AND push_claims.call_id = v.call_id{}",
            value_tuples(chunk.len(), 6),
            // PostgreSQL: which of them a duplicate call waits on (on another node, maybe).
            if postgres { WAITED_RETURNING } else { "" }
        );
        let mut params = Vec::with_capacity(chunk.len() * 6);
        for o in chunk {
            params.extend([
                text(&o.push_id),
                Param::Tenant(o.tenant.clone()),
                text(o.user.as_str()),
                text(o.delivery.device.as_str()),
                text(o.call.as_str()),
                Param::Text(to_json(&o.delivery)?),
            ]);
        }
        plan.outcomes.push(Statement { sql, params });
    }
    // Each claim's first occurrence in the batch, by key.
    plan.firsts = claims.iter().enumerate().map(|(i, r)| *plan.first_of.entry(claim_key(r)).or_insert(i)).collect();
    let unique: Vec<&ClaimRequest> = claims.iter().enumerate().filter(|&(i, _)| plan.firsts[i] == i).map(|(_, r)| r).collect();
    for chunk in unique.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO push_claims (push_id, tenant_id, user_id, device_pkid, call_id, expires_at) VALUES {} \
             ON CONFLICT (push_id, tenant_id, user_id, device_pkid) DO UPDATE SET call_id = excluded.call_id, expires_at = excluded.expires_at, delivery = NULL, waited = 0 \
             WHERE push_claims.expires_at < ${} RETURNING push_id, tenant_id, user_id, device_pkid",
            value_tuples(chunk.len(), 6),
            chunk.len() * 6 + 1
        );
        let mut params = Vec::with_capacity(chunk.len() * 6 + 1);
        for r in chunk {
            params.extend([
                text(&r.push_id),
                Param::Tenant(r.tenant.clone()),
                text(r.user.as_str()),
                text(r.device.as_str()),
                text(r.call.as_str()),
                Param::Int(r.expires_at),
            ]);
        }
        params.push(Param::Int(now_ms));
        plan.claims.push(Statement { sql, params });
    }
    plan.calls = claims.iter().map(|r| r.call.clone()).collect();
    for chunk in dedup_calls(records).chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO calls (call_id, tenant_id, user_id, push_id, created_at, ring_ends_at, report, outcomes, app_ids) VALUES {} \
             ON CONFLICT (call_id) DO UPDATE SET report = excluded.report, outcomes = excluded.outcomes, app_ids = excluded.app_ids",
            value_tuples(chunk.len(), 9)
        );
        let mut params = Vec::with_capacity(chunk.len() * 9);
        for rec in chunk {
            params.extend([
                text(rec.call.as_str()),
                Param::Tenant(rec.tenant.clone()),
                text(rec.user.as_str()),
                text(&rec.push_id),
                Param::Int(rec.created_ms),
                Param::Int(rec.ring_ends_ms),
                Param::Text(to_json(&rec.report)?),
                Param::Text(tag_list(rec.report.deliveries.iter().map(|d| d.outcome.as_str()))),
                Param::Text(tag_list(rec.apps.iter().map(|a| a.as_str()))),
            ]);
        }
        plan.reports.push(Statement { sql, params });
    }
    let now = crate::domain::now_ms();
    for rec in records {
        for cb in &rec.callbacks {
            plan.reports.push(Statement {
                sql: "INSERT INTO callback_outbox (id, tenant_id, app_id, call_id, body, attempts, created_at, next_at, leased_until) VALUES ($1, $2, $3, $4, $5, 0, $6, $6, 0)".into(),
                params: vec![
                    Param::Text(crate::domain::random_uuid().to_string()),
                    Param::Tenant(rec.tenant.clone()),
                    text(cb.app.as_str()),
                    text(rec.call.as_str()),
                    text(&cb.body),
                    Param::Int(now),
                ],
            });
        }
    }
    if postgres {
        // One statement may not touch a row twice: an outcome and a new
        // claim of the same key stay separate statements.
        let keys: std::collections::HashSet<(&str, &str, &str, &str)> =
            outcomes.iter().map(|o| (o.push_id.as_str(), o.tenant.as_str(), o.user.as_str(), o.delivery.device.as_str())).collect();
        if !claims.iter().any(|r| keys.contains(&(r.push_id.as_str(), r.tenant.as_str(), r.user.as_str(), r.device.as_str()))) {
            plan.combine();
        }
    }
    Ok(plan)
}

/// `sql` with every parameter `$n` renumbered to `$(n + by)`.
fn shift_params(sql: &str, by: usize) -> String {
    let mut out = String::with_capacity(sql.len() + sql.len() / 8);
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..=at]);
        rest = &rest[at + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        match rest[..digits].parse::<usize>() {
            Ok(n) => out.push_str(&(n + by).to_string()),
            Err(_) => out.push_str(&rest[..digits]),
        }
        rest = &rest[digits..];
    }
    out.push_str(rest);
    out
}

/// The key of a claim: (pushid, tenant, user, device).
fn claim_key(r: &ClaimRequest) -> [String; 4] {
    [r.push_id.clone(), r.tenant.as_str().to_string(), r.user.as_str().to_string(), r.device.as_str().to_string()]
}

fn text(s: &str) -> Param {
    Param::Text(s.to_string())
}

/// JSON of a stored value; failing to encode one is the store's error.
fn to_json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl BatchPlan {
    /// Whether the batch is a single statement, so the backend's
    /// autocommit can be its transaction. (A claim held by another call is
    /// read back after the write, which needs no transaction.)
    pub(crate) fn is_one_statement(&self) -> bool {
        self.statements() == 1
    }

    fn statements(&self) -> usize {
        self.outcomes.len() + self.claims.len() + self.reports.len()
    }

    /// PostgreSQL: at most one statement of each kind become one statement,
    /// `WITH o AS (outcomes), r AS (reports), c AS (claims) SELECT … FROM c`
    /// (each clause runs once, referenced or not; all see one snapshot),
    /// whose rows are the claims taken. More statements than that (a batch
    /// wider than `ROWS_PER_STATEMENT`, callbacks) stay as they are.
    fn combine(&mut self) {
        if self.outcomes.len() > 1 || self.claims.len() > 1 || self.reports.len() > 1 || self.statements() < 2 {
            return;
        }
        let (mut clauses, mut params) = (Vec::new(), Vec::new());
        for (name, statement) in [("o", self.outcomes.pop()), ("r", self.reports.pop()), ("c", self.claims.first_mut().map(std::mem::take))] {
            if let Some(statement) = statement {
                clauses.push(format!("{name} AS ({})", shift_params(&statement.sql, params.len())));
                params.extend(statement.params);
            }
        }
        let from = if self.claims.is_empty() { "push_claims WHERE false" } else { "c" };
        // Tagged rows: claims taken (TAKEN), settled claims waited on (WAITED).
        let waited = if clauses[0].starts_with("o ") {
            format!(" UNION ALL SELECT tag, push_id, tenant_id, user_id, device_pkid FROM o WHERE tag = '{WAITED}'")
        } else {
            String::new()
        };
        self.claims = vec![Statement {
            sql: format!("WITH {} SELECT '{TAKEN}' AS tag, push_id, tenant_id, user_id, device_pkid FROM {from}{waited}", clauses.join(", ")),
            params,
        }];
    }

    /// Run the batch's statements on `exec` (inside the caller's
    /// transaction, if any) and answer each claim request in order: `None`
    /// if its call took the claim, else the call that holds it. A claim
    /// repeated within the batch is held by its first occurrence's call if
    /// that one took it, else by whoever held it.
    pub(crate) async fn run(&self, exec: &mut impl Exec) -> Result<Written> {
        // A row is a claim taken (untagged, or tagged TAKEN) or a settled
        // claim waited on (tagged WAITED, PostgreSQL).
        let mut waited = Vec::new();
        let mut taken_key = |row: Vec<String>| -> Option<[String; 4]> {
            match <[String; 5]>::try_from(row) {
                Ok([tag, push_id, tenant, user, device]) if tag == WAITED => {
                    waited.push(ClaimKey { push_id, tenant, user, device });
                    None
                }
                Ok([tag, push_id, tenant, user, device]) if tag == TAKEN => Some([push_id, tenant, user, device]),
                Ok(_) => None,
                Err(row) => <[String; 4]>::try_from(row).ok(),
            }
        };
        for s in &self.outcomes {
            for row in exec.rows(s).await? {
                taken_key(row);
            }
        }
        let mut taken = vec![false; self.firsts.len()];
        for s in &self.claims {
            for row in exec.rows(s).await? {
                if let Some(&i) = taken_key(row).and_then(|key| self.first_of.get(&key)) {
                    taken[i] = true;
                }
            }
        }
        for s in &self.reports {
            exec.rows(s).await?;
        }
        // The holder of each first occurrence not taken: read back (the rare duplicate).
        let mut holders: Vec<Option<CallId>> = vec![None; self.firsts.len()];
        for ([push_id, tenant, user, device], &i) in self.first_of.iter().filter(|&(_, &i)| !taken[i]) {
            let read = Statement {
                sql: format!("SELECT call_id FROM push_claims WHERE {CLAIM_KEY}"),
                params: vec![text(push_id), text(tenant), text(user), text(device)],
            };
            if let Some(call) = exec.rows(&read).await?.into_iter().next().and_then(|r| r.into_iter().next()) {
                holders[i] = Some(CallId::parse(&call).map_err(|e| StoreError::Corrupt(e.to_string()))?);
            }
        }
        let holders = self
            .firsts
            .iter()
            .enumerate()
            .map(|(i, &f)| match (f == i, holders[f].clone()) {
                (true, holder) => holder,
                (false, holder) => Some(holder.unwrap_or_else(|| self.calls[f].clone())),
            })
            .collect();
        Ok(Written { holders, waited })
    }
}

/// `Exec` over a sqlx connection (PostgreSQL's call writer).
pub(crate) struct SqlxExec<'c>(pub(crate) &'c mut sqlx::AnyConnection);

impl Exec for SqlxExec<'_> {
    async fn rows(&mut self, statement: &Statement) -> Result<Vec<Vec<String>>> {
        let mut q = sqlx::query(&statement.sql);
        for p in &statement.params {
            q = match p {
                Param::Text(t) => q.bind(t.as_str()),
                Param::Tenant(t) => q.bind(t.as_str()),
                Param::Int(n) => q.bind(*n),
            };
        }
        let rows = q.fetch_all(&mut *self.0).await?;
        rows.iter().map(|r| (0..r.len()).map(|c| r.try_get::<String, _>(c).map_err(StoreError::from)).collect()).collect()
    }
}

/// `Exec` over rusqlite (SQLite's call-writer thread): each statement is
/// prepared once per shape and run where it is called, no thread hand-off.
pub(crate) struct SqliteExec<'c>(pub(crate) &'c rusqlite::Connection);

impl Exec for SqliteExec<'_> {
    async fn rows(&mut self, statement: &Statement) -> Result<Vec<Vec<String>>> {
        let mut stmt = self.0.prepare_cached(&statement.sql)?;
        for (i, p) in statement.params.iter().enumerate() {
            match p {
                Param::Text(t) => stmt.raw_bind_parameter(i + 1, t.as_str())?,
                Param::Tenant(t) => stmt.raw_bind_parameter(i + 1, t.as_str())?,
                Param::Int(n) => stmt.raw_bind_parameter(i + 1, *n)?,
            }
        }
        let width = stmt.column_count();
        let mut rows = stmt.raw_query();
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push((0..width).map(|c| row.get::<_, String>(c)).collect::<Result<Vec<_>, _>>()?);
        }
        Ok(out)
    }
}

/// The last report of each call in the batch (one row per call per statement).
fn dedup_calls(records: &[CallRecord]) -> Vec<&CallRecord> {
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<&CallRecord> = records.iter().rev().filter(|r| seen.insert(r.call.as_str())).collect();
    out.reverse();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Channel;
    use crate::store::test_support::store;
    fn scope() -> Scope {
        Scope::default_tenant()
    }
    use crate::domain::{Delivery, Outcome};

    #[tokio::test]
    async fn a_push_claim_is_held_until_it_expires_and_carries_the_outcome() {
        let (s, _d) = store().await;
        let sc = scope();
        let (u, d) = (UserId::parse("alice").unwrap(), DevicePkid::parse("phone").unwrap());
        let (c1, c2) = (CallId::new(), CallId::new());
        assert_eq!(s.claim_push(&sc, "p", &u, &d, &c1, 10_000, 1_000).await.unwrap(), None);
        assert_eq!(s.claim_push(&sc, "p", &u, &d, &c2, 10_000, 2_000).await.unwrap(), Some(c1.clone()));
        assert_eq!(s.claim_outcome(&sc, "p", &u, &d).await.unwrap(), None);
        let delivery = Delivery::new(&d, Channel::Apns, Outcome::Delivered, Some(200), None, 1);
        s.write_batch(
            &[],
            0,
            &[ClaimOutcome {
                tenant: TenantId::default_tenant(),
                push_id: "p".into(),
                user: u.clone(),
                call: c1.clone(),
                delivery: delivery.clone(),
            }],
            &[],
        )
        .await
        .unwrap();
        assert_eq!(s.claim_outcome(&sc, "p", &u, &d).await.unwrap(), Some(delivery));
        // After the ring end the pushid may be pushed again.
        assert_eq!(s.claim_push(&sc, "p", &u, &d, &c2, 50_000, 20_000).await.unwrap(), None);
        assert_eq!(s.claim_outcome(&sc, "p", &u, &d).await.unwrap(), None, "a new claim starts without an outcome");
    }

    #[tokio::test]
    async fn one_batch_answers_each_claim_in_order_and_stores_reports_and_outcomes() {
        let (s, _d) = store().await;
        let sc = scope();
        let u = UserId::parse("alice").unwrap();
        let (a, b) = (DevicePkid::parse("a").unwrap(), DevicePkid::parse("b").unwrap());
        let (held, c1, c2) = (CallId::new(), CallId::new(), CallId::new());
        s.claim_push(&sc, "p", &u, &b, &held, 10_000, 0).await.unwrap();
        let req = |device: &DevicePkid, call: &CallId| ClaimRequest {
            tenant: TenantId::default_tenant(),
            push_id: "p".into(),
            user: u.clone(),
            device: device.clone(),
            call: call.clone(),
            expires_at: 10_000,
        };
        let rec = CallRecord {
            tenant: TenantId::default_tenant(),
            call: c1.clone(),
            user: u.clone(),
            push_id: "p".into(),
            created_ms: 1,
            ring_ends_ms: 10_000,
            report: CallReport::new(&c1, vec![]),
            callbacks: vec![],
            apps: vec![],
        };
        let outcome = ClaimOutcome {
            tenant: TenantId::default_tenant(),
            push_id: "p".into(),
            user: u.clone(),
            call: held.clone(),
            delivery: Delivery::new(&b, Channel::Apns, Outcome::Delivered, Some(200), None, 1),
        };
        // a: free (c1 takes it, c2 repeats it in the same batch); b: held by an earlier call.
        let answers = s.write_batch(&[req(&a, &c1), req(&b, &c1), req(&a, &c2)], 1_000, &[outcome], &[rec.clone(), rec]).await.unwrap();
        assert_eq!(answers, vec![None, Some(held.clone()), Some(c1.clone())]);
        assert!(s.call_report(&sc, &c1).await.unwrap().is_some(), "a report repeated in a batch is stored once");
        assert_eq!(s.claim_outcome(&sc, "p", &u, &b).await.unwrap().map(|d| d.outcome), Some(Outcome::Delivered));
        assert_eq!(s.claim_outcome(&sc, "p", &u, &a).await.unwrap(), None);
        // A batch wider than one statement.
        let many: Vec<ClaimRequest> =
            (0..450).map(|i| ClaimRequest { tenant: TenantId::default_tenant(), push_id: format!("q{i}"), ..req(&a, &c2) }).collect();
        let answers = s.write_batch(&many, 1_000, &[], &[]).await.unwrap();
        assert_eq!(answers.len(), 450);
        assert!(answers.iter().all(Option::is_none));
        assert_eq!(s.claim_push(&sc, "q449", &u, &a, &c1, 10_000, 1_000).await.unwrap(), Some(c2));
    }

    #[tokio::test]
    async fn a_batch_that_meets_a_locked_database_fails_whole_and_the_next_one_writes() {
        let (s, dir) = store().await;
        let sc = scope();
        let (u, d) = (UserId::parse("alice").unwrap(), DevicePkid::parse("phone").unwrap());
        // Another process holds SQLite's write lock past the busy timeout (5 s).
        let other = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let c1 = CallId::new();
        let rec = CallRecord {
            tenant: TenantId::default_tenant(),
            call: c1.clone(),
            user: u.clone(),
            push_id: "p".into(),
            created_ms: 1,
            ring_ends_ms: 10_000,
            report: CallReport::new(&c1, vec![]),
            callbacks: vec![],
            apps: vec![],
        };
        let req = ClaimRequest {
            tenant: TenantId::default_tenant(),
            push_id: "p".into(),
            user: u.clone(),
            device: d.clone(),
            call: c1.clone(),
            expires_at: 10_000,
        };
        let err = s.write_batch(std::slice::from_ref(&req), 1_000, &[], std::slice::from_ref(&rec)).await.unwrap_err();
        assert!(err.to_string().contains("locked"), "{err}");
        other.execute_batch("ROLLBACK").unwrap();
        assert!(s.call_report(&sc, &c1).await.unwrap().is_none(), "a failed batch writes nothing");
        // The writer (a fresh connection after the error) takes the next batch.
        assert_eq!(s.write_batch(&[req], 1_000, &[], &[rec]).await.unwrap(), vec![None]);
        assert!(s.call_report(&sc, &c1).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn an_in_memory_sqlite_database_is_refused_with_a_clear_error() {
        let err = Store::connect("sqlite::memory:", &crate::store::StoreOptions::default()).await.unwrap_err();
        assert!(err.to_string().contains("in-memory"), "{err}");
    }

    #[test]
    fn joined_statements_renumber_their_parameters() {
        assert_eq!(shift_params("VALUES ($1, $2), ($3, $4) WHERE x < $5", 7), "VALUES ($8, $9), ($10, $11) WHERE x < $12");
        assert_eq!(shift_params("no parameters", 3), "no parameters");
        let u = UserId::parse("alice").unwrap();
        let d = DevicePkid::parse("a").unwrap();
        let call = CallId::new();
        let req = ClaimRequest {
            tenant: TenantId::default_tenant(),
            push_id: "p".into(),
            user: u.clone(),
            device: d.clone(),
            call: call.clone(),
            expires_at: 10,
        };
        let rec = CallRecord {
            tenant: TenantId::default_tenant(),
            call: call.clone(),
            user: u.clone(),
            push_id: "p".into(),
            created_ms: 1,
            ring_ends_ms: 10,
            report: CallReport::new(&call, vec![]),
            callbacks: vec![],
            apps: vec![],
        };
        let plan = plan_batch(std::slice::from_ref(&req), 5, &[], std::slice::from_ref(&rec), true).unwrap();
        assert!(plan.is_one_statement());
        let joined = &plan.claims[0];
        assert!(
            joined.sql.starts_with("WITH r AS (INSERT INTO calls")
                && joined.sql.contains("c AS (INSERT INTO push_claims")
                && joined.sql.ends_with("FROM c"),
            "{}",
            joined.sql
        );
        assert_eq!(joined.params.len(), 9 + 6 + 1);
        assert!(joined.sql.contains("($10, $11, $12, $13, $14, $15)") && joined.sql.contains("expires_at < $16"), "{}", joined.sql);
        // SQLite keeps the statements apart (no data-modifying WITH there).
        assert!(!plan_batch(&[req], 5, &[], &[rec], false).unwrap().is_one_statement());
    }

    #[tokio::test]
    async fn prune_deletes_old_calls_and_expired_claims_only() {
        let (s, _d) = store().await;
        let sc = scope();
        let u = UserId::parse("alice").unwrap();
        for (created, id) in [(1_000, CallId::new()), (90_000, CallId::new())] {
            let rec = CallRecord {
                tenant: TenantId::default_tenant(),
                call: id.clone(),
                user: u.clone(),
                push_id: "p".into(),
                created_ms: created,
                ring_ends_ms: created + 30_000,
                report: CallReport::new(&id, vec![]),
                callbacks: vec![],
                apps: vec![],
            };
            s.save_call(&rec).await.unwrap();
        }
        s.claim_push(&sc, "old", &u, &DevicePkid::parse("a").unwrap(), &CallId::new(), 5_000, 0).await.unwrap();
        s.claim_push(&sc, "live", &u, &DevicePkid::parse("a").unwrap(), &CallId::new(), 500_000, 0).await.unwrap();
        assert_eq!(s.prune(100_000, 50_000, 0).await.unwrap(), (1, 1, 0));
        assert_eq!(s.prune(100_000, 50_000, 0).await.unwrap(), (0, 0, 0));
    }
}

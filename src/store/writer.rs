//! The call path's writer: the group commit of everything a call writes.
//!
//! Push claims (each call waits for its answer before it pushes), claim
//! outcomes (not waited for: a duplicate call is told by `ClaimsSettled`)
//! and call reports (each call waits for its own, so `GET /v1/calls/{id}`
//! right after the answer finds it) go into one queue (`CallQueue`).
//! Whatever concurrent calls queued meanwhile is written as one batch of a
//! few multi-row statements (`calls::BatchPlan`).
//!
//! Who writes the queue:
//! - SQLite: one rusqlite connection (`synchronous = NORMAL`, no automatic
//!   checkpoints) used by whoever holds the store's write queue. A call
//!   that finds it free writes what is queued itself (`SqliteWriter`); when
//!   it is busy, the `sqlite-writer` thread waits for it and writes
//!   everything queued meanwhile as one batch.
//! - PostgreSQL: a task per `CallQueue`, on a connection of its own with
//!   `synchronous_commit = off`, retried on a fresh connection while the
//!   server restarts (`Reconnect`).
//!
//! Both are outside the pool, so a batch costs no acquire and no ping on
//! release (sqlx pings every pooled connection it takes back). Either
//! connection is opened on first use, and again after an error.

use super::calls::{self, BatchPlan, CallRecord, ClaimOutcome, ClaimRequest, Written};
use super::{sqlite_session, Reconnect, Result, Store, StoreError, StoreEvent};
use crate::domain::{now_ms, CallId};
use crate::telemetry;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};

/// Calls queued beyond this wait for room (backpressure on the callers).
const QUEUE: usize = 4096;
/// At most this many writes go into one batch.
const BATCH: usize = 512;

/// Where a write's answer goes. The error is text: one failed batch fails
/// every call in it.
type Ack<T> = oneshot::Sender<std::result::Result<T, String>>;
type Answers = Result<Written>;

/// One thing a call writes.
pub(super) enum CallWrite {
    Claim(ClaimRequest, Ack<Option<CallId>>),
    Outcome(ClaimOutcome),
    /// A report, with claim outcomes written in the same batch.
    Report(CallRecord, Vec<ClaimOutcome>, Ack<()>),
}

/// What the writer is asked to do.
pub(super) enum Job {
    /// One call's write, batched with whatever else is queued.
    Write(CallWrite),
    /// A batch planned by `Store::write_batch`, run as it is.
    Plan(BatchPlan, oneshot::Sender<Answers>),
}

/// The connection of the call path's writer.
pub(super) enum CallWriter {
    Sqlite(Arc<SqliteWriter>),
    Postgres { url: String, conn: tokio::sync::Mutex<Option<sqlx::AnyConnection>> },
}

impl CallWriter {
    /// The SQLite writer of the database file `path`. It takes `gate` (the
    /// store's in-process write queue) for each batch and tells `events`
    /// about settled claims.
    pub(super) fn sqlite(path: String, gate: Arc<tokio::sync::Mutex<()>>, events: broadcast::Sender<StoreEvent>) -> Result<Self> {
        // One pending nudge is enough: the thread writes until the queue is empty.
        let (nudge, nudges) = std::sync::mpsc::sync_channel::<()>(1);
        let writer = Arc::new(SqliteWriter {
            path,
            conn: std::sync::Mutex::new(None),
            queue: std::sync::Mutex::new(std::collections::VecDeque::new()),
            gate,
            events,
            nudge,
            runtime: tokio::runtime::Handle::try_current().ok(),
            last_write: AtomicU64::new(0),
            epoch: std::time::Instant::now(),
        });
        let weak = Arc::downgrade(&writer);
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || sqlite_thread(weak, nudges))
            .map_err(|e| StoreError::Batch(format!("cannot start the SQLite call writer: {e}")))?;
        Ok(Self::Sqlite(writer))
    }

    pub(super) fn postgres(url: &str) -> Self {
        Self::Postgres { url: url.to_string(), conn: tokio::sync::Mutex::new(None) }
    }

    /// Write one planned batch in one transaction; the claims' answers.
    pub(super) async fn write(&self, plan: BatchPlan) -> Answers {
        match self {
            Self::Sqlite(writer) => {
                let (ack, answer) = oneshot::channel();
                writer.submit(Job::Plan(plan, ack));
                answer.await.map_err(|_| stopped())?
            }
            Self::Postgres { url, conn } => {
                let mut slot = conn.lock().await;
                // A lost connection (a restarting server) is reopened and the
                // batch run again, for at most RECONNECT_WITHIN. Running it
                // again is safe: reports and claim outcomes are upserts, and a
                // claim this batch already took answers with this call's id.
                let mut reconnect = Reconnect::new();
                loop {
                    match postgres_batch(&mut slot, url, &plan).await {
                        Err(e) if reconnect.again(&e).await => continue,
                        other => return other,
                    }
                }
            }
        }
    }
}

fn stopped() -> StoreError {
    StoreError::Batch("the call writer stopped".into())
}

/// The queue of the call path's writes (`Store::call_queue`).
#[derive(Clone)]
pub struct CallQueue(Queue);

#[derive(Clone)]
enum Queue {
    Sqlite(Arc<SqliteWriter>),
    Postgres(mpsc::Sender<Job>),
}

impl CallQueue {
    /// Take the push claim `req` (answered like `Store::claim_push`).
    pub async fn claim(&self, req: ClaimRequest) -> Result<Option<CallId>> {
        self.ask(|ack| CallWrite::Claim(req, ack)).await
    }

    /// Save a call's report (and queue its callbacks), and the claim
    /// outcomes given, in the same batch; answers once written.
    pub async fn save(&self, record: CallRecord, outcomes: Vec<ClaimOutcome>) -> Result<()> {
        self.ask(|ack| CallWrite::Report(record, outcomes, ack)).await
    }

    /// Record what a claim's push came to; not waited for.
    pub async fn claim_outcome(&self, outcome: ClaimOutcome) {
        if self.send(Job::Write(CallWrite::Outcome(outcome))).await.is_err() {
            tracing::error!("a claim outcome was not stored: the call writer stopped");
        }
    }

    async fn ask<T>(&self, with_ack: impl FnOnce(Ack<T>) -> CallWrite) -> Result<T> {
        let (ack, done) = oneshot::channel();
        self.send(Job::Write(with_ack(ack))).await?;
        done.await.map_err(|_| stopped())?.map_err(StoreError::Batch)
    }

    async fn send(&self, job: Job) -> Result<()> {
        match &self.0 {
            Queue::Sqlite(writer) => {
                writer.submit(job);
                Ok(())
            }
            Queue::Postgres(tx) => tx.send(job).await.map_err(|_| stopped()),
        }
    }
}

impl Store {
    /// The queue to the call path's writer. On SQLite, the writer thread
    /// itself; on PostgreSQL, a task started here (so inside a runtime) that
    /// ends when the last clone of the queue is dropped.
    pub fn call_queue(&self) -> CallQueue {
        match &*self.call_writer {
            CallWriter::Sqlite(writer) => CallQueue(Queue::Sqlite(writer.clone())),
            CallWriter::Postgres { .. } => {
                let (tx, mut queue) = mpsc::channel::<Job>(QUEUE);
                let store = self.clone();
                tokio::spawn(async move {
                    while let Some(first) = queue.recv().await {
                        let mut group = Group::default();
                        for job in drain(first, &mut queue, BATCH) {
                            match job {
                                Job::Write(w) => group.add(w),
                                Job::Plan(plan, ack) => {
                                    let _ = ack.send(store.call_writer.write(plan).await);
                                }
                            }
                        }
                        if !group.is_empty() {
                            let result = store.write_batch(&group.claims, now_ms(), &group.outcomes, &group.records).await;
                            group.answer(result);
                        }
                    }
                });
                CallQueue(Queue::Postgres(tx))
            }
        }
    }
}

/// `first`, then whatever else is already queued, up to `max` in all.
fn drain<T>(first: T, queue: &mut mpsc::Receiver<T>, max: usize) -> Vec<T> {
    let mut batch = Vec::with_capacity(max.min(64));
    batch.push(first);
    while batch.len() < max {
        match queue.try_recv() {
            Ok(next) => batch.push(next),
            Err(_) => break,
        }
    }
    batch
}

/// The calls' writes of one batch, split by kind, with their acks.
#[derive(Default)]
struct Group {
    claims: Vec<ClaimRequest>,
    claim_acks: Vec<Ack<Option<CallId>>>,
    outcomes: Vec<ClaimOutcome>,
    records: Vec<CallRecord>,
    report_acks: Vec<Ack<()>>,
}

impl Group {
    /// The writes again, as jobs (claim outcomes given with a report come
    /// back as outcomes of their own).
    fn into_jobs(self) -> Vec<Job> {
        let claims = self.claims.into_iter().zip(self.claim_acks).map(|(c, ack)| CallWrite::Claim(c, ack));
        let outcomes = self.outcomes.into_iter().map(CallWrite::Outcome);
        let reports = self.records.into_iter().zip(self.report_acks).map(|(r, ack)| CallWrite::Report(r, Vec::new(), ack));
        claims.chain(outcomes).chain(reports).map(Job::Write).collect()
    }

    fn add(&mut self, write: CallWrite) {
        match write {
            CallWrite::Claim(c, ack) => {
                self.claims.push(c);
                self.claim_acks.push(ack);
            }
            CallWrite::Outcome(o) => self.outcomes.push(o),
            CallWrite::Report(r, outcomes, ack) => {
                self.outcomes.extend(outcomes);
                self.records.push(r);
                self.report_acks.push(ack);
            }
        }
    }

    /// How many calls wait for an answer.
    fn waiting(&self) -> usize {
        self.claim_acks.len() + self.report_acks.len()
    }

    fn is_empty(&self) -> bool {
        self.claims.is_empty() && self.outcomes.is_empty() && self.records.is_empty()
    }

    /// Send each call its answer (the claims' holders, in order), or the
    /// batch's error.
    fn answer(self, result: Result<Vec<Option<CallId>>>) {
        match result {
            Ok(holders) => {
                for (ack, answer) in self.claim_acks.into_iter().zip(holders) {
                    let _ = ack.send(Ok(answer));
                }
                for ack in self.report_acks {
                    let _ = ack.send(Ok(()));
                }
            }
            Err(e) => {
                let e = e.to_string();
                metrics::counter!(telemetry::STORE_ERRORS).increment(1);
                tracing::error!(error = %e, claims = self.claims.len(), calls = self.records.len(), outcomes = self.outcomes.len(), "a batch of call writes could not be stored");
                for ack in self.claim_acks {
                    let _ = ack.send(Err(e.clone()));
                }
                for ack in self.report_acks {
                    let _ = ack.send(Err(e.clone()));
                }
            }
        }
    }
}

/// How long the writer thread waits for a database another process has
/// locked (the pool's `busy_timeout`).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether SQLite said another connection holds the lock.
fn is_busy(e: &StoreError) -> bool {
    matches!(e, StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) if f.code == rusqlite::ErrorCode::DatabaseBusy)
}

/// A write that comes sooner than this after the last batch began goes to
/// the thread, to be batched with the others (at 400 calls/s writes are
/// about 1 ms apart and are written by their callers; at several thousand
/// per second they are batched).
const DENSE: Duration = Duration::from_micros(250);

/// At most this many queued writes are written by a caller itself; more
/// are left to the writer thread (a tokio worker is not blocked for long).
const INLINE: usize = 16;

/// SQLite's call writer: a queue, the connection, and the `sqlite-writer`
/// thread.
///
/// Whoever queues a write when writes are sparse (the last batch began
/// more than `DENSE` ago) tries to take the store's write queue (`gate`)
/// at once. When it is free, that caller writes what is queued itself, on
/// its own thread: a lone call costs no hand-off to another thread and no
/// wake-up to get its answer back (at 400 calls/s each hand-off cost two
/// thread wake-ups). When the gate is taken (a batch is being written, or
/// a registration), the caller nudges the thread, which waits for the gate
/// and writes everything queued meanwhile as one batch: under load the
/// batches form there.
pub(super) struct SqliteWriter {
    path: String,
    /// Used only while holding `gate`.
    conn: std::sync::Mutex<Option<rusqlite::Connection>>,
    /// Not bounded here: each call in flight queues at most one write per
    /// device and its report, and the HTTP server bounds the calls in flight.
    queue: std::sync::Mutex<std::collections::VecDeque<Job>>,
    gate: Arc<tokio::sync::Mutex<()>>,
    events: broadcast::Sender<StoreEvent>,
    nudge: std::sync::mpsc::SyncSender<()>,
    /// The runtime the store was opened on (where the thread's answers go).
    runtime: Option<tokio::runtime::Handle>,
    /// When the last batch began (ns since `epoch`).
    last_write: AtomicU64,
    epoch: std::time::Instant,
}

impl SqliteWriter {
    /// Queue `job`; write it now if the gate is free and writes are
    /// sparse, else leave it to the thread.
    fn submit(&self, job: Job) {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).push_back(job);
        // Saturating: another thread may record a batch after `elapsed` is read.
        let since_last = (self.epoch.elapsed().as_nanos() as u64).saturating_sub(self.last_write.load(Ordering::Relaxed));
        let dense = since_last < DENSE.as_nanos() as u64;
        if dense {
            // Writes closer together than DENSE: batches on the thread cost
            // less per write than one commit per caller.
        } else if let Ok(writing) = self.gate.try_lock() {
            self.write_queued(INLINE, true);
            drop(writing);
            if self.queue.lock().unwrap_or_else(|e| e.into_inner()).is_empty() {
                return;
            }
        }
        // Full: a nudge is already pending, and the thread writes until the queue is empty.
        let _ = self.nudge.try_send(());
    }

    /// Write up to `max` queued jobs as one batch (the caller holds `gate`);
    /// whether any were queued. `inline` (a caller on its own thread, not
    /// the writer thread): calls' writes only, and a database locked by
    /// another process is not waited for: the jobs go back to the queue for
    /// the thread, which waits up to SQLite's `busy_timeout`.
    fn write_queued(&self, max: usize, inline: bool) -> bool {
        let jobs: Vec<Job> = {
            let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            let take = queue.iter().take(max).take_while(|j| !inline || matches!(j, Job::Write(_))).count();
            queue.drain(..take).collect()
        };
        if jobs.is_empty() {
            return false;
        }
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let mut run = |plan: &BatchPlan| {
            let result = sqlite_batch(&mut conn, &self.path, plan, if inline { Duration::ZERO } else { BUSY_TIMEOUT });
            if result.is_err() {
                *conn = None;
            }
            result
        };
        let mut group = Group::default();
        for job in jobs {
            match job {
                Job::Write(w) => group.add(w),
                Job::Plan(plan, ack) => {
                    let _ = ack.send(run(&plan));
                }
            }
        }
        self.last_write.store(self.epoch.elapsed().as_nanos() as u64, Ordering::Relaxed);
        if !group.is_empty() {
            // SQLite: no claim is announced to other nodes (`Written::waited` stays empty).
            let result = calls::plan_batch(&group.claims, now_ms(), &group.outcomes, &group.records, false)
                .and_then(|plan| run(&plan))
                .map(|written| written.holders);
            if inline && result.as_ref().is_err_and(is_busy) {
                let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                for job in group.into_jobs().into_iter().rev() {
                    queue.push_front(job);
                }
                return true;
            }
            let settled = (result.is_ok() && !group.outcomes.is_empty()).then(|| calls::settled(&group.outcomes));
            match &self.runtime {
                // From the thread, one task answers the whole batch: one
                // wake-up of the runtime per batch, not one per call.
                Some(rt) if !inline && group.waiting() > 1 => drop(rt.spawn(async move { group.answer(result) })),
                _ => group.answer(result),
            }
            if let Some(event) = settled {
                let _ = self.events.send(event);
            }
        }
        true
    }
}

/// The `sqlite-writer` thread: on each nudge, wait for the gate and write
/// batches until the queue is empty. It ends with the writer.
fn sqlite_thread(writer: std::sync::Weak<SqliteWriter>, nudges: std::sync::mpsc::Receiver<()>) {
    while nudges.recv().is_ok() {
        let Some(writer) = writer.upgrade() else { return };
        let _writing = writer.gate.blocking_lock();
        while writer.write_queued(BATCH, false) {}
    }
}

/// One batch on the PostgreSQL call writer's connection (opened if
/// needed; dropped after an error, so the next try opens a fresh one).
async fn postgres_batch(slot: &mut Option<sqlx::AnyConnection>, url: &str, plan: &BatchPlan) -> Answers {
    use sqlx::Connection;
    if slot.is_none() {
        *slot = Some(open_postgres_writer(url).await?);
    }
    let conn = slot.as_mut().expect("opened above");
    let result = async {
        if plan.is_one_statement() {
            // Its own transaction: no BEGIN and COMMIT round trips.
            return plan.run(&mut calls::SqlxExec(conn)).await;
        }
        let mut tx = conn.begin().await?;
        let answers = plan.run(&mut calls::SqlxExec(&mut tx)).await?;
        tx.commit().await?;
        Ok(answers)
    }
    .await;
    if result.is_err() {
        *slot = None;
    }
    result
}

/// Room for every row count of the multi-row statements (up to 3 ×
/// ROWS_PER_STATEMENT shapes): sqlx's default of 100 made the server
/// re-prepare (parse and plan) most batches.
async fn open_postgres_writer(url: &str) -> Result<sqlx::AnyConnection> {
    use sqlx::{Connection, Executor};
    let sep = if url.contains('?') { '&' } else { '?' };
    let mut conn = sqlx::AnyConnection::connect(&format!("{url}{sep}statement-cache-capacity=1024")).await?;
    conn.execute("SET synchronous_commit TO OFF").await?;
    Ok(conn)
}

/// One batch on the SQLite call-writer thread (opening its connection if
/// needed). A single statement runs in autocommit; anything more in one
/// `BEGIN IMMEDIATE` transaction.
fn sqlite_batch(slot: &mut Option<rusqlite::Connection>, path: &str, plan: &BatchPlan, busy_timeout: Duration) -> Answers {
    use futures::FutureExt;
    const READY: &str = "rusqlite runs each statement where it is called";
    if slot.is_none() {
        *slot = Some(open_sqlite_writer(path)?);
    }
    let conn = slot.as_mut().expect("opened above");
    conn.busy_timeout(busy_timeout)?;
    if plan.is_one_statement() {
        return plan.run(&mut calls::SqliteExec(conn)).now_or_never().expect(READY);
    }
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let answers = plan.run(&mut calls::SqliteExec(&tx)).now_or_never().expect(READY)?;
    tx.commit()?;
    Ok(answers)
}

/// The SQLite call writer's connection: the pool's session settings, but
/// `synchronous = NORMAL`, and it never checkpoints (a checkpoint syncs the
/// database file and would stall every call waiting on the batch): the
/// store's `checkpoints` task does, beside it.
fn open_sqlite_writer(path: &str) -> Result<rusqlite::Connection> {
    use rusqlite::OpenFlags;
    let conn = rusqlite::Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.execute_batch(&sqlite_session("NORMAL"))?;
    conn.execute_batch("PRAGMA wal_autocheckpoint = 0")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_batch_is_the_first_job_and_whatever_else_is_already_queued_up_to_the_cap() {
        let (tx, mut rx) = mpsc::channel(16);
        for i in 1..5 {
            tx.send(i).await.unwrap();
        }
        assert_eq!(drain(0, &mut rx, 3), vec![0, 1, 2]);
        assert_eq!(drain(9, &mut rx, 3), vec![9, 3, 4]);
        assert_eq!(drain(7, &mut rx, 3), vec![7], "an empty queue adds nothing");
    }

    fn claim(push_id: &str) -> ClaimRequest {
        ClaimRequest {
            tenant: crate::domain::TenantId::default_tenant(),
            push_id: push_id.into(),
            user: crate::domain::UserId::parse("alice").unwrap(),
            device: crate::domain::DevicePkid::parse("phone").unwrap(),
            call: CallId::new(),
            expires_at: i64::MAX,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_call_that_meets_a_database_locked_elsewhere_waits_for_it_on_the_writer_thread() {
        let (s, dir) = crate::store::test_support::store().await;
        let queue = s.call_queue();
        // A lone claim is written by the caller itself.
        assert_eq!(queue.claim(claim("first")).await.unwrap(), None);
        // Another process holds SQLite's write lock: the caller does not
        // wait for it on a tokio worker; the thread does, and the claim is
        // answered once the lock is gone, not refused.
        let other = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let waiting = tokio::spawn({
            let queue = queue.clone();
            async move { queue.claim(claim("second")).await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!waiting.is_finished(), "the claim waits for the lock");
        other.execute_batch("ROLLBACK").unwrap();
        assert_eq!(waiting.await.unwrap().unwrap(), None);
        let again = claim("second");
        assert!(queue.claim(again).await.unwrap().is_some(), "the claim was written once, by the thread");
    }
}

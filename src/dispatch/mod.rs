//! Dispatch: one call event → one push per device → one `CallReport`.
//!
//! For each device (concurrently): build the payload (`payload::for_call`),
//! send it (`provider`), and act on the `Attempt`: delivered; token gone →
//! remove the device (only if it still has that token); failed; or retry
//! with jittered exponential backoff that honours `Retry-After` and never
//! schedules an attempt past the ring end (then: expired).
//!
//! Depends on `domain`, `payload`, `provider`, `store`, `telemetry`. Never
//! sees XML, SIP or HTTP-server types.

use crate::domain::{
    now_ms, ApnsCredentials, AppId, CallEvent, CallId, CallReport, Channel, CredentialKind, Delivery, Device, DeviceSet, DeviceToken,
    FcmCredentials, MessageNote, Outcome, Provider, Reach, Registration, RingWindow, Scope, TenantId, UnreadableDevice,
};
use crate::payload::{self, Content};
use crate::provider::{ApnsClient, ApnsPush, Attempt, FailureKind, FcmClient, ProviderSettings};
use crate::store::{CallRecord, ClaimOutcome, ClaimRequest, Store, StoreError, StoreEvent};
use crate::telemetry;
use rand::Rng;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Backoff between attempts: `base * 2^n`, capped, with ±20 % jitter
/// (protocol.md §4.5: start 250 ms, ×2, cap 2 s), never less than `floor`
/// apart, at most `max_attempts` per device and call (interface.md §6).
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    pub base: Duration,
    pub cap: Duration,
    pub floor: Duration,
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { base: Duration::from_millis(250), cap: Duration::from_secs(2), floor: Duration::from_millis(100), max_attempts: 8 }
    }
}

impl RetryPolicy {
    /// Delay before attempt `n + 1` (n = attempts made so far, ≥ 1).
    /// A non-zero `Retry-After` wins over the backoff; `Retry-After: 0`
    /// (or none) means the jittered backoff. Never below `floor`.
    pub fn delay(&self, attempts: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(after) = retry_after.filter(|a| !a.is_zero()) {
            return after.max(self.floor);
        }
        let exp = self.base.saturating_mul(1u32 << attempts.saturating_sub(1).min(16));
        let d = exp.min(self.cap);
        let jitter = rand::thread_rng().gen_range(0.8..1.2);
        d.mul_f64(jitter).max(self.floor)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("user has no devices to wake")]
    NoDevices,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Parsed provider credentials, cached per (app, provider). A cached entry
/// younger than `CREDENTIALS_FRESH` is used as is; an older one is checked
/// against the stored row's `updated_at` (and reparsed only if it changed).
/// So a credentials change — on this node or another — is in effect within
/// `CREDENTIALS_FRESH`, and a call costs no credentials query in between.
#[derive(Default)]
struct CredentialCache {
    apns: Mutex<CachedCreds<ApnsCredentials>>,
    fcm: Mutex<CachedCreds<FcmCredentials>>,
}

/// app → (checked at, stored `updated_at`, parsed credentials).
type CachedCreds<C> = HashMap<AppId, (Instant, i64, Arc<C>)>;

const CREDENTIALS_FRESH: Duration = Duration::from_secs(1);

pub struct Dispatcher {
    store: Store,
    apns: ApnsClient,
    fcm: FcmClient,
    retry: RetryPolicy,
    creds: CredentialCache,
    /// (app, reason) pairs already logged: auth problems are logged once per
    /// app, not once per push (they are still in every report).
    alerted: Mutex<HashSet<(String, String)>>,
    shutdown: CancellationToken,
    writes: Writer,
    /// In-flight provider requests, bounded per provider, so a slow APNs
    /// cannot take every slot from FCM (or the other way round).
    apns_slots: Arc<tokio::sync::Semaphore>,
    fcm_slots: Arc<tokio::sync::Semaphore>,
    /// Pushes running outside a request (webhooks, `/sip/wake`).
    tasks: tokio_util::task::TaskTracker,
    /// Credential health last written per (app, provider): (ok?, when).
    health: Mutex<HashMap<(AppId, Provider), (bool, i64)>>,
    /// (tenant, app) pairs with a callback URL, and when that was read.
    callback_cache: Mutex<Option<(Instant, Arc<HashSet<(TenantId, AppId)>>)>>,
    /// Provider requests per (epoch minute, provider) not yet added to the
    /// store's shared minutes (the console's charts).
    minutes: Mutex<HashMap<(i64, Provider), crate::store::ProviderMinute>>,
}

/// Most provider requests in flight at once, per provider.
pub const MAX_IN_FLIGHT_PER_PROVIDER: usize = 1024;

/// Wait for one job, then take whatever else is already queued (up to
/// `max`): the batch of a group commit. `None` once every sender is gone.
async fn next_batch<T>(rx: &mut tokio::sync::mpsc::Receiver<T>, max: usize) -> Option<Vec<T>> {
    let first = rx.recv().await?;
    let mut batch = Vec::with_capacity(max);
    batch.push(first);
    while batch.len() < max {
        match rx.try_recv() {
            Ok(next) => batch.push(next),
            Err(_) => break,
        }
    }
    Some(batch)
}

/// The group commit of everything dispatch writes: push claims (each call
/// waits for its answer before it pushes), claim outcomes (not waited for:
/// a duplicate call is told by `ClaimsSettled`) and call reports (each call
/// waits for its own, so `GET /v1/calls/{id}` right after the answer finds
/// it). Whatever concurrent calls queued meanwhile goes into one
/// transaction of a few multi-row statements (`Store::write_batch`).
struct Writer {
    tx: tokio::sync::mpsc::Sender<WriteJob>,
    store: Store,
}

type Ack<T> = tokio::sync::oneshot::Sender<Result<T, String>>;

enum WriteJob {
    Claim(ClaimRequest, Ack<Option<CallId>>),
    ClaimOutcome(ClaimOutcome),
    Report(CallRecord, Ack<()>),
}

impl Writer {
    const QUEUE: usize = 4096;
    const BATCH: usize = 512;

    fn start(store: Store) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<WriteJob>(Self::QUEUE);
        let writer = store.clone();
        tokio::spawn(async move {
            while let Some(jobs) = next_batch(&mut rx, Self::BATCH).await {
                write_jobs(&writer, jobs).await;
            }
        });
        Self { tx, store }
    }

    /// Queue `job`; when the queue is full or the writer is gone, write it
    /// alone, here. Either way its answer goes to its ack.
    async fn submit(&self, job: WriteJob) {
        if let Err(tokio::sync::mpsc::error::TrySendError::Full(job) | tokio::sync::mpsc::error::TrySendError::Closed(job)) = self.tx.try_send(job) {
            write_jobs(&self.store, vec![job]).await;
        }
    }

    /// Submit the job `with_ack` makes and wait for its answer.
    async fn ask<T>(&self, with_ack: impl FnOnce(Ack<T>) -> WriteJob) -> Result<T, StoreError> {
        let (ack, done) = tokio::sync::oneshot::channel();
        self.submit(with_ack(ack)).await;
        done.await.map_err(|_| StoreError::Batch("call writer stopped".into()))?.map_err(StoreError::Batch)
    }

    async fn claim(&self, req: ClaimRequest) -> Result<Option<CallId>, StoreError> {
        self.ask(|ack| WriteJob::Claim(req, ack)).await
    }

    async fn save(&self, record: CallRecord) -> Result<(), StoreError> {
        self.ask(|ack| WriteJob::Report(record, ack)).await
    }

    async fn claim_outcome(&self, outcome: ClaimOutcome) {
        self.submit(WriteJob::ClaimOutcome(outcome)).await;
    }
}

/// One group commit: the jobs' claims, outcomes and reports in one
/// `Store::write_batch`, each answer (or the error) sent to its ack.
async fn write_jobs(store: &Store, jobs: Vec<WriteJob>) {
    let (mut claims, mut claim_acks, mut outcomes, mut records, mut report_acks) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for job in jobs {
        match job {
            WriteJob::Claim(c, ack) => {
                claims.push(c);
                claim_acks.push(ack);
            }
            WriteJob::ClaimOutcome(o) => outcomes.push(o),
            WriteJob::Report(r, ack) => {
                records.push(r);
                report_acks.push(ack);
            }
        }
    }
    match store.write_batch(&claims, now_ms(), &outcomes, &records).await {
        Ok(answers) => {
            for (ack, answer) in claim_acks.into_iter().zip(answers) {
                let _ = ack.send(Ok(answer));
            }
            for ack in report_acks {
                let _ = ack.send(Ok(()));
            }
        }
        Err(e) => {
            let e = e.to_string();
            metrics::counter!(telemetry::STORE_ERRORS).increment(1);
            tracing::error!(error = %e, claims = claims.len(), calls = records.len(), outcomes = outcomes.len(), "a batch of call writes could not be stored");
            for ack in claim_acks {
                let _ = ack.send(Err(e.clone()));
            }
            for ack in report_acks {
                let _ = ack.send(Err(e.clone()));
            }
        }
    }
}

impl Dispatcher {
    /// Must be called inside a tokio runtime (it starts the report writer).
    pub fn new(store: Store, providers: ProviderSettings, retry: RetryPolicy, shutdown: CancellationToken) -> Self {
        let store_for_reports = store.clone();
        Self {
            store,
            apns: ApnsClient::new(providers.clone()),
            fcm: FcmClient::new(providers),
            retry,
            creds: CredentialCache::default(),
            alerted: Mutex::new(HashSet::new()),
            shutdown,
            writes: Writer::start(store_for_reports),
            apns_slots: Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT_PER_PROVIDER)),
            fcm_slots: Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT_PER_PROVIDER)),
            tasks: tokio_util::task::TaskTracker::new(),
            health: Mutex::new(HashMap::new()),
            callback_cache: Mutex::new(None),
            minutes: Mutex::new(HashMap::new()),
        }
    }

    /// Keep credential health (interface.md §7) from one provider answer:
    /// a delivery or a dead token proves the credentials, an auth refusal
    /// counts against them, anything else says nothing. Written to the
    /// store when the state changes, else at most once a minute per app and
    /// provider: never a write per push.
    fn note_health(&self, app: &AppId, provider: Provider, attempt: &Attempt) {
        if let Some(write) = self.health_write(app, provider, attempt) {
            self.tasks.spawn(write);
        }
    }

    /// The store write a provider answer calls for, if any (see `note_health`).
    fn health_write(&self, app: &AppId, provider: Provider, attempt: &Attempt) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        let refused = match attempt {
            Attempt::Delivered { .. } | Attempt::TokenGone { .. } => None,
            Attempt::Failed { kind: FailureKind::Auth, reason, .. } => Some(reason.clone()),
            _ => return None,
        };
        let now = now_ms();
        {
            let mut notes = self.health.lock().expect("health lock");
            let key = (app.clone(), provider);
            if let Some((was_ok, at)) = notes.get(&key) {
                if *was_ok == refused.is_none() && now - at < HEALTH_WRITE_EVERY_MS {
                    return None;
                }
            }
            notes.insert(key, (refused.is_none(), now));
        }
        let (store, app) = (self.store.clone(), app.clone());
        Some(async move {
            if let Err(e) = store.record_credential_health(&app, provider, now, refused.as_deref()).await {
                metrics::counter!(telemetry::STORE_ERRORS).increment(1);
                tracing::warn!(error = %e, "could not record credential health");
            }
        })
    }

    fn note_minute(&self, provider: Provider, took: Duration, error: bool) {
        let minute = now_ms() / 60_000;
        let mut minutes = self.minutes.lock().expect("minutes lock");
        minutes.entry((minute, provider)).or_default().record(took.as_secs_f64() * 1000.0, error);
    }

    /// Add the provider minutes counted here to the store's (every few
    /// seconds, and at shutdown).
    pub async fn flush_minutes(&self) {
        let taken: Vec<_> = {
            let mut minutes = self.minutes.lock().expect("minutes lock");
            minutes.drain().map(|((m, p), v)| (m, p, v)).collect()
        };
        if let Err(e) = self.store.add_provider_minutes(&taken).await {
            metrics::counter!(telemetry::STORE_ERRORS).increment(1);
            tracing::warn!(error = %e, "could not store provider minutes");
        }
    }

    /// Drop this node's cached credentials of `app` (they were just
    /// replaced or deleted here; other nodes re-read within a second).
    pub fn forget_credentials(&self, app: &AppId) {
        self.creds.apns.lock().expect("cache lock").remove(app);
        self.creds.fcm.lock().expect("cache lock").remove(app);
    }

    /// One push to a token outside any call (`POST /v1/apps/{app}/test-push`,
    /// `pushrelay push`): the provider's own answer. Nothing is stored but
    /// the credential health the answer shows; a dead token is reported,
    /// not removed.
    pub async fn test_push(&self, reach: &Reach, app: &AppId, channel: Channel, token: &DeviceToken, kind: payload::TestKind) -> Attempt {
        let window = RingWindow::starting_now(now_ms(), CANCEL_WINDOW_SECONDS);
        let content = payload::for_test(kind, channel.provider());
        let attempt = self.send_once(reach, &window, channel, app, token, &content).await;
        // Written before answering: the operator's next look shows it.
        if let Some(write) = self.health_write(app, channel.provider(), &attempt) {
            write.await;
        }
        attempt
    }

    pub fn apns(&self) -> &ApnsClient {
        &self.apns
    }

    pub fn fcm(&self) -> &FcmClient {
        &self.fcm
    }

    /// Push `event` to its user's devices in the scope (a scope narrowed to
    /// an app wakes that app's devices only); answers when every device has
    /// an outcome.
    pub async fn run(&self, scope: &Scope, event: &CallEvent) -> Result<CallReport, DispatchError> {
        let devices = self.store.devices_for(scope, &event.user, event.device.as_ref()).await?;
        if devices.is_empty() {
            return Err(DispatchError::NoDevices);
        }
        self.run_on_and_save(event, &devices).await
    }

    /// Run `push` as a tracked task: shutdown waits for it (pushes started
    /// by webhooks and `/sip/wake` outlive their request).
    pub fn spawn<F>(&self, push: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tasks.spawn(push)
    }

    /// Wait (at most `grace`) for every tracked push to end.
    pub async fn drain(&self, grace: Duration) -> bool {
        self.tasks.close();
        tokio::time::timeout(grace, self.tasks.wait()).await.is_ok()
    }

    /// `run_on`, then store the report (for `GET /v1/calls/{call_id}`) and,
    /// in the same write, queue it for the callback URL the devices' tenant
    /// set for each app the report names (each callback sees only the lines
    /// of its own tenant's devices of its app).
    pub async fn run_on_and_save(&self, event: &CallEvent, devices: &DeviceSet) -> Result<CallReport, DispatchError> {
        let report = self.run_on(event, devices).await;
        let callbacks = self.callbacks_for(&report, devices).await;
        let record = CallRecord {
            call: event.call_id.clone(),
            tenant: devices.tenant.clone(),
            user: event.user.clone(),
            push_id: event.push_id.as_str().to_string(),
            created_ms: event.ring.starts_at_ms,
            ring_ends_ms: event.ring.ends_at_ms,
            report: report.clone(),
            callbacks,
            apps: devices.ready.iter().map(|d| d.registration.app.clone()).chain(devices.unreadable.iter().map(|u| u.app.clone())).collect(),
        };
        self.writes.save(record).await?;
        Ok(report)
    }

    /// The callback bodies of a final report: one per app with a callback
    /// URL among the report's devices.
    async fn callbacks_for(&self, report: &CallReport, devices: &DeviceSet) -> Vec<crate::store::PendingCallback> {
        let targets = self.callback_targets().await;
        if targets.is_empty() {
            return Vec::new();
        }
        let tenant = &devices.tenant;
        let mut by_app: HashMap<&AppId, Vec<&Delivery>> = HashMap::new();
        for d in &report.deliveries {
            let app = devices
                .ready
                .iter()
                .find(|r| r.registration.device == d.device)
                .map(|r| &r.registration.app)
                .or_else(|| devices.unreadable.iter().find(|u| u.device == d.device).map(|u| &u.app));
            if let Some(app) = app.filter(|a| targets.contains(&(tenant.clone(), (*a).clone()))) {
                by_app.entry(app).or_default().push(d);
            }
        }
        by_app
            .into_iter()
            .map(|(app, deliveries)| crate::store::PendingCallback {
                app: app.clone(),
                body: serde_json::json!({ "app_id": app.as_str(), "call_id": report.call_id, "deliveries": deliveries }).to_string(),
            })
            .collect()
    }

    /// (tenant, app) pairs with a callback URL, re-read at most once a
    /// second (a callback set on another node applies to calls within a
    /// second).
    async fn callback_targets(&self) -> Arc<HashSet<(TenantId, AppId)>> {
        {
            let cached = self.callback_cache.lock().expect("callback cache lock");
            if let Some((at, set)) = cached.as_ref() {
                if at.elapsed() < CREDENTIALS_FRESH {
                    return set.clone();
                }
            }
        }
        let set = match self.store.callback_targets().await {
            Ok(s) => Arc::new(s),
            Err(e) => {
                tracing::warn!(error = %e, "could not read the apps with callbacks");
                Arc::new(HashSet::new())
            }
        };
        *self.callback_cache.lock().expect("callback cache lock") = Some((Instant::now(), set.clone()));
        set
    }

    /// Forget the cached set of apps with callbacks (one was set or removed here).
    pub fn forget_callback_apps(&self) {
        *self.callback_cache.lock().expect("callback cache lock") = None;
    }

    /// Push `event` to the given devices (already looked up), concurrently.
    /// A device whose key cannot be opened is `failed` (`unreadable_secret`).
    pub async fn run_on(&self, event: &CallEvent, devices: &DeviceSet) -> CallReport {
        let scope = Scope::tenant(devices.tenant.clone());
        let mut deliveries = futures::future::join_all(devices.ready.iter().map(|d| self.deliver_once(&scope, event, &d.registration))).await;
        deliveries.extend(devices.unreadable.iter().map(unreadable));
        CallReport::new(&event.call_id, deliveries)
    }

    /// One push per (pushid, device) within the ring window, across nodes:
    /// claim it in the store first; if another call holds the claim, report
    /// that call's outcome for this device instead of pushing again.
    async fn deliver_once(&self, scope: &Scope, event: &CallEvent, reg: &Registration) -> Delivery {
        let claim = self
            .writes
            .claim(ClaimRequest {
                push_id: event.push_id.as_str().to_string(),
                tenant: scope.tenant_id().clone(),
                user: reg.user.clone(),
                device: reg.device.clone(),
                call: event.call_id.clone(),
                expires_at: event.ring.ends_at_ms,
            })
            .await;
        let claimed = match claim {
            Ok(None) => true,
            Ok(Some(other)) => return self.outcome_of(scope, event.push_id.as_str(), &other, reg, &event.ring).await,
            Err(e) => {
                // A call is worth more than a duplicate: push anyway.
                metrics::counter!(telemetry::STORE_ERRORS).increment(1);
                tracing::error!(error = %e, "could not claim the push; pushing without the duplicate guard");
                false
            }
        };
        let delivery = self.deliver(scope, event.call_id.as_str(), &event.ring, reg, payload::for_call(event, reg)).await;
        if claimed {
            // Published per device at once (not with the report): a duplicate
            // call waiting on this device must never wait on our other devices.
            self.writes
                .claim_outcome(ClaimOutcome {
                    push_id: event.push_id.as_str().to_string(),
                    tenant: scope.tenant_id().clone(),
                    user: reg.user.clone(),
                    call: event.call_id.clone(),
                    delivery: delivery.clone(),
                })
                .await;
        }
        delivery
    }

    /// The outcome another call (maybe on another node) had for this device,
    /// as its claim records it; waits at most until the ring end (plus a
    /// little). Woken by the store's `ClaimsSettled` event (NOTIFY on
    /// PostgreSQL, in-process on SQLite), with a re-read every
    /// `CLAIM_RECHECK` in case an event was lost — no tight polling.
    async fn outcome_of(&self, scope: &Scope, push_id: &str, other: &CallId, reg: &Registration, ring: &RingWindow) -> Delivery {
        let give_up = ring.ends_at_ms + 2_000;
        let mut events = self.store.subscribe();
        let tenant = scope.tenant_id().as_str();
        loop {
            if let Ok(Some(d)) = self.store.claim_outcome(scope, push_id, &reg.user, &reg.device).await {
                let reason = format!("duplicate pushid: pushed once, by call {}", other.as_str());
                return Delivery { reason: Some(d.reason.map(|r| format!("{r}; {reason}")).unwrap_or(reason)), attempts: 0, ..d };
            }
            let left = give_up - now_ms();
            if left <= 0 {
                return Delivery::new(&reg.device, reg.channel, Outcome::Expired, None, Some(format!("duplicate pushid: call {} holds this device", other.as_str())), 0)
                    .of_app(&reg.app);
            }
            let wait = Duration::from_millis(left as u64).min(CLAIM_RECHECK);
            let settled = async {
                loop {
                    match events.recv().await {
                        Ok(StoreEvent::ClaimsSettled { claims })
                            if claims.iter().any(|c| c.push_id == push_id && c.tenant == tenant && c.user == reg.user.as_str() && c.device == reg.device.as_str()) =>
                        {
                            return
                        }
                        Ok(_) => {}
                        // Fell behind: look at the store now.
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
                    }
                }
            };
            let _ = tokio::time::timeout(wait, settled).await;
        }
    }

    /// Tell a person's devices about a message (seeds/000): alerts to message
    /// tokens, FCM data `type: message`, never a VoIP push. Not a call:
    /// nothing is claimed or stored; each outcome is counted and logged.
    pub async fn notify(&self, scope: &Scope, note: &MessageNote, devices: &[Device]) -> Vec<Delivery> {
        let window = RingWindow::starting_now(now_ms(), CANCEL_WINDOW_SECONDS);
        let label = note.id.as_deref().unwrap_or("message");
        futures::future::join_all(devices.iter().map(|d| {
            let reg = &d.registration;
            let window = &window;
            async move {
                match payload::for_message(note, reg) {
                    Some(content) => self.deliver(scope, label, window, reg, content).await,
                    None => finish(reg, Outcome::Skipped, None, Some("no message token: a message is never sent as a VoIP push".into()), 0),
                }
            }
        }))
        .await
    }

    /// Tell the devices of an earlier call that it ended (interface §4
    /// "Cancel"): alerts to message tokens, FCM data `type: cancel`, never a
    /// VoIP push; VoIP-only APNs devices are reported `skipped`.
    /// Only the scope's call, and of it only the devices the scope sees.
    pub async fn cancel(&self, scope: &Scope, call: &CallId) -> Result<Option<CallReport>, DispatchError> {
        let Some(info) = self.store.call_info(scope, call).await? else { return Ok(None) };
        let wanted: HashSet<&str> = info.report.deliveries.iter().map(|d| d.device.as_str()).collect();
        let mut set = self.store.devices_for(scope, &info.user, None).await?;
        set.retain(|_, device, _, _| wanted.contains(device.as_str()));
        let devices = set.ready;
        let window = RingWindow::starting_now(now_ms(), CANCEL_WINDOW_SECONDS);
        let deliveries = futures::future::join_all(devices.iter().map(|d| {
            let reg = &d.registration;
            let window = &window;
            let info = &info;
            async move {
                match payload::for_cancel(call.as_str(), &info.push_id, reg) {
                    Some(content) => self.deliver(scope, call.as_str(), window, reg, content).await,
                    None => finish(reg, Outcome::Skipped, None, Some("VoIP-only device: a cancel is never sent as a VoIP push".into()), 0),
                }
            }
        }))
        .await;
        Ok(Some(CallReport::new(call, deliveries)))
    }

    /// Deliver one payload to one device: attempts until delivered, dead,
    /// failed for good, or the window closes.
    #[tracing::instrument(skip_all, fields(call_id = %label, device = %reg.device, channel = %reg.channel))]
    async fn deliver(&self, scope: &Scope, label: &str, window: &RingWindow, reg: &Registration, content: Content) -> Delivery {
        let started = Instant::now();
        self.attempts(scope, label, window, reg, content).await.with_latency(started.elapsed())
    }

    async fn attempts(&self, scope: &Scope, _label: &str, window: &RingWindow, reg: &Registration, content: Content) -> Delivery {
        let reach = Reach::of(scope);
        // Alerts go to the message token (its own app and channel).
        let to_msg_token = matches!(content, Content::ApnsAlert { .. }) && reg.msg().is_some();
        let (app, channel, token) = match (reg.msg(), to_msg_token) {
            (Some(m), true) => (&m.app, m.channel, &m.token),
            _ => (&reg.app, reg.channel, &reg.token),
        };
        let provider = channel.provider();
        let mut attempts = 0u32;
        let mut last: Option<Attempt> = None;
        loop {
            let remaining_ms = window.remaining_ms(now_ms());
            if attempts >= self.retry.max_attempts {
                let (status, reason) = last.map(|a| (a.status(), a.reason().map(str::to_string))).unwrap_or((None, None));
                let reason = format!("gave up after {attempts} attempts (last: {})", reason.as_deref().unwrap_or("no answer"));
                return finish(reg, Outcome::Failed, status, Some(reason), attempts);
            }
            if remaining_ms == 0 {
                let (status, reason) = last.map(|a| (a.status(), a.reason().map(str::to_string))).unwrap_or((None, None));
                return finish(reg, Outcome::Expired, status, reason.or(Some("ring window closed".into())), attempts);
            }
            attempts += 1;
            let started = Instant::now();
            let attempt = tokio::time::timeout(Duration::from_millis(remaining_ms as u64), self.send_once(&reach, window, channel, app, token, &content))
                .await
                .unwrap_or(Attempt::Retry { status: None, reason: "ring window closed during the request".into(), after: None });
            metrics::histogram!(telemetry::PROVIDER_LATENCY, "provider" => provider.as_str()).record(started.elapsed().as_secs_f64());
            self.note_minute(provider, started.elapsed(), !matches!(attempt, Attempt::Delivered { .. } | Attempt::TokenGone { .. }));
            self.note_health(app, provider, &attempt);
            match attempt {
                Attempt::Delivered { status } => return finish(reg, Outcome::Delivered, Some(status), None, attempts),
                Attempt::TokenGone { status, reason } => {
                    let removed = if to_msg_token {
                        self.store.clear_msg_token(scope, &reg.user, &reg.device, token).await
                    } else {
                        self.store.remove_dead_token(scope, &reg.user, &reg.device, token).await
                    };
                    match removed {
                        Ok(_) => metrics::counter!(telemetry::TOKENS_REMOVED, "provider" => provider.as_str()).increment(1),
                        Err(e) => {
                            metrics::counter!(telemetry::STORE_ERRORS).increment(1);
                            tracing::error!(error = %e, "could not remove a dead token");
                        }
                    }
                    return finish(reg, Outcome::TokenRemoved, Some(status), Some(reason), attempts);
                }
                Attempt::Failed { kind, status, reason } => {
                    self.alert_once(app, kind, status, &reason);
                    return finish(reg, Outcome::Failed, status, Some(reason), attempts);
                }
                Attempt::Retry { status, reason, after } => {
                    let delay = self.retry.delay(attempts, after);
                    let left = window.remaining_ms(now_ms());
                    if delay.as_millis() as i64 >= left {
                        return finish(reg, Outcome::Expired, status, Some(reason), attempts);
                    }
                    metrics::counter!(telemetry::RETRIES, "provider" => provider.as_str()).increment(1);
                    tracing::debug!(attempts, ?delay, reason = %reason, "retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.shutdown.cancelled() => {
                            return finish(reg, Outcome::Failed, status, Some(format!("relay shutting down (last: {reason})")), attempts);
                        }
                    }
                    last = Some(Attempt::Retry { status, reason, after });
                }
            }
        }
    }

    /// One provider request with the app's current credentials, inside that
    /// provider's concurrency bound.
    async fn send_once(&self, reach: &Reach, window: &RingWindow, channel: Channel, app: &AppId, token: &DeviceToken, content: &Content) -> Attempt {
        let slots = match channel.provider() {
            Provider::Apns => &self.apns_slots,
            Provider::Fcm => &self.fcm_slots,
        };
        let Ok(_slot) = slots.acquire().await else {
            return Attempt::Failed { kind: FailureKind::Other, status: None, reason: "relay shutting down".into() };
        };
        match (channel.provider(), content) {
            (Provider::Apns, Content::ApnsVoip { body }) => {
                let creds = match self.apns_creds(reach, app).await {
                    Ok(c) => c,
                    Err(reason) => return Attempt::Failed { kind: FailureKind::Config, status: None, reason },
                };
                let push = ApnsPush::voip(token, &creds.bundle_id, window.ends_at_epoch_seconds(), body.clone());
                self.apns.send(app.as_str(), &creds, channel, &push).await
            }
            (Provider::Apns, Content::ApnsAlert { body, collapse_id }) => {
                let creds = match self.apns_creds(reach, app).await {
                    Ok(c) => c,
                    Err(reason) => return Attempt::Failed { kind: FailureKind::Config, status: None, reason },
                };
                let mut push = ApnsPush::alert(token, &creds.bundle_id, window.ends_at_epoch_seconds(), body.clone());
                push.collapse_id = collapse_id.clone();
                self.apns.send(app.as_str(), &creds, channel, &push).await
            }
            (Provider::Fcm, Content::FcmData { data }) => {
                let creds = match self.fcm_creds(reach, app).await {
                    Ok(c) => c,
                    Err(reason) => return Attempt::Failed { kind: FailureKind::Config, status: None, reason },
                };
                // android.ttl: the seconds left before ring end, rounded up, ≥ 1.
                let ttl_s = ((window.remaining_ms(now_ms()) + 999) / 1000).max(1) as u64;
                self.fcm.send(&creds, token.as_str(), data, ttl_s).await
            }
            _ => Attempt::Failed { kind: FailureKind::Config, status: None, reason: "payload does not fit the channel".into() },
        }
    }

    async fn apns_creds(&self, reach: &Reach, app: &AppId) -> Result<Arc<ApnsCredentials>, String> {
        self.cached_creds(reach, &self.creds.apns, app, CredentialKind::Apns, |raw| ApnsCredentials::from_stored(raw).map_err(|e| e.to_string())).await
    }

    async fn fcm_creds(&self, reach: &Reach, app: &AppId) -> Result<Arc<FcmCredentials>, String> {
        self.cached_creds(reach, &self.creds.fcm, app, CredentialKind::Fcm, |raw| FcmCredentials::from_stored(raw).map_err(|e| e.to_string())).await
    }

    /// The app's credentials: cached (an app never changes owner, and a
    /// device only ever registers with an app its tenant sees), else read
    /// as `reach` sees them.
    async fn cached_creds<C>(
        &self,
        reach: &Reach,
        cache: &Mutex<CachedCreds<C>>,
        app: &AppId,
        provider: CredentialKind,
        parse: impl Fn(&str) -> Result<C, String>,
    ) -> Result<Arc<C>, String> {
        if let Some((at, _, c)) = cache.lock().expect("cache lock").get(app) {
            if at.elapsed() < CREDENTIALS_FRESH {
                return Ok(c.clone());
            }
        }
        let row = self.store.credentials(reach, app, provider).await.map_err(|e| match e {
            StoreError::Envelope(_) => "unreadable_secret: the app's credentials cannot be opened with the master keys this node holds".to_string(),
            other => format!("store: {other}"),
        })?;
        let Some(row) = row else {
            cache.lock().expect("cache lock").remove(app);
            return Err(format!("app {app} has no {} credentials", provider.as_str()));
        };
        let mut guard = cache.lock().expect("cache lock");
        if let Some(entry) = guard.get_mut(app) {
            if entry.1 == row.updated_at {
                entry.0 = Instant::now();
                return Ok(entry.2.clone());
            }
        }
        let parsed = Arc::new(parse(row.secret.expose())?);
        guard.insert(app.clone(), (Instant::now(), row.updated_at, parsed.clone()));
        Ok(parsed)
    }

    /// Provider-auth and configuration failures: logged once per app and reason.
    fn alert_once(&self, app: &AppId, kind: FailureKind, status: Option<u16>, reason: &str) {
        if matches!(kind, FailureKind::Auth | FailureKind::Config)
            && self.alerted.lock().expect("alert lock").insert((app.as_str().to_string(), reason.to_string()))
        {
            tracing::error!(app = %app, kind = kind.as_str(), status, reason, "provider refused the app's credentials or configuration (logged once per app and reason)");
        }
    }
}

/// Cancels are alerts: worth delivering for half a minute, not longer.
const CANCEL_WINDOW_SECONDS: u32 = 30;

/// Credential health is written at most this often per app and provider
/// while its state stays the same.
const HEALTH_WRITE_EVERY_MS: i64 = 60_000;

/// How often a duplicate call re-reads a claim it waits on (events are the
/// fast path; this only covers a lost one).
const CLAIM_RECHECK: Duration = Duration::from_secs(1);

/// The report line of a device whose key cannot be opened.
fn unreadable(d: &UnreadableDevice) -> Delivery {
    metrics::counter!(telemetry::PUSHES, "provider" => d.channel.provider().as_str(), "outcome" => Outcome::Failed.as_str()).increment(1);
    tracing::error!(user = %d.user, device = %d.device, "device not pushed: its key cannot be opened with the master keys this node holds");
    Delivery::new(&d.device, d.channel, Outcome::Failed, None, Some("unreadable_secret".into()), 0).of_app(&d.app)
}

/// A reason text without the device's token: whatever a library or a
/// provider wrote, the token only appears as its last 8 characters.
fn scrub(reason: String, token: &DeviceToken) -> String {
    if token.as_str().len() > 8 && reason.contains(token.as_str()) {
        reason.replace(token.as_str(), &format!("…{}", token.suffix()))
    } else {
        reason
    }
}

/// Record one device's outcome (metrics, one log line) and make its `Delivery`.
fn finish(reg: &Registration, outcome: Outcome, status: Option<u16>, reason: Option<String>, attempts: u32) -> Delivery {
    let reason = reason.map(|r| {
        let r = scrub(r, &reg.token);
        match reg.msg() {
            Some(m) => scrub(r, &m.token),
            None => r,
        }
    });
    let provider = reg.channel.provider();
    metrics::counter!(telemetry::PUSHES, "provider" => provider.as_str(), "outcome" => outcome.as_str()).increment(1);
    tracing::info!(outcome = outcome.as_str(), attempts, status, reason = reason.as_deref().unwrap_or(""), token = reg.token.suffix(), "push finished");
    Delivery::new(&reg.device, reg.channel, outcome, status, reason, attempts).of_app(&reg.app)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_250ms_and_caps_at_2s() {
        let p = RetryPolicy::default();
        let ms = |n| p.delay(n, None).as_millis();
        assert!((200..=300).contains(&ms(1)), "{}", ms(1));
        assert!((400..=600).contains(&ms(2)), "{}", ms(2));
        assert!((1600..=2400).contains(&ms(10)), "{}", ms(10));
    }

    #[test]
    fn retry_after_wins_over_backoff() {
        assert_eq!(RetryPolicy::default().delay(1, Some(Duration::from_secs(7))), Duration::from_secs(7));
    }

    #[test]
    fn retry_after_zero_backs_off_and_nothing_goes_below_the_floor() {
        let p = RetryPolicy::default();
        let d = p.delay(3, Some(Duration::ZERO)).as_millis();
        assert!((800..=1200).contains(&d), "Retry-After: 0 means the backoff, got {d} ms");
        let tiny = RetryPolicy { base: Duration::from_millis(1), ..p };
        assert_eq!(tiny.delay(1, None), Duration::from_millis(100));
        assert_eq!(p.delay(1, Some(Duration::from_millis(5))), Duration::from_millis(100));
    }
}

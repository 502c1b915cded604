//! Dispatch: one call event → one push per device → one `CallReport`.
//!
//! For each device (concurrently): take the push claim, build the payload
//! (`payload::for_call`, in the shape its provider carries), send it
//! through the provider registry, and act on the `Attempt`.
//!
//! - `mod.rs`       the call run: claims, duplicate calls, cancels, message
//!   alerts, test pushes, callbacks queued with the report, tracked pushes
//! - `retry`        the retry policy and the attempts loop of one device
//! - `credentials`  provider credentials per app, cached; one provider request
//! - `health`       credential health, per-minute provider sums, logging
//!   credential problems once
//!
//! Depends on `domain`, `payload`, `provider`, `store`, `telemetry`. Never
//! sees XML, SIP or HTTP-server types.

mod credentials;
mod health;
mod retry;

pub use retry::RetryPolicy;

use crate::domain::{
    now_ms, AppId, CallEvent, CallId, CallReport, Channel, Delivery, Device, DeviceSet, DeviceToken, MessageNote, Outcome, Provider, Reach,
    Registration, RingWindow, Scope, TenantId, UnreadableDevice,
};
use crate::payload;
use crate::provider::{Attempt, Providers};
use crate::store::{CallQueue, CallRecord, ClaimOutcome, ClaimRequest, Store, StoreError, StoreEvent};
use crate::telemetry;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("user has no devices to wake")]
    NoDevices,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The (tenant, app) pairs that have a callback URL.
type CallbackApps = Arc<HashSet<(TenantId, AppId)>>;

pub struct Dispatcher {
    store: Store,
    /// Every push service, by provider.
    providers: Arc<Providers>,
    retry: RetryPolicy,
    creds: credentials::CredentialCache,
    /// (app, reason) pairs already logged: auth problems are logged once per
    /// app, not once per push (they are still in every report).
    alerted: Mutex<HashSet<(String, String)>>,
    shutdown: CancellationToken,
    /// The store's group commit of claims, claim outcomes and reports.
    writes: CallQueue,
    /// In-flight provider requests, bounded per provider, so a slow APNs
    /// cannot take every slot from FCM (or the other way round).
    slots: HashMap<Provider, tokio::sync::Semaphore>,
    /// Pushes running outside a request (webhooks, `/sip/wake`).
    tasks: tokio_util::task::TaskTracker,
    /// Credential health last written per (app, provider): (ok?, when).
    health: Mutex<HashMap<(AppId, Provider), (bool, i64)>>,
    /// (tenant, app) pairs with a callback URL, and when that was read.
    callback_cache: Mutex<Option<(Instant, CallbackApps)>>,
    /// `calls.push_without_claim`.
    push_without_claim: bool,
    /// Provider requests per (epoch minute, provider) not yet added to the
    /// store's shared minutes (the console's charts).
    minutes: Mutex<HashMap<(i64, Provider), crate::store::ProviderMinute>>,
}

/// Most provider requests in flight at once, per provider.
pub const MAX_IN_FLIGHT_PER_PROVIDER: usize = 1024;

impl Dispatcher {
    /// Must be called inside a tokio runtime (on PostgreSQL it starts the
    /// call writer's task).
    pub fn new(store: Store, providers: Arc<Providers>, retry: RetryPolicy, shutdown: CancellationToken) -> Self {
        let writes = store.call_queue();
        let slots = providers.iter().map(|p| (p.provider(), tokio::sync::Semaphore::new(MAX_IN_FLIGHT_PER_PROVIDER))).collect();
        Self {
            store,
            providers,
            retry,
            creds: Default::default(),
            alerted: Mutex::new(HashSet::new()),
            shutdown,
            writes,
            slots,
            tasks: tokio_util::task::TaskTracker::new(),
            health: Mutex::new(HashMap::new()),
            callback_cache: Mutex::new(None),
            minutes: Mutex::new(HashMap::new()),
            push_without_claim: false,
        }
    }

    /// `calls.push_without_claim`: push even when the claim that guards
    /// against a second ring cannot be written (default: refuse the push).
    pub fn push_without_claim(mut self, allow: bool) -> Self {
        self.push_without_claim = allow;
        self
    }

    /// Drop this node's cached credentials of `app` (they were just
    /// replaced or deleted here; other nodes re-read within a second).
    pub fn forget_credentials(&self, app: &AppId) {
        self.creds.forget(app);
        for p in self.providers.iter() {
            p.forget_app(app);
        }
    }

    /// The provider registry.
    pub fn providers(&self) -> &Arc<Providers> {
        &self.providers
    }

    /// How `provider` carries a payload (APNs when it is not registered:
    /// only the shape of a push that will be refused as unknown).
    fn shape(&self, provider: Provider) -> crate::domain::Shape {
        self.providers.get(provider).map_or(crate::domain::Shape::Apns, |p| p.shape())
    }

    /// One push to a token outside any call (`POST /v1/apps/{app}/test-push`,
    /// `pushrelay push`): the provider's own answer. Nothing is stored but
    /// the credential health the answer shows; a dead token is reported,
    /// not removed.
    pub async fn test_push(&self, reach: &Reach, app: &AppId, channel: Channel, token: &DeviceToken, kind: payload::TestKind) -> Attempt {
        let window = RingWindow::starting_now(now_ms(), CANCEL_WINDOW_SECONDS);
        let content = payload::for_test(kind, self.shape(channel.provider()));
        let target = credentials::Target { channel, app, token, subscription_keys: None };
        let attempt = self.send_once(reach, &window, target, &content).await;
        // Written before answering: the operator's next look shows it.
        if let Some(write) = self.health_write(app, channel.provider(), &attempt) {
            write.await;
        }
        attempt
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
    ///
    /// A call to one device writes that device's claim outcome with the
    /// report, in the same batch (nothing else of the call can wait for it).
    pub async fn run_on_and_save(&self, event: &CallEvent, devices: &DeviceSet) -> Result<CallReport, DispatchError> {
        let deferred = (devices.ready.len() == 1).then(|| Mutex::new(Vec::new()));
        let report = self.run_collecting(event, devices, deferred.as_ref()).await;
        let outcomes = deferred.map(|d| d.into_inner().unwrap_or_else(|e| e.into_inner())).unwrap_or_default();
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
        match self.writes.save(record, outcomes).await {
            Ok(()) => Ok(report),
            // Something rang: answer with what happened, so the backend does
            // not retry a call that reached the phone.
            Err(e) if report.pushed_anything() => {
                metrics::counter!(telemetry::STORE_ERRORS).increment(1);
                tracing::error!(error = %e, call = event.call_id.as_str(), "the call report could not be saved; answering with it anyway");
                Ok(CallReport { report_saved: false, ..report })
            }
            // Nothing rang: the store is unavailable, the backend may retry.
            Err(e) => Err(e.into()),
        }
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
                if at.elapsed() < credentials::CREDENTIALS_FRESH {
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
        self.run_collecting(event, devices, None).await
    }

    /// `run_on`; with `deferred`, the claim outcomes go there for the
    /// caller to write, instead of being written at once.
    async fn run_collecting(&self, event: &CallEvent, devices: &DeviceSet, deferred: Option<&Mutex<Vec<ClaimOutcome>>>) -> CallReport {
        let scope = Scope::tenant(devices.tenant.clone());
        let mut deliveries =
            futures::future::join_all(devices.ready.iter().map(|d| self.deliver_once(&scope, event, &d.registration, deferred))).await;
        deliveries.extend(devices.unreadable.iter().map(unreadable));
        CallReport { devices_from_stale_cache: devices.stale, ..CallReport::new(&event.call_id, deliveries) }
    }

    /// One push per (pushid, device) within the ring window, across nodes:
    /// claim it in the store first; if another call holds the claim, report
    /// that call's outcome for this device instead of pushing again.
    async fn deliver_once(&self, scope: &Scope, event: &CallEvent, reg: &Registration, deferred: Option<&Mutex<Vec<ClaimOutcome>>>) -> Delivery {
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
            // Our own claim, written by a batch whose answer was lost and retried.
            Ok(Some(other)) if other == event.call_id => true,
            Ok(Some(other)) => return self.outcome_of(scope, event.push_id.as_str(), &other, reg, &event.ring).await,
            Err(e) if self.push_without_claim => {
                // `calls.push_without_claim`: a call is worth more than a duplicate.
                metrics::counter!(telemetry::STORE_ERRORS).increment(1);
                tracing::error!(error = %e, "could not claim the push; pushing without the duplicate guard (calls.push_without_claim)");
                false
            }
            Err(e) => {
                // Without the claim a retry of this call (the backend got no
                // answer) would ring the phone again: refuse, so the backend
                // retries a call that rang nowhere.
                metrics::counter!(telemetry::STORE_ERRORS).increment(1);
                tracing::error!(error = %e, "could not claim the push; not pushing without the duplicate guard");
                return Delivery::new(
                    &reg.device,
                    reg.channel,
                    Outcome::Failed,
                    None,
                    Some(format!("{}: the push claim could not be written", crate::domain::STORE_UNAVAILABLE)),
                    0,
                )
                .of_app(&reg.app);
            }
        };
        let content = payload::for_call(event, reg, self.shape(reg.channel.provider()));
        let delivery = self.deliver(scope, event.call_id.as_str(), &event.ring, reg, content).await;
        if claimed {
            let outcome = ClaimOutcome {
                push_id: event.push_id.as_str().to_string(),
                tenant: scope.tenant_id().clone(),
                user: reg.user.clone(),
                call: event.call_id.clone(),
                delivery: delivery.clone(),
            };
            match deferred {
                Some(later) => later.lock().unwrap_or_else(|e| e.into_inner()).push(outcome),
                // Published per device at once (not with the report): a duplicate
                // call waiting on this device must never wait on our other devices.
                None => self.writes.claim_outcome(outcome).await,
            }
        }
        delivery
    }

    /// The outcome another call (maybe on another node) had for this device,
    /// as its claim records it; waits at most until the ring end (plus a
    /// little). Woken by the store's `ClaimsSettled` event (in-process, and
    /// on PostgreSQL a NOTIFY from the node that settles a claim marked
    /// `wait_on_claim`), with a re-read every
    /// `CLAIM_RECHECK` in case an event was lost — no tight polling.
    async fn outcome_of(&self, scope: &Scope, push_id: &str, other: &CallId, reg: &Registration, ring: &RingWindow) -> Delivery {
        let give_up = ring.ends_at_ms + 2_000;
        let mut events = self.store.subscribe();
        let tenant = scope.tenant_id().as_str();
        if let Err(e) = self.store.wait_on_claim(scope, push_id, &reg.user, &reg.device).await {
            // Not told by the other node, then: the re-reads still find the outcome.
            tracing::warn!(error = %e, "could not mark a push claim as waited on");
        }
        loop {
            if let Ok(Some(d)) = self.store.claim_outcome(scope, push_id, &reg.user, &reg.device).await {
                let reason = format!("duplicate pushid: pushed once, by call {}", other.as_str());
                return Delivery { reason: Some(d.reason.map(|r| format!("{r}; {reason}")).unwrap_or(reason)), attempts: 0, ..d };
            }
            let left = give_up - now_ms();
            if left <= 0 {
                return Delivery::new(
                    &reg.device,
                    reg.channel,
                    Outcome::Expired,
                    None,
                    Some(format!("duplicate pushid: call {} holds this device", other.as_str())),
                    0,
                )
                .of_app(&reg.app);
            }
            let wait = Duration::from_millis(left as u64).min(CLAIM_RECHECK);
            let settled = async {
                loop {
                    match events.recv().await {
                        Ok(StoreEvent::ClaimsSettled { claims })
                            if claims.iter().any(|c| {
                                c.push_id == push_id && c.tenant == tenant && c.user == reg.user.as_str() && c.device == reg.device.as_str()
                            }) =>
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
                match payload::for_message(note, reg, self.shape(reg.channel.provider())) {
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
        Ok(Some(self.cancel_on(scope, call, &info.push_id, &set.ready).await))
    }

    /// Tell `devices` that the call `call` (pushid `push_id`) ended: an
    /// alert or a data message `type: cancel`, never a VoIP push (VoIP-only
    /// devices are `skipped`).
    pub async fn cancel_on(&self, scope: &Scope, call: &CallId, push_id: &str, devices: &[Device]) -> CallReport {
        let window = RingWindow::starting_now(now_ms(), CANCEL_WINDOW_SECONDS);
        let deliveries = futures::future::join_all(devices.iter().map(|d| {
            let reg = &d.registration;
            let window = &window;
            async move {
                match payload::for_cancel(call.as_str(), push_id, reg, self.shape(reg.channel.provider())) {
                    Some(content) => self.deliver(scope, call.as_str(), window, reg, content).await,
                    None => finish(reg, Outcome::Skipped, None, Some("VoIP-only device: a cancel is never sent as a VoIP push".into()), 0),
                }
            }
        }))
        .await;
        CallReport::new(call, deliveries)
    }
}

/// Cancels are alerts: worth delivering for half a minute, not longer.
const CANCEL_WINDOW_SECONDS: u32 = 30;

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
    tracing::info!(
        outcome = outcome.as_str(),
        attempts,
        status,
        reason = reason.as_deref().unwrap_or(""),
        token = reg.token.suffix(),
        "push finished"
    );
    Delivery::new(&reg.device, reg.channel, outcome, status, reason, attempts).of_app(&reg.app)
}

/// A dispatcher over a fresh SQLite store with one stand-in provider (the
/// unit tests of the dispatch parts; the integration tests use the real
/// providers against the mocks).
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use crate::domain::{FieldError, Shape};
    use crate::provider::{Attempt, Credentials, Push, PushProvider, Sending, StoredForm};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Parses a stored secret as itself, counting the parses; every push is delivered.
    pub(crate) struct Counting {
        pub(crate) parses: AtomicUsize,
    }

    impl PushProvider for Counting {
        fn provider(&self) -> Provider {
            Provider::Hms
        }
        fn shape(&self) -> Shape {
            Shape::Data
        }
        fn credentials_from_admin(&self, _: &[u8]) -> Result<StoredForm, FieldError> {
            Err(FieldError::new("", "unused", "not in these tests"))
        }
        fn credentials_from_stored(&self, secret: &str) -> Result<Credentials, String> {
            self.parses.fetch_add(1, Ordering::SeqCst);
            Ok(Arc::new(secret.to_string()))
        }
        fn send<'a>(&'a self, creds: &'a Credentials, _: &'a Push<'a>) -> Sending<'a> {
            let secret = creds.downcast_ref::<String>().cloned().unwrap_or_default();
            Box::pin(async move { Attempt::Delivered { status: if secret == "v2" { 202 } else { 200 } } })
        }
        fn describe(&self, _: &serde_json::Value) -> String {
            String::new()
        }
        fn as_any(&self) -> &dyn std::any::Any {
            self
        }
    }

    pub(crate) async fn dispatcher() -> (Dispatcher, Arc<Counting>, tempfile::TempDir) {
        let (store, dir) = crate::store::test_support::store().await;
        let counting = Arc::new(Counting { parses: AtomicUsize::new(0) });
        let providers = Arc::new(Providers::from_list(vec![counting.clone()]));
        (Dispatcher::new(store, providers, RetryPolicy::default(), CancellationToken::new()), counting, dir)
    }
}

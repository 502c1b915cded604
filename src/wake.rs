//! Push-and-wait: `/sip/wake` holds a request until the woken device
//! re-REGISTERs. A waiter is one entry in a map keyed by AOR with a oneshot
//! sender — no thread, no timer loop and no database poll per waiter; the
//! timeout is the waiting request's own `tokio::time::timeout`.
//!
//! A REGISTER is published as a store event (`StoreEvent::Registered`):
//! in-process on SQLite, and with PostgreSQL also to every node through
//! `NOTIFY`, so a REGISTER on node B releases a wait held on node A.
//! `WakeHub::follow` feeds those events to the local waiters.
//!
//! A hang-up ends a wait the same way: `/sip/cancel` publishes
//! `StoreEvent::WakeCancelled` (every node), and the waiter of that AOR and
//! call is told `Wakeup::Cancelled`.
//!
//! `WakeStats` keeps how long this node's wakes took, by outcome (the
//! `pushrelay_wake_seconds` histogram and the console).
//!
//! Depends on `store` (its events), `telemetry` and tokio.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// At most this many requests may wait at once (each is a few hundred bytes).
pub const MAX_WAITERS: usize = 100_000;

/// The key waiters are kept under: the tenant and the AOR (an AOR in one
/// tenant never releases a wait in another).
pub fn wake_key(tenant: &str, aor: &str) -> String {
    format!("{tenant} {aor}")
}

/// How a wait ended, other than by its timeout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wakeup {
    /// The phone registered again, from this contact.
    Registered(String),
    /// The caller hung up (`/sip/cancel`).
    Cancelled,
}

/// One waiter: its id, when it began (epoch ms), the call it waits for
/// (the SIP Call-ID) and where its wake-up goes.
struct Entry {
    id: u64,
    since: i64,
    call_id: String,
    tx: oneshot::Sender<Wakeup>,
}

/// `wake_key` → its waiters.
type Waiters = HashMap<String, Vec<Entry>>;

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[derive(Default)]
pub struct WakeHub {
    waiters: Mutex<Waiters>,
    next_id: AtomicU64,
    count: AtomicU64,
    stats: WakeStats,
}

/// One waiting request; dropping it (timeout, client gone) unregisters it.
pub struct Waiter {
    hub: Arc<WakeHub>,
    aor: String,
    id: u64,
    rx: Option<oneshot::Receiver<Wakeup>>,
}

#[derive(Debug, thiserror::Error)]
#[error("too many requests are already waiting ({0})")]
pub struct TooManyWaiters(pub usize);

impl WakeHub {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Start waiting for the next REGISTER of `aor` (call before pushing, so
    /// a fast re-REGISTER cannot slip between push and wait), or the end of
    /// the call `call_id`.
    pub fn subscribe(self: &Arc<Self>, aor: &str, call_id: &str) -> Result<Waiter, TooManyWaiters> {
        if self.count.load(Ordering::Relaxed) as usize >= MAX_WAITERS {
            return Err(TooManyWaiters(MAX_WAITERS));
        }
        let (tx, rx) = oneshot::channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let entry = Entry { id, since: now_ms(), call_id: call_id.to_string(), tx };
        self.waiters.lock().expect("wake lock").entry(aor.to_string()).or_default().push(entry);
        self.count.fetch_add(1, Ordering::Relaxed);
        Ok(Waiter { hub: self.clone(), aor: aor.to_string(), id, rx: Some(rx) })
    }

    /// Release waiters on every `Registered` event of `store` (this node's
    /// and the other nodes') until `shutdown`.
    pub fn follow(self: &Arc<Self>, store: &crate::store::Store, shutdown: tokio_util::sync::CancellationToken) {
        let mut events = store.subscribe();
        let hub = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    e = events.recv() => match e {
                        Ok(crate::store::StoreEvent::Registered { tenant, aor, contact, at }) => { hub.notify_since(&wake_key(&tenant, &aor), &contact, at); }
                        Ok(crate::store::StoreEvent::WakeCancelled { tenant, aor, call_id }) => { hub.cancel(&wake_key(&tenant, &aor), &call_id); }
                        Ok(_) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => tracing::warn!(missed = n, "wake-up events were missed"),
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    }
                }
            }
        });
    }

    /// A REGISTER for `aor` arrived (tests): wake the local waiters.
    pub fn registered(&self, aor: &str, contact: &str) {
        self.notify_since(aor, contact, now_ms());
    }

    /// Wake every local waiter of `aor`; returns how many were woken.
    pub fn notify_local(&self, aor: &str, contact: &str) -> usize {
        self.notify_since(aor, contact, i64::MAX)
    }

    /// Wake the local waiters of `aor` that started waiting no later than
    /// `registered_at` (epoch ms): a REGISTER that happened before a wait
    /// began — and reached this node late through another node — must not
    /// release it.
    pub fn notify_since(&self, aor: &str, contact: &str, registered_at: i64) -> usize {
        self.release(aor, |e| e.since <= registered_at, || Wakeup::Registered(contact.to_string()))
    }

    /// End the local waits of `aor` for the call `call_id` (the caller hung
    /// up); returns how many ended.
    pub fn cancel(&self, aor: &str, call_id: &str) -> usize {
        self.release(aor, |e| e.call_id == call_id, || Wakeup::Cancelled)
    }

    fn release(&self, aor: &str, which: impl Fn(&Entry) -> bool, wakeup: impl Fn() -> Wakeup) -> usize {
        let mut map = self.waiters.lock().expect("wake lock");
        let Some(list) = map.get_mut(aor) else { return 0 };
        let (woken, kept): (Vec<_>, Vec<_>) = std::mem::take(list).into_iter().partition(|e| which(e));
        if kept.is_empty() {
            map.remove(aor);
        } else {
            *list = kept;
        }
        drop(map);
        let n = woken.len();
        self.count.fetch_sub(n as u64, Ordering::Relaxed);
        for e in woken {
            let _ = e.tx.send(wakeup());
        }
        n
    }

    /// How this node's wakes went.
    pub fn stats(&self) -> &WakeStats {
        &self.stats
    }

    /// Requests waiting right now.
    pub fn waiting(&self) -> usize {
        self.count.load(Ordering::Relaxed) as usize
    }
}

impl Waiter {
    /// What ended the wait, or `None` at the timeout.
    pub async fn wait(self, timeout: std::time::Duration) -> Option<Wakeup> {
        self.wait_until(tokio::time::Instant::now() + timeout).await
    }

    /// Like `wait`, with an absolute deadline.
    pub async fn wait_until(mut self, deadline: tokio::time::Instant) -> Option<Wakeup> {
        let rx = self.rx.take().expect("waited once");
        tokio::time::timeout_at(deadline, rx).await.ok().and_then(Result::ok)
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut map = self.hub.waiters.lock().expect("wake lock");
        if let Some(list) = map.get_mut(&self.aor) {
            let before = list.len();
            list.retain(|e| e.id != self.id);
            if list.len() < before {
                self.hub.count.fetch_sub(1, Ordering::Relaxed);
            }
            if list.is_empty() {
                map.remove(&self.aor);
            }
        }
    }
}

/// How a wake ended, for `pushrelay_wake_seconds{outcome}` and the console.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WakeOutcome {
    Registered,
    Timeout,
    Cancelled,
    PushFailed,
}

impl WakeOutcome {
    pub const ALL: [WakeOutcome; 4] = [WakeOutcome::Registered, WakeOutcome::Timeout, WakeOutcome::Cancelled, WakeOutcome::PushFailed];

    /// As in `telemetry::WAKE_OUTCOMES`.
    pub fn as_str(self) -> &'static str {
        crate::telemetry::WAKE_OUTCOMES[self as usize]
    }
}

/// The last `KEPT` wake durations per outcome on this node (the console's
/// figures), beside the Prometheus histogram.
#[derive(Default)]
pub struct WakeStats {
    recent: Mutex<HashMap<&'static str, std::collections::VecDeque<f64>>>,
}

impl WakeStats {
    const KEPT: usize = 1000;

    /// A wake that ended `outcome` after `took`.
    pub fn record(&self, outcome: WakeOutcome, took: std::time::Duration) {
        let secs = took.as_secs_f64();
        metrics::histogram!(crate::telemetry::WAKE_SECONDS, "outcome" => outcome.as_str()).record(secs);
        let mut recent = self.recent.lock().expect("wake stats lock");
        let list = recent.entry(outcome.as_str()).or_default();
        if list.len() == Self::KEPT {
            list.pop_front();
        }
        list.push_back(secs);
    }

    /// Per outcome: (how many of the recent ones, median, 95th percentile), in seconds.
    pub fn summary(&self) -> Vec<(&'static str, usize, f64, f64)> {
        let recent = self.recent.lock().expect("wake stats lock");
        WakeOutcome::ALL
            .iter()
            .map(|o| {
                let mut v: Vec<f64> = recent.get(o.as_str()).map(|l| l.iter().copied().collect()).unwrap_or_default();
                v.sort_by(f64::total_cmp);
                let at = |q: f64| if v.is_empty() { 0.0 } else { v[((v.len() - 1) as f64 * q).round() as usize] };
                (o.as_str(), v.len(), at(0.5), at(0.95))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_register_wakes_every_waiter_of_that_aor_only() {
        let hub = WakeHub::new();
        let a1 = hub.subscribe("sip:1@x", "c1").unwrap();
        let a2 = hub.subscribe("sip:1@x", "c2").unwrap();
        let b = hub.subscribe("sip:2@x", "c3").unwrap();
        assert_eq!(hub.waiting(), 3);
        hub.registered("sip:1@x", "<sip:1@10.0.0.1>");
        let back = Some(Wakeup::Registered("<sip:1@10.0.0.1>".into()));
        assert_eq!(a1.wait(Duration::from_secs(1)).await, back);
        assert_eq!(a2.wait(Duration::from_secs(1)).await, back);
        assert_eq!(b.wait(Duration::from_millis(20)).await, None);
        assert_eq!(hub.waiting(), 0, "timed-out waiter unregistered itself");
    }

    #[tokio::test]
    async fn many_waiters_cost_no_task_and_time_out_cleanly() {
        let hub = WakeHub::new();
        let waits: Vec<_> = (0..1000).map(|i| hub.subscribe(&format!("sip:{i}@x"), "c").unwrap()).collect();
        assert_eq!(hub.waiting(), 1000);
        let results = futures::future::join_all(waits.into_iter().map(|w| w.wait(Duration::from_millis(30)))).await;
        assert!(results.iter().all(Option::is_none));
        assert_eq!(hub.waiting(), 0);
    }

    #[tokio::test]
    async fn a_registration_older_than_the_wait_does_not_release_it() {
        let hub = WakeHub::new();
        let w = hub.subscribe("sip:1@x", "c").unwrap();
        // Published by another node before this wait began, delivered late.
        assert_eq!(hub.notify_since("sip:1@x", "old", now_ms() - 1_000), 0);
        assert_eq!(hub.waiting(), 1);
        assert_eq!(hub.notify_since("sip:1@x", "new", now_ms()), 1);
        assert_eq!(w.wait(Duration::from_secs(1)).await, Some(Wakeup::Registered("new".into())));
    }

    #[tokio::test]
    async fn a_cancel_ends_only_the_wait_of_that_call() {
        let hub = WakeHub::new();
        let this = hub.subscribe("sip:1@x", "call-a").unwrap();
        let other_call = hub.subscribe("sip:1@x", "call-b").unwrap();
        assert_eq!(hub.cancel("sip:1@x", "call-a"), 1);
        assert_eq!(hub.cancel("sip:2@x", "call-b"), 0, "another AOR");
        assert_eq!(this.wait(Duration::from_secs(1)).await, Some(Wakeup::Cancelled));
        assert_eq!(other_call.wait(Duration::from_millis(20)).await, None);
        hub.stats().record(WakeOutcome::Cancelled, Duration::from_millis(120));
        hub.stats().record(WakeOutcome::Cancelled, Duration::from_millis(80));
        let cancelled = hub.stats().summary().into_iter().find(|s| s.0 == "cancelled").unwrap();
        assert_eq!((cancelled.1, cancelled.2), (2, 0.12));
    }
}

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
//! Depends on `store` (its events) and tokio.

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

/// `wake_key` → (waiter id, subscribed at (epoch ms), its sender)
type Waiters = HashMap<String, Vec<(u64, i64, oneshot::Sender<String>)>>;

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[derive(Default)]
pub struct WakeHub {
    waiters: Mutex<Waiters>,
    next_id: AtomicU64,
    count: AtomicU64,
}

/// One waiting request; dropping it (timeout, client gone) unregisters it.
pub struct Waiter {
    hub: Arc<WakeHub>,
    aor: String,
    id: u64,
    rx: Option<oneshot::Receiver<String>>,
}

#[derive(Debug, thiserror::Error)]
#[error("too many requests are already waiting ({0})")]
pub struct TooManyWaiters(pub usize);

impl WakeHub {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Start waiting for the next REGISTER of `aor` (call before pushing, so
    /// a fast re-REGISTER cannot slip between push and wait).
    pub fn subscribe(self: &Arc<Self>, aor: &str) -> Result<Waiter, TooManyWaiters> {
        if self.count.load(Ordering::Relaxed) as usize >= MAX_WAITERS {
            return Err(TooManyWaiters(MAX_WAITERS));
        }
        let (tx, rx) = oneshot::channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.waiters.lock().expect("wake lock").entry(aor.to_string()).or_default().push((id, now_ms(), tx));
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
        let mut map = self.waiters.lock().expect("wake lock");
        let Some(list) = map.get_mut(aor) else { return 0 };
        let (woken, kept): (Vec<_>, Vec<_>) = std::mem::take(list).into_iter().partition(|(_, since, _)| *since <= registered_at);
        if kept.is_empty() {
            map.remove(aor);
        } else {
            *list = kept;
        }
        drop(map);
        let n = woken.len();
        self.count.fetch_sub(n as u64, Ordering::Relaxed);
        for (_, _, tx) in woken {
            let _ = tx.send(contact.to_string());
        }
        n
    }

    /// Requests waiting right now.
    pub fn waiting(&self) -> usize {
        self.count.load(Ordering::Relaxed) as usize
    }
}

impl Waiter {
    /// The contact of the REGISTER that woke us, or `None` at the timeout.
    pub async fn wait(self, timeout: std::time::Duration) -> Option<String> {
        self.wait_until(tokio::time::Instant::now() + timeout).await
    }

    /// Like `wait`, with an absolute deadline.
    pub async fn wait_until(mut self, deadline: tokio::time::Instant) -> Option<String> {
        let rx = self.rx.take().expect("waited once");
        tokio::time::timeout_at(deadline, rx).await.ok().and_then(Result::ok)
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut map = self.hub.waiters.lock().expect("wake lock");
        if let Some(list) = map.get_mut(&self.aor) {
            let before = list.len();
            list.retain(|(id, _, _)| *id != self.id);
            if list.len() < before {
                self.hub.count.fetch_sub(1, Ordering::Relaxed);
            }
            if list.is_empty() {
                map.remove(&self.aor);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_register_wakes_every_waiter_of_that_aor_only() {
        let hub = WakeHub::new();
        let a1 = hub.subscribe("sip:1@x").unwrap();
        let a2 = hub.subscribe("sip:1@x").unwrap();
        let b = hub.subscribe("sip:2@x").unwrap();
        assert_eq!(hub.waiting(), 3);
        hub.registered("sip:1@x", "<sip:1@10.0.0.1>");
        assert_eq!(a1.wait(Duration::from_secs(1)).await.as_deref(), Some("<sip:1@10.0.0.1>"));
        assert_eq!(a2.wait(Duration::from_secs(1)).await.as_deref(), Some("<sip:1@10.0.0.1>"));
        assert_eq!(b.wait(Duration::from_millis(20)).await, None);
        assert_eq!(hub.waiting(), 0, "timed-out waiter unregistered itself");
    }

    #[tokio::test]
    async fn many_waiters_cost_no_task_and_time_out_cleanly() {
        let hub = WakeHub::new();
        let waits: Vec<_> = (0..1000).map(|i| hub.subscribe(&format!("sip:{i}@x")).unwrap()).collect();
        assert_eq!(hub.waiting(), 1000);
        let results = futures::future::join_all(waits.into_iter().map(|w| w.wait(Duration::from_millis(30)))).await;
        assert!(results.iter().all(Option::is_none));
        assert_eq!(hub.waiting(), 0);
    }

    #[tokio::test]
    async fn a_registration_older_than_the_wait_does_not_release_it() {
        let hub = WakeHub::new();
        let w = hub.subscribe("sip:1@x").unwrap();
        // Published by another node before this wait began, delivered late.
        assert_eq!(hub.notify_since("sip:1@x", "old", now_ms() - 1_000), 0);
        assert_eq!(hub.waiting(), 1);
        assert_eq!(hub.notify_since("sip:1@x", "new", now_ms()), 1);
        assert_eq!(w.wait(Duration::from_secs(1)).await.as_deref(), Some("new"));
    }
}

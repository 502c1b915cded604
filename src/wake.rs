//! Push-and-wait: `/sip/wake` holds a request until the woken device
//! re-REGISTERs. A waiter is one entry in a map keyed by AOR with a oneshot
//! sender — no thread, no timer loop and no database poll per waiter; the
//! timeout is the waiting request's own `tokio::time::timeout`.
//!
//! `WakeHub::registered` is the one entry point for "a REGISTER for this AOR
//! arrived". On a single node it wakes local waiters. With PostgreSQL it is
//! also published with `NOTIFY` and every node's listener feeds
//! `notify_local`, so a REGISTER on node B releases a wait held on node A.
//!
//! Depends on nothing but tokio (and sqlx for the PostgreSQL listener).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// At most this many requests may wait at once (each is a few hundred bytes).
pub const MAX_WAITERS: usize = 100_000;

/// Publishes "(aor, contact) registered" to the other nodes.
pub type Publisher = Arc<dyn Fn(&str, &str, i64) + Send + Sync>;

/// aor → (waiter id, subscribed at (epoch ms), its sender)
type Waiters = HashMap<String, Vec<(u64, i64, oneshot::Sender<String>)>>;

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[derive(Default)]
pub struct WakeHub {
    waiters: Mutex<Waiters>,
    next_id: AtomicU64,
    count: AtomicU64,
    /// Set when registrations are also published to other nodes.
    remote: Mutex<Option<Publisher>>,
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

    /// A REGISTER for `aor` arrived here: wake local waiters and tell the
    /// other nodes (when a remote publisher is installed).
    pub fn registered(&self, aor: &str, contact: &str) {
        let at = now_ms();
        self.notify_since(aor, contact, at);
        let remote = self.remote.lock().expect("wake lock").clone();
        if let Some(publish) = remote {
            publish(aor, contact, at);
        }
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

    /// Install the cross-node publisher (PostgreSQL `NOTIFY`).
    pub fn set_remote(&self, publish: Publisher) {
        *self.remote.lock().expect("wake lock") = Some(publish);
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

    #[test]
    fn the_remote_publisher_sees_every_registration() {
        let hub = WakeHub::new();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        hub.set_remote(Arc::new(move |aor, c, _at| s.lock().unwrap().push((aor.to_string(), c.to_string()))));
        hub.registered("sip:9@x", "c");
        assert_eq!(seen.lock().unwrap().as_slice(), &[("sip:9@x".to_string(), "c".to_string())]);
    }
}

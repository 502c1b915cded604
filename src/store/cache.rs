//! The device cache: each user's devices, keys opened, so that a call
//! costs no store read while nothing changed. Keyed by `tenant/user`
//! (`user_key`): the same user id in two tenants is two entries.
//!
//! Correctness comes from invalidation, not from the time to live:
//! - every write to a user's devices through this `Store` drops that user's
//!   entry before the write returns (so this node never serves what it
//!   has itself replaced);
//! - on PostgreSQL the write also sends `DevicesChanged` to the other nodes
//!   (`NOTIFY`), whose listeners drop the entry when it arrives, and a
//!   listener that lost its connection drops everything (notifications may
//!   have been missed);
//! - a read that raced an invalidation does not fill the cache (a ticket
//!   taken before the read tells; see `fill`), so an old row read just
//!   before a write cannot outlive the write.
//!
//! What can still be stale, and for how long: on another node, a device
//! changed on this one, until the `NOTIFY` arrives (milliseconds on a
//! healthy database); and a change made outside any `Store` of a running
//! node (another process on the same SQLite file, SQL by hand), or a
//! notification lost without the listener noticing, until the entry's
//! time to live runs out (`CacheOptions::ttl`, 5 s by default). Sets with a
//! device whose key cannot be opened are never cached (a key rotation may
//! make it readable), and neither are empty sets (unknown users must not
//! push real entries out).

use crate::domain::DeviceSet;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the device cache is sized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheOptions {
    /// Users whose devices are kept (0: no cache).
    pub entries: usize,
    /// How long an entry is served without a store read.
    pub ttl: Duration,
}

impl Default for CacheOptions {
    fn default() -> Self {
        Self { entries: 100_000, ttl: Duration::from_secs(5) }
    }
}

#[derive(Clone)]
struct Entry {
    at: Instant,
    set: Arc<DeviceSet>,
}

/// Recent invalidations, so a fill can tell whether one touched its user
/// since its read began.
#[derive(Default)]
struct Invalidations {
    epoch: u64,
    /// (epoch, user); `None`: every user.
    recent: VecDeque<(u64, Option<String>)>,
    /// The newest epoch no longer in `recent`.
    forgotten: u64,
}

const RECENT: usize = 4096;

/// Taken before a store read; `fill` with it only caches the read if no
/// invalidation of that user happened in between.
#[derive(Clone, Copy, Debug)]
pub(super) struct Ticket(u64);

/// The cache key of a user: `tenant/user` (neither id may hold a `/`).
pub(super) fn user_key(tenant: &crate::domain::TenantId, user: &str) -> String {
    let mut k = String::with_capacity(tenant.as_str().len() + 1 + user.len());
    k.push_str(tenant.as_str());
    k.push('/');
    k.push_str(user);
    k
}

pub(super) struct DeviceCache {
    map: Option<quick_cache::sync::Cache<String, Entry>>,
    ttl: Duration,
    log: Mutex<Invalidations>,
    /// Entries cached before this are not fresh (`unverify`).
    unverified_before: Mutex<Option<Instant>>,
}

impl DeviceCache {
    pub(super) fn new(options: CacheOptions) -> Self {
        Self {
            map: (options.entries > 0).then(|| quick_cache::sync::Cache::new(options.entries)),
            ttl: options.ttl,
            log: Mutex::default(),
            unverified_before: Mutex::new(None),
        }
    }

    /// The user's devices, if cached, younger than the time to live, and
    /// not from before a lost event listener (`unverify`).
    pub(super) fn get(&self, user: &str) -> Option<Arc<DeviceSet>> {
        let entry = self.map.as_ref()?.get(user)?;
        let verified = self.unverified_before.lock().expect("cache lock").is_none_or(|before| entry.at > before);
        (entry.at.elapsed() < self.ttl && verified).then_some(entry.set)
    }

    /// The user's devices as last cached, however old: only for when the
    /// store cannot be read at all.
    pub(super) fn get_stale(&self, user: &str) -> Option<Arc<DeviceSet>> {
        Some(self.map.as_ref()?.get(user)?.set)
    }

    /// Changes may have been missed (the event listener lost its
    /// connection): no entry cached until now is served as fresh, but they
    /// stay for `get_stale`, and reads in flight are not cached.
    pub(super) fn unverify(&self) {
        *self.unverified_before.lock().expect("cache lock") = Some(Instant::now());
        let mut log = self.log.lock().expect("cache log");
        log.epoch += 1;
        let epoch = log.epoch;
        log.recent.push_back((epoch, None));
    }

    pub(super) fn ticket(&self) -> Ticket {
        Ticket(self.log.lock().expect("cache log").epoch)
    }

    /// Cache what a read that began at `ticket` found, unless the user's
    /// devices were invalidated since (then the read may be older than the
    /// write that invalidated them).
    pub(super) fn fill(&self, user: &str, ticket: Ticket, set: &Arc<DeviceSet>) {
        let Some(map) = &self.map else { return };
        if set.ready.is_empty() || !set.unreadable.is_empty() {
            return;
        }
        let log = self.log.lock().expect("cache log");
        if log.epoch != ticket.0 {
            let touched = log.forgotten > ticket.0 || log.recent.iter().any(|(epoch, u)| *epoch > ticket.0 && u.as_deref().is_none_or(|u| u == user));
            if touched {
                return;
            }
        }
        // Inserted under the log lock: an invalidation cannot slip between
        // the check and the insert.
        map.insert(user.to_string(), Entry { at: Instant::now(), set: set.clone() });
    }

    /// Drop these users' entries (`None`: every entry).
    pub(super) fn invalidate<'a>(&self, users: Option<impl IntoIterator<Item = &'a str>>) {
        let Some(map) = &self.map else { return };
        let mut log = self.log.lock().expect("cache log");
        log.epoch += 1;
        let epoch = log.epoch;
        match users {
            Some(users) => {
                for u in users {
                    map.remove(u);
                    log.recent.push_back((epoch, Some(u.to_string())));
                }
            }
            None => {
                map.clear();
                log.recent.push_back((epoch, None));
            }
        }
        while log.recent.len() > RECENT {
            if let Some((e, _)) = log.recent.pop_front() {
                log.forgotten = log.forgotten.max(e);
            }
        }
    }

    pub(super) fn clear(&self) {
        self.invalidate(None::<[&str; 0]>);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AppId, Channel, Device, DevicePkid, DeviceToken, DialectData, Registration, UserId};

    fn set(user: &str) -> Arc<DeviceSet> {
        let reg = Registration {
            user: UserId::parse(user).unwrap(),
            device: DevicePkid::parse("phone").unwrap(),
            channel: Channel::Fcm,
            token: DeviceToken::for_channel(Channel::Fcm, "tok-123456789").unwrap(),
            subscription_keys: None,
            app: AppId::parse("app").unwrap(),
            data: DialectData::Acrobits { msg: None },
        };
        Arc::new(DeviceSet {
            tenant: crate::domain::TenantId::default_tenant(),
            ready: vec![Device { registration: reg, created_at: 0, updated_at: 0 }],
            unreadable: vec![],
            stale: false,
        })
    }

    fn cache() -> DeviceCache {
        DeviceCache::new(CacheOptions { entries: 100, ttl: Duration::from_secs(60) })
    }

    #[test]
    fn a_fill_is_served_until_its_user_is_invalidated() {
        let c = cache();
        c.fill("alice", c.ticket(), &set("alice"));
        c.fill("bob", c.ticket(), &set("bob"));
        assert!(c.get("alice").is_some());
        c.invalidate(Some(["alice"]));
        assert!(c.get("alice").is_none());
        assert!(c.get("bob").is_some(), "other users keep their entries");
        c.clear();
        assert!(c.get("bob").is_none());
    }

    #[test]
    fn a_read_that_raced_an_invalidation_of_its_user_is_not_cached() {
        let c = cache();
        let ticket = c.ticket();
        // A write to alice's devices lands while her (old) row is being read.
        c.invalidate(Some(["alice"]));
        c.fill("alice", ticket, &set("alice"));
        assert!(c.get("alice").is_none());
        // Another user's invalidation does not stop the fill.
        let ticket = c.ticket();
        c.invalidate(Some(["bob"]));
        c.fill("alice", ticket, &set("alice"));
        assert!(c.get("alice").is_some());
    }

    #[test]
    fn when_the_log_forgot_the_invalidations_since_a_read_nothing_is_cached() {
        let c = cache();
        let ticket = c.ticket();
        for i in 0..RECENT + 10 {
            c.invalidate(Some([format!("u{i}").as_str()]));
        }
        c.fill("alice", ticket, &set("alice"));
        assert!(c.get("alice").is_none(), "cannot tell whether alice was invalidated: do not cache");
    }

    #[test]
    fn entries_expire_and_the_size_is_bounded() {
        let c = DeviceCache::new(CacheOptions { entries: 10, ttl: Duration::from_millis(50) });
        c.fill("alice", c.ticket(), &set("alice"));
        assert!(c.get("alice").is_some());
        std::thread::sleep(Duration::from_millis(60));
        assert!(c.get("alice").is_none(), "past the time to live the store is read again");
        for i in 0..1000 {
            c.fill(&format!("u{i}"), c.ticket(), &set("alice"));
        }
        let held = (0..1000).filter(|i| c.map.as_ref().unwrap().get(&format!("u{i}")).is_some()).count();
        assert!(held <= 20, "bounded: {held} entries held for a capacity of 10");
    }

    #[test]
    fn zero_entries_turns_the_cache_off() {
        let c = DeviceCache::new(CacheOptions { entries: 0, ttl: Duration::from_secs(60) });
        c.fill("alice", c.ticket(), &set("alice"));
        assert!(c.get("alice").is_none());
    }
}

//! Request-rate limits and the failed-authentication lock-out, on governor's
//! keyed GCRA limiters. Counted per node, in memory: a limit of R per
//! second per key holds per node (with N nodes a key gets at most N × R).
//!
//! - `RateLimiter`: calls, registrations and webhooks per key (429 +
//!   `Retry-After` past the rate; a burst of two seconds' worth passes).
//! - `AuthFailures`: failed Basic attempts per user name, failed bearer
//!   tokens and unknown user names per source address (interface.md §6).
//!   A key past `limits.auth_failures_per_minute` is locked until governor
//!   would admit its next failure; attempts meanwhile are refused before
//!   any password is hashed.

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most this many keys are remembered per limiter between clean-ups.
const MAX_KEYS: usize = 100_000;

/// Per-key request rate; `None` inside means unlimited. Keys of a tenant
/// that overrides the rate are counted by a limiter of that rate (one per
/// distinct rate, made when first needed).
pub struct RateLimiter {
    rate: u32,
    limiter: Option<DefaultKeyedRateLimiter<String>>,
    overrides: Mutex<HashMap<u32, std::sync::Arc<RateLimiter>>>,
}

impl RateLimiter {
    /// `per_second` = 0 means unlimited. The burst is two seconds' worth.
    pub fn new(per_second: u32) -> Self {
        let limiter = NonZeroU32::new(per_second).map(|rate| {
            let burst = NonZeroU32::new(per_second.saturating_mul(2)).unwrap_or(rate);
            governor::RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        Self { rate: per_second, limiter, overrides: Mutex::default() }
    }

    /// Take one request for `key`, or say how long until one is allowed.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else { return Ok(()) };
        let key = key.to_string();
        limiter.check_key(&key).map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Like `check`, at `rate` per second instead when given (a tenant's
    /// override; 0 = unlimited).
    pub fn check_at(&self, key: &str, rate: Option<u32>) -> Result<(), Duration> {
        match rate {
            Some(r) if r != self.rate => {
                let limiter =
                    self.overrides.lock().expect("rate overrides lock").entry(r).or_insert_with(|| std::sync::Arc::new(RateLimiter::new(r))).clone();
                limiter.check(key)
            }
            _ => self.check(key),
        }
    }

    /// Forget keys whose buckets are full again (bounded memory).
    pub fn clean_up(&self) {
        if let Some(l) = &self.limiter {
            l.retain_recent();
            l.shrink_to_fit();
        }
        for l in self.overrides.lock().expect("rate overrides lock").values() {
            l.clean_up();
        }
    }
}

/// The group a source address is counted in, for every per-address limit
/// (interface.md §6): an IPv4 address alone, an IPv6 address by its /64
/// (one subscriber or host usually holds a whole /64, so single addresses
/// would be an unlimited supply), an IPv4-mapped IPv6 address as IPv4.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AddressGroup(IpAddr);

impl AddressGroup {
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Self(ip),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self(IpAddr::V4(v4)),
                None => {
                    let mut o = v6.octets();
                    o[8..].fill(0);
                    Self(IpAddr::V6(std::net::Ipv6Addr::from(o)))
                }
            },
        }
    }
}

impl std::fmt::Display for AddressGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(a) => write!(f, "{a}"),
            IpAddr::V6(a) => write!(f, "{a}/64"),
        }
    }
}

/// Who a failed authentication is counted against.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum FailureKey {
    /// A Basic user name the relay knows (`tenant/name`).
    User(String),
    /// A source address group (failed passwords, unknown user names, bad
    /// bearer tokens, console logins, bad webhook signatures).
    Address(AddressGroup),
}

impl FailureKey {
    /// The key of a source address (its group).
    pub fn address(ip: IpAddr) -> Self {
        FailureKey::Address(AddressGroup::of(ip))
    }

    fn label(&self) -> String {
        match self {
            FailureKey::User(u) => format!("user:{u}"),
            FailureKey::Address(a) => format!("addr:{a}"),
        }
    }
}

/// Failed authentications per key and minute (interface.md §6).
pub struct AuthFailures {
    failures: Option<DefaultKeyedRateLimiter<String>>,
    /// Keys past the limit, and until when.
    locked: Mutex<HashMap<FailureKey, Instant>>,
}

impl AuthFailures {
    /// `per_minute` = 0 turns the lock-out off.
    pub fn new(per_minute: u32) -> Self {
        let failures = NonZeroU32::new(per_minute).map(|n| governor::RateLimiter::keyed(Quota::per_minute(n).allow_burst(n)));
        Self { failures, locked: Mutex::new(HashMap::new()) }
    }

    /// Before trying a credential: how long `key` is still locked out, if it is.
    pub fn locked_for(&self, key: &FailureKey) -> Option<Duration> {
        let locked = self.locked.lock().expect("auth failures lock");
        let until = *locked.get(key)?;
        until.checked_duration_since(Instant::now()).filter(|d| !d.is_zero())
    }

    /// The longest lock-out among `keys`.
    pub fn locked_any<'a>(&self, keys: impl IntoIterator<Item = &'a FailureKey>) -> Option<Duration> {
        keys.into_iter().filter_map(|k| self.locked_for(k)).max()
    }

    /// Count one failure against `key`; past the limit, lock it.
    pub fn failed(&self, key: &FailureKey) {
        let Some(limiter) = &self.failures else { return };
        if let Err(not_until) = limiter.check_key(&key.label()) {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let mut locked = self.locked.lock().expect("auth failures lock");
            if locked.len() >= MAX_KEYS {
                let now = Instant::now();
                locked.retain(|_, until| *until > now);
            }
            locked.insert(key.clone(), Instant::now() + wait.max(Duration::from_secs(1)));
            tracing::warn!(key = %key.label(), wait_s = wait.as_secs_f64().ceil(), "too many failed authentications: locked out");
            metrics::counter!(crate::telemetry::AUTH_LOCKOUTS).increment(1);
        }
    }

    /// Forget expired lock-outs and full buckets (bounded memory).
    pub fn clean_up(&self) {
        if let Some(l) = &self.failures {
            l.retain_recent();
            l.shrink_to_fit();
        }
        let now = Instant::now();
        self.locked.lock().expect("auth failures lock").retain(|_, until| *until > now);
    }
}

/// The limited classes of requests.
pub struct Limits {
    pub calls: RateLimiter,
    pub registrations: RateLimiter,
    /// Per app (Webex retries aggressively; a flood must not fan out pushes).
    pub webhooks: RateLimiter,
    pub auth_failures: AuthFailures,
}

impl Limits {
    pub fn from_settings(l: &crate::config::LimitSettings) -> Self {
        Self {
            calls: RateLimiter::new(l.calls_per_second),
            registrations: RateLimiter::new(l.registrations_per_second),
            webhooks: RateLimiter::new(l.webhooks_per_second),
            auth_failures: AuthFailures::new(l.auth_failures_per_minute),
        }
    }

    pub fn clean_up(&self) {
        self.calls.clean_up();
        self.registrations.clean_up();
        self.webhooks.clean_up();
        self.auth_failures.clean_up();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        let l = RateLimiter::new(5);
        let ok = (0..20).filter(|_| l.check("k").is_ok()).count();
        assert_eq!(ok, 10, "burst of two seconds' worth");
        let wait = l.check("k").unwrap_err();
        assert!(wait <= Duration::from_millis(200) && wait > Duration::ZERO, "{wait:?}");
        assert!(l.check("other").is_ok(), "keys are independent");
        assert!(RateLimiter::new(0).check("k").is_ok());
        let ok = (0..20).filter(|_| l.check_at("t", Some(2)).is_ok()).count();
        assert_eq!(ok, 4, "a tenant's own rate: a burst of two seconds of it");
        assert!((0..100).all(|_| l.check_at("u", Some(0)).is_ok()), "0 = unlimited");
    }

    #[test]
    fn ipv6_addresses_are_grouped_by_their_64() {
        let a = |s: &str| AddressGroup::of(s.parse().unwrap());
        assert_eq!(a("2001:db8:1:2::1"), a("2001:db8:1:2:ffff:ffff:ffff:ffff"));
        assert_ne!(a("2001:db8:1:2::1"), a("2001:db8:1:3::1"));
        assert_eq!(a("::ffff:192.0.2.1"), a("192.0.2.1"), "IPv4-mapped counts as IPv4");
        assert_ne!(a("192.0.2.1"), a("192.0.2.2"));
        assert_eq!(a("2001:db8:1:2::1").to_string(), "2001:db8:1:2::/64");
    }

    #[test]
    fn failures_past_the_limit_lock_the_key_only() {
        let f = AuthFailures::new(3);
        let alice = FailureKey::User("alice".into());
        for _ in 0..3 {
            assert!(f.locked_for(&alice).is_none());
            f.failed(&alice);
        }
        assert!(f.locked_for(&alice).is_none(), "the limit itself is allowed");
        f.failed(&alice);
        let wait = f.locked_for(&alice).expect("locked past the limit");
        assert!(wait <= Duration::from_secs(20) && wait >= Duration::from_secs(1), "{wait:?}");
        assert!(f.locked_for(&FailureKey::User("bob".into())).is_none());
        assert!(f.locked_any([&FailureKey::User("bob".into()), &alice]).is_some());
        let off = AuthFailures::new(0);
        (0..100).for_each(|_| off.failed(&alice));
        assert!(off.locked_for(&alice).is_none());
    }
}

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

/// Per-key request rate; `None` inside means unlimited.
pub struct RateLimiter(Option<DefaultKeyedRateLimiter<String>>);

impl RateLimiter {
    /// `per_second` = 0 means unlimited. The burst is two seconds' worth.
    pub fn new(per_second: u32) -> Self {
        Self(NonZeroU32::new(per_second).map(|rate| {
            let burst = NonZeroU32::new(per_second.saturating_mul(2)).unwrap_or(rate);
            governor::RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        }))
    }

    /// Take one request for `key`, or say how long until one is allowed.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        let Some(limiter) = &self.0 else { return Ok(()) };
        let key = key.to_string();
        limiter.check_key(&key).map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Forget keys whose buckets are full again (bounded memory).
    pub fn clean_up(&self) {
        if let Some(l) = &self.0 {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

/// Who a failed authentication is counted against.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum FailureKey {
    /// A Basic user name the relay knows.
    User(String),
    /// A source address (unknown user names, bad bearer tokens, console logins).
    Address(IpAddr),
}

impl FailureKey {
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

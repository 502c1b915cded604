//! Per-key rate limits (token buckets) for registration and call endpoints:
//! over the limit → 429 with `Retry-After`. Counted per node, in memory (a
//! limit of R per second per key holds per node; with N nodes behind a load
//! balancer a key gets at most N × R).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    const MAX_KEYS: usize = 100_000;

    /// `per_second` = 0 means unlimited. The burst is two seconds' worth.
    pub fn new(per_second: u32) -> Self {
        let per_second = f64::from(per_second);
        Self { per_second, burst: (per_second * 2.0).max(1.0), buckets: Mutex::new(HashMap::new()) }
    }

    /// Take one token for `key`, or say how long until one is there.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        if self.per_second == 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("rate limiter lock");
        if buckets.len() >= Self::MAX_KEYS && !buckets.contains_key(key) {
            // Forget idle keys rather than grow without bound.
            buckets.retain(|_, (tokens, at)| *tokens < self.burst && now.duration_since(*at) < Duration::from_secs(10));
        }
        let (tokens, at) = buckets.entry(key.to_string()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.per_second).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.per_second))
        }
    }
}

/// The two limited classes of endpoints.
pub struct Limits {
    pub calls: RateLimiter,
    pub registrations: RateLimiter,
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
}

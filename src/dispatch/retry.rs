//! Retries: the policy (jittered exponential backoff that honours
//! `Retry-After`, a floor between attempts, a cap on attempts, never past
//! the ring end), and the loop that applies it to one device's push
//! (`Dispatcher::deliver`): delivered; token gone → remove the device (only
//! if it still has that token); failed; or wait and try again.

use super::{finish, Dispatcher};
use crate::domain::{now_ms, Content, Delivery, Outcome, Reach, Registration, RingWindow, Scope};
use crate::provider::Attempt;
use crate::telemetry;
use rand::Rng;
use std::time::{Duration, Instant};

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

impl Dispatcher {
    /// Deliver one payload to one device: attempts until delivered, dead,
    /// failed for good, or the window closes.
    #[tracing::instrument(skip_all, fields(call_id = %label, device = %reg.device, channel = %reg.channel))]
    pub(super) async fn deliver(&self, scope: &Scope, label: &str, window: &RingWindow, reg: &Registration, content: Content) -> Delivery {
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
            // The subscription keys belong to the call token (a Web Push subscription).
            let keys = if to_msg_token { None } else { reg.subscription_keys.as_ref() };
            let target = super::credentials::Target { channel, app, token, subscription_keys: keys };
            let attempt = tokio::time::timeout(Duration::from_millis(remaining_ms as u64), self.send_once(&reach, window, target, &content))
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

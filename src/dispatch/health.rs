//! What the providers' answers say beyond one push: credential health per
//! app and provider (interface.md §7), this node's per-minute provider sums
//! (the console's charts), and credential problems logged once per app.

use super::Dispatcher;
use crate::domain::{now_ms, AppId, Provider};
use crate::provider::{Attempt, FailureKind};
use crate::telemetry;
use std::time::Duration;

/// Credential health is written at most this often per app and provider
/// while its state stays the same.
const HEALTH_WRITE_EVERY_MS: i64 = 60_000;

impl Dispatcher {
    /// Keep credential health (interface.md §7) from one provider answer:
    /// a delivery or a dead token proves the credentials, an auth refusal
    /// counts against them, anything else says nothing. Written to the
    /// store when the state changes, else at most once a minute per app and
    /// provider: never a write per push.
    pub(super) fn note_health(&self, app: &AppId, provider: Provider, attempt: &Attempt) {
        if let Some(write) = self.health_write(app, provider, attempt) {
            self.tasks.spawn(write);
        }
    }

    /// The store write a provider answer calls for, if any (see `note_health`).
    pub(super) fn health_write(
        &self,
        app: &AppId,
        provider: Provider,
        attempt: &Attempt,
    ) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
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

    pub(super) fn note_minute(&self, provider: Provider, took: Duration, error: bool) {
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

    /// Provider-auth and configuration failures: logged once per app and reason.
    pub(super) fn alert_once(&self, app: &AppId, kind: FailureKind, status: Option<u16>, reason: &str) {
        if matches!(kind, FailureKind::Auth | FailureKind::Config)
            && self.alerted.lock().expect("alert lock").insert((app.as_str().to_string(), reason.to_string()))
        {
            tracing::error!(app = %app, kind = kind.as_str(), status, reason, "provider refused the app's credentials or configuration (logged once per app and reason)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::dispatcher;
    use super::*;

    #[tokio::test]
    async fn health_is_written_when_it_changes_and_otherwise_at_most_once_a_minute() {
        let (d, _, _dir) = dispatcher().await;
        let app = AppId::parse("com.example.app").unwrap();
        let writes = |a: Attempt| d.health_write(&app, Provider::Hms, &a).is_some();
        let refused = || Attempt::Failed { kind: FailureKind::Auth, status: Some(401), reason: "80200001 OAuth authentication error".into() };
        assert!(writes(Attempt::Delivered { status: 200 }), "the first answer is written");
        assert!(!writes(Attempt::Delivered { status: 200 }), "the same state within a minute is not");
        assert!(!writes(Attempt::TokenGone { status: 410, reason: "gone".into() }), "a dead token proves the credentials too");
        assert!(writes(refused()), "a refusal is a change");
        assert!(!writes(refused()));
        assert!(!writes(Attempt::retry("timeout")), "transient trouble says nothing");
        assert!(!writes(Attempt::failed(FailureKind::Payload, "payload_too_large")), "nor does a bad push");
        assert!(writes(Attempt::Delivered { status: 200 }), "back to ok is a change");
        assert!(d.health_write(&app, Provider::Apns, &refused()).is_some(), "kept per provider");
    }

    #[tokio::test]
    async fn provider_minutes_are_summed_per_minute_and_provider_then_flushed() {
        let (d, _, _dir) = dispatcher().await;
        d.note_minute(Provider::Hms, Duration::from_millis(20), false);
        d.note_minute(Provider::Hms, Duration::from_millis(40), true);
        d.note_minute(Provider::WebPush, Duration::from_millis(10), false);
        assert_eq!(d.minutes.lock().unwrap().len(), 2, "one sum per (minute, provider)");
        d.flush_minutes().await;
        assert!(d.minutes.lock().unwrap().is_empty(), "flushed to the store");
    }
}

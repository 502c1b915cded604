//! Provider credentials per app, parsed once and cached, and the one
//! provider request they are used for (`Dispatcher::send_once`).
//!
//! A cached entry younger than `CREDENTIALS_FRESH` is used as is; an older
//! one is checked against the stored row's `updated_at` (and reparsed only
//! if it changed). So a credentials change — on this node or another — is
//! in effect within `CREDENTIALS_FRESH`, and a call costs no credentials
//! query in between. The same parsed `Arc` is handed out until then, which
//! lets providers keep per-credentials state (APNs: a prepared connection).

use super::Dispatcher;
use crate::domain::{AppId, Channel, Content, DeviceToken, Provider, Reach, RingWindow, SubscriptionKeys};
use crate::provider::{Attempt, Credentials, FailureKind, Push};
use crate::store::StoreError;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub(super) const CREDENTIALS_FRESH: Duration = Duration::from_secs(1);

/// (checked at, stored `updated_at`, parsed credentials).
type Cached = (Instant, i64, Credentials);

/// (app, provider) → what was read of its credentials, and when.
#[derive(Default)]
pub(super) struct CredentialCache(Mutex<HashMap<(AppId, Provider), Cached>>);

impl CredentialCache {
    /// Forget an app's credentials of every provider.
    pub(super) fn forget(&self, app: &AppId) {
        self.0.lock().expect("credential cache lock").retain(|(a, _), _| a != app);
    }
}

/// What one provider request needs besides the credentials.
pub(super) struct Target<'a> {
    pub(super) channel: Channel,
    pub(super) app: &'a AppId,
    pub(super) token: &'a DeviceToken,
    pub(super) subscription_keys: Option<&'a SubscriptionKeys>,
}

impl Dispatcher {
    /// One provider request with the app's current credentials, inside that
    /// provider's concurrency bound.
    pub(super) async fn send_once(&self, reach: &Reach, window: &RingWindow, target: Target<'_>, content: &Content) -> Attempt {
        let provider = target.channel.provider();
        let (Some(client), Some(slots)) = (self.providers.get(provider), self.slots.get(&provider)) else {
            return Attempt::failed(FailureKind::Config, format!("the relay has no {} provider", provider.as_str()));
        };
        let Ok(_slot) = slots.acquire().await else {
            return Attempt::Failed { kind: FailureKind::Other, status: None, reason: "relay shutting down".into() };
        };
        let creds = match self.credentials(reach, target.app, provider).await {
            Ok(c) => c,
            Err(reason) => return Attempt::Failed { kind: FailureKind::Config, status: None, reason },
        };
        let push =
            Push { app: target.app, channel: target.channel, token: target.token, subscription_keys: target.subscription_keys, content, window };
        client.send(&creds, &push).await
    }

    /// The app's credentials of `provider`: cached (an app never changes
    /// owner, and a device only ever registers with an app its tenant
    /// sees), else read as `reach` sees them.
    async fn credentials(&self, reach: &Reach, app: &AppId, provider: Provider) -> Result<Credentials, String> {
        let key = (app.clone(), provider);
        if let Some((at, _, c)) = self.creds.0.lock().expect("credential cache lock").get(&key) {
            if at.elapsed() < CREDENTIALS_FRESH {
                return Ok(c.clone());
            }
        }
        let row = self.store.credentials(reach, app, provider.into()).await.map_err(|e| match e {
            StoreError::Envelope(_) => "unreadable_secret: the app's credentials cannot be opened with the master keys this node holds".to_string(),
            other => format!("store: {other}"),
        })?;
        let Some(row) = row else {
            self.creds.0.lock().expect("credential cache lock").remove(&key);
            return Err(format!("app {app} has no {} credentials", provider.as_str()));
        };
        let mut guard = self.creds.0.lock().expect("credential cache lock");
        if let Some(entry) = guard.get_mut(&key) {
            if entry.1 == row.updated_at {
                entry.0 = Instant::now();
                return Ok(entry.2.clone());
            }
        }
        let client = self.providers.get(provider).ok_or_else(|| format!("the relay has no {} provider", provider.as_str()))?;
        let parsed = client.credentials_from_stored(row.secret.expose())?;
        guard.insert(key, (Instant::now(), row.updated_at, parsed.clone()));
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::dispatcher;
    use super::*;
    use crate::domain::{CredentialKind, RingWindow};
    use crate::secret::Secret;
    use std::sync::atomic::Ordering;

    #[tokio::test]
    async fn credentials_are_parsed_once_and_again_only_when_the_stored_row_changes() {
        let (d, counting, _dir) = dispatcher().await;
        let (app, reach) = (AppId::parse("com.example.app").unwrap(), Reach::every_tenant());
        let token = DeviceToken::for_channel(Channel::Hms, "IQAAAA-token").unwrap();
        let window = RingWindow::starting_now(crate::domain::now_ms(), 30);
        let content = Content::Data { data: Default::default() };
        let target = || Target { channel: Channel::Hms, app: &app, token: &token, subscription_keys: None };
        let send = || d.send_once(&reach, &window, target(), &content);

        let none = send().await;
        assert!(matches!(&none, Attempt::Failed { kind: FailureKind::Config, reason, .. } if reason.contains("no hms credentials")), "{none:?}");
        let summary = serde_json::json!({});
        let (v1, v2) = (Secret::new("v1".to_string()), Secret::new("v2".to_string()));
        let put = |secret, at| d.store.put_credentials(&reach, &app, CredentialKind::Push(Provider::Hms), &summary, secret, None, at);
        put(&v1, 1_000).await.unwrap();
        assert_eq!(send().await, Attempt::Delivered { status: 200 });
        assert_eq!(send().await, Attempt::Delivered { status: 200 });
        assert_eq!(counting.parses.load(Ordering::SeqCst), 1, "parsed once, then cached");
        tokio::time::sleep(CREDENTIALS_FRESH + Duration::from_millis(50)).await;
        assert_eq!(send().await, Attempt::Delivered { status: 200 });
        assert_eq!(counting.parses.load(Ordering::SeqCst), 1, "re-checked against updated_at, unchanged: not parsed again");
        put(&v2, 2_000).await.unwrap();
        tokio::time::sleep(CREDENTIALS_FRESH + Duration::from_millis(50)).await;
        assert_eq!(send().await, Attempt::Delivered { status: 202 }, "the new credentials are in effect within CREDENTIALS_FRESH");
        assert_eq!(counting.parses.load(Ordering::SeqCst), 2);

        let fcm_target = Target { channel: Channel::Fcm, app: &app, token: &token, subscription_keys: None };
        let missing = d.send_once(&reach, &window, fcm_target, &content).await;
        assert!(matches!(&missing, Attempt::Failed { kind: FailureKind::Config, reason, .. } if reason.contains("no fcm provider")), "{missing:?}");
    }
}

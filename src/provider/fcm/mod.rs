//! Firebase Cloud Messaging HTTP v1: data messages with high Android
//! priority (protocol.md §5).
//!
//! - `client`       OAuth access tokens from the service account's
//!   JWT-bearer grant, `messages:send`, google.rpc error → `Attempt`
//! - `credentials`  the service account, parsed and proven

pub mod client;
pub mod credentials;

pub use client::*;
pub use credentials::FcmCredentials;

use super::{Attempt, Credentials, FailureKind, Push, PushProvider, Sending, StoredForm};
use crate::domain::{now_ms, Content, FieldError, Provider, Shape};
use std::sync::Arc;

/// FCM behind the provider trait.
pub struct Fcm {
    client: FcmClient,
}

impl Fcm {
    pub fn new(settings: super::ProviderSettings) -> Self {
        Self { client: FcmClient::new(settings) }
    }

    /// The client itself (the benchmark's ceiling drives it directly).
    pub fn client(&self) -> &FcmClient {
        &self.client
    }
}

/// The seconds left before `window` ends, rounded up, at least 1: the
/// `ttl` of a data message (FCM, HMS) and the `TTL` of a Web Push.
pub(crate) fn ttl_seconds(window: &crate::domain::RingWindow) -> u64 {
    ((window.remaining_ms(now_ms()) + 999) / 1000).max(1) as u64
}

impl PushProvider for Fcm {
    fn provider(&self) -> Provider {
        Provider::Fcm
    }

    fn shape(&self) -> Shape {
        Shape::Data
    }

    fn credentials_from_admin(&self, body: &[u8]) -> Result<StoredForm, FieldError> {
        let creds = FcmCredentials::parse_admin_json(body)?;
        Ok(StoredForm { summary: creds.summary(), secret: creds.to_stored(), lookup_key: Some(creds.project_id.clone()), not_after: None })
    }

    fn credentials_from_stored(&self, secret: &str) -> Result<Credentials, String> {
        Ok(Arc::new(FcmCredentials::from_stored(secret).map_err(|e| e.to_string())?))
    }

    fn send<'a>(&'a self, creds: &'a Credentials, push: &'a Push<'a>) -> Sending<'a> {
        Box::pin(async move {
            let Some(creds) = creds.downcast_ref::<FcmCredentials>() else {
                return Attempt::failed(FailureKind::Config, "credentials of another provider");
            };
            let Content::Data { data } = push.content else {
                return Attempt::failed(FailureKind::Config, "payload does not fit the channel");
            };
            self.client.send(creds, push.token.as_str(), data, ttl_seconds(push.window)).await
        })
    }

    fn describe(&self, summary: &serde_json::Value) -> String {
        summary["project_id"].as_str().unwrap_or("").to_string()
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

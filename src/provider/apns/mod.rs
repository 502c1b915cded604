//! Apple Push Notification service: VoIP pushes for calls, alerts for
//! cancels and messages (protocol.md §4).
//!
//! - `client`       the HTTP/2 client per (app, environment), provider-JWT
//!   cache, request builder, status/reason → `Attempt` table
//! - `credentials`  token (`.p8`) or certificate credentials, parsed and proven

pub mod client;
pub mod credentials;

pub use client::*;
pub use credentials::{ApnsAuth, ApnsCredentials};

use super::{Attempt, Credentials, FailureKind, Push, PushProvider, Sending, StoredForm};
use crate::domain::{AppId, Content, FieldError, Provider, Shape};
use std::sync::Arc;

/// APNs behind the provider trait.
pub struct Apns {
    client: ApnsClient,
}

impl Apns {
    pub fn new(settings: super::ProviderSettings) -> Self {
        Self { client: ApnsClient::new(settings) }
    }

    /// The client itself (the benchmark's ceiling drives it directly).
    pub fn client(&self) -> &ApnsClient {
        &self.client
    }
}

impl PushProvider for Apns {
    fn provider(&self) -> Provider {
        Provider::Apns
    }

    fn shape(&self) -> Shape {
        Shape::Apns
    }

    fn credentials_from_admin(&self, body: &[u8]) -> Result<StoredForm, FieldError> {
        let creds = ApnsCredentials::parse_admin_json(body)?;
        let summary = creds.summary();
        let not_after = summary.get("notAfter").and_then(serde_json::Value::as_i64);
        Ok(StoredForm { summary, secret: creds.to_stored(), lookup_key: Some(creds.bundle_id.as_str().to_string()), not_after })
    }

    fn credentials_from_stored(&self, secret: &str) -> Result<Credentials, String> {
        Ok(Arc::new(ApnsCredentials::from_stored(secret).map_err(|e| e.to_string())?))
    }

    fn send<'a>(&'a self, creds: &'a Credentials, push: &'a Push<'a>) -> Sending<'a> {
        Box::pin(async move {
            // The same `Arc` the dispatcher caches: the client keeps its
            // prepared connection per credentials `Arc`.
            let Ok(creds) = creds.clone().downcast::<ApnsCredentials>() else {
                return Attempt::failed(FailureKind::Config, "credentials of another provider");
            };
            let expiry = push.window.ends_at_epoch_seconds();
            let apns_push = match push.content {
                Content::ApnsVoip { body } => ApnsPush::voip(push.token, &creds.bundle_id, expiry, body.clone()),
                Content::ApnsAlert { body, collapse_id } => {
                    let mut p = ApnsPush::alert(push.token, &creds.bundle_id, expiry, body.clone());
                    p.collapse_id = collapse_id.clone();
                    p
                }
                Content::Data { .. } => return Attempt::failed(FailureKind::Config, "payload does not fit the channel"),
            };
            self.client.send(push.app.as_str(), &creds, push.channel, &apns_push).await
        })
    }

    fn forget_app(&self, app: &AppId) {
        self.client.forget_app(app.as_str());
    }

    fn describe(&self, summary: &serde_json::Value) -> String {
        format!("{} · {}", summary["auth"].as_str().unwrap_or(""), summary["bundleId"].as_str().unwrap_or(""))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

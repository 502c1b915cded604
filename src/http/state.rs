//! The one state value every handler takes.

use crate::config::Settings;
use crate::dispatch::Dispatcher;
use crate::store::Store;
use std::sync::Arc;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub settings: Arc<Settings>,
    /// SHA-256 of the admin token (the token itself is never kept).
    pub admin_token_hash: [u8; 32],
    /// Renders `/metrics`.
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// Recently verified end-user passwords (Basic auth), see `auth::PasswordCache`.
    pub passwords: Arc<crate::http::auth::PasswordCache>,
    /// Compiled `sip.user_agents` rules.
    pub ua_rules: Arc<Vec<crate::dialect::sip::UaRule>>,
    /// Waiters of `/sip/wake`.
    pub wake: Arc<crate::wake::WakeHub>,
    /// Per-key rate limits of call and registration endpoints.
    pub limits: Arc<crate::http::limit::Limits>,
    /// Pushes call events to APNs/FCM.
    pub dispatcher: Arc<Dispatcher>,
}

impl AppState {
    /// Count a call-endpoint request against `key`'s rate.
    pub fn limit_calls(&self, key: &str) -> Result<(), crate::http::error::ApiError> {
        self.limits.calls.check(key).map_err(crate::http::error::ApiError::RateLimited)
    }

    /// Count a registration against `key`'s rate.
    pub fn limit_registrations(&self, key: &str) -> Result<(), crate::http::error::ApiError> {
        self.limits.registrations.check(key).map_err(crate::http::error::ApiError::RateLimited)
    }
}

impl AppState {
    /// Why `app` cannot push through `provider` (unknown app, or no
    /// credentials for it), or `None` when it can. The one check behind
    /// every registration dialect; each answers it in its own shape.
    pub async fn credentials_problem(
        &self,
        app: &crate::domain::AppId,
        provider: crate::domain::Provider,
    ) -> Result<Option<crate::domain::FieldError>, crate::store::StoreError> {
        if self.store.has_credentials(app, provider).await? {
            return Ok(None);
        }
        Ok(Some(self.missing_credentials(app, provider.as_str()).await?))
    }

    /// The refusal for an app that has no `what` credentials: `unknown_application`
    /// if the app is not known at all, else `no_credentials`.
    pub async fn missing_credentials(&self, app: &crate::domain::AppId, what: &str) -> Result<crate::domain::FieldError, crate::store::StoreError> {
        use crate::domain::FieldError;
        Ok(if self.store.app_exists(app).await? {
            FieldError::new("application", "no_credentials", format!("application {app} has no {what} credentials"))
        } else {
            FieldError::new("application", "unknown_application", format!("application {app} is not known to this relay"))
        })
    }

    /// `credentials_problem` as a JSON 400.
    pub async fn require_credentials(&self, app: &crate::domain::AppId, provider: crate::domain::Provider) -> Result<(), crate::http::error::ApiError> {
        match self.credentials_problem(app, provider).await? {
            None => Ok(()),
            Some(problem) => Err(problem.into()),
        }
    }
}

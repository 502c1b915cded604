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
    /// Password hashing and the cache of recent verifications (`auth::Passwords`).
    pub passwords: Arc<crate::http::auth::Passwords>,
    /// The registration steps every dialect shares.
    pub registrar: crate::register::Registrar,
    /// Compiled `sip.user_agents` rules (replaced on SIGHUP).
    pub ua_rules: Arc<crate::http::serve::Live<Vec<crate::dialect::sip::UaRule>>>,
    /// Waiters of `/sip/wake`.
    pub wake: Arc<crate::wake::WakeHub>,
    /// Rate limits and the failed-authentication lock-out.
    pub limits: Arc<crate::http::limit::Limits>,
    /// Pushes call events to APNs/FCM.
    pub dispatcher: Arc<Dispatcher>,
}

impl AppState {
    /// Count a call-endpoint request against the caller's rate (its
    /// tenant's `calls_per_second` when it sets one).
    pub fn limit_calls(&self, caller: &crate::http::auth::Caller) -> Result<(), crate::http::error::ApiError> {
        self.limits.calls.check_at(caller.limit_key(), caller.calls_per_second).map_err(crate::http::error::ApiError::RateLimited)
    }

    /// Count a registration against `key`'s rate.
    pub fn limit_registrations(&self, key: &str) -> Result<(), crate::http::error::ApiError> {
        self.limits.registrations.check(key).map_err(crate::http::error::ApiError::RateLimited)
    }
}

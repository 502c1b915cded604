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
    /// Pushes call events to APNs/FCM.
    pub dispatcher: Arc<Dispatcher>,
}

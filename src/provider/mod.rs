//! Delivery clients: one push attempt to APNs (HTTP/2, token or certificate
//! auth) or FCM HTTP v1 (OAuth JWT-bearer grant), reported as an [`Attempt`].
//!
//! - `apns` `ApnsClient`: HTTP/2 client per (app, environment, credentials),
//!   provider-JWT cache, request builder, status/reason → `Attempt` table
//! - `fcm`  `FcmClient`: OAuth access-token cache per service account,
//!   `messages:send`, google.rpc error → `Attempt`
//! - `tls`  rustls client configs (ring, webpki roots + extra CA, client cert)
//!
//! The retry loop across attempts (backoff, ring window) is not here: the
//! caller decides what to do with `Attempt::Retry`. Inside one attempt the
//! clients only do the protocol-mandated single retries (APNs
//! `ExpiredProviderToken` → new JWT; FCM 401 `UNAUTHENTICATED` → new access
//! token).
//!
//! Architecture invariant: `provider` depends on `domain` and `secret` only;
//! never on `store` or `http` (no SQL, no server types).

pub mod apns;
pub mod fcm;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

pub use apns::{ApnsClient, ApnsPush, PushType};
pub use fcm::FcmClient;

/// Why a provider refused a push for good (`Attempt::Failed`). Dead
/// tokens are `Attempt::TokenGone`, transient trouble `Attempt::Retry`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The app's credentials: a provider token, certificate, service
    /// account or OAuth grant refused (APNs 403, FCM 401/403,
    /// `SENDER_ID_MISMATCH`, `THIRD_PARTY_AUTH_ERROR`), or unusable keys.
    Auth,
    /// The relay's or the app's configuration: topic, bundle, project,
    /// TLS roots, a path or header the provider does not accept.
    Config,
    /// This push: too large, reserved keys, a malformed payload.
    Payload,
    /// Anything else that ends the attempt (the relay shutting down, an
    /// unclassified 4xx).
    Other,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Auth => "auth",
            FailureKind::Config => "config",
            FailureKind::Payload => "payload",
            FailureKind::Other => "other",
        }
    }
}

/// The result of one delivery attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// The provider accepted the push.
    Delivered { status: u16 },
    /// The token is dead (APNs 410 / 400 BadDeviceToken, FCM UNREGISTERED):
    /// remove the device.
    TokenGone { status: u16, reason: String },
    /// Transient (429, 5xx, connection trouble, timeout): try again later,
    /// not before `after` if the provider said so, never past the ring end.
    Retry { status: Option<u16>, reason: String, after: Option<Duration> },
    /// Permanent for this push (bad request, bad credentials, too large …).
    Failed { kind: FailureKind, status: Option<u16>, reason: String },
}

impl Attempt {
    pub fn status(&self) -> Option<u16> {
        match self {
            Attempt::Delivered { status } | Attempt::TokenGone { status, .. } => Some(*status),
            Attempt::Retry { status, .. } | Attempt::Failed { status, .. } => *status,
        }
    }
    pub fn reason(&self) -> Option<&str> {
        match self {
            Attempt::Delivered { .. } => None,
            Attempt::TokenGone { reason, .. } | Attempt::Retry { reason, .. } | Attempt::Failed { reason, .. } => {
                Some(reason)
            }
        }
    }
    pub fn is_delivered(&self) -> bool {
        matches!(self, Attempt::Delivered { .. })
    }
    pub(crate) fn failed(kind: FailureKind, reason: impl Into<String>) -> Self {
        Attempt::Failed { kind, status: None, reason: reason.into() }
    }
    pub(crate) fn retry(reason: impl Into<String>) -> Self {
        Attempt::Retry { status: None, reason: reason.into(), after: None }
    }
}

/// Where the providers live and how long one request may take
/// (config keys `apns.production_url`, `apns.sandbox_url`, `fcm.base_url`,
/// `tls.extra_ca_file` read into `extra_ca_pem`).
#[derive(Clone, Debug)]
pub struct ProviderSettings {
    pub apns_production_url: String,
    pub apns_sandbox_url: String,
    pub fcm_base_url: String,
    /// PEM roots trusted in addition to the webpki roots (APNs, FCM, OAuth).
    pub extra_ca_pem: Option<String>,
    /// Upper bound for one HTTP request (connect + TLS + answer).
    pub request_timeout: Duration,
    /// HTTP CONNECT proxy for every provider request (`providers.proxy`).
    pub proxy: Option<String>,
}

impl ProviderSettings {
    /// A reqwest builder with what every provider client shares: the TLS
    /// config, timeouts, user agent, and the proxy if one is set.
    pub(crate) fn http_builder(&self, tls: rustls::ClientConfig) -> Result<reqwest::ClientBuilder, String> {
        let mut b = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(self.request_timeout)
            .connect_timeout(self.request_timeout)
            .pool_idle_timeout(Duration::from_secs(600))
            .user_agent(concat!("pushrelay/", env!("CARGO_PKG_VERSION")));
        b = match &self.proxy {
            // Only the configured proxy: never one from the environment.
            Some(url) => b.proxy(reqwest::Proxy::all(url.as_str()).map_err(|e| format!("providers.proxy: {e}"))?),
            None => b.no_proxy(),
        };
        Ok(b)
    }
}

impl Default for ProviderSettings {
    fn default() -> Self {
        Self {
            apns_production_url: "https://api.push.apple.com".into(),
            apns_sandbox_url: "https://api.sandbox.push.apple.com".into(),
            fcm_base_url: "https://fcm.googleapis.com".into(),
            extra_ca_pem: None,
            request_timeout: Duration::from_secs(10),
            proxy: None,
        }
    }
}

/// Wall clock in epoch seconds, injectable for tests.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
    })
}

/// `Retry-After` in seconds (the only form APNs/FCM use); HTTP-dates are ignored.
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// Map a transport error (no HTTP answer) to an attempt: TLS configuration
/// problems are permanent, everything else (connect refused, reset, GOAWAY,
/// refused stream, timeout) is retryable.
pub(crate) fn transport_error(e: &reqwest::Error) -> Attempt {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = src {
        // io::Error::source() skips the wrapped error itself: look inside.
        let inner = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|e| e as &(dyn std::error::Error + 'static));
        let tls = err.downcast_ref::<rustls::Error>().or_else(|| inner.and_then(|e| e.downcast_ref::<rustls::Error>()));
        if let Some(tls) = tls {
            return match tls {
                rustls::Error::InvalidCertificate(_)
                | rustls::Error::NoCertificatesPresented
                | rustls::Error::AlertReceived(_)
                | rustls::Error::NoApplicationProtocol => Attempt::failed(FailureKind::Config, format!("tls_error: {tls}")),
                _ => Attempt::retry(format!("tls_error: {tls}")),
            };
        }
        src = err.source();
    }
    // Some layers (h2) do not expose the rustls error as a source: fall back
    // to its text. A fatal TLS alert or a refused certificate is a
    // configuration problem, not a transient one. The text is that of the
    // causes only: reqwest's own message names the URL, which holds the
    // device token.
    let chain = cause_chain(e);
    if chain.contains("received fatal alert") || chain.contains("invalid peer certificate") {
        return Attempt::failed(FailureKind::Config, format!("tls_error: {chain}"));
    }
    if e.is_timeout() {
        Attempt::retry("timeout")
    } else if e.is_connect() {
        Attempt::retry(format!("connect_error: {chain}"))
    } else {
        Attempt::retry(format!("connection_error: {chain}"))
    }
}

/// The causes of a reqwest error, never its own text (which quotes the
/// request URL), cut to a bounded length.
fn cause_chain(e: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    let mut src = std::error::Error::source(e);
    while let Some(err) = src {
        parts.push(err.to_string());
        src = err.source();
    }
    parts.dedup();
    let text = if parts.is_empty() { "no answer".to_string() } else { parts.join(": ") };
    text.chars().take(300).collect()
}

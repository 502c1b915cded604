//! Delivery: one folder per push service, each behind the one trait
//! [`PushProvider`] — build the request for a device and its content, send
//! it, map the answer to an [`Attempt`] — and a registry of them
//! ([`Providers`], keyed by `domain::Provider`).
//!
//! - `apns`    Apple Push Notification service (HTTP/2; token or certificate auth)
//! - `fcm`     Firebase Cloud Messaging HTTP v1 (OAuth JWT-bearer grant)
//! - `hms`     Huawei Push Kit (OAuth client-credentials grant)
//! - `webpush` Web Push to browsers (RFC 8030, RFC 8291 encryption, RFC 8292 VAPID)
//! - `oauth`   OAuth 2.0 access tokens shared by FCM and HMS (cache, one grant at a time)
//! - `pool`    connection health: HTTP/2 keep-alive, the answer bound, eviction of silent connections
//! - `tls`     rustls client configs (ring, webpki roots + extra CA, client cert)
//!
//! Each provider folder holds its client, its credentials type (parsed
//! from the admin JSON and proven usable before anything is stored), its
//! error mapping and its settings. Adding a provider is its folder, one
//! line in `Providers::new`, a `Channel`/`Provider` variant and a
//! migration (docs/ARCHITECTURE.md).
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
pub(crate) mod credentials;
pub mod fcm;
pub mod hms;
pub(crate) mod oauth;
pub(crate) mod pool;
pub mod tls;
pub mod webpush;

use crate::domain::{AppId, Channel, Content, DeviceToken, FieldError, Provider, RingWindow, Shape, SubscriptionKeys};
use crate::secret::Secret;
use std::sync::Arc;
use std::time::Duration;

pub use apns::{ApnsClient, ApnsPush, PushType};
pub use fcm::FcmClient;

/// A provider's parsed credentials (its own type, behind `Any`: the
/// dispatcher caches them per app without knowing what they are).
pub type Credentials = Arc<dyn std::any::Any + Send + Sync>;

/// A future that sends one push.
pub type Sending<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Attempt> + Send + 'a>>;

/// What a provider stores for an app, from the admin's JSON: the public
/// summary (`GET /v1/apps/{app}`), the secret (sealed by the store), the
/// key push data may name the app by (APNs bundle id, FCM project id, HMS
/// app id) and a certificate's notAfter (epoch seconds).
pub struct StoredForm {
    pub summary: serde_json::Value,
    pub secret: Secret<String>,
    pub lookup_key: Option<String>,
    pub not_after: Option<i64>,
}

/// One push to one device.
pub struct Push<'a> {
    pub app: &'a AppId,
    pub channel: Channel,
    pub token: &'a DeviceToken,
    /// A Web Push subscription's encryption keys.
    pub subscription_keys: Option<&'a SubscriptionKeys>,
    pub content: &'a Content,
    /// Its expiry (APNs `apns-expiration`, FCM/HMS `ttl`, Web Push `TTL`).
    pub window: &'a RingWindow,
}

/// A push service.
pub trait PushProvider: Send + Sync {
    fn provider(&self) -> Provider;

    /// How this provider carries a payload (the payload builders' input).
    fn shape(&self) -> Shape;

    /// `PUT /v1/apps/{app}/{provider}`: the admin's JSON → what to store,
    /// after proving the credentials usable (a 400 naming the field
    /// otherwise). May be slow (it signs a probe): call off the runtime.
    fn credentials_from_admin(&self, body: &[u8]) -> Result<StoredForm, FieldError>;

    /// The stored secret → this provider's credentials.
    fn credentials_from_stored(&self, secret: &str) -> Result<Credentials, String>;

    /// One attempt to deliver `push` with `creds` (from `credentials_from_stored`).
    fn send<'a>(&'a self, creds: &'a Credentials, push: &'a Push<'a>) -> Sending<'a>;

    /// Forget what is cached for `app` (its credentials were replaced or deleted).
    fn forget_app(&self, _app: &AppId) {}

    /// One line about stored credentials for the console, from the summary.
    fn describe(&self, summary: &serde_json::Value) -> String;

    /// Itself, for `Providers::typed` (the benchmark drives clients directly).
    fn as_any(&self) -> &dyn std::any::Any;
}

/// The registry: every provider, keyed by `Provider`.
pub struct Providers {
    list: Vec<Arc<dyn PushProvider>>,
}

impl Providers {
    /// Every provider the relay speaks, set up from the settings.
    pub fn new(settings: &ProviderSettings) -> Self {
        Self::from_list(vec![
            Arc::new(apns::Apns::new(settings.clone())),
            Arc::new(fcm::Fcm::new(settings.clone())),
            Arc::new(hms::Hms::new(settings.clone())),
            Arc::new(webpush::WebPush::new(settings.clone())),
        ])
    }

    /// A registry of these providers (tests, the benchmark).
    pub fn from_list(list: Vec<Arc<dyn PushProvider>>) -> Self {
        Self { list }
    }

    /// The provider of `p`, if this registry has it.
    pub fn get(&self, p: Provider) -> Option<&Arc<dyn PushProvider>> {
        self.list.iter().find(|x| x.provider() == p)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn PushProvider>> {
        self.list.iter()
    }

    /// The typed provider `T` of `p` (the benchmark drives clients directly).
    pub fn typed<T: 'static>(&self, p: Provider) -> Option<&T> {
        let any: &dyn std::any::Any = self.get(p)?.as_any();
        any.downcast_ref::<T>()
    }
}

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
            Attempt::TokenGone { reason, .. } | Attempt::Retry { reason, .. } | Attempt::Failed { reason, .. } => Some(reason),
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
    /// Huawei's OAuth 2.0 token endpoint (`hms.token_url`).
    pub hms_token_url: String,
    /// Huawei Push Kit's API (`hms.base_url`): `{base}/v1/{appId}/messages:send`.
    pub hms_base_url: String,
    /// Hosts Web Push endpoints may name (`webpush.allowed_hosts`): exact
    /// names, or `*.` wildcards for subdomains.
    pub webpush_allowed_hosts: Vec<String>,
    /// PEM roots trusted in addition to the webpki roots (APNs, FCM, OAuth).
    pub extra_ca_pem: Option<String>,
    /// Upper bound for one HTTP request (connect + TLS + answer + body).
    pub request_timeout: Duration,
    /// Upper bound for the start of an answer (`providers.answer_timeout_ms`):
    /// past it the connection is taken for dead and replaced.
    pub answer_timeout: Duration,
    /// HTTP CONNECT proxy for every provider request (`providers.proxy`).
    pub proxy: Option<String>,
}

impl ProviderSettings {
    /// A reqwest builder with what every provider client shares: the TLS
    /// config, timeouts, user agent, and the proxy if one is set.
    /// `http_builder` with the TLS config of the HTTPS providers that speak
    /// h2 or HTTP/1.1 (FCM, HMS, Web Push, OAuth): the webpki roots plus
    /// `extra_ca_pem`.
    pub(crate) fn https_builder(&self) -> Result<reqwest::ClientBuilder, String> {
        self.http_builder(tls::client_config(self.extra_ca_pem.as_deref(), None, tls::ALPN_H2_HTTP1)?)
    }

    pub(crate) fn http_builder(&self, tls: rustls::ClientConfig) -> Result<reqwest::ClientBuilder, String> {
        let mut b = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(self.request_timeout)
            .connect_timeout(self.request_timeout)
            .pool_idle_timeout(Duration::from_secs(600))
            // A connection that died while quiet is found by an unanswered PING
            // before the next push needs it (`pool`).
            .http2_keep_alive_interval(pool::KEEP_ALIVE_INTERVAL)
            .http2_keep_alive_timeout(pool::KEEP_ALIVE_TIMEOUT)
            .http2_keep_alive_while_idle(true)
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
            hms_token_url: DEFAULT_HMS_TOKEN_URL.into(),
            hms_base_url: DEFAULT_HMS_BASE_URL.into(),
            webpush_allowed_hosts: DEFAULT_WEBPUSH_HOSTS.iter().map(|h| h.to_string()).collect(),
            extra_ca_pem: None,
            request_timeout: Duration::from_secs(10),
            answer_timeout: DEFAULT_ANSWER_TIMEOUT,
            proxy: None,
        }
    }
}

/// `providers.answer_timeout_ms` by default.
pub const DEFAULT_ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// Huawei's OAuth 2.0 token endpoint.
pub const DEFAULT_HMS_TOKEN_URL: &str = "https://oauth-login.cloud.huawei.com/oauth2/v3/token";
/// Huawei Push Kit's API.
pub const DEFAULT_HMS_BASE_URL: &str = "https://push-api.cloud.huawei.com";
/// The public Web Push services (interface.md §9).
pub const DEFAULT_WEBPUSH_HOSTS: [&str; 4] = ["fcm.googleapis.com", "updates.push.services.mozilla.com", "*.push.apple.com", "*.notify.windows.com"];

/// Wall clock in epoch seconds, injectable for tests.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0))
}

/// `Retry-After` in seconds (the only form APNs/FCM use); HTTP-dates are ignored.
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers.get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok()).map(Duration::from_secs)
}

/// Map a transport error (no HTTP answer) to an attempt: TLS configuration
/// problems are permanent, everything else (connect refused, reset, GOAWAY,
/// refused stream, timeout) is retryable.
pub(crate) fn transport_error(e: &reqwest::Error) -> Attempt {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = src {
        // io::Error::source() skips the wrapped error itself: look inside.
        let inner = err.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()).map(|e| e as &(dyn std::error::Error + 'static));
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

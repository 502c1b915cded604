//! Web Push (RFC 8030) to browsers and WebRTC softphones (interface.md §9).
//!
//! - `vapid`  the app's VAPID key pair and subject (RFC 8292), its JWTs
//! - `ece`    message encryption to the subscription (RFC 8291, `aes128gcm`)
//!
//! A push is a `POST` to the subscription's endpoint with the data map as a
//! JSON object, encrypted (no body at all when the registration carried no
//! keys, as RFC 8599 `pn-provider=webpush` bindings do), `TTL` = the
//! seconds left of the ring, `Urgency: high` for calls and cancels. The
//! endpoint is hostile input: before each send its host is checked against
//! `webpush.allowed_hosts` again, the name is resolved through a resolver
//! that drops non-public addresses unless the host is listed exactly, and
//! redirects are never followed.
//!
//! Answers: 201 (or any 2xx) → delivered; 404/410 → token removed;
//! 429/5xx → retried, honouring `Retry-After`; 401/403 → failed (auth: the
//! VAPID key does not match the subscription's `applicationServerKey`, or
//! the JWT was refused); 413 → failed (payload); other 4xx → failed.

pub mod ece;
pub mod vapid;

pub use vapid::VapidCredentials;

use super::pool::{NoResponse, Pool};

use super::{
    retry_after, system_clock, transport_error, Attempt, Clock, Credentials, FailureKind, ProviderSettings, Push, PushProvider, Sending, StoredForm,
};
use crate::domain::{is_public, AllowedHosts, Content, FieldError, Provider, Shape, SubscriptionKeys};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// Web Push behind the provider trait.
pub struct WebPush {
    pool: Pool,
    answer_timeout: std::time::Duration,
    hosts: AllowedHosts,
    clock: Clock,
}

/// The resolver's refusal: every address of the host is internal.
#[derive(Debug)]
struct NotPublic(String);

impl std::fmt::Display for NotPublic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} resolves only to non-public addresses", self.0)
    }
}

impl std::error::Error for NotPublic {}

/// DNS through the system resolver, keeping only public addresses unless
/// the host is listed exactly in `webpush.allowed_hosts`.
struct PublicOnly(AllowedHosts);

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        let any = self.0.lists_exactly(&host);
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.filter(|a| any || is_public(a.ip())).collect();
            if addrs.is_empty() {
                return Err(Box::new(NotPublic(host)) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// What the push service's answer means.
pub fn classify(status: u16, body: &[u8], after: Option<std::time::Duration>) -> Attempt {
    // Mozilla and others answer errors with {"errno", "message"}; FCM with text.
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let detail: String = v["message"].as_str().or(v["reason"].as_str()).unwrap_or("").chars().filter(|c| !c.is_control()).take(160).collect();
    let reason = if detail.is_empty() { format!("http_{status}") } else { format!("http_{status} {detail}") };
    match status {
        200..=299 => Attempt::Delivered { status },
        404 | 410 => Attempt::TokenGone { status, reason },
        429 | 500..=599 => Attempt::Retry { status: Some(status), reason, after },
        401 | 403 => Attempt::Failed { kind: FailureKind::Auth, status: Some(status), reason },
        400 | 413 => Attempt::Failed { kind: FailureKind::Payload, status: Some(status), reason },
        _ => Attempt::Failed { kind: FailureKind::Other, status: Some(status), reason },
    }
}

/// Whether the resolver refused the host (a permanent failure, not a retry).
fn refused_address(e: &reqwest::Error) -> Option<String> {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = src {
        if let Some(n) = err.downcast_ref::<NotPublic>() {
            return Some(n.to_string());
        }
        src = err.source();
    }
    None
}

impl WebPush {
    pub fn new(settings: ProviderSettings) -> Self {
        Self::with_clock(settings, system_clock())
    }

    pub fn with_clock(settings: ProviderSettings, clock: Clock) -> Self {
        let hosts = AllowedHosts::new(&settings.webpush_allowed_hosts);
        let (builder, resolver_hosts) = (settings.clone(), hosts.clone());
        let pool = Pool::new(Provider::WebPush, move || {
            let public_only = Arc::new(PublicOnly(resolver_hosts.clone()));
            builder.https_builder()?.redirect(reqwest::redirect::Policy::none()).dns_resolver(public_only).build().map_err(|e| e.to_string())
        });
        Self { pool, answer_timeout: settings.answer_timeout, hosts, clock }
    }

    /// One attempt to deliver `data` to the subscription at `endpoint`.
    pub async fn send_data(
        &self,
        creds: &VapidCredentials,
        endpoint: &str,
        keys: Option<&SubscriptionKeys>,
        data: &BTreeMap<String, String>,
        ttl_s: u64,
    ) -> Attempt {
        let pooled = match self.pool.get() {
            Ok(p) => p,
            Err(e) => return Attempt::failed(FailureKind::Config, format!("http_client: {e}")),
        };
        // Checked at registration; again here, in case the list changed.
        if let Err(e) = self.hosts.admit(endpoint, "endpoint") {
            return Attempt::failed(FailureKind::Config, format!("endpoint_not_allowed: {}", e.message));
        }
        let Ok(url) = reqwest::Url::parse(endpoint) else {
            return Attempt::failed(FailureKind::Config, "endpoint_not_allowed: not a URL");
        };
        let origin = url.origin().ascii_serialization();
        let authorization = match creds.authorization(&origin, (self.clock)()) {
            Ok(a) => a,
            Err(e) => return Attempt::failed(FailureKind::Auth, format!("vapid_sign: {e}")),
        };
        let urgent = !matches!(data.get("type").map(String::as_str), Some("message" | "test"));
        let mut req = pooled
            .client()
            .post(url)
            .header("ttl", ttl_s.to_string())
            .header("urgency", if urgent { "high" } else { "normal" })
            .header(reqwest::header::AUTHORIZATION, authorization);
        if let Some(keys) = keys {
            let plaintext = serde_json::to_vec(data).expect("a map of strings serializes");
            let body = match ece::encrypt(&keys.p256dh, keys.auth.expose(), &plaintext) {
                Ok(b) => b,
                Err(ece::EceError::TooLarge(n)) => {
                    return Attempt::failed(FailureKind::Payload, format!("payload_too_large: {n} bytes, at most {}", ece::MAX_PLAINTEXT))
                }
                Err(ece::EceError::BadReceiverKey) => return Attempt::failed(FailureKind::Payload, "subscription_key_invalid"),
            };
            req = req.header("content-encoding", "aes128gcm").header("content-type", "application/octet-stream").body(body);
        } else {
            req = req.header("content-length", "0");
        }
        let resp = match pooled.answer(req.send(), self.answer_timeout).await {
            Ok(r) => r,
            Err(NoResponse::Silent(a)) => {
                self.pool.evict(&pooled);
                return a;
            }
            Err(NoResponse::Transport(e)) => {
                return match refused_address(&e) {
                    Some(why) => Attempt::failed(FailureKind::Config, format!("endpoint_not_allowed: {why}")),
                    None => transport_error(&e),
                }
            }
        };
        let status = resp.status().as_u16();
        let after = retry_after(resp.headers());
        // The answer's body matters only for the reason: read a bounded amount.
        let body = if (200..300).contains(&status) { Default::default() } else { resp.bytes().await.unwrap_or_default() };
        classify(status, &body[..body.len().min(4096)], after)
    }
}

impl PushProvider for WebPush {
    fn provider(&self) -> Provider {
        Provider::WebPush
    }

    fn shape(&self) -> Shape {
        Shape::Data
    }

    fn credentials_from_admin(&self, body: &[u8]) -> Result<StoredForm, FieldError> {
        let creds = VapidCredentials::parse_admin_json(body)?;
        Ok(StoredForm { summary: creds.summary(), secret: creds.to_stored(), lookup_key: None, not_after: None })
    }

    fn credentials_from_stored(&self, secret: &str) -> Result<Credentials, String> {
        Ok(Arc::new(VapidCredentials::from_stored(secret).map_err(|e| e.to_string())?))
    }

    fn send<'a>(&'a self, creds: &'a Credentials, push: &'a Push<'a>) -> Sending<'a> {
        Box::pin(async move {
            let Some(creds) = creds.downcast_ref::<VapidCredentials>() else {
                return Attempt::failed(FailureKind::Config, "credentials of another provider");
            };
            let Content::Data { data } = push.content else {
                return Attempt::failed(FailureKind::Config, "payload does not fit the channel");
            };
            self.send_data(creds, push.token.as_str(), push.subscription_keys, data, super::fcm::ttl_seconds(push.window)).await
        })
    }

    fn describe(&self, summary: &serde_json::Value) -> String {
        format!(
            "VAPID {} ({})",
            summary["publicKey"].as_str().unwrap_or("").chars().take(12).collect::<String>(),
            summary["subject"].as_str().unwrap_or("")
        )
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_service_answers_decide_the_outcome() {
        let a = |s: u16, body: &str| classify(s, body.as_bytes(), None);
        assert_eq!(a(201, ""), Attempt::Delivered { status: 201 });
        assert!(matches!(a(410, r#"{"errno":106,"message":"Request did not validate"}"#), Attempt::TokenGone { status: 410, .. }));
        assert!(matches!(a(404, ""), Attempt::TokenGone { .. }));
        assert!(matches!(a(429, ""), Attempt::Retry { .. }) && matches!(a(503, ""), Attempt::Retry { .. }));
        assert!(matches!(a(403, ""), Attempt::Failed { kind: FailureKind::Auth, .. }));
        assert!(matches!(a(413, ""), Attempt::Failed { kind: FailureKind::Payload, .. }));
        assert_eq!(a(400, "{\"message\":\"bad\\nTTL\"}").reason(), Some("http_400 badTTL"));
    }

    /// A name that resolves only to internal addresses (here `localhost`,
    /// through the system resolver) is refused unless listed exactly, and
    /// the refusal is a permanent failure, not a retry.
    #[tokio::test]
    async fn names_resolving_to_internal_addresses_are_refused_unless_listed_exactly() {
        use reqwest::dns::Resolve;
        use std::str::FromStr;
        let name = || reqwest::dns::Name::from_str("localhost").unwrap();
        let wildcard_only = PublicOnly(AllowedHosts::new(&["*.example.com"]));
        let err = wildcard_only.resolve(name()).await.err().expect("localhost is not public");
        assert!(err.to_string().contains("non-public"), "{err}");
        let listed = PublicOnly(AllowedHosts::new(&["localhost"]));
        let addrs: Vec<SocketAddr> = listed.resolve(name()).await.expect("listed exactly").collect();
        assert!(addrs.iter().any(|a| a.ip().is_loopback()), "{addrs:?}");

        // The relay's own client (its resolver is this one).
        let settings = ProviderSettings { webpush_allowed_hosts: vec!["*.example.com".into()], ..ProviderSettings::default() };
        let web_push = WebPush::new(settings);
        let e = web_push.pool.get().unwrap().client().post("https://localhost:9/push").send().await.unwrap_err();
        assert!(refused_address(&e).is_some_and(|why| why.contains("localhost")), "{e:?}");
    }
}

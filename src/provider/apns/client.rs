//! APNs client (protocol.md §4): one HTTP/2 connection pool per (app,
//! environment), rebuilt when the app's credentials change; ES256 provider
//! tokens cached per (key id, team) and reused for 40 minutes; the request
//! builder and the status/reason → [`Attempt`] table are pure functions.

use super::credentials::{ApnsAuth, ApnsCredentials};
use crate::domain::{BundleId, Channel, DeviceToken, Provider};
use crate::provider::pool::{NoResponse, Pooled};
use crate::provider::{retry_after, system_clock, tls, transport_error, Attempt, Clock, FailureKind, ProviderSettings};
use crate::secret::Secret;
use http::HeaderValue;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a provider JWT is reused (Apple: at most 60 min, and not
/// refreshed more often than every 20 min).
pub const DEFAULT_JWT_TTL: Duration = Duration::from_secs(40 * 60);
pub const MAX_PAYLOAD_VOIP: usize = 5120;
pub const MAX_PAYLOAD_OTHER: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushType {
    /// Call wake-up (PushKit); topic `<bundle>.voip`, priority 10.
    Voip,
    /// Visible notification (cancels, messages); topic `<bundle>`.
    Alert,
    /// `content-available` only; topic `<bundle>`, priority 5.
    Background,
}

impl PushType {
    pub fn as_str(self) -> &'static str {
        match self {
            PushType::Voip => "voip",
            PushType::Alert => "alert",
            PushType::Background => "background",
        }
    }
    pub fn max_payload(self) -> usize {
        match self {
            PushType::Voip => MAX_PAYLOAD_VOIP,
            _ => MAX_PAYLOAD_OTHER,
        }
    }
}

/// One notification for one device.
#[derive(Clone, Debug)]
pub struct ApnsPush {
    /// Device token, hex.
    pub token: String,
    pub push_type: PushType,
    pub topic: String,
    /// 10, 5 or 1.
    pub priority: u8,
    /// `apns-expiration`: epoch seconds (ring end); 0 = try once.
    pub expiration_epoch_s: i64,
    /// `apns-collapse-id` (never for VoIP).
    pub collapse_id: Option<String>,
    /// The exact JSON payload bytes.
    pub body: Vec<u8>,
}

impl ApnsPush {
    /// A call wake-up: `voip`, topic `<bundle>.voip`, priority 10.
    pub fn voip(token: &DeviceToken, bundle: &BundleId, expiration_epoch_s: i64, body: Vec<u8>) -> Self {
        Self {
            token: token.as_str().to_string(),
            push_type: PushType::Voip,
            topic: format!("{}.voip", bundle.as_str()),
            priority: 10,
            expiration_epoch_s,
            collapse_id: None,
            body,
        }
    }
    /// A visible alert (e.g. a cancel): `alert`, topic `<bundle>`, priority 10.
    pub fn alert(token: &DeviceToken, bundle: &BundleId, expiration_epoch_s: i64, body: Vec<u8>) -> Self {
        Self {
            token: token.as_str().to_string(),
            push_type: PushType::Alert,
            topic: bundle.as_str().to_string(),
            priority: 10,
            expiration_epoch_s,
            collapse_id: None,
            body,
        }
    }
    /// A content-available push: `background`, topic `<bundle>`, priority 5.
    pub fn background(token: &DeviceToken, bundle: &BundleId, expiration_epoch_s: i64, body: Vec<u8>) -> Self {
        Self { push_type: PushType::Background, priority: 5, ..Self::alert(token, bundle, expiration_epoch_s, body) }
    }
}

/// Refuse locally what APNs would refuse with 413 (exact body bytes).
pub fn check_payload(push: &ApnsPush) -> Result<(), Attempt> {
    if push.body.len() > push.push_type.max_payload() {
        return Err(Attempt::failed(FailureKind::Payload, "payload_too_large"));
    }
    Ok(())
}

/// `{base}/3/device/`: what a push's token is appended to.
pub fn url_prefix(base_url: &str) -> String {
    format!("{}/3/device/", base_url.trim_end_matches('/'))
}

/// The HTTP/2 request for one attempt (pure: no I/O, no clock):
/// `{url_prefix}{token}`, the APNs headers and the body. `topic` is the
/// prepared header value of the app's topic for this push type, used when
/// it is the push's topic (else the push's own is encoded); `bearer` the
/// `authorization` value of token credentials.
pub fn build_request(
    url_prefix: &str,
    topic: Option<&HeaderValue>,
    push: &ApnsPush,
    bearer: Option<HeaderValue>,
    apns_id: &uuid::Uuid,
) -> Result<reqwest::Request, Attempt> {
    check_payload(push)?;
    let bad = |e: &dyn std::fmt::Display| Attempt::failed(FailureKind::Config, format!("bad_request: {e}"));
    let mut url = String::with_capacity(url_prefix.len() + push.token.len());
    url.push_str(url_prefix);
    url.push_str(&push.token);
    let mut req = reqwest::Request::new(reqwest::Method::POST, reqwest::Url::parse(&url).map_err(|e| bad(&e))?);
    let h = req.headers_mut();
    h.insert("apns-push-type", HeaderValue::from_static(push.push_type.as_str()));
    let topic = match topic.filter(|t| t.as_bytes() == push.topic.as_bytes()) {
        Some(t) => t.clone(),
        None => HeaderValue::try_from(push.topic.as_str()).map_err(|e| bad(&e))?,
    };
    h.insert("apns-topic", topic);
    h.insert("apns-priority", HeaderValue::from(u16::from(push.priority)));
    h.insert("apns-expiration", HeaderValue::from(push.expiration_epoch_s.max(0)));
    let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
    h.insert("apns-id", HeaderValue::from_str(apns_id.hyphenated().encode_lower(&mut id)).map_err(|e| bad(&e))?);
    h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(c) = &push.collapse_id {
        h.insert("apns-collapse-id", HeaderValue::try_from(c.as_str()).map_err(|e| bad(&e))?);
    }
    if let Some(b) = bearer {
        h.insert(http::header::AUTHORIZATION, b);
    }
    *req.body_mut() = Some(push.body.clone().into());
    Ok(req)
}

/// protocol.md §4.5 as a table: status + reason (+ `Retry-After`) → attempt.
pub fn classify(status: u16, reason: &str, retry_after: Option<Duration>) -> Attempt {
    let reason_s = if reason.is_empty() { format!("http_{status}") } else { reason.to_string() };
    match (status, reason) {
        (200, _) => Attempt::Delivered { status },
        (410, _) | (400, "BadDeviceToken") => Attempt::TokenGone { status, reason: reason_s },
        (400, "IdleTimeout") | (429, _) => Attempt::Retry { status: Some(status), reason: reason_s, after: retry_after },
        (500..=599, _) => Attempt::Retry { status: Some(status), reason: reason_s, after: retry_after },
        _ => Attempt::Failed { kind: failure_kind(status, reason), status: Some(status), reason: reason_s },
    }
}

/// What an APNs refusal is about (protocol.md §4.5).
fn failure_kind(status: u16, reason: &str) -> FailureKind {
    match (status, reason) {
        (403, _) => FailureKind::Auth,
        (413, _) | (400, "PayloadEmpty" | "BadPayload") => FailureKind::Payload,
        (400 | 404 | 405, _) => FailureKind::Config,
        _ => FailureKind::Other,
    }
}

/// Which provider JWT: computed once per credentials (`ProviderJwtCache::key`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct JwtKey {
    key_id: String,
    team_id: String,
    key_fp: [u8; 32],
}

struct CachedJwt {
    /// `bearer <jwt>`, marked sensitive.
    bearer: HeaderValue,
    iat: i64,
}

/// Provider JWTs per (key id, team): minted once, reused until `ttl` old.
pub struct ProviderJwtCache {
    ttl: Duration,
    entries: Mutex<HashMap<JwtKey, CachedJwt>>,
    minted: AtomicU64,
}

#[derive(serde::Serialize)]
struct ProviderClaims<'a> {
    iss: &'a str,
    iat: i64,
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    h.finalize().into()
}

/// Sign `{"alg":"ES256","kid"}` `{"iss":team,"iat"}` with the `.p8` key.
pub fn sign_provider_jwt(key_id: &str, team_id: &str, p8_pem: &str, iat: i64) -> Result<String, String> {
    let key = jsonwebtoken::EncodingKey::from_ec_pem(p8_pem.as_bytes()).map_err(|e| format!("invalid_p8: {e}"))?;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.typ = None;
    header.kid = Some(key_id.to_string());
    jsonwebtoken::encode(&header, &ProviderClaims { iss: team_id, iat }, &key).map_err(|e| format!("invalid_p8: {e}"))
}

impl ProviderJwtCache {
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, entries: Mutex::new(HashMap::new()), minted: AtomicU64::new(0) }
    }

    pub fn key(key_id: &str, team_id: &str, p8_pem: &str) -> JwtKey {
        JwtKey { key_id: key_id.into(), team_id: team_id.into(), key_fp: sha256(&[p8_pem.as_bytes()]) }
    }

    /// The `authorization` value (`bearer <jwt>`) of the JWT of `key`
    /// (signed with `p8_pem`) if younger than the TTL at `now_s`, else of a
    /// new one with `iat = now_s`.
    pub fn get(&self, key: &JwtKey, p8_pem: &str, now_s: i64) -> Result<HeaderValue, String> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = entries.get(key) {
            let age = now_s - c.iat;
            if age >= 0 && (age as u64) < self.ttl.as_secs() {
                return Ok(c.bearer.clone());
            }
        }
        let jwt = Secret::new(sign_provider_jwt(&key.key_id, &key.team_id, p8_pem, now_s)?);
        let mut bearer = HeaderValue::try_from(format!("bearer {}", jwt.expose())).map_err(|e| format!("invalid_p8: {e}"))?;
        bearer.set_sensitive(true);
        self.minted.fetch_add(1, Ordering::Relaxed);
        entries.insert(key.clone(), CachedJwt { bearer: bearer.clone(), iat: now_s });
        Ok(bearer)
    }

    /// Drop the cached JWT if it is still `stale` (so concurrent rejections
    /// of the same token cause one rebuild, not one each).
    pub fn invalidate(&self, key: &JwtKey, stale: &HeaderValue) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.get(key).is_some_and(|c| c.bearer == *stale) {
            entries.remove(key);
        }
    }

    /// How many JWTs were signed so far.
    pub fn minted(&self) -> u64 {
        self.minted.load(Ordering::Relaxed)
    }
}

/// Fingerprint of everything that shapes an APNs connection and request.
fn credentials_fingerprint(creds: &ApnsCredentials) -> [u8; 32] {
    match &creds.auth {
        ApnsAuth::Token { key_id, team_id, p8_pem } => {
            sha256(&[b"token", creds.bundle_id.as_str().as_bytes(), key_id.as_bytes(), team_id.as_bytes(), p8_pem.expose().as_bytes()])
        }
        ApnsAuth::Certificate { cert_pem, key_pem } => {
            sha256(&[b"certificate", creds.bundle_id.as_str().as_bytes(), cert_pem.expose().as_bytes(), key_pem.expose().as_bytes()])
        }
    }
}

/// What one (app, environment) needs per push, prepared once per
/// credentials: the HTTP/2 client, the URL prefix, the topics and the
/// provider token's `authorization` value.
#[derive(Clone)]
struct Prepared {
    /// The credentials this was built from (an `Arc` the dispatcher's
    /// credential cache hands out: the same `Arc` means the same
    /// credentials, so a push costs no fingerprint).
    creds: Arc<ApnsCredentials>,
    fingerprint: [u8; 32],
    /// The HTTP/2 client (its connection), replaced when it goes silent.
    pooled: Arc<Pooled>,
    /// `{base}/3/device/`
    url_prefix: String,
    voip_topic: HeaderValue,
    topic: HeaderValue,
    /// Token credentials: which provider JWT (no hash of the key per push).
    jwt_key: Option<JwtKey>,
}

/// app → per environment (`APNS`, `APNS:dev`).
type ClientMap = HashMap<String, [Option<Arc<Prepared>>; 2]>;

fn slot(channel: Channel) -> Option<usize> {
    match channel {
        Channel::Apns => Some(0),
        Channel::ApnsDev => Some(1),
        _ => None,
    }
}

/// The APNs delivery client. Share one per process.
pub struct ApnsClient {
    settings: ProviderSettings,
    clients: Mutex<ClientMap>,
    jwts: ProviderJwtCache,
    clock: Clock,
    clients_built: AtomicU64,
}

impl ApnsClient {
    pub fn new(settings: ProviderSettings) -> Self {
        Self::with_options(settings, DEFAULT_JWT_TTL, system_clock())
    }

    /// With a provider-JWT lifetime and a clock (epoch seconds) of your choice.
    pub fn with_options(settings: ProviderSettings, jwt_ttl: Duration, clock: Clock) -> Self {
        Self { settings, clients: Mutex::new(HashMap::new()), jwts: ProviderJwtCache::new(jwt_ttl), clock, clients_built: AtomicU64::new(0) }
    }

    /// Provider JWTs signed so far (all apps).
    pub fn provider_jwt_count(&self) -> u64 {
        self.jwts.minted()
    }

    /// HTTP/2 clients (connection pools) built so far.
    pub fn clients_built(&self) -> u64 {
        self.clients_built.load(Ordering::Relaxed)
    }

    /// Drop the connections of `app` (credentials deleted or revoked).
    pub fn forget_app(&self, app: &str) {
        self.clients.lock().unwrap_or_else(|e| e.into_inner()).remove(app);
    }

    fn base_url(&self, channel: Channel) -> Option<&str> {
        match channel {
            Channel::Apns => Some(&self.settings.apns_production_url),
            Channel::ApnsDev => Some(&self.settings.apns_sandbox_url),
            _ => None,
        }
    }

    /// The prepared client of (app, environment) for these credentials,
    /// building it on first use or when the credentials changed.
    fn prepared(&self, app: &str, creds: &Arc<ApnsCredentials>, channel: Channel, base: &str) -> Result<Arc<Prepared>, Attempt> {
        let Some(i) = slot(channel) else { return Err(Attempt::failed(FailureKind::Config, "not_an_apns_channel")) };
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let fingerprint = match clients.get_mut(app).and_then(|e| e[i].as_mut()) {
            Some(p) if Arc::ptr_eq(&p.creds, creds) => return Ok(p.clone()),
            Some(p) => {
                // Another Arc: the same credentials re-read, or new ones.
                let fp = credentials_fingerprint(creds);
                if p.fingerprint == fp {
                    *p = Arc::new(Prepared { creds: creds.clone(), ..Prepared::clone(p) });
                    return Ok(p.clone());
                }
                fp
            }
            None => credentials_fingerprint(creds),
        };
        let identity = match &creds.auth {
            ApnsAuth::Token { .. } => None,
            ApnsAuth::Certificate { cert_pem, key_pem } => Some((cert_pem.expose().as_str(), key_pem.expose().as_str())),
        };
        let cfg = tls::client_config(self.settings.extra_ca_pem.as_deref(), identity, tls::ALPN_H2)
            .map_err(|e| Attempt::failed(FailureKind::Config, format!("tls_config: {e}")))?;
        let client = self
            .settings
            .http_builder(cfg)
            .map_err(|e| Attempt::failed(FailureKind::Config, e))?
            .http2_prior_knowledge()
            .build()
            .map_err(|e| Attempt::failed(FailureKind::Config, format!("http_client: {e}")))?;
        let header = |v: String| HeaderValue::try_from(v).map_err(|e| Attempt::failed(FailureKind::Config, format!("bad_request: {e}")));
        let prepared = Arc::new(Prepared {
            creds: creds.clone(),
            fingerprint,
            pooled: Pooled::new(Provider::Apns, client),
            url_prefix: url_prefix(base),
            voip_topic: header(format!("{}.voip", creds.bundle_id.as_str()))?,
            topic: header(creds.bundle_id.as_str().to_string())?,
            jwt_key: match &creds.auth {
                ApnsAuth::Token { key_id, team_id, p8_pem } => Some(ProviderJwtCache::key(key_id, team_id, p8_pem.expose())),
                ApnsAuth::Certificate { .. } => None,
            },
        });
        self.clients_built.fetch_add(1, Ordering::Relaxed);
        // Replacing the entry drops the old pool: old connections close once idle.
        clients.entry(app.to_string()).or_default()[i] = Some(prepared.clone());
        Ok(prepared)
    }

    /// Drop `prepared` (if still current) after its connection went silent:
    /// the retry builds a new client and so a new connection.
    fn evict(&self, app: &str, channel: Channel, prepared: &Arc<Prepared>) {
        let Some(i) = slot(channel) else { return };
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = clients.get_mut(app) {
            if entry[i].as_ref().is_some_and(|p| Arc::ptr_eq(&p.pooled, &prepared.pooled)) {
                entry[i] = None;
                prepared.pooled.note_evicted();
            }
        }
    }

    /// The `authorization` value for token credentials (none for a certificate).
    fn bearer(&self, p: &Prepared) -> Result<Option<HeaderValue>, Attempt> {
        let (Some(key), ApnsAuth::Token { p8_pem, .. }) = (&p.jwt_key, &p.creds.auth) else { return Ok(None) };
        self.jwts.get(key, p8_pem.expose(), (self.clock)()).map(Some).map_err(|e| Attempt::failed(FailureKind::Auth, e))
    }

    /// One attempt to deliver `push` for `app` on `channel` (`APNS` →
    /// production URL, `APNS:dev` → sandbox URL). Retries once inside, with
    /// a fresh provider JWT, on 403 `ExpiredProviderToken`.
    pub async fn send(&self, app: &str, creds: &Arc<ApnsCredentials>, channel: Channel, push: &ApnsPush) -> Attempt {
        let Some(base) = self.base_url(channel) else { return Attempt::failed(FailureKind::Config, "not_an_apns_channel") };
        let prepared = match self.prepared(app, creds, channel, base) {
            Ok(p) => p,
            Err(a) => return a,
        };
        let mut renewed = false;
        loop {
            let bearer = match self.bearer(&prepared) {
                Ok(b) => b,
                Err(a) => return a,
            };
            let topic = match push.push_type {
                PushType::Voip => &prepared.voip_topic,
                _ => &prepared.topic,
            };
            let req = match build_request(&prepared.url_prefix, Some(topic), push, bearer.clone(), &crate::domain::random_uuid()) {
                Ok(r) => r,
                Err(a) => return a,
            };
            let resp = match prepared.pooled.answer(prepared.pooled.client().execute(req), self.settings.answer_timeout).await {
                Ok(r) => r,
                Err(NoResponse::Silent(a)) => {
                    self.evict(app, channel, &prepared);
                    return a;
                }
                Err(NoResponse::Transport(e)) => return transport_error(&e),
            };
            let status = resp.status().as_u16();
            let after = retry_after(resp.headers());
            let body = match resp.bytes().await {
                Ok(b) => b,
                Err(e) => return transport_error(&e),
            };
            let reason = if status == 200 { String::new() } else { reason_of(&body) };
            if status == 403 && reason == "ExpiredProviderToken" && !renewed {
                if let (Some(key), Some(stale)) = (&prepared.jwt_key, &bearer) {
                    tracing::warn!(app, channel = %channel, "APNs refused the provider token as expired; signing a new one");
                    self.jwts.invalidate(key, stale);
                    renewed = true;
                    continue;
                }
            }
            let attempt = classify(status, &reason, after);
            if let Attempt::TokenGone { reason, .. } = &attempt {
                if reason == "BadDeviceToken" {
                    tracing::info!(app, channel = %channel, "APNs BadDeviceToken (a token of the other environment shows up this way)");
                }
            }
            return attempt;
        }
    }
}

/// The `reason` of an APNs error body, or "" if there is none.
fn reason_of(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("reason").and_then(|r| r.as_str()).map(str::to_string))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Provider;

    fn push(push_type: PushType, size: usize) -> ApnsPush {
        let token = DeviceToken::parse(Provider::Apns, &"ab".repeat(32)).unwrap();
        let bundle = BundleId::parse("com.example.app").unwrap();
        let mut p = match push_type {
            PushType::Voip => ApnsPush::voip(&token, &bundle, 1_700_000_030, vec![]),
            PushType::Alert => ApnsPush::alert(&token, &bundle, 1_700_000_030, vec![]),
            PushType::Background => ApnsPush::background(&token, &bundle, 1_700_000_030, vec![]),
        };
        let mut body = br#"{"aps":{},"data":""#.to_vec();
        body.resize(size.saturating_sub(2).max(body.len()), b'x');
        body.extend_from_slice(b"\"}");
        p.body = body;
        p
    }

    #[test]
    fn request_has_every_header() {
        let id = uuid::Uuid::new_v4();
        let p = push(PushType::Voip, 100);
        let r = build_request(&url_prefix("https://api.push.apple.com/"), None, &p, Some(HeaderValue::from_static("bearer JWT")), &id).unwrap();
        assert_eq!(r.method(), http::Method::POST);
        assert_eq!(r.url().to_string(), format!("https://api.push.apple.com/3/device/{}", "ab".repeat(32)));
        let h = |n: &str| r.headers().get(n).unwrap().to_str().unwrap().to_string();
        assert_eq!(h("apns-push-type"), "voip");
        assert_eq!(h("apns-topic"), "com.example.app.voip");
        assert_eq!(h("apns-priority"), "10");
        assert_eq!(h("apns-expiration"), "1700000030");
        assert_eq!(h("apns-id"), id.to_string());
        assert!(h("apns-id").chars().all(|c| !c.is_ascii_uppercase()));
        assert_eq!(h("content-type"), "application/json");
        assert_eq!(h("authorization"), "bearer JWT");
        assert!(r.headers().get("apns-collapse-id").is_none());
        assert_eq!(r.body().and_then(|b| b.as_bytes()), Some(p.body.as_slice()));
    }

    #[test]
    fn certificate_auth_sends_no_authorization_and_alert_types() {
        let p = push(PushType::Alert, 10);
        let r = build_request(&url_prefix("https://x"), None, &p, None, &uuid::Uuid::new_v4()).unwrap();
        assert!(r.headers().get("authorization").is_none());
        assert_eq!(r.headers()["apns-push-type"], "alert");
        assert_eq!(r.headers()["apns-topic"], "com.example.app");
        let b = push(PushType::Background, 10);
        let r = build_request(&url_prefix("https://x"), None, &b, None, &uuid::Uuid::new_v4()).unwrap();
        assert_eq!(r.headers()["apns-push-type"], "background");
        assert_eq!(r.headers()["apns-priority"], "5");
    }

    #[test]
    fn payload_limits_are_exact() {
        assert!(build_request(&url_prefix("https://x"), None, &push(PushType::Voip, 5120), None, &uuid::Uuid::new_v4()).is_ok());
        let e = build_request(&url_prefix("https://x"), None, &push(PushType::Voip, 5121), None, &uuid::Uuid::new_v4()).unwrap_err();
        assert_eq!(e, Attempt::failed(FailureKind::Payload, "payload_too_large"));
        assert!(check_payload(&push(PushType::Alert, 4096)).is_ok());
        assert!(check_payload(&push(PushType::Alert, 4097)).is_err());
        assert!(check_payload(&push(PushType::Background, 4097)).is_err());
    }

    #[test]
    fn status_table() {
        let ra = Some(Duration::from_secs(7));
        assert_eq!(classify(200, "", None), Attempt::Delivered { status: 200 });
        for (s, r) in [(410, "Unregistered"), (410, "ExpiredToken"), (400, "BadDeviceToken")] {
            assert_eq!(classify(s, r, None), Attempt::TokenGone { status: s, reason: r.into() }, "{s} {r}");
        }
        for (s, r) in [
            (429, "TooManyRequests"),
            (429, "TooManyProviderTokenUpdates"),
            (500, "InternalServerError"),
            (503, "ServiceUnavailable"),
            (503, "Shutdown"),
            (400, "IdleTimeout"),
        ] {
            assert_eq!(classify(s, r, ra), Attempt::Retry { status: Some(s), reason: r.into(), after: ra }, "{s} {r}");
        }
        for (s, r) in [
            (400, "BadCollapseId"),
            (400, "BadExpirationDate"),
            (400, "BadMessageId"),
            (400, "BadPriority"),
            (400, "BadTopic"),
            (400, "DeviceTokenNotForTopic"),
            (400, "DuplicateHeaders"),
            (400, "MissingDeviceToken"),
            (400, "MissingTopic"),
            (400, "PayloadEmpty"),
            (400, "InvalidPushType"),
            (400, "TopicDisallowed"),
            (403, "BadCertificate"),
            (403, "BadCertificateEnvironment"),
            (403, "ExpiredProviderToken"),
            (403, "InvalidProviderToken"),
            (403, "MissingProviderToken"),
            (403, "Forbidden"),
            (404, "BadPath"),
            (405, "MethodNotAllowed"),
            (413, "PayloadTooLarge"),
        ] {
            let kind = match s {
                403 => FailureKind::Auth,
                413 => FailureKind::Payload,
                _ if r == "BadPayload" || r == "PayloadEmpty" => FailureKind::Payload,
                _ => FailureKind::Config,
            };
            assert_eq!(classify(s, r, None), Attempt::Failed { kind, status: Some(s), reason: r.into() }, "{s} {r}");
        }
        assert_eq!(classify(502, "", None), Attempt::Retry { status: Some(502), reason: "http_502".into(), after: None });
    }

    #[test]
    fn jwt_is_reused_within_ttl_and_rebuilt_after() {
        let (p8, kid) = pushrelay_mock::fixtures::apns_p8();
        let cache = ProviderJwtCache::new(Duration::from_secs(2400));
        let (team, other) = (ProviderJwtCache::key(&kid, "TEAM123456", &p8), ProviderJwtCache::key(&kid, "OTHERTEAM1", &p8));
        let a = cache.get(&team, &p8, 1_000_000).unwrap();
        assert!(a.is_sensitive(), "the authorization value is never logged or indexed");
        assert_eq!(cache.get(&team, &p8, 1_000_000 + 2399).unwrap(), a);
        assert_eq!(cache.minted(), 1);
        let b = cache.get(&team, &p8, 1_000_000 + 2400).unwrap();
        assert_ne!(a, b);
        assert_eq!(cache.minted(), 2);
        // another team gets its own token
        cache.get(&other, &p8, 1_000_000 + 2400).unwrap();
        assert_eq!(cache.minted(), 3);
        // invalidate only drops the token it names
        cache.invalidate(&team, &a);
        assert_eq!(cache.get(&team, &p8, 1_000_000 + 2401).unwrap(), b);
        cache.invalidate(&team, &b);
        assert_ne!(cache.get(&team, &p8, 1_000_000 + 2401).unwrap(), b);
        assert_eq!(cache.minted(), 4);
    }

    #[test]
    fn jwt_has_the_apple_shape() {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine;
        let (p8, kid) = pushrelay_mock::fixtures::apns_p8();
        let jwt = sign_provider_jwt(&kid, "TEAM123456", &p8, 1_700_000_000).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        let header: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        let claims: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(header, serde_json::json!({"alg": "ES256", "kid": kid}));
        assert_eq!(claims, serde_json::json!({"iss": "TEAM123456", "iat": 1_700_000_000}));
        assert_eq!(URL_SAFE_NO_PAD.decode(parts[2]).unwrap().len(), 64, "raw R||S, not DER");
    }
}

//! Mock Web Push service (RFC 8030 push resources, RFC 8291 message
//! encryption, RFC 8292 VAPID) on one HTTPS server (HTTP/1.1 and h2) on
//! 127.0.0.1. It plays the browser's push service: [`MockWebPush::subscribe`]
//! creates a subscription the way `PushManager.subscribe()` does (a P-256 key
//! pair and a 16-byte auth secret held by the "browser", optionally bound to
//! an `applicationServerKey`), and returns the `PushSubscription` JSON a
//! relay is given. `POST /push/<id>` is then checked like Mozilla's autopush
//! and Google's FCM web push endpoint do:
//!
//! - unknown push resource → 404; unsubscribed (`unsubscribe`) → 410;
//! - `TTL` is required (non-negative integer, RFC 8030 §5.2) → else 400;
//!   `Urgency` must be `very-low|low|normal|high` (§5.3) and `Topic` at most
//!   32 base64url characters (§5.4) → else 400;
//! - VAPID (RFC 8292): `Authorization: vapid t=<JWT>, k=<key>` (with or
//!   without the space). Absent, or another scheme such as the old
//!   `WebPush <jwt>` + `Crypto-Key` form → 401 with `WWW-Authenticate: vapid`.
//!   Present but invalid → 403: the JWT must be ES256 with a raw r‖s
//!   signature valid under `k`, `aud` must be the push resource's origin,
//!   `exp` must be in the future and at most 24 h away, `sub` must be a
//!   `mailto:` or `https:` URI, and on a subscription bound to an
//!   application server key, `k` must be that key (§4.2);
//! - a body over 4096 bytes → 413; a body needs `Content-Encoding:
//!   aes128gcm` (missing → 400, another coding → 415) and must decrypt per
//!   RFC 8291 with the subscription's key and auth secret as one record
//!   ending in the 0x02 delimiter → else 400. An empty body is a push
//!   without payload and needs no encoding.
//!
//! Success is 201 Created with `Location: /message/<id>` and the `TTL` echoed.
//! Every request is recorded ([`MockWebPush::requests`]); every accepted push
//! is recorded with its decrypted plaintext ([`MockWebPush::messages`]).

use super::apns::RecordedRequest;
use super::server::{now_s, respond, split_jwt, ConnInfo, Handler, Protocol, Server, LOOPBACK_ANY_PORT};
use super::tls::TestPki;
use aes_gcm::aead::Aead;
use aes_gcm::{Aes128Gcm, KeyInit, Nonce};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use p256::ecdsa::signature::Verifier;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use rand::Rng;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Largest push message body push services must accept (RFC 8030 §7.2), in bytes.
pub const MAX_BODY_BYTES: usize = 4096;
/// Longest VAPID `exp` RFC 8292 allows, counted from the request.
pub const MAX_VAPID_LIFETIME_S: i64 = 24 * 3600;

/// A browser's `PushSubscription`: what the application server (the relay)
/// is given to push to one browser.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    /// The push resource, `https://127.0.0.1:PORT/push/<id>`.
    pub endpoint: String,
    /// The browser's P-256 public key: 65-byte uncompressed point, base64url without padding.
    pub p256dh: String,
    /// The 16-byte auth secret, base64url without padding.
    pub auth: String,
}

impl Subscription {
    /// `PushSubscription.toJSON()`: `{"endpoint":…,"keys":{"p256dh":…,"auth":…}}`.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "endpoint": self.endpoint,
            "keys": {"p256dh": self.p256dh, "auth": self.auth},
        })
    }
}

/// One push the mock accepted (201), with what the VAPID JWT claimed and
/// the decrypted payload.
#[derive(Clone, Debug)]
pub struct PushedMessage {
    pub endpoint: String,
    /// The `TTL` header.
    pub ttl: u64,
    /// The `Urgency` header, if any.
    pub urgency: Option<String>,
    /// The `Topic` header, if any.
    pub topic: Option<String>,
    pub vapid_sub: String,
    pub vapid_aud: String,
    pub vapid_exp: i64,
    /// The `k` of the VAPID header: the application server's public key (65 bytes).
    pub vapid_public_key: Vec<u8>,
    /// The decrypted payload (padding and delimiter removed); None for a push without body.
    pub plaintext: Option<Vec<u8>>,
    /// Lower-case names, in arrival order.
    pub headers: Vec<(String, String)>,
}

impl PushedMessage {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }
}

struct Sub {
    secret: p256::SecretKey,
    auth: [u8; 16],
    application_server_key: Option<Vec<u8>>,
    gone: bool,
}

#[derive(Default)]
struct State {
    origin: String,
    subs: HashMap<String, Sub>,
    /// id → statuses still to answer, and the Retry-After sent with them
    scripts: HashMap<String, VecDeque<(u16, Option<u64>)>>,
    latency: Duration,
    record: bool,
    requests: Vec<RecordedRequest>,
    messages: Vec<PushedMessage>,
}

fn lock(s: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// The mock Web Push service. Dropping it stops it.
pub struct MockWebPush {
    server: Server,
    state: Arc<Mutex<State>>,
    pki: Arc<TestPki>,
}

impl MockWebPush {
    pub async fn start() -> MockWebPush {
        Self::start_with_pki(TestPki::generate()).await
    }

    /// Start with an existing PKI (so one CA covers every mock).
    pub async fn start_with_pki(pki: Arc<TestPki>) -> MockWebPush {
        Self::start_on(LOOPBACK_ANY_PORT, pki).await.expect("bind mock Web Push on 127.0.0.1")
    }

    /// Like [`MockWebPush::start_with_pki`], on a chosen address (the standalone binary).
    pub async fn start_on(bind: std::net::SocketAddr, pki: Arc<TestPki>) -> std::io::Result<MockWebPush> {
        let state = Arc::new(Mutex::new(State { record: true, ..Default::default() }));
        let s2 = state.clone();
        let handler: Handler = Arc::new(move |info, req| Box::pin(handle(s2.clone(), info, req)));
        let server = Server::start(bind, pki.server_config(&[b"h2", b"http/1.1"], false), Protocol::Auto, handler).await?;
        let m = MockWebPush { server, state, pki };
        lock(&m.state).origin = m.origin();
        Ok(m)
    }

    /// The push service's origin, `https://127.0.0.1:PORT`: the VAPID `aud`.
    pub fn origin(&self) -> String {
        format!("https://{}", self.server.addr)
    }
    pub fn ca_pem(&self) -> String {
        self.pki.ca_pem()
    }
    pub fn pki(&self) -> Arc<TestPki> {
        self.pki.clone()
    }

    /// A new subscription with a fresh P-256 key pair and auth secret, like
    /// `PushManager.subscribe({applicationServerKey})`. With a key (65-byte
    /// uncompressed P-256 point), pushes must be VAPID-signed by that key.
    pub fn subscribe(&self, application_server_key: Option<&[u8]>) -> Subscription {
        let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let auth: [u8; 16] = rand::thread_rng().gen();
        self.add(secret, auth, application_server_key)
    }

    /// A subscription with a fixed private key and auth secret (test vectors).
    pub fn subscribe_with_keys(&self, private_key: [u8; 32], auth: [u8; 16], application_server_key: Option<&[u8]>) -> Subscription {
        let secret = p256::SecretKey::from_slice(&private_key).expect("mock: invalid P-256 private key");
        self.add(secret, auth, application_server_key)
    }

    fn add(&self, secret: p256::SecretKey, auth: [u8; 16], asks: Option<&[u8]>) -> Subscription {
        if let Some(k) = asks {
            // What the browser checks before subscribing (else InvalidAccessError).
            assert!(
                k.len() == 65 && k[0] == 4 && p256::PublicKey::from_sec1_bytes(k).is_ok(),
                "mock: applicationServerKey must be a 65-byte uncompressed P-256 point"
            );
        }
        let id = URL_SAFE_NO_PAD.encode(rand::thread_rng().gen::<[u8; 24]>());
        let public = secret.public_key().to_encoded_point(false);
        let sub = Subscription {
            endpoint: format!("{}/push/{id}", self.origin()),
            p256dh: URL_SAFE_NO_PAD.encode(public.as_bytes()),
            auth: URL_SAFE_NO_PAD.encode(auth),
        };
        lock(&self.state).subs.insert(id, Sub { secret, auth, application_server_key: asks.map(<[u8]>::to_vec), gone: false });
        sub
    }

    fn id_of(&self, endpoint: &str) -> String {
        let id = endpoint.rsplit_once("/push/").map(|(_, id)| id).unwrap_or(endpoint).to_string();
        assert!(lock(&self.state).subs.contains_key(&id), "mock: no subscription {endpoint}");
        id
    }

    /// The browser unsubscribed: later pushes get 410 Gone.
    pub fn unsubscribe(&self, endpoint: &str) {
        let id = self.id_of(endpoint);
        if let Some(s) = lock(&self.state).subs.get_mut(&id) {
            s.gone = true;
        }
    }
    /// The push service forgot the subscription: later pushes get 404.
    pub fn forget(&self, endpoint: &str) {
        let id = self.id_of(endpoint);
        lock(&self.state).subs.remove(&id);
    }
    /// The next (otherwise valid) pushes to `endpoint` get these statuses
    /// (e.g. 429, 500, 503), in order; then normal service.
    pub fn script(&self, endpoint: &str, statuses: Vec<u16>) {
        self.script_with_retry_after(endpoint, statuses, None);
    }
    /// Like [`MockWebPush::script`], with a `Retry-After` header on each of those answers.
    pub fn script_with_retry_after(&self, endpoint: &str, statuses: Vec<u16>, retry_after_s: Option<u64>) {
        let id = self.id_of(endpoint);
        lock(&self.state).scripts.entry(id).or_default().extend(statuses.into_iter().map(|s| (s, retry_after_s)));
    }
    /// Delay added to every answer.
    pub fn set_latency(&self, latency: Duration) {
        lock(&self.state).latency = latency;
    }
    /// Every accepted push, in arrival order.
    pub fn messages(&self) -> Vec<PushedMessage> {
        lock(&self.state).messages.clone()
    }
    /// Every request, accepted or not, in arrival order; `reason` is the
    /// refusal's text.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state).requests.clone()
    }
    /// Forget recorded requests and messages.
    pub fn clear(&self) {
        let mut st = lock(&self.state);
        st.requests.clear();
        st.messages.clear();
    }
    /// Turn recording off (benchmarks) or on.
    pub fn set_recording(&self, on: bool) {
        lock(&self.state).record = on;
    }
    /// Gracefully shut each connection down (GOAWAY) after it has received
    /// `n` requests (0 turns it off).
    pub fn goaway_after(&self, n: u64) {
        self.server.goaway_after.store(n, Ordering::SeqCst);
    }
    pub fn connections_accepted(&self) -> u64 {
        self.server.connections.load(Ordering::SeqCst)
    }
    /// Fault: every connection open now goes silent (no answer, no FIN, no
    /// RST), as behind a NAT that forgot it; new connections work.
    pub fn silence_open_connections(&self) {
        self.server.silence_open_connections();
    }
}

struct Verdict {
    status: u16,
    reason: Option<String>,
    retry_after_s: Option<u64>,
    ttl: Option<u64>,
    accepted: Option<PushedMessage>,
}

fn reject(status: u16, reason: impl Into<String>) -> Verdict {
    Verdict { status, reason: Some(reason.into()), retry_after_s: None, ttl: None, accepted: None }
}

async fn handle(state: Arc<Mutex<State>>, info: Arc<ConnInfo>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
    let headers: Vec<(String, String)> =
        parts.headers.iter().map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned())).collect();
    let path = parts.uri.path().to_string();
    let mut verdict = check(&state, parts.method.as_str(), &path, &parts.headers, &body);
    let message_id = uuid::Uuid::new_v4().simple().to_string();
    let latency = {
        let mut st = lock(&state);
        if st.record {
            if let Some(mut m) = verdict.accepted.take() {
                m.headers = headers.clone();
                st.messages.push(m);
            }
            st.requests.push(RecordedRequest {
                connection: info.id,
                client_cert: info.client_cert,
                method: parts.method.to_string(),
                path,
                headers,
                body,
                status: verdict.status,
                reason: verdict.reason.clone(),
            });
        }
        st.latency
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let mut resp = match &verdict.reason {
        None => respond(verdict.status, None, Vec::new()),
        Some(r) => respond(verdict.status, Some("text/plain; charset=utf-8"), r.clone().into_bytes()),
    };
    let h = resp.headers_mut();
    if verdict.status == 201 {
        h.insert("location", format!("/message/{message_id}").parse().expect("location"));
    }
    if let Some(ttl) = verdict.ttl {
        h.insert("ttl", ttl.to_string().parse().expect("ttl"));
    }
    if verdict.status == 401 {
        h.insert("www-authenticate", "vapid".parse().expect("www-authenticate"));
    }
    if let Some(s) = verdict.retry_after_s {
        h.insert("retry-after", s.to_string().parse().expect("retry-after"));
    }
    resp
}

fn check(state: &Mutex<State>, method: &str, path: &str, headers: &http::HeaderMap, body: &[u8]) -> Verdict {
    let Some(id) = path.strip_prefix("/push/").filter(|id| !id.is_empty() && !id.contains('/')) else {
        return reject(404, "no such push resource");
    };
    if method != "POST" {
        return reject(405, "push with POST");
    }
    let (origin, secret, auth, asks) = {
        let st = lock(state);
        match st.subs.get(id) {
            None => return reject(404, "no such subscription"),
            Some(s) if s.gone => return reject(410, "subscription expired or unsubscribed"),
            Some(s) => (st.origin.clone(), s.secret.clone(), s.auth, s.application_server_key.clone()),
        }
    };
    let hv = |name: &str| headers.get(name).map(|v| v.to_str().unwrap_or("\u{fffd}").to_string());

    let Some(ttl) = hv("ttl") else { return reject(400, "TTL header required") };
    let ttl = match ttl.trim() {
        t if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) => match t.parse::<u64>() {
            Ok(v) => v,
            Err(_) => return reject(400, "TTL out of range"),
        },
        _ => return reject(400, "TTL must be a non-negative integer"),
    };
    let urgency = hv("urgency");
    if let Some(u) = &urgency {
        if !matches!(u.as_str(), "very-low" | "low" | "normal" | "high") {
            return reject(400, "Urgency must be very-low, low, normal or high");
        }
    }
    let topic = hv("topic");
    if let Some(t) = &topic {
        if t.is_empty() || t.len() > 32 || !t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return reject(400, "Topic must be at most 32 base64url characters");
        }
    }

    let Some(authz) = hv("authorization") else { return reject(401, "missing VAPID Authorization") };
    let vapid = match check_vapid(&authz, &origin, asks.as_deref()) {
        Ok(v) => v,
        Err(v) => return v,
    };

    if body.len() > MAX_BODY_BYTES {
        return reject(413, "payload too large (max 4096 bytes)");
    }
    let plaintext = if body.is_empty() {
        None
    } else {
        match hv("content-encoding") {
            None => return reject(400, "Content-Encoding: aes128gcm required with a payload"),
            Some(ce) if !ce.trim().eq_ignore_ascii_case("aes128gcm") => {
                return reject(415, format!("unsupported Content-Encoding {ce:?}: use aes128gcm"))
            }
            Some(_) => {}
        }
        match decrypt(&secret, &auth, body) {
            Ok(p) => Some(p),
            Err(e) => return reject(400, format!("payload decryption failed: {e}")),
        }
    };

    if let Some((status, retry_after_s)) = lock(state).scripts.get_mut(id).and_then(VecDeque::pop_front) {
        if !(200..300).contains(&status) {
            let mut v = reject(status, format!("scripted {status}"));
            v.retry_after_s = retry_after_s;
            return v;
        }
    }
    Verdict {
        status: 201,
        reason: None,
        retry_after_s: None,
        ttl: Some(ttl),
        accepted: Some(PushedMessage {
            endpoint: format!("{origin}{path}"),
            ttl,
            urgency,
            topic,
            vapid_sub: vapid.sub,
            vapid_aud: vapid.aud,
            vapid_exp: vapid.exp,
            vapid_public_key: vapid.key,
            plaintext,
            headers: Vec::new(),
        }),
    }
}

struct Vapid {
    sub: String,
    aud: String,
    exp: i64,
    key: Vec<u8>,
}

fn b64url(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok()
}

/// RFC 8292: `vapid t=<JWT>, k=<key>` (also `t=…,k=…`).
#[allow(clippy::result_large_err)] // a refusal is the whole answer the mock sends back, once per request
fn check_vapid(authz: &str, origin: &str, bound_key: Option<&[u8]>) -> Result<Vapid, Verdict> {
    let (scheme, params) = authz.trim().split_once(' ').unwrap_or((authz.trim(), ""));
    if !scheme.eq_ignore_ascii_case("vapid") {
        return Err(reject(401, format!("unsupported Authorization scheme {scheme:?}: use vapid t=…, k=… (RFC 8292)")));
    }
    let (mut t, mut k) = (None, None);
    for p in params.split(',') {
        let Some((name, value)) = p.trim().split_once('=') else { continue };
        let value = value.trim().trim_matches('"').to_string();
        match name.trim().to_ascii_lowercase().as_str() {
            "t" => t = Some(value),
            "k" => k = Some(value),
            _ => {}
        }
    }
    let (Some(t), Some(k)) = (t, k) else { return Err(reject(401, "vapid credentials need both t= and k=")) };
    let Some(key) = b64url(&k).filter(|k| k.len() == 65 && k[0] == 4) else {
        return Err(reject(403, "vapid k must be a base64url 65-byte uncompressed P-256 point"));
    };
    let Ok(vk) = p256::ecdsa::VerifyingKey::from_sec1_bytes(&key) else {
        return Err(reject(403, "vapid k is not a P-256 point"));
    };
    if bound_key.is_some_and(|b| b != key.as_slice()) {
        return Err(reject(403, "vapid k does not match the subscription's applicationServerKey"));
    }
    let Some((header, claims, input, sig)) = split_jwt(&t) else { return Err(reject(403, "vapid t is not a JWT")) };
    if header.get("alg").and_then(Value::as_str) != Some("ES256") {
        return Err(reject(403, "vapid JWT alg must be ES256"));
    }
    let Some(sig) = b64url(&sig).filter(|s| s.len() == 64) else {
        return Err(reject(403, "vapid JWT signature must be the 64-byte raw r||s (JWS), not DER"));
    };
    let Ok(sig) = p256::ecdsa::Signature::from_slice(&sig) else {
        return Err(reject(403, "vapid JWT signature is malformed"));
    };
    if vk.verify(input.as_bytes(), &sig).is_err() {
        return Err(reject(403, "vapid JWT signature does not verify under k"));
    }
    let Some(aud) = claims.get("aud").and_then(Value::as_str) else {
        return Err(reject(403, "vapid JWT aud missing"));
    };
    if aud != origin {
        return Err(reject(403, format!("vapid JWT aud must be the push resource's origin {origin}, not {aud}")));
    }
    let Some(exp) = claims.get("exp").and_then(Value::as_i64) else {
        return Err(reject(403, "vapid JWT exp missing (integer seconds)"));
    };
    let now = now_s();
    if exp <= now {
        return Err(reject(403, "vapid JWT expired"));
    }
    if exp > now + MAX_VAPID_LIFETIME_S {
        return Err(reject(403, "vapid JWT exp more than 24 hours ahead"));
    }
    let Some(sub) = claims.get("sub").and_then(Value::as_str) else {
        return Err(reject(403, "vapid JWT sub missing"));
    };
    if !(sub.starts_with("mailto:") || sub.starts_with("https:")) {
        return Err(reject(403, "vapid JWT sub must be a mailto: or https: URI"));
    }
    Ok(Vapid { sub: sub.to_string(), aud: aud.to_string(), exp, key })
}

fn hkdf_sha256(salt: &[u8], ikm: &[u8], info: &[u8], out: &mut [u8]) {
    hkdf::Hkdf::<sha2::Sha256>::new(Some(salt), ikm).expand(info, out).expect("hkdf output length");
}

/// Decrypt an RFC 8291 (`aes128gcm`, RFC 8188) push message body with the
/// receiver's (browser's) private key and auth secret. Push messages are
/// one record: `salt(16) | rs(4, BE) | idlen(1) = 65 | keyid = sender's
/// public key (65) | ciphertext`, whose plaintext ends in the 0x02
/// delimiter followed by zero padding.
pub fn decrypt_aes128gcm(private_key: &[u8; 32], auth: &[u8; 16], body: &[u8]) -> Result<Vec<u8>, String> {
    let secret = p256::SecretKey::from_slice(private_key).map_err(|_| "invalid private key".to_string())?;
    decrypt(&secret, auth, body)
}

fn decrypt(secret: &p256::SecretKey, auth: &[u8; 16], body: &[u8]) -> Result<Vec<u8>, String> {
    if body.len() < 21 {
        return Err("shorter than the aes128gcm header".into());
    }
    let salt = &body[..16];
    let rs = u32::from_be_bytes([body[16], body[17], body[18], body[19]]) as usize;
    let idlen = body[20] as usize;
    if rs < 18 {
        return Err(format!("record size {rs} below 18"));
    }
    if idlen != 65 {
        return Err(format!("keyid must be the sender's 65-byte public key, idlen is {idlen}"));
    }
    let Some(as_public) = body.get(21..21 + 65) else { return Err("truncated keyid".into()) };
    let ciphertext = &body[21 + 65..];
    if ciphertext.len() < 17 {
        return Err("record shorter than tag + delimiter".into());
    }
    if ciphertext.len() > rs {
        return Err("more than one record (push messages are a single record)".into());
    }
    let sender = p256::PublicKey::from_sec1_bytes(as_public).map_err(|_| "keyid is not a P-256 point".to_string())?;
    let ecdh = p256::ecdh::diffie_hellman(secret.to_nonzero_scalar(), sender.as_affine());
    let ua_public = secret.public_key().to_encoded_point(false);

    let mut key_info = Vec::with_capacity(14 + 65 + 65);
    key_info.extend_from_slice(b"WebPush: info\0");
    key_info.extend_from_slice(ua_public.as_bytes());
    key_info.extend_from_slice(as_public);
    let mut ikm = [0u8; 32];
    hkdf_sha256(auth, ecdh.raw_secret_bytes().as_slice(), &key_info, &mut ikm);
    let mut cek = [0u8; 16];
    hkdf_sha256(salt, &ikm, b"Content-Encoding: aes128gcm\0", &mut cek);
    let mut nonce = [0u8; 12];
    hkdf_sha256(salt, &ikm, b"Content-Encoding: nonce\0", &mut nonce);

    let cipher = Aes128Gcm::new_from_slice(&cek).expect("16-byte key");
    let mut padded = cipher
        .decrypt(Nonce::from_slice(&nonce), ciphertext)
        .map_err(|_| "AES-GCM authentication failed (wrong keys or corrupted body)".to_string())?;
    let Some(end) = padded.iter().rposition(|&b| b != 0) else { return Err("no padding delimiter".into()) };
    match padded[end] {
        2 => {
            padded.truncate(end);
            Ok(padded)
        }
        1 => Err("delimiter 0x01 marks a non-last record (push messages are a single record)".into()),
        d => Err(format!("bad padding delimiter 0x{d:02x}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::client;
    use p256::ecdsa::signature::Signer;
    use p256::ecdsa::{Signature, SigningKey};
    use serde_json::json;

    // RFC 8291 Appendix A.
    const PLAINTEXT: &str = "When I grow up, I want to be a watermelon";
    const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";
    const UA_PRIVATE: &str = "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94";
    const UA_PUBLIC: &str = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
    const BODY: &str = "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN";

    fn d(s: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(s).unwrap()
    }
    fn rfc_keys() -> ([u8; 32], [u8; 16]) {
        (d(UA_PRIVATE).try_into().unwrap(), d(AUTH).try_into().unwrap())
    }

    struct AppServer {
        key: SigningKey,
    }

    impl AppServer {
        fn new() -> Self {
            Self { key: SigningKey::random(&mut rand::rngs::OsRng) }
        }
        fn public(&self) -> Vec<u8> {
            self.key.verifying_key().to_encoded_point(false).as_bytes().to_vec()
        }
        fn jwt_with(&self, header: Value, claims: Value) -> String {
            let input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
            let sig: Signature = self.key.sign(input.as_bytes());
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
        }
        fn jwt(&self, claims: Value) -> String {
            self.jwt_with(json!({"typ": "JWT", "alg": "ES256"}), claims)
        }
        fn claims(aud: &str) -> Value {
            json!({"aud": aud, "exp": now_s() + 12 * 3600, "sub": "mailto:ops@example.com"})
        }
        fn authorization(&self, claims: Value) -> String {
            format!("vapid t={}, k={}", self.jwt(claims), URL_SAFE_NO_PAD.encode(self.public()))
        }
    }

    /// RFC 8291 encryption (test side), one record, rs 4096.
    fn encrypt(p256dh: &str, auth: &str, plaintext: &[u8]) -> Vec<u8> {
        let ua_public = d(p256dh);
        let auth = d(auth);
        let eph = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let as_public = eph.public_key().to_encoded_point(false);
        let ua = p256::PublicKey::from_sec1_bytes(&ua_public).unwrap();
        let ecdh = p256::ecdh::diffie_hellman(eph.to_nonzero_scalar(), ua.as_affine());
        let salt: [u8; 16] = rand::thread_rng().gen();
        let mut key_info = b"WebPush: info\0".to_vec();
        key_info.extend_from_slice(&ua_public);
        key_info.extend_from_slice(as_public.as_bytes());
        let mut ikm = [0u8; 32];
        hkdf_sha256(&auth, ecdh.raw_secret_bytes().as_slice(), &key_info, &mut ikm);
        let (mut cek, mut nonce) = ([0u8; 16], [0u8; 12]);
        hkdf_sha256(&salt, &ikm, b"Content-Encoding: aes128gcm\0", &mut cek);
        hkdf_sha256(&salt, &ikm, b"Content-Encoding: nonce\0", &mut nonce);
        let mut padded = plaintext.to_vec();
        padded.push(2);
        let ct = Aes128Gcm::new_from_slice(&cek).unwrap().encrypt(Nonce::from_slice(&nonce), padded.as_slice()).unwrap();
        let mut body = salt.to_vec();
        body.extend_from_slice(&4096u32.to_be_bytes());
        body.push(65);
        body.extend_from_slice(as_public.as_bytes());
        body.extend_from_slice(&ct);
        body
    }

    async fn post(c: &reqwest::Client, endpoint: &str, headers: &[(&str, &str)], body: Vec<u8>) -> (u16, String, reqwest::header::HeaderMap) {
        let mut rb = c.post(endpoint).body(body);
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        let r = rb.send().await.unwrap();
        let status = r.status().as_u16();
        let h = r.headers().clone();
        (status, String::from_utf8_lossy(&r.bytes().await.unwrap()).into_owned(), h)
    }

    #[test]
    fn rfc8291_vector_decrypts() {
        let (private, auth) = rfc_keys();
        let plain = decrypt_aes128gcm(&private, &auth, &d(BODY)).unwrap();
        assert_eq!(plain, PLAINTEXT.as_bytes());
        let mut bad = d(BODY);
        *bad.last_mut().unwrap() ^= 1;
        assert!(decrypt_aes128gcm(&private, &auth, &bad).is_err());
        let mut wrong_auth = auth;
        wrong_auth[0] ^= 1;
        assert!(decrypt_aes128gcm(&private, &wrong_auth, &d(BODY)).is_err());
    }

    #[tokio::test]
    async fn rfc8291_vector_through_the_mock() {
        let m = MockWebPush::start().await;
        let app = AppServer::new();
        let (private, auth) = rfc_keys();
        let sub = m.subscribe_with_keys(private, auth, Some(&app.public()));
        assert_eq!(sub.p256dh, UA_PUBLIC);
        assert_eq!(sub.auth, AUTH);
        assert!(sub.endpoint.starts_with(&format!("{}/push/", m.origin())));
        assert_eq!(sub.to_json(), json!({"endpoint": sub.endpoint, "keys": {"p256dh": UA_PUBLIC, "auth": AUTH}}));
        let c = client(&m.pki());
        // The no-space form of the VAPID header (py_vapid) is accepted too.
        let authz = format!("vapid t={},k={}", app.jwt(AppServer::claims(&m.origin())), URL_SAFE_NO_PAD.encode(app.public()));
        let (s, text, h) =
            post(&c, &sub.endpoint, &[("ttl", "60"), ("urgency", "high"), ("content-encoding", "aes128gcm"), ("authorization", &authz)], d(BODY))
                .await;
        assert_eq!(s, 201, "{text}");
        assert!(h.get("location").unwrap().to_str().unwrap().starts_with("/message/"));
        let msgs = m.messages();
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].plaintext.as_deref(), Some(PLAINTEXT.as_bytes()));
        assert_eq!(msgs[0].ttl, 60);
        assert_eq!(msgs[0].urgency.as_deref(), Some("high"));
        assert_eq!(msgs[0].vapid_aud, m.origin());
        assert_eq!(msgs[0].vapid_sub, "mailto:ops@example.com");
        assert_eq!(msgs[0].vapid_public_key, app.public());
        assert_eq!(msgs[0].header("content-encoding"), Some("aes128gcm"));
    }

    #[tokio::test]
    async fn vapid_push_with_random_keys() {
        let m = MockWebPush::start().await;
        let app = AppServer::new();
        let sub = m.subscribe(Some(&app.public()));
        let c = client(&m.pki());
        let authz = app.authorization(AppServer::claims(&m.origin()));
        let body = encrypt(&sub.p256dh, &sub.auth, br#"{"type":"call","call_id":"c-9"}"#);
        let (s, text, _) = post(&c, &sub.endpoint, &[("ttl", "30"), ("content-encoding", "aes128gcm"), ("authorization", &authz)], body).await;
        assert_eq!(s, 201, "{text}");
        // A push without payload needs no Content-Encoding.
        let (s, text, h) = post(&c, &sub.endpoint, &[("ttl", "0"), ("authorization", &authz)], vec![]).await;
        assert_eq!(s, 201, "{text}");
        assert_eq!(h.get("ttl").unwrap(), "0");
        let msgs = m.messages();
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].plaintext.as_deref(), Some(&br#"{"type":"call","call_id":"c-9"}"#[..]));
        assert_eq!(msgs[0].endpoint, sub.endpoint);
        assert_eq!(msgs[1].plaintext, None);
        assert_eq!(msgs[1].ttl, 0);
        assert!(msgs[0].vapid_exp > now_s() + 11 * 3600);
        assert_eq!(m.requests().len(), 2);
        m.clear();
        assert!(m.messages().is_empty() && m.requests().is_empty());
    }

    #[tokio::test]
    async fn refusals() {
        let m = MockWebPush::start().await;
        let app = AppServer::new();
        let (private, auth) = rfc_keys();
        let sub = m.subscribe_with_keys(private, auth, Some(&app.public()));
        let c = client(&m.pki());
        let origin = m.origin();
        let good = app.authorization(AppServer::claims(&origin));
        let k = URL_SAFE_NO_PAD.encode(app.public());
        let body = d(BODY);
        fn std_headers(authz: &str) -> Vec<(&str, &str)> {
            vec![("ttl", "60"), ("content-encoding", "aes128gcm"), ("authorization", authz)]
        }
        let mut claims_25h = AppServer::claims(&origin);
        claims_25h["exp"] = json!(now_s() + 25 * 3600);
        let mut claims_past = AppServer::claims(&origin);
        claims_past["exp"] = json!(now_s() - 10);
        let mut claims_no_sub = AppServer::claims(&origin);
        claims_no_sub.as_object_mut().unwrap().remove("sub");
        let mut claims_bad_sub = AppServer::claims(&origin);
        claims_bad_sub["sub"] = json!("ops@example.com");
        let other = AppServer::new();
        let der_sig = {
            let jwt = app.jwt(AppServer::claims(&origin));
            let (input, _) = jwt.rsplit_once('.').unwrap();
            let sig: Signature = app.key.sign(input.as_bytes());
            format!("vapid t={input}.{}, k={k}", URL_SAFE_NO_PAD.encode(sig.to_der().as_bytes()))
        };
        let hs256 = format!("vapid t={}, k={k}", app.jwt_with(json!({"alg": "HS256"}), AppServer::claims(&origin)));
        let cases: Vec<(&str, String, u16)> = vec![
            ("wrong aud", app.authorization(AppServer::claims("https://127.0.0.1:1")), 403),
            ("aud with path", app.authorization(AppServer::claims(&sub.endpoint)), 403),
            ("exp in 25 h", app.authorization(claims_25h), 403),
            ("exp in the past", app.authorization(claims_past), 403),
            ("no sub", app.authorization(claims_no_sub), 403),
            ("sub not a URI", app.authorization(claims_bad_sub), 403),
            ("other key (bound subscription)", other.authorization(AppServer::claims(&origin)), 403),
            ("signed by another key than k", format!("vapid t={}, k={k}", other.jwt(AppServer::claims(&origin))), 403),
            ("DER signature", der_sig, 403),
            ("alg HS256", hs256, 403),
            ("old WebPush scheme", format!("WebPush {}", app.jwt(AppServer::claims(&origin))), 401),
            ("bearer", "Bearer abc".to_string(), 401),
            ("no k", format!("vapid t={}", app.jwt(AppServer::claims(&origin))), 401),
        ];
        for (name, authz, want) in &cases {
            let (s, text, h) = post(&c, &sub.endpoint, &std_headers(authz), body.clone()).await;
            assert_eq!(s, *want, "{name}: {text}");
            assert!(!text.is_empty(), "{name}: a reason in the body");
            if s == 401 {
                assert_eq!(h.get("www-authenticate").unwrap(), "vapid", "{name}");
            }
        }
        // Missing Authorization.
        let (s, _, _) = post(&c, &sub.endpoint, &[("ttl", "60"), ("content-encoding", "aes128gcm")], body.clone()).await;
        assert_eq!(s, 401);
        // TTL missing or malformed; Urgency and Topic malformed.
        let (s, text, _) = post(&c, &sub.endpoint, &[("content-encoding", "aes128gcm"), ("authorization", &good)], body.clone()).await;
        assert_eq!(s, 400, "{text}");
        let long_topic = "a".repeat(33);
        for (h, v) in [("ttl", "-1"), ("ttl", "1.5"), ("urgency", "urgent"), ("topic", "no spaces allowed"), ("topic", long_topic.as_str())] {
            let mut hs = std_headers(&good);
            if h == "ttl" {
                hs.retain(|(k, _)| *k != "ttl");
            }
            hs.push((h, v));
            let (s, text, _) = post(&c, &sub.endpoint, &hs, body.clone()).await;
            assert_eq!(s, 400, "{h}: {v}: {text}");
        }
        // Content coding: missing → 400, another → 415; corrupted body → 400; too big → 413.
        let (s, _, _) = post(&c, &sub.endpoint, &[("ttl", "60"), ("authorization", &good)], body.clone()).await;
        assert_eq!(s, 400);
        let (s, _, _) = post(&c, &sub.endpoint, &[("ttl", "60"), ("content-encoding", "aesgcm"), ("authorization", &good)], body.clone()).await;
        assert_eq!(s, 415);
        let mut corrupted = body.clone();
        corrupted[100] ^= 0x40;
        let (s, text, _) = post(&c, &sub.endpoint, &std_headers(&good), corrupted).await;
        assert_eq!(s, 400, "{text}");
        let (s, _, _) = post(&c, &sub.endpoint, &std_headers(&good), vec![0u8; 4097]).await;
        assert_eq!(s, 413);
        // Unknown subscription → 404; after unsubscribe → 410; forgotten → 404.
        let (s, _, _) = post(&c, &format!("{origin}/push/nope"), &std_headers(&good), body.clone()).await;
        assert_eq!(s, 404);
        assert!(m.messages().is_empty(), "nothing above was accepted");
        let (s, _, _) = post(&c, &sub.endpoint, &std_headers(&good), body.clone()).await;
        assert_eq!(s, 201);
        m.unsubscribe(&sub.endpoint);
        let (s, _, _) = post(&c, &sub.endpoint, &std_headers(&good), body.clone()).await;
        assert_eq!(s, 410);
        m.forget(&sub.endpoint);
        let (s, _, _) = post(&c, &sub.endpoint, &std_headers(&good), body.clone()).await;
        assert_eq!(s, 404);
        assert_eq!(m.messages().len(), 1);
        let last = m.requests().pop().unwrap();
        assert_eq!((last.status, last.reason.as_deref()), (404, Some("no such subscription")));
    }

    #[tokio::test]
    async fn unbound_subscription_accepts_any_valid_key() {
        let m = MockWebPush::start().await;
        let sub = m.subscribe(None);
        let c = client(&m.pki());
        for _ in 0..2 {
            let app = AppServer::new();
            let authz = app.authorization(AppServer::claims(&m.origin()));
            let (s, text, _) = post(&c, &sub.endpoint, &[("ttl", "5"), ("authorization", &authz)], vec![]).await;
            assert_eq!(s, 201, "{text}");
        }
    }

    #[tokio::test]
    async fn scripts_and_latency() {
        let m = MockWebPush::start().await;
        let app = AppServer::new();
        let sub = m.subscribe(Some(&app.public()));
        let c = client(&m.pki());
        let authz = app.authorization(AppServer::claims(&m.origin()));
        let h = [("ttl", "30"), ("authorization", authz.as_str())];
        m.script_with_retry_after(&sub.endpoint, vec![429, 503], Some(3));
        m.script(&sub.endpoint, vec![500]);
        let mut seen = Vec::new();
        for _ in 0..4 {
            let (s, _, hdrs) = post(&c, &sub.endpoint, &h, vec![]).await;
            seen.push((s, hdrs.get("retry-after").map(|v| v.to_str().unwrap().to_string())));
        }
        assert_eq!(seen, vec![(429, Some("3".into())), (503, Some("3".into())), (500, None), (201, None)]);
        assert_eq!(m.messages().len(), 1);
        // A scripted status is only used by a request that is otherwise valid.
        m.script(&sub.endpoint, vec![503]);
        let (s, _, _) = post(&c, &sub.endpoint, &[("authorization", authz.as_str())], vec![]).await;
        assert_eq!(s, 400);
        let (s, _, _) = post(&c, &sub.endpoint, &h, vec![]).await;
        assert_eq!(s, 503);

        m.set_latency(Duration::from_millis(200));
        let start = std::time::Instant::now();
        let (s, _, _) = post(&c, &sub.endpoint, &h, vec![]).await;
        assert_eq!(s, 201);
        assert!(start.elapsed() >= Duration::from_millis(200));
    }
}

//! Mock APNs provider API: HTTP/2 over TLS (ALPN `h2` only) on 127.0.0.1,
//! checking requests the way Apple documents (protocol.md §4): path, method,
//! push type/topic rules, priority, expiration, `apns-id`, payload size,
//! ES256 provider tokens verified against the registered `.p8` public key
//! (with `iat` expiry and an optional token-update rate limit), and TLS
//! client-certificate auth against the mock CA.
//!
//! One instance is one environment: start two (one `sandbox: true`) to test
//! production vs sandbox routing.

use super::server::{now_s, respond, split_jwt, ConnInfo, Handler, Protocol, Server, LOOPBACK_ANY_PORT};
use super::tls::TestPki;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A `.p8` key registered with the mock (its public half verifies JWTs).
#[derive(Clone)]
pub struct MockApnsKey {
    pub team_id: String,
    pub key_id: String,
    pub p8_pem: String,
}

#[derive(Clone, Default)]
pub struct MockApnsConfig {
    /// Sandbox instances add an `apns-unique-id` response header.
    pub sandbox: bool,
    /// Bundle ids whose topics (`<bundle>` and `<bundle>.voip`) may be pushed.
    pub bundles: Vec<String>,
    pub keys: Vec<MockApnsKey>,
    /// Strict mode: 429 `TooManyProviderTokenUpdates` when a team's provider
    /// token changes again on the same connection within this interval.
    pub token_update_limit: Option<Duration>,
    /// Use this PKI (e.g. shared with another instance); else a new one.
    pub pki: Option<Arc<TestPki>>,
}

/// One request as the mock saw it, with the answer it gave.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// Which connection (1-based, accept order).
    pub connection: u64,
    pub client_cert: bool,
    pub method: String,
    pub path: String,
    /// Lower-case names, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub status: u16,
    pub reason: Option<String>,
}

impl RecordedRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }
}

/// A scripted answer for one device token.
#[derive(Clone, Debug)]
pub struct ScriptedReply {
    pub status: u16,
    pub reason: Option<String>,
    pub retry_after_s: Option<u64>,
    pub delay: Option<Duration>,
}

impl ScriptedReply {
    pub fn ok() -> Self {
        Self { status: 200, reason: None, retry_after_s: None, delay: None }
    }
    pub fn error(status: u16, reason: &str) -> Self {
        Self { status, reason: Some(reason.to_string()), retry_after_s: None, delay: None }
    }
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after_s = Some(seconds);
        self
    }
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }
}

struct RegisteredKey {
    team_id: String,
    public_raw: Vec<u8>,
}

#[derive(Default)]
struct State {
    sandbox: bool,
    bundles: HashSet<String>,
    keys: HashMap<String, RegisteredKey>,
    token_update_limit: Option<Duration>,
    verified: HashSet<String>,
    distinct_tokens: HashSet<String>,
    /// (team, connection) → (current token, when it was first seen)
    team_tokens: HashMap<String, (String, i64)>,
    failed: HashMap<String, (u16, String)>,
    scripts: HashMap<String, VecDeque<ScriptedReply>>,
    latency: Duration,
    clock_offset_s: i64,
    record: bool,
    requests: Vec<RecordedRequest>,
}

/// The mock APNs server. Dropping it stops it.
pub struct MockApns {
    server: Server,
    state: Arc<Mutex<State>>,
    pki: Arc<TestPki>,
}

const PUSH_TYPES: &[&str] =
    &["alert", "background", "location", "voip", "complication", "fileprovider", "mdm", "liveactivity", "pushtotalk", "widgets", "controls"];

fn lock(s: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

fn public_raw(p8_pem: &str) -> Vec<u8> {
    rcgen::KeyPair::from_pem(p8_pem).expect("mock: registered .p8 must be a PKCS#8 PEM key").public_key_raw().to_vec()
}

impl MockApns {
    pub async fn start(config: MockApnsConfig) -> MockApns {
        Self::start_on(LOOPBACK_ANY_PORT, config).await.expect("bind mock APNs on 127.0.0.1")
    }

    /// Like [`MockApns::start`], on a chosen address (the standalone binary).
    pub async fn start_on(bind: std::net::SocketAddr, config: MockApnsConfig) -> std::io::Result<MockApns> {
        let pki = config.pki.clone().unwrap_or_else(TestPki::generate);
        let mut st = State {
            sandbox: config.sandbox,
            bundles: config.bundles.iter().cloned().collect(),
            token_update_limit: config.token_update_limit,
            record: true,
            ..Default::default()
        };
        for k in &config.keys {
            st.keys.insert(k.key_id.clone(), RegisteredKey { team_id: k.team_id.clone(), public_raw: public_raw(&k.p8_pem) });
        }
        let state = Arc::new(Mutex::new(st));
        let s2 = state.clone();
        let handler: Handler = Arc::new(move |info, req| Box::pin(handle(s2.clone(), info, req)));
        let server = Server::start(bind, pki.server_config(&[b"h2"], true), Protocol::H2Only, handler).await?;
        Ok(MockApns { server, state, pki })
    }

    /// Base URL, e.g. `https://127.0.0.1:43121` (the server cert covers it).
    pub fn url(&self) -> String {
        format!("https://{}", self.server.addr)
    }
    pub fn ca_pem(&self) -> String {
        self.pki.ca_pem()
    }
    pub fn pki(&self) -> Arc<TestPki> {
        self.pki.clone()
    }
    pub fn register_key(&self, team_id: &str, key_id: &str, p8_pem: &str) {
        lock(&self.state).keys.insert(key_id.to_string(), RegisteredKey { team_id: team_id.to_string(), public_raw: public_raw(p8_pem) });
    }
    pub fn register_bundle(&self, bundle: &str) {
        lock(&self.state).bundles.insert(bundle.to_string());
    }
    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state).requests.clone()
    }
    pub fn clear_requests(&self) {
        lock(&self.state).requests.clear();
    }
    /// Turn request recording off (benchmarks) or on.
    pub fn set_recording(&self, on: bool) {
        lock(&self.state).record = on;
    }
    /// How many different valid provider JWTs were presented.
    pub fn distinct_provider_tokens(&self) -> usize {
        lock(&self.state).distinct_tokens.len()
    }
    /// Every later push to `token` gets `status`/`reason` (e.g. 410 Unregistered).
    pub fn fail_token(&self, token: &str, status: u16, reason: &str) {
        lock(&self.state).failed.insert(token.to_ascii_lowercase(), (status, reason.to_string()));
    }
    /// The next pushes to `token` get these replies, in order; then normal service.
    pub fn script_token(&self, token: &str, replies: Vec<ScriptedReply>) {
        lock(&self.state).scripts.entry(token.to_ascii_lowercase()).or_default().extend(replies);
    }
    /// Delay added to every answer.
    pub fn set_latency(&self, latency: Duration) {
        lock(&self.state).latency = latency;
    }
    /// Shift the mock's clock (for `iat` checks) by `secs`.
    pub fn set_clock_offset(&self, secs: i64) {
        lock(&self.state).clock_offset_s = secs;
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
    delay: Duration,
}

fn reject(status: u16, reason: &str) -> Verdict {
    Verdict { status, reason: Some(reason.to_string()), retry_after_s: None, delay: Duration::ZERO }
}

fn is_canonical_uuid(s: &str) -> bool {
    s.len() == 36 && uuid::Uuid::parse_str(s).map(|u| u.hyphenated().to_string() == s).unwrap_or(false)
}

async fn handle(state: Arc<Mutex<State>>, info: Arc<ConnInfo>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes().to_vec(),
        Err(_) => Vec::new(),
    };
    let headers: Vec<(String, String)> =
        parts.headers.iter().map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned())).collect();
    let path = parts.uri.path().to_string();
    let verdict = check(&state, &info, parts.method.as_str(), &path, &parts.headers, &body);
    let apns_id = parts
        .headers
        .get("apns-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_canonical_uuid(v))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let (latency, sandbox) = {
        let mut st = lock(&state);
        if st.record {
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
        (st.latency, st.sandbox)
    };
    let wait = latency + verdict.delay;
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
    let mut resp = match &verdict.reason {
        None => respond(verdict.status, None, Vec::new()),
        Some(reason) => {
            let mut j = serde_json::json!({ "reason": reason });
            if verdict.status == 410 {
                j["timestamp"] = serde_json::json!((now_s() - 3600) * 1000);
            }
            respond(verdict.status, Some("application/json"), j.to_string().into_bytes())
        }
    };
    let h = resp.headers_mut();
    h.insert("apns-id", apns_id.parse().expect("uuid header"));
    if sandbox {
        h.insert("apns-unique-id", uuid::Uuid::new_v4().to_string().parse().expect("uuid header"));
    }
    if let Some(s) = verdict.retry_after_s {
        h.insert("retry-after", s.to_string().parse().expect("retry-after"));
    }
    resp
}

fn check(state: &Mutex<State>, info: &ConnInfo, method: &str, path: &str, headers: &http::HeaderMap, body: &[u8]) -> Verdict {
    if method != "POST" {
        return reject(405, "MethodNotAllowed");
    }
    let Some(token) = path.strip_prefix("/3/device/") else { return reject(404, "BadPath") };
    if token.is_empty() {
        return reject(400, "MissingDeviceToken");
    }
    if token.contains('/') {
        return reject(404, "BadPath");
    }
    if token.len() % 2 != 0 || !(16..=200).contains(&token.len()) || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return reject(400, "BadDeviceToken");
    }
    let token = token.to_ascii_lowercase();
    for name in ["authorization", "apns-push-type", "apns-topic", "apns-priority", "apns-expiration", "apns-id", "apns-collapse-id"] {
        if headers.get_all(name).iter().count() > 1 {
            return reject(400, "DuplicateHeaders");
        }
    }
    let hv = |name: &str| headers.get(name).map(|v| v.to_str().unwrap_or("\u{fffd}").to_string());
    let now = now_s() + lock(state).clock_offset_s;

    // Authentication: a provider token, else a verified client certificate.
    if let Some(auth) = hv("authorization") {
        let jwt = match auth.split_once(' ') {
            Some((scheme, jwt)) if scheme.eq_ignore_ascii_case("bearer") && !jwt.trim().is_empty() => jwt.trim().to_string(),
            _ => return reject(403, "MissingProviderToken"),
        };
        if let Some(v) = check_jwt(state, &jwt, now, info.id) {
            return v;
        }
    } else if !info.client_cert {
        return reject(403, "MissingProviderToken");
    }

    let Some(push_type) = hv("apns-push-type") else { return reject(400, "InvalidPushType") };
    if !PUSH_TYPES.contains(&push_type.as_str()) {
        return reject(400, "InvalidPushType");
    }
    let Some(topic) = hv("apns-topic") else { return reject(400, "MissingTopic") };
    let bundle = if push_type == "voip" {
        match topic.strip_suffix(".voip") {
            Some(b) => b.to_string(),
            None => return reject(400, "BadTopic"),
        }
    } else {
        if topic.ends_with(".voip") {
            return reject(400, "BadTopic");
        }
        topic.clone()
    };
    if !lock(state).bundles.contains(&bundle) {
        return reject(400, "TopicDisallowed");
    }
    if let Some(p) = hv("apns-priority") {
        match p.as_str() {
            "1" | "5" => {}
            "10" if push_type != "background" => {}
            _ => return reject(400, "BadPriority"),
        }
    }
    if let Some(e) = hv("apns-expiration") {
        if e.is_empty() || !e.bytes().all(|b| b.is_ascii_digit()) || e.parse::<i64>().is_err() {
            return reject(400, "BadExpirationDate");
        }
    }
    if let Some(id) = hv("apns-id") {
        if !is_canonical_uuid(&id) {
            return reject(400, "BadMessageId");
        }
    }
    if let Some(c) = hv("apns-collapse-id") {
        if c.len() > 64 {
            return reject(400, "BadCollapseId");
        }
    }
    if body.is_empty() {
        return reject(400, "PayloadEmpty");
    }
    let limit = if push_type == "voip" { 5120 } else { 4096 };
    if body.len() > limit {
        return reject(413, "PayloadTooLarge");
    }
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) if v.is_object() => {}
        _ => return reject(400, "BadPayload"),
    }

    let mut st = lock(state);
    if let Some((status, reason)) = st.failed.get(&token) {
        return reject(*status, reason);
    }
    if let Some(q) = st.scripts.get_mut(&token) {
        if let Some(r) = q.pop_front() {
            return Verdict { status: r.status, reason: r.reason, retry_after_s: r.retry_after_s, delay: r.delay.unwrap_or_default() };
        }
    }
    Verdict { status: 200, reason: None, retry_after_s: None, delay: Duration::ZERO }
}

/// `None` when the provider token is acceptable, else the rejection.
fn check_jwt(state: &Mutex<State>, jwt: &str, now: i64, connection: u64) -> Option<Verdict> {
    let Some((header, claims, signing_input, sig)) = split_jwt(jwt) else {
        return Some(reject(403, "InvalidProviderToken"));
    };
    if header.get("alg").and_then(|v| v.as_str()) != Some("ES256") {
        return Some(reject(403, "InvalidProviderToken"));
    }
    let (Some(kid), Some(iss), Some(iat)) =
        (header.get("kid").and_then(|v| v.as_str()), claims.get("iss").and_then(|v| v.as_str()), claims.get("iat").and_then(|v| v.as_i64()))
    else {
        return Some(reject(403, "InvalidProviderToken"));
    };
    let mut st = lock(state);
    if !st.verified.contains(jwt) {
        let Some(key) = st.keys.get(kid) else { return Some(reject(403, "InvalidProviderToken")) };
        if key.team_id != iss {
            return Some(reject(403, "InvalidProviderToken"));
        }
        let dk = jsonwebtoken::DecodingKey::from_ec_der(&key.public_raw);
        match jsonwebtoken::crypto::verify(&sig, signing_input.as_bytes(), &dk, jsonwebtoken::Algorithm::ES256) {
            Ok(true) => {}
            _ => return Some(reject(403, "InvalidProviderToken")),
        }
        st.verified.insert(jwt.to_string());
    }
    if iat > now + 300 {
        return Some(reject(403, "InvalidProviderToken"));
    }
    if now - iat > 3600 {
        return Some(reject(403, "ExpiredProviderToken"));
    }
    if let Some(limit) = st.token_update_limit {
        // Tracked per connection: each relay node (own connection, own
        // token) is fine; one connection changing its token too often is not.
        let slot = format!("{iss}#{connection}");
        match st.team_tokens.get(&slot) {
            Some((current, since)) if current != jwt => {
                if now - since < limit.as_secs() as i64 {
                    return Some(reject(429, "TooManyProviderTokenUpdates"));
                }
                st.team_tokens.insert(slot, (jwt.to_string(), now));
            }
            Some(_) => {}
            None => {
                st.team_tokens.insert(slot, (jwt.to_string(), now));
            }
        }
    }
    st.distinct_tokens.insert(jwt.to_string());
    None
}

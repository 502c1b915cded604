//! Mock Huawei Push Kit (HMS Core push server API v1) and the Huawei OAuth
//! token endpoint on one HTTPS server (HTTP/1.1 and h2) on 127.0.0.1,
//! checking like Huawei does:
//!
//! - `POST /oauth2/v3/token` takes the client-credentials grant
//!   (`grant_type=client_credentials&client_id=…&client_secret=…`, form
//!   encoded) of an app registered with [`MockHms::register_app`], and answers
//!   `{"access_token":…,"expires_in":3600,"token_type":"Bearer"}`. Refusals
//!   are HTTP 400 with Huawei's `{"error":…,"sub_error":…,"error_description":…}`
//!   (1101/12304 wrong or unknown client, 1101/20182 bad `grant_type`,
//!   1102/20181 empty `grant_type`, 1102/20001 empty `client_id`, 1101/20171
//!   empty `client_secret`).
//! - `POST /v1/{appId}/messages:send` checks `Authorization: Bearer <token>`
//!   (HTTP 401 `80200001` missing, unknown or another app's token, `80200003`
//!   expired) and the message schema. The real service accepts a much larger
//!   schema (notification messages, topics, conditions, several tokens, …);
//!   the mock accepts only the data message to one token that a relay sends,
//!   and refuses anything else with HTTP 400 `80100001` naming the offending
//!   field. The real service defaults `android.urgency` (NORMAL) and
//!   `android.ttl` (86400s); the mock requires both, since a VoIP wake-up
//!   that relies on the defaults is a bug. Like Huawei it limits `data` to
//!   4096 bytes (`80300008`), `ttl` to 15 days and `collapse_key` to
//!   -1..=100 (`80100013`). Success is HTTP 200 `{"code":"80000000",…}`.
//!
//! Knobs reproduce what the relay must handle: an invalid push token (HTTP
//! 200 with `80300007`), expired access tokens (401 `80200003`), flow control
//! (HTTP 503, optionally with `Retry-After`) and latency.

use super::apns::RecordedRequest;
use super::server::{now_s, parse_form, respond, ConnInfo, Handler, Protocol, Server, LOOPBACK_ANY_PORT};
use super::tls::TestPki;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Success.
pub const CODE_SUCCESS: &str = "80000000";
/// Some request parameters failed the checks (the mock's schema errors).
pub const CODE_PARAMETER_ERROR: &str = "80100001";
/// Invalid `android.collapse_key`.
pub const CODE_INVALID_COLLAPSE_KEY: &str = "80100013";
/// OAuth authentication error: missing/unknown token, or another app's.
pub const CODE_OAUTH_ERROR: &str = "80200001";
/// The access token has expired.
pub const CODE_TOKEN_EXPIRED: &str = "80200003";
/// All the push tokens are invalid (one token: that token is dead).
pub const CODE_ALL_TOKENS_INVALID: &str = "80300007";
/// The message body (without tokens) is over 4096 bytes.
pub const CODE_MESSAGE_TOO_BIG: &str = "80300008";
/// System internal error / busy (the mock's flow-control body).
pub const CODE_SYSTEM_BUSY: &str = "81000001";

/// Largest `message.data` Huawei accepts, in bytes.
pub const MAX_DATA_BYTES: usize = 4096;
/// Largest `android.ttl` Huawei accepts (15 days), in seconds.
pub const MAX_TTL_S: u64 = 1_296_000;

struct AccessToken {
    client_id: String,
    expires_at: i64,
}

#[derive(Default)]
struct State {
    /// client id (= app id) → client secret
    clients: HashMap<String, String>,
    access_tokens: HashMap<String, AccessToken>,
    token_lifetime_s: i64,
    token_requests: u64,
    tokens_issued: u64,
    invalid_tokens: HashSet<String>,
    flow_control: u32,
    flow_control_retry_after_s: Option<u64>,
    latency: Duration,
    record: bool,
    requests: Vec<RecordedRequest>,
    next_id: u64,
}

fn lock(s: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// The mock Huawei Push Kit + OAuth server. Dropping it stops it.
pub struct MockHms {
    server: Server,
    state: Arc<Mutex<State>>,
    pki: Arc<TestPki>,
}

impl MockHms {
    pub async fn start() -> MockHms {
        Self::start_with_pki(TestPki::generate()).await
    }

    /// Start with an existing PKI (so one CA covers every mock).
    pub async fn start_with_pki(pki: Arc<TestPki>) -> MockHms {
        Self::start_on(LOOPBACK_ANY_PORT, pki).await.expect("bind mock HMS on 127.0.0.1")
    }

    /// Like [`MockHms::start_with_pki`], on a chosen address (the standalone binary).
    pub async fn start_on(bind: std::net::SocketAddr, pki: Arc<TestPki>) -> std::io::Result<MockHms> {
        let state = Arc::new(Mutex::new(State { token_lifetime_s: 3600, record: true, next_id: 1, ..Default::default() }));
        let s2 = state.clone();
        let handler: Handler = Arc::new(move |info, req| Box::pin(handle(s2.clone(), info, req)));
        let server = Server::start(bind, pki.server_config(&[b"h2", b"http/1.1"], false), Protocol::Auto, handler).await?;
        Ok(MockHms { server, state, pki })
    }

    /// Push API base, e.g. `https://127.0.0.1:40123`: sends go to
    /// `{base_url}/v1/{appId}/messages:send`.
    pub fn base_url(&self) -> String {
        format!("https://{}", self.server.addr)
    }
    /// The OAuth endpoint, `{base_url}/oauth2/v3/token`.
    pub fn token_url(&self) -> String {
        format!("{}/oauth2/v3/token", self.base_url())
    }
    pub fn ca_pem(&self) -> String {
        self.pki.ca_pem()
    }
    pub fn pki(&self) -> Arc<TestPki> {
        self.pki.clone()
    }
    /// Register an app: its OAuth client id (which is also the app id in
    /// the send path) and client secret (the "App secret").
    pub fn register_app(&self, client_id: &str, client_secret: &str) {
        lock(&self.state).clients.insert(client_id.to_string(), client_secret.to_string());
    }
    /// Requests to the token endpoint so far, granted or refused.
    pub fn token_requests(&self) -> u64 {
        lock(&self.state).token_requests
    }
    /// Access tokens granted so far.
    pub fn tokens_issued(&self) -> u64 {
        lock(&self.state).tokens_issued
    }
    /// `expires_in` of later grants (default 3600, as Huawei).
    pub fn set_token_lifetime(&self, seconds: i64) {
        lock(&self.state).token_lifetime_s = seconds;
    }
    /// Every access token issued so far expires now: the next send with one
    /// gets HTTP 401 `80200003`; a fresh token from the token endpoint works.
    pub fn expire_access_tokens(&self) {
        let past = now_s() - 1;
        for t in lock(&self.state).access_tokens.values_mut() {
            t.expires_at = t.expires_at.min(past);
        }
    }
    /// Every later (valid) send to this push token gets HTTP 200 with
    /// `{"code":"80300007","msg":"All the tokens are invalid"}`.
    pub fn invalidate_token(&self, token: &str) {
        lock(&self.state).invalid_tokens.insert(token.to_string());
    }
    /// The next `n` sends get HTTP 503 (flow control) with body
    /// `{"code":"81000001","msg":"system busy"}` and, if given, a
    /// `Retry-After` header. Flow control comes before authentication and
    /// the body checks, as at Huawei's gateway: any send counts.
    pub fn flow_control(&self, n: u32, retry_after_s: Option<u64>) {
        let mut st = lock(&self.state);
        st.flow_control = n;
        st.flow_control_retry_after_s = retry_after_s;
    }
    /// Delay added to every answer.
    pub fn set_latency(&self, latency: Duration) {
        lock(&self.state).latency = latency;
    }
    /// All requests (token grants and sends), in arrival order; `reason` is
    /// the Huawei result code (sends) or `error/sub_error` (token refusals).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state).requests.clone()
    }
    /// Only the `messages:send` requests.
    pub fn sends(&self) -> Vec<RecordedRequest> {
        self.requests().into_iter().filter(|r| r.path.ends_with("/messages:send")).collect()
    }
    pub fn clear_requests(&self) {
        lock(&self.state).requests.clear();
    }
    /// Turn request recording off (benchmarks) or on.
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

struct Answer {
    status: u16,
    body: Value,
    reason: Option<String>,
    retry_after_s: Option<u64>,
}

fn answer(status: u16, body: Value, reason: Option<String>) -> Answer {
    Answer { status, body, reason, retry_after_s: None }
}

/// A send reply: `{"code":…,"msg":…}`.
fn push_reply(status: u16, code: &str, msg: &str) -> Answer {
    answer(status, json!({"code": code, "msg": msg}), Some(code.to_string()))
}

fn bad_request(msg: &str) -> Answer {
    push_reply(400, CODE_PARAMETER_ERROR, msg)
}

fn oauth_error(status: u16, error: u32, sub_error: u32, description: &str) -> Answer {
    answer(status, json!({"error": error, "sub_error": sub_error, "error_description": description}), Some(format!("{error}/{sub_error}")))
}

async fn handle(state: Arc<Mutex<State>>, info: Arc<ConnInfo>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
    let path = parts.uri.path().to_string();
    let ans = if path == "/oauth2/v3/token" {
        token_endpoint(&state, parts.method.as_str(), &parts.headers, &body)
    } else {
        send_endpoint(&state, parts.method.as_str(), &path, &parts.headers, &body)
    };
    let latency = {
        let mut st = lock(&state);
        if st.record {
            st.requests.push(RecordedRequest {
                connection: info.id,
                client_cert: info.client_cert,
                method: parts.method.to_string(),
                path,
                headers: parts.headers.iter().map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned())).collect(),
                body,
                status: ans.status,
                reason: ans.reason.clone(),
            });
        }
        st.latency
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let mut resp = respond(ans.status, Some("application/json;charset=UTF-8"), ans.body.to_string().into_bytes());
    if let Some(s) = ans.retry_after_s {
        resp.headers_mut().insert("retry-after", s.to_string().parse().expect("retry-after"));
    }
    resp
}

fn token_endpoint(state: &Mutex<State>, method: &str, headers: &http::HeaderMap, body: &[u8]) -> Answer {
    lock(state).token_requests += 1;
    if method != "POST" {
        return oauth_error(405, 1102, 20181, "method must be POST");
    }
    let ct = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    if !ct.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded") {
        return oauth_error(400, 1102, 20181, "content type must be application/x-www-form-urlencoded");
    }
    let Some(form) = parse_form(body) else { return oauth_error(400, 1102, 20181, "malformed form body") };
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    match field("grant_type") {
        "" => return oauth_error(400, 1102, 20181, "grant_type is empty"),
        "client_credentials" => {}
        _ => return oauth_error(400, 1101, 20182, "invalid grant_type"),
    }
    if field("client_id").is_empty() {
        return oauth_error(400, 1102, 20001, "client_id is empty");
    }
    if field("client_secret").is_empty() {
        return oauth_error(400, 1101, 20171, "client_secret is empty");
    }
    let mut st = lock(state);
    if st.clients.get(field("client_id")).map(String::as_str) != Some(field("client_secret")) {
        return oauth_error(400, 1101, 12304, "invalid client_secret");
    }
    let token = format!("DgEAAM{}", uuid::Uuid::new_v4().simple());
    let lifetime = st.token_lifetime_s;
    st.access_tokens.insert(token.clone(), AccessToken { client_id: field("client_id").to_string(), expires_at: now_s() + lifetime });
    st.tokens_issued += 1;
    answer(200, json!({"access_token": token, "expires_in": lifetime, "token_type": "Bearer"}), None)
}

fn unknown_field(obj: &Map<String, Value>, allowed: &[&str], at: &str) -> Option<Answer> {
    obj.keys()
        .find(|k| !allowed.contains(&k.as_str()))
        .map(|k| bad_request(&format!("unknown field '{at}{k}' (the mock accepts only {allowed:?} there)")))
}

/// `^\d+s$`, at most [`MAX_TTL_S`].
fn valid_ttl(ttl: &str) -> bool {
    let Some(secs) = ttl.strip_suffix('s') else { return false };
    !secs.is_empty() && secs.bytes().all(|b| b.is_ascii_digit()) && secs.parse::<u64>().map(|s| s <= MAX_TTL_S).unwrap_or(false)
}

fn send_endpoint(state: &Mutex<State>, method: &str, path: &str, headers: &http::HeaderMap, body: &[u8]) -> Answer {
    let Some(app_id) = path.strip_prefix("/v1/").and_then(|p| p.strip_suffix("/messages:send")) else {
        return push_reply(404, "80100002", "bad URI");
    };
    if app_id.is_empty() || app_id.contains('/') {
        return push_reply(404, "80100002", "bad URI");
    }
    if method != "POST" {
        return push_reply(405, CODE_PARAMETER_ERROR, "method must be POST");
    }
    {
        let mut st = lock(state);
        if st.flow_control > 0 {
            st.flow_control -= 1;
            let mut a = push_reply(503, CODE_SYSTEM_BUSY, "system busy");
            a.retry_after_s = st.flow_control_retry_after_s;
            return a;
        }
        let bearer = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(s, _)| s.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim().to_string());
        match bearer.as_ref().and_then(|b| st.access_tokens.get(b)) {
            None => return push_reply(401, CODE_OAUTH_ERROR, "OAuth authentication error"),
            Some(t) if t.client_id != app_id => return push_reply(401, CODE_OAUTH_ERROR, "OAuth authentication error"),
            Some(t) if t.expires_at <= now_s() => return push_reply(401, CODE_TOKEN_EXPIRED, "OAuth token expired"),
            Some(_) => {}
        }
    }
    let ct = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    if !ct.to_ascii_lowercase().starts_with("application/json") {
        return bad_request("Content-Type must be application/json");
    }
    let Ok(v) = serde_json::from_slice::<Value>(body) else { return bad_request("body is not valid JSON") };
    let Some(top) = v.as_object() else { return bad_request("body must be a JSON object") };
    if let Some(a) = unknown_field(top, &["validate_only", "message"], "") {
        return a;
    }
    if top.get("validate_only").is_some_and(|v| !v.is_boolean()) {
        return bad_request("validate_only must be a boolean");
    }
    let Some(msg) = top.get("message") else { return bad_request("message is missing") };
    let Some(msg) = msg.as_object() else { return bad_request("message must be an object") };
    if msg.contains_key("notification") {
        return bad_request("message.notification is not accepted: the relay must send data messages only");
    }
    if msg.contains_key("topic") || msg.contains_key("condition") {
        return bad_request("only message.token targets are accepted (no topic or condition)");
    }
    if let Some(a) = unknown_field(msg, &["data", "android", "token"], "message.") {
        return a;
    }
    let Some(data) = msg.get("data") else { return bad_request("message.data is missing") };
    let Some(data) = data.as_str() else { return bad_request("message.data must be a string (JSON text)") };
    if data.len() > MAX_DATA_BYTES {
        return push_reply(400, CODE_MESSAGE_TOO_BIG, "message body size exceeds the limit of 4096 bytes");
    }
    if serde_json::from_str::<Value>(data).is_err() {
        return bad_request("message.data must be JSON text");
    }
    let Some(android) = msg.get("android") else { return bad_request("message.android is missing") };
    let Some(android) = android.as_object() else { return bad_request("message.android must be an object") };
    if let Some(a) = unknown_field(android, &["urgency", "category", "ttl", "collapse_key"], "message.android.") {
        return a;
    }
    match android.get("urgency") {
        None => return bad_request("message.android.urgency is missing (HIGH or NORMAL)"),
        Some(u) if !matches!(u.as_str(), Some("HIGH" | "NORMAL")) => {
            return bad_request(&format!("message.android.urgency must be HIGH or NORMAL, not {u}"))
        }
        Some(_) => {}
    }
    if let Some(c) = android.get("category") {
        if !matches!(c.as_str(), Some("VOIP" | "PLAY_VOICE")) {
            return bad_request(&format!("message.android.category must be VOIP (or PLAY_VOICE), not {c}"));
        }
    }
    match android.get("ttl") {
        None => return bad_request("message.android.ttl is missing (e.g. \"30s\")"),
        Some(t) if !t.as_str().map(valid_ttl).unwrap_or(false) => {
            return bad_request(&format!("message.android.ttl must match ^\\d+s$ and be at most {MAX_TTL_S}s, not {t}"))
        }
        Some(_) => {}
    }
    if let Some(k) = android.get("collapse_key") {
        if !k.as_i64().is_some_and(|k| (-1..=100).contains(&k)) {
            return push_reply(400, CODE_INVALID_COLLAPSE_KEY, "message.android.collapse_key must be an integer in -1..=100");
        }
    }
    let Some(tokens) = msg.get("token") else { return bad_request("message.token is missing") };
    let Some(tokens) = tokens.as_array() else { return bad_request("message.token must be an array of strings") };
    if tokens.len() != 1 {
        return bad_request(&format!("message.token must hold exactly one token, not {}", tokens.len()));
    }
    let Some(token) = tokens[0].as_str().filter(|t| !t.is_empty()) else {
        return bad_request("message.token[0] must be a non-empty string");
    };

    let mut st = lock(state);
    let request_id = format!("{}{:06}", now_s() * 1000, st.next_id);
    st.next_id += 1;
    if st.invalid_tokens.contains(token) {
        let mut a = push_reply(200, CODE_ALL_TOKENS_INVALID, "All the tokens are invalid");
        a.body["requestId"] = json!(request_id);
        return a;
    }
    let mut a = push_reply(200, CODE_SUCCESS, "Success");
    a.body["requestId"] = json!(request_id);
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::client;

    const APP: &str = "100200300";
    const SECRET: &str = "s3cr3t+/=";

    async fn mock() -> MockHms {
        let m = MockHms::start().await;
        m.register_app(APP, SECRET);
        m
    }

    fn form(id: &str, secret: &str) -> String {
        let enc = |s: &str| s.bytes().map(|b| format!("%{b:02X}")).collect::<String>();
        format!("grant_type=client_credentials&client_id={}&client_secret={}", enc(id), enc(secret))
    }

    async fn get_token(m: &MockHms, c: &reqwest::Client) -> String {
        let r = c.post(m.token_url()).header("content-type", "application/x-www-form-urlencoded").body(form(APP, SECRET)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        assert_eq!(v["expires_in"], 3600);
        assert_eq!(v["token_type"], "Bearer");
        v["access_token"].as_str().unwrap().to_string()
    }

    fn message(token: &str) -> Value {
        json!({
            "validate_only": false,
            "message": {
                "data": "{\"type\":\"call\",\"call_id\":\"c-1\"}",
                "android": {"urgency": "HIGH", "category": "VOIP", "ttl": "30s", "collapse_key": -1},
                "token": [token]
            }
        })
    }

    async fn send(m: &MockHms, c: &reqwest::Client, bearer: Option<&str>, body: &Value) -> (u16, Value, Option<String>) {
        send_to(m, c, APP, bearer, body).await
    }

    async fn send_to(m: &MockHms, c: &reqwest::Client, app: &str, bearer: Option<&str>, body: &Value) -> (u16, Value, Option<String>) {
        let mut rb = c
            .post(format!("{}/v1/{app}/messages:send", m.base_url()))
            .header("content-type", "application/json;charset=utf-8")
            .body(body.to_string());
        if let Some(b) = bearer {
            rb = rb.header("authorization", format!("Bearer {b}"));
        }
        let r = rb.send().await.unwrap();
        let status = r.status().as_u16();
        let ra = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
        let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        (status, v, ra)
    }

    #[tokio::test]
    async fn token_grant_and_refusals() {
        let m = mock().await;
        let c = client(&m.pki());
        let t = get_token(&m, &c).await;
        assert!(!t.is_empty());
        let post = |body: String| c.post(m.token_url()).header("content-type", "application/x-www-form-urlencoded").body(body).send();
        let r = post(form(APP, "wrong")).await.unwrap();
        assert_eq!(r.status(), 400);
        let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        assert_eq!(v, json!({"error": 1101, "sub_error": 12304, "error_description": "invalid client_secret"}));
        let r = post(form("999", SECRET)).await.unwrap();
        assert_eq!(r.status(), 400);
        let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        assert_eq!((v["error"].as_u64(), v["sub_error"].as_u64()), (Some(1101), Some(12304)));
        let r = post(format!("grant_type=password&client_id={APP}&client_secret=x")).await.unwrap();
        assert_eq!(r.status(), 400);
        let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        assert_eq!((v["error"].as_u64(), v["sub_error"].as_u64()), (Some(1101), Some(20182)));
        assert_eq!(m.token_requests(), 4);
        assert_eq!(m.tokens_issued(), 1);
    }

    #[tokio::test]
    async fn send_success_and_recording() {
        let m = mock().await;
        let c = client(&m.pki());
        let t = get_token(&m, &c).await;
        let (s, v, _) = send(&m, &c, Some(&t), &message("tok-1")).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["code"], "80000000");
        assert_eq!(v["msg"], "Success");
        assert!(v["requestId"].as_str().is_some_and(|r| !r.is_empty()));
        let sends = m.sends();
        assert_eq!(sends.len(), 1);
        assert_eq!(sends[0].path, format!("/v1/{APP}/messages:send"));
        assert_eq!(sends[0].header("authorization"), Some(format!("Bearer {t}").as_str()));
        let body: Value = serde_json::from_slice(&sends[0].body).unwrap();
        assert_eq!(body["message"]["token"][0], "tok-1");
        assert_eq!(sends[0].reason.as_deref(), Some("80000000"));
        assert_eq!(m.requests().len(), 2);
        m.clear_requests();
        assert!(m.requests().is_empty());
    }

    #[tokio::test]
    async fn auth_errors() {
        let m = mock().await;
        m.register_app("other-app", "x");
        let c = client(&m.pki());
        let oauth = json!({"code": "80200001", "msg": "OAuth authentication error"});
        let (s, v, _) = send(&m, &c, None, &message("a")).await;
        assert_eq!((s, v), (401, oauth.clone()));
        let (s, v, _) = send(&m, &c, Some("nope"), &message("a")).await;
        assert_eq!((s, v), (401, oauth.clone()));
        let t = get_token(&m, &c).await;
        let (s, v, _) = send_to(&m, &c, "other-app", Some(&t), &message("a")).await;
        assert_eq!((s, v), (401, oauth));
        m.expire_access_tokens();
        let (s, v, _) = send(&m, &c, Some(&t), &message("a")).await;
        assert_eq!((s, v), (401, json!({"code": "80200003", "msg": "OAuth token expired"})));
        let fresh = get_token(&m, &c).await;
        let (s, v, _) = send(&m, &c, Some(&fresh), &message("a")).await;
        assert_eq!((s, v["code"].as_str()), (200, Some("80000000")));
    }

    #[tokio::test]
    async fn schema_errors() {
        let m = mock().await;
        let c = client(&m.pki());
        let t = get_token(&m, &c).await;
        type Mutate = Box<dyn Fn(&mut Value)>;
        let cases: Vec<(Mutate, &str)> = vec![
            (Box::new(|v| v["extra"] = json!(1)), "80100001"),
            (Box::new(|v| v["validate_only"] = json!("yes")), "80100001"),
            (Box::new(|v| v["message"]["notification"] = json!({"title": "x"})), "80100001"),
            (Box::new(|v| v["message"]["topic"] = json!("news")), "80100001"),
            (Box::new(|v| v["message"]["apns"] = json!({})), "80100001"),
            (Box::new(|v| v["message"]["android"]["bi_tag"] = json!("x")), "80100001"),
            (Box::new(|v| drop(v["message"].as_object_mut().unwrap().remove("data"))), "80100001"),
            (Box::new(|v| v["message"]["data"] = json!({"a": "b"})), "80100001"),
            (Box::new(|v| v["message"]["data"] = json!("not json")), "80100001"),
            (Box::new(|v| v["message"]["token"] = json!(["a", "b"])), "80100001"),
            (Box::new(|v| v["message"]["token"] = json!([])), "80100001"),
            (Box::new(|v| v["message"]["token"] = json!([""])), "80100001"),
            (Box::new(|v| v["message"]["token"] = json!("a")), "80100001"),
            (Box::new(|v| v["message"]["android"]["ttl"] = json!("30")), "80100001"),
            (Box::new(|v| v["message"]["android"]["ttl"] = json!("1.5s")), "80100001"),
            (Box::new(|v| v["message"]["android"]["ttl"] = json!(30)), "80100001"),
            (Box::new(|v| v["message"]["android"]["ttl"] = json!("1296001s")), "80100001"),
            (Box::new(|v| v["message"]["android"]["urgency"] = json!("high")), "80100001"),
            (Box::new(|v| drop(v["message"]["android"].as_object_mut().unwrap().remove("urgency"))), "80100001"),
            (Box::new(|v| v["message"]["android"]["category"] = json!("IM")), "80100001"),
            (Box::new(|v| v["message"]["android"]["collapse_key"] = json!(101)), "80100013"),
            (Box::new(|v| v["message"]["data"] = json!(format!("\"{}\"", "x".repeat(4095)))), "80300008"),
        ];
        for (i, (mutate, code)) in cases.iter().enumerate() {
            let mut body = message("tok");
            mutate(&mut body);
            let (s, v, _) = send(&m, &c, Some(&t), &body).await;
            assert_eq!((s, v["code"].as_str()), (400, Some(*code)), "case {i}: {v}");
            assert!(v["msg"].as_str().is_some_and(|m| !m.is_empty()), "case {i}");
        }
        // Optional fields may be left out; a 4096-byte data is still fine.
        let mut body = message("tok");
        body["message"]["android"].as_object_mut().unwrap().remove("category");
        body["message"]["android"].as_object_mut().unwrap().remove("collapse_key");
        body.as_object_mut().unwrap().remove("validate_only");
        body["message"]["data"] = json!(format!("\"{}\"", "x".repeat(4094)));
        let (s, v, _) = send(&m, &c, Some(&t), &body).await;
        assert_eq!((s, v["code"].as_str()), (200, Some("80000000")), "{v}");
    }

    #[tokio::test]
    async fn knobs() {
        let m = mock().await;
        let c = client(&m.pki());
        let t = get_token(&m, &c).await;
        m.invalidate_token("dead");
        let (s, v, _) = send(&m, &c, Some(&t), &message("dead")).await;
        assert_eq!((s, v["code"].as_str(), v["msg"].as_str()), (200, Some("80300007"), Some("All the tokens are invalid")));
        let (s, v, _) = send(&m, &c, Some(&t), &message("alive")).await;
        assert_eq!((s, v["code"].as_str()), (200, Some("80000000")));

        m.flow_control(2, Some(7));
        for _ in 0..2 {
            let (s, v, ra) = send(&m, &c, Some(&t), &message("alive")).await;
            assert_eq!((s, v["code"].as_str(), ra.as_deref()), (503, Some("81000001"), Some("7")));
        }
        let (s, _, _) = send(&m, &c, Some(&t), &message("alive")).await;
        assert_eq!(s, 200);
        m.flow_control(1, None);
        let (s, _, ra) = send(&m, &c, Some(&t), &message("alive")).await;
        assert_eq!((s, ra), (503, None));

        m.set_latency(Duration::from_millis(200));
        let start = std::time::Instant::now();
        let (s, _, _) = send(&m, &c, Some(&t), &message("alive")).await;
        assert_eq!(s, 200);
        assert!(start.elapsed() >= Duration::from_millis(200));
    }
}

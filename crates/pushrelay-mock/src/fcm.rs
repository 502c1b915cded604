//! Mock FCM HTTP v1 and Google OAuth token endpoint on one HTTPS server
//! (HTTP/1.1 and h2) on 127.0.0.1, checking like Google does
//! (protocol.md §5): `POST /token` takes the JWT-bearer grant, verifies the
//! RS256 assertion with the registered service account's public key and the
//! `iss`/`aud`/`scope`/`iat`/`exp` claims; `POST
//! /v1/projects/{project}/messages:send` checks the bearer token and the
//! message schema, answering `google.rpc.Status` errors with `FcmError`
//! details. Per-token scripting reproduces UNREGISTERED, QUOTA_EXCEEDED,
//! UNAVAILABLE, INTERNAL, …

use super::apns::RecordedRequest;
use super::server::{now_s, parse_form, respond, split_jwt, ConnInfo, Handler, Protocol, Server, LOOPBACK_ANY_PORT};
use super::tls::TestPki;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey, LineEnding};
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const FCM_SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// A scripted `messages:send` answer.
#[derive(Clone, Debug)]
pub struct FcmReply {
    pub status: u16,
    /// `FcmError.errorCode` put in `details` (None: no FcmError detail).
    pub error_code: Option<String>,
    /// `google.rpc.Status.status`.
    pub rpc_status: String,
    pub message: String,
    pub retry_after_s: Option<u64>,
    pub delay: Option<Duration>,
}

impl FcmReply {
    pub fn ok() -> Self {
        Self { status: 200, error_code: None, rpc_status: "OK".into(), message: String::new(), retry_after_s: None, delay: None }
    }
    fn err(status: u16, code: Option<&str>, rpc: &str, msg: &str) -> Self {
        Self { status, error_code: code.map(str::to_string), rpc_status: rpc.into(), message: msg.into(), retry_after_s: None, delay: None }
    }
    pub fn unregistered() -> Self {
        Self::err(404, Some("UNREGISTERED"), "NOT_FOUND", "Requested entity was not found.")
    }
    pub fn invalid_argument(message: &str) -> Self {
        Self::err(400, Some("INVALID_ARGUMENT"), "INVALID_ARGUMENT", message)
    }
    pub fn invalid_registration_token() -> Self {
        Self::invalid_argument("The registration token is not a valid FCM registration token")
    }
    pub fn sender_id_mismatch() -> Self {
        Self::err(403, Some("SENDER_ID_MISMATCH"), "PERMISSION_DENIED", "SenderId mismatch")
    }
    pub fn quota_exceeded() -> Self {
        Self::err(429, Some("QUOTA_EXCEEDED"), "RESOURCE_EXHAUSTED", "Quota exceeded for quota metric 'Send messages'")
    }
    pub fn unavailable() -> Self {
        Self::err(503, Some("UNAVAILABLE"), "UNAVAILABLE", "The service is currently unavailable.")
    }
    pub fn internal() -> Self {
        Self::err(500, Some("INTERNAL"), "INTERNAL", "Internal error encountered.")
    }
    pub fn third_party_auth_error() -> Self {
        Self::err(401, Some("THIRD_PARTY_AUTH_ERROR"), "UNAUTHENTICATED", "Auth error from APNS or Web Push Service")
    }
    /// A 401 without an FcmError detail: an expired/revoked access token.
    pub fn unauthenticated() -> Self {
        Self::err(
            401,
            None,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
        )
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

struct Account {
    project_id: String,
    private_key_id: Option<String>,
    key: jsonwebtoken::DecodingKey,
}

struct AccessToken {
    project_id: String,
    expires_at: i64,
}

#[derive(Default)]
struct State {
    token_uri: String,
    accounts: HashMap<String, Account>,
    access_tokens: HashMap<String, AccessToken>,
    token_lifetime_s: i64,
    grants: u64,
    grant_failures: u64,
    failed: HashMap<String, FcmReply>,
    scripts: HashMap<String, VecDeque<FcmReply>>,
    latency: Duration,
    record: bool,
    requests: Vec<RecordedRequest>,
    next_id: u64,
}

fn lock(s: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// The mock FCM + OAuth server. Dropping it stops it.
pub struct MockFcm {
    server: Server,
    state: Arc<Mutex<State>>,
    pki: Arc<TestPki>,
}

impl MockFcm {
    pub async fn start() -> MockFcm {
        Self::start_with_pki(TestPki::generate()).await
    }

    /// Start with an existing PKI (so one CA covers APNs and FCM mocks).
    pub async fn start_with_pki(pki: Arc<TestPki>) -> MockFcm {
        Self::start_on(LOOPBACK_ANY_PORT, pki).await.expect("bind mock FCM on 127.0.0.1")
    }

    /// Like [`MockFcm::start_with_pki`], on a chosen address (the standalone binary).
    pub async fn start_on(bind: std::net::SocketAddr, pki: Arc<TestPki>) -> std::io::Result<MockFcm> {
        let state = Arc::new(Mutex::new(State { token_lifetime_s: 3599, record: true, next_id: 1, ..Default::default() }));
        let s2 = state.clone();
        let handler: Handler = Arc::new(move |info, req| Box::pin(handle(s2.clone(), info, req)));
        let server = Server::start(bind, pki.server_config(&[b"h2", b"http/1.1"], false), Protocol::Auto, handler).await?;
        let m = MockFcm { server, state, pki };
        lock(&m.state).token_uri = m.token_uri();
        Ok(m)
    }

    /// `fcm.base_url` to configure, e.g. `https://127.0.0.1:40123`.
    pub fn base_url(&self) -> String {
        format!("https://{}", self.server.addr)
    }
    /// The OAuth endpoint; service accounts must carry it as `token_uri`.
    pub fn token_uri(&self) -> String {
        format!("{}/token", self.base_url())
    }
    pub fn ca_pem(&self) -> String {
        self.pki.ca_pem()
    }
    pub fn pki(&self) -> Arc<TestPki> {
        self.pki.clone()
    }
    /// Register a service account from its JSON (the public key is derived
    /// from `private_key`; `client_email` identifies it).
    pub fn register_service_account(&self, json: &str) {
        let v: Value = serde_json::from_str(json).expect("mock: service account JSON");
        let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        let pem = s("private_key").expect("mock: private_key");
        let key = rsa::RsaPrivateKey::from_pkcs8_pem(&pem).expect("mock: private_key must be PKCS#8 RSA");
        let public = rsa::RsaPublicKey::from(&key).to_public_key_pem(LineEnding::LF).expect("public pem");
        let dk = jsonwebtoken::DecodingKey::from_rsa_pem(public.as_bytes()).expect("decoding key");
        lock(&self.state).accounts.insert(
            s("client_email").expect("mock: client_email"),
            Account { project_id: s("project_id").expect("mock: project_id"), private_key_id: s("private_key_id"), key: dk },
        );
    }
    /// Access tokens granted so far.
    pub fn grants_issued(&self) -> u64 {
        lock(&self.state).grants
    }
    /// Grant requests refused so far.
    pub fn grants_refused(&self) -> u64 {
        lock(&self.state).grant_failures
    }
    /// Make every access token issued so far invalid (next sends get 401).
    pub fn revoke_access_tokens(&self) {
        lock(&self.state).access_tokens.clear();
    }
    /// `expires_in` of later grants (default 3599).
    pub fn set_token_lifetime(&self, seconds: i64) {
        lock(&self.state).token_lifetime_s = seconds;
    }
    /// All requests (token grants and sends), in arrival order; `reason` is
    /// the FcmError code / rpc status / OAuth error of a refusal.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state).requests.clone()
    }
    /// Only the `messages:send` requests.
    pub fn sends(&self) -> Vec<RecordedRequest> {
        self.requests().into_iter().filter(|r| r.path.ends_with(":send")).collect()
    }
    pub fn clear_requests(&self) {
        lock(&self.state).requests.clear();
    }
    pub fn set_recording(&self, on: bool) {
        lock(&self.state).record = on;
    }
    /// Every later send to `token` gets `reply`.
    pub fn fail_token(&self, token: &str, reply: FcmReply) {
        lock(&self.state).failed.insert(token.to_string(), reply);
    }
    /// The next sends to `token` get these replies in order.
    pub fn script_token(&self, token: &str, replies: Vec<FcmReply>) {
        lock(&self.state).scripts.entry(token.to_string()).or_default().extend(replies);
    }
    pub fn set_latency(&self, latency: Duration) {
        lock(&self.state).latency = latency;
    }
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
    delay: Duration,
}

fn answer(status: u16, body: Value, reason: Option<String>) -> Answer {
    Answer { status, body, reason, retry_after_s: None, delay: Duration::ZERO }
}

fn rpc_error(status: u16, rpc_status: &str, message: &str, error_code: Option<&str>, extra: Vec<Value>) -> Answer {
    let mut details: Vec<Value> = Vec::new();
    if let Some(c) = error_code {
        details.push(json!({"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": c}));
    }
    details.extend(extra);
    let mut err = json!({"code": status, "message": message, "status": rpc_status});
    if !details.is_empty() {
        err["details"] = Value::Array(details);
    }
    answer(status, json!({ "error": err }), Some(error_code.unwrap_or(rpc_status).to_string()))
}

fn invalid(message: &str, field: Option<&str>) -> Answer {
    let extra = field
        .map(|f| vec![json!({"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [{"field": f, "description": message}]})])
        .unwrap_or_default();
    rpc_error(400, "INVALID_ARGUMENT", message, Some("INVALID_ARGUMENT"), extra)
}

fn oauth_error(status: u16, error: &str, description: &str) -> Answer {
    answer(status, json!({"error": error, "error_description": description}), Some(error.to_string()))
}

async fn handle(state: Arc<Mutex<State>>, info: Arc<ConnInfo>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
    let path = parts.uri.path().to_string();
    let ans = if path == "/token" {
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
    let wait = latency + ans.delay;
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
    let mut resp = respond(ans.status, Some("application/json; charset=UTF-8"), ans.body.to_string().into_bytes());
    if let Some(s) = ans.retry_after_s {
        resp.headers_mut().insert("retry-after", s.to_string().parse().expect("retry-after"));
    }
    resp
}

fn token_endpoint(state: &Mutex<State>, method: &str, headers: &http::HeaderMap, body: &[u8]) -> Answer {
    let ans = grant(state, method, headers, body);
    if ans.status != 200 {
        lock(state).grant_failures += 1;
    }
    ans
}

fn grant(state: &Mutex<State>, method: &str, headers: &http::HeaderMap, body: &[u8]) -> Answer {
    if method != "POST" {
        return oauth_error(405, "invalid_request", "method must be POST");
    }
    let ct = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    if !ct.starts_with("application/x-www-form-urlencoded") {
        return oauth_error(400, "invalid_request", "content type must be application/x-www-form-urlencoded");
    }
    let Some(form) = parse_form(body) else { return oauth_error(400, "invalid_request", "malformed form body") };
    if form.get("grant_type").map(String::as_str) != Some(JWT_BEARER) {
        return oauth_error(400, "unsupported_grant_type", "Invalid grant_type");
    }
    let Some(assertion) = form.get("assertion") else {
        return oauth_error(400, "invalid_request", "Missing required parameter: assertion");
    };
    let Some((header, claims, input, sig)) = split_jwt(assertion) else {
        return oauth_error(400, "invalid_grant", "Invalid JWT: malformed");
    };
    if header.get("alg").and_then(Value::as_str) != Some("RS256") {
        return oauth_error(400, "invalid_grant", "Invalid JWT: alg must be RS256");
    }
    let now = now_s();
    let mut st = lock(state);
    let s = |k: &str| claims.get(k).and_then(Value::as_str).map(str::to_string);
    let Some(iss) = s("iss") else { return oauth_error(400, "invalid_grant", "Invalid JWT: missing iss") };
    let Some(acct) = st.accounts.get(&iss) else {
        return oauth_error(400, "invalid_grant", "Invalid grant: account not found");
    };
    if let (Some(kid), Some(expected)) = (header.get("kid").and_then(Value::as_str), &acct.private_key_id) {
        if kid != expected {
            return oauth_error(400, "invalid_grant", "Invalid JWT Signature.");
        }
    }
    match jsonwebtoken::crypto::verify(&sig, input.as_bytes(), &acct.key, jsonwebtoken::Algorithm::RS256) {
        Ok(true) => {}
        _ => return oauth_error(400, "invalid_grant", "Invalid JWT Signature."),
    }
    if s("aud").as_deref() != Some(st.token_uri.as_str()) {
        return oauth_error(400, "invalid_grant", "Invalid JWT: aud must be the token_uri");
    }
    let scope_ok = s("scope").map(|sc| sc.split(' ').any(|x| x == FCM_SCOPE)).unwrap_or(false);
    if !scope_ok {
        return oauth_error(400, "invalid_scope", "scope must include firebase.messaging");
    }
    let (Some(iat), Some(exp)) = (claims.get("iat").and_then(Value::as_i64), claims.get("exp").and_then(Value::as_i64)) else {
        return oauth_error(400, "invalid_grant", "Invalid JWT: iat and exp are required");
    };
    if exp <= now || exp > iat + 3600 || iat > now + 300 || exp <= iat {
        return oauth_error(
            400,
            "invalid_grant",
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.",
        );
    }
    let project_id = acct.project_id.clone();
    let token = format!("ya29.mock-{}", uuid::Uuid::new_v4().simple());
    let lifetime = st.token_lifetime_s;
    st.access_tokens.insert(token.clone(), AccessToken { project_id, expires_at: now + lifetime });
    st.grants += 1;
    answer(200, json!({"access_token": token, "expires_in": lifetime, "token_type": "Bearer"}), None)
}

const MESSAGE_FIELDS: &[&str] =
    &["name", "data", "notification", "android", "webpush", "apns", "fcm_options", "fcmOptions", "token", "topic", "condition"];
const ANDROID_FIELDS: &[&str] = &[
    "collapse_key",
    "collapseKey",
    "priority",
    "ttl",
    "restricted_package_name",
    "restrictedPackageName",
    "data",
    "notification",
    "fcm_options",
    "fcmOptions",
    "direct_boot_ok",
    "directBootOk",
];

fn unknown_field(obj: &serde_json::Map<String, Value>, allowed: &[&str], at: &str) -> Option<Answer> {
    obj.keys()
        .find(|k| !allowed.contains(&k.as_str()))
        .map(|k| invalid(&format!("Invalid JSON payload received. Unknown name \"{k}\" at '{at}': Cannot find field."), Some(at)))
}

fn valid_ttl(ttl: &str) -> bool {
    let Some(num) = ttl.strip_suffix('s') else { return false };
    let (secs, frac) = num.split_once('.').unwrap_or((num, ""));
    if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    if num.contains('.') && (frac.is_empty() || frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit())) {
        return false;
    }
    secs.parse::<u64>().map(|s| s <= 2_419_200).unwrap_or(false)
}

fn is_reserved_key(k: &str) -> bool {
    matches!(k, "from" | "notification" | "message_type") || k.starts_with("google") || k.starts_with("gcm")
}

fn send_endpoint(state: &Mutex<State>, method: &str, path: &str, headers: &http::HeaderMap, body: &[u8]) -> Answer {
    let Some(project) = path.strip_prefix("/v1/projects/").and_then(|p| p.strip_suffix("/messages:send")) else {
        return rpc_error(404, "NOT_FOUND", "Requested entity was not found.", None, vec![]);
    };
    if method != "POST" {
        return rpc_error(405, "METHOD_NOT_ALLOWED", "method must be POST", None, vec![]);
    }
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(s, _)| s.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_string());
    {
        let st = lock(state);
        let tok = bearer.as_ref().and_then(|b| st.access_tokens.get(b));
        match tok {
            Some(t) if t.expires_at > now_s() => {
                if t.project_id != project {
                    return rpc_error(
                        403,
                        "PERMISSION_DENIED",
                        &format!("Permission 'cloudmessaging.messages.create' denied on resource '//cloudresourcemanager.googleapis.com/projects/{project}'"),
                        None,
                        vec![],
                    );
                }
            }
            _ => {
                let r = FcmReply::unauthenticated();
                return rpc_error(401, &r.rpc_status, &r.message, None, vec![]);
            }
        }
    }
    let ct = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    if !ct.starts_with("application/json") {
        return invalid("Invalid JSON payload received. Content-Type must be application/json.", None);
    }
    let Ok(v) = serde_json::from_slice::<Value>(body) else { return invalid("Invalid JSON payload received.", None) };
    let Some(top) = v.as_object() else { return invalid("Invalid JSON payload received.", None) };
    if let Some(a) = unknown_field(top, &["message", "validate_only", "validateOnly"], "") {
        return a;
    }
    let Some(msg) = top.get("message").and_then(Value::as_object) else {
        return invalid("Request contains an invalid argument.", Some("message"));
    };
    if let Some(a) = unknown_field(msg, MESSAGE_FIELDS, "message") {
        return a;
    }
    let targets = ["token", "topic", "condition"].iter().filter(|k| msg.contains_key(**k)).count();
    if targets != 1 {
        return invalid("Recipient of the message is not set.", Some("message.token"));
    }
    let Some(token) = msg.get("token").and_then(Value::as_str) else {
        return invalid("Only token targets are supported by this mock.", Some("message.token"));
    };
    if token.is_empty() || token.len() > 4096 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        let r = FcmReply::invalid_registration_token();
        return rpc_error(400, "INVALID_ARGUMENT", &r.message, Some("INVALID_ARGUMENT"), vec![]);
    }
    if let Some(data) = msg.get("data") {
        let Some(data) = data.as_object() else {
            return invalid("Invalid value at 'message.data'", Some("message.data"));
        };
        let mut size = 0;
        for (i, (k, val)) in data.iter().enumerate() {
            let Some(s) = val.as_str() else {
                return invalid(
                    &format!("Invalid value at 'message.data[{i}].value' (TYPE_STRING), {val}"),
                    Some(&format!("message.data[{i}].value")),
                );
            };
            if is_reserved_key(k) {
                return invalid(&format!("Invalid data payload key: {k}"), Some("message.data"));
            }
            size += k.len() + s.len();
        }
        if size > 4096 {
            return invalid("Android message is too big", Some("message.data"));
        }
    }
    if let Some(android) = msg.get("android") {
        let Some(android) = android.as_object() else {
            return invalid("Invalid value at 'message.android'", Some("message.android"));
        };
        if let Some(a) = unknown_field(android, ANDROID_FIELDS, "message.android") {
            return a;
        }
        if let Some(p) = android.get("priority") {
            if !matches!(p.as_str(), Some("NORMAL" | "HIGH")) {
                return invalid(
                    &format!("Invalid value at 'message.android.priority' (type.googleapis.com/google.firebase.fcm.v1.AndroidMessagePriority), {p}"),
                    Some("message.android.priority"),
                );
            }
        }
        if let Some(t) = android.get("ttl") {
            if !t.as_str().map(valid_ttl).unwrap_or(false) {
                return invalid(
                    &format!("Invalid value at 'message.android.ttl' (type.googleapis.com/google.protobuf.Duration), {t}"),
                    Some("message.android.ttl"),
                );
            }
        }
    }
    let mut st = lock(state);
    let scripted = match st.failed.get(token) {
        Some(r) => Some(r.clone()),
        None => st.scripts.get_mut(token).and_then(VecDeque::pop_front),
    };
    if let Some(r) = scripted {
        if r.status != 200 {
            let mut a = rpc_error(r.status, &r.rpc_status, &r.message, r.error_code.as_deref(), vec![]);
            a.retry_after_s = r.retry_after_s;
            a.delay = r.delay.unwrap_or_default();
            return a;
        }
        let id = st.next_id;
        st.next_id += 1;
        let mut a = answer(200, json!({"name": format!("projects/{project}/messages/0:{id}")}), None);
        a.delay = r.delay.unwrap_or_default();
        return a;
    }
    let id = st.next_id;
    st.next_id += 1;
    answer(200, json!({"name": format!("projects/{project}/messages/0:{id}")}), None)
}

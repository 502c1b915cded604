//! FCM HTTP v1 client (protocol.md §5): OAuth 2.0 access tokens from the
//! service account's JWT-bearer grant, cached per service account until
//! 5 minutes before expiry (concurrent senders wait for one shared refresh),
//! `messages:send` with a data-only high-priority Android message, and the
//! google.rpc error → [`Attempt`] decision on `FcmError.errorCode`.

use super::credentials::FcmCredentials;
use crate::domain::Provider;
use crate::provider::oauth::{self, AccessToken, AccessTokens};
use crate::provider::pool::Pool;
use crate::provider::{retry_after, system_clock, transport_error, Attempt, Clock, FailureKind, ProviderSettings};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

pub const FCM_SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
pub use crate::provider::oauth::REFRESH_MARGIN_S;
/// `data` keys plus values, in bytes.
pub const MAX_DATA_BYTES: usize = 4096;
/// `android.ttl` upper bound (4 weeks).
pub const MAX_TTL_S: u64 = 2_419_200;

/// The FCM delivery client. Share one per process.
pub struct FcmClient {
    settings: ProviderSettings,
    pool: Pool,
    tokens: AccessTokens,
}

#[derive(serde::Serialize)]
struct GrantClaims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
}

/// The signed JWT-bearer assertion for `creds` at `now_s` (RS256, 1 hour).
pub fn grant_assertion(creds: &FcmCredentials, now_s: i64) -> Result<String, String> {
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(creds.private_key_pem.expose().as_bytes())
        .map_err(|e| format!("invalid_service_account_key: {e}"))?;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = creds.private_key_id.clone();
    let claims = GrantClaims { iss: &creds.client_email, scope: FCM_SCOPE, aud: &creds.token_uri, iat: now_s, exp: now_s + 3600 };
    jsonwebtoken::encode(&header, &claims, &key).map_err(|e| format!("invalid_service_account_key: {e}"))
}

/// `{"message":{"token","data","android":{"priority":"HIGH","ttl":"<n>s"}}}`.
pub fn message_body(token: &str, data: &BTreeMap<String, String>, ttl_s: u64) -> Value {
    json!({"message": {
        "token": token,
        "data": data,
        "android": {"priority": "HIGH", "ttl": format!("{}s", ttl_s.min(MAX_TTL_S))},
    }})
}

/// Refuse locally what FCM would refuse: too big or reserved data keys.
pub fn check_data(data: &BTreeMap<String, String>) -> Result<(), Attempt> {
    let size: usize = data.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > MAX_DATA_BYTES {
        return Err(Attempt::failed(FailureKind::Payload, "payload_too_large"));
    }
    if let Some(k) =
        data.keys().find(|k| matches!(k.as_str(), "from" | "notification" | "message_type") || k.starts_with("google") || k.starts_with("gcm"))
    {
        return Err(Attempt::failed(FailureKind::Payload, format!("reserved_data_key: {k}")));
    }
    Ok(())
}

/// A parsed `google.rpc.Status` error body.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RpcError {
    pub status: String,
    pub message: String,
    /// `errorCode` of the `…fcm.v1.FcmError` detail, if any.
    pub error_code: Option<String>,
    /// Other details (BadRequest field violations, QuotaFailure …) as text.
    pub details: Vec<String>,
}

pub fn parse_rpc_error(body: &[u8]) -> RpcError {
    let Ok(v) = serde_json::from_slice::<Value>(body) else { return RpcError::default() };
    let e = &v["error"];
    let mut out = RpcError {
        status: e["status"].as_str().unwrap_or_default().to_string(),
        message: e["message"].as_str().unwrap_or_default().to_string(),
        ..Default::default()
    };
    for d in e["details"].as_array().into_iter().flatten() {
        let ty = d["@type"].as_str().unwrap_or_default();
        if ty.ends_with("fcm.v1.FcmError") {
            if let Some(c) = d["errorCode"].as_str() {
                out.error_code = Some(c.to_string());
            }
        } else if let Some(v) = d["fieldViolations"].as_array() {
            for f in v {
                out.details.push(format!("{}: {}", f["field"].as_str().unwrap_or(""), f["description"].as_str().unwrap_or("")));
            }
        } else if let Some(v) = d["violations"].as_array() {
            for f in v {
                out.details.push(format!("{}: {}", f["subject"].as_str().unwrap_or(""), f["description"].as_str().unwrap_or("")));
            }
        }
    }
    out
}

/// protocol.md §5.3: decide on `FcmError.errorCode`, fall back to HTTP status.
pub fn classify(status: u16, body: &[u8], retry_after: Option<Duration>) -> Attempt {
    if (200..300).contains(&status) {
        return Attempt::Delivered { status };
    }
    let e = parse_rpc_error(body);
    let text = {
        let mut t = e.message.clone();
        for d in &e.details {
            t.push_str("; ");
            t.push_str(d);
        }
        t
    };
    let code = e.error_code.clone().unwrap_or_default();
    let with_text = |c: &str| if text.is_empty() { c.to_string() } else { format!("{c}: {text}") };
    let retry = |c: &str| Attempt::Retry { status: Some(status), reason: c.to_string(), after: retry_after };
    let failed = |kind: FailureKind, c: &str| Attempt::Failed { kind, status: Some(status), reason: with_text(c) };
    match code.as_str() {
        "UNREGISTERED" => Attempt::TokenGone { status, reason: code },
        "INVALID_ARGUMENT" => {
            let m = text.to_ascii_lowercase();
            if m.contains("registration token") && (m.contains("not a valid") || m.contains("invalid")) {
                Attempt::TokenGone { status, reason: "INVALID_ARGUMENT: invalid registration token".into() }
            } else {
                failed(FailureKind::Payload, "INVALID_ARGUMENT")
            }
        }
        "QUOTA_EXCEEDED" | "UNAVAILABLE" | "INTERNAL" => retry(&code),
        "SENDER_ID_MISMATCH" | "THIRD_PARTY_AUTH_ERROR" => failed(FailureKind::Auth, &code),
        _ => {
            let c = if e.status.is_empty() { format!("http_{status}") } else { e.status.clone() };
            if status == 429 || status >= 500 {
                retry(&c)
            } else {
                let kind = match status {
                    401 | 403 => FailureKind::Auth,
                    404 => FailureKind::Config,
                    _ => FailureKind::Other,
                };
                failed(kind, &c)
            }
        }
    }
}

fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl FcmClient {
    pub fn new(settings: ProviderSettings) -> Self {
        Self::with_clock(settings, system_clock())
    }

    pub fn with_clock(settings: ProviderSettings, clock: Clock) -> Self {
        let builder = settings.clone();
        let pool = Pool::new(Provider::Fcm, move || builder.https_builder()?.build().map_err(|e| e.to_string()));
        Self { settings, pool, tokens: AccessTokens::new(clock) }
    }

    /// OAuth grants obtained so far (all service accounts).
    pub fn oauth_refresh_count(&self) -> u64 {
        self.tokens.grants()
    }

    /// A usable access token; `stale` (a token FCM just refused) forces a new grant
    /// unless another sender already replaced it.
    async fn access_token(&self, creds: &FcmCredentials, stale: Option<&str>) -> Result<String, Attempt> {
        let key = oauth::key_of(&[&creds.client_email, &creds.token_uri, &creds.project_id, creds.private_key_pem.expose()]);
        self.tokens.get(key, stale, |now| self.grant(creds, now)).await
    }

    async fn grant(&self, creds: &FcmCredentials, now: i64) -> Result<AccessToken, Attempt> {
        let assertion = grant_assertion(creds, now).map_err(|e| Attempt::failed(FailureKind::Auth, e))?;
        let body = format!("grant_type={}&assertion={}", form_encode("urn:ietf:params:oauth:grant-type:jwt-bearer"), form_encode(&assertion));
        oauth::post_grant(&self.pool, self.settings.answer_timeout, &creds.token_uri, body, now).await?.map_err(|refusal| {
            let v = &refusal.body;
            let reason = format!("oauth_{}: {}", v["error"].as_str().unwrap_or("error"), v["error_description"].as_str().unwrap_or_default());
            tracing::warn!(client_email = %creds.client_email, status = refusal.status, %reason, "OAuth token grant refused");
            refusal.into_attempt(reason)
        })
    }

    /// One attempt to deliver `data` to `token` with `android.ttl = ttl_s`.
    /// On 401 `UNAUTHENTICATED` the cached access token is dropped, a new
    /// one obtained and the send retried once.
    pub async fn send(&self, creds: &FcmCredentials, token: &str, data: &BTreeMap<String, String>, ttl_s: u64) -> Attempt {
        if let Err(a) = check_data(data) {
            return a;
        }
        let url = format!("{}/v1/projects/{}/messages:send", self.settings.fcm_base_url.trim_end_matches('/'), creds.project_id);
        let body = message_body(token, data, ttl_s).to_string();
        let mut stale: Option<String> = None;
        loop {
            let bearer = match self.access_token(creds, stale.as_deref()).await {
                Ok(t) => t,
                Err(a) => return a,
            };
            let request =
                |c: &reqwest::Client| c.post(&url).bearer_auth(&bearer).header("content-type", "application/json; charset=UTF-8").body(body.clone());
            let resp = match self.pool.send(request, self.settings.answer_timeout).await {
                Ok(r) => r,
                Err(a) => return a,
            };
            let status = resp.status().as_u16();
            let after = retry_after(resp.headers());
            let bytes = match resp.bytes().await {
                Ok(b) => b,
                Err(e) => return transport_error(&e),
            };
            if status == 401 && stale.is_none() {
                let e = parse_rpc_error(&bytes);
                if e.error_code.is_none() {
                    tracing::info!(client_email = %creds.client_email, "FCM refused the access token; getting a new one");
                    stale = Some(bearer);
                    continue;
                }
            }
            return classify(status, &bytes, after);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err_body(code: u16, status: &str, msg: &str, error_code: Option<&str>) -> Vec<u8> {
        let mut details = vec![];
        if let Some(c) = error_code {
            details.push(json!({"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": c}));
        }
        json!({"error": {"code": code, "message": msg, "status": status, "details": details}}).to_string().into_bytes()
    }

    #[test]
    fn body_shape() {
        let mut d = BTreeMap::new();
        d.insert("body".to_string(), "JWE".to_string());
        assert_eq!(
            message_body("tok", &d, 30),
            json!({"message": {"token": "tok", "data": {"body": "JWE"}, "android": {"priority": "HIGH", "ttl": "30s"}}})
        );
        assert_eq!(message_body("tok", &d, 10_000_000)["message"]["android"]["ttl"], "2419200s");
    }

    #[test]
    fn local_data_checks() {
        let mut d = BTreeMap::new();
        d.insert("body".to_string(), "x".repeat(4092));
        assert!(check_data(&d).is_ok());
        d.insert("b".to_string(), String::new());
        assert_eq!(check_data(&d).unwrap_err(), Attempt::failed(FailureKind::Payload, "payload_too_large"));
        for k in ["from", "google.x", "gcm.n", "message_type", "notification"] {
            let d: BTreeMap<String, String> = [(k.to_string(), "v".to_string())].into();
            assert!(check_data(&d).is_err(), "{k}");
        }
    }

    #[test]
    fn error_table() {
        let ra = Some(Duration::from_secs(9));
        assert_eq!(classify(200, br#"{"name":"projects/p/messages/1"}"#, None), Attempt::Delivered { status: 200 });
        assert!(matches!(
            classify(404, &err_body(404, "NOT_FOUND", "Requested entity was not found.", Some("UNREGISTERED")), None),
            Attempt::TokenGone { status: 404, .. }
        ));
        let bad_token = err_body(400, "INVALID_ARGUMENT", "The registration token is not a valid FCM registration token", Some("INVALID_ARGUMENT"));
        assert!(matches!(classify(400, &bad_token, None), Attempt::TokenGone { status: 400, .. }));
        let bad_ttl = err_body(400, "INVALID_ARGUMENT", "Invalid value at 'message.android.ttl'", Some("INVALID_ARGUMENT"));
        assert!(
            matches!(classify(400, &bad_ttl, None), Attempt::Failed { kind: FailureKind::Payload, status: Some(400), ref reason } if reason.contains("android.ttl"))
        );
        for (s, rpc, c) in [(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED"), (503, "UNAVAILABLE", "UNAVAILABLE"), (500, "INTERNAL", "INTERNAL")] {
            assert_eq!(classify(s, &err_body(s, rpc, "m", Some(c)), ra), Attempt::Retry { status: Some(s), reason: c.into(), after: ra });
        }
        for (s, rpc, c) in [(403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH"), (401, "UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR")] {
            assert!(
                matches!(classify(s, &err_body(s, rpc, "m", Some(c)), None), Attempt::Failed { kind: FailureKind::Auth, ref reason, .. } if reason.starts_with(c))
            );
        }
        // no FcmError detail: by HTTP status
        assert!(matches!(classify(502, b"<html>", ra), Attempt::Retry { status: Some(502), .. }));
        assert!(matches!(classify(404, b"", None), Attempt::Failed { kind: FailureKind::Config, status: Some(404), .. }));
        assert!(matches!(
            classify(401, &err_body(401, "UNAUTHENTICATED", "m", None), None),
            Attempt::Failed { ref reason, .. } if reason.starts_with("UNAUTHENTICATED")
        ));
    }

    #[test]
    fn rpc_details_are_kept_as_text() {
        let body = json!({"error": {"code": 400, "message": "bad", "status": "INVALID_ARGUMENT", "details": [
            {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "INVALID_ARGUMENT"},
            {"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [{"field": "message.data[0].value", "description": "Invalid value"}]}
        ]}});
        let e = parse_rpc_error(body.to_string().as_bytes());
        assert_eq!(e.error_code.as_deref(), Some("INVALID_ARGUMENT"));
        assert_eq!(e.details, vec!["message.data[0].value: Invalid value".to_string()]);
    }

    #[test]
    fn form_encoding() {
        assert_eq!(form_encode("urn:ietf:params:oauth:grant-type:jwt-bearer"), "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer");
        assert_eq!(form_encode("a.b-c_d"), "a.b-c_d");
    }
}

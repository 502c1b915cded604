//! Huawei Push Kit (interface.md §9), for Android phones without Google
//! services: OAuth 2.0 client-credentials access tokens (`hms.token_url`,
//! cached until 5 minutes before they expire, one refresh at a time per
//! app), and `{hms.base_url}/v1/{appId}/messages:send` with a data message
//! (`android.urgency = HIGH`, `android.category = VOIP` for calls,
//! `android.ttl` = the seconds left of the ring).
//!
//! Huawei's result codes (its "下行消息" reference), as the relay acts on them:
//!
//! | code | meaning | outcome |
//! |---|---|---|
//! | 80000000 | success | delivered |
//! | 80300007 | all tokens invalid (one token: this one) | token removed |
//! | 80100000 | some tokens failed (`illegal_tokens`) | token removed |
//! | 80200003 / 80200001 | access token expired / OAuth error | new token, once; then failed (auth) |
//! | 80600003 | the OAuth service refused the app's credentials | failed (auth) |
//! | 80300002, 80300011 | the app may not send (permission) | failed (config) |
//! | 80100001/03/04/13, 80300008/10 | parameters, structure, ttl, size | failed (payload) |
//! | 81000001 | system error | retried |
//! | HTTP 502, 503 (flow control), 504, 500, 429 | | retried, honouring `Retry-After` |
//!
//! The body's `code` decides whatever the HTTP status; the status only
//! when there is no code.

pub mod credentials;

pub use credentials::HmsCredentials;

use super::oauth::{self, AccessToken, AccessTokens};
use super::pool::Pool;
use super::{
    retry_after, system_clock, transport_error, Attempt, Clock, Credentials, FailureKind, ProviderSettings, Push, PushProvider, Sending, StoredForm,
};
use crate::domain::{Content, FieldError, Provider, Shape};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// `message.data` at most (Huawei: 4096 bytes, tokens excluded).
pub const MAX_DATA_BYTES: usize = 4096;

/// Huawei Push Kit behind the provider trait.
pub struct Hms {
    settings: ProviderSettings,
    pool: Pool,
    /// Access tokens per (app id, client secret).
    tokens: AccessTokens,
}

/// The body of one send: a data message to one token.
pub fn message_body(token: &str, data: &BTreeMap<String, String>, ttl_s: u64, call: bool) -> Value {
    let mut android = json!({ "urgency": "HIGH", "ttl": format!("{ttl_s}s") });
    if call {
        android["category"] = json!("VOIP");
    }
    json!({
        "validate_only": false,
        "message": {
            "data": serde_json::to_string(data).expect("a map of strings serializes"),
            "android": android,
            "token": [token],
        }
    })
}

/// What Huawei's answer to a send means (`code` from the body, else the status).
pub fn classify(status: u16, body: &[u8], after: Option<std::time::Duration>) -> Attempt {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let code = v["code"].as_str().unwrap_or("");
    let msg: String = v["msg"].as_str().unwrap_or("").chars().take(200).collect();
    let reason = if code.is_empty() {
        format!("http_{status}")
    } else if msg.is_empty() {
        code.to_string()
    } else {
        format!("{code} {msg}")
    };
    match code {
        "80000000" => return Attempt::Delivered { status },
        "80300007" | "80100000" => return Attempt::TokenGone { status, reason },
        "80200001" | "80200003" | "80200005" | "80600003" => return Attempt::Failed { kind: FailureKind::Auth, status: Some(status), reason },
        "80300002" | "80300011" | "80300013" => return Attempt::Failed { kind: FailureKind::Config, status: Some(status), reason },
        "81000001" => return Attempt::Retry { status: Some(status), reason, after },
        c if c.starts_with("801") || c == "80300008" || c == "80300010" => {
            return Attempt::Failed { kind: FailureKind::Payload, status: Some(status), reason };
        }
        _ => {}
    }
    match status {
        200 if code.is_empty() => Attempt::Retry { status: Some(status), reason: "hms_bad_response".into(), after: None },
        401 | 403 => Attempt::Failed { kind: FailureKind::Auth, status: Some(status), reason },
        429 | 500..=599 => Attempt::Retry { status: Some(status), reason, after },
        _ => Attempt::Failed { kind: FailureKind::Other, status: Some(status), reason },
    }
}

/// Whether an answer says the access token is no longer good (refresh once).
fn token_refused(status: u16, body: &[u8]) -> bool {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    match v["code"].as_str() {
        Some(code) => code == "80200003" || code == "80200001",
        None => status == 401,
    }
}

impl Hms {
    pub fn new(settings: ProviderSettings) -> Self {
        Self::with_clock(settings, system_clock())
    }

    pub fn with_clock(settings: ProviderSettings, clock: Clock) -> Self {
        let builder = settings.clone();
        let pool = Pool::new(Provider::Hms, move || builder.https_builder()?.build().map_err(|e| e.to_string()));
        Self { settings, pool, tokens: AccessTokens::new(clock) }
    }

    /// Access tokens obtained so far (all apps).
    pub fn token_grants(&self) -> u64 {
        self.tokens.grants()
    }

    /// A usable access token; `stale` (one Huawei just refused) forces a
    /// new one unless another sender already replaced it.
    async fn access_token(&self, creds: &HmsCredentials, stale: Option<&str>) -> Result<String, Attempt> {
        let key = oauth::key_of(&[&creds.app_id, creds.client_secret.expose()]);
        self.tokens.get(key, stale, |now| self.grant(creds, now)).await
    }

    /// The client-credentials grant.
    async fn grant(&self, creds: &HmsCredentials, now: i64) -> Result<AccessToken, Attempt> {
        let form: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "client_credentials")
            .append_pair("client_id", &creds.app_id)
            .append_pair("client_secret", creds.client_secret.expose())
            .finish();
        oauth::post_grant(&self.pool, self.settings.answer_timeout, &self.settings.hms_token_url, form, now).await?.map_err(|refusal| {
            let v = &refusal.body;
            let reason = format!(
                "oauth_{}/{}: {}",
                v["error"].as_i64().map(|n| n.to_string()).unwrap_or_else(|| "error".into()),
                v["sub_error"].as_i64().map(|n| n.to_string()).unwrap_or_default(),
                v["error_description"].as_str().unwrap_or_default().chars().take(200).collect::<String>()
            );
            tracing::warn!(app_id = %creds.app_id, status = refusal.status, %reason, "Huawei refused the app's client credentials");
            refusal.into_attempt(reason)
        })
    }

    /// One attempt to deliver `data` to `token`. An expired or refused
    /// access token is replaced and the send retried once.
    pub async fn send_data(&self, creds: &HmsCredentials, token: &str, data: &BTreeMap<String, String>, ttl_s: u64) -> Attempt {
        let call = !matches!(data.get("type").map(String::as_str), Some("cancel" | "message" | "test"));
        let body = message_body(token, data, ttl_s, call);
        if body["message"]["data"].as_str().map_or(0, str::len) > MAX_DATA_BYTES {
            return Attempt::failed(FailureKind::Payload, "payload_too_large");
        }
        let body = body.to_string();
        let url = format!("{}/v1/{}/messages:send", self.settings.hms_base_url.trim_end_matches('/'), creds.app_id);
        let mut stale: Option<String> = None;
        loop {
            let bearer = match self.access_token(creds, stale.as_deref()).await {
                Ok(t) => t,
                Err(a) => return a,
            };
            let request =
                |c: &reqwest::Client| c.post(&url).bearer_auth(&bearer).header("content-type", "application/json;charset=utf-8").body(body.clone());
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
            if token_refused(status, &bytes) && stale.is_none() {
                tracing::info!(app_id = %creds.app_id, "Huawei refused the access token; getting a new one");
                stale = Some(bearer);
                continue;
            }
            return classify(status, &bytes, after);
        }
    }
}

impl PushProvider for Hms {
    fn provider(&self) -> Provider {
        Provider::Hms
    }

    fn shape(&self) -> Shape {
        Shape::Data
    }

    fn credentials_from_admin(&self, body: &[u8]) -> Result<StoredForm, FieldError> {
        let creds = HmsCredentials::parse_admin_json(body)?;
        Ok(StoredForm { summary: creds.summary(), secret: creds.to_stored(), lookup_key: Some(creds.app_id.clone()), not_after: None })
    }

    fn credentials_from_stored(&self, secret: &str) -> Result<Credentials, String> {
        Ok(Arc::new(HmsCredentials::from_stored(secret).map_err(|e| e.to_string())?))
    }

    fn send<'a>(&'a self, creds: &'a Credentials, push: &'a Push<'a>) -> Sending<'a> {
        Box::pin(async move {
            let Some(creds) = creds.downcast_ref::<HmsCredentials>() else {
                return Attempt::failed(FailureKind::Config, "credentials of another provider");
            };
            let Content::Data { data } = push.content else {
                return Attempt::failed(FailureKind::Config, "payload does not fit the channel");
            };
            self.send_data(creds, push.token.as_str(), data, super::fcm::ttl_seconds(push.window)).await
        })
    }

    fn describe(&self, summary: &Value) -> String {
        format!("app {}", summary["appId"].as_str().unwrap_or(""))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_is_a_high_urgency_voip_data_message_with_the_ring_as_ttl() {
        let data = BTreeMap::from([("type".to_string(), "incomingcall".to_string())]);
        let b = message_body("tok", &data, 30, true);
        assert_eq!(b["message"]["android"], json!({"urgency": "HIGH", "category": "VOIP", "ttl": "30s"}));
        assert_eq!(b["message"]["token"], json!(["tok"]));
        assert_eq!(b["message"]["data"], json!(r#"{"type":"incomingcall"}"#));
        assert!(message_body("tok", &data, 5, false)["message"]["android"].get("category").is_none(), "a cancel is not a VoIP call");
    }

    #[test]
    fn huaweis_result_codes_decide_the_outcome() {
        let a = |status: u16, body: &str| classify(status, body.as_bytes(), None);
        assert_eq!(a(200, r#"{"code":"80000000","msg":"Success"}"#), Attempt::Delivered { status: 200 });
        assert!(matches!(a(200, r#"{"code":"80300007","msg":"All the tokens are invalid"}"#), Attempt::TokenGone { .. }));
        assert!(matches!(a(400, r#"{"code":"80100003","msg":"Illegal message structure"}"#), Attempt::Failed { kind: FailureKind::Payload, .. }));
        assert!(matches!(a(403, r#"{"code":"80300002","msg":"No permission"}"#), Attempt::Failed { kind: FailureKind::Config, .. }));
        assert!(matches!(a(401, r#"{"code":"80200003","msg":"OAuth token expired"}"#), Attempt::Failed { kind: FailureKind::Auth, .. }));
        assert!(matches!(a(500, r#"{"code":"81000001","msg":"System inner error"}"#), Attempt::Retry { .. }));
        assert!(matches!(a(503, ""), Attempt::Retry { .. }), "flow control");
        assert!(matches!(a(401, ""), Attempt::Failed { kind: FailureKind::Auth, .. }));
        assert!(token_refused(401, br#"{"code":"80200003"}"#) && token_refused(401, b"") && !token_refused(200, br#"{"code":"80300007"}"#));
    }
}

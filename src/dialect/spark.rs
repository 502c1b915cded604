//! Cisco Spark / Webex dialect (seeds/000, interface.md §4, protocol.md §6).
//!
//! Three pure pieces:
//!
//! * [`parse_register`]: the `POST /register` body the seed's iOS sample
//!   sends, `{"email","voipToken","msgToken","personId"}` plus pushrelay's
//!   optional `"sandbox": true` (APNs sandbox instead of production).
//!   `personId` is the user; both tokens are APNs tokens (hex, lower-cased by
//!   `DeviceToken`). Unknown members are **ignored** (the seed's client is an
//!   app we do not control and may grow fields); a member given twice is
//!   refused (`duplicate_field`). `null` counts as absent. `msgToken` and
//!   `email` are optional (absent, `null` or `""` → `None`).
//! * [`verify_signature`]: `X-Spark-Signature` = hex HMAC-SHA1(secret, raw
//!   body), compared in constant time (`hmac`'s `verify_slice`), hex case
//!   ignored.
//! * [`parse_webhook`]: a Webex webhook envelope. `callMemberships`/`created`
//!   with `data.status` absent, `null` or `"notified"` (exact, lower case, as
//!   Webex sends it) is an [`WebhookEvent::IncomingCall`]; it needs
//!   `data.personId` and `data.callId`. Every other `resource`/`event` pair is
//!   [`WebhookEvent::Ignored`]. An envelope without string `resource` and
//!   `event` members is not a Webex event and is refused. A repeated
//!   top-level `resource`/`event`/`actorId`/`data`, or a repeated
//!   `data.personId`/`callId`/`status`/`id` of a call event, is refused
//!   (`duplicate_field`) rather than read last-wins.
//!
//! Error messages never echo tokens, signatures or JSON values: serde_json
//! data errors (which may quote a value) are replaced by fixed texts.

use crate::domain::{AppId, Channel, DevicePkid, DeviceToken, DialectData, Email, FieldError, MessageToken, Provider, Registration, UserId};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::Value;
use sha1::Sha1;

/// Largest accepted `POST /register` body (`too_large`, 413).
pub const MAX_REGISTER_BYTES: usize = 8 * 1024;
/// Largest accepted webhook body (`too_large`, 413). Webex envelopes are a few KiB.
pub const MAX_WEBHOOK_BYTES: usize = 64 * 1024;
/// Longest accepted `email`, id or `callId` string.
const MAX_TEXT: usize = 512;
/// Longest `resource`/`event` kept in [`WebhookEvent::Ignored`].
const MAX_ECHO: usize = 64;

/// A parsed `POST /register` body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SparkRegister {
    pub email: Option<Email>,
    pub person: UserId,
    /// The PushKit (VoIP) token: APNs hex.
    pub voip_token: DeviceToken,
    /// The regular (alert) token, used for cancel pushes: APNs hex.
    pub msg_token: Option<DeviceToken>,
    /// `"sandbox": true` → APNs development environment.
    pub sandbox: bool,
}

impl SparkRegister {
    /// The APNs channel both tokens are used on.
    pub fn channel(&self) -> Channel {
        if self.sandbox {
            Channel::ApnsDev
        } else {
            Channel::Apns
        }
    }

    /// The device id: `spark-` and 16 hex digits of SHA-256 of the VoIP
    /// token — it names the phone without showing its token (ids are
    /// listed in `GET /v1/users/{user}/devices` and `GET /register?email=`).
    pub fn device_id(&self) -> DevicePkid {
        super::hashed_device_id("spark", self.voip_token.as_str())
    }

    /// The registration of this phone for `app` (both tokens on its channel).
    pub fn into_registration(self, app: AppId) -> Registration {
        let channel = self.channel();
        Registration {
            user: self.person.clone(),
            device: self.device_id(),
            channel,
            token: self.voip_token,
            subscription_keys: None,
            app: app.clone(),
            data: DialectData::Spark { msg: self.msg_token.map(|token| MessageToken { app, channel, token }), email: self.email },
        }
    }
}

/// A parsed webhook delivery: what it asks for, when it happened, and the
/// key a replay of it is recognised by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Webhook {
    /// Hex SHA-256 of (envelope `id`, `resource`, `event`, `data.id`) — the
    /// envelope `id` alone is the webhook registration's id, the same on
    /// every delivery — or of the raw body when `data.id` is absent.
    pub replay_key: String,
    /// `data.created`, else the envelope's `created` (epoch ms), if given.
    pub created_ms: Option<i64>,
    pub event: WebhookEvent,
}

/// Events older than this are answered `{"ignored": "stale"}` (interface.md §4).
pub const STALE_AFTER_MS: i64 = 120_000;

impl Webhook {
    /// Older than `STALE_AFTER_MS` at `now_ms`, or as far in the future
    /// (a clock that far off is not Webex's). Without a time: never stale.
    pub fn is_stale(&self, now_ms: i64) -> bool {
        self.created_ms.is_some_and(|at| (now_ms - at).abs() > STALE_AFTER_MS)
    }
}

/// What a webhook delivery asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WebhookEvent {
    /// `callMemberships`/`created` with status absent or `notified`: wake `person`.
    IncomingCall { person: UserId, call_id: String, actor_id: Option<String>, membership_id: Option<String> },
    /// `messages`/`created` by someone other than the webhook's owner
    /// (seeds/000): tell `owner` with an alert naming the sender.
    Message { owner: UserId, sender_email: Email, message_id: Option<String> },
    /// `messages`/`created` by the webhook's owner: nothing to tell.
    OwnMessage,
    /// Anything else: answer 200, do nothing. The strings are cut to 64 characters.
    Ignored { resource: String, event: String },
}

#[derive(Deserialize)]
struct RegisterBody {
    email: Option<Value>,
    #[serde(rename = "voipToken")]
    voip_token: Option<Value>,
    #[serde(rename = "msgToken")]
    msg_token: Option<Value>,
    #[serde(rename = "personId")]
    person_id: Option<Value>,
    sandbox: Option<Value>,
}

#[derive(Deserialize)]
struct Envelope {
    id: Option<Value>,
    created: Option<Value>,
    resource: Option<Value>,
    event: Option<Value>,
    #[serde(rename = "actorId")]
    actor_id: Option<Value>,
    #[serde(rename = "createdBy")]
    created_by: Option<Value>,
    data: Option<Value>,
}

#[derive(Deserialize)]
struct MessageEnvelope {
    data: MessageData,
}

#[derive(Deserialize)]
struct MessageData {
    id: Option<Value>,
    #[serde(rename = "personEmail")]
    person_email: Option<Value>,
}

#[derive(Deserialize)]
struct CallEnvelope {
    data: CallData,
}

#[derive(Deserialize)]
struct CallData {
    id: Option<Value>,
    #[serde(rename = "callId")]
    call_id: Option<Value>,
    #[serde(rename = "personId")]
    person_id: Option<Value>,
    status: Option<Value>,
}

/// Parse a `POST /register` body.
pub fn parse_register(body: &[u8]) -> Result<SparkRegister, FieldError> {
    check_size(body, MAX_REGISTER_BYTES)?;
    let b: RegisterBody = from_json(body)?;

    let person = required_str(b.person_id, "personId")?;
    let person = UserId::parse(&person).map_err(|e| FieldError { field: "personId", ..e })?;
    let voip = required_str(b.voip_token, "voipToken")?;
    let voip_token = apns_token(&voip, "voipToken")?;
    let msg_token = match optional_str(b.msg_token, "msgToken")? {
        Some(t) if !t.is_empty() => Some(apns_token(&t, "msgToken")?),
        _ => None,
    };
    let email = match optional_str(b.email, "email")? {
        Some(e) if !e.is_empty() => Some(Email::parse(&e)?),
        _ => None,
    };
    let sandbox = match b.sandbox {
        None | Some(Value::Null) => false,
        Some(Value::Bool(v)) => v,
        Some(_) => return Err(FieldError::new("sandbox", "invalid_field", "sandbox must be true or false")),
    };
    Ok(SparkRegister { email, person, voip_token, msg_token, sandbox })
}

/// Check `X-Spark-Signature` (`header`, `None` when absent) against the raw
/// body. Only call this when the app has a webhook secret; any error → 401.
pub fn verify_signature(secret: &[u8], raw_body: &[u8], header: Option<&str>) -> Result<(), FieldError> {
    const FIELD: &str = "X-Spark-Signature";
    let header = header
        .map(|h| h.trim_matches(|c| c == ' ' || c == '\t'))
        .filter(|h| !h.is_empty())
        .ok_or_else(|| FieldError::new(FIELD, "missing_signature", "X-Spark-Signature is required"))?;
    let bad = || FieldError::new(FIELD, "bad_signature", "X-Spark-Signature does not match the body");
    if header.len() != 40 || !header.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(FieldError::new(FIELD, "bad_signature", "X-Spark-Signature must be 40 hex digits (HMAC-SHA1)"));
    }
    let given = hex::decode(header.to_ascii_lowercase()).map_err(|_| bad())?;
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret).map_err(|_| bad())?;
    mac.update(raw_body);
    mac.verify_slice(&given).map_err(|_| bad())
}

/// Lower-case hex HMAC-SHA1 of `body` (what Webex sends; for tests and the mock sender).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Parse a webhook envelope.
pub fn parse_webhook(body: &[u8]) -> Result<Webhook, FieldError> {
    check_size(body, MAX_WEBHOOK_BYTES)?;
    let env: Envelope = from_json(body)?;
    let resource = required_str(env.resource.clone(), "resource")?;
    let event = required_str(env.event.clone(), "event")?;
    let data = match &env.data {
        Some(Value::Object(d)) => Some(d),
        _ => None,
    };
    let time = |v: Option<&Value>, field: &'static str| -> Result<Option<i64>, FieldError> {
        match v {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(t)) => {
                rfc3339_ms(t).map(Some).ok_or_else(|| FieldError::new(field, "invalid_field", format!("{field} must be an RFC 3339 time")))
            }
            Some(_) => Err(FieldError::new(field, "invalid_field", format!("{field} must be a string"))),
        }
    };
    let created_ms = match time(data.and_then(|d| d.get("created")), "data.created")? {
        Some(t) => Some(t),
        None => time(env.created.as_ref(), "created")?,
    };
    let data_id = data.and_then(|d| d.get("id")).and_then(Value::as_str);
    let replay_key = {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        match data_id {
            Some(id) => {
                let envelope_id = env.id.as_ref().and_then(Value::as_str).unwrap_or("");
                for part in [envelope_id, &resource, &event, id] {
                    h.update(part.as_bytes());
                    h.update([0u8]);
                }
            }
            None => h.update(body),
        }
        hex::encode(h.finalize())
    };
    let event = webhook_event(body, env, resource, event)?;
    Ok(Webhook { replay_key, created_ms, event })
}

/// RFC 3339 text → epoch milliseconds.
fn rfc3339_ms(text: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

fn webhook_event(body: &[u8], env: Envelope, resource: String, event: String) -> Result<WebhookEvent, FieldError> {
    let ignored = || WebhookEvent::Ignored { resource: cut(&resource), event: cut(&event) };
    let kind = match (resource.as_str(), event.as_str()) {
        ("callMemberships", "created") => "callMemberships/created",
        ("messages", "created") => "messages/created",
        _ => return Ok(ignored()),
    };
    match env.data {
        Some(Value::Object(_)) => {}
        None | Some(Value::Null) => return Err(FieldError::new("data", "missing_field", format!("data is required for {kind}"))),
        Some(_) => return Err(FieldError::new("data", "invalid_field", "data must be a JSON object")),
    }
    if resource == "messages" {
        return message_event(body, env);
    }
    // Second pass over the same bytes with typed `data` members, so that a
    // repeated `personId`/`callId`/`status`/`id` is refused, not last-wins.
    let data = from_json::<CallEnvelope>(body)?.data;
    match optional_str(data.status, "data.status")? {
        None => {}
        Some(s) if s == "notified" => {}
        Some(_) => return Ok(ignored()),
    }
    let person = required_str(data.person_id, "data.personId")?;
    let person = UserId::parse(&person).map_err(|e| FieldError { field: "data.personId", ..e })?;
    let call_id = required_str(data.call_id, "data.callId")?;
    let call_id = check_text(call_id, "data.callId")?;
    let actor_id = optional_str(env.actor_id, "actorId")?.map(|s| check_text(s, "actorId")).transpose()?;
    let membership_id = optional_str(data.id, "data.id")?.map(|s| check_text(s, "data.id")).transpose()?;
    Ok(WebhookEvent::IncomingCall { person, call_id, actor_id, membership_id })
}

/// `messages`/`created` (seeds/000): the webhook's owner (`createdBy`) is
/// told about messages others post (`actorId`); their own send nothing.
fn message_event(body: &[u8], env: Envelope) -> Result<WebhookEvent, FieldError> {
    let owner = required_str(env.created_by, "createdBy")?;
    let owner = UserId::parse(&owner).map_err(|e| FieldError { field: "createdBy", ..e })?;
    let actor = required_str(env.actor_id, "actorId")?;
    if actor == owner.as_str() {
        return Ok(WebhookEvent::OwnMessage);
    }
    let data = from_json::<MessageEnvelope>(body)?.data;
    let email = required_str(data.person_email, "data.personEmail")?;
    let sender_email = Email::parse(&email).map_err(|e| FieldError { field: "data.personEmail", ..e })?;
    let message_id = optional_str(data.id, "data.id")?.map(|s| check_text(s, "data.id")).transpose()?;
    Ok(WebhookEvent::Message { owner, sender_email, message_id })
}

// ---------------------------------------------------------------------------

fn check_size(body: &[u8], max: usize) -> Result<(), FieldError> {
    if body.len() > max {
        return Err(FieldError::new("", "too_large", format!("body is larger than {max} bytes (got {})", body.len())));
    }
    Ok(())
}

/// Deserialize with messages that never quote the body.
fn from_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, FieldError> {
    serde_json::from_slice(body).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => {
                let msg = e.to_string();
                if let Some(rest) = msg.strip_prefix("duplicate field `") {
                    let name: String = rest.chars().take_while(|c| *c != '`').take(MAX_ECHO).collect();
                    FieldError::new("", "duplicate_field", format!("{name} appears more than once"))
                } else {
                    FieldError::new("", "malformed_json", "body must be a JSON object")
                }
            }
            _ => FieldError::new("", "malformed_json", format!("body is not valid JSON (line {}, column {})", e.line(), e.column())),
        }
    })
}

fn optional_str(v: Option<Value>, field: &'static str) -> Result<Option<String>, FieldError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(FieldError::new(field, "invalid_field", format!("{field} must be a string"))),
    }
}

fn required_str(v: Option<Value>, field: &'static str) -> Result<String, FieldError> {
    match optional_str(v, field)? {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(FieldError::new(field, "missing_field", format!("{field} is required"))),
    }
}

fn apns_token(raw: &str, field: &'static str) -> Result<DeviceToken, FieldError> {
    DeviceToken::parse(Provider::Apns, raw).map_err(|e| FieldError { field, message: e.message.replace("pushNotifyToken", field), ..e })
}

fn check_text(s: String, field: &'static str) -> Result<String, FieldError> {
    if s.is_empty() || s.len() > MAX_TEXT || s.chars().any(char::is_control) {
        return Err(FieldError::new(field, "invalid_field", format!("{field} must be 1 to {MAX_TEXT} bytes without control characters")));
    }
    Ok(s)
}

fn cut(s: &str) -> String {
    s.chars().take(MAX_ECHO).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const VOIP: &str = "5c0a2f1e9b7d4c3a8e6f1d2b3c4a5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d";
    const MSG: &str = "b4cce23749d42e1b53cfbd1d8521b1f9e16bd6e4961cdada7c8a3a5f5022faeb";
    const PERSON: &str = "Y2lzY29zcGFyazovL3VzL1BFT1BMRS9jYWxsZWU";

    fn reg(extra: &str) -> String {
        format!(r#"{{"email":"alice@example.com","voipToken":"{VOIP}","msgToken":"{MSG}","personId":"{PERSON}"{extra}}}"#)
    }

    fn check_reg(body: impl AsRef<[u8]>) -> String {
        match parse_register(body.as_ref()) {
            Ok(_) => "ok".into(),
            Err(e) => format!("{} {}", e.code, e.field).trim_end().to_string(),
        }
    }

    #[test]
    fn register_table() {
        let cases: Vec<(String, &str)> = vec![
            (reg(""), "ok"),
            (reg(r#","sandbox":true"#), "ok"),
            (reg(r#","sandbox":null"#), "ok"),
            (reg(r#","unknown":{"x":[1,2]}"#), "ok"),
            (format!(r#"{{"voipToken":"{VOIP}","personId":"{PERSON}"}}"#), "ok"),
            (format!(r#"{{"voipToken":"{}","personId":"{PERSON}","msgToken":null,"email":null}}"#, VOIP.to_uppercase()), "ok"),
            (format!(r#"{{"voipToken":"{VOIP}","personId":"{PERSON}","msgToken":"","email":""}}"#), "ok"),
            (format!(r#"{{"voipToken":"{VOIP}","personId":"alice@example.com"}}"#), "ok"),
            // missing / wrong types
            (format!(r#"{{"voipToken":"{VOIP}"}}"#), "missing_field personId"),
            (format!(r#"{{"personId":"{PERSON}"}}"#), "missing_field voipToken"),
            (format!(r#"{{"voipToken":"","personId":"{PERSON}"}}"#), "missing_field voipToken"),
            (format!(r#"{{"voipToken":null,"personId":"{PERSON}"}}"#), "missing_field voipToken"),
            (format!(r#"{{"voipToken":1,"personId":"{PERSON}"}}"#), "invalid_field voipToken"),
            (format!(r#"{{"voipToken":"{VOIP}","personId":["x"]}}"#), "invalid_field personId"),
            (reg(r#","sandbox":"true""#), "invalid_field sandbox"),
            (reg(r#","sandbox":1"#), "invalid_field sandbox"),
            // bad values
            (format!(r#"{{"voipToken":"zz{}","personId":"{PERSON}"}}"#, &VOIP[2..]), "invalid_token voipToken"),
            (format!(r#"{{"voipToken":"{VOIP}","msgToken":"abc","personId":"{PERSON}"}}"#), "invalid_token msgToken"),
            (format!(r#"{{"voipToken":"{VOIP} ","personId":"{PERSON}"}}"#), "invalid_token voipToken"),
            (format!(r#"{{"voipToken":"{VOIP}","personId":"a b"}}"#), "invalid_user personId"),
            (format!(r#"{{"voipToken":"{VOIP}","personId":"{}"}}"#, "a".repeat(257)), "invalid_user personId"),
            (format!(r#"{{"voipToken":"{VOIP}","personId":"{PERSON}","email":"nobody"}}"#), "invalid_email email"),
            (format!(r#"{{"voipToken":"{VOIP}","personId":"{PERSON}","email":"a@b@c"}}"#), "invalid_email email"),
            (format!(r#"{{"voipToken":"{VOIP}","personId":"{PERSON}","email":"a b@c"}}"#), "invalid_email email"),
            // document level
            (format!(r#"{{"voipToken":"{VOIP}","voipToken":"{MSG}","personId":"{PERSON}"}}"#), "duplicate_field"),
            ("".into(), "malformed_json"),
            ("{".into(), "malformed_json"),
            ("[]".into(), "malformed_json"),
            (format!("\"{VOIP}\""), "malformed_json"),
            ("null".into(), "malformed_json"),
            (format!("{} x", reg("")), "malformed_json"),
            (" ".repeat(MAX_REGISTER_BYTES + 1), "too_large"),
        ];
        let mut failures = Vec::new();
        for (i, (body, want)) in cases.iter().enumerate() {
            let got = check_reg(body);
            if got != *want {
                failures.push(format!("case {i}: want {want:?}, got {got:?} for {body}"));
            }
        }
        assert!(failures.is_empty(), "{} failing:\n{}", failures.len(), failures.join("\n"));
    }

    #[test]
    fn register_values() {
        let r = parse_register(reg(r#","sandbox":true"#).as_bytes()).unwrap();
        assert_eq!(r.email.as_ref().map(Email::as_str), Some("alice@example.com"));
        assert_eq!(r.person.as_str(), PERSON);
        assert_eq!((r.voip_token.as_str(), r.msg_token.as_ref().map(|t| t.as_str())), (VOIP, Some(MSG)));
        assert_eq!((r.sandbox, r.channel()), (true, Channel::ApnsDev));
        assert_eq!(parse_register(reg("").as_bytes()).unwrap().channel(), Channel::Apns);
        let upper = format!(r#"{{"voipToken":"{}","personId":"{PERSON}"}}"#, VOIP.to_uppercase());
        let r = parse_register(upper.as_bytes()).unwrap();
        assert_eq!((r.voip_token.as_str(), r.msg_token, r.email), (VOIP, None, None));
    }

    #[test]
    fn webex_person_ids_are_user_ids() {
        for id in [PERSON, "Y2lzY29zcGFyazovL3VzL1BFT1BMRS9mNWIzNjE4Ny1jOGRkLTQ3MjctOGIyZi1mOWM0NDdmMjkwNDY", "a-b_c=="] {
            assert!(UserId::parse(id).is_ok(), "{id}");
        }
    }

    #[test]
    fn messages_never_echo_tokens() {
        let long = "q".repeat(64);
        let bodies = [
            format!(r#"{{"voipToken":"{long}","personId":"{PERSON}"}}"#),
            format!(r#"{{"voipToken":"{VOIP}","msgToken":"{long}","personId":"{PERSON}"}}"#),
            format!(r#"["{long}"]"#),
            format!(r#""{long}""#),
            format!(r#"{{"voipToken":"{VOIP}","personId":"{PERSON}","sandbox":"{long}"}}"#),
            format!(r#"{{"voipToken":"{VOIP}","personId":"{PERSON}","email":"{long}"}}"#),
            format!(r#"{{"voipToken":["{long}"],"personId":"{PERSON}"}}"#),
        ];
        for b in bodies {
            let e = parse_register(b.as_bytes()).unwrap_err();
            assert!(!e.message.contains(&long[..16]), "{}: {}", e.code, e.message);
        }
    }

    // -- signature ------------------------------------------------------------

    #[test]
    fn signature_table() {
        let secret = b"s3cret";
        let body = br#"{"resource":"messages","event":"created"}"#;
        let good = sign(secret, body);
        assert_eq!(good.len(), 40);
        // Known answer: HMAC-SHA1("key", "The quick brown fox jumps over the lazy dog").
        assert_eq!(sign(b"key", b"The quick brown fox jumps over the lazy dog"), "de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9");
        let mut flipped = good.clone().into_bytes();
        flipped[39] = if flipped[39] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).unwrap();
        let cases: Vec<(Option<String>, &[u8], &str)> = vec![
            (Some(good.clone()), body, "ok"),
            (Some(good.to_uppercase()), body, "ok"),
            (Some(format!(" {good}\t")), body, "ok"),
            (None, body, "missing_signature"),
            (Some("".into()), body, "missing_signature"),
            (Some(flipped), body, "bad_signature"),
            (Some(good.clone()), b"{\"resource\":\"messages\",\"event\":\"created\"} ", "bad_signature"),
            (Some(good[..38].to_string()), body, "bad_signature"),
            (Some(format!("{good}00")), body, "bad_signature"),
            (Some(format!("sha1={good}")), body, "bad_signature"),
            (Some(good.replace(|c: char| c.is_ascii_digit(), "g")), body, "bad_signature"),
            (Some(sign(b"other", body)), body, "bad_signature"),
        ];
        for (i, (header, body, want)) in cases.into_iter().enumerate() {
            let got = match verify_signature(secret, body, header.as_deref()) {
                Ok(()) => "ok",
                Err(e) => {
                    assert_eq!(e.field, "X-Spark-Signature");
                    assert!(!e.message.contains(&good[..10]), "{}", e.message);
                    e.code
                }
            };
            assert_eq!(got, want, "case {i}");
        }
    }

    // -- webhook --------------------------------------------------------------

    fn hook(resource: &str, event: &str, data: &str) -> String {
        format!(
            r#"{{"id":"W1","name":"calls","targetUrl":"https://relay.example.com/webhook","resource":"{resource}","event":"{event}","actorId":"CALLER","data":{data}}}"#
        )
    }

    fn check_hook(body: impl AsRef<[u8]>) -> String {
        match parse_webhook(body.as_ref()).map(|w| w.event) {
            Ok(WebhookEvent::IncomingCall { .. }) => "call".into(),
            Ok(WebhookEvent::Ignored { .. }) => "ignored".into(),
            Ok(WebhookEvent::Message { .. }) => "message".into(),
            Ok(WebhookEvent::OwnMessage) => "own message".into(),
            Err(e) => format!("{} {}", e.code, e.field).trim_end().to_string(),
        }
    }

    #[test]
    fn webhook_table() {
        let call = |extra: &str| hook("callMemberships", "created", &format!(r#"{{"id":"M1","callId":"C1","personId":"{PERSON}"{extra}}}"#));
        let cases: Vec<(String, &str)> = vec![
            (call(""), "call"),
            (call(r#","status":"notified""#), "call"),
            (call(r#","status":null"#), "call"),
            (call(r#","status":"joined""#), "ignored"),
            (call(r#","status":"declined""#), "ignored"),
            (call(r#","status":"Notified""#), "ignored"),
            (call(r#","status":"left""#), "ignored"),
            (call(r#","status":7"#), "invalid_field data.status"),
            (hook("callMemberships", "updated", "{}"), "ignored"),
            (hook("callMemberships", "deleted", "null"), "ignored"),
            (hook("messages", "created", r#"{"id":"X","personId":"P"}"#), "missing_field createdBy"),
            (hook("messages", "updated", r#"{"id":"X","personId":"P"}"#), "ignored"),
            (hook("memberships", "created", "{}"), "ignored"),
            (hook("callmemberships", "created", "{}"), "ignored"),
            (r#"{"resource":"messages","event":"created"}"#.into(), "missing_field data"),
            (r#"{"resource":"messages","event":"deleted"}"#.into(), "ignored"),
            (hook("callMemberships", "created", r#"{"callId":"C1"}"#), "missing_field data.personId"),
            (hook("callMemberships", "created", r#"{"callId":"C1","personId":""}"#), "missing_field data.personId"),
            (hook("callMemberships", "created", r#"{"callId":"C1","personId":"a/b"}"#), "invalid_user data.personId"),
            (hook("callMemberships", "created", &format!(r#"{{"personId":"{PERSON}"}}"#)), "missing_field data.callId"),
            (hook("callMemberships", "created", &format!(r#"{{"callId":"a\nb","personId":"{PERSON}"}}"#)), "invalid_field data.callId"),
            (hook("callMemberships", "created", &format!(r#"{{"callId":"C","id":5,"personId":"{PERSON}"}}"#)), "invalid_field data.id"),
            (hook("callMemberships", "created", "null"), "missing_field data"),
            (hook("callMemberships", "created", "[]"), "invalid_field data"),
            (r#"{"resource":"callMemberships","event":"created"}"#.into(), "missing_field data"),
            (r#"{"event":"created","data":{}}"#.into(), "missing_field resource"),
            (r#"{"resource":"messages","data":{}}"#.into(), "missing_field event"),
            (r#"{"resource":1,"event":"created"}"#.into(), "invalid_field resource"),
            (r#"{"resource":"messages","resource":"x","event":"created"}"#.into(), "duplicate_field"),
            (call(r#","personId":"other""#), "duplicate_field"),
            (call(r#","status":"joined","status":"notified""#), "duplicate_field"),
            (hook("messages", "deleted", r#"{"personId":"a","personId":"b"}"#), "ignored"),
            (call("").replace("\"actorId\":\"CALLER\"", "\"actorId\":1"), "invalid_field actorId"),
            ("".into(), "malformed_json"),
            ("not json".into(), "malformed_json"),
            ("[1]".into(), "malformed_json"),
            (" ".repeat(MAX_WEBHOOK_BYTES + 1), "too_large"),
        ];
        let mut failures = Vec::new();
        for (i, (body, want)) in cases.iter().enumerate() {
            let got = check_hook(body);
            if got != *want {
                failures.push(format!("case {i}: want {want:?}, got {got:?} for {body}"));
            }
        }
        assert!(failures.is_empty(), "{} failing:\n{}", failures.len(), failures.join("\n"));
    }

    #[test]
    fn the_replay_key_names_the_event_not_the_webhook() {
        let key = |data: &str| parse_webhook(hook("callMemberships", "created", data).as_bytes()).unwrap().replay_key;
        let one = key(&format!(r#"{{"id":"M1","callId":"C1","personId":"{PERSON}"}}"#));
        assert_eq!(one.len(), 64);
        assert_eq!(one, key(&format!(r#"{{"id":"M1","callId":"C1","personId":"{PERSON}"}}"#)), "a replay has the same key");
        assert_ne!(one, key(&format!(r#"{{"id":"M2","callId":"C2","personId":"{PERSON}"}}"#)), "same webhook id, another event");
        let no_id = key(&format!(r#"{{"callId":"C1","personId":"{PERSON}"}}"#));
        assert_ne!(no_id, one, "without data.id the body itself is the key");
    }

    #[test]
    fn staleness_follows_data_created_then_the_envelope() {
        let at = |data: &str, envelope: &str| {
            let body = format!(r#"{{"id":"W","resource":"x","event":"y"{envelope},"data":{data}}}"#);
            parse_webhook(body.as_bytes()).map(|w| w.created_ms)
        };
        let t0 = 1_764_054_000_000; // 2025-11-25T07:00:00Z
        assert_eq!(at(r#"{"created":"2025-11-25T07:00:00.000Z"}"#, ""), Ok(Some(t0)));
        assert_eq!(at("{}", r#","created":"2025-11-25T07:00:01Z""#), Ok(Some(t0 + 1000)));
        assert_eq!(at("{}", ""), Ok(None));
        assert_eq!(at(r#"{"created":"yesterday"}"#, "").unwrap_err().code, "invalid_field");
        let w = Webhook {
            replay_key: String::new(),
            created_ms: Some(t0),
            event: WebhookEvent::Ignored { resource: String::new(), event: String::new() },
        };
        assert!(!w.is_stale(t0 + STALE_AFTER_MS));
        assert!(w.is_stale(t0 + STALE_AFTER_MS + 1));
        assert!(w.is_stale(t0 - STALE_AFTER_MS - 1), "far in the future");
        assert!(!Webhook { created_ms: None, ..w }.is_stale(i64::MAX));
    }

    #[test]
    fn ignored_events_keep_short_names() {
        let long = "r".repeat(500);
        match parse_webhook(hook(&long, "created", "{}").as_bytes()).unwrap().event {
            WebhookEvent::Ignored { resource, event } => {
                assert_eq!((resource.len(), event.as_str()), (MAX_ECHO, "created"))
            }
            other => panic!("{other:?}"),
        }
    }

    // -- fixtures -------------------------------------------------------------

    /// Every file in fixtures/spark/ and what parsing it must give.
    const FIXTURES: &[(&str, &str)] = &[
        ("register.json", "ok"),
        ("register-sandbox.json", "ok"),
        ("register-bad-token.json", "invalid_token voipToken"),
        ("webhook-call.json", "call"),
        ("webhook-message.json", "message"),
        ("webhook-joined.json", "ignored"),
    ];

    fn fixture(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/spark").join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    #[test]
    fn fixtures_parse_as_expected() {
        for (name, want) in FIXTURES {
            let body = fixture(name);
            let got = if name.starts_with("register") { check_reg(&body) } else { check_hook(&body) };
            assert_eq!(got, *want, "{name}");
        }
    }

    #[test]
    fn every_fixture_file_is_in_the_table() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/spark");
        for entry in std::fs::read_dir(dir).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            assert!(FIXTURES.iter().any(|(f, _)| *f == name), "fixtures/spark/{name} has no expectation");
        }
    }

    #[test]
    fn fixture_values() {
        let r = parse_register(&fixture("register.json")).unwrap();
        assert_eq!(r.person.as_str(), "Y2lzY29zcGFyazovL3VzL1BFT1BMRS9jYWxsZWU");
        assert_eq!(r.voip_token.as_str(), VOIP);
        assert_eq!(r.msg_token.as_ref().map(|t| t.as_str()), Some(MSG));
        assert!(!r.sandbox);
        assert!(parse_register(&fixture("register-sandbox.json")).unwrap().sandbox);
        assert_eq!(
            parse_webhook(&fixture("webhook-call.json")).unwrap().event,
            WebhookEvent::IncomingCall {
                person: UserId::parse("Y2lzY29zcGFyazovL3VzL1BFT1BMRS9jYWxsZWU").unwrap(),
                call_id: "Y2lzY29zcGFyazovL3VzL0NBTEwvMQ".into(),
                actor_id: Some("Y2lzY29zcGFyazovL3VzL1BFT1BMRS9jYWxsZXI".into()),
                membership_id: Some("Y2lzY29zcGFyazovL3VzL0NBTExfTUVNQkVSU0hJUC8x".into()),
            }
        );
        assert!(matches!(parse_webhook(&fixture("webhook-message.json")).unwrap().event, WebhookEvent::Message { .. }));
        // The signature covers the exact bytes, whitespace included.
        let body = fixture("webhook-call.json");
        let sig = sign(b"webhook-secret", &body);
        assert!(verify_signature(b"webhook-secret", &body, Some(&sig)).is_ok());
        assert!(verify_signature(b"webhook-secret", &body[..body.len() - 1], Some(&sig)).is_err());
    }

    // -- properties -------------------------------------------------------------

    mod props {
        use super::*;
        use proptest::prelude::*;

        const PIECES: &[&str] = &[
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            "\"",
            "null",
            "true",
            "1",
            "\"voipToken\"",
            "\"msgToken\"",
            "\"personId\"",
            "\"email\"",
            "\"sandbox\"",
            "\"resource\"",
            "\"event\"",
            "\"data\"",
            "\"status\"",
            "\"callId\"",
            "\"callMemberships\"",
            "\"created\"",
            "\"notified\"",
            "\"joined\"",
            VOIP,
            PERSON,
            "\"\"",
            " ",
            "\\u0000",
        ];

        proptest! {
            #[test]
            fn never_panics_on_bytes(body in proptest::collection::vec(any::<u8>(), 0..1024)) {
                let _ = parse_register(&body);
                let _ = parse_webhook(&body);
                let _ = verify_signature(b"k", &body, std::str::from_utf8(&body).ok());
            }

            #[test]
            fn never_panics_on_json_pieces(pieces in proptest::collection::vec(proptest::sample::select(PIECES), 0..40)) {
                let body = pieces.concat();
                if let Ok(r) = parse_register(body.as_bytes()) {
                    prop_assert_eq!(r.voip_token.provider(), Provider::Apns);
                    prop_assert!(r.voip_token.as_str().bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
                }
                if let Ok(WebhookEvent::IncomingCall { call_id, .. }) = parse_webhook(body.as_bytes()).map(|w| w.event) {
                    prop_assert!(body.contains("callMemberships") && !call_id.is_empty());
                }
            }

            #[test]
            fn only_the_right_signature_verifies(secret in proptest::collection::vec(any::<u8>(), 0..80),
                                                 body in proptest::collection::vec(any::<u8>(), 0..200),
                                                 sig in "[0-9a-fA-F]{0,44}") {
                let good = sign(&secret, &body);
                prop_assert!(verify_signature(&secret, &body, Some(&good)).is_ok());
                prop_assert_eq!(verify_signature(&secret, &body, Some(&sig)).is_ok(), sig.eq_ignore_ascii_case(&good));
            }

            #[test]
            fn any_status_but_notified_is_ignored(status in "[a-zA-Z]{0,12}") {
                let body = hook("callMemberships", "created", &format!(r#"{{"callId":"C","personId":"{PERSON}","status":"{status}"}}"#));
                let got = parse_webhook(body.as_bytes()).unwrap().event;
                prop_assert_eq!(matches!(got, WebhookEvent::IncomingCall { .. }), status == "notified");
            }
        }
    }

    #[test]
    fn message_events_tell_the_owner_about_others_messages() {
        let seed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/spark/webhook-message.json")).unwrap();
        match parse_webhook(seed.as_bytes()).unwrap().event {
            WebhookEvent::Message { owner, sender_email, message_id } => {
                assert_eq!(owner.as_str(), "Y2lzY29zcGFyazovL3VzL1BFT1BMRS9jYWxsZWU", "createdBy owns the webhook");
                assert_eq!(sender_email.as_str(), "bob@example.com");
                assert_eq!(message_id.as_deref(), Some("Y2lzY29zcGFyazovL3VzL01FU1NBR0UvOTJkYjNiZTA"));
            }
            other => panic!("{other:?}"),
        }
        let owner = r#""createdBy":"Y2lzY29zcGFyazovL3VzL1BFT1BMRS9jYWxsZWU""#;
        let cases: Vec<(String, &str)> = vec![
            (seed.clone(), "message"),
            // The owner's own message: nothing to tell.
            (
                seed.replace(r#""actorId":"Y2lzY29zcGFyazovL3VzL1BFT1BMRS9jYWxsZXI""#, r#""actorId":"Y2lzY29zcGFyazovL3VzL1BFT1BMRS9jYWxsZWU""#),
                "own message",
            ),
            (seed.replace(owner, r#""createdBy":null"#), "missing_field createdBy"),
            (seed.replace(owner, r#""createdBy":"""#), "missing_field createdBy"),
            (seed.replace(owner, r#""createdBy":"a/b""#), "invalid_user createdBy"),
            (seed.replace(r#""actorId":"Y2lzY29zcGFyazovL3VzL1BFT1BMRS9jYWxsZXI","#, ""), "missing_field actorId"),
            (seed.replace(r#""personEmail":"bob@example.com","#, ""), "missing_field data.personEmail"),
            (seed.replace("bob@example.com", "bob"), "invalid_email data.personEmail"),
            (
                seed.replace(r#""personEmail":"bob@example.com","#, r#""personEmail":"bob@example.com","personEmail":"eve@example.com","#),
                "duplicate_field",
            ),
            (seed.replace(r#""event":"created""#, r#""event":"deleted""#), "ignored"),
        ];
        for (i, (body, want)) in cases.iter().enumerate() {
            assert_eq!(check_hook(body), *want, "case {i}");
        }
    }
}

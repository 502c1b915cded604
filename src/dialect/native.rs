//! pushrelay's own registration (interface.md §9), for backends that speak
//! no other dialect: `PUT /v1/users/{userId}/devices/{deviceId}` with
//! `{"channel", "application", "token"?, "subscription"?, "key"?, "format"?}`.
//!
//! `token` for APNs, FCM and Huawei Push Kit; `subscription` (the
//! browser's `PushSubscription` JSON) for Web Push; `key` (base64 of 32
//! bytes) makes the payload the V2 JWE as for UDS devices. Which Web Push
//! endpoints are allowed (`webpush.allowed_hosts`) is checked with the
//! other shared steps in `register`.

use crate::domain::{AppId, Channel, DevicePkid, DeviceToken, DialectData, FieldError, Provider, PushKey, Registration, SubscriptionKeys, UserId};
use serde::Deserialize;

/// Largest body.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    channel: String,
    application: String,
    token: Option<String>,
    subscription: Option<Subscription>,
    key: Option<String>,
    format: Option<String>,
}

/// The browser's `PushSubscription.toJSON()` (`expirationTime` allowed, ignored).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Subscription {
    endpoint: String,
    keys: Option<Keys>,
    #[allow(dead_code)]
    expiration_time: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Keys {
    p256dh: String,
    auth: String,
}

/// A parsed native registration.
#[derive(Clone, Debug)]
pub struct NativeDevice {
    pub channel: Channel,
    pub app: AppId,
    pub token: DeviceToken,
    pub subscription_keys: Option<SubscriptionKeys>,
    /// `format: v2`: the V2 JWE under this key.
    pub key: Option<PushKey>,
}

fn field(name: &'static str, code: &'static str, message: impl Into<String>) -> FieldError {
    FieldError::new(name, code, message)
}

/// Parse the body; every refusal names its field.
pub fn parse(body: &[u8]) -> Result<NativeDevice, FieldError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(field("", "too_large", format!("body is larger than {MAX_BODY_BYTES} bytes")));
    }
    let b: Body = serde_json::from_slice(body).map_err(|e| field("", "invalid_json", format!("body is not the expected JSON: {e}")))?;
    let channel = Channel::parse_any(&b.channel, "channel")?;
    let app = AppId::parse(&b.application).map_err(|e| FieldError { field: "application", code: "invalid_app_id", ..e })?;
    let (token, subscription_keys) = match (channel.provider(), b.token, b.subscription) {
        (Provider::WebPush, Some(_), _) => return Err(field("token", "invalid_field", "a WEBPUSH device has no token: give subscription")),
        (Provider::WebPush, None, None) => {
            return Err(field("subscription", "missing_field", "subscription (the browser's PushSubscription JSON) is required for WEBPUSH"))
        }
        (Provider::WebPush, None, Some(sub)) => {
            let keys = sub.keys.ok_or_else(|| field("subscription", "invalid_subscription", "subscription.keys (p256dh and auth) is required"))?;
            (DeviceToken::parse(Provider::WebPush, &sub.endpoint)?, Some(SubscriptionKeys::parse(&keys.p256dh, &keys.auth)?))
        }
        (_, _, Some(_)) => return Err(field("subscription", "invalid_field", format!("subscription belongs to WEBPUSH devices, not {channel}"))),
        (_, None, None) => return Err(field("token", "missing_field", format!("token is required for {channel}"))),
        (provider, Some(raw), None) => {
            let token = DeviceToken::parse(provider, raw.trim()).map_err(|e| FieldError {
                field: "token",
                message: e.message.replace("pushNotifyToken", "token"),
                ..e
            })?;
            (token, None)
        }
    };
    let key = b.key.as_deref().map(PushKey::parse_b64).transpose().map_err(|e| FieldError { field: "key", ..e })?;
    match (b.format.as_deref(), &key) {
        (None, _) | (Some("v2"), Some(_)) | (Some("plain"), None) => {}
        (Some("v2"), None) => return Err(field("key", "missing_field", "format v2 needs the device's key (base64 of 32 bytes)")),
        (Some("plain"), Some(_)) => return Err(field("key", "invalid_field", "format plain takes no key (the key makes the payload the V2 JWE)")),
        (Some(other), _) => {
            let shown: String = other.chars().take(16).collect();
            return Err(field("format", "invalid_field", format!("format must be v2 or plain (got {shown:?})")));
        }
    }
    Ok(NativeDevice { channel, app, token, subscription_keys, key })
}

impl NativeDevice {
    pub fn into_registration(self, user: UserId, device: DevicePkid) -> Registration {
        Registration {
            user,
            device,
            channel: self.channel,
            token: self.token,
            subscription_keys: self.subscription_keys,
            app: self.app,
            data: DialectData::Native { key: self.key },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "JH/VEZ9YjinNA+AvUrjI+ncgVVycPbIVJixFOOm/xIU=";
    const P256DH: &str = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";

    fn p(v: serde_json::Value) -> Result<NativeDevice, FieldError> {
        parse(v.to_string().as_bytes())
    }

    #[test]
    fn each_channel_takes_what_it_needs() {
        let d = p(serde_json::json!({"channel": "HMS", "application": "com.a", "token": "IQAAAACy0kYk"})).unwrap();
        assert_eq!((d.channel, d.key.is_none()), (Channel::Hms, true));
        let d = p(serde_json::json!({"channel": "APNS", "application": "com.a", "token": "00112233445566778899aabbccddeeff", "key": KEY})).unwrap();
        assert!(d.key.is_some(), "a key makes the V2 JWE");
        let sub = serde_json::json!({"endpoint": "https://fcm.googleapis.com/fcm/send/x", "expirationTime": null, "keys": {"p256dh": P256DH, "auth": "BTBZMqHH6r4Tts7J_aSIgg"}});
        let d = p(serde_json::json!({"channel": "WEBPUSH", "application": "com.a", "subscription": sub})).unwrap();
        assert!(d.subscription_keys.is_some());
        assert_eq!(d.token.as_str(), "https://fcm.googleapis.com/fcm/send/x");
    }

    #[test]
    fn bad_bodies_name_their_field() {
        let cases = [
            (serde_json::json!({"channel": "GCM", "application": "com.a", "token": "t"}), "channel"),
            (serde_json::json!({"channel": "HMS", "application": "com a", "token": "t"}), "application"),
            (serde_json::json!({"channel": "HMS", "application": "com.a"}), "token"),
            (serde_json::json!({"channel": "APNS", "application": "com.a", "token": "zz"}), "token"),
            (serde_json::json!({"channel": "WEBPUSH", "application": "com.a", "token": "t"}), "token"),
            (serde_json::json!({"channel": "WEBPUSH", "application": "com.a"}), "subscription"),
            (
                serde_json::json!({"channel": "WEBPUSH", "application": "com.a", "subscription": {"endpoint": "http://x/y", "keys": {"p256dh": P256DH, "auth": "BTBZMqHH6r4Tts7J_aSIgg"}}}),
                "subscription",
            ),
            (
                serde_json::json!({"channel": "WEBPUSH", "application": "com.a", "subscription": {"endpoint": "https://x/y", "keys": {"p256dh": "AAAA", "auth": "BTBZMqHH6r4Tts7J_aSIgg"}}}),
                "subscription",
            ),
            (serde_json::json!({"channel": "FCM", "application": "com.a", "token": "t", "key": "c2hvcnQ="}), "key"),
            (serde_json::json!({"channel": "FCM", "application": "com.a", "token": "t", "format": "v2"}), "key"),
            (serde_json::json!({"channel": "FCM", "application": "com.a", "token": "t", "format": "v3"}), "format"),
            (serde_json::json!({"channel": "FCM", "application": "com.a", "token": "t", "extra": 1}), ""),
        ];
        for (body, field) in cases {
            assert_eq!(p(body.clone()).unwrap_err().field, field, "{body}");
        }
    }
}

use super::{Channel, FieldError, Provider};
use crate::secret::Secret;
use std::fmt;

/// A device's push token, already in the form its provider expects:
/// APNs tokens are lower-case hex (8–100 bytes), FCM tokens opaque strings
/// of at most 4096 printable ASCII characters, Huawei Push Kit tokens
/// opaque strings of at most 512, and a Web Push "token" is the browser
/// subscription's endpoint, an `https://` URL of at most 2048 characters
/// (which hosts are allowed is `provider::webpush`'s rule).
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceToken {
    provider: Provider,
    value: String,
}

impl DeviceToken {
    pub fn parse(provider: Provider, raw: &str) -> Result<Self, FieldError> {
        if provider == Provider::WebPush {
            return Self::web_push_endpoint(raw);
        }
        let bad = |m: String| FieldError::new("pushNotifyToken", "invalid_token", m);
        if raw.is_empty() {
            return Err(bad("pushNotifyToken must not be empty".into()));
        }
        if raw.chars().any(|c| c.is_whitespace()) {
            return Err(bad("pushNotifyToken must not contain whitespace".into()));
        }
        match provider {
            Provider::Apns => {
                if !raw.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(bad("an APNs token must be hex digits".into()));
                }
                if raw.len() % 2 != 0 {
                    return Err(bad("an APNs token must have an even number of hex digits".into()));
                }
                let bytes = raw.len() / 2;
                if !(8..=100).contains(&bytes) {
                    return Err(bad(format!("an APNs token must be 8 to 100 bytes (got {bytes})")));
                }
                Ok(Self { provider, value: raw.to_ascii_lowercase() })
            }
            Provider::Fcm | Provider::Hms => {
                let (name, max) = if provider == Provider::Fcm { ("FCM", 4096) } else { ("HMS", 512) };
                if raw.len() > max {
                    return Err(bad(format!("an {name} token must be at most {max} characters")));
                }
                if !raw.chars().all(|c| c.is_ascii_graphic()) {
                    return Err(bad(format!("an {name} token must be printable ASCII")));
                }
                Ok(Self { provider, value: raw.to_string() })
            }
            // Its own rules (and field) from the start, above.
            Provider::WebPush => Self::web_push_endpoint(raw),
        }
    }

    /// A Web Push subscription's endpoint: an `https://` URL of printable
    /// ASCII, at most 2048 characters (which hosts are allowed is
    /// `domain::AllowedHosts`).
    fn web_push_endpoint(raw: &str) -> Result<Self, FieldError> {
        let bad = |m: &str| FieldError::new("subscription", "invalid_subscription", m);
        if raw.len() > 2048 || !raw.chars().all(|c| c.is_ascii_graphic()) {
            return Err(bad("subscription.endpoint must be a URL of at most 2048 printable ASCII characters"));
        }
        if !raw.get(..8).is_some_and(|s| s.eq_ignore_ascii_case("https://")) || raw.len() <= 8 {
            return Err(bad("subscription.endpoint must be an https:// URL"));
        }
        Ok(Self { provider: Provider::WebPush, value: raw.to_string() })
    }

    pub fn for_channel(channel: Channel, raw: &str) -> Result<Self, FieldError> {
        Self::parse(channel.provider(), raw)
    }

    pub fn provider(&self) -> Provider {
        self.provider
    }
    /// The full token, for the provider request and the store only.
    pub fn as_str(&self) -> &str {
        &self.value
    }
    /// The last 8 characters: what logs and the operator view show.
    pub fn suffix(&self) -> &str {
        let n = self.value.len();
        &self.value[n.saturating_sub(8)..]
    }
}

/// A Web Push subscription's keys (RFC 8291): the browser's P-256 public
/// key (`p256dh`, the 65-byte uncompressed point) and its 16-byte
/// authentication secret (`auth`), which is sealed at rest like a device key.
#[derive(Clone)]
pub struct SubscriptionKeys {
    pub p256dh: [u8; 65],
    pub auth: Secret<[u8; 16]>,
}

impl SubscriptionKeys {
    /// From the `PushSubscription` JSON's base64url strings (padded or not).
    pub fn parse(p256dh: &str, auth: &str) -> Result<Self, FieldError> {
        use base64::Engine;
        let b64 = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(v.trim_end_matches('='));
        let bad = |m: &str| FieldError::new("subscription", "invalid_subscription", m);
        let point = b64(p256dh).map_err(|_| bad("subscription.keys.p256dh must be base64url"))?;
        let p256dh: [u8; 65] = point.try_into().map_err(|_| bad("subscription.keys.p256dh must be a 65-byte uncompressed P-256 public key"))?;
        if p256dh[0] != 4 || p256::PublicKey::from_sec1_bytes(&p256dh).is_err() {
            return Err(bad("subscription.keys.p256dh must be an uncompressed point on P-256"));
        }
        let auth = b64(auth).map_err(|_| bad("subscription.keys.auth must be base64url"))?;
        let auth: [u8; 16] = auth.try_into().map_err(|_| bad("subscription.keys.auth must be 16 bytes"))?;
        Ok(Self { p256dh, auth: Secret::new(auth) })
    }

    /// As stored (inside the master-key envelope): `p256dh.auth`, base64url.
    pub fn to_stored(&self) -> String {
        use base64::Engine;
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!("{}.{}", e.encode(self.p256dh), e.encode(self.auth.expose()))
    }

    pub fn from_stored(raw: &str) -> Result<Self, FieldError> {
        let (p, a) = raw.split_once('.').ok_or_else(|| FieldError::new("subscription", "invalid_subscription", "stored keys are unreadable"))?;
        Self::parse(p, a)
    }
}

impl fmt::Debug for SubscriptionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SubscriptionKeys(<redacted>)")
    }
}

impl PartialEq for SubscriptionKeys {
    fn eq(&self, other: &Self) -> bool {
        self.p256dh == other.p256dh && self.auth.expose() == other.auth.expose()
    }
}

impl fmt::Debug for DeviceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceToken({:?}, …{})", self.provider, self.suffix())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apns_token_is_lowercased_hex() {
        let t = DeviceToken::parse(Provider::Apns, "5C0A2F1E9B7D4C3A8E6F1D2B3C4A5E6F").unwrap();
        assert_eq!(t.as_str(), "5c0a2f1e9b7d4c3a8e6f1d2b3c4a5e6f");
        assert_eq!(t.suffix(), "3c4a5e6f");
    }

    #[test]
    fn bad_apns_tokens_are_rejected() {
        for bad in ["", "abc", "zz0a2f1e9b7d4c3a", "5c0a 2f1e9b7d4c3a", "0011"] {
            assert_eq!(DeviceToken::parse(Provider::Apns, bad).unwrap_err().code, "invalid_token", "{bad}");
        }
        assert!(DeviceToken::parse(Provider::Apns, &"ab".repeat(101)).is_err());
    }

    #[test]
    fn fcm_tokens_keep_their_case_and_colons() {
        let t = DeviceToken::parse(Provider::Fcm, "cX1:APA91bG-Zz_9").unwrap();
        assert_eq!(t.as_str(), "cX1:APA91bG-Zz_9");
        assert!(DeviceToken::parse(Provider::Fcm, &"a".repeat(4097)).is_err());
    }

    #[test]
    fn hms_tokens_and_web_push_endpoints() {
        assert!(DeviceToken::parse(Provider::Hms, "IQAAAACy0kYkAAB6hRm0f6H").is_ok());
        assert!(DeviceToken::parse(Provider::Hms, &"a".repeat(513)).is_err());
        assert!(DeviceToken::parse(Provider::WebPush, "https://fcm.googleapis.com/fcm/send/abc").is_ok());
        for bad in ["http://updates.push.services.mozilla.com/wpush/v2/x", "https://", "ftp://x", "https://a b"] {
            assert_eq!(DeviceToken::parse(Provider::WebPush, bad).unwrap_err().code, "invalid_subscription", "{bad}");
        }
    }

    #[test]
    fn subscription_keys_parse_and_round_trip() {
        // RFC 8291 appendix A's receiver.
        let k = SubscriptionKeys::parse(
            "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
            "BTBZMqHH6r4Tts7J_aSIgg",
        )
        .unwrap();
        assert_eq!(SubscriptionKeys::from_stored(&k.to_stored()).unwrap(), k);
        assert!(SubscriptionKeys::parse("BCVx", "BTBZMqHH6r4Tts7J_aSIgg").is_err());
        assert!(SubscriptionKeys::parse("BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4", "AAAA").is_err());
    }

    #[test]
    fn debug_shows_only_the_suffix() {
        let t = DeviceToken::parse(Provider::Apns, &"ab".repeat(32)).unwrap();
        assert_eq!(format!("{t:?}").matches("ab").count(), 4);
    }
}

use super::{Channel, FieldError, Provider};
use std::fmt;

/// A device's push token, already in the form its provider expects:
/// APNs tokens are lower-case hex (8–100 bytes), FCM tokens are opaque
/// strings of at most 4096 printable ASCII characters.
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceToken {
    provider: Provider,
    value: String,
}

impl DeviceToken {
    pub fn parse(provider: Provider, raw: &str) -> Result<Self, FieldError> {
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
            Provider::Fcm => {
                if raw.len() > 4096 {
                    return Err(bad("an FCM token must be at most 4096 characters".into()));
                }
                if !raw.chars().all(|c| c.is_ascii_graphic()) {
                    return Err(bad("an FCM token must be printable ASCII".into()));
                }
                Ok(Self { provider, value: raw.to_string() })
            }
        }
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
    fn debug_shows_only_the_suffix() {
        let t = DeviceToken::parse(Provider::Apns, &"ab".repeat(32)).unwrap();
        assert_eq!(format!("{t:?}").matches("ab").count(), 4);
    }
}

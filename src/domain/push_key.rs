use super::FieldError;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use std::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// The 32-byte AES-256-GCM key of one device (the UDS `<key>`, decoded).
/// It is the JWE content-encryption key (`alg: dir`). Wiped on drop;
/// `Debug` is redacted and there is no `Display`.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct PushKey([u8; 32]);

impl PushKey {
    /// Standard base64 (with `=` padding) of exactly 32 bytes; surrounding
    /// whitespace is ignored.
    pub fn parse_b64(raw: &str) -> Result<Self, FieldError> {
        let bytes = STANDARD
            .decode(raw.trim())
            .map_err(|_| FieldError::new("key", "invalid_key", "key must be base64 of exactly 32 bytes (not valid base64)"))?;
        let len = bytes.len();
        let arr: [u8; 32] =
            bytes.try_into().map_err(|_| FieldError::new("key", "invalid_key", format!("key must be base64 of exactly 32 bytes (got {len})")))?;
        Ok(Self(arr))
    }
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
    /// Standard base64, for storage (inside an encrypted envelope) only.
    pub fn to_b64(&self) -> String {
        STANDARD.encode(self.0)
    }
}

impl fmt::Debug for PushKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PushKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_of_32_bytes_parses_and_never_prints() {
        let k = PushKey::parse_b64(" JH/VEZ9YjinNA+AvUrjI+ncgVVycPbIVJixFOOm/xIU=\n").unwrap();
        assert_eq!(k.as_bytes()[0], 0x24);
        assert_eq!(format!("{k:?}"), "PushKey(<redacted>)");
    }

    #[test]
    fn key_of_31_or_33_bytes_is_rejected_with_the_length() {
        let short = STANDARD.encode([7u8; 31]);
        let e = PushKey::parse_b64(&short).unwrap_err();
        assert_eq!((e.field, e.code), ("key", "invalid_key"));
        assert!(e.message.contains("got 31"), "{}", e.message);
        assert!(PushKey::parse_b64(&STANDARD.encode([7u8; 33])).is_err());
    }

    #[test]
    fn non_base64_key_is_rejected() {
        assert!(PushKey::parse_b64("not base64!!").is_err());
        assert!(PushKey::parse_b64("").is_err());
    }
}

//! Identifier newtypes. Each has a private field and one `parse`.
use super::FieldError;
use std::fmt;

fn check_id(field: &'static str, code: &'static str, raw: &str, max: usize, allowed: impl Fn(char) -> bool) -> Result<String, FieldError> {
    if raw.is_empty() {
        return Err(FieldError::new(field, code, format!("{field} must not be empty")));
    }
    if raw.len() > max {
        return Err(FieldError::new(field, code, format!("{field} is longer than {max} bytes")));
    }
    if let Some(c) = raw.chars().find(|c| !allowed(*c)) {
        return Err(FieldError::new(field, code, format!("{field} contains a character that is not allowed ({c:?})")));
    }
    Ok(raw.to_string())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $field:literal, $code:literal, $max:expr, $allowed:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn parse(raw: &str) -> Result<Self, FieldError> {
                check_id($field, $code, raw, $max, $allowed).map(Self)
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }
        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        /// Read back (stored reports): parsed like any input.
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                Self::parse(&raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

fn id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@' | '+' | ':' | '=')
}

id_type!(
    /// An end user: the CUCM user id, a Webex personId, a SIP AOR user part.
    UserId, "userId", "invalid_user", 256, id_char
);
id_type!(
    /// A device of a user (CUCM devicePkid, or an id derived by a dialect).
    DevicePkid, "devicePkid", "invalid_device", 256, id_char
);
id_type!(
    /// The application id the provider credentials are stored under
    /// (the UDS `<application>`, e.g. `com.example.KitchenSink`).
    AppId, "application", "unknown_application", 200,
    |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
);
id_type!(
    /// An iOS bundle id (`com.example.KitchenSink`); the VoIP topic is `<bundle>.voip`.
    BundleId, "bundleId", "invalid_bundle_id", 155,
    |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')
);

impl BundleId {
    /// The `apns-topic` for VoIP pushes.
    pub fn voip_topic(&self) -> String {
        format!("{}.voip", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_user_id_is_rejected() {
        assert_eq!(UserId::parse("").unwrap_err().field, "userId");
    }

    #[test]
    fn control_characters_are_rejected() {
        assert!(DevicePkid::parse("a\nb").is_err());
        assert!(AppId::parse("com.example app").is_err());
    }

    #[test]
    fn typical_ids_parse() {
        assert_eq!(UserId::parse("alice@example.com").unwrap().as_str(), "alice@example.com");
        assert!(DevicePkid::parse("5f6c1a52-9d0e-4b8e-a6a1-1c2d3e4f5a6b").is_ok());
        assert_eq!(BundleId::parse("com.example.KitchenSink").unwrap().voip_topic(), "com.example.KitchenSink.voip");
    }
}

/// An e-mail address as Webex registrations carry it (seeds/000), kept in
/// lower case so lookups by address ignore case. Only its shape is checked:
/// `local@domain`, at most 254 bytes, no spaces or control characters.
#[derive(Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let bad = || FieldError::new("email", "invalid_email", "email must look like name@domain (at most 254 bytes)");
        if raw.len() > 254 || raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad());
        }
        match raw.split_once('@') {
            Some((local, domain)) if !local.is_empty() && !domain.is_empty() && !domain.contains('@') => Ok(Self(raw.to_lowercase())),
            _ => Err(bad()),
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Email({:?})", self.0)
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

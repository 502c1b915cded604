use super::FieldError;
use std::fmt;

/// Where a device is woken: APNs production, APNs sandbox, or FCM.
/// Serialized as its UDS name (`APNS`, `APNS:dev`, `FCM`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(into = "&'static str", try_from = "String")]
pub enum Channel {
    Apns,
    ApnsDev,
    Fcm,
}

/// The push service behind a channel (credentials are stored per provider).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Provider {
    Apns,
    Fcm,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Apns => "apns",
            Provider::Fcm => "fcm",
        }
    }

    /// Read back a stored `apns`/`fcm`.
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        match raw {
            "apns" => Ok(Provider::Apns),
            "fcm" => Ok(Provider::Fcm),
            other => Err(FieldError::new("provider", "invalid_provider", format!("provider must be apns or fcm (got {:?})", truncate(other)))),
        }
    }
}

/// What an app's stored credentials are for: a push provider, or the
/// Webex webhook secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CredentialKind {
    Apns,
    Fcm,
    Webex,
    /// Where and how delivery reports are posted back (`PUT /v1/apps/{app}/callback`).
    Callback,
}

impl CredentialKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::Apns => "apns",
            CredentialKind::Fcm => "fcm",
            CredentialKind::Webex => "webex",
            CredentialKind::Callback => "callback",
        }
    }
}

impl From<Provider> for CredentialKind {
    fn from(p: Provider) -> Self {
        match p {
            Provider::Apns => CredentialKind::Apns,
            Provider::Fcm => CredentialKind::Fcm,
        }
    }
}

impl From<Channel> for &'static str {
    fn from(c: Channel) -> Self {
        c.as_str()
    }
}

impl TryFrom<String> for Channel {
    type Error = FieldError;
    fn try_from(raw: String) -> Result<Self, FieldError> {
        Channel::parse(&raw)
    }
}

impl Channel {
    /// The production channel of a provider (APNs production, FCM).
    pub fn for_provider(provider: Provider) -> Self {
        match provider {
            Provider::Apns => Channel::Apns,
            Provider::Fcm => Channel::Fcm,
        }
    }

    /// Exact, case-sensitive match on the UDS `pushChannelType` values.
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        match raw {
            "APNS" => Ok(Channel::Apns),
            "APNS:dev" => Ok(Channel::ApnsDev),
            "FCM" => Ok(Channel::Fcm),
            other => Err(FieldError::new(
                "pushChannelType",
                "invalid_channel",
                format!("pushChannelType must be APNS, APNS:dev or FCM (got {:?})", truncate(other)),
            )),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Apns => "APNS",
            Channel::ApnsDev => "APNS:dev",
            Channel::Fcm => "FCM",
        }
    }
    pub fn provider(self) -> Provider {
        match self {
            Channel::Apns | Channel::ApnsDev => Provider::Apns,
            Channel::Fcm => Provider::Fcm,
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which wire dialect registered a device; it decides the payload format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dialect {
    Uds,
    Spark,
    Acrobits,
    Sip,
}

impl Dialect {
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::Uds => "uds",
            Dialect::Spark => "spark",
            Dialect::Acrobits => "acrobits",
            Dialect::Sip => "sip",
        }
    }
    /// Parse the stored name (only values written by `as_str`).
    pub fn from_stored(raw: &str) -> Option<Self> {
        Some(match raw {
            "uds" => Dialect::Uds,
            "spark" => Dialect::Spark,
            "acrobits" => Dialect::Acrobits,
            "sip" => Dialect::Sip,
            _ => return None,
        })
    }
}

/// The UDS `payloadVersion`; only V2 exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadVersion {
    V2,
}

impl PayloadVersion {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        match raw {
            "V2" => Ok(PayloadVersion::V2),
            other => Err(FieldError::new(
                "payloadVersion",
                "invalid_payload_version",
                format!("payloadVersion must be V2 (got {:?})", truncate(other)),
            )),
        }
    }
    pub fn as_str(self) -> &'static str {
        "V2"
    }
}

/// Echo at most 40 characters of a refused value.
pub(crate) fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_match_is_exact_and_case_sensitive() {
        assert_eq!(Channel::parse("APNS").unwrap(), Channel::Apns);
        assert_eq!(Channel::parse("APNS:dev").unwrap(), Channel::ApnsDev);
        assert_eq!(Channel::parse("FCM").unwrap(), Channel::Fcm);
        for bad in ["apns", "APNS:DEV", "GCM", "", " APNS"] {
            assert_eq!(Channel::parse(bad).unwrap_err().code, "invalid_channel", "{bad}");
        }
    }

    #[test]
    fn only_v2_payloads() {
        assert!(PayloadVersion::parse("V2").is_ok());
        assert_eq!(PayloadVersion::parse("V1").unwrap_err().field, "payloadVersion");
    }
}

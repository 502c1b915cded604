use super::FieldError;
use std::fmt;

named! {
    /// Where a device is woken: APNs production, APNs sandbox, FCM, Huawei
    /// Push Kit, or a browser's Web Push service. Serialized as its UDS name
    /// (`APNS`, `APNS:dev`, `FCM`) or its interface.md §9 name (`HMS`, `WEBPUSH`).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
    #[serde(into = "&'static str", try_from = "String")]
    pub enum Channel {
        Apns => "APNS",
        ApnsDev => "APNS:dev",
        Fcm => "FCM",
        Hms => "HMS",
        WebPush => "WEBPUSH",
    }
}

named! {
    /// The push service behind a channel (credentials are stored per
    /// provider). `ALL` drives the registry, metric labels, routes and the
    /// console.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
    pub enum Provider {
        Apns => "apns",
        Fcm => "fcm",
        Hms => "hms",
        WebPush => "webpush",
    }
}

impl Provider {
    /// Read back a stored name (`apns`, `fcm`, `hms`, `webpush`).
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        Provider::ALL.into_iter().find(|p| p.as_str() == raw).ok_or_else(|| {
            let names: Vec<&str> = Provider::ALL.iter().map(|p| p.as_str()).collect();
            FieldError::new("provider", "invalid_provider", format!("provider must be one of {} (got {:?})", names.join(", "), truncate(raw)))
        })
    }
}

/// What an app's stored credentials are for: a push provider, or the
/// Webex webhook secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CredentialKind {
    /// A push provider's credentials.
    Push(Provider),
    Webex,
    /// Where and how delivery reports were posted back before tenants
    /// (now `app_callbacks`; kept so old rows read back).
    Callback,
}

impl CredentialKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::Push(p) => p.as_str(),
            CredentialKind::Webex => "webex",
            CredentialKind::Callback => "callback",
        }
    }
}

impl From<Provider> for CredentialKind {
    fn from(p: Provider) -> Self {
        CredentialKind::Push(p)
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
        Channel::parse_any(&raw, "channel")
    }
}

impl Channel {
    /// The channels CUCM UDS knows (its `pushChannelType`); Kazoo and
    /// Acrobits keep their sets too.
    pub const UDS: [Channel; 3] = [Channel::Apns, Channel::ApnsDev, Channel::Fcm];

    /// The production channel of a provider.
    pub fn for_provider(provider: Provider) -> Self {
        match provider {
            Provider::Apns => Channel::Apns,
            Provider::Fcm => Channel::Fcm,
            Provider::Hms => Channel::Hms,
            Provider::WebPush => Channel::WebPush,
        }
    }

    /// Exact, case-sensitive match on one of `allowed` (`field` is the
    /// request's name for it).
    pub fn parse_among(raw: &str, allowed: &[Channel], field: &'static str) -> Result<Self, FieldError> {
        allowed.iter().copied().find(|c| c.as_str() == raw).ok_or_else(|| {
            let names: Vec<&str> = allowed.iter().map(|c| c.as_str()).collect();
            let list = match names.split_last() {
                Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
                _ => names.join(""),
            };
            FieldError::new(field, "invalid_channel", format!("{field} must be {list} (got {:?})", truncate(raw)))
        })
    }

    /// Exact, case-sensitive match on the UDS `pushChannelType` values.
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        Self::parse_among(raw, &Channel::UDS, "pushChannelType")
    }

    /// Any channel (stored rows, the native registration, test pushes).
    pub fn parse_any(raw: &str, field: &'static str) -> Result<Self, FieldError> {
        Self::parse_among(raw, &Channel::ALL, field)
    }

    pub fn provider(self) -> Provider {
        match self {
            Channel::Apns | Channel::ApnsDev => Provider::Apns,
            Channel::Fcm => Provider::Fcm,
            Channel::Hms => Provider::Hms,
            Channel::WebPush => Provider::WebPush,
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

named! {
    /// Which wire dialect registered a device; it decides the payload format.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub enum Dialect {
        Uds => "uds",
        Spark => "spark",
        Acrobits => "acrobits",
        Sip => "sip",
        /// pushrelay's own (`PUT /v1/users/{user}/devices/{device}`).
        Native => "native",
    }
}

impl Dialect {
    /// Parse the stored name (only values written by `as_str`).
    pub fn from_stored(raw: &str) -> Option<Self> {
        Dialect::ALL.into_iter().find(|d| d.as_str() == raw)
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
            other => {
                Err(FieldError::new("payloadVersion", "invalid_payload_version", format!("payloadVersion must be V2 (got {:?})", truncate(other))))
            }
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
        for bad in ["apns", "APNS:DEV", "GCM", "", " APNS", "HMS", "WEBPUSH"] {
            assert_eq!(Channel::parse(bad).unwrap_err().code, "invalid_channel", "{bad}");
        }
        assert_eq!(Channel::parse("HMS").unwrap_err().message, "pushChannelType must be APNS, APNS:dev or FCM (got \"HMS\")");
        for c in Channel::ALL {
            assert_eq!(Channel::parse_any(c.as_str(), "channel").unwrap(), c);
            assert_eq!(Channel::for_provider(c.provider()).provider(), c.provider());
        }
    }

    #[test]
    fn stored_names_read_back() {
        for p in Provider::ALL {
            assert_eq!(Provider::parse(p.as_str()).unwrap(), p);
        }
        for d in Dialect::ALL {
            assert_eq!(Dialect::from_stored(d.as_str()), Some(d));
        }
    }

    #[test]
    fn only_v2_payloads() {
        assert!(PayloadVersion::parse("V2").is_ok());
        assert_eq!(PayloadVersion::parse("V1").unwrap_err().field, "payloadVersion");
    }
}

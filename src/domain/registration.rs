use super::{AppId, Channel, DevicePkid, DeviceToken, Dialect, Email, PayloadVersion, PushKey, SubscriptionKeys, TenantId, UserId};

/// What a dialect parsed out of one registration request: everything needed
/// to wake one device later. Built only from parsed values.
#[derive(Clone, Debug)]
pub struct Registration {
    pub user: UserId,
    pub device: DevicePkid,
    pub channel: Channel,
    /// The token calls are pushed to (APNs: the VoIP/PushKit token; Web
    /// Push: the subscription's endpoint).
    pub token: DeviceToken,
    /// A Web Push subscription's encryption keys (none: pushes without a
    /// payload, RFC 8030 §5).
    pub subscription_keys: Option<SubscriptionKeys>,
    pub app: AppId,
    /// What only this device's dialect has.
    pub data: DialectData,
}

/// Per-dialect registration data: a UDS device always has its key, a SIP
/// device always its binding; nothing has a field it cannot use.
#[derive(Clone, Debug)]
pub enum DialectData {
    /// CUCM UDS: the device's own JWE key and payload version.
    Uds { key: PushKey, version: PayloadVersion },
    /// Webex: a second, non-VoIP token for alerts (`msgToken`), and the
    /// person's e-mail address when the app sent one (`GET /register?email=`).
    Spark { msg: Option<MessageToken>, email: Option<Email> },
    /// Acrobits: the message token (`token_msgs`), if reported.
    Acrobits { msg: Option<MessageToken> },
    /// SIP: where the device registered (for `/sip/wake` and the Mizu
    /// payload), and an RFC 8599 `remote` token next to the `voip` one.
    Sip { binding: SipBinding, msg: Option<MessageToken> },
    /// pushrelay's own registration: with a key, calls are the V2 JWE as
    /// for UDS devices; without, the plain call payload.
    Native { key: Option<PushKey> },
}

impl Registration {
    pub fn dialect(&self) -> Dialect {
        match self.data {
            DialectData::Uds { .. } => Dialect::Uds,
            DialectData::Spark { .. } => Dialect::Spark,
            DialectData::Acrobits { .. } => Dialect::Acrobits,
            DialectData::Sip { .. } => Dialect::Sip,
            DialectData::Native { .. } => Dialect::Native,
        }
    }

    /// The token for regular (non-VoIP) pushes, when the dialect has one.
    pub fn msg(&self) -> Option<&MessageToken> {
        match &self.data {
            DialectData::Spark { msg, .. } | DialectData::Acrobits { msg } | DialectData::Sip { msg, .. } => msg.as_ref(),
            DialectData::Uds { .. } | DialectData::Native { .. } => None,
        }
    }

    /// The SIP binding of a SIP device.
    pub fn sip(&self) -> Option<&SipBinding> {
        match &self.data {
            DialectData::Sip { binding, .. } => Some(binding),
            _ => None,
        }
    }

    /// The JWE key of a UDS device (or a native one registered with a key).
    pub fn key(&self) -> Option<&PushKey> {
        match &self.data {
            DialectData::Uds { key, .. } => Some(key),
            DialectData::Native { key } => key.as_ref(),
            _ => None,
        }
    }
}

/// A device's token for regular (non-VoIP) pushes.
#[derive(Clone, Debug)]
pub struct MessageToken {
    pub app: AppId,
    pub channel: Channel,
    pub token: DeviceToken,
}

/// Which SIP push convention a device used; it decides the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SipFormat {
    /// MizuTech `X-MPUSH` (seeds/001): the Mizu payload.
    Mpush,
    /// RFC 8599 `pn-*` Contact parameters.
    Rfc8599,
    /// RFC 8599 with only a `remote` token (APNs `pn-param` without the
    /// `voip` service): calls go to it as alert pushes, not VoIP.
    Rfc8599Alert,
    /// Kazoo-style Contact parameters picked by a User-Agent rule (seeds/004).
    Kazoo,
}

impl SipFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            SipFormat::Mpush => "mpush",
            SipFormat::Rfc8599 => "rfc8599",
            SipFormat::Rfc8599Alert => "rfc8599-alert",
            SipFormat::Kazoo => "kazoo",
        }
    }
    pub fn from_stored(raw: &str) -> Option<Self> {
        Some(match raw {
            "mpush" => SipFormat::Mpush,
            "rfc8599" => SipFormat::Rfc8599,
            "rfc8599-alert" => SipFormat::Rfc8599Alert,
            "kazoo" => SipFormat::Kazoo,
            _ => return None,
        })
    }
}

/// The SIP side of a registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SipBinding {
    /// The address of record, e.g. `sip:1111@example.com`.
    pub aor: String,
    /// The Contact the device registered (what `/sip/wake` answers with).
    pub contact: Option<String>,
    pub format: SipFormat,
    /// RFC 8599 `pn-purr`, stored, not interpreted.
    pub purr: Option<String>,
}

/// A stored registration with its timestamps (epoch ms).
#[derive(Clone, Debug)]
pub struct Device {
    pub registration: Registration,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A stored device whose sealed secret (its JWE key) this node cannot open:
/// reported `failed` with reason `unreadable_secret`, never a whole-call error.
#[derive(Clone, Debug)]
pub struct UnreadableDevice {
    pub user: UserId,
    pub device: DevicePkid,
    pub dialect: Dialect,
    pub app: AppId,
    pub channel: Channel,
}

/// The devices a lookup found, all of one tenant: those ready to push, and
/// those whose secret could not be opened.
#[derive(Clone, Debug)]
pub struct DeviceSet {
    pub tenant: TenantId,
    pub ready: Vec<Device>,
    pub unreadable: Vec<UnreadableDevice>,
    /// Served from the device cache past its time to live because the
    /// store could not be read (the call report says so).
    pub stale: bool,
}

impl DeviceSet {
    /// No devices yet, of `tenant`.
    pub fn empty(tenant: TenantId) -> Self {
        Self { tenant, ready: Vec::new(), unreadable: Vec::new(), stale: false }
    }

    pub fn is_empty(&self) -> bool {
        self.ready.is_empty() && self.unreadable.is_empty()
    }

    pub fn len(&self) -> usize {
        self.ready.len() + self.unreadable.len()
    }

    /// Keep the devices for which `keep(user, device, dialect, app)` holds.
    pub fn retain(&mut self, keep: impl Fn(&UserId, &DevicePkid, Dialect, &AppId) -> bool) {
        self.ready.retain(|d| keep(&d.registration.user, &d.registration.device, d.registration.dialect(), &d.registration.app));
        self.unreadable.retain(|d| keep(&d.user, &d.device, d.dialect, &d.app));
    }

    /// The user of the first device (all of a set's devices share one on every lookup but by AOR).
    pub fn first_user(&self) -> Option<&UserId> {
        self.ready.first().map(|d| &d.registration.user).or_else(|| self.unreadable.first().map(|d| &d.user))
    }
}

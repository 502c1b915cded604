use super::{AppId, Channel, DevicePkid, DeviceToken, Dialect, PayloadVersion, PushKey, UserId};

/// What a dialect parsed out of one registration request: everything needed
/// to wake one device later. Built only from parsed values.
#[derive(Clone, Debug)]
pub struct Registration {
    pub user: UserId,
    pub device: DevicePkid,
    pub dialect: Dialect,
    pub channel: Channel,
    pub token: DeviceToken,
    /// The device's own JWE key (UDS devices); `None` for plain-payload dialects.
    pub key: Option<PushKey>,
    pub app: AppId,
    pub payload_version: Option<PayloadVersion>,
}

/// A stored registration with its timestamps (epoch ms).
#[derive(Clone, Debug)]
pub struct Device {
    pub registration: Registration,
    pub created_at: i64,
    pub updated_at: i64,
}

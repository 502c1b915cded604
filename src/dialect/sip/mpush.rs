//! MizuTech `X-MPUSH: <provider>:<bundle>:<token>` (seeds/001).

use super::message::err;
use super::push::{token_err, PushData};
use crate::domain::{BundleId, DeviceToken, FieldError, Provider};
pub(super) fn parse(v: &str) -> Result<PushData, FieldError> {
    const F: &str = "X-MPUSH";
    let mut parts = v.splitn(3, ':');
    let (Some(provider), Some(bundle), Some(token)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(err(F, "invalid_header", "X-MPUSH must be <provider>:<bundle id>:<token>"));
    };
    if provider != "i" {
        let shown: String = provider.chars().take(8).collect();
        return Err(err(F, "unknown_provider", format!("X-MPUSH provider must be i (Apple APNs), got {shown:?}")));
    }
    let bundle = BundleId::parse(bundle).map_err(|e| FieldError { field: F, ..e })?;
    // A hex token is an APNs device token; anything else (seeds/001's own
    // example `c-10-ap_Kt0:G7ST…`) is an FCM registration token, which
    // Firebase delivers to iOS apps too. The handler decides whether the
    // app can take it.
    let provider = if token.bytes().all(|b| b.is_ascii_hexdigit()) { Provider::Apns } else { Provider::Fcm };
    let token = DeviceToken::parse(provider, token).map_err(token_err(F))?;
    Ok(PushData::Mpush { bundle, token })
}

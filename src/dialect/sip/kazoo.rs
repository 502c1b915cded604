//! Kazoo-style push parameters picked by a User-Agent rule (seeds/004).

use super::message::err;
use super::push::{token_err, PushData, UaRule};
use super::Contact;
use crate::domain::{AppId, DeviceToken, FieldError, Provider};
pub(super) fn parse(c: &Contact, rule: &UaRule) -> Result<Option<PushData>, FieldError> {
    let get = |n: &str| c.param_anywhere(n).filter(|v| !v.is_empty());
    let (Some(app), Some(kind), Some(token)) = (get(&rule.token_app), get(&rule.token_type), get(&rule.token_id)) else {
        return Ok(None);
    };
    let provider = if kind.eq_ignore_ascii_case("apple") {
        Provider::Apns
    } else if kind.eq_ignore_ascii_case("firebase") {
        Provider::Fcm
    } else {
        let shown: String = kind.chars().take(16).collect();
        return Err(err("Contact", "unknown_provider", format!("{} must be apple or firebase (got {shown:?})", rule.token_type)));
    };
    let app = AppId::parse(app).map_err(|e| FieldError { field: "Contact", ..e })?;
    let token = DeviceToken::parse(provider, token).map_err(token_err("Contact"))?;
    Ok(Some(PushData::Kazoo { rule: rule.name.clone(), app, provider, token, contact: c.uri.raw.clone() }))
}

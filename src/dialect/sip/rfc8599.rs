//! RFC 8599 push parameters in a Contact URI (`pn-provider`, `pn-prid`,
//! `pn-param`, `pn-purr`).

use super::message::err;
use super::push::{token_err, PushData};
use super::Contact;
use crate::domain::{DeviceToken, FieldError, Provider};
pub(super) fn parse(c: &Contact) -> Result<Option<PushData>, FieldError> {
    let Some(provider) = c.uri.param("pn-provider") else { return Ok(None) };
    let provider = if provider.eq_ignore_ascii_case("apns") {
        Provider::Apns
    } else if provider.eq_ignore_ascii_case("fcm") {
        Provider::Fcm
    } else {
        let shown: String = provider.chars().take(16).collect();
        return Err(err("pn-provider", "unknown_provider", format!("pn-provider must be apns or fcm (got {shown:?})")));
    };
    let required = |name: &'static str| {
        c.uri.param(name).filter(|v| !v.is_empty()).ok_or_else(|| {
            err(name, "missing_param", format!("{name} is required in the Contact URI when pn-provider is set"))
        })
    };
    let prid = DeviceToken::parse(provider, required("pn-prid")?).map_err(token_err("pn-prid"))?;
    let param = required("pn-param")?;
    let (team_id, topic) = match provider {
        Provider::Apns => {
            let bad =
                || err("pn-param", "invalid_param", "APNs pn-param must be <Team ID (10 letters/digits)>.<topic>");
            let (team, topic) = param.split_once('.').ok_or_else(bad)?;
            if team.len() != 10 || !team.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(bad());
            }
            if topic.is_empty()
                || topic.len() > 200
                || !topic.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            {
                return Err(bad());
            }
            (Some(team.to_string()), topic.to_string())
        }
        Provider::Fcm => {
            if param.len() > 100 || !param.bytes().all(|b| b.is_ascii_alphanumeric() || b".:_-".contains(&b)) {
                return Err(err("pn-param", "invalid_param", "FCM pn-param must be the Firebase project id"));
            }
            (None, param.to_string())
        }
    };
    let purr = match c.uri.param("pn-purr") {
        None | Some("") => None,
        Some(p) if p.len() <= 256 => Some(p.to_string()),
        Some(_) => return Err(err("pn-purr", "invalid_param", "pn-purr is longer than 256 bytes")),
    };
    Ok(Some(PushData::Rfc8599 { provider, prid, topic_or_project: topic, team_id, purr, contact: c.uri.raw.clone() }))
}


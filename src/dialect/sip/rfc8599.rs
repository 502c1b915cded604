//! RFC 8599 push parameters in a Contact URI (`pn-provider`, `pn-prid`,
//! `pn-param`, `pn-purr`), read the way Linphone-family apps send them and
//! Flexisip reads them (`rfc8599-push-params.cc`):
//!
//! - `pn-provider`: `apns`, `apns.dev` (the APNs sandbox) or `fcm`;
//! - `pn-prid`: one token, or several joined by `&`, each `TOKEN` or
//!   `TOKEN:voip` / `TOKEN:remote` (the type is what follows the *last*
//!   colon, and only when it is `voip` or `remote`: FCM tokens contain
//!   colons of their own);
//! - `pn-param` (APNs): `TEAMID.BUNDLE.SERVICES`, split at the first and the
//!   last dot; SERVICES is `voip`, `remote` or `voip&remote` and means
//!   `remote` when absent. Team ids are not checked against anything
//!   beyond their shape (upper-case letters and digits, 4 to 32: Linphone
//!   ships the placeholder `ABCD1234`). (FCM): the project id.
//!
//! The `voip` token is the call token and the `remote` token the message
//! token; a lone `remote` token is the call token and gets calls as alerts.

use super::message::err;
use super::push::{token_err, PushData};
use super::Contact;
use crate::domain::{DeviceToken, FieldError, Provider};

/// What a `pn-prid` token is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Service {
    Voip,
    Remote,
}

impl Service {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "voip" => Some(Service::Voip),
            "remote" => Some(Service::Remote),
            _ => None,
        }
    }
}

/// The services of an APNs `pn-param` (`voip`, `remote`, `voip&remote`).
fn services(s: &str) -> Option<Vec<Service>> {
    let list: Option<Vec<Service>> = s.split('&').map(Service::parse).collect();
    list.filter(|l| !l.is_empty() && l.len() <= 2 && !(l.len() == 2 && l[0] == l[1]))
}

/// `pn-param` of APNs: (team id, bundle id, services).
fn apns_param(param: &str) -> Result<(String, String, Vec<Service>), FieldError> {
    let bad = || err("pn-param", "invalid_param", "APNs pn-param must be <team id>.<bundle id>[.voip|.remote|.voip&remote]");
    let (team, rest) = param.split_once('.').ok_or_else(bad)?;
    // Apple team ids are 10 upper-case letters and digits; placeholders
    // such as Linphone's `ABCD1234` are accepted, a reverse-DNS label is not.
    if !(4..=32).contains(&team.len()) || !team.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()) {
        return Err(bad());
    }
    let (bundle, services) = match rest.rsplit_once('.') {
        Some((bundle, last)) => match services(last) {
            Some(s) => (bundle, s),
            None => (rest, vec![Service::Remote]),
        },
        // `TEAM.voip`: a services part and no bundle.
        None if services(rest).is_some() => ("", vec![Service::Voip]),
        None => (rest, vec![Service::Remote]),
    };
    if bundle.is_empty()
        || bundle.len() > 200
        || !bundle.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        || bundle.starts_with('.')
        || bundle.ends_with('.')
    {
        return Err(bad());
    }
    Ok((team.to_string(), bundle.to_string(), services))
}

/// `pn-prid`: each token with the service it names (`None`: untyped).
fn prid_parts(prid: &str) -> Result<Vec<(&str, Option<Service>)>, FieldError> {
    let parts: Vec<(&str, Option<Service>)> = prid
        .split('&')
        .map(|p| match p.rsplit_once(':') {
            Some((token, ty)) if Service::parse(ty).is_some() => (token, Service::parse(ty)),
            _ => (p, None),
        })
        .collect();
    let bad = |why: &str| err("pn-prid", "invalid_token", format!("pn-prid {why}"));
    if parts.len() > 2 {
        return Err(bad("has more than two tokens (voip and remote)"));
    }
    if parts.len() == 2 {
        match (parts[0].1, parts[1].1) {
            (Some(a), Some(b)) if a != b => {}
            _ => return Err(bad("with two tokens must type them: <token>:voip&<token>:remote")),
        }
    }
    Ok(parts)
}

/// `pn-provider=webpush` (RFC 8599 §12): `pn-prid` is the push
/// subscription URI (an `https://` URL); `pn-param` "MUST NOT be used".
fn web_push(c: &Contact) -> Result<PushData, FieldError> {
    let prid = c.uri.param("pn-prid").filter(|v| !v.is_empty()).ok_or_else(|| {
        err("pn-prid", "missing_param", "pn-prid (the push subscription URI) is required in the Contact URI when pn-provider is webpush")
    })?;
    let endpoint = DeviceToken::parse(Provider::WebPush, prid)
        .map_err(|e| err("pn-prid", "invalid_token", e.message.replace("subscription.endpoint", "pn-prid")))?;
    Ok(PushData::WebPush { endpoint, purr: purr(c)?, contact: c.uri.raw.clone() })
}

/// `pn-purr`, if any (at most 256 bytes).
fn purr(c: &Contact) -> Result<Option<String>, FieldError> {
    match c.uri.param("pn-purr") {
        None | Some("") => Ok(None),
        Some(p) if p.len() <= 256 => Ok(Some(p.to_string())),
        Some(_) => Err(err("pn-purr", "invalid_param", "pn-purr is longer than 256 bytes")),
    }
}

pub(super) fn parse(c: &Contact) -> Result<Option<PushData>, FieldError> {
    let Some(provider) = c.uri.param("pn-provider") else { return Ok(None) };
    let (provider, sandbox) = match provider.to_ascii_lowercase().as_str() {
        "apns" => (Provider::Apns, false),
        "apns.dev" => (Provider::Apns, true),
        "fcm" => (Provider::Fcm, false),
        "webpush" => return web_push(c).map(Some),
        _ => {
            let shown: String = provider.chars().take(16).collect();
            return Err(err("pn-provider", "unknown_provider", format!("pn-provider must be apns, apns.dev, fcm or webpush (got {shown:?})")));
        }
    };
    let required = |name: &'static str| {
        c.uri
            .param(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| err(name, "missing_param", format!("{name} is required in the Contact URI when pn-provider is set")))
    };
    let prid = required("pn-prid")?;
    let param = required("pn-param")?;
    let parts = prid_parts(prid)?;
    let token = |raw: &str| DeviceToken::parse(provider, raw).map_err(token_err("pn-prid"));
    let (team_id, bundle_or_project, call, remote, calls_as_alert) = match provider {
        Provider::Apns => {
            let (team, bundle, services) = apns_param(param)?;
            let typed = |want: Service| parts.iter().find(|(_, s)| *s == Some(want)).map(|(t, _)| *t);
            let (voip, remote) = match parts.as_slice() {
                // One untyped token serves the first service pn-param names.
                [(t, None)] => match services[0] {
                    Service::Voip => (Some(*t), None),
                    Service::Remote => (None, Some(*t)),
                },
                _ => (typed(Service::Voip), typed(Service::Remote)),
            };
            match (voip, remote) {
                (Some(v), r) => (Some(team), bundle, token(v)?, r.map(token).transpose()?, false),
                (None, Some(r)) => (Some(team), bundle, token(r)?, None, true),
                (None, None) => unreachable!("pn-prid has at least one token"),
            }
        }
        Provider::Hms | Provider::WebPush => unreachable!("pn-provider names apns or fcm here"),
        Provider::Fcm => {
            if param.len() > 100 || !param.bytes().all(|b| b.is_ascii_alphanumeric() || b".:_-".contains(&b)) {
                return Err(err("pn-param", "invalid_param", "FCM pn-param must be the Firebase project id"));
            }
            // FCM has one token per app instance; the first one is it.
            (None, param.to_string(), token(parts[0].0)?, None, false)
        }
    };
    let purr = purr(c)?;
    Ok(Some(PushData::Rfc8599 {
        provider,
        sandbox,
        prid: call,
        remote,
        calls_as_alert,
        bundle_or_project,
        team_id,
        purr,
        contact: c.uri.raw.clone(),
    }))
}

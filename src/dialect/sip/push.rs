//! Push data in a parsed REGISTER: which convention a Contact uses
//! (`mpush`, `rfc8599`, `kazoo`), in the order of the module doc, and what
//! the REGISTER does to the AOR's bindings (per-contact expiry).

use super::message::{err, is_token_byte, number};
use super::{kazoo, mpush, rfc8599, Contact, SipRegister};
use crate::domain::{AppId, BundleId, DeviceToken, FieldError, Provider};

/// Push data found in a REGISTER.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PushData {
    /// `X-MPUSH: i:<bundle>:<token>` (seeds/001). A hex token is for
    /// APNs, any other for FCM (`token.provider()` says which).
    Mpush { bundle: BundleId, token: DeviceToken },
    /// RFC 8599 Contact URI parameters. `contact` is the Contact URI as written.
    Rfc8599 {
        provider: Provider,
        /// `pn-provider=apns.dev`: the APNs sandbox.
        sandbox: bool,
        /// The call token: the `voip` token, else the lone `remote` one.
        prid: DeviceToken,
        /// The `remote` token next to a `voip` one: the message token.
        remote: Option<DeviceToken>,
        /// Only a `remote` token: calls go as alert pushes.
        calls_as_alert: bool,
        /// APNs: the bundle id (between the first and last dot of
        /// `pn-param`); FCM: the project id.
        bundle_or_project: String,
        /// APNs: the team id (first label of `pn-param`), not checked.
        team_id: Option<String>,
        purr: Option<String>,
        contact: String,
    },
    /// Contact parameters named by a User-Agent rule (seeds/004).
    Kazoo { rule: String, app: AppId, provider: Provider, token: DeviceToken, contact: String },
    /// RFC 8599 §12 `pn-provider=webpush`: `pn-prid` is the push
    /// subscription URI; `pn-param` is not used, and no encryption keys are
    /// conveyed, so pushes carry no payload (RFC 8030 §5).
    WebPush { endpoint: DeviceToken, purr: Option<String>, contact: String },
}

/// A `sip.user_agents.<name>` rule: when `regex` matches the User-Agent, the
/// three named Contact parameters give app, provider type and token.
#[derive(Clone, Debug)]
pub struct UaRule {
    pub name: String,
    pub regex: regex::Regex,
    /// Default `app-id`.
    pub token_app: String,
    /// Default `pn-type` (`apple` → APNs, `firebase` → FCM).
    pub token_type: String,
    /// Default `pn-tok`.
    pub token_id: String,
}

impl UaRule {
    /// A rule with the default parameter names; `None` keeps a default.
    pub fn new(name: &str, regex: &str, token_app: Option<&str>, token_type: Option<&str>, token_id: Option<&str>) -> Result<Self, FieldError> {
        let regex = regex::RegexBuilder::new(regex)
            .size_limit(1 << 20)
            .build()
            .map_err(|_| FieldError::new("regex", "invalid_regex", format!("user agent rule {name:?}: invalid regex")))?;
        let pname = |v: Option<&str>, default: &str| -> Result<String, FieldError> {
            let v = v.unwrap_or(default);
            if v.is_empty() || !v.bytes().all(is_token_byte) {
                return Err(FieldError::new("user_agents", "invalid_param", format!("user agent rule {name:?}: parameter names must be SIP tokens")));
            }
            Ok(v.to_ascii_lowercase())
        };
        Ok(Self {
            name: name.to_string(),
            regex,
            token_app: pname(token_app, "app-id")?,
            token_type: pname(token_type, "pn-type")?,
            token_id: pname(token_id, "pn-tok")?,
        })
    }
}

/// Every piece of push data in `reg` (see the module doc for the order).
pub fn push_data(reg: &SipRegister, rules: &[UaRule]) -> Result<Vec<PushData>, FieldError> {
    let list: Vec<PushData> = found(reg, rules)?.into_iter().map(|(d, _)| d).collect();
    if list.is_empty() {
        return Err(no_push_data());
    }
    Ok(list)
}

fn no_push_data() -> FieldError {
    err(
        "",
        "no_push_data",
        "the REGISTER carries no push data (no X-MPUSH header, no RFC 8599 pn-* Contact URI parameters, \
         no Contact parameters of a matching User-Agent rule)",
    )
}

/// Push data with the index of the Contact it came from (`X-MPUSH`: the
/// first Contact, if any).
fn found(reg: &SipRegister, rules: &[UaRule]) -> Result<Vec<(PushData, Option<usize>)>, FieldError> {
    let mut out = Vec::new();
    if let Some(v) = &reg.x_mpush {
        out.push((mpush::parse(v)?, (!reg.contacts.is_empty()).then_some(0)));
    }
    let rule = reg.user_agent.as_deref().and_then(|ua| rules.iter().find(|r| r.regex.is_match(ua)));
    for (i, c) in reg.contacts.iter().enumerate() {
        if let Some(d) = rfc8599::parse(c)? {
            out.push((d, Some(i)));
        } else if let Some(rule) = rule {
            if let Some(d) = kazoo::parse(c, rule)? {
                out.push((d, Some(i)));
            }
        }
    }
    Ok(out)
}

/// What one REGISTER does to the push bindings of its AOR (interface.md §4):
/// contacts whose effective expiry is 0 (`;expires=0`, or `Expires: 0` for
/// a contact without its own) remove their binding only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bindings {
    /// Push data of contacts that stay registered.
    pub live: Vec<PushData>,
    /// Push data of contacts that de-register.
    pub gone: Vec<PushData>,
    /// De-registering contacts (URI as written) that carry no push data.
    pub gone_contacts: Vec<String>,
}

impl SipRegister {
    /// A Contact's expiry in seconds: its own `expires` parameter, else the
    /// `Expires` header, else `None` (the registrar's default).
    pub fn contact_expires(&self, c: &Contact) -> Result<u32, FieldError> {
        match c.param("expires") {
            Some(v) => number(v, "Contact expires").map(|n| n.min(u64::from(u32::MAX)) as u32),
            None => Ok(self.expires.unwrap_or(3600)),
        }
    }
}

/// The REGISTER's push data split by contact expiry.
pub fn bindings(reg: &SipRegister, rules: &[UaRule]) -> Result<Bindings, FieldError> {
    let mut b = Bindings { live: Vec::new(), gone: Vec::new(), gone_contacts: Vec::new() };
    let items = found(reg, rules)?;
    let expired = |i: Option<usize>| -> Result<bool, FieldError> {
        Ok(match i {
            Some(i) => reg.contact_expires(&reg.contacts[i])? == 0,
            None => reg.expires == Some(0),
        })
    };
    let mut with_data = std::collections::HashSet::new();
    for (data, i) in items {
        if let Some(i) = i {
            with_data.insert(i);
        }
        if expired(i)? {
            b.gone.push(data);
        } else {
            b.live.push(data);
        }
    }
    for (i, c) in reg.contacts.iter().enumerate() {
        if !with_data.contains(&i) && reg.contact_expires(c)? == 0 {
            b.gone_contacts.push(c.uri.raw.clone());
        }
    }
    if b.live.is_empty() && b.gone.is_empty() && b.gone_contacts.is_empty() {
        return Err(no_push_data());
    }
    Ok(b)
}

pub(super) fn token_err(field: &'static str) -> impl Fn(FieldError) -> FieldError {
    move |e| FieldError { field, message: e.message.replace("pushNotifyToken", field), ..e }
}

//! SIP REGISTER push data (seeds/001, seeds/004, RFC 8599; interface.md §4,
//! protocol.md §8).
//!
//! `POST /sip/register` carries a REGISTER exactly as a proxy forwards it.
//! [`parse_register`] reads the few headers the relay needs and
//! [`push_data`] finds the push data in them.
//!
//! **Why a hand parser.** The maintained-crate candidates were looked at:
//! `rsip` 0.4.0 (last release 2022, no license field on crates.io) and
//! `rvoip-sip-core` (pre-1.0 part of a whole VoIP stack, large dependency
//! tree, lenient-parsing feature flags). Neither is small and maintained, and
//! the relay needs only the request line, To, Contact, Call-ID, Expires,
//! User-Agent, Content-Length and X-MPUSH. So this is a small strict parser
//! for exactly those, with limits, written against RFC 3261 §7, §19.1, §20,
//! §25.
//!
//! **Message.** The request line must be `REGISTER <sip|sips URI> SIP/2.0`
//! (method case-sensitive, single spaces, version case-insensitive). Lines
//! end in CRLF or LF (a lone CR elsewhere is refused); a line starting with
//! SP/HT continues the previous header (unfolded with one space). Header
//! names are case-insensitive; compact forms `m` (Contact), `t` (To), `f`
//! (From), `i` (Call-ID), `l` (Content-Length), `v` (Via) are understood.
//! Headers not listed above are skipped. The headers end at the first empty
//! line (or at the end of the message); the body is ignored, except that a
//! `Content-Length` larger than the bytes after the empty line is refused
//! (`truncated_body`). To, Call-ID, Expires, User-Agent, X-MPUSH and
//! Content-Length may appear once (`duplicate_header`); To is required.
//!
//! **Addresses.** `name-addr` (`"Display" <uri>;hparams` or `Display <uri>`)
//! and `addr-spec` (`uri;hparams`, where — RFC 3261 §20 — everything after
//! the first `;` is a header parameter). Contact values are split at commas
//! outside `<…>` and quoted strings; several Contact headers add up (at most
//! [`MAX_CONTACTS`]). `Contact: *` sets [`SipRegister::wildcard`] and must
//! stand alone. URI parameters (inside the URI) and header parameters (after
//! it) are both kept with lower-cased names and percent-decoded values
//! (quoted header parameter values are unquoted instead); a parameter repeated
//! in one list is refused (`duplicate_param`, RFC 3261 §19.1.1).
//!
//! **Limits** (each with its own error code): [`MAX_MESSAGE_BYTES`],
//! [`MAX_LINE_BYTES`], [`MAX_HEADERS`], [`MAX_CONTACTS`].
//!
//! **Push data**, in this order: `X-MPUSH`, then per Contact its RFC 8599
//! URI parameters, or — when it has none — the first matching
//! User-Agent rule's parameters (Kazoo). No push data at all is
//! `no_push_data`.
//!
//! * X-MPUSH: split at the first two colons only; provider `i` (exactly) is
//!   APNs, anything else `unknown_provider`.
//! * RFC 8599 (URI parameters only, as the RFC puts them): `pn-provider`
//!   `apns`/`fcm` (case-insensitive; `webpush`, Linphone's `apns.dev` and
//!   others are `unknown_provider`); `pn-prid` and `pn-param` required
//!   (`missing_param`). APNs `pn-param` is `<Team ID>.<topic>` where the Team
//!   ID is Apple's 10 letters/digits (so a `pn-param` that forgot the Team ID
//!   is caught); FCM `pn-param` is the project id. `pn-purr` is kept as is.
//! * Kazoo: the first rule whose regex matches User-Agent; its three
//!   parameters are looked up in the Contact header parameters, then in the
//!   URI parameters; a contact missing any of them gives no push data (not an
//!   error). Type `apple` → APNs, `firebase` → FCM (case-insensitive), other
//!   values `unknown_provider`.
//! * `contact` in [`PushData`] is the Contact URI as written (between `<>`).
//!
//! **X-MPUSH tokens: hex for APNs, anything else for FCM.** seeds/001
//! defines the token as "device token obtained from Apple APNs", but its
//! "typical registration request" carries
//! `X-MPUSH: i:com.mycompany.myapp:c-10-ap_Kt0:G7SThkASJx2K4Rm1033iR0mIgzI1cLg5xxpST4cjrd_cqQquRLkHMi3eY4g`,
//! an FCM registration token (Firebase delivers to iOS apps too). A token of
//! hex digits is parsed as an APNs token (and refused if its length is
//! wrong); any other token as an FCM token, which the handler accepts only
//! when the app named by the bundle has FCM credentials (interface.md §4).
//!
//! **RFC 8599 as Linphone sends it** (`pn-provider=apns.dev`,
//! `pn-prid=<t1>:voip&<t2>:remote`, `pn-param=TEAM.BUNDLE.voip&remote`)
//! follows Flexisip's rules; see `rfc8599`.
//!
//! Error messages name the header or parameter and a line number; they never
//! quote tokens or header values.
//!
//! Layout: `message` (the grammar), `push` (finding push data and per-contact
//! expiry), one module per push convention: `mpush`, `rfc8599`, `kazoo`.

mod kazoo;
mod message;
mod mpush;
mod push;
mod rfc8599;

pub use message::{parse_register, parse_uri, Contact, SipRegister, SipUri, MAX_CONTACTS, MAX_HEADERS, MAX_LINE_BYTES, MAX_MESSAGE_BYTES};
pub use push::{bindings, push_data, Bindings, PushData, UaRule};

use crate::domain::{AppId, Channel, DevicePkid, DialectData, MessageToken, Provider, Registration, SipBinding, SipFormat};

/// A stable device id for a SIP binding: its format and a hash of its token.
/// Both RFC 8599 forms (VoIP and alert-only) name a device the same way.
pub fn device_id(format: SipFormat, token: &str) -> DevicePkid {
    let family = match format {
        SipFormat::Rfc8599Alert => SipFormat::Rfc8599,
        f => f,
    };
    super::hashed_device_id(family.as_str(), token)
}

/// The device id a piece of (de-registering) push data names.
pub fn gone_id(data: &PushData) -> DevicePkid {
    match data {
        PushData::Mpush { token, .. } => device_id(SipFormat::Mpush, token.as_str()),
        PushData::Rfc8599 { prid, .. } => device_id(SipFormat::Rfc8599, prid.as_str()),
        PushData::WebPush { endpoint, .. } => device_id(SipFormat::Rfc8599, endpoint.as_str()),
        PushData::Kazoo { token, .. } => device_id(SipFormat::Kazoo, token.as_str()),
    }
}

/// The provider whose credentials a piece of push data needs, and what
/// names the app: the bundle (X-MPUSH), the bundle or project (RFC 8599),
/// the app itself (Kazoo), or nothing (Web Push: no `pn-param`).
pub fn app_hint(data: &PushData) -> (Provider, Option<&str>) {
    match data {
        PushData::Mpush { bundle, token } => (token.provider(), Some(bundle.as_str())),
        PushData::Rfc8599 { provider, bundle_or_project, .. } => (*provider, Some(bundle_or_project.as_str())),
        PushData::Kazoo { app, provider, .. } => (*provider, Some(app.as_str())),
        PushData::WebPush { .. } => (Provider::WebPush, None),
    }
}

/// The registration of one piece of live push data of `msg` (AOR `aor`)
/// for `app` (resolved by the caller from `app_hint`).
pub fn registration(msg: &SipRegister, aor: &str, data: PushData, app: AppId) -> Registration {
    let first_contact = msg.contacts.first().map(|c| c.uri.raw.clone());
    let (format, provider, token, contact, purr, remote, sandbox) = match data {
        PushData::Mpush { token, .. } => (SipFormat::Mpush, token.provider(), token, first_contact, None, None, false),
        PushData::Rfc8599 { provider, sandbox, prid, remote, calls_as_alert, purr, contact, .. } => {
            let format = if calls_as_alert { SipFormat::Rfc8599Alert } else { SipFormat::Rfc8599 };
            (format, provider, prid, Some(contact), purr, remote, sandbox)
        }
        PushData::WebPush { endpoint, purr, contact } => (SipFormat::Rfc8599, Provider::WebPush, endpoint, Some(contact), purr, None, false),
        PushData::Kazoo { provider, token, contact, .. } => (SipFormat::Kazoo, provider, token, Some(contact), None, None, false),
    };
    let channel = if sandbox { Channel::ApnsDev } else { Channel::for_provider(provider) };
    let msg_token = remote.map(|token| MessageToken { app: app.clone(), channel, token });
    Registration {
        user: msg.user.clone(),
        device: device_id(format, token.as_str()),
        channel,
        token,
        subscription_keys: None,
        app,
        data: DialectData::Sip { binding: SipBinding { aor: aor.to_string(), contact, format, purr }, msg: msg_token },
    }
}

#[cfg(test)]
mod tests;

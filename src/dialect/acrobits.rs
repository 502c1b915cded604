//! Acrobits Push Token Reporter (seeds/002, interface.md §4, protocol.md §7).
//!
//! The softphone reports its tokens with a GET query, a POST form or a POST
//! JSON object. The HTTP layer turns each of these into name/value pairs
//! (query and form through its form parser, JSON through
//! [`pairs_from_json`]) and [`parse_params`] turns the pairs into an
//! [`AcrobitsReport`].
//!
//! **Parameter names.** Matched exactly (case-sensitive), except
//! `appid_calls` and `appid_msgs`, which are matched ASCII-case-insensitively
//! (so the seed's JSON `appId_calls`/`appId_msgs` work):
//!
//! | parameter        | also accepted as                                   |
//! |------------------|----------------------------------------------------|
//! | `username`       |                                                    |
//! | `selector`       |                                                    |
//! | `token_calls`    | `pushTokenIncomingCall`                            |
//! | `appid_calls`    | any case of it; `pushappid_incoming_call`          |
//! | `token_msgs`     | `pushToken`, `pushTokenOther`                      |
//! | `appid_msgs`     | any case of it; `pushappid`, `pushappid_other`     |
//!
//! Other names (the seed's GET example carries `password`) are ignored and
//! never echoed. Two pairs for the same parameter (also through two of its
//! spellings, e.g. `pushToken` and `token_msgs`) are refused with
//! `duplicate_field`: the relay cannot know which one is meant.
//!
//! **Values.** An empty value, or the literal `null` / `(null)` (what a
//! template renders for a missing token on iOS, seed note "called with a null
//! value for pushTokenOther") is absent. `username` and `selector` are
//! required; at least one of the two tokens must be present. An absent
//! `token_msgs` gives `msgs: None`; keeping the previously stored message
//! token in that case is the store's job, not this module's.
//!
//! **Selector** (pushrelay's choice): 40 hex digits (the SHA-1), `:`, 1–64
//! hex digits, case-insensitive; stored upper-case like the seed's example
//! `12869E0E6E553673C54F29105A0647204C416A2A:7C3A0D14`.
//!
//! **Tokens** are base64, standard alphabet, padding optional, non-zero
//! trailing bits accepted (the seed's own `token_msgs` example has them). The
//! caller's form parser has already URL-decoded the value once; because apps
//! and proxies double-encode, a value that still contains `%` is
//! percent-decoded once more (`%2F`→`/`, `%2B`→`+`, `%3D`→`=`), and a space
//! (a `+` turned into a space by form decoding of an unencoded query) is read
//! as `+`. Anything else outside the base64 alphabet is `invalid_token`.
//! [`token_for`] converts the bytes into what the provider expects: APNs
//! lower-case hex, FCM the ASCII registration token.
//!
//! Error messages name the parameter, never its value.

use crate::domain::{AppId, Channel, DevicePkid, DeviceToken, DialectData, FieldError, MessageToken, Provider, Registration, UserId};
use base64::alphabet::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;
use std::fmt;

/// Largest accepted JSON body (`too_large`, 413); the HTTP layer uses the
/// same limit for queries and forms.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Longest accepted base64 token text (an FCM token is at most 4096 bytes).
pub const MAX_TOKEN_CHARS: usize = 8 * 1024;

/// A decoded token and the app id reported with it.
#[derive(Clone, PartialEq, Eq)]
pub struct RawToken {
    pub bytes: Vec<u8>,
    pub app_id: Option<AppId>,
}

impl fmt::Debug for RawToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RawToken({} bytes, app {:?})", self.bytes.len(), self.app_id)
    }
}

/// One parsed report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcrobitsReport {
    pub username: UserId,
    /// Upper-case `<40 hex>:<hex>`.
    pub selector: String,
    /// The incoming-call (PushKit on iOS) token.
    pub calls: Option<RawToken>,
    /// The other (message) token; `None` keeps the stored one.
    pub msgs: Option<RawToken>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Slot {
    Username,
    Selector,
    TokenCalls,
    AppCalls,
    TokenMsgs,
    AppMsgs,
}

impl Slot {
    const ALL: [Slot; 6] = [Slot::Username, Slot::Selector, Slot::TokenCalls, Slot::AppCalls, Slot::TokenMsgs, Slot::AppMsgs];

    fn of(name: &str) -> Option<Slot> {
        Some(match name {
            "username" => Slot::Username,
            "selector" => Slot::Selector,
            "token_calls" | "pushTokenIncomingCall" => Slot::TokenCalls,
            "token_msgs" | "pushToken" | "pushTokenOther" => Slot::TokenMsgs,
            "pushappid_incoming_call" => Slot::AppCalls,
            "pushappid" | "pushappid_other" => Slot::AppMsgs,
            n if n.eq_ignore_ascii_case("appid_calls") => Slot::AppCalls,
            n if n.eq_ignore_ascii_case("appid_msgs") => Slot::AppMsgs,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Slot::Username => "username",
            Slot::Selector => "selector",
            Slot::TokenCalls => "token_calls",
            Slot::AppCalls => "appid_calls",
            Slot::TokenMsgs => "token_msgs",
            Slot::AppMsgs => "appid_msgs",
        }
    }
}

/// Parse the reported parameters (query, form, or [`pairs_from_json`]).
pub fn parse_params(pairs: &[(String, String)]) -> Result<AcrobitsReport, FieldError> {
    let mut values: [Option<&str>; 6] = Default::default();
    for (name, value) in pairs {
        let Some(slot) = Slot::of(name) else { continue };
        let i = Slot::ALL.iter().position(|s| *s == slot).unwrap_or(0);
        if values[i].is_some() {
            let n = slot.name();
            return Err(FieldError::new(n, "duplicate_field", format!("{n} is given more than once (or under two names)")));
        }
        values[i] = Some(value.as_str());
    }
    let get = |slot: Slot| values[Slot::ALL.iter().position(|s| *s == slot).unwrap_or(0)].filter(|v| !is_null(v));

    let username = get(Slot::Username).ok_or_else(|| FieldError::new("username", "missing_field", "username is required"))?;
    let username = UserId::parse(username).map_err(|e| FieldError { field: "username", message: e.message.replace("userId", "username"), ..e })?;
    let selector = get(Slot::Selector).ok_or_else(|| FieldError::new("selector", "missing_field", "selector is required"))?;
    let selector = parse_selector(selector)?;
    let calls = raw_token(get(Slot::TokenCalls), get(Slot::AppCalls), Slot::TokenCalls, Slot::AppCalls)?;
    let msgs = raw_token(get(Slot::TokenMsgs), get(Slot::AppMsgs), Slot::TokenMsgs, Slot::AppMsgs)?;
    if calls.is_none() && msgs.is_none() {
        return Err(FieldError::new("token_calls", "missing_field", "token_calls or token_msgs is required"));
    }
    Ok(AcrobitsReport { username, selector, calls, msgs })
}

/// A POST JSON body as pairs: a JSON object whose members are strings or
/// `null` (`null` → the pair is left out). A number, boolean, array or
/// object for one of the known parameters is refused (`invalid_field`); for
/// any other member it is ignored like the member itself. Repeated members
/// are all kept, so that [`parse_params`] refuses them.
pub fn pairs_from_json(body: &[u8]) -> Result<Vec<(String, String)>, FieldError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(FieldError::new("", "too_large", format!("body is larger than {MAX_BODY_BYTES} bytes (got {})", body.len())));
    }
    let members: Members = serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => FieldError::new("", "malformed_json", "body must be a JSON object"),
        _ => FieldError::new("", "malformed_json", format!("body is not valid JSON (line {}, column {})", e.line(), e.column())),
    })?;
    let mut pairs = Vec::with_capacity(members.0.len());
    for (name, value) in members.0 {
        match value {
            Value::Null => {}
            Value::String(s) => pairs.push((name, s)),
            _ => {
                if let Some(slot) = Slot::of(&name) {
                    let n = slot.name();
                    return Err(FieldError::new(n, "invalid_field", format!("{n} must be a string or null")));
                }
            }
        }
    }
    Ok(pairs)
}

/// Convert a reported token into the provider's form: APNs lower-case hex of
/// the bytes, FCM the bytes as the ASCII registration token. The error's
/// field is `token` (the caller knows which parameter it was).
pub fn token_for(provider: Provider, raw: &RawToken) -> Result<DeviceToken, FieldError> {
    let fix = |e: FieldError| FieldError { field: "token", message: e.message.replace("pushNotifyToken", "token"), ..e };
    match provider {
        Provider::Apns => DeviceToken::parse(Provider::Apns, &hex::encode(&raw.bytes)).map_err(fix),
        Provider::Fcm => {
            let s = std::str::from_utf8(&raw.bytes).map_err(|_| FieldError::new("token", "invalid_token", "an FCM token must be printable ASCII"))?;
            DeviceToken::parse(Provider::Fcm, s).map_err(fix)
        }
        // The reporter knows APNs and FCM only (interface.md §9: Acrobits keeps its channel set).
        Provider::Hms | Provider::WebPush => {
            Err(FieldError::new("token", "invalid_token", format!("the Acrobits reporter has no {} tokens", provider.as_str())))
        }
    }
}

impl AcrobitsReport {
    /// The registration of this report's phone: its calls token (or, as
    /// Android reports one token for everything, its message token) for
    /// `app` on `provider`, and the message token for `msg`'s app.
    pub fn into_registration(self, app: AppId, provider: Provider, msg: Option<(AppId, Provider)>) -> Result<Registration, FieldError> {
        let calls = self.calls.as_ref().or(self.msgs.as_ref()).expect("the parser requires one token");
        let token = token_for(provider, calls)?;
        let msg = match (&self.msgs, self.calls.is_some(), msg) {
            (Some(m), true, Some((app, provider))) => {
                Some(MessageToken { app, channel: Channel::for_provider(provider), token: token_for(provider, m)? })
            }
            _ => None,
        };
        let device = DevicePkid::parse(&self.selector).map_err(|e| FieldError { field: "selector", ..e })?;
        Ok(Registration {
            user: self.username,
            device,
            channel: Channel::for_provider(provider),
            token,
            subscription_keys: None,
            app,
            data: DialectData::Acrobits { msg },
        })
    }
}

/// The app id a VoIP topic is built from: `appid_calls` without the
/// `.pushkit` suffix the seed's sample shows (`com.cloudsoftphone.app.pushkit`
/// → `com.cloudsoftphone.app`, topic `com.cloudsoftphone.app.voip`).
pub fn voip_topic_app(app_id: &str) -> &str {
    app_id.strip_suffix(".pushkit").filter(|s| !s.is_empty()).unwrap_or(app_id)
}

// ---------------------------------------------------------------------------

fn is_null(v: &str) -> bool {
    v.is_empty() || v == "null" || v == "(null)"
}

fn parse_selector(raw: &str) -> Result<String, FieldError> {
    let ok = match raw.split_once(':') {
        Some((sha, suffix)) => {
            sha.len() == 40
                && sha.bytes().all(|b| b.is_ascii_hexdigit())
                && (1..=64).contains(&suffix.len())
                && suffix.bytes().all(|b| b.is_ascii_hexdigit())
        }
        None => false,
    };
    if !ok {
        return Err(FieldError::new("selector", "invalid_selector", "selector must be 40 hex digits, ':' and 1 to 64 hex digits"));
    }
    Ok(raw.to_ascii_uppercase())
}

const B64: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent).with_decode_allow_trailing_bits(true),
);

fn raw_token(token: Option<&str>, app: Option<&str>, tslot: Slot, aslot: Slot) -> Result<Option<RawToken>, FieldError> {
    let Some(token) = token else { return Ok(None) };
    let field = tslot.name();
    let bad = |why: &str| FieldError::new(field, "invalid_token", format!("{field} {why}"));
    if token.len() > MAX_TOKEN_CHARS {
        return Err(bad(&format!("is longer than {MAX_TOKEN_CHARS} characters")));
    }
    let decoded;
    let mut text = token;
    if text.contains('%') {
        decoded = percent_encoding::percent_decode_str(text).decode_utf8().map_err(|_| bad("must be base64"))?;
        text = &decoded;
    }
    let text = text.replace(' ', "+");
    let bytes = B64.decode(text.as_bytes()).map_err(|_| bad("must be base64 (standard alphabet)"))?;
    if bytes.is_empty() {
        return Err(bad("decodes to no bytes"));
    }
    let app_id = match app {
        Some(a) => Some(AppId::parse(a).map_err(|e| {
            let n = aslot.name();
            FieldError { field: n, message: e.message.replace("application", n), ..e }
        })?),
        None => None,
    };
    Ok(Some(RawToken { bytes, app_id }))
}

/// The members of a JSON object, in order, repeats kept.
struct Members(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    out.push((k, v));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SELECTOR: &str = "12869E0E6E553673C54F29105A0647204C416A2A:7C3A0D14";
    /// The seed's tokens.
    const CALLS_B64: &str = "Udl99X2JFP1bWwS5gR/wGeLE1hmAB2CMpr1Ej0wxkrY=";
    const CALLS_HEX: &str = "51d97df57d8914fd5b5b04b9811ff019e2c4d6198007608ca6bd448f4c3192b6";
    const MSGS_B64: &str = "QVBBOTFiRzlhcVd2bW54bllCWldHOWh4dnRrZ3pUWFNvcGZpdWZ6bWM2dFAzS2J";
    const MSGS_FCM: &str = "APA91bG9aqWvmnxnYBZWG9hxvtkgzTXSopfiufzmc6tP3Kb";

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    fn base() -> Vec<(&'static str, &'static str)> {
        vec![
            ("username", "johndow"),
            ("selector", SELECTOR),
            ("token_calls", CALLS_B64),
            ("appid_calls", "com.cloudsoftphone.app.pushkit"),
            ("token_msgs", MSGS_B64),
            ("appid_msgs", "com.cloudsoftphone.app"),
        ]
    }

    /// `base()` with `name` set to `value` (added when absent; removed when `value` is None).
    fn with(name: &'static str, value: Option<&'static str>) -> Vec<(String, String)> {
        let mut b = base();
        b.retain(|(n, _)| *n != name);
        if let Some(v) = value {
            b.push((name, v));
        }
        pairs(&b)
    }

    fn renamed(from: &str, to: &'static str) -> Vec<(String, String)> {
        pairs(&base().into_iter().map(|(n, v)| (if n == from { to } else { n }, v)).collect::<Vec<_>>())
    }

    fn check(p: &[(String, String)]) -> String {
        match parse_params(p) {
            Ok(_) => "ok".into(),
            Err(e) => format!("{} {}", e.code, e.field).trim_end().to_string(),
        }
    }

    #[test]
    fn table() {
        let cases: Vec<(Vec<(String, String)>, &str)> = vec![
            (pairs(&base()), "ok"),
            (with("password", Some("12345678")), "ok"),
            (with("token_msgs", None), "ok"),
            (with("token_msgs", Some("")), "ok"),
            (with("token_msgs", Some("null")), "ok"),
            (with("token_msgs", Some("(null)")), "ok"),
            (with("token_calls", None), "ok"),
            (with("appid_calls", None), "ok"),
            (with("appid_calls", Some("")), "ok"),
            (with("token_calls", Some("Udl99X2JFP1bWwS5gR/wGeLE1hmAB2CMpr1Ej0wxkrY")), "ok"),
            (with("token_calls", Some("Udl99X2JFP1bWwS5gR%2FwGeLE1hmAB2CMpr1Ej0wxkrY%3D")), "ok"),
            (with("token_calls", Some("Udl99X2JFP1bWwS5gR%2fwGeLE1hmAB2CMpr1Ej0wxkrY%3d")), "ok"),
            (with("token_calls", Some("AAE AwQFBgcI")), "ok"),
            (with("selector", Some("12869e0e6e553673c54f29105a0647204c416a2a:7c3a0d14")), "ok"),
            // every spelling
            (renamed("token_calls", "pushTokenIncomingCall"), "ok"),
            (renamed("token_msgs", "pushToken"), "ok"),
            (renamed("token_msgs", "pushTokenOther"), "ok"),
            (renamed("appid_calls", "appId_calls"), "ok"),
            (renamed("appid_calls", "APPID_CALLS"), "ok"),
            (renamed("appid_calls", "pushappid_incoming_call"), "ok"),
            (renamed("appid_msgs", "appId_msgs"), "ok"),
            (renamed("appid_msgs", "pushappid"), "ok"),
            (renamed("appid_msgs", "pushappid_other"), "ok"),
            // exact-case names: these are unknown, hence ignored
            (renamed("token_calls", "Token_Calls"), "ok"),
            (renamed("token_msgs", "pushtoken"), "ok"),
            (renamed("appid_msgs", "PushAppId"), "ok"),
            (renamed("username", "Username"), "missing_field username"),
            (renamed("selector", "SELECTOR"), "missing_field selector"),
            // duplicates, also across spellings
            (with("username", Some("other")).into_iter().chain(pairs(&[("username", "johndow")])).collect(), "duplicate_field username"),
            ([pairs(&base()), pairs(&[("pushToken", MSGS_B64)])].concat(), "duplicate_field token_msgs"),
            ([pairs(&base()), pairs(&[("pushTokenIncomingCall", CALLS_B64)])].concat(), "duplicate_field token_calls"),
            ([pairs(&base()), pairs(&[("appId_calls", "x")])].concat(), "duplicate_field appid_calls"),
            ([pairs(&base()), pairs(&[("pushappid", "x")])].concat(), "duplicate_field appid_msgs"),
            ([pairs(&base()), pairs(&[("selector", "")])].concat(), "duplicate_field selector"),
            // required
            (with("username", None), "missing_field username"),
            (with("username", Some("")), "missing_field username"),
            (with("selector", None), "missing_field selector"),
            (pairs(&[("username", "u"), ("selector", SELECTOR)]), "missing_field token_calls"),
            (pairs(&[("username", "u"), ("selector", SELECTOR), ("token_calls", ""), ("token_msgs", "null")]), "missing_field token_calls"),
            // bad values
            (with("username", Some("john dow")), "invalid_user username"),
            (with("selector", Some("12869E0E6E553673C54F29105A0647204C416A2A")), "invalid_selector selector"),
            (with("selector", Some("12869E0E6E553673C54F29105A0647204C416A2:7C3A0D14")), "invalid_selector selector"),
            (with("selector", Some("12869E0E6E553673C54F29105A0647204C416A2A:")), "invalid_selector selector"),
            (with("selector", Some("12869E0E6E553673C54F29105A0647204C416A2A:7C3A0D1G")), "invalid_selector selector"),
            (with("selector", Some("12869E0E6E553673C54F29105A0647204C416A2A:7C:3A")), "invalid_selector selector"),
            (with("token_calls", Some("Udl99X2JFP1bWwS5gR_wGeLE1hmAB2CMpr1Ej0wxkrY")), "invalid_token token_calls"),
            (with("token_calls", Some("Udl99X2JFP1bWwS5gR/wGeLE1hmAB2CMpr1Ej0wxk")), "invalid_token token_calls"),
            (with("token_calls", Some("Udl99X2JFP1bWwS5gR%2GwGeLE1hmAB2CMpr1Ej0wxkrY")), "invalid_token token_calls"),
            (with("token_calls", Some("Udl99X2JFP1bWwS5gR%25wGeLE1hmAB2CMpr1Ej0wxkrY")), "invalid_token token_calls"),
            (with("token_calls", Some("Udl9=9X2JFP1bWwS5gR/wGeLE1hmAB2CMpr1Ej0wxkrY")), "invalid_token token_calls"),
            (with("token_calls", Some("=")), "invalid_token token_calls"),
            (with("token_msgs", Some("!!!!")), "invalid_token token_msgs"),
            (with("appid_calls", Some("com.example app")), "unknown_application appid_calls"),
            (with("appid_msgs", Some("com/example")), "unknown_application appid_msgs"),
        ];
        let mut failures = Vec::new();
        for (i, (p, want)) in cases.iter().enumerate() {
            let got = check(p);
            if got != *want {
                failures.push(format!("case {i}: want {want:?}, got {got:?} for {p:?}"));
            }
        }
        assert!(failures.is_empty(), "{} failing:\n{}", failures.len(), failures.join("\n"));
    }

    #[test]
    fn seed_tokens_convert_as_protocol_7_says() {
        let r = parse_params(&pairs(&base())).unwrap();
        assert_eq!(r.username.as_str(), "johndow");
        assert_eq!(r.selector, SELECTOR);
        let calls = r.calls.unwrap();
        assert_eq!(calls.bytes.len(), 32);
        assert_eq!(calls.app_id.as_ref().map(|a| a.as_str()), Some("com.cloudsoftphone.app.pushkit"));
        assert_eq!(token_for(Provider::Apns, &calls).unwrap().as_str(), CALLS_HEX);
        let msgs = r.msgs.unwrap();
        assert_eq!(msgs.app_id.as_ref().map(|a| a.as_str()), Some("com.cloudsoftphone.app"));
        assert_eq!(token_for(Provider::Fcm, &msgs).unwrap().as_str(), MSGS_FCM);
        // The FCM token bytes are also 47 bytes of hex-encodable data for APNs (8..=100 bytes).
        assert_eq!(token_for(Provider::Apns, &msgs).unwrap().as_str(), hex::encode(MSGS_FCM));
        // Lower-case selector in, upper-case out.
        let r = parse_params(&with("selector", Some("12869e0e6e553673c54f29105a0647204c416a2a:7c3a0d14"))).unwrap();
        assert_eq!(r.selector, SELECTOR);
        // No message token → None (the store keeps the previous one).
        assert_eq!(parse_params(&with("token_msgs", Some("null"))).unwrap().msgs, None);
    }

    #[test]
    fn token_for_refuses_what_the_provider_cannot_take() {
        let raw = |bytes: &[u8]| RawToken { bytes: bytes.to_vec(), app_id: None };
        assert_eq!(token_for(Provider::Apns, &raw(&[1; 7])).unwrap_err().code, "invalid_token");
        assert_eq!(token_for(Provider::Apns, &raw(&[1; 101])).unwrap_err().field, "token");
        assert!(token_for(Provider::Apns, &raw(&[0xff; 100])).is_ok());
        assert_eq!(token_for(Provider::Fcm, &raw(&[0xff, 0xfe])).unwrap_err().code, "invalid_token");
        assert_eq!(token_for(Provider::Fcm, &raw(b"a b")).unwrap_err().code, "invalid_token");
        assert_eq!(token_for(Provider::Fcm, &raw(b"a\x01b")).unwrap_err().code, "invalid_token");
        assert!(token_for(Provider::Fcm, &raw(&vec![b'a'; 4097])).is_err());
        let e = token_for(Provider::Fcm, &raw(b"")).unwrap_err();
        assert!(!e.message.contains("pushNotifyToken"), "{}", e.message);
    }

    #[test]
    fn voip_topic_app_strips_pushkit() {
        assert_eq!(voip_topic_app("com.cloudsoftphone.app.pushkit"), "com.cloudsoftphone.app");
        assert_eq!(voip_topic_app("com.cloudsoftphone.app"), "com.cloudsoftphone.app");
        assert_eq!(voip_topic_app("com.x.pushkit.pushkit"), "com.x.pushkit");
        assert_eq!(voip_topic_app(".pushkit"), ".pushkit");
        assert_eq!(voip_topic_app("com.x.PushKit"), "com.x.PushKit");
    }

    #[test]
    fn json_pairs() {
        let p = |s: &str| pairs_from_json(s.as_bytes());
        let code = |s: &str| p(s).map(|_| "ok".to_string()).unwrap_or_else(|e| format!("{} {}", e.code, e.field).trim_end().into());
        assert_eq!(p(r#"{"a":"1","a":"2","b":null}"#).unwrap(), pairs(&[("a", "1"), ("a", "2")]));
        assert_eq!(code(r#"{"token_msgs":null}"#), "ok");
        assert_eq!(code(r#"{"token_msgs":12}"#), "invalid_field token_msgs");
        assert_eq!(code(r#"{"appId_calls":true}"#), "invalid_field appid_calls");
        assert_eq!(code(r#"{"username":["u"]}"#), "invalid_field username");
        assert_eq!(code(r#"{"pushToken":{"x":"y"}}"#), "invalid_field token_msgs");
        assert_eq!(code(r#"{"password":12345678,"extra":{"deep":[1]}}"#), "ok");
        assert_eq!(code("[]"), "malformed_json");
        assert_eq!(code(r#""token""#), "malformed_json");
        assert_eq!(code("null"), "malformed_json");
        assert_eq!(code("{"), "malformed_json");
        assert_eq!(code(""), "malformed_json");
        assert_eq!(code(r#"{"a":"b"} {}"#), "malformed_json");
        assert_eq!(code(&" ".repeat(MAX_BODY_BYTES + 1)), "too_large");
        // Repeated members reach parse_params, which refuses them.
        let dup = p(&format!(r#"{{"username":"u","selector":"{SELECTOR}","token_msgs":"{MSGS_B64}","pushToken":"{MSGS_B64}"}}"#)).unwrap();
        assert_eq!(check(&dup), "duplicate_field token_msgs");
        // A null token_msgs next to pushToken is simply absent.
        let one = p(&format!(r#"{{"username":"u","selector":"{SELECTOR}","token_msgs":null,"pushToken":"{MSGS_B64}"}}"#)).unwrap();
        assert_eq!(check(&one), "ok");
    }

    #[test]
    fn messages_never_echo_values() {
        let secret = "c2VjcmV0LXRva2VuLXZhbHVlLXRoYXQtbXVzdC1ub3QtbGVhaw";
        let bad = [
            with("token_calls", Some("c2VjcmV0LXRva2VuLXZhbHVlLXRoYXQtbXVzdC1ub3QtbGVhaw!")),
            with("selector", Some("c2VjcmV0LXRva2VuLXZhbHVlLXRoYXQtbXVzdC1ub3QtbGVhaw")),
            with("appid_msgs", Some("c2VjcmV0LXRva2VuLXZhbHVlLXRoYXQtbXVzdC1ub3QtbGVhaw/")),
        ];
        for p in bad {
            let e = parse_params(&p).unwrap_err();
            assert!(!e.message.contains(&secret[..20]), "{}: {}", e.code, e.message);
        }
        let shown = format!("{:?}", parse_params(&pairs(&base())).unwrap());
        assert!(!shown.contains("Udl99") && shown.contains("32 bytes"), "{shown}");
    }

    // -- fixtures -------------------------------------------------------------

    /// Every file in fixtures/acrobits/ and what parsing it must give.
    const FIXTURES: &[(&str, &str)] = &[
        ("get-query.txt", "ok"),
        ("post-form.txt", "ok"),
        ("post-json.json", "ok"),
        ("null-msgs.json", "ok"),
        ("bad-base64.txt", "invalid_token token_calls"),
    ];

    fn fixture_pairs(name: &str) -> Vec<(String, String)> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/acrobits").join(name);
        let body = std::fs::read(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        if name.ends_with(".json") {
            pairs_from_json(&body).unwrap()
        } else {
            // What the HTTP layer's query / form parser does.
            let text = std::str::from_utf8(&body).unwrap().trim_end_matches(['\r', '\n']);
            form_urlencoded::parse(text.as_bytes()).into_owned().collect()
        }
    }

    #[test]
    fn fixtures_parse_as_expected() {
        for (name, want) in FIXTURES {
            assert_eq!(check(&fixture_pairs(name)), *want, "{name}");
        }
    }

    #[test]
    fn every_fixture_file_is_in_the_table() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/acrobits");
        for entry in std::fs::read_dir(dir).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            assert!(FIXTURES.iter().any(|(f, _)| *f == name), "fixtures/acrobits/{name} has no expectation");
        }
    }

    #[test]
    fn fixture_values() {
        for name in ["get-query.txt", "post-form.txt", "post-json.json"] {
            let r = parse_params(&fixture_pairs(name)).unwrap();
            assert_eq!(r.selector, SELECTOR, "{name}");
            assert_eq!(token_for(Provider::Apns, r.calls.as_ref().unwrap()).unwrap().as_str(), CALLS_HEX, "{name}");
            assert_eq!(token_for(Provider::Fcm, r.msgs.as_ref().unwrap()).unwrap().as_str(), MSGS_FCM, "{name}");
            assert_eq!(r.calls.unwrap().app_id.unwrap().as_str(), "com.cloudsoftphone.app.pushkit", "{name}");
            assert_eq!(r.msgs.unwrap().app_id.unwrap().as_str(), "com.cloudsoftphone.app", "{name}");
        }
        let r = parse_params(&fixture_pairs("null-msgs.json")).unwrap();
        assert_eq!(r.msgs, None);
        assert_eq!(token_for(Provider::Apns, r.calls.as_ref().unwrap()).unwrap().as_str(), CALLS_HEX);
    }

    // -- properties -------------------------------------------------------------

    mod props {
        use super::*;
        use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
        use proptest::prelude::*;

        const NAMES: &[&str] = &[
            "username",
            "selector",
            "token_calls",
            "token_msgs",
            "appid_calls",
            "appId_calls",
            "appid_msgs",
            "appId_msgs",
            "pushToken",
            "pushTokenIncomingCall",
            "pushTokenOther",
            "pushappid",
            "pushappid_incoming_call",
            "pushappid_other",
            "password",
            "x",
        ];

        proptest! {
            #[test]
            fn never_panics(list in proptest::collection::vec((proptest::sample::select(NAMES), ".{0,80}"), 0..10)) {
                let p: Vec<(String, String)> = list.into_iter().map(|(n, v)| (n.to_string(), v)).collect();
                if let Ok(r) = parse_params(&p) {
                    prop_assert!(r.calls.is_some() || r.msgs.is_some());
                    prop_assert!(r.selector.len() > 41 && r.selector.as_bytes()[40] == b':');
                    for t in r.calls.iter().chain(r.msgs.iter()) {
                        prop_assert!(!t.bytes.is_empty());
                        let _ = token_for(Provider::Apns, t);
                        let _ = token_for(Provider::Fcm, t);
                    }
                }
            }

            #[test]
            fn json_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512)) {
                if let Ok(p) = pairs_from_json(&body) {
                    let _ = parse_params(&p);
                }
            }

            #[test]
            fn any_bytes_round_trip_padded_or_not(bytes in proptest::collection::vec(any::<u8>(), 1..120), pad in any::<bool>()) {
                let b64 = if pad { STANDARD.encode(&bytes) } else { STANDARD_NO_PAD.encode(&bytes) };
                let mut p = with("token_calls", None);
                p.push(("token_calls".into(), b64.clone()));
                let r = parse_params(&p).unwrap();
                prop_assert_eq!(&r.calls.as_ref().unwrap().bytes, &bytes);
                // The same value URL-encoded once more still decodes to the same bytes.
                let enc = b64.replace('/', "%2F").replace('+', "%2B").replace('=', "%3D");
                let mut p = with("token_calls", None);
                p.push(("token_calls".into(), enc));
                prop_assert_eq!(&parse_params(&p).unwrap().calls.unwrap().bytes, &bytes);
                let apns = token_for(Provider::Apns, r.calls.as_ref().unwrap());
                prop_assert_eq!(apns.is_ok(), (8..=100).contains(&bytes.len()));
                if let Ok(t) = apns {
                    prop_assert_eq!(t.as_str(), hex::encode(&bytes));
                }
            }

            #[test]
            fn non_base64_is_refused(tok in "[A-Za-z0-9+/]{0,20}[-_.!~*'()][A-Za-z0-9+/]{0,20}") {
                let mut p = with("token_calls", None);
                p.push(("token_calls".into(), tok));
                prop_assert_eq!(check(&p), "invalid_token token_calls");
            }
        }
    }
}

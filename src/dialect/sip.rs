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
//! **X-MPUSH tokens are hex.** seeds/001 defines the token as "TOKEN: device
//! token obtained from Apple APNs" and shows `X-MPUSH: i:com.voip.phone:abcdef`,
//! but its "typical registration request" carries
//! `X-MPUSH: i:com.mycompany.myapp:c-10-ap_Kt0:G7SThkASJx2K4Rm1033iR0mIgzI1cLg5xxpST4cjrd_cqQquRLkHMi3eY4g`,
//! which is not an APNs device token (not hex, 44 bytes of base64url after
//! a `c-10-ap_Kt0:` prefix; APNs would answer `BadDeviceToken`). The domain
//! `DeviceToken` only holds hex APNs tokens, so the token is parsed with
//! `DeviceToken::parse(Provider::Apns, …)` and that seed example is refused
//! with `invalid_token` (fixture `mizu-register.txt`). Accepting it would need
//! an opaque APNs token kind in `domain`.
//!
//! Error messages name the header or parameter and a line number; they never
//! quote tokens or header values.

use crate::domain::{AppId, BundleId, DeviceToken, FieldError, Provider, UserId};
use std::fmt;

/// Largest accepted message (`too_large`, 413).
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;
/// Most header fields (after unfolding) (`too_many_headers`).
pub const MAX_HEADERS: usize = 64;
/// Most Contact addresses over all Contact headers (`too_many_contacts`).
pub const MAX_CONTACTS: usize = 16;
/// Longest physical line, terminator excluded (`line_too_long`).
pub const MAX_LINE_BYTES: usize = 4 * 1024;

/// A `sip:`/`sips:` URI.
#[derive(Clone, PartialEq, Eq)]
pub struct SipUri {
    /// `sip` or `sips`, lower case.
    pub scheme: String,
    /// The user part, percent-decoded (the password, if any, is dropped).
    pub user: Option<String>,
    /// The host, lower case (IPv6 references keep their brackets).
    pub host: String,
    pub port: Option<u16>,
    /// URI parameters: lower-case names, percent-decoded values (`None` for `;lr`).
    pub params: Vec<(String, Option<String>)>,
    /// The URI as written in the message.
    pub raw: String,
}

impl SipUri {
    /// Value of a URI parameter (name case-insensitive); `Some("")` for a valueless one.
    pub fn param(&self, name: &str) -> Option<&str> {
        find_param(&self.params, name)
    }
    /// `scheme:user@host[:port]` without parameters: the key devices are stored under.
    pub fn aor(&self) -> String {
        let mut s = format!("{}:", self.scheme);
        if let Some(u) = &self.user {
            s.push_str(u);
            s.push('@');
        }
        s.push_str(&self.host);
        if let Some(p) = self.port {
            s.push_str(&format!(":{p}"));
        }
        s
    }
}

impl fmt::Debug for SipUri {
    /// Parameters may hold push tokens: only their names are shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.params.iter().map(|(n, _)| n.as_str()).collect();
        write!(f, "SipUri({}, params {names:?})", self.aor())
    }
}

/// One Contact address.
#[derive(Clone, PartialEq, Eq)]
pub struct Contact {
    pub display_name: Option<String>,
    pub uri: SipUri,
    /// Header parameters (after the URI): lower-case names, decoded values.
    pub params: Vec<(String, Option<String>)>,
}

impl Contact {
    /// Value of a header parameter (name case-insensitive).
    pub fn param(&self, name: &str) -> Option<&str> {
        find_param(&self.params, name)
    }
    /// A header parameter, else the URI parameter of that name.
    pub fn param_anywhere(&self, name: &str) -> Option<&str> {
        self.param(name).or_else(|| self.uri.param(name))
    }
}

impl fmt::Debug for Contact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.params.iter().map(|(n, _)| n.as_str()).collect();
        write!(f, "Contact({:?}, {:?}, params {names:?})", self.display_name, self.uri)
    }
}

/// The parts of a REGISTER the relay uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SipRegister {
    /// The To header URI: the address of record.
    pub aor: SipUri,
    /// The AOR's user part.
    pub user: UserId,
    pub contacts: Vec<Contact>,
    /// `Contact: *` (remove all bindings; RFC 3261 §10.2.2). `contacts` is empty then.
    pub wildcard: bool,
    pub user_agent: Option<String>,
    pub call_id: Option<String>,
    pub expires: Option<u32>,
    pub x_mpush: Option<String>,
}

/// Push data found in a REGISTER.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PushData {
    /// `X-MPUSH: i:<bundle>:<token>` (seeds/001).
    Mpush { bundle: BundleId, token: DeviceToken },
    /// RFC 8599 Contact URI parameters. `contact` is the Contact URI as written.
    Rfc8599 {
        provider: Provider,
        prid: DeviceToken,
        /// APNs: the topic (`pn-param` without the Team ID); FCM: the project id.
        topic_or_project: String,
        /// APNs: the Team ID (first label of `pn-param`).
        team_id: Option<String>,
        purr: Option<String>,
        contact: String,
    },
    /// Contact parameters named by a User-Agent rule (seeds/004).
    Kazoo { rule: String, app: AppId, provider: Provider, token: DeviceToken, contact: String },
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
    pub fn new(
        name: &str,
        regex: &str,
        token_app: Option<&str>,
        token_type: Option<&str>,
        token_id: Option<&str>,
    ) -> Result<Self, FieldError> {
        let regex = regex::RegexBuilder::new(regex).size_limit(1 << 20).build().map_err(|_| {
            FieldError::new("regex", "invalid_regex", format!("user agent rule {name:?}: invalid regex"))
        })?;
        let pname = |v: Option<&str>, default: &str| -> Result<String, FieldError> {
            let v = v.unwrap_or(default);
            if v.is_empty() || !v.bytes().all(is_token_byte) {
                return Err(FieldError::new(
                    "user_agents",
                    "invalid_param",
                    format!("user agent rule {name:?}: parameter names must be SIP tokens"),
                ));
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

// ---------------------------------------------------------------------------
// Message

fn err(field: &'static str, code: &'static str, message: impl Into<String>) -> FieldError {
    FieldError::new(field, code, message)
}

fn malformed(message: impl Into<String>) -> FieldError {
    err("", "malformed_sip", message)
}

/// Parse a REGISTER request.
pub fn parse_register(msg: &[u8]) -> Result<SipRegister, FieldError> {
    if msg.len() > MAX_MESSAGE_BYTES {
        return Err(err(
            "",
            "too_large",
            format!("message is larger than {MAX_MESSAGE_BYTES} bytes (got {})", msg.len()),
        ));
    }
    let (lines, body_len) = split_lines(msg)?;
    let Some((request_line, header_lines)) = lines.split_first() else {
        return Err(malformed("empty message"));
    };
    check_request_line(request_line)?;
    let headers = unfold(header_lines)?;

    let mut to: Option<SipUri> = None;
    let mut contacts = Vec::new();
    let mut stars = 0usize;
    let mut singles: [Option<String>; 5] = Default::default(); // call-id, user-agent, x-mpush, expires, content-length
    const SINGLE: [&str; 5] = ["Call-ID", "User-Agent", "X-MPUSH", "Expires", "Content-Length"];
    let mut contact_headers = 0usize;

    for (line_no, name, value) in &headers {
        let lname = name.to_ascii_lowercase();
        let single = match lname.as_str() {
            "to" | "t" => {
                if to.is_some() {
                    return Err(err("To", "duplicate_header", "To appears more than once"));
                }
                let (_display, uri, params) = split_address(value, "To", *line_no)?;
                header_params(params, "To", *line_no)?;
                to = Some(parse_uri_in(uri, "To")?);
                continue;
            }
            "contact" | "m" => {
                contact_headers += 1;
                for part in split_commas(value, "Contact", *line_no)? {
                    if part == "*" {
                        stars += 1;
                        continue;
                    }
                    if contacts.len() == MAX_CONTACTS {
                        return Err(err("Contact", "too_many_contacts", format!("more than {MAX_CONTACTS} contacts")));
                    }
                    contacts.push(parse_contact(part, *line_no)?);
                }
                continue;
            }
            "call-id" | "i" => 0,
            "user-agent" => 1,
            "x-mpush" => 2,
            "expires" => 3,
            "content-length" | "l" => 4,
            _ => continue, // From, Via, CSeq, Authorization, ...: not needed
        };
        if singles[single].is_some() {
            let n = SINGLE[single];
            return Err(err(n, "duplicate_header", format!("{n} appears more than once")));
        }
        singles[single] = Some(value.clone());
    }
    let wildcard = stars > 0;
    if wildcard && (stars > 1 || !contacts.is_empty() || contact_headers > 1) {
        return Err(err("Contact", "invalid_contact", "Contact: * must be the only contact"));
    }

    let aor = to.ok_or_else(|| err("To", "missing_header", "To is required"))?;
    let user = aor.user.as_deref().ok_or_else(|| err("To", "missing_user", "the To URI has no user part"))?;
    let user = UserId::parse(user).map_err(|e| FieldError { field: "To", ..e })?;

    let [call_id, user_agent, x_mpush, expires, content_length] = singles;
    let nonempty = |v: Option<String>, field: &'static str| -> Result<Option<String>, FieldError> {
        match v {
            Some(s) if s.is_empty() => Err(err(field, "invalid_header", format!("{field} is empty"))),
            other => Ok(other),
        }
    };
    let call_id = nonempty(call_id, "Call-ID")?;
    let user_agent = nonempty(user_agent, "User-Agent")?;
    let x_mpush = nonempty(x_mpush, "X-MPUSH")?;
    let expires = expires.map(|v| number(&v, "Expires")).transpose()?.map(|n| n.min(u32::MAX as u64) as u32);
    if let Some(cl) = content_length {
        let declared = number(&cl, "Content-Length")?;
        if declared > body_len as u64 {
            return Err(err(
                "Content-Length",
                "truncated_body",
                format!("Content-Length is {declared} but only {body_len} body bytes follow"),
            ));
        }
    }
    Ok(SipRegister { aor, user, contacts, wildcard, user_agent, call_id, expires, x_mpush })
}

/// Parse one SIP URI (for instance the `aor` of `POST /sip/wake`).
pub fn parse_uri(raw: &str) -> Result<SipUri, FieldError> {
    parse_uri_in(raw, "uri")
}

fn number(v: &str, field: &'static str) -> Result<u64, FieldError> {
    if v.is_empty() || v.len() > 10 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err(field, "invalid_header", format!("{field} must be a number")));
    }
    v.parse().map_err(|_| err(field, "invalid_header", format!("{field} must be a number")))
}

/// Physical header lines (terminators removed) up to the empty line, and the body length.
fn split_lines(msg: &[u8]) -> Result<(Vec<&str>, usize), FieldError> {
    let mut lines = Vec::new();
    let mut pos = 0;
    let mut body_len = 0;
    while pos < msg.len() {
        let (line, next) = match msg[pos..].iter().position(|b| *b == b'\n') {
            Some(i) => (&msg[pos..pos + i], pos + i + 1),
            None => (&msg[pos..], msg.len()),
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let n = lines.len() + 1;
        if line.len() > MAX_LINE_BYTES {
            return Err(err("", "line_too_long", format!("line {n} is longer than {MAX_LINE_BYTES} bytes")));
        }
        if line.is_empty() {
            if lines.is_empty() {
                return Err(malformed("the message must start with the request line"));
            }
            body_len = msg.len() - next;
            break;
        }
        let text = std::str::from_utf8(line).map_err(|_| malformed(format!("line {n} is not valid UTF-8")))?;
        if let Some(c) = text.chars().find(|c| c.is_control() && *c != '\t') {
            let what =
                if c == '\r' { "a lone CR".to_string() } else { format!("control character U+{:04X}", c as u32) };
            return Err(malformed(format!("line {n} contains {what}")));
        }
        lines.push(text);
        pos = next;
    }
    Ok((lines, body_len))
}

fn check_request_line(line: &str) -> Result<(), FieldError> {
    let parts: Vec<&str> = line.split(' ').collect();
    if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
        return Err(malformed("the request line must be `REGISTER <uri> SIP/2.0`"));
    }
    if parts[0] != "REGISTER" {
        let shown: String = parts[0].chars().take(16).collect();
        return Err(err("", "not_register", format!("the method must be REGISTER (got {shown:?})")));
    }
    if !parts[2].eq_ignore_ascii_case("SIP/2.0") {
        return Err(malformed("the request line must end in SIP/2.0"));
    }
    parse_uri_in(parts[1], "Request-URI").map(|_| ())
}

/// Logical headers `(line number, name, value)` after unfolding.
fn unfold<'a>(lines: &[&'a str]) -> Result<Vec<(usize, &'a str, String)>, FieldError> {
    let mut out: Vec<(usize, &'a str, String)> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let n = i + 2;
        if line.starts_with([' ', '\t']) {
            let Some(last) = out.last_mut() else {
                return Err(malformed("the first header line is a continuation line"));
            };
            let more = line.trim_matches([' ', '\t']);
            if !more.is_empty() {
                last.2.push(' ');
                last.2.push_str(more);
            }
            if last.2.len() > MAX_LINE_BYTES {
                return Err(err(
                    "",
                    "line_too_long",
                    format!("the header at line {} is longer than {MAX_LINE_BYTES} bytes", last.0),
                ));
            }
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(malformed(format!("line {n} is not a header (no colon)")));
        };
        let name = name.trim_end_matches([' ', '\t']);
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(malformed(format!("line {n} has an invalid header name")));
        }
        if out.len() == MAX_HEADERS {
            return Err(err("", "too_many_headers", format!("more than {MAX_HEADERS} headers")));
        }
        out.push((n, name, value.trim_matches([' ', '\t']).to_string()));
    }
    Ok(out)
}

/// RFC 3261 `token` characters.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// Split a header value at commas outside `<…>` and quoted strings.
fn split_commas<'a>(value: &'a str, field: &'static str, line: usize) -> Result<Vec<&'a str>, FieldError> {
    let mut parts = Vec::new();
    let (mut in_quotes, mut in_angle, mut escaped) = (false, false, false);
    let mut start = 0;
    for (i, c) in value.char_indices() {
        if in_quotes {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_quotes = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_quotes = true,
            '<' if !in_angle => in_angle = true,
            '>' if in_angle => in_angle = false,
            ',' if !in_angle => {
                parts.push(value[start..i].trim_matches([' ', '\t']));
                start = i + 1;
            }
            _ => {}
        }
    }
    if in_quotes || in_angle {
        return Err(err(field, "malformed_sip", format!("{field} at line {line} has an unclosed quote or <")));
    }
    parts.push(value[start..].trim_matches([' ', '\t']));
    if parts.iter().any(|p| p.is_empty()) {
        return Err(err(field, "malformed_sip", format!("{field} at line {line} has an empty address")));
    }
    Ok(parts)
}

/// `(display name, URI text, header-parameter text)` of one address.
fn split_address<'a>(
    value: &'a str,
    field: &'static str,
    line: usize,
) -> Result<(Option<String>, &'a str, &'a str), FieldError> {
    let bad = |what: &str| err(field, "malformed_sip", format!("{field} at line {line}: {what}"));
    let value = value.trim_matches([' ', '\t']);
    if value.is_empty() {
        return Err(bad("empty address"));
    }
    let (display, rest) = if let Some(q) = value.strip_prefix('"') {
        let (name, after) = unquote(q).ok_or_else(|| bad("unclosed quoted display name"))?;
        let after = after.trim_start_matches([' ', '\t']);
        if !after.starts_with('<') {
            return Err(bad("a quoted display name must be followed by <uri>"));
        }
        (Some(name), after)
    } else if let Some(lt) = value.find('<').filter(|lt| value.find(';').map_or(true, |semi| *lt < semi)) {
        let name = value[..lt].trim_matches([' ', '\t']);
        if !name.bytes().all(|b| is_token_byte(b) || b == b' ' || b == b'\t') {
            return Err(bad("invalid display name"));
        }
        (Some(name.to_string()).filter(|n| !n.is_empty()), &value[lt..])
    } else {
        // addr-spec: the URI ends at the first ';' (RFC 3261 §20).
        let (uri, params) = value.split_at(value.find(';').unwrap_or(value.len()));
        if uri.contains(['>', '"', ' ', '\t']) {
            return Err(bad("an address without <> must be a bare URI"));
        }
        return Ok((None, uri, params));
    };
    // rest starts with '<'
    let gt = rest.find('>').ok_or_else(|| bad("missing >"))?;
    let uri = &rest[1..gt];
    let params = rest[gt + 1..].trim_start_matches([' ', '\t']);
    if uri.contains('<') {
        return Err(bad("nested <"));
    }
    Ok((display, uri, params))
}

/// Read a quoted string whose opening quote is already consumed: `(text, rest after the closing quote)`.
fn unquote(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?.1),
            '"' => return Some((out, &s[i + 1..])),
            c => out.push(c),
        }
    }
    None
}

fn parse_contact(text: &str, line: usize) -> Result<Contact, FieldError> {
    let (display_name, uri, params) = split_address(text, "Contact", line)?;
    let uri = parse_uri_in(uri, "Contact")?;
    let params = header_params(params, "Contact", line)?;
    Ok(Contact { display_name, uri, params })
}

/// `;name[=value]…` after an address. Values: token/host (percent-decoded) or quoted string.
fn header_params(text: &str, field: &'static str, line: usize) -> Result<Vec<(String, Option<String>)>, FieldError> {
    let bad = |what: &str| err(field, "malformed_sip", format!("{field} at line {line}: {what}"));
    let mut out: Vec<(String, Option<String>)> = Vec::new();
    let mut rest = text.trim_matches([' ', '\t']);
    while !rest.is_empty() {
        let Some(r) = rest.strip_prefix(';') else { return Err(bad("parameters must start with ;")) };
        let r = r.trim_start_matches([' ', '\t']);
        let end = r.find(['=', ';']).unwrap_or(r.len());
        let name = r[..end].trim_end_matches([' ', '\t']);
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(bad("invalid parameter name"));
        }
        let mut after = &r[end..];
        let value = if let Some(v) = after.strip_prefix('=') {
            let v = v.trim_start_matches([' ', '\t']);
            if let Some(q) = v.strip_prefix('"') {
                let (text, tail) = unquote(q).ok_or_else(|| bad("unclosed quoted parameter value"))?;
                after = tail;
                text
            } else {
                let e = v.find(';').unwrap_or(v.len());
                let raw = v[..e].trim_end_matches([' ', '\t']);
                if raw.is_empty() || raw.contains([' ', '\t', '"', '<', '>', ',']) {
                    return Err(bad("invalid parameter value"));
                }
                after = &v[e..];
                pct_decode(raw).ok_or_else(|| bad("invalid percent-encoding"))?
            }
            .into()
        } else {
            None
        };
        push_param(&mut out, name, value, field)?;
        rest = after.trim_start_matches([' ', '\t']);
    }
    Ok(out)
}

fn push_param(
    list: &mut Vec<(String, Option<String>)>,
    name: &str,
    value: Option<String>,
    field: &'static str,
) -> Result<(), FieldError> {
    let name = name.to_ascii_lowercase();
    if list.iter().any(|(n, _)| *n == name) {
        let shown: String = name.chars().take(32).collect();
        return Err(err(field, "duplicate_param", format!("{field} parameter {shown} appears more than once")));
    }
    list.push((name, value));
    Ok(())
}

fn find_param<'a>(list: &'a [(String, Option<String>)], name: &str) -> Option<&'a str> {
    list.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_deref().unwrap_or(""))
}

/// Percent-decode; `None` for a bad escape, invalid UTF-8 or a control character.
fn pct_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = b.get(i + 1..i + 3)?;
            let h = std::str::from_utf8(h).ok()?;
            out.push(u8::from_str_radix(h, 16).ok().filter(|_| h.bytes().all(|c| c.is_ascii_hexdigit()))?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    let s = String::from_utf8(out).ok()?;
    (!s.chars().any(char::is_control)).then_some(s)
}

fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&c)
}

fn parse_uri_in(raw: &str, field: &'static str) -> Result<SipUri, FieldError> {
    let bad = |what: &str| err(field, "invalid_uri", format!("{field} URI: {what}"));
    let (scheme, rest) = raw.split_once(':').ok_or_else(|| bad("missing scheme"))?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "sip" && scheme != "sips" {
        return Err(bad("the scheme must be sip or sips"));
    }
    if rest.is_empty() || rest.bytes().any(|b| b <= b' ' || b >= 0x7f || b"<>\"".contains(&b)) {
        return Err(bad("empty, or contains spaces, quotes, <, > or non-ASCII characters"));
    }
    let (userinfo, hostpart) = match rest.find('@') {
        Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
        None => (None, rest),
    };
    let user = match userinfo {
        Some(ui) => {
            let user = ui.split_once(':').map_or(ui, |(u, _password)| u);
            if user.is_empty() || !user.bytes().all(|c| is_unreserved(c) || b"%&=+$,;?/".contains(&c)) {
                return Err(bad("invalid user part"));
            }
            Some(pct_decode(user).ok_or_else(|| bad("invalid percent-encoding in the user part"))?)
        }
        None => None,
    };
    let (hostport, tail) = match hostpart.find([';', '?']) {
        Some(i) => (&hostpart[..i], &hostpart[i..]),
        None => (hostpart, ""),
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let end = v6.find(']').ok_or_else(|| bad("unclosed IPv6 reference"))?;
        let addr = &v6[..end];
        if addr.is_empty() || !addr.bytes().all(|c| c.is_ascii_hexdigit() || c == b':' || c == b'.') {
            return Err(bad("invalid IPv6 reference"));
        }
        (&hostport[..end + 2], &v6[end + 1..])
    } else {
        let i = hostport.find(':').unwrap_or(hostport.len());
        (&hostport[..i], &hostport[i..])
    };
    if host.is_empty()
        || (!host.starts_with('[') && !host.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.'))
    {
        return Err(bad("invalid host"));
    }
    let port = match port.strip_prefix(':') {
        None if port.is_empty() => None,
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|c| c.is_ascii_digit()) => {
            Some(p.parse::<u16>().map_err(|_| bad("invalid port"))?)
        }
        _ => return Err(bad("invalid port")),
    };
    let (params_text, headers) = match tail.find('?') {
        Some(i) => (&tail[..i], &tail[i + 1..]),
        None => (tail, ""),
    };
    if !headers.bytes().all(|c| is_unreserved(c) || b"%[]/?:+$&=".contains(&c)) {
        return Err(bad("invalid URI headers"));
    }
    let mut params = Vec::new();
    if !params_text.is_empty() {
        for p in params_text[1..].split(';') {
            let (name, value) = match p.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (p, None),
            };
            let ok = |s: &str| s.bytes().all(|c| is_unreserved(c) || b"%[]/:&+$".contains(&c));
            if name.is_empty() || !ok(name) || !value.map_or(true, ok) {
                return Err(bad("invalid parameter"));
            }
            let name = pct_decode(name).ok_or_else(|| bad("invalid percent-encoding in a parameter"))?;
            let value = value.map(|v| pct_decode(v).ok_or_else(|| bad("invalid percent-encoding in a parameter")));
            push_param(&mut params, &name, value.transpose()?, field)?;
        }
    }
    Ok(SipUri { scheme, user, host: host.to_ascii_lowercase(), port, params, raw: raw.to_string() })
}

// ---------------------------------------------------------------------------
// Push data

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
        out.push((mpush(v)?, (!reg.contacts.is_empty()).then_some(0)));
    }
    let rule = reg.user_agent.as_deref().and_then(|ua| rules.iter().find(|r| r.regex.is_match(ua)));
    for (i, c) in reg.contacts.iter().enumerate() {
        if let Some(d) = rfc8599(c)? {
            out.push((d, Some(i)));
        } else if let Some(rule) = rule {
            if let Some(d) = kazoo(c, rule)? {
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

fn token_err(field: &'static str) -> impl Fn(FieldError) -> FieldError {
    move |e| FieldError { field, message: e.message.replace("pushNotifyToken", field), ..e }
}

fn mpush(v: &str) -> Result<PushData, FieldError> {
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
    let token = DeviceToken::parse(Provider::Apns, token).map_err(token_err(F))?;
    Ok(PushData::Mpush { bundle, token })
}

fn rfc8599(c: &Contact) -> Result<Option<PushData>, FieldError> {
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

fn kazoo(c: &Contact, rule: &UaRule) -> Result<Option<PushData>, FieldError> {
    let get = |n: &str| c.param_anywhere(n).filter(|v| !v.is_empty());
    let (Some(app), Some(kind), Some(token)) = (get(&rule.token_app), get(&rule.token_type), get(&rule.token_id))
    else {
        return Ok(None);
    };
    let provider = if kind.eq_ignore_ascii_case("apple") {
        Provider::Apns
    } else if kind.eq_ignore_ascii_case("firebase") {
        Provider::Fcm
    } else {
        let shown: String = kind.chars().take(16).collect();
        return Err(err(
            "Contact",
            "unknown_provider",
            format!("{} must be apple or firebase (got {shown:?})", rule.token_type),
        ));
    };
    let app = AppId::parse(app).map_err(|e| FieldError { field: "Contact", ..e })?;
    let token = DeviceToken::parse(provider, token).map_err(token_err("Contact"))?;
    Ok(Some(PushData::Kazoo { rule: rule.name.clone(), app, provider, token, contact: c.uri.raw.clone() }))
}

#[cfg(test)]
mod tests;

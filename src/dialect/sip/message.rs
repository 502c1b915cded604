//! The SIP message grammar the relay needs: a strict REGISTER parser (request
//! line, To, Contact, Call-ID, Expires, User-Agent, Content-Length, X-MPUSH)
//! and SIP URIs, with limits. See the module doc of `dialect::sip`.

use crate::domain::{FieldError, UserId};
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

pub(super) fn err(field: &'static str, code: &'static str, message: impl Into<String>) -> FieldError {
    FieldError::new(field, code, message)
}

fn malformed(message: impl Into<String>) -> FieldError {
    err("", "malformed_sip", message)
}

/// Parse a REGISTER request.
pub fn parse_register(msg: &[u8]) -> Result<SipRegister, FieldError> {
    if msg.len() > MAX_MESSAGE_BYTES {
        return Err(err("", "too_large", format!("message is larger than {MAX_MESSAGE_BYTES} bytes (got {})", msg.len())));
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
            return Err(err("Content-Length", "truncated_body", format!("Content-Length is {declared} but only {body_len} body bytes follow")));
        }
    }
    Ok(SipRegister { aor, user, contacts, wildcard, user_agent, call_id, expires, x_mpush })
}

/// Parse one SIP URI (for instance the `aor` of `POST /sip/wake`).
pub fn parse_uri(raw: &str) -> Result<SipUri, FieldError> {
    parse_uri_in(raw, "uri")
}

pub(super) fn number(v: &str, field: &'static str) -> Result<u64, FieldError> {
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
            let what = if c == '\r' { "a lone CR".to_string() } else { format!("control character U+{:04X}", c as u32) };
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
                return Err(err("", "line_too_long", format!("the header at line {} is longer than {MAX_LINE_BYTES} bytes", last.0)));
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
pub(super) fn is_token_byte(b: u8) -> bool {
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
fn split_address<'a>(value: &'a str, field: &'static str, line: usize) -> Result<(Option<String>, &'a str, &'a str), FieldError> {
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
    } else if let Some(lt) = value.find('<').filter(|lt| value.find(';').is_none_or(|semi| *lt < semi)) {
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

fn push_param(list: &mut Vec<(String, Option<String>)>, name: &str, value: Option<String>, field: &'static str) -> Result<(), FieldError> {
    let name = name.to_ascii_lowercase();
    if list.iter().any(|(n, _)| *n == name) {
        let shown: String = name.chars().take(32).collect();
        return Err(err(field, "duplicate_param", format!("{field} parameter {shown} appears more than once")));
    }
    list.push((name, value));
    Ok(())
}

pub(super) fn find_param<'a>(list: &'a [(String, Option<String>)], name: &str) -> Option<&'a str> {
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
    if host.is_empty() || (!host.starts_with('[') && !host.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.')) {
        return Err(bad("invalid host"));
    }
    let port = match port.strip_prefix(':') {
        None if port.is_empty() => None,
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|c| c.is_ascii_digit()) => Some(p.parse::<u16>().map_err(|_| bad("invalid port"))?),
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
            if name.is_empty() || !ok(name) || !value.is_none_or(ok) {
                return Err(bad("invalid parameter"));
            }
            let name = pct_decode(name).ok_or_else(|| bad("invalid percent-encoding in a parameter"))?;
            let value = value.map(|v| pct_decode(v).ok_or_else(|| bad("invalid percent-encoding in a parameter")));
            push_param(&mut params, &name, value.transpose()?, field)?;
        }
    }
    Ok(SipUri { scheme, user, host: host.to_ascii_lowercase(), port, params, raw: raw.to_string() })
}

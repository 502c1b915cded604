//! CUCM UDS `<token>` document (protocol.md §1).
//!
//! `PUT /cucm-uds/user/{userId}/device/{devicePkid}/devicetoken` carries
//!
//! ```xml
//! <token>
//!     <pushNotifyToken>…</pushNotifyToken>
//!     <pushChannelType>APNS | APNS:dev | FCM</pushChannelType>
//!     <key>base64 of 32 bytes</key>
//!     <algorithm>A256GCM</algorithm>
//!     <application>com.example.KitchenSink</application>
//!     <payloadVersion>V2</payloadVersion>
//! </token>
//! ```
//!
//! Parsing is a single quick-xml event scan (no DTD processing at all:
//! DOCTYPE, processing instructions and undefined entities are refused)
//! followed by domain parsing of the six collected texts. Unknown child
//! elements (and everything nested in them) and comments are ignored.
//! Error messages never echo the key.

use crate::domain::{AppId, Channel, DevicePkid, DeviceToken, DialectData, FieldError, PayloadVersion, PushKey, Registration, UserId};
use quick_xml::escape::escape;
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
use std::fmt;
use zeroize::Zeroizing;

/// Largest accepted body; larger ones are refused with `too_large` (413).
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Deepest accepted element nesting (the root counts as 1).
pub const MAX_DEPTH: usize = 16;
/// The only accepted `<algorithm>`.
pub const ALGORITHM: &str = "A256GCM";

/// The required child elements, in document (and missing-check) order.
const FIELDS: [&str; 6] = ["pushNotifyToken", "pushChannelType", "key", "algorithm", "application", "payloadVersion"];

/// A parsed `<token>` document.
#[derive(Clone, PartialEq, Eq)]
pub struct UdsToken {
    pub channel: Channel,
    pub token: DeviceToken,
    pub key: PushKey,
    pub app: AppId,
    pub payload_version: PayloadVersion,
}

impl fmt::Debug for UdsToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UdsToken")
            .field("channel", &self.channel)
            .field("token", &self.token)
            .field("key", &"<redacted>")
            .field("app", &self.app)
            .field("payload_version", &self.payload_version)
            .finish()
    }
}

impl UdsToken {
    /// The registration this document creates or replaces for `device`.
    pub fn into_registration(self, user: UserId, device: DevicePkid) -> Registration {
        Registration {
            user,
            device,
            channel: self.channel,
            token: self.token,
            subscription_keys: None,
            app: self.app,
            data: DialectData::Uds { key: self.key, version: self.payload_version },
        }
    }
}

/// Parse a `<token>` request body. Every refusal is a `FieldError` whose
/// `field` is the element name ("" for document-level problems) and whose
/// `code` is one of protocol.md §1's codes.
pub fn parse_token(body: &[u8]) -> Result<UdsToken, FieldError> {
    let [token, channel, key, algorithm, application, payload_version] = scan(body)?;

    // Missing fields first, in document order.
    let present = [&token, &channel, &key, &algorithm, &application, &payload_version];
    if let Some(i) = present.iter().position(|v| v.is_none()) {
        let name = FIELDS[i];
        return Err(FieldError::new(name, "missing_field", format!("<{name}> is required")));
    }
    let text = |v: &Option<Zeroizing<String>>| -> Zeroizing<String> { v.clone().unwrap_or_default() };
    let (token, channel, key) = (text(&token), text(&channel), text(&key));
    let (algorithm, application, payload_version) = (text(&algorithm), text(&application), text(&payload_version));

    let channel = Channel::parse(&channel).map_err(no_long_echo(&channel, "pushChannelType must be APNS, APNS:dev or FCM"))?;
    let token = DeviceToken::for_channel(channel, &token)?;
    let key = PushKey::parse_b64(&key)?;
    if algorithm.as_str() != ALGORITHM {
        return Err(FieldError::new("algorithm", "invalid_algorithm", format!("algorithm must be {ALGORITHM} (got {})", echo(&algorithm))));
    }
    let payload_version = PayloadVersion::parse(&payload_version).map_err(no_long_echo(&payload_version, "payloadVersion must be V2"))?;
    let app = AppId::parse(&application)?;
    Ok(UdsToken { channel, token, key, app, payload_version })
}

/// Body of a 200 answer.
pub fn success_xml(rows: u64) -> String {
    format!("<success><rowsUpdated>{rows}</rowsUpdated></success>")
}

/// Body of an error answer; `field` "" renders as `<field/>`.
pub fn error_xml(code: &str, field: &str, message: &str) -> String {
    let field = if field.is_empty() { "<field/>".to_string() } else { format!("<field>{}</field>", escape(field)) };
    format!("<error><code>{}</code>{field}<message>{}</message></error>", escape(code), escape(message))
}

// ---------------------------------------------------------------------------
// Event scan

type Texts = [Option<Zeroizing<String>>; 6];

fn doc_error(code: &'static str, message: impl Into<String>) -> FieldError {
    FieldError::new("", code, message)
}

fn malformed(message: impl Into<String>) -> FieldError {
    doc_error("malformed_xml", message)
}

/// Longest refused value that a message echoes. Anything longer (for
/// instance a key pasted into the wrong element) is described by its length
/// only, so that no message can carry a key.
const MAX_ECHO: usize = 16;

fn echo(raw: &str) -> String {
    let n = raw.chars().count();
    if n <= MAX_ECHO {
        format!("{raw:?}")
    } else {
        format!("a value of {n} characters")
    }
}

/// Replace a domain error's message when the refused value is too long to echo.
fn no_long_echo(raw: &str, generic: &str) -> impl FnOnce(FieldError) -> FieldError {
    let long = raw.chars().count() > MAX_ECHO;
    let generic = format!("{generic} (got {})", echo(raw));
    move |e| if long { FieldError { message: generic, ..e } } else { e }
}

const BAD_REFERENCE: &str = "undefined entity or invalid character reference";

/// A fixed description of a quick-xml error: its own `Display` may quote
/// names or entity text from the document, which could be anything.
fn describe(e: &quick_xml::Error) -> &'static str {
    use quick_xml::errors::{IllFormedError as I, SyntaxError as S};
    match e {
        quick_xml::Error::Syntax(S::InvalidBangMarkup) => "unknown `<!` markup",
        quick_xml::Error::Syntax(S::UnclosedPI | S::UnclosedXmlDecl) => "unclosed `<?`",
        quick_xml::Error::Syntax(S::UnclosedComment) => "unclosed comment",
        quick_xml::Error::Syntax(S::UnclosedDoctype) => "unclosed DOCTYPE",
        quick_xml::Error::Syntax(S::UnclosedCData) => "unclosed CDATA section",
        quick_xml::Error::Syntax(S::UnclosedTag) => "unclosed tag",
        quick_xml::Error::IllFormed(I::MissingEndTag(_)) => "an element is not closed",
        quick_xml::Error::IllFormed(I::UnmatchedEndTag(_)) => "a closing tag has no opening tag",
        quick_xml::Error::IllFormed(I::MismatchedEndTag { .. }) => "a closing tag does not match the open element",
        quick_xml::Error::IllFormed(I::DoubleHyphenInComment) => "`--` inside a comment",
        quick_xml::Error::IllFormed(_) => "ill-formed XML",
        quick_xml::Error::InvalidAttr(_) => "malformed attribute",
        quick_xml::Error::Escape(_) => BAD_REFERENCE,
        _ => "not well-formed XML",
    }
}

/// XML 1.0 `Char` production (surrogates cannot occur in a `str`).
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && c != '\u{FFFE}' && c != '\u{FFFF}')
}

fn is_xml_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// Walk the document once: refuse what §1 refuses and collect the raw
/// (untrimmed) text of the six known direct children of `<token>`.
fn scan(body: &[u8]) -> Result<Texts, FieldError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(doc_error("too_large", format!("body is larger than {MAX_BODY_BYTES} bytes (got {})", body.len())));
    }
    let text = std::str::from_utf8(body).map_err(|e| malformed(format!("body is not valid UTF-8 (at byte {})", e.valid_up_to())))?;
    let text = text.strip_prefix('\u{FEFF}').unwrap_or(text);
    if let Some(c) = text.chars().find(|c| !is_xml_char(*c)) {
        return Err(malformed(format!("character U+{:04X} is not allowed in XML", c as u32)));
    }

    let mut reader = Reader::from_str(text);
    reader.config_mut().check_comments = true;

    let mut texts: Texts = Default::default();
    let mut depth = 0usize; // open elements
    let mut root_seen = false;
    let mut collecting: Option<usize> = None; // index into FIELDS while inside a known child
    let mut first = true;

    loop {
        let event = reader.read_event().map_err(|e| {
            if matches!(e, quick_xml::Error::Syntax(quick_xml::errors::SyntaxError::InvalidBangMarkup)) && text.contains("<!ENTITY") {
                return doc_error("dtd_forbidden", "entity declarations are not accepted");
            }
            malformed(format!("{} (at byte {})", describe(&e), reader.error_position()))
        })?;
        let is_first = std::mem::replace(&mut first, false);
        match event {
            Event::Decl(decl) => {
                if !is_first {
                    return Err(malformed("the XML declaration must come first"));
                }
                if let Some(enc) = decl.encoding() {
                    let enc = enc.map_err(|_| malformed("malformed XML declaration"))?;
                    if !enc.eq_ignore_ascii_case("UTF-8") {
                        return Err(malformed("the document must be encoded as UTF-8"));
                    }
                }
            }
            Event::DocType(_) => return Err(doc_error("dtd_forbidden", "DOCTYPE declarations are not accepted")),
            Event::PI(_) => return Err(doc_error("dtd_forbidden", "processing instructions are not accepted")),
            Event::Comment(_) => {}
            Event::Start(start) => {
                open(&start, depth, root_seen, &mut texts, &mut collecting)?;
                root_seen = true;
                depth += 1;
            }
            Event::Empty(start) => {
                open(&start, depth, root_seen, &mut texts, &mut collecting)?;
                root_seen = true;
                collecting = None;
            }
            Event::End(_) => {
                // quick-xml has already checked that the name matches.
                depth = depth.saturating_sub(1);
                if depth <= 1 {
                    collecting = None;
                }
            }
            Event::Text(t) => {
                let s = t.xml10_content();
                if depth == 0 {
                    if !s.chars().all(is_xml_space) {
                        return Err(malformed("text outside the root element"));
                    }
                } else if let Some(i) = collecting {
                    if let Some(buf) = texts[i].as_mut() {
                        buf.push_str(&s);
                    }
                }
            }
            Event::GeneralRef(r) => {
                // `&amp;` and friends, `&#65;`: nothing else (no DTD, no other entities).
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) if is_xml_char(c) => c.to_string(),
                    Ok(Some(_)) | Err(_) => return Err(malformed(BAD_REFERENCE)),
                    Ok(None) => quick_xml::escape::resolve_xml_entity(&r).ok_or_else(|| malformed(BAD_REFERENCE))?.to_string(),
                };
                if depth == 0 {
                    return Err(malformed("text outside the root element"));
                }
                if let Some(i) = collecting {
                    if let Some(buf) = texts[i].as_mut() {
                        buf.push_str(&resolved);
                    }
                }
            }
            Event::CData(c) => {
                if depth == 0 {
                    return Err(malformed("CDATA outside the root element"));
                }
                if let Some(i) = collecting {
                    if let Some(buf) = texts[i].as_mut() {
                        buf.push_str(&c.xml10_content());
                    }
                }
            }
            Event::Eof => break,
        }
    }
    if !root_seen {
        return Err(malformed("the document has no root element"));
    }
    if depth != 0 {
        return Err(malformed("the document ends before the root element is closed"));
    }
    for t in texts.iter_mut().flatten() {
        let trimmed = t.trim_matches(is_xml_space);
        if trimmed.len() != t.len() {
            *t = Zeroizing::new(trimmed.to_string());
        }
    }
    Ok(texts)
}

/// An element opens (`<x>` or `<x/>`) while `depth` elements are open.
fn open(start: &BytesStart<'_>, depth: usize, root_seen: bool, texts: &mut Texts, collecting: &mut Option<usize>) -> Result<(), FieldError> {
    if depth + 1 > MAX_DEPTH {
        return Err(malformed(format!("elements are nested deeper than {MAX_DEPTH} levels")));
    }
    let mut default_ns = false;
    for attr in start.attributes() {
        let attr = attr.map_err(|_| malformed("malformed or repeated attribute"))?;
        let value = attr.normalized_value(quick_xml::XmlVersion::Implicit1_0).map_err(|_| malformed(BAD_REFERENCE))?;
        if attr.key.as_ref() == "xmlns" && !value.is_empty() {
            default_ns = true;
        }
    }
    let name = start.name();
    let name = name.as_ref();
    match depth {
        0 => {
            if root_seen {
                return Err(malformed("more than one root element"));
            }
            if name != "token" {
                return Err(doc_error("wrong_root", format!("the root element must be <token> (got {})", echo(name))));
            }
            if default_ns {
                return Err(doc_error("wrong_root", "<token> must not be in a namespace"));
            }
        }
        1 => {
            if let Some(i) = FIELDS.iter().position(|f| *f == name) {
                let field = FIELDS[i];
                if texts[i].is_some() {
                    return Err(FieldError::new(field, "duplicate_field", format!("<{field}> appears more than once")));
                }
                texts[i] = Some(Zeroizing::new(String::new()));
                *collecting = Some(i);
            }
        }
        _ => {
            if let Some(i) = *collecting {
                let field = FIELDS[i];
                return Err(FieldError::new(field, "malformed_xml", format!("<{field}> must contain text only")));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Dialect;
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;

    const TOKEN: &str = "5c0a2f1e9b7d4c3a8e6f1d2b3c4a5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d";
    const KEY: &str = "JH/VEZ9YjinNA+AvUrjI+ncgVVycPbIVJixFOOm/xIU=";
    const FCM_TOKEN: &str = "dQw4w9WgXcQ:APA91bHun4MxP5egoKMwt2KZFBaFUH-1RYqx8OLp2TQd6F_mN3tVqX";
    const VALID: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<token>\n    \
        <pushNotifyToken>5c0a2f1e9b7d4c3a8e6f1d2b3c4a5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d</pushNotifyToken>\n    \
        <pushChannelType>APNS:dev</pushChannelType>\n    \
        <key>JH/VEZ9YjinNA+AvUrjI+ncgVVycPbIVJixFOOm/xIU=</key>\n    \
        <algorithm>A256GCM</algorithm>\n    \
        <application>com.example.KitchenSink</application>\n    \
        <payloadVersion>V2</payloadVersion>\n</token>\n";

    /// Byte range of `<tag>…</tag>` (first occurrence) in `doc`.
    fn span(doc: &str, tag: &str) -> (usize, usize, usize, usize) {
        let open = format!("<{tag}>");
        let close = format!("</{tag}>");
        let a = doc.find(&open).unwrap_or_else(|| panic!("no <{tag}>"));
        let b = a + doc[a..].find(&close).unwrap();
        (a, a + open.len(), b, b + close.len())
    }
    /// VALID with the text of `<tag>` replaced by `value`.
    fn with(tag: &str, value: &str) -> String {
        with_in(VALID, tag, value)
    }
    fn with_in(doc: &str, tag: &str, value: &str) -> String {
        let (_, s, e, _) = span(doc, tag);
        format!("{}{value}{}", &doc[..s], &doc[e..])
    }
    /// VALID without the element `<tag>`.
    fn without(tag: &str) -> String {
        without_in(VALID, tag)
    }
    fn without_in(doc: &str, tag: &str) -> String {
        let (a, _, _, z) = span(doc, tag);
        format!("{}{}", &doc[..a], &doc[z..])
    }
    /// VALID with `xml` inserted just after `<token>`.
    fn inside(xml: &str) -> String {
        VALID.replacen("<token>", &format!("<token>{xml}"), 1)
    }
    /// VALID with `xml` inserted just before the XML declaration / after `</token>`.
    fn after(xml: &str) -> String {
        format!("{VALID}{xml}")
    }
    fn nested(levels: usize) -> String {
        inside(&format!("{}{}", "<n>".repeat(levels), "</n>".repeat(levels)))
    }

    /// "ok" or "<code> <field>".
    fn check(body: impl AsRef<[u8]>) -> String {
        match parse_token(body.as_ref()) {
            Ok(_) => "ok".into(),
            Err(e) => format!("{} {}", e.code, e.field).trim_end().to_string(),
        }
    }

    #[test]
    fn table() {
        let fcm = with_in(&with("pushChannelType", "FCM"), "pushNotifyToken", FCM_TOKEN);
        let b64 = |n: usize| STANDARD.encode(vec![7u8; n]);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            // happy paths
            (VALID.into(), "ok"),
            (with("pushChannelType", "APNS").into(), "ok"),
            (fcm.clone().into(), "ok"),
            (with("pushNotifyToken", &TOKEN.to_uppercase()).into(), "ok"),
            (with("pushNotifyToken", &"ab".repeat(8)).into(), "ok"),
            (with("pushNotifyToken", &"ab".repeat(100)).into(), "ok"),
            (with("key", &format!("\n   {KEY} \t\r\n")).into(), "ok"),
            (with("application", " com.example.KitchenSink ").into(), "ok"),
            (with("application", "<![CDATA[com.example.KitchenSink]]>").into(), "ok"),
            (with("key", &format!("<![CDATA[ {KEY} ]]>")).into(), "ok"),
            (with("pushNotifyToken", &format!("<!-- voip token -->{TOKEN}<!-- end -->")).into(), "ok"),
            (with("algorithm", "A256&#x47;CM").into(), "ok"),
            (inside("<deviceName>CSFALICE</deviceName><x a='&amp;'><key>zzz</key><y/><z>&lt;</z></x><futureFlag/>").into(), "ok"),
            (inside("<![CDATA[ stray ]]> stray text <!-- c -->").into(), "ok"),
            (after("<!-- trailing comment -->\n").into(), "ok"),
            (format!("\u{FEFF}{VALID}").into(), "ok"),
            (VALID.replacen("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n", "", 1).into(), "ok"),
            (VALID.replacen("<token>", "<token xmlns=\"\" version=\"1\">", 1).into(), "ok"),
            (VALID.replacen("<token>", "<token xmlns:ext=\"urn:cisco:ext\">", 1).into(), "ok"),
            (inside("<ext:key xmlns:ext=\"urn:x\">nope</ext:key>").into(), "ok"),
            (nested(MAX_DEPTH - 1).into(), "ok"),
            (format!("{VALID}{}", " ".repeat(MAX_BODY_BYTES - VALID.len())).into(), "ok"),
            // size
            (format!("{VALID}{}", " ".repeat(MAX_BODY_BYTES + 1 - VALID.len())).into(), "too_large"),
            (inside(&"<pad/>".repeat(3000)).into(), "too_large"),
            // missing, in document order, before any value check
            (without("pushNotifyToken").into(), "missing_field pushNotifyToken"),
            (without("pushChannelType").into(), "missing_field pushChannelType"),
            (without("key").into(), "missing_field key"),
            (without("algorithm").into(), "missing_field algorithm"),
            (without("application").into(), "missing_field application"),
            (without("payloadVersion").into(), "missing_field payloadVersion"),
            (without_in(&without("payloadVersion"), "key").into(), "missing_field key"),
            (without_in(&with("pushChannelType", "GCM"), "payloadVersion").into(), "missing_field payloadVersion"),
            (
                inside("<wrapper><pushNotifyToken>x</pushNotifyToken></wrapper>")
                    .replacen(&format!("<pushNotifyToken>{TOKEN}</pushNotifyToken>"), "", 1)
                    .into(),
                "missing_field pushNotifyToken",
            ),
            (b"<token/>".to_vec(), "missing_field pushNotifyToken"),
            // duplicates
            (inside(&format!("<pushNotifyToken>{TOKEN}</pushNotifyToken>")).into(), "duplicate_field pushNotifyToken"),
            (inside("<pushChannelType>APNS:dev</pushChannelType>").into(), "duplicate_field pushChannelType"),
            (inside(&format!("<key>{KEY}</key>")).into(), "duplicate_field key"),
            (inside("<algorithm/>").into(), "duplicate_field algorithm"),
            (inside("<application>other</application>").into(), "duplicate_field application"),
            (after("").replacen("</token>", "<payloadVersion>V2</payloadVersion></token>", 1).into(), "duplicate_field payloadVersion"),
            // pushNotifyToken
            (with("pushNotifyToken", "").into(), "invalid_token pushNotifyToken"),
            (with("pushNotifyToken", "   ").into(), "invalid_token pushNotifyToken"),
            (with("pushNotifyToken", "5c0a 2f1e9b7d4c3a8e6f1d2b3c4a5e6f").into(), "invalid_token pushNotifyToken"),
            (with("pushNotifyToken", "zz0a2f1e9b7d4c3a8e6f1d2b3c4a5e6f").into(), "invalid_token pushNotifyToken"),
            (with("pushNotifyToken", &TOKEN[1..]).into(), "invalid_token pushNotifyToken"),
            (with("pushNotifyToken", &"ab".repeat(7)).into(), "invalid_token pushNotifyToken"),
            (with("pushNotifyToken", &"ab".repeat(101)).into(), "invalid_token pushNotifyToken"),
            (with("pushNotifyToken", FCM_TOKEN).into(), "invalid_token pushNotifyToken"),
            (with_in(&fcm, "pushNotifyToken", "a b").into(), "invalid_token pushNotifyToken"),
            (with_in(&fcm, "pushNotifyToken", &"a".repeat(4097)).into(), "invalid_token pushNotifyToken"),
            (with_in(&fcm, "pushNotifyToken", "tok\u{e9}n").into(), "invalid_token pushNotifyToken"),
            // pushChannelType
            (with("pushChannelType", "apns").into(), "invalid_channel pushChannelType"),
            (with("pushChannelType", "APNS:DEV").into(), "invalid_channel pushChannelType"),
            (with("pushChannelType", "GCM").into(), "invalid_channel pushChannelType"),
            (with("pushChannelType", "").into(), "invalid_channel pushChannelType"),
            (with("pushChannelType", "APNS dev").into(), "invalid_channel pushChannelType"),
            // key
            (with("key", &b64(31)).into(), "invalid_key key"),
            (with("key", &b64(33)).into(), "invalid_key key"),
            (with("key", &b64(16)).into(), "invalid_key key"),
            (with("key", "").into(), "invalid_key key"),
            (with("key", "not*base64*at*all!!").into(), "invalid_key key"),
            (with("key", KEY.trim_end_matches('=')).into(), "invalid_key key"),
            (with("key", &KEY.replace('/', "_").replace('+', "-")).into(), "invalid_key key"),
            (with("key", &KEY.replacen('I', " I", 1)).into(), "invalid_key key"),
            // algorithm
            (with("algorithm", "A128GCM").into(), "invalid_algorithm algorithm"),
            (with("algorithm", "a256gcm").into(), "invalid_algorithm algorithm"),
            (with("algorithm", "dir").into(), "invalid_algorithm algorithm"),
            (with("algorithm", "").into(), "invalid_algorithm algorithm"),
            // payloadVersion
            (with("payloadVersion", "V1").into(), "invalid_payload_version payloadVersion"),
            (with("payloadVersion", "v2").into(), "invalid_payload_version payloadVersion"),
            (with("payloadVersion", "").into(), "invalid_payload_version payloadVersion"),
            // application (AppId::parse owns the code)
            (with("application", "").into(), "unknown_application application"),
            (with("application", "com.example app").into(), "unknown_application application"),
            (with("application", &"a".repeat(201)).into(), "unknown_application application"),
            // order when several values are bad: channel, token, key, algorithm, payloadVersion, application
            (with_in(&with("pushChannelType", "GCM"), "pushNotifyToken", "zz").into(), "invalid_channel pushChannelType"),
            (with_in(&with("pushNotifyToken", "zz"), "key", "x").into(), "invalid_token pushNotifyToken"),
            (with_in(&with("key", "x"), "algorithm", "x").into(), "invalid_key key"),
            (with_in(&with("algorithm", "x"), "payloadVersion", "x").into(), "invalid_algorithm algorithm"),
            (with_in(&with("payloadVersion", "x"), "application", "a b").into(), "invalid_payload_version payloadVersion"),
            // DTD, entity declarations, processing instructions
            (
                format!("<!DOCTYPE token>\n{}", without("application").replacen("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n", "", 1)).into(),
                "dtd_forbidden",
            ),
            (VALID.replacen("?>\n", "?>\n<!DOCTYPE token [<!ENTITY app \"com.example.KitchenSink\">]>\n", 1).into(), "dtd_forbidden"),
            (VALID.replacen("?>\n", "?>\n<!DOCTYPE token SYSTEM \"http://evil.example/x.dtd\">\n", 1).into(), "dtd_forbidden"),
            (VALID.replacen("?>\n", "?>\n<!doctype token>\n", 1).into(), "dtd_forbidden"),
            (VALID.replacen("?>\n", "?>\n<?xml-stylesheet href=\"x.xsl\"?>\n", 1).into(), "dtd_forbidden"),
            (inside("<?php echo 1; ?>").into(), "dtd_forbidden"),
            (after("<?pi?>").into(), "dtd_forbidden"),
            // undefined / malformed entity references
            (with("application", "&xxe;").into(), "malformed_xml"),
            (inside("<x>&xxe;</x>").into(), "malformed_xml"),
            (inside("<x a=\"&xxe;\"/>").into(), "malformed_xml"),
            (with("application", "com&amp").into(), "malformed_xml"),
            (with("application", "&#0;").into(), "malformed_xml"),
            (inside("<!ENTITY xxe SYSTEM \"file:///etc/passwd\">").into(), "dtd_forbidden"),
            (after("<!ENTITY e \"v\">").into(), "dtd_forbidden"),
            (inside("<!BOGUS>").into(), "malformed_xml"),
            // not well-formed
            (b"".to_vec(), "malformed_xml"),
            (b"   \n".to_vec(), "malformed_xml"),
            (b"not xml at all".to_vec(), "malformed_xml"),
            (b"<?xml version=\"1.0\"?>".to_vec(), "malformed_xml"),
            (b"<token>".to_vec(), "malformed_xml"),
            (VALID.replacen("</token>", "", 1).into(), "malformed_xml"),
            (VALID.replacen("</application>", "</payloadVersion>", 1).into(), "malformed_xml"),
            (after("</token>").into(), "malformed_xml"),
            (after("<token/>").into(), "malformed_xml"),
            (after("trailing").into(), "malformed_xml"),
            (format!("junk{VALID}").into(), "malformed_xml"),
            (format!("\n{VALID}").into(), "malformed_xml"),
            (after("<?xml version=\"1.0\"?>").into(), "malformed_xml"),
            (VALID.replacen("UTF-8", "ISO-8859-1", 1).into(), "malformed_xml"),
            (inside("<x a='1' a='2'/>").into(), "malformed_xml"),
            (inside("<x a=1/>").into(), "malformed_xml"),
            (inside("<!-- a -- b -->").into(), "malformed_xml"),
            (inside("<!-- unterminated").into(), "malformed_xml"),
            (inside("<![CDATA[ unterminated").into(), "malformed_xml"),
            (with("application", "com.example\u{1}KitchenSink").into(), "malformed_xml"),
            (with("application", "\u{FFFE}").into(), "malformed_xml"),
            ([VALID.as_bytes(), b"\xff"].concat(), "malformed_xml"),
            (VALID.replacen("KitchenSink", "Kitchen\u{0}Sink", 1).into(), "malformed_xml"),
            ([&VALID.as_bytes()[..60], b"\xc3\x28", &VALID.as_bytes()[60..]].concat(), "malformed_xml"),
            (nested(MAX_DEPTH).into(), "malformed_xml"),
            (nested(1000).into(), "malformed_xml"),
            (with("key", &format!("<b>{KEY}</b>")).into(), "malformed_xml key"),
            (with("pushChannelType", "APNS<x/>").into(), "malformed_xml pushChannelType"),
            // root
            (VALID.replace("token>", "devicetoken>").into(), "wrong_root"),
            (VALID.replace("<token>", "<Token>").replace("</token>", "</Token>").into(), "wrong_root"),
            (VALID.replacen("<token>", "<token xmlns=\"urn:cisco:uds\">", 1).into(), "wrong_root"),
            (VALID.replace("<token>", "<u:token xmlns:u=\"urn:x\">").replace("</token>", "</u:token>").into(), "wrong_root"),
            (b"<key>x</key>".to_vec(), "wrong_root"),
        ];
        let mut failures = Vec::new();
        for (i, (body, want)) in cases.iter().enumerate() {
            let got = check(body);
            if got != *want {
                failures.push(format!("case {i}: want {want:?}, got {got:?} for {:?}", String::from_utf8_lossy(&body[..body.len().min(300)])));
            }
        }
        assert!(failures.is_empty(), "{} failing:\n{}", failures.len(), failures.join("\n"));
    }

    #[test]
    fn values_are_parsed() {
        let t = parse_token(with("pushNotifyToken", &TOKEN.to_uppercase()).as_bytes()).unwrap();
        assert_eq!(t.channel, Channel::ApnsDev);
        assert_eq!(t.token.as_str(), TOKEN);
        assert_eq!(t.key.to_b64(), KEY);
        assert_eq!(t.app.as_str(), "com.example.KitchenSink");
        assert_eq!(t.payload_version, PayloadVersion::V2);

        let fcm = with_in(&with("pushChannelType", "FCM"), "pushNotifyToken", FCM_TOKEN);
        let t = parse_token(fcm.as_bytes()).unwrap();
        assert_eq!((t.channel, t.token.as_str()), (Channel::Fcm, FCM_TOKEN));

        let t = parse_token(with("application", "<![CDATA[ com.example.Other ]]>").as_bytes()).unwrap();
        assert_eq!(t.app.as_str(), "com.example.Other");
        let t = parse_token(with("pushNotifyToken", &format!("{}<!-- c -->{}", &TOKEN[..10], &TOKEN[10..])).as_bytes()).unwrap();
        assert_eq!(t.token.as_str(), TOKEN);
    }

    #[test]
    fn errors_carry_the_documented_field_and_message() {
        let e = parse_token(with("key", &STANDARD.encode([1u8; 16])).as_bytes()).unwrap_err();
        assert_eq!(e.message, "key must be base64 of exactly 32 bytes (got 16)");
        let e = parse_token(b"<devicetoken/>").unwrap_err();
        assert_eq!((e.field, e.code), ("", "wrong_root"));
        let e = parse_token(&vec![b' '; MAX_BODY_BYTES + 1]).unwrap_err();
        assert_eq!((e.field, e.code), ("", "too_large"));
    }

    #[test]
    fn no_error_message_contains_the_key() {
        let key31 = STANDARD.encode([0x5au8; 31]);
        let key33 = STANDARD.encode([0x5au8; 33]);
        let docs = [
            with_in(&with("key", &key31), "algorithm", &key31),
            with("key", &key33),
            with_in(&with("key", &format!("{KEY}!")), "pushChannelType", KEY),
            with_in(VALID, "pushChannelType", KEY),
            with_in(VALID, "algorithm", KEY),
            with_in(VALID, "payloadVersion", KEY),
            with_in(VALID, "pushNotifyToken", KEY),
            with_in(VALID, "application", KEY),
            with_in(VALID, "key", &format!("&{}", KEY.trim_end_matches('='))),
            with_in(VALID, "key", &format!("{KEY}<{KEY}/>")),
            VALID.replacen("</key>", "</algorithm>", 1),
            VALID.replace("token>", &format!("{}>", KEY.replace(['/', '+', '='], "x"))),
            inside(&format!("<key>{KEY}</key>")),
            without("payloadVersion"),
        ];
        for doc in docs {
            let e = parse_token(doc.as_bytes()).unwrap_err();
            for secret in [KEY, KEY.trim_end_matches('='), &key31, &key33, &KEY[..32]] {
                assert!(!e.message.contains(secret), "{} leaks the key: {}", e.code, e.message);
            }
        }
        let t = parse_token(VALID.as_bytes()).unwrap();
        let shown = format!("{t:?}");
        assert!(!shown.contains(&KEY[..20]) && shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn into_registration_keeps_everything() {
        let t = parse_token(VALID.as_bytes()).unwrap();
        let r = t.clone().into_registration(UserId::parse("alice").unwrap(), DevicePkid::parse("pkid-1").unwrap());
        assert_eq!(r.dialect(), Dialect::Uds);
        assert_eq!((r.user.as_str(), r.device.as_str()), ("alice", "pkid-1"));
        assert_eq!((r.channel, &r.token, &r.app), (t.channel, &t.token, &t.app));
        assert!(matches!(&r.data, DialectData::Uds { key, version: PayloadVersion::V2 } if *key == t.key));
    }

    #[test]
    fn response_bodies() {
        assert_eq!(success_xml(1), "<success><rowsUpdated>1</rowsUpdated></success>");
        assert_eq!(
            error_xml("invalid_key", "key", "key must be base64 of exactly 32 bytes (got 16)"),
            "<error><code>invalid_key</code><field>key</field><message>key must be base64 of exactly 32 bytes (got 16)</message></error>"
        );
        assert_eq!(
            error_xml("malformed_xml", "", "bad <x> & \"y\""),
            "<error><code>malformed_xml</code><field/><message>bad &lt;x&gt; &amp; &quot;y&quot;</message></error>"
        );
    }

    // -- fixtures -----------------------------------------------------------

    /// Every file in fixtures/uds/ and what parsing it must give.
    const FIXTURES: &[(&str, &str)] = &[
        ("apns-dev.xml", "ok"),
        ("apns-prod.xml", "ok"),
        ("fcm.xml", "ok"),
        ("seed-003-sample.xml", "ok"),
        ("extra-elements.xml", "ok"),
        ("key-31-bytes.xml", "invalid_key key"),
        ("key-not-base64.xml", "invalid_key key"),
        ("bad-channel.xml", "invalid_channel pushChannelType"),
        ("bad-algorithm.xml", "invalid_algorithm algorithm"),
        ("bad-payload-version.xml", "invalid_payload_version payloadVersion"),
        ("missing-token.xml", "missing_field pushNotifyToken"),
        ("duplicate-key.xml", "duplicate_field key"),
        ("doctype-xxe.xml", "dtd_forbidden"),
        ("billion-laughs.xml", "dtd_forbidden"),
        ("malformed.xml", "malformed_xml"),
        ("wrong-root.xml", "wrong_root"),
    ];

    fn fixture_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/uds")
    }

    #[test]
    fn fixtures_parse_as_expected() {
        for (name, want) in FIXTURES {
            let body = std::fs::read(fixture_dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(check(&body), *want, "{name}");
        }
    }

    #[test]
    fn every_fixture_file_is_in_the_table() {
        for entry in std::fs::read_dir(fixture_dir()).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            assert!(FIXTURES.iter().any(|(f, _)| *f == name), "fixtures/uds/{name} has no expectation");
        }
    }

    #[test]
    fn fixture_values() {
        let read = |n: &str| parse_token(&std::fs::read(fixture_dir().join(n)).unwrap()).unwrap();
        let dev = read("apns-dev.xml");
        assert_eq!((dev.channel, dev.token.as_str(), dev.key.to_b64()), (Channel::ApnsDev, TOKEN, KEY.to_string()));
        let prod = read("apns-prod.xml");
        assert_eq!(prod.channel, Channel::Apns);
        assert_eq!(prod.token.as_str(), "b4cce23749d42e1b53cfbd1d8521b1f9e16bd6e4961cdada7c8a3a5f5022faeb");
        assert_eq!(read("fcm.xml").channel, Channel::Fcm);
        assert_eq!(read("seed-003-sample.xml").channel, Channel::Apns);
        let extra = read("extra-elements.xml");
        assert_eq!((extra.token.as_str(), extra.key.to_b64()), (TOKEN, KEY.to_string()));
        for n in ["apns-dev.xml", "apns-prod.xml", "fcm.xml", "seed-003-sample.xml", "extra-elements.xml"] {
            assert_eq!(read(n).app.as_str(), "com.example.KitchenSink", "{n}");
        }
    }

    // -- properties -----------------------------------------------------------

    mod props {
        use super::*;
        use proptest::prelude::*;

        const PIECES: &[&str] = &[
            "<token>",
            "</token>",
            "<token/>",
            "<pushNotifyToken>",
            "</pushNotifyToken>",
            "<pushChannelType>",
            "</pushChannelType>",
            "<key>",
            "</key>",
            "<key/>",
            "<algorithm>",
            "</algorithm>",
            "<application>",
            "</application>",
            "<payloadVersion>",
            "</payloadVersion>",
            "<x>",
            "</x>",
            "<x a='1'/>",
            TOKEN,
            KEY,
            "APNS",
            "APNS:dev",
            "FCM",
            "A256GCM",
            "V2",
            "com.example.KitchenSink",
            "<!-- c -->",
            "<!--",
            "-->",
            "<![CDATA[",
            "]]>",
            "&amp;",
            "&lt;",
            "&xxe;",
            "&#x41;",
            "&#0;",
            "&",
            "<",
            ">",
            "<!DOCTYPE token>",
            "<!ENTITY e 'v'>",
            "<?pi?>",
            "<?xml version=\"1.0\"?>",
            " ",
            "\n",
            "\u{FEFF}",
            "\u{1}",
            "é",
            "\"",
            "'",
            "=",
            "/",
            "xmlns=\"urn:x\"",
        ];

        fn assert_sane(body: &[u8]) {
            if let Ok(t) = parse_token(body) {
                assert_eq!(t.key.as_bytes().len(), 32);
                assert!(matches!(t.channel, Channel::Apns | Channel::ApnsDev | Channel::Fcm));
                assert_eq!(t.token.provider(), t.channel.provider());
            }
        }

        proptest! {
            #[test]
            fn never_panics_on_bytes(body in proptest::collection::vec(any::<u8>(), 0..2048)) {
                assert_sane(&body);
            }

            #[test]
            fn never_panics_on_xmlish_text(body in "[<>/!?&;#=\\[\\]a-zA-Z0-9:'\" \n-]{0,300}") {
                assert_sane(body.as_bytes());
            }

            #[test]
            fn never_panics_on_token_pieces(pieces in proptest::collection::vec(proptest::sample::select(PIECES), 0..60)) {
                assert_sane(pieces.concat().as_bytes());
            }

            #[test]
            fn mutated_valid_documents_stay_sane(pos in 0usize..VALID.len(), piece in proptest::sample::select(PIECES), cut in 0usize..4) {
                let mut doc = VALID.as_bytes().to_vec();
                let end = (pos + cut).min(doc.len());
                doc.splice(pos..end, piece.bytes());
                assert_sane(&doc);
            }

            #[test]
            fn unknown_elements_and_comments_never_change_the_result(
                junk in proptest::collection::vec(proptest::sample::select(&["<x/>", "<ext>1</ext>", "<!-- c -->", "<a><b>t</b></a>", " ", "\n"][..]), 0..8),
                slot in 0usize..7,
            ) {
                let lines: Vec<&str> = VALID.split_inclusive('\n').collect();
                // lines[1] is "<token>\n"; lines[2..8] are the six fields.
                let mut doc = String::new();
                for (i, line) in lines.iter().enumerate() {
                    doc.push_str(line);
                    if i == 1 + slot {
                        doc.push_str(&junk.concat());
                    }
                }
                let got = parse_token(doc.as_bytes()).unwrap();
                prop_assert_eq!(got, parse_token(VALID.as_bytes()).unwrap());
            }
        }
    }
}

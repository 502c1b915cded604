//! Compact JWE with `alg: dir` and AES-GCM (protocol.md §3).
//!
//! What lives here: the encrypter the relay uses for V2 payloads
//! (always `{"alg":"dir","enc":"A256GCM"}` with a 96-bit IV), the strict
//! decrypter behind `pushrelay jwe decrypt` and the tests (every refusal row
//! of protocol.md §3.2, reported as one error kind, "undecryptable", with a
//! reason naming the failing check), and the two string-in/string-out
//! helpers the CLI calls.
//!
//! Dependencies: only `domain::PushKey` from this crate, plus the `aes-gcm`,
//! `base64`, `serde_json` and `rand` crates. No I/O.

use crate::domain::PushKey;
use aes_gcm::aead::consts::U12;
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{aes, Aes128Gcm, Aes256Gcm, AesGcm, Nonce, Tag};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use rand::rngs::OsRng;
use rand::RngCore;
use std::fmt;
use zeroize::Zeroizing;

type Aes192Gcm = AesGcm<aes::Aes192, U12>;

/// The protected header the relay always sends: `{"alg":"dir","enc":"A256GCM"}`.
pub const PROTECTED_HEADER_JSON: &str = r#"{"alg":"dir","enc":"A256GCM"}"#;
/// base64url of [`PROTECTED_HEADER_JSON`]; also the AAD of every message we encrypt.
pub const PROTECTED_HEADER_B64: &str = "eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0";

const IV_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// Why a compact JWE was refused. Always the one kind "undecryptable";
/// `reason` names the failing check (`shape`, `header`, `key/enc`, `parts`,
/// `crypto`, `key`) and never contains plaintext or key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JweError {
    pub reason: String,
}

impl JweError {
    fn new(reason: impl Into<String>) -> Self {
        Self { reason: reason.into() }
    }
}

impl fmt::Display for JweError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "undecryptable: {}", self.reason)
    }
}

impl std::error::Error for JweError {}

/// Encrypts `plaintext` for one device with a fresh random 96-bit IV (OsRng).
pub fn encrypt(key: &PushKey, plaintext: &[u8]) -> String {
    let mut iv = [0u8; IV_LEN];
    OsRng.fill_bytes(&mut iv);
    encrypt_with_iv(key, iv, plaintext)
}

/// Deterministic form of [`encrypt`]: only for test vectors and the CLI's
/// `--iv-b64url`. Never reuse an IV with the same key.
pub fn encrypt_with_iv(key: &PushKey, iv: [u8; 12], plaintext: &[u8]) -> String {
    let cipher = Aes256Gcm::new(key.as_bytes().into());
    let mut buf = plaintext.to_vec();
    let tag = cipher
        .encrypt_in_place_detached(Nonce::from_slice(&iv), PROTECTED_HEADER_B64.as_bytes(), &mut buf)
        .expect("AES-GCM encryption only fails for plaintexts above 64 GiB");
    let mut out = String::with_capacity(PROTECTED_HEADER_B64.len() + 4 + 16 + buf.len() * 4 / 3 + 4 + 22);
    out.push_str(PROTECTED_HEADER_B64);
    out.push_str("..");
    URL_SAFE_NO_PAD.encode_string(iv, &mut out);
    out.push('.');
    URL_SAFE_NO_PAD.encode_string(&buf, &mut out);
    out.push('.');
    URL_SAFE_NO_PAD.encode_string(tag, &mut out);
    out
}

/// Strict decryption of a compact JWE `alg: dir` + `A128GCM`/`A192GCM`/`A256GCM`
/// with the raw content-encryption key (16, 24 or 32 bytes, matching `enc`).
/// Refuses every row of protocol.md §3.2; releases no plaintext on failure.
pub fn decrypt(compact: &str, key: &[u8]) -> Result<Vec<u8>, JweError> {
    // shape
    let parts: Vec<&str> = compact.split('.').collect();
    if parts.len() != 5 {
        return Err(JweError::new(format!("shape: expected 5 dot-separated parts, got {}", parts.len())));
    }
    const NAMES: [&str; 5] = ["protected header", "encrypted key", "IV", "ciphertext", "tag"];
    let mut decoded: Vec<Vec<u8>> = Vec::with_capacity(5);
    for (part, name) in parts.iter().zip(NAMES) {
        decoded.push(b64url_strict(part, name)?);
    }
    let [header_raw, enc_key, iv, ciphertext, tag]: [Vec<u8>; 5] = decoded.try_into().expect("exactly five parts");

    // header
    let header = parse_header(&header_raw)?;
    match header.get("alg") {
        Some(serde_json::Value::String(a)) if a == "dir" => {}
        Some(serde_json::Value::String(a)) => return Err(JweError::new(format!("header: alg {a:?} is not allowed (only \"dir\")"))),
        Some(_) => return Err(JweError::new("header: alg is not a string")),
        None => return Err(JweError::new("header: alg missing")),
    }
    let enc = match header.get("enc") {
        Some(serde_json::Value::String(e)) => e.as_str(),
        Some(_) => return Err(JweError::new("header: enc is not a string")),
        None => return Err(JweError::new("header: enc missing")),
    };
    if header.contains_key("zip") {
        return Err(JweError::new("header: zip present (compression is refused)"));
    }
    if header.contains_key("crit") {
        return Err(JweError::new("header: crit present (no extensions are understood)"));
    }
    let needed = match enc {
        "A128GCM" => 16,
        "A192GCM" => 24,
        "A256GCM" => 32,
        other => return Err(JweError::new(format!("header: enc {other:?} is not supported (A128GCM, A192GCM, A256GCM)"))),
    };

    // key/enc
    if key.len() != needed {
        return Err(JweError::new(format!("key/enc: enc {enc} needs a {needed}-byte key, got {} bytes", key.len())));
    }

    // parts
    if !enc_key.is_empty() {
        return Err(JweError::new(format!("parts: encrypted key must be empty for alg dir (got {} bytes)", enc_key.len())));
    }
    if iv.len() != IV_LEN {
        return Err(JweError::new(format!("parts: IV must be exactly 12 bytes (got {})", iv.len())));
    }
    if tag.len() != TAG_LEN {
        return Err(JweError::new(format!("parts: tag must be exactly 16 bytes (got {})", tag.len())));
    }

    // crypto: AAD is the ASCII of the encoded header part, not the JSON.
    let aad = parts[0].as_bytes();
    let nonce = Nonce::from_slice(&iv);
    let tag = Tag::from_slice(&tag);
    let mut buf = Zeroizing::new(ciphertext);
    let ok = match needed {
        16 => Aes128Gcm::new(key.into()).decrypt_in_place_detached(nonce, aad, &mut buf, tag),
        24 => Aes192Gcm::new(key.into()).decrypt_in_place_detached(nonce, aad, &mut buf, tag),
        _ => Aes256Gcm::new(key.into()).decrypt_in_place_detached(nonce, aad, &mut buf, tag),
    };
    match ok {
        Ok(()) => Ok(std::mem::take(&mut *buf)),
        Err(_) => Err(JweError::new("crypto: authentication tag check failed (wrong key, or header, IV, ciphertext or tag changed)")),
    }
}

/// One base64url part: alphabet `[A-Za-z0-9_-]` only, no `=`, length mod 4 ≠ 1,
/// canonical trailing bits.
fn b64url_strict(part: &str, name: &str) -> Result<Vec<u8>, JweError> {
    if let Some(c) = part.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_')) {
        return Err(JweError::new(format!("shape: {name} part contains {c:?}, outside the base64url alphabet [A-Za-z0-9_-]")));
    }
    if part.len() % 4 == 1 {
        return Err(JweError::new(format!("shape: {name} part has an impossible base64url length ({} mod 4 = 1)", part.len())));
    }
    URL_SAFE_NO_PAD.decode(part).map_err(|e| JweError::new(format!("shape: {name} part is not valid base64url ({e})")))
}

/// The protected header as a JSON object; duplicate member names are refused.
fn parse_header(raw: &[u8]) -> Result<serde_json::Map<String, serde_json::Value>, JweError> {
    let text = std::str::from_utf8(raw).map_err(|_| JweError::new("header: not UTF-8"))?;
    let obj: StrictObject = serde_json::from_str(text).map_err(|e| {
        if e.to_string().contains(DUPLICATE_MARK) {
            JweError::new(format!("header: {e}"))
        } else {
            JweError::new(format!("header: not a JSON object ({e})"))
        }
    })?;
    Ok(obj.0)
}

const DUPLICATE_MARK: &str = "duplicate member";

/// A JSON object that refuses repeated member names at the top level
/// (serde_json's `Value` would silently keep the last one).
struct StrictObject(serde_json::Map<String, serde_json::Value>);

impl<'de> serde::Deserialize<'de> for StrictObject {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = StrictObject;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<StrictObject, A::Error> {
                let mut out = serde_json::Map::new();
                while let Some((k, v)) = m.next_entry::<String, serde_json::Value>()? {
                    if out.contains_key(&k) {
                        return Err(serde::de::Error::custom(format!("{DUPLICATE_MARK} {k:?}")));
                    }
                    out.insert(k, v);
                }
                Ok(StrictObject(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// `pushrelay jwe encrypt`: `key_b64` is standard base64 of exactly 32 bytes,
/// `iv_b64url` (tests only) base64url of exactly 12 bytes.
pub fn cli_encrypt(key_b64: &str, iv_b64url: Option<&str>, plaintext: &[u8]) -> Result<String, String> {
    let key = PushKey::parse_b64(key_b64).map_err(|e| e.message.to_string())?;
    match iv_b64url {
        None => Ok(encrypt(&key, plaintext)),
        Some(raw) => {
            let bytes = URL_SAFE_NO_PAD
                .decode(raw.trim())
                .map_err(|_| "iv must be base64url (no padding) of exactly 12 bytes (not valid base64url)".to_string())?;
            let len = bytes.len();
            let iv: [u8; 12] = bytes.try_into().map_err(|_| format!("iv must be base64url (no padding) of exactly 12 bytes (got {len})"))?;
            Ok(encrypt_with_iv(&key, iv, plaintext))
        }
    }
}

/// `pushrelay jwe decrypt`: `key_b64` is standard base64 of a 16, 24 or
/// 32-byte key; trailing whitespace (the newline of a file or pipe) is
/// trimmed from `compact`. Errors read `undecryptable: <reason>`.
pub fn cli_decrypt(key_b64: &str, compact: &str) -> Result<Vec<u8>, String> {
    let key = Zeroizing::new(STANDARD.decode(key_b64.trim()).map_err(|_| "key must be base64 of 16, 24 or 32 bytes (not valid base64)".to_string())?);
    if !matches!(key.len(), 16 | 24 | 32) {
        return Err(format!("key must be base64 of 16, 24 or 32 bytes (got {})", key.len()));
    }
    decrypt(compact.trim_end(), &key).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_B64: &str = "JH/VEZ9YjinNA+AvUrjI+ncgVVycPbIVJixFOOm/xIU=";
    const IV: [u8; 12] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
    const V2: &[u8] = br#"{"type":"incomingcall","pushid":"p1","displayname":"Zo\u00eb","displaynumber":"1001","payloadversion":"V2","huntpilotdn":"","ringexpiretime":"1764057600000"}"#;

    fn key() -> PushKey {
        PushKey::parse_b64(KEY_B64).unwrap()
    }
    fn b64u(b: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(b)
    }
    /// A compact JWE with an arbitrary header, built independently of
    /// `encrypt_with_iv`, with a valid tag over that header.
    fn seal(header_json: &str, key: &[u8], iv: &[u8], pt: &[u8]) -> String {
        let h = b64u(header_json.as_bytes());
        let mut buf = pt.to_vec();
        let tag = match key.len() {
            16 => Aes128Gcm::new(key.into()).encrypt_in_place_detached(Nonce::from_slice(iv), h.as_bytes(), &mut buf),
            24 => Aes192Gcm::new(key.into()).encrypt_in_place_detached(Nonce::from_slice(iv), h.as_bytes(), &mut buf),
            _ => Aes256Gcm::new(key.into()).encrypt_in_place_detached(Nonce::from_slice(iv), h.as_bytes(), &mut buf),
        }
        .unwrap();
        format!("{h}..{}.{}.{}", b64u(iv), b64u(&buf), b64u(&tag))
    }

    #[test]
    fn protected_header_constant_is_base64url_of_the_29_byte_header() {
        assert_eq!(PROTECTED_HEADER_JSON.len(), 29);
        assert_eq!(b64u(PROTECTED_HEADER_JSON.as_bytes()), PROTECTED_HEADER_B64);
        // protocol.md §3.1 step 3 says 38 characters; 29 bytes encode to 39.
        assert_eq!(PROTECTED_HEADER_B64.len(), 39);
    }

    #[test]
    fn encrypt_output_has_fixed_header_empty_key_12_byte_iv_and_16_byte_tag() {
        let c = encrypt_with_iv(&key(), IV, V2);
        let p: Vec<&str> = c.split('.').collect();
        assert_eq!(p.len(), 5);
        assert_eq!(p[0], PROTECTED_HEADER_B64);
        assert_eq!(p[1], "");
        assert_eq!(p[2].len(), 16);
        assert_eq!(p[4].len(), 22);
        assert_eq!(decrypt(&c, key().as_bytes()).unwrap(), V2);
    }

    #[test]
    fn encrypt_uses_a_fresh_iv_each_time() {
        let a = encrypt(&key(), V2);
        let b = encrypt(&key(), V2);
        assert_ne!(a.split('.').nth(2), b.split('.').nth(2));
        assert_eq!(decrypt(&a, key().as_bytes()).unwrap(), V2);
        assert_eq!(decrypt(&b, key().as_bytes()).unwrap(), V2);
    }

    #[test]
    fn empty_plaintext_round_trips() {
        let c = encrypt_with_iv(&key(), IV, b"");
        assert_eq!(c.split('.').nth(3), Some(""));
        assert_eq!(decrypt(&c, key().as_bytes()).unwrap(), b"");
    }

    #[test]
    fn generic_path_accepts_a128gcm_and_a192gcm_with_matching_key_and_foreign_header_members() {
        for (enc, k) in [("A128GCM", vec![3u8; 16]), ("A192GCM", vec![4u8; 24]), ("A256GCM", vec![5u8; 32])] {
            let h = format!(r#"{{"enc":"{enc}","kid":"k1","alg":"dir"}}"#);
            assert_eq!(decrypt(&seal(&h, &k, &IV, V2), &k).unwrap(), V2, "{enc}");
        }
    }

    /// Every refusal row of protocol.md §3.2: (name, compact, key, expected reason prefix).
    #[test]
    fn every_refusal_row_is_refused_with_a_reason_naming_the_check() {
        let k = *key().as_bytes();
        let good = encrypt_with_iv(&key(), IV, V2);
        let p: Vec<&str> = good.split('.').collect();
        let join = |v: [&str; 5]| v.join(".");
        let mut flipped_tag = URL_SAFE_NO_PAD.decode(p[4]).unwrap();
        flipped_tag[15] ^= 1;
        let flipped_tag = b64u(&flipped_tag);
        let mut flipped_ct = URL_SAFE_NO_PAD.decode(p[3]).unwrap();
        flipped_ct[0] ^= 0x80;
        let flipped_ct = b64u(&flipped_ct);
        let reordered = b64u(br#"{"enc":"A256GCM","alg":"dir"}"#);
        let iv16 = b64u(&[9u8; 16]);
        let ek = b64u(&[0u8; 32]);
        let tag12 = &p[4][..16];
        let cases: Vec<(&str, String, Vec<u8>, &str)> = vec![
            ("four parts", p[..4].join("."), k.to_vec(), "shape:"),
            ("six parts", format!("{good}."), k.to_vec(), "shape:"),
            ("empty string", String::new(), k.to_vec(), "shape:"),
            ("plus and slash", join([p[0], "", p[2], &p[3].replacen(|_| true, "+", 1), p[4]]), k.to_vec(), "shape:"),
            ("padding", join([p[0], "", p[2], p[3], &format!("{}==", p[4])]), k.to_vec(), "shape:"),
            ("whitespace", format!(" {good}"), k.to_vec(), "shape:"),
            ("len mod 4 is 1", join([p[0], "", "AAAAAAAAAAAAAAAAA", p[3], p[4]]), k.to_vec(), "shape:"),
            ("non-canonical trailing bits", join([p[0], "", p[2], p[3], &format!("{}B", &p[4][..21])]), k.to_vec(), "shape:"),
            ("header not json", seal("not json", &k, &IV, V2), k.to_vec(), "header:"),
            ("header json array", seal(r#"["alg","dir"]"#, &k, &IV, V2), k.to_vec(), "header:"),
            ("header not utf-8", join([&b64u(&[0xff, 0xfe]), "", p[2], p[3], p[4]]), k.to_vec(), "header:"),
            ("duplicate member", seal(r#"{"alg":"dir","enc":"A256GCM","alg":"dir"}"#, &k, &IV, V2), k.to_vec(), "header: duplicate"),
            ("alg none", seal(r#"{"alg":"none","enc":"A256GCM"}"#, &k, &IV, V2), k.to_vec(), "header: alg"),
            ("alg A256KW", seal(r#"{"alg":"A256KW","enc":"A256GCM"}"#, &k, &IV, V2), k.to_vec(), "header: alg"),
            ("alg missing", seal(r#"{"enc":"A256GCM"}"#, &k, &IV, V2), k.to_vec(), "header: alg"),
            ("enc missing", seal(r#"{"alg":"dir"}"#, &k, &IV, V2), k.to_vec(), "header: enc missing"),
            ("enc cbc", seal(r#"{"alg":"dir","enc":"A128CBC-HS256"}"#, &k, &IV, V2), k.to_vec(), "header: enc"),
            ("zip", seal(r#"{"alg":"dir","enc":"A256GCM","zip":"DEF"}"#, &k, &IV, V2), k.to_vec(), "header: zip"),
            ("crit", seal(r#"{"alg":"dir","enc":"A256GCM","crit":["exp"],"exp":1}"#, &k, &IV, V2), k.to_vec(), "header: crit"),
            ("A128GCM with 32-byte key", seal(r#"{"alg":"dir","enc":"A128GCM"}"#, &k[..16], &IV, V2), k.to_vec(), "key/enc:"),
            ("A256GCM with 16-byte key", good.clone(), k[..16].to_vec(), "key/enc:"),
            ("A256GCM with 24-byte key", good.clone(), k[..24].to_vec(), "key/enc:"),
            ("encrypted key not empty", join([p[0], &ek, p[2], p[3], p[4]]), k.to_vec(), "parts: encrypted key"),
            ("iv empty", join([p[0], "", "", p[3], p[4]]), k.to_vec(), "parts: IV"),
            (
                "iv 16 bytes with valid tag",
                seal(PROTECTED_HEADER_JSON, &k, &[9u8; 12], V2).replacen(&b64u(&[9u8; 12]), &iv16, 1),
                k.to_vec(),
                "parts: IV",
            ),
            ("tag 12 bytes", join([p[0], "", p[2], p[3], tag12]), k.to_vec(), "parts: tag"),
            ("tag empty", join([p[0], "", p[2], p[3], ""]), k.to_vec(), "parts: tag"),
            ("tampered tag", join([p[0], "", p[2], p[3], &flipped_tag]), k.to_vec(), "crypto:"),
            ("tampered ciphertext", join([p[0], "", p[2], &flipped_ct, p[4]]), k.to_vec(), "crypto:"),
            ("tampered iv", join([p[0], "", &b64u(&[0u8; 12]), p[3], p[4]]), k.to_vec(), "crypto:"),
            ("header re-encoded", join([&reordered, "", p[2], p[3], p[4]]), k.to_vec(), "crypto:"),
            ("wrong key", good.clone(), vec![0u8; 32], "crypto:"),
        ];
        for (name, compact, key, want) in cases {
            let err = decrypt(&compact, &key).expect_err(name);
            assert!(err.reason.starts_with(want), "{name}: reason {:?} should start with {want:?}", err.reason);
            assert!(err.to_string().starts_with("undecryptable: "), "{name}");
        }
    }

    #[test]
    fn nested_member_names_may_repeat_inside_other_values() {
        // Only the header's own members must be unique; unknown members are ignored.
        let k = *key().as_bytes();
        let c = seal(r#"{"alg":"dir","enc":"A256GCM","x":{"a":1,"b":2}}"#, &k, &IV, V2);
        assert_eq!(decrypt(&c, &k).unwrap(), V2);
    }

    #[test]
    fn cli_round_trip_with_fixed_iv_and_trailing_newline() {
        let c = cli_encrypt(KEY_B64, Some(&b64u(&IV)), V2).unwrap();
        assert_eq!(c, encrypt_with_iv(&key(), IV, V2));
        assert_eq!(cli_decrypt(KEY_B64, &format!("{c}\n")).unwrap(), V2);
        assert_eq!(cli_decrypt(&format!("{KEY_B64}\n"), &format!("{c}\r\n")).unwrap(), V2);
    }

    #[test]
    fn cli_rejects_bad_keys_and_ivs_with_a_message() {
        let short = STANDARD.encode([1u8; 16]);
        let cases: Vec<(&str, Result<String, String>, &str)> = vec![
            ("encrypt 16-byte key", cli_encrypt(&short, None, b"x"), "exactly 32 bytes"),
            ("encrypt bad key", cli_encrypt("!!", None, b"x"), "base64"),
            ("encrypt iv 11 bytes", cli_encrypt(KEY_B64, Some(&b64u(&[0u8; 11])), b"x"), "got 11"),
            ("encrypt iv not b64url", cli_encrypt(KEY_B64, Some("+/+/"), b"x"), "base64url"),
            ("decrypt 20-byte key", cli_decrypt(&STANDARD.encode([1u8; 20]), "a.b.c.d.e").map(|_| String::new()), "got 20"),
            ("decrypt bad key", cli_decrypt("%%", "a.b.c.d.e").map(|_| String::new()), "base64"),
            ("decrypt garbage", cli_decrypt(KEY_B64, "a.b").map(|_| String::new()), "undecryptable: shape"),
        ];
        for (name, got, want) in cases {
            let e = got.expect_err(name);
            assert!(e.contains(want), "{name}: {e}");
        }
    }

    #[test]
    fn cli_decrypt_accepts_16_byte_key_for_a128gcm() {
        let k = [7u8; 16];
        let c = seal(r#"{"alg":"dir","enc":"A128GCM"}"#, &k, &IV, b"hi");
        assert_eq!(cli_decrypt(&STANDARD.encode(k), &c).unwrap(), b"hi");
    }
}

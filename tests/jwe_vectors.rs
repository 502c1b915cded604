//! The shared JWE vectors (spec/vectors, protocol.md §3) against the library
//! codec. Reads `fixtures/jwe/` (a copy committed with the crate); when the
//! spec checkout `../shared/spec/vectors` is also present, the copy must be
//! identical to it.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use pushrelay::domain::PushKey;
use pushrelay::jwe;
use serde_json::Value;
use std::path::{Path, PathBuf};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/jwe");
const SHARED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/spec/vectors");

fn load(name: &str) -> Value {
    let fixture = PathBuf::from(FIXTURES).join(name);
    let shared = Path::new(SHARED).join(name);
    let path = if fixture.exists() { fixture.clone() } else { shared.clone() };
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    if fixture.exists() && shared.exists() {
        let spec = std::fs::read_to_string(&shared).unwrap();
        assert_eq!(text, spec, "fixtures/jwe/{name} differs from {}: copy it again", shared.display());
    }
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or_else(|| panic!("vector field {k} missing"))
}

#[test]
fn every_positive_vector_decrypts_to_its_plaintext_and_reencrypts_to_its_compact() {
    let cases = load("a256gcm-dir.json");
    let cases = cases.as_array().unwrap();
    assert_eq!(cases.len(), 8, "README promises 8 positive cases");
    for c in cases {
        let name = s(c, "name");
        let key = PushKey::parse_b64(s(c, "key_b64")).unwrap();
        assert_eq!(hex::encode(key.as_bytes()), s(c, "key_hex"), "{name}: key_b64/key_hex");
        let got = jwe::decrypt(s(c, "compact"), key.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got, s(c, "plaintext").as_bytes(), "{name}: plaintext");

        let iv: [u8; 12] = URL_SAFE_NO_PAD.decode(s(c, "iv_b64url")).unwrap().try_into().unwrap();
        let compact = jwe::encrypt_with_iv(&key, iv, s(c, "plaintext").as_bytes());
        assert_eq!(compact, s(c, "compact"), "{name}: encrypt_with_iv");
        assert_eq!(s(c, "protected_b64url"), jwe::PROTECTED_HEADER_B64, "{name}: header");

        let cli = jwe::cli_encrypt(s(c, "key_b64"), Some(s(c, "iv_b64url")), s(c, "plaintext").as_bytes()).unwrap();
        assert_eq!(cli, s(c, "compact"), "{name}: cli_encrypt");
        let cli_pt = jwe::cli_decrypt(s(c, "key_b64"), &format!("{}\n", s(c, "compact"))).unwrap();
        assert_eq!(cli_pt, s(c, "plaintext").as_bytes(), "{name}: cli_decrypt");
    }
}

#[test]
fn every_negative_vector_is_refused_without_plaintext() {
    let cases = load("negative.json");
    let cases = cases.as_array().unwrap();
    assert_eq!(cases.len(), 22, "README promises 22 negative cases");
    for c in cases {
        let name = s(c, "name");
        let key = STANDARD.decode(s(c, "key_b64")).unwrap();
        match jwe::decrypt(s(c, "compact"), &key) {
            Ok(pt) => panic!("{name} ({}) was accepted: {} bytes released", s(c, "why"), pt.len()),
            Err(e) => {
                assert!(e.to_string().starts_with("undecryptable: "), "{name}: {e}");
                println!("{name:32} -> {e}");
            }
        }
        let cli = jwe::cli_decrypt(s(c, "key_b64"), s(c, "compact"));
        assert!(cli.is_err(), "{name}: cli_decrypt accepted it");
    }
}

#[test]
fn rfc7520_section_5_6_a128gcm_vector_decrypts_on_the_generic_path() {
    let v = load("rfc7520-5.6.json");
    let key = STANDARD.decode(s(&v, "key_b64")).unwrap();
    assert_eq!(key, URL_SAFE_NO_PAD.decode(v["jwk"]["k"].as_str().unwrap()).unwrap());
    assert_eq!(key.len(), 16);
    let pt = jwe::decrypt(s(&v, "compact"), &key).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pt, s(&v, "plaintext").as_bytes());
    assert_eq!(jwe::cli_decrypt(s(&v, "key_b64"), s(&v, "compact")).unwrap(), s(&v, "plaintext").as_bytes());
}

#[test]
fn rfc7520_vector_is_refused_with_a_256_bit_key() {
    let v = load("rfc7520-5.6.json");
    let mut key = STANDARD.decode(s(&v, "key_b64")).unwrap();
    key.extend_from_slice(&[0u8; 16]);
    let e = jwe::decrypt(s(&v, "compact"), &key).unwrap_err();
    assert!(e.reason.starts_with("key/enc:"), "{e}");
}

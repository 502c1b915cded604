//! Key material for tests and benchmarks: a valid APNs `.p8` (P-256 PKCS#8
//! PEM) with a Key ID, and a Google service-account JSON whose RSA key the
//! mock OAuth endpoint can verify.

use rand::Rng;
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use std::sync::OnceLock;

/// A random 10-character Apple-style id (A-Z, 0-9), as used for Key and Team IDs.
pub fn apple_id() -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::thread_rng();
    (0..10).map(|_| CHARS[rng.gen_range(0..CHARS.len())] as char).collect()
}

/// A fresh `.p8` (PKCS#8 PEM, EC P-256) and a random Key ID.
pub fn apns_p8() -> (String, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("p256 key");
    (key.serialize_pem(), apple_id())
}

/// A fresh 2048-bit RSA private key, PKCS#8 PEM (slow in debug builds:
/// prefer [`rsa_key_pem`], which is generated once per process).
pub fn fresh_rsa_key_pem() -> String {
    let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).expect("rsa key");
    key.to_pkcs8_pem(LineEnding::LF).expect("pkcs8 pem").to_string()
}

/// One RSA key per process, shared by every service account built with
/// [`service_account_json`].
pub fn rsa_key_pem() -> &'static str {
    static KEY: OnceLock<String> = OnceLock::new();
    KEY.get_or_init(fresh_rsa_key_pem)
}

/// A valid service-account JSON for `project`, with `token_uri` (point it
/// at `MockFcm::token_uri()`), using the shared RSA key.
pub fn service_account_json(token_uri: &str, project: &str) -> String {
    service_account_json_with(token_uri, project, &format!("relay@{project}.iam.gserviceaccount.com"), rsa_key_pem())
}

/// Same as [`service_account_json`] with an explicit client email and key.
pub fn service_account_json_with(token_uri: &str, project: &str, client_email: &str, key_pem: &str) -> String {
    serde_json::json!({
        "type": "service_account",
        "project_id": project,
        "private_key_id": format!("{:040x}", rand::thread_rng().gen::<u128>()),
        "private_key": key_pem,
        "client_email": client_email,
        "client_id": "100000000000000000000",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
    })
    .to_string()
}

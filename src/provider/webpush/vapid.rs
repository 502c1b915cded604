//! VAPID (RFC 8292): an app's Web Push identity. The admin gives the P-256
//! private key (PEM — PKCS#8 or SEC1 — or the base64url of its 32 bytes,
//! as `web-push generate-vapid-keys` prints it) and a contact `subject`;
//! the public key (base64url, 65 bytes) is what a page passes to
//! `pushManager.subscribe({applicationServerKey})`.
//!
//! Each push carries `Authorization: vapid t=<JWT>,k=<public key>`: an
//! ES256 JWT with `aud` = the endpoint's origin, `exp` 12 hours ahead
//! (RFC 8292 allows at most 24) and `sub` = the subject. A JWT is signed
//! once per origin and reused until an hour before it expires.

use crate::domain::FieldError;
use crate::provider::credentials::probe_sign;
use crate::secret::Secret;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

/// A JWT's lifetime.
pub const JWT_LIFETIME_S: i64 = 12 * 3600;
/// Sign a new one when less than this is left.
pub const JWT_RENEW_S: i64 = 3600;

/// One app's VAPID key pair and subject, with its signed JWTs.
pub struct VapidCredentials {
    key: Secret<[u8; 32]>,
    /// The uncompressed public point, base64url.
    pub public_key: String,
    pub subject: String,
    signer: EncodingKey,
    /// origin → (the `Authorization` value, its JWT's exp).
    signed: Mutex<HashMap<String, (String, i64)>>,
}

impl fmt::Debug for VapidCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VapidCredentials").field("public_key", &self.public_key).field("subject", &self.subject).finish()
    }
}

/// `PUT /v1/apps/{app}/webpush` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct VapidBody {
    vapid_private_key: Option<String>,
    subject: Option<String>,
}

/// What is stored (inside the master-key envelope).
#[derive(Serialize, Deserialize)]
struct StoredVapid {
    key: String,
    subject: String,
}

#[derive(Serialize)]
struct Claims<'a> {
    aud: &'a str,
    exp: i64,
    sub: &'a str,
}

fn field(name: &'static str, code: &'static str, msg: impl Into<String>) -> FieldError {
    FieldError::new(name, code, msg)
}

/// The private key from PEM (PKCS#8 or SEC1) or base64(url) of 32 bytes.
fn parse_key(raw: &str) -> Result<p256::SecretKey, FieldError> {
    let bad = |m: &str| field("vapidPrivateKey", "invalid_key", m);
    let raw = raw.trim();
    if raw.starts_with("-----BEGIN") {
        return p256::SecretKey::from_pkcs8_pem(raw)
            .or_else(|_| p256::SecretKey::from_sec1_pem(raw))
            .map_err(|_| bad("vapidPrivateKey is not a P-256 private key in PEM (PKCS#8 or SEC1)"));
    }
    let bytes = B64URL
        .decode(raw.trim_end_matches('='))
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(raw))
        .map_err(|_| bad("vapidPrivateKey must be PEM or the base64url of the 32-byte P-256 private key"))?;
    if bytes.len() != 32 {
        return Err(bad(&format!("vapidPrivateKey must be 32 bytes (got {})", bytes.len())));
    }
    p256::SecretKey::from_slice(&bytes).map_err(|_| bad("vapidPrivateKey is not a valid P-256 scalar"))
}

/// `mailto:` with an address or an `https://` URL, printable, ≤ 256.
fn parse_subject(raw: &str) -> Result<String, FieldError> {
    let ok_chars = !raw.is_empty() && raw.len() <= 256 && raw.chars().all(|c| c.is_ascii_graphic());
    let mailto = raw.strip_prefix("mailto:").is_some_and(|a| a.contains('@') && !a.starts_with('@'));
    let https = raw.strip_prefix("https://").is_some_and(|h| !h.is_empty());
    if ok_chars && (mailto || https) {
        Ok(raw.to_string())
    } else {
        Err(field("subject", "invalid_field", "subject must be a mailto: address or an https:// URL (RFC 8292), at most 256 characters"))
    }
}

impl VapidCredentials {
    fn from_key(key: p256::SecretKey, subject: String) -> Result<Self, FieldError> {
        let der = key.to_pkcs8_der().map_err(|_| field("vapidPrivateKey", "invalid_key", "vapidPrivateKey cannot be encoded"))?;
        let signer = EncodingKey::from_ec_der(der.as_bytes());
        probe_sign(&signer, Algorithm::ES256).map_err(|_| field("vapidPrivateKey", "invalid_key", "vapidPrivateKey cannot sign ES256"))?;
        let public_key = B64URL.encode(key.public_key().to_encoded_point(false).as_bytes());
        let raw: [u8; 32] = key.to_bytes().into();
        Ok(Self { key: Secret::new(raw), public_key, subject, signer, signed: Mutex::new(HashMap::new()) })
    }

    /// Parse `{"vapidPrivateKey", "subject"}` and prove the key signs.
    pub fn parse_admin_json(body: &[u8]) -> Result<Self, FieldError> {
        let b: VapidBody =
            serde_json::from_slice(body).map_err(|e| field("", "invalid_json", format!("body is not the expected JSON object: {e}")))?;
        let key = parse_key(&b.vapid_private_key.ok_or_else(|| field("vapidPrivateKey", "missing_field", "vapidPrivateKey is required"))?)?;
        let subject = parse_subject(&b.subject.ok_or_else(|| field("subject", "missing_field", "subject is required"))?)?;
        Self::from_key(key, subject)
    }

    /// `GET /v1/apps/{app}`: what a page needs, never the private key.
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({ "subject": self.subject, "publicKey": self.public_key, "vapidPrivateKey": "set" })
    }

    pub fn to_stored(&self) -> Secret<String> {
        let s = StoredVapid { key: B64URL.encode(self.key.expose()), subject: self.subject.clone() };
        Secret::new(serde_json::to_string(&s).expect("serialize credentials"))
    }

    pub fn from_stored(raw: &str) -> Result<Self, FieldError> {
        let corrupt = || field("", "corrupt_credentials", "stored VAPID credentials are unreadable");
        let s: StoredVapid = serde_json::from_str(raw).map_err(|_| corrupt())?;
        Self::from_key(parse_key(&s.key).map_err(|_| corrupt())?, s.subject)
    }

    /// The `Authorization` header for a push to `origin` at `now` (epoch s).
    pub fn authorization(&self, origin: &str, now: i64) -> Result<String, jsonwebtoken::errors::Error> {
        let mut signed = self.signed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((header, exp)) = signed.get(origin) {
            if exp - now > JWT_RENEW_S {
                return Ok(header.clone());
            }
        }
        let exp = now + JWT_LIFETIME_S;
        let jwt = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &Claims { aud: origin, exp, sub: &self.subject }, &self.signer)?;
        // No space after the comma: py_vapid's parser splits on the last space.
        let header = format!("vapid t={jwt},k={}", self.public_key);
        if signed.len() > 10_000 {
            signed.clear();
        }
        signed.insert(origin.to_string(), (header.clone(), exp));
        Ok(header)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEM: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgyfWPiYE+n46HLnH0\nKqZOF1fJJU3MYrct3AELtAQ+oRyhRANCAAT+M/SrDepxkU21WCP3O1SUj0EwbZIH\nMtu5pZpTKGSCIA5Zent7wmC6HCJ5mFgJkuk5cwAvMBKiiujwa7t45ewP\n-----END PRIVATE KEY-----\n";

    const SEC1: &str = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIMn1j4mBPp+Ohy5x9CqmThdXySVNzGK3LdwBC7QEPqEcoAoGCCqGSM49\nAwEHoUQDQgAE/jP0qw3qcZFNtVgj9ztUlI9BMG2SBzLbuaWaUyhkgiAOWXp7e8Jg\nuhwieZhYCZLpOXMALzASooro8Gu7eOXsDw==\n-----END EC PRIVATE KEY-----\n";

    fn body(key: &str, subject: &str) -> Vec<u8> {
        serde_json::json!({ "vapidPrivateKey": key, "subject": subject }).to_string().into_bytes()
    }

    #[test]
    fn the_key_is_read_from_pem_or_base64url_and_gives_the_same_public_key() {
        let from_pem = VapidCredentials::parse_admin_json(&body(PEM, "mailto:ops@example.com")).unwrap();
        let from_raw = VapidCredentials::parse_admin_json(&body("yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw", "https://example.com")).unwrap();
        // RFC 8291 appendix A's sender key pair.
        let public = "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8";
        let from_sec1 = VapidCredentials::parse_admin_json(&body(SEC1, "mailto:ops@example.com")).unwrap();
        assert_eq!([from_pem.public_key.as_str(), from_raw.public_key.as_str(), from_sec1.public_key.as_str()], [public; 3]);
        let back = VapidCredentials::from_stored(from_pem.to_stored().expose()).unwrap();
        assert_eq!((back.public_key.as_str(), back.subject.as_str()), (public, "mailto:ops@example.com"));
        assert!(!format!("{from_pem:?}").contains("yfWP") && !from_pem.summary().to_string().contains("yfWP"));
    }

    #[test]
    fn bad_keys_and_subjects_name_their_field() {
        for (b, f) in [
            (body("AAAA", "mailto:a@b.c"), "vapidPrivateKey"),
            (body(&B64URL.encode([0u8; 32]), "mailto:a@b.c"), "vapidPrivateKey"),
            (body("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----", "mailto:a@b.c"), "vapidPrivateKey"),
            (body(PEM, "ops@example.com"), "subject"),
            (body(PEM, "http://example.com"), "subject"),
            (br#"{"subject":"mailto:a@b.c"}"#.to_vec(), "vapidPrivateKey"),
            (br#"{"vapidPrivateKey":"x","subject":"mailto:a@b.c","extra":1}"#.to_vec(), ""),
        ] {
            assert_eq!(VapidCredentials::parse_admin_json(&b).unwrap_err().field, f, "{}", String::from_utf8_lossy(&b));
        }
    }

    #[test]
    fn the_jwt_names_the_origin_expires_within_a_day_and_is_reused() {
        let c = VapidCredentials::parse_admin_json(&body(PEM, "mailto:ops@example.com")).unwrap();
        let a = c.authorization("https://push.example.net", 1_000_000).unwrap();
        let (t, k) = a.strip_prefix("vapid t=").unwrap().split_once(",k=").unwrap();
        assert_eq!(k, c.public_key);
        let claims: serde_json::Value = serde_json::from_slice(&B64URL.decode(t.split('.').nth(1).unwrap()).unwrap()).unwrap();
        assert_eq!(
            claims,
            serde_json::json!({"aud": "https://push.example.net", "exp": 1_000_000 + JWT_LIFETIME_S, "sub": "mailto:ops@example.com"})
        );
        let key = jsonwebtoken::DecodingKey::from_ec_components(
            &B64URL.encode(&B64URL.decode(&c.public_key).unwrap()[1..33]),
            &B64URL.encode(&B64URL.decode(&c.public_key).unwrap()[33..]),
        )
        .unwrap();
        let mut v = jsonwebtoken::Validation::new(Algorithm::ES256);
        v.set_audience(&["https://push.example.net"]);
        v.validate_exp = false;
        jsonwebtoken::decode::<serde_json::Value>(t, &key, &v).expect("the signature verifies with the public key");
        assert_eq!(c.authorization("https://push.example.net", 1_000_000 + 600).unwrap(), a, "reused");
        assert_ne!(c.authorization("https://push.example.net", 1_000_000 + JWT_LIFETIME_S - 600).unwrap(), a, "renewed near its end");
        assert_ne!(c.authorization("https://other.example", 1_000_000).unwrap(), a, "one per origin");
    }
}

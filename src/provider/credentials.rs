//! What every provider's credentials share: base64 fields of the admin
//! JSON, and proving a key can sign before it is stored.

use crate::domain::FieldError;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

/// A base64 field of an admin body (padded or not, whitespace ignored).
pub(crate) fn b64_field(field: &'static str, raw: &str) -> Result<Vec<u8>, FieldError> {
    let cleaned: String = raw.chars().filter(|c| !c.is_whitespace()).collect();
    STANDARD
        .decode(cleaned.as_bytes())
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(cleaned.trim_end_matches('=')))
        .map_err(|_| FieldError::new(field, "invalid_base64", format!("{field} must be base64")))
}

#[derive(Serialize)]
struct ProbeClaims<'a> {
    iss: &'a str,
    iat: i64,
}

/// Sign a throw-away JWT to prove the key is usable for `alg`.
pub(crate) fn probe_sign(key: &EncodingKey, alg: Algorithm) -> Result<(), jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(&Header::new(alg), &ProbeClaims { iss: "probe", iat: 0 }, key).map(|_| ())
}

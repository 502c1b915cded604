//! APNs credentials of one app, parsed from the admin JSON (exactly what a
//! Webex developer pastes into the portal, seeds/003): token auth (a `.p8`
//! that must sign an ES256 JWT) or certificate auth (a certificate and key
//! that must load into rustls).

use crate::domain::{credentials_cert, BundleId, FieldError};
use crate::provider::credentials::{b64_field, probe_sign};
use crate::secret::Secret;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde::{Deserialize, Serialize};
use std::fmt;

/// How pushrelay authenticates to APNs for one app.
#[derive(Clone)]
pub enum ApnsAuth {
    /// Token auth: ES256 provider JWTs signed with the `.p8` key.
    Token { key_id: String, team_id: String, p8_pem: Secret<String> },
    /// Certificate auth: TLS client certificate chain and its private key (PEM).
    Certificate { cert_pem: Secret<String>, key_pem: Secret<String> },
}

#[derive(Clone)]
pub struct ApnsCredentials {
    pub bundle_id: BundleId,
    pub auth: ApnsAuth,
}

impl fmt::Debug for ApnsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApnsCredentials").field("summary", &self.summary()).finish()
    }
}

/// The admin body of `PUT /v1/apps/{app}/apns` (token or certificate form).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ApnsBody {
    key_id: Option<String>,
    bundle_id: Option<String>,
    team_id: Option<String>,
    key_file: Option<String>,
    certificate: Option<String>,
    password: Option<String>,
}

/// What is stored (inside the master-key envelope).
#[derive(Serialize, Deserialize)]
#[serde(tag = "auth", rename_all = "snake_case")]
enum StoredApns {
    Token { bundle_id: String, key_id: String, team_id: String, p8_pem: String },
    Certificate { bundle_id: String, cert_pem: String, key_pem: String },
}

fn apple_id(field: &'static str, raw: Option<String>) -> Result<String, FieldError> {
    let v = raw.ok_or_else(|| FieldError::new(field, "missing_field", format!("{field} is required")))?;
    if v.len() == 10 && v.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()) {
        Ok(v)
    } else {
        Err(FieldError::new(field, "invalid_field", format!("{field} must be the 10-character Apple id (A-Z, 0-9)")))
    }
}

impl ApnsCredentials {
    /// Parse the admin JSON body (token or certificate form).
    pub fn parse_admin_json(body: &[u8]) -> Result<Self, FieldError> {
        let b: ApnsBody =
            serde_json::from_slice(body).map_err(|e| FieldError::new("", "invalid_json", format!("body is not the expected JSON object: {e}")))?;
        let bundle_id = BundleId::parse(b.bundle_id.as_deref().ok_or_else(|| FieldError::new("bundleId", "missing_field", "bundleId is required"))?)?;
        match (b.key_file, b.certificate) {
            (Some(_), Some(_)) => Err(FieldError::new("", "invalid_field", "give either keyFile (token auth) or certificate, not both")),
            (None, None) => Err(FieldError::new("keyFile", "missing_field", "keyFile (base64 .p8) or certificate (base64 PEM/PKCS#12) is required")),
            (Some(key_file), None) => {
                if b.password.is_some() {
                    return Err(FieldError::new("password", "invalid_field", "password belongs to the certificate form, not to keyFile"));
                }
                let key_id = apple_id("keyId", b.key_id)?;
                let team_id = apple_id("teamId", b.team_id)?;
                let pem = String::from_utf8(b64_field("keyFile", &key_file)?)
                    .map_err(|_| FieldError::new("keyFile", "invalid_key", "keyFile must be the base64 of a .p8 (PEM) file"))?;
                let auth = ApnsAuth::Token { key_id, team_id, p8_pem: Secret::new(pem) };
                let creds = Self { bundle_id, auth };
                creds.check()?;
                Ok(creds)
            }
            (None, Some(cert)) => {
                if b.key_id.is_some() || b.team_id.is_some() {
                    return Err(FieldError::new("keyId", "invalid_field", "keyId and teamId belong to the keyFile (token) form, not to certificate"));
                }
                let raw = b64_field("certificate", &cert)?;
                let (cert_pem, key_pem) = credentials_cert::split_certificate(&raw, b.password.as_deref())?;
                let creds = Self { bundle_id, auth: ApnsAuth::Certificate { cert_pem: Secret::new(cert_pem), key_pem: Secret::new(key_pem) } };
                creds.check()?;
                Ok(creds)
            }
        }
    }

    /// Prove the key material works (used on PUT and by `check-config`).
    pub fn check(&self) -> Result<(), FieldError> {
        match &self.auth {
            ApnsAuth::Token { p8_pem, .. } => {
                let key = EncodingKey::from_ec_pem(p8_pem.expose().as_bytes())
                    .map_err(|_| FieldError::new("keyFile", "invalid_key", "keyFile is not a PEM PKCS#8 EC private key (.p8)"))?;
                probe_sign(&key, Algorithm::ES256)
                    .map_err(|_| FieldError::new("keyFile", "invalid_key", "keyFile is not a P-256 (ES256) private key"))
            }
            ApnsAuth::Certificate { cert_pem, key_pem } => credentials_cert::check_pair(cert_pem.expose(), key_pem.expose()),
        }
    }

    /// Summary without secrets: what the admin API shows.
    pub fn summary(&self) -> serde_json::Value {
        match &self.auth {
            ApnsAuth::Token { key_id, team_id, .. } => serde_json::json!({
                "auth": "token", "bundleId": self.bundle_id.as_str(), "keyId": key_id, "teamId": team_id,
            }),
            ApnsAuth::Certificate { cert_pem, .. } => {
                let mut v = serde_json::json!({ "auth": "certificate", "bundleId": self.bundle_id.as_str() });
                if let Some(t) = credentials_cert::not_after(cert_pem.expose()) {
                    v["notAfter"] = serde_json::json!(t);
                }
                v
            }
        }
    }

    pub fn to_stored(&self) -> Secret<String> {
        let s = match &self.auth {
            ApnsAuth::Token { key_id, team_id, p8_pem } => StoredApns::Token {
                bundle_id: self.bundle_id.as_str().into(),
                key_id: key_id.clone(),
                team_id: team_id.clone(),
                p8_pem: p8_pem.expose().clone(),
            },
            ApnsAuth::Certificate { cert_pem, key_pem } => StoredApns::Certificate {
                bundle_id: self.bundle_id.as_str().into(),
                cert_pem: cert_pem.expose().clone(),
                key_pem: key_pem.expose().clone(),
            },
        };
        Secret::new(serde_json::to_string(&s).expect("serialize credentials"))
    }

    pub fn from_stored(raw: &str) -> Result<Self, FieldError> {
        let s: StoredApns =
            serde_json::from_str(raw).map_err(|_| FieldError::new("", "corrupt_credentials", "stored APNs credentials are unreadable"))?;
        Ok(match s {
            StoredApns::Token { bundle_id, key_id, team_id, p8_pem } => {
                Self { bundle_id: BundleId::parse(&bundle_id)?, auth: ApnsAuth::Token { key_id, team_id, p8_pem: Secret::new(p8_pem) } }
            }
            StoredApns::Certificate { bundle_id, cert_pem, key_pem } => Self {
                bundle_id: BundleId::parse(&bundle_id)?,
                auth: ApnsAuth::Certificate { cert_pem: Secret::new(cert_pem), key_pem: Secret::new(key_pem) },
            },
        })
    }
}

//! Provider credentials of one application, parsed from the admin JSON
//! (exactly what a Webex developer pastes into the portal, seeds/003).
//! Parsing proves the key material is usable: a `.p8` must sign an ES256
//! JWT, a service account's key must sign an RS256 JWT, a certificate and
//! its key must load into rustls.

use super::{BundleId, FieldError};
use crate::secret::Secret;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
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

fn b64_field(field: &'static str, raw: &str) -> Result<Vec<u8>, FieldError> {
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
fn probe_sign(key: &EncodingKey, alg: Algorithm) -> Result<(), jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(&Header::new(alg), &ProbeClaims { iss: "probe", iat: 0 }, key).map(|_| ())
}

impl ApnsCredentials {
    /// Parse the admin JSON body (token or certificate form).
    pub fn parse_admin_json(body: &[u8]) -> Result<Self, FieldError> {
        let b: ApnsBody = serde_json::from_slice(body)
            .map_err(|e| FieldError::new("", "invalid_json", format!("body is not the expected JSON object: {e}")))?;
        let bundle_id = BundleId::parse(
            b.bundle_id.as_deref().ok_or_else(|| FieldError::new("bundleId", "missing_field", "bundleId is required"))?,
        )?;
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
                let (cert_pem, key_pem) = super::credentials_cert::split_certificate(&raw, b.password.as_deref())?;
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
                let key = EncodingKey::from_ec_pem(p8_pem.expose().as_bytes()).map_err(|_| {
                    FieldError::new("keyFile", "invalid_key", "keyFile is not a PEM PKCS#8 EC private key (.p8)")
                })?;
                probe_sign(&key, Algorithm::ES256).map_err(|_| {
                    FieldError::new("keyFile", "invalid_key", "keyFile is not a P-256 (ES256) private key")
                })
            }
            ApnsAuth::Certificate { cert_pem, key_pem } => {
                super::credentials_cert::check_pair(cert_pem.expose(), key_pem.expose())
            }
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
                if let Some(t) = super::credentials_cert::not_after(cert_pem.expose()) {
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
        let s: StoredApns = serde_json::from_str(raw)
            .map_err(|_| FieldError::new("", "corrupt_credentials", "stored APNs credentials are unreadable"))?;
        Ok(match s {
            StoredApns::Token { bundle_id, key_id, team_id, p8_pem } => Self {
                bundle_id: BundleId::parse(&bundle_id)?,
                auth: ApnsAuth::Token { key_id, team_id, p8_pem: Secret::new(p8_pem) },
            },
            StoredApns::Certificate { bundle_id, cert_pem, key_pem } => Self {
                bundle_id: BundleId::parse(&bundle_id)?,
                auth: ApnsAuth::Certificate { cert_pem: Secret::new(cert_pem), key_pem: Secret::new(key_pem) },
            },
        })
    }
}

/// A Google service account, as used for FCM HTTP v1.
#[derive(Clone)]
pub struct FcmCredentials {
    pub project_id: String,
    pub client_email: String,
    pub private_key_id: Option<String>,
    pub private_key_pem: Secret<String>,
    pub token_uri: String,
}

impl fmt::Debug for FcmCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FcmCredentials").field("summary", &self.summary()).finish()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FcmBody {
    service_account: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct ServiceAccount {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    kind: Option<String>,
    project_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    private_key_id: Option<String>,
    private_key: Option<String>,
    client_email: Option<String>,
    token_uri: Option<String>,
}

impl FcmCredentials {
    /// Parse `{"serviceAccount": "<base64 of the service-account JSON>"}`.
    pub fn parse_admin_json(body: &[u8]) -> Result<Self, FieldError> {
        let b: FcmBody = serde_json::from_slice(body)
            .map_err(|e| FieldError::new("", "invalid_json", format!("body is not the expected JSON object: {e}")))?;
        let raw = b.service_account.ok_or_else(|| FieldError::new("serviceAccount", "missing_field", "serviceAccount is required"))?;
        let json = b64_field("serviceAccount", &raw)?;
        Self::parse_service_account(&json)
    }

    /// Parse the service-account JSON itself and prove its key signs RS256.
    pub fn parse_service_account(json: &[u8]) -> Result<Self, FieldError> {
        let creds = Self::parse_fields(json)?;
        creds.check()?;
        Ok(creds)
    }

    /// Parse the fields only (stored credentials were checked when stored).
    fn parse_fields(json: &[u8]) -> Result<Self, FieldError> {
        let sa: ServiceAccount = serde_json::from_slice(json).map_err(|_| {
            FieldError::new("serviceAccount", "invalid_service_account", "serviceAccount is not a service-account JSON object")
        })?;
        if let Some(kind) = &sa.kind {
            if kind != "service_account" {
                return Err(FieldError::new("serviceAccount", "invalid_service_account", "serviceAccount type must be service_account"));
            }
        }
        let need = |v: Option<String>, name: &str| {
            v.filter(|s| !s.is_empty()).ok_or_else(|| {
                FieldError::new("serviceAccount", "invalid_service_account", format!("serviceAccount is missing {name}"))
            })
        };
        let project_id = need(sa.project_id, "project_id")?;
        let client_email = need(sa.client_email, "client_email")?;
        let private_key = need(sa.private_key, "private_key")?;
        let token_uri = need(sa.token_uri, "token_uri")?;
        if !(token_uri.starts_with("https://") || token_uri.starts_with("http://")) {
            return Err(FieldError::new("serviceAccount", "invalid_service_account", "serviceAccount token_uri must be an http(s) URL"));
        }
        if !project_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(FieldError::new("serviceAccount", "invalid_service_account", "serviceAccount project_id is not a valid project id"));
        }
        Ok(Self { project_id, client_email, private_key_id: sa.private_key_id, private_key_pem: Secret::new(private_key), token_uri })
    }

    pub fn check(&self) -> Result<(), FieldError> {
        let key = EncodingKey::from_rsa_pem(self.private_key_pem.expose().as_bytes()).map_err(|_| {
            FieldError::new("serviceAccount", "invalid_key", "serviceAccount private_key is not a PEM RSA private key")
        })?;
        probe_sign(&key, Algorithm::RS256)
            .map_err(|_| FieldError::new("serviceAccount", "invalid_key", "serviceAccount private_key cannot sign RS256"))
    }

    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({ "project_id": self.project_id, "client_email": self.client_email, "token_uri": self.token_uri })
    }

    pub fn to_stored(&self) -> Secret<String> {
        let sa = ServiceAccount {
            kind: Some("service_account".into()),
            project_id: Some(self.project_id.clone()),
            private_key_id: self.private_key_id.clone(),
            private_key: Some(self.private_key_pem.expose().clone()),
            client_email: Some(self.client_email.clone()),
            token_uri: Some(self.token_uri.clone()),
        };
        Secret::new(serde_json::to_string(&sa).expect("serialize service account"))
    }

    pub fn from_stored(raw: &str) -> Result<Self, FieldError> {
        Self::parse_fields(raw.as_bytes())
    }
}

/// Webex webhook verification secret of one app (seeds/000).
#[derive(Clone)]
pub struct WebexCredentials {
    pub webhook_secret: Secret<String>,
}

impl fmt::Debug for WebexCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebexCredentials(<redacted>)")
    }
}

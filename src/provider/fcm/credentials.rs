//! FCM credentials of one app: a Google service account whose key must
//! sign an RS256 JWT.

use crate::domain::FieldError;
use crate::provider::credentials::{b64_field, probe_sign};
use crate::secret::Secret;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde::{Deserialize, Serialize};
use std::fmt;

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
        let b: FcmBody =
            serde_json::from_slice(body).map_err(|e| FieldError::new("", "invalid_json", format!("body is not the expected JSON object: {e}")))?;
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
        let sa: ServiceAccount = serde_json::from_slice(json)
            .map_err(|_| FieldError::new("serviceAccount", "invalid_service_account", "serviceAccount is not a service-account JSON object"))?;
        if let Some(kind) = &sa.kind {
            if kind != "service_account" {
                return Err(FieldError::new("serviceAccount", "invalid_service_account", "serviceAccount type must be service_account"));
            }
        }
        let need = |v: Option<String>, name: &str| {
            v.filter(|s| !s.is_empty())
                .ok_or_else(|| FieldError::new("serviceAccount", "invalid_service_account", format!("serviceAccount is missing {name}")))
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
        let key = EncodingKey::from_rsa_pem(self.private_key_pem.expose().as_bytes())
            .map_err(|_| FieldError::new("serviceAccount", "invalid_key", "serviceAccount private_key is not a PEM RSA private key"))?;
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

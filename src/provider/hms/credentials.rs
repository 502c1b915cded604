//! Huawei Push Kit credentials of one app: the AppGallery Connect app id
//! (also the OAuth client id) and its client secret. Nothing can prove the
//! secret offline: a wrong one is refused by Huawei's token endpoint at the
//! first push, and that refusal (its `error_description`) is the device's
//! `failed` reason and the app's credential health.

use crate::domain::FieldError;
use crate::secret::Secret;
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Clone)]
pub struct HmsCredentials {
    /// The app id: the `{appId}` of `messages:send` and the OAuth client id.
    pub app_id: String,
    pub client_secret: Secret<String>,
}

impl fmt::Debug for HmsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HmsCredentials").field("app_id", &self.app_id).finish()
    }
}

/// `PUT /v1/apps/{app}/hms` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct HmsBody {
    app_id: Option<String>,
    client_secret: Option<String>,
}

/// What is stored (inside the master-key envelope).
#[derive(Serialize, Deserialize)]
struct StoredHms {
    app_id: String,
    client_secret: String,
}

impl HmsCredentials {
    /// Parse `{"appId", "clientSecret"}`: an app id of digits (as
    /// AppGallery Connect gives it), a printable secret.
    pub fn parse_admin_json(body: &[u8]) -> Result<Self, FieldError> {
        let b: HmsBody =
            serde_json::from_slice(body).map_err(|e| FieldError::new("", "invalid_json", format!("body is not the expected JSON object: {e}")))?;
        let app_id = b.app_id.ok_or_else(|| FieldError::new("appId", "missing_field", "appId is required"))?;
        if app_id.is_empty() || app_id.len() > 32 || !app_id.chars().all(|c| c.is_ascii_digit()) {
            return Err(FieldError::new("appId", "invalid_field", "appId must be the AppGallery Connect app id (1 to 32 digits)"));
        }
        let secret = b.client_secret.ok_or_else(|| FieldError::new("clientSecret", "missing_field", "clientSecret is required"))?;
        if secret.is_empty() || secret.len() > 512 || !secret.chars().all(|c| c.is_ascii_graphic()) {
            return Err(FieldError::new("clientSecret", "invalid_field", "clientSecret must be 1 to 512 printable ASCII characters"));
        }
        Ok(Self { app_id, client_secret: Secret::new(secret) })
    }

    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({ "appId": self.app_id, "clientSecret": "set" })
    }

    pub fn to_stored(&self) -> Secret<String> {
        let s = StoredHms { app_id: self.app_id.clone(), client_secret: self.client_secret.expose().clone() };
        Secret::new(serde_json::to_string(&s).expect("serialize credentials"))
    }

    pub fn from_stored(raw: &str) -> Result<Self, FieldError> {
        let s: StoredHms =
            serde_json::from_str(raw).map_err(|_| FieldError::new("", "corrupt_credentials", "stored HMS credentials are unreadable"))?;
        Ok(Self { app_id: s.app_id, client_secret: Secret::new(s.client_secret) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_json_is_checked_field_by_field() {
        let ok = HmsCredentials::parse_admin_json(br#"{"appId":"100123456","clientSecret":"s3cr3t-0123"}"#).unwrap();
        assert_eq!(HmsCredentials::from_stored(ok.to_stored().expose()).unwrap().app_id, "100123456");
        assert!(!format!("{ok:?}").contains("s3cr3t"));
        for (body, field) in [
            (&br#"{"clientSecret":"x"}"#[..], "appId"),
            (br#"{"appId":"com.example","clientSecret":"x"}"#, "appId"),
            (br#"{"appId":"1"}"#, "clientSecret"),
            (br#"{"appId":"1","clientSecret":"a b"}"#, "clientSecret"),
            (br#"{"appId":"1","clientSecret":"x","extra":1}"#, ""),
        ] {
            assert_eq!(HmsCredentials::parse_admin_json(body).unwrap_err().field, field, "{}", String::from_utf8_lossy(body));
        }
    }
}

//! The one place where errors become HTTP statuses (JSON routes).
//! The UDS dialect answers in XML; its responder is `http::uds::UdsError`.

use crate::domain::FieldError;
use crate::store::StoreError;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error("{0}")]
    UnauthorizedBecause(String),
    #[error("the key lacks the scope {0}")]
    Forbidden(&'static str),
    #[error("this key is bound to the app {0} and may not name another app")]
    WrongApp(String),
    #[error("this key belongs to another tenant")]
    WrongTenant,
    /// 409 with its own code (`app_taken`, `domain_taken`, `default_tenant`).
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("the user already has {0} devices, the most limits.devices_per_user allows; remove one first")]
    DeviceLimit(u32),
    #[error("too many failed authentications from here: retry after {} s", .0.as_secs().max(1))]
    TooManyFailures(std::time::Duration),
    #[error("{0}")]
    NotFound(String),
    #[error("request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("too many requests for this key: retry after {} s", .0.as_secs().max(1))]
    RateLimited(std::time::Duration),
    #[error("the request body did not arrive in time")]
    BodyTimeout,
    #[error("content-type must be {0}")]
    UnsupportedMediaType(&'static str),
    #[error("store unavailable")]
    Unavailable(#[source] StoreError),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

pub type Result<T, E = ApiError> = std::result::Result<T, E>;

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest { code, message: message.into() }
    }

    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized | ApiError::UnauthorizedBecause(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::WrongApp(_) | ApiError::WrongTenant => StatusCode::FORBIDDEN,
            ApiError::DeviceLimit(_) | ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::TooManyFailures(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { code, .. } => code,
            ApiError::Unauthorized | ApiError::UnauthorizedBecause(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::WrongApp(_) => "wrong_app",
            ApiError::WrongTenant => "wrong_tenant",
            ApiError::Conflict { code, .. } => code,
            ApiError::DeviceLimit(_) => "device_limit",
            ApiError::TooManyFailures(_) => "too_many_failures",
            ApiError::NotFound(_) => "not_found",
            ApiError::PayloadTooLarge(_) => "too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::BodyTimeout => "body_timeout",
            ApiError::RateLimited(_) => "rate_limited",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        // Name the field unless the message already does.
        let message = if e.field.is_empty() || e.message.contains(e.field) { e.message } else { format!("{}: {}", e.field, e.message) };
        ApiError::BadRequest { code: e.code, message }
    }
}

impl From<crate::register::RegisterError> for ApiError {
    fn from(e: crate::register::RegisterError) -> Self {
        use crate::register::RegisterError;
        match e {
            RegisterError::Refused(f) => f.into(),
            RegisterError::DeviceLimit(n) => ApiError::DeviceLimit(n),
            RegisterError::WrongApp(bound) => ApiError::WrongApp(bound.as_str().to_string()),
            RegisterError::Store(s) => s.into(),
        }
    }
}

impl From<crate::dispatch::DispatchError> for ApiError {
    fn from(e: crate::dispatch::DispatchError) -> Self {
        match e {
            crate::dispatch::DispatchError::NoDevices => ApiError::NotFound("no devices to wake".into()),
            crate::dispatch::DispatchError::Store(e) => e.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::DeviceLimit(n) => ApiError::DeviceLimit(n),
            StoreError::UnknownApp(app) => ApiError::NotFound(format!("unknown app {app}")),
            StoreError::UnknownTenant(t) => ApiError::NotFound(format!("unknown tenant {t}")),
            StoreError::AppTaken(app) => ApiError::Conflict {
                code: "app_taken",
                message: format!("the app id {app} is taken: app ids are global, and this one is a shared app or another tenant's"),
            },
            StoreError::DomainTaken(d) => {
                ApiError::Conflict { code: "domain_taken", message: format!("the SIP domain {d} belongs to another tenant") }
            }
            StoreError::DefaultTenant => ApiError::Conflict { code: "default_tenant", message: "the tenant default cannot be deleted".into() },
            // Every other store failure (a lost connection, a restarting
            // server, a full disk, an unreadable row) is the store being
            // unavailable: 503 with Retry-After, so the backend tries again,
            // never a 500 that reads as "this request is wrong".
            other => ApiError::Unavailable(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            // The cause chain goes to the log, never to the client.
            tracing::error!(error = ?anyhow::Error::new(self), "request failed");
            let msg = if status == StatusCode::SERVICE_UNAVAILABLE { "store unavailable, try again" } else { "internal error" };
            let code = if status == StatusCode::SERVICE_UNAVAILABLE { "unavailable" } else { "internal" };
            let mut resp = (status, Json(serde_json::json!({ "error": code, "message": msg }))).into_response();
            if status == StatusCode::SERVICE_UNAVAILABLE {
                resp.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(STORE_RETRY_AFTER_S));
            }
            return resp;
        }
        let body = Json(serde_json::json!({ "error": self.code(), "message": self.to_string() }));
        let retry_after = match &self {
            ApiError::RateLimited(wait) | ApiError::TooManyFailures(wait) => Some(retry_after_secs(*wait)),
            _ => None,
        };
        let mut resp = (status, body).into_response();
        if let Some(secs) = retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer realm=\"pushrelay\""));
        }
        resp
    }
}

/// `Retry-After` of a 503 when the store is unavailable.
pub const STORE_RETRY_AFTER_S: u64 = 1;

/// `Retry-After` in whole seconds, at least 1.
pub fn retry_after_secs(wait: std::time::Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

/// Parse a JSON request body into `T`, refusing other content types.
pub fn json_body<T: serde::de::DeserializeOwned>(headers: &axum::http::HeaderMap, body: &[u8]) -> Result<T> {
    require_json(headers)?;
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request("invalid_json", format!("body is not the expected JSON: {e}")))
}

/// Accept `application/json` (any parameters) or no content type.
pub fn require_json(headers: &axum::http::HeaderMap) -> Result<()> {
    if super::body::media_type_is(headers, &["application/json"]) {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType("application/json"))
    }
}

/// Rejections produced by axum itself (a query string or path segment that
/// does not deserialize) come as `text/plain`; this middleware gives them
/// the same shape as every other error: JSON, or XML under `/cucm-uds/`.
pub async fn uniform_errors(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let uds = super::uds::is_uds_path(req.uri().path());
    let resp = next.run(req).await;
    let plain = resp.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|ct| ct.starts_with("text/plain"));
    if !resp.status().is_client_error() || !plain {
        return resp;
    }
    let status = resp.status();
    let text = axum::body::to_bytes(resp.into_body(), 4096).await.unwrap_or_default();
    let message = String::from_utf8_lossy(&text).chars().take(300).collect::<String>();
    let code = match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        _ => "bad_request",
    };
    if uds {
        let body = crate::dialect::uds::error_xml(code, "", &message);
        return (status, [(header::CONTENT_TYPE, "application/xml; charset=utf-8")], body).into_response();
    }
    (status, Json(serde_json::json!({ "error": code, "message": message }))).into_response()
}

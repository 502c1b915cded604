//! Request bodies read with a hard size limit (413 in the JSON error shape).

use super::error::ApiError;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};

/// Largest JSON body accepted on admin and call routes.
pub const MAX_JSON_BODY: usize = 64 * 1024;

/// A body must arrive within this time (slow senders are cut off).
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The request body, at most `MAX_JSON_BODY` bytes.
pub struct LimitedBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for LimitedBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, Self::Rejection> {
        read_body(req.into_body(), MAX_JSON_BODY).await.map(LimitedBody).map_err(|e| e.into_api(MAX_JSON_BODY))
    }
}

/// Why a body could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    TooLarge,
    TooSlow,
}

impl BodyError {
    pub fn into_api(self, max: usize) -> ApiError {
        match self {
            BodyError::TooLarge => ApiError::PayloadTooLarge(max),
            BodyError::TooSlow => ApiError::BodyTimeout,
        }
    }
}

/// Read a whole body of at most `max` bytes within `BODY_READ_TIMEOUT`.
pub async fn read_body(body: axum::body::Body, max: usize) -> Result<Bytes, BodyError> {
    match tokio::time::timeout(BODY_READ_TIMEOUT, axum::body::to_bytes(body, max)).await {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(_)) => Err(BodyError::TooLarge),
        Err(_) => Err(BodyError::TooSlow),
    }
}

/// The request's media type (`type/subtype`, lower case, parameters dropped),
/// or `None` when there is no `Content-Type`. A header that is not text
/// reads as the empty type, which no route accepts.
pub fn media_type(headers: &axum::http::HeaderMap) -> Option<String> {
    let ct = headers.get(axum::http::header::CONTENT_TYPE)?;
    let essence = ct.to_str().unwrap_or("").split(';').next().unwrap_or("");
    Some(essence.trim().to_ascii_lowercase())
}

/// Whether the request's media type is one of `accepted` (lower case);
/// a request without a `Content-Type` is accepted.
pub fn media_type_is(headers: &axum::http::HeaderMap, accepted: &[&str]) -> bool {
    media_type(headers).is_none_or(|m| accepted.contains(&m.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{header, HeaderMap, HeaderValue};

    fn with(ct: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
        h
    }

    #[test]
    fn media_type_drops_parameters_and_case() {
        assert_eq!(media_type(&with("Application/JSON; charset=utf-8")).as_deref(), Some("application/json"));
        assert_eq!(media_type(&HeaderMap::new()), None);
        assert!(media_type_is(&with("text/xml;charset=UTF-8"), &["application/xml", "text/xml"]));
        assert!(!media_type_is(&with("text/plain"), &["application/json"]));
        assert!(media_type_is(&HeaderMap::new(), &["message/sip"]));
    }
}

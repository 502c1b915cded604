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

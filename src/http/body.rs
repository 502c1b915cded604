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
        match tokio::time::timeout(BODY_READ_TIMEOUT, axum::body::to_bytes(req.into_body(), MAX_JSON_BODY)).await {
            Ok(Ok(b)) => Ok(LimitedBody(b)),
            Ok(Err(_)) => Err(ApiError::PayloadTooLarge(MAX_JSON_BODY)),
            Err(_) => Err(ApiError::BodyTimeout),
        }
    }
}

//! CUCM UDS dialect over HTTP: `PUT`/`DELETE
//! /cucm-uds/user/{userId}/device/{devicePkid}/devicetoken`.
//! XML in, XML out (protocol.md §1). Parsing lives in `dialect::uds`; this
//! file does auth, body limits, the app/credentials check and the store.

use super::auth::{basic_user, BasicRefusal, Peer, RequestedTenant};
use super::body::BodyError;
use super::error::retry_after_secs;
use super::state::AppState;
use crate::dialect::uds;
use crate::domain::{DevicePkid, FieldError, Scope, UserId};
use crate::store::StoreError;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use axum::Router;

/// Phone-facing: also served under `/t/{tenant}` (users of that tenant).
pub fn router() -> Router<AppState> {
    Router::new().route("/cucm-uds/user/{user_id}/device/{device_pkid}/devicetoken", put(put_token).delete(delete_token))
}

/// Whether a request path is the UDS dialect's (answered in XML), with or
/// without a tenant prefix.
pub fn is_uds_path(path: &str) -> bool {
    let rest = match path.strip_prefix("/t/") {
        Some(rest) => rest.split_once('/').map_or("", |(_, r)| r),
        None => path.strip_prefix('/').unwrap_or(path),
    };
    rest.starts_with("cucm-uds/")
}

/// The path's ids (the tenant prefix, if any, is read by `RequestedTenant`).
#[derive(serde::Deserialize)]
struct UdsPath {
    user_id: String,
    device_pkid: String,
}

/// An answer in the UDS XML error shape.
#[derive(Debug)]
pub struct UdsError {
    status: StatusCode,
    code: &'static str,
    field: &'static str,
    message: String,
    retry_after: Option<u64>,
}

impl UdsError {
    fn new(status: StatusCode, code: &'static str, field: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, field, message: message.into(), retry_after: None }
    }
    fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", "", "Basic credentials of the user in the path are required")
    }
}

impl From<FieldError> for UdsError {
    fn from(e: FieldError) -> Self {
        let status = if e.code == "too_large" { StatusCode::PAYLOAD_TOO_LARGE } else { StatusCode::BAD_REQUEST };
        Self::new(status, e.code, e.field, e.message)
    }
}

impl From<StoreError> for UdsError {
    fn from(e: StoreError) -> Self {
        if let StoreError::DeviceLimit(n) = e {
            return crate::register::RegisterError::DeviceLimit(n).into();
        }
        tracing::error!(error = ?anyhow::Error::new(e), "store failed during UDS request");
        Self {
            retry_after: Some(super::error::STORE_RETRY_AFTER_S),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "", "store unavailable, try again")
        }
    }
}

impl From<crate::register::RegisterError> for UdsError {
    fn from(e: crate::register::RegisterError) -> Self {
        use crate::register::RegisterError;
        match e {
            RegisterError::Refused(f) => f.into(),
            RegisterError::DeviceLimit(n) => Self::new(
                StatusCode::CONFLICT,
                "device_limit",
                "devicePkid",
                format!("the user already has {n} devices, the most limits.devices_per_user allows; remove one first"),
            ),
            RegisterError::WrongApp(bound) => {
                Self::new(StatusCode::FORBIDDEN, "wrong_app", "application", format!("this login is bound to the app {bound}"))
            }
            RegisterError::Store(s) => s.into(),
        }
    }
}

impl UdsError {
    fn retry_later(code: &'static str, message: &str, wait: std::time::Duration) -> Self {
        let mut e = UdsError::new(StatusCode::TOO_MANY_REQUESTS, code, "", message);
        e.retry_after = Some(retry_after_secs(wait));
        e
    }
}

fn xml(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/xml; charset=utf-8"));
    r
}

impl IntoResponse for UdsError {
    fn into_response(self) -> Response {
        let mut r = xml(self.status, uds::error_xml(self.code, self.field, &self.message));
        if let Some(secs) = self.retry_after {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"pushrelay\""));
        }
        r
    }
}

type UdsResult<T> = Result<T, UdsError>;

/// Path ids → domain values, then Basic auth of exactly that user of the
/// tenant the path names (`default` without a prefix).
async fn authenticate(
    s: &AppState,
    headers: &HeaderMap,
    peer: std::net::IpAddr,
    tenant: Result<RequestedTenant, super::error::ApiError>,
    path: UdsPath,
) -> UdsResult<(Scope, UserId, DevicePkid)> {
    let Ok(RequestedTenant(tenant)) = tenant else {
        return Err(UdsError::new(StatusCode::NOT_FOUND, "not_found", "", "no such route"));
    };
    let scope = tenant.map_or_else(Scope::default_tenant, Scope::tenant);
    let user = UserId::parse(&path.user_id).map_err(|e| UdsError::new(StatusCode::BAD_REQUEST, "invalid_user", "userId", e.message))?;
    let device =
        DevicePkid::parse(&path.device_pkid).map_err(|e| UdsError::new(StatusCode::BAD_REQUEST, "invalid_device", "devicePkid", e.message))?;
    match basic_user(s, headers, peer, &scope, Some(&user)).await {
        Ok(_) => {}
        Err(BasicRefusal::Missing | BasicRefusal::Wrong) => return Err(UdsError::unauthorized()),
        Err(BasicRefusal::Locked(wait)) => {
            return Err(UdsError::retry_later("too_many_failures", "too many failed logins for this user or address; retry later", wait))
        }
        Err(BasicRefusal::Store(e)) => return Err(e.into()),
    }
    // Registrations count per end user (the Basic identity).
    if let Err(wait) = s.limits.registrations.check(&format!("user:{}/{user}", scope.tenant_id())) {
        return Err(UdsError::retry_later("rate_limited", "too many registrations for this user; retry later", wait));
    }
    Ok((scope, user, device))
}

async fn put_token(
    State(s): State<AppState>,
    Peer(peer): Peer,
    tenant: Result<RequestedTenant, super::error::ApiError>,
    Path(path): Path<UdsPath>,
    headers: HeaderMap,
    body: Body,
) -> UdsResult<Response> {
    let (scope, user, device) = authenticate(&s, &headers, peer, tenant, path).await?;
    if !super::body::media_type_is(&headers, &["application/xml", "text/xml"]) {
        return Err(UdsError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "",
            "Content-Type must be application/xml or text/xml",
        ));
    }
    let body = match super::body::read_body(body, uds::MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            return Err(UdsError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", "", format!("body is larger than {} bytes", uds::MAX_BODY_BYTES)))
        }
        Err(BodyError::TooSlow) => {
            return Err(UdsError::new(StatusCode::REQUEST_TIMEOUT, "body_timeout", "", "the request body did not arrive in time"))
        }
    };
    let token = uds::parse_token(&body)?;
    let provider = token.channel.provider();
    match s.registrar.require_credentials(&scope, &token.app, provider).await {
        Ok(()) => {}
        Err(crate::register::RegisterError::Refused(mut problem)) => {
            if problem.code == "no_credentials" {
                problem.message.push_str(&format!(" for {}", token.channel));
            }
            return Err(problem.into());
        }
        Err(other) => return Err(other.into()),
    }
    let reg = token.into_registration(user.clone(), device);
    let done = s.registrar.store(&scope, &user, std::slice::from_ref(&reg), &Default::default()).await?;
    Ok(xml(StatusCode::OK, uds::success_xml(done.written)))
}

async fn delete_token(
    State(s): State<AppState>,
    Peer(peer): Peer,
    tenant: Result<RequestedTenant, super::error::ApiError>,
    Path(path): Path<UdsPath>,
    headers: HeaderMap,
) -> UdsResult<Response> {
    let (scope, user, device) = authenticate(&s, &headers, peer, tenant, path).await?;
    if s.store.delete_device(&scope, &user, &device).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(UdsError::new(StatusCode::NOT_FOUND, "not_found", "", format!("user {user} has no device {device}")))
    }
}

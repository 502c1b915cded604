//! pushrelay's own registration (interface.md §9):
//! `PUT /v1/users/{userId}/devices/{deviceId}` (scope `register`) creates or
//! replaces one device of the user in the caller's tenant, on any channel
//! (APNs, FCM, Huawei Push Kit, Web Push); `DELETE` removes it. Parsing
//! lives in `dialect::native`; the shared steps (credentials, the Web Push
//! host allow-list, the device cap) in `register`.

use super::auth::{Caller, Permission, RequestedTenant};
use super::error::{require_json, ApiError, Result};
use super::state::AppState;
use super::users::user_id;
use crate::dialect::native;
use crate::domain::DevicePkid;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::put;
use axum::{Json, Router};
use serde_json::{json, Value};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/users/{user_id}/devices/{device_id}", put(put_device).delete(delete_device))
}

fn device_id(raw: &str) -> Result<DevicePkid> {
    DevicePkid::parse(raw).map_err(|e| ApiError::bad_request("invalid_device", e.message.replace("devicePkid", "deviceId")))
}

async fn put_device(
    caller: Caller,
    named: RequestedTenant,
    State(s): State<AppState>,
    Path((user, device)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>)> {
    caller.require(Permission::Register)?;
    let scope = caller.scope(&s, &named).await?;
    s.limit_registrations(caller.limit_key())?;
    let (user, device) = (user_id(&user)?, device_id(&device)?);
    require_json(&headers)?;
    let body = super::body::read_body(body, native::MAX_BODY_BYTES).await.map_err(|e| e.into_api(native::MAX_BODY_BYTES))?;
    let parsed = native::parse(&body)?;
    let provider = parsed.channel.provider();
    let app = caller.app_for(Some(parsed.app.clone()))?.expect("an app was named");
    s.registrar.require_credentials(&scope, &app, provider).await?;
    let registration = parsed.into_registration(user.clone(), device.clone());
    let (channel, suffix) = (registration.channel, registration.token.suffix().to_string());
    let done = s.registrar.store(&scope, &user, std::slice::from_ref(&registration), &Default::default()).await?;
    let status = if done.created > 0 { StatusCode::CREATED } else { StatusCode::OK };
    Ok((
        status,
        Json(
            json!({ "user": user.as_str(), "device": device.as_str(), "channel": channel.as_str(), "application": app.as_str(), "token_suffix": suffix }),
        ),
    ))
}

async fn delete_device(
    caller: Caller,
    named: RequestedTenant,
    State(s): State<AppState>,
    Path((user, device)): Path<(String, String)>,
) -> Result<StatusCode> {
    caller.require(Permission::Register)?;
    let scope = caller.scope(&s, &named).await?;
    s.limit_registrations(caller.limit_key())?;
    let (user, device) = (user_id(&user)?, device_id(&device)?);
    if s.store.delete_device(&scope, &user, &device).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("user {user} has no device {device}")))
    }
}

//! `/v1/users/{userId}`: end users (admin) and the operator's device view,
//! in the caller's tenant (`?tenant=` or `"tenant"` for an operator).

use super::auth::{hash_password, Caller, Permission, RequestedTenant};
use super::error::{json_body, ApiError, Result};
use super::state::AppState;
use super::time::rfc3339;
use super::LimitedBody;
use crate::domain::{now_ms, Reach, UserId};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/users/{user_id}", put(put_user).delete(delete_user))
        .route("/v1/users/{user_id}/devices", get(list_devices))
        .route("/v1/devices/stale", get(stale_devices))
}

pub(super) fn user_id(raw: &str) -> Result<UserId> {
    UserId::parse(raw).map_err(|e| ApiError::bad_request("invalid_user", e.message))
}

/// The answer for a user the scope does not have (missing, or another
/// tenant's, or without a device of the key's app: the same words).
pub(super) fn unknown_user(user: &UserId) -> ApiError {
    ApiError::NotFound(format!("unknown user {user}"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserBody {
    password: String,
    tenant: Option<String>,
}

async fn put_user(
    caller: Caller,
    named: RequestedTenant,
    State(s): State<AppState>,
    Path(user): Path<String>,
    headers: HeaderMap,
    LimitedBody(body): LimitedBody,
) -> Result<(StatusCode, Json<Value>)> {
    caller.require(Permission::Admin)?;
    let user = user_id(&user)?;
    let b: UserBody = json_body(&headers, &body)?;
    let scope = caller.scope(&s, &named.with_body(b.tenant.as_deref())?).await?;
    if b.password.is_empty() || b.password.len() > 1024 {
        return Err(ApiError::bad_request("invalid_password", "password must be 1 to 1024 bytes"));
    }
    let hash = tokio::task::spawn_blocking(move || hash_password(&b.password))
        .await
        .map_err(|e| ApiError::Internal(e.into()))?
        .map_err(ApiError::Internal)?;
    let created = s.store.upsert_user(&scope, &user, Some(&hash), now_ms()).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(json!({ "user": user.as_str(), "created": created }))))
}

async fn delete_user(caller: Caller, named: RequestedTenant, State(s): State<AppState>, Path(user): Path<String>) -> Result<StatusCode> {
    caller.require(Permission::Admin)?;
    let scope = caller.scope(&s, &named).await?;
    let user = user_id(&user)?;
    if s.store.delete_user(&scope, &user).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(unknown_user(&user))
    }
}

async fn list_devices(caller: Caller, named: RequestedTenant, State(s): State<AppState>, Path(user): Path<String>) -> Result<Json<Value>> {
    caller.require(Permission::Read)?;
    let scope = caller.scope(&s, &named).await?;
    let user = user_id(&user)?;
    if !s.store.user_exists(&scope, &user).await? {
        return Err(unknown_user(&user));
    }
    let list: Vec<Value> = s
        .store
        .device_summaries(&scope, &user)
        .await?
        .into_iter()
        .map(|d| {
            json!({
                "device": d.device, "channel": d.channel, "application": d.application,
                "dialect": d.dialect, "token_suffix": d.token_suffix, "updated_at": rfc3339(d.updated_at),
            })
        })
        .collect();
    Ok(Json(Value::Array(list)))
}

#[derive(Deserialize)]
struct StaleQuery {
    days: Option<u32>,
    limit: Option<u32>,
}

/// Devices of the caller's tenant that have not registered again for
/// `days` (default `retention.stale_device_days`): reported for the
/// operator, never deleted.
async fn stale_devices(
    caller: Caller,
    named: RequestedTenant,
    State(s): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<StaleQuery>,
) -> Result<Json<Value>> {
    caller.require(Permission::Read)?;
    let scope = caller.scope(&s, &named).await?;
    let days = q.days.unwrap_or(s.settings.retention.stale_device_days);
    if !(1..=3650).contains(&days) {
        return Err(ApiError::bad_request("invalid_days", "days must be between 1 and 3650"));
    }
    let limit = i64::from(q.limit.unwrap_or(1000).clamp(1, 10_000));
    let before = now_ms() - i64::from(days) * 86_400_000;
    let list: Vec<Value> = s
        .store
        .stale_devices(&Reach::of(&scope), before, limit)
        .await?
        .into_iter()
        .map(|d| {
            let (user, d) = (d.user, d.device);
            json!({
                "user": user, "device": d.device, "channel": d.channel, "application": d.application,
                "dialect": d.dialect, "token_suffix": d.token_suffix, "updated_at": rfc3339(d.updated_at),
            })
        })
        .collect();
    Ok(Json(json!({ "days": days, "devices": list })))
}

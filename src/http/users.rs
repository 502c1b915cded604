//! `/v1/users/{userId}`: end users (admin) and the operator's device view.

use super::auth::{hash_password, Caller, Scope};
use super::error::{json_body, ApiError, Result};
use super::state::AppState;
use super::time::rfc3339;
use crate::domain::{now_ms, UserId};
use super::LimitedBody;
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
}

pub(super) fn user_id(raw: &str) -> Result<UserId> {
    UserId::parse(raw).map_err(|e| ApiError::bad_request("invalid_user", e.message))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserBody {
    password: String,
}

async fn put_user(caller: Caller, State(s): State<AppState>, Path(user): Path<String>, headers: HeaderMap, LimitedBody(body): LimitedBody) -> Result<(StatusCode, Json<Value>)> {
    caller.require(Scope::Admin)?;
    let user = user_id(&user)?;
    let b: UserBody = json_body(&headers, &body)?;
    if b.password.is_empty() || b.password.len() > 1024 {
        return Err(ApiError::bad_request("invalid_password", "password must be 1 to 1024 bytes"));
    }
    let hash = tokio::task::spawn_blocking(move || hash_password(&b.password))
        .await
        .map_err(|e| ApiError::Internal(e.into()))?
        .map_err(ApiError::Internal)?;
    let created = s.store.upsert_user(&user, Some(&hash), now_ms()).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(json!({ "user": user.as_str(), "created": created }))))
}

async fn delete_user(caller: Caller, State(s): State<AppState>, Path(user): Path<String>) -> Result<StatusCode> {
    caller.require(Scope::Admin)?;
    let user = user_id(&user)?;
    if s.store.delete_user(&user).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("unknown user {user}")))
    }
}

async fn list_devices(caller: Caller, State(s): State<AppState>, Path(user): Path<String>) -> Result<Json<Value>> {
    caller.require(Scope::Read)?;
    let user = user_id(&user)?;
    if !s.store.user_exists(&user).await? {
        return Err(ApiError::NotFound(format!("unknown user {user}")));
    }
    let list: Vec<Value> = s
        .store
        .device_summaries(&user)
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

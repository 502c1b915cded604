//! `POST /v1/api-keys`, `DELETE /v1/api-keys/{id}` (admin): API keys with
//! scopes. The key is shown once; only its SHA-256 is stored.

use super::auth::{token_hash, Caller, Scope};
use super::error::{json_body, ApiError, Result};
use super::state::AppState;
use super::LimitedBody;
use crate::domain::{now_ms, AppId};
use crate::store::ApiKeyRecord;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{delete, post};
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/api-keys", post(create)).route("/v1/api-keys/{id}", delete(revoke))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    name: String,
    scopes: Vec<String>,
    app: Option<String>,
}

async fn create(caller: Caller, State(s): State<AppState>, headers: HeaderMap, LimitedBody(body): LimitedBody) -> Result<(StatusCode, Json<Value>)> {
    caller.require(Scope::Admin)?;
    let b: NewKey = json_body(&headers, &body)?;
    if b.name.trim().is_empty() || b.name.chars().count() > 128 || b.name.chars().any(char::is_control) {
        return Err(ApiError::bad_request("invalid_name", "name must be 1 to 128 printable characters"));
    }
    if b.scopes.is_empty() {
        return Err(ApiError::bad_request("invalid_scopes", "scopes must name at least one of admin, calls, register, read"));
    }
    let mut scopes = Vec::new();
    for raw in &b.scopes {
        let scope = Scope::parse(raw).ok_or_else(|| ApiError::bad_request("invalid_scopes", format!("unknown scope {raw:?} (admin, calls, register, read)")))?;
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    let app = b.app.as_deref().map(AppId::parse).transpose().map_err(|e| ApiError::bad_request("invalid_app_id", e.message))?;
    let raw: [u8; 32] = rand::random();
    let key = format!("prk_{}", URL_SAFE_NO_PAD.encode(raw));
    let record = ApiKeyRecord {
        id: uuid::Uuid::new_v4().to_string(),
        name: b.name.trim().to_string(),
        scopes: scopes.iter().map(|s| s.as_str().to_string()).collect(),
        app,
    };
    s.store.create_api_key(&record, &hex::encode(token_hash(&key)), now_ms()).await?;
    tracing::info!(id = %record.id, name = %record.name, scopes = ?record.scopes, "API key created");
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": record.id, "key": key, "name": record.name, "scopes": record.scopes, "app": record.app.as_ref().map(|a| a.as_str()) })),
    ))
}

async fn revoke(caller: Caller, State(s): State<AppState>, Path(id): Path<String>) -> Result<StatusCode> {
    caller.require(Scope::Admin)?;
    if s.store.revoke_api_key(&id, now_ms()).await? {
        tracing::info!(id = %id, "API key revoked");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("no live API key {id}")))
    }
}

//! `POST /v1/api-keys`, `DELETE /v1/api-keys/{id}` (admin): API keys with
//! scopes. The key is shown once; only its SHA-256 is stored.

use super::auth::{token_hash, Caller, Permission, RequestedTenant};
use super::error::{json_body, ApiError, Result};
use super::state::AppState;
use super::LimitedBody;
use crate::domain::{now_ms, AppId, Reach, TenantId};
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
    /// Makes a tenant key (acts inside that tenant only).
    tenant: Option<String>,
}

/// `POST /v1/api-keys`: an operator makes operator keys (no `tenant`) and
/// tenant keys; a tenant's admin key makes keys of its own tenant only.
/// An app-bound key is never an admin key, and a tenant key may only be
/// bound to an app its tenant sees.
async fn create(
    caller: Caller,
    named: RequestedTenant,
    State(s): State<AppState>,
    headers: HeaderMap,
    LimitedBody(body): LimitedBody,
) -> Result<(StatusCode, Json<Value>)> {
    caller.require(Permission::Admin)?;
    let b: NewKey = json_body(&headers, &body)?;
    let tenant: Option<TenantId> = match (&caller.tenant, named.with_body(b.tenant.as_deref())?.0) {
        (Some(own), Some(other)) if *own != other => return Err(ApiError::WrongTenant),
        (Some(own), _) => Some(own.clone()),
        (None, Some(t)) => {
            if !t.is_default() && s.store.tenant(&t).await?.is_none() {
                return Err(ApiError::bad_request("unknown_tenant", format!("tenant {t} does not exist")));
            }
            Some(t)
        }
        (None, None) => None,
    };
    if b.name.trim().is_empty() || b.name.chars().count() > 128 || b.name.chars().any(char::is_control) {
        return Err(ApiError::bad_request("invalid_name", "name must be 1 to 128 printable characters"));
    }
    if b.scopes.is_empty() {
        return Err(ApiError::bad_request("invalid_scopes", "scopes must name at least one of admin, calls, register, read"));
    }
    let mut scopes = Vec::new();
    for raw in &b.scopes {
        let scope = Permission::parse(raw)
            .ok_or_else(|| ApiError::bad_request("invalid_scopes", format!("unknown scope {raw:?} (admin, calls, register, read)")))?;
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    let app = b.app.as_deref().map(AppId::parse).transpose().map_err(|e| ApiError::bad_request("invalid_app_id", e.message))?;
    if app.is_some() && scopes.contains(&Permission::Admin) {
        return Err(ApiError::bad_request("invalid_scopes", "a key bound to an app cannot have the scope admin (it administers a whole tenant)"));
    }
    if let (Some(app), Some(t)) = (&app, &tenant) {
        // Another tenant's app is refused exactly as a missing one.
        if !s.store.app_exists(&Reach::of(&crate::domain::Scope::tenant(t.clone())), app).await? {
            return Err(ApiError::bad_request("unknown_application", format!("application {app} is not known to tenant {t}")));
        }
    }
    let raw: [u8; 32] = rand::random();
    let key = format!("prk_{}", URL_SAFE_NO_PAD.encode(raw));
    let record = ApiKeyRecord {
        id: crate::domain::random_uuid().to_string(),
        name: b.name.trim().to_string(),
        scopes: scopes.iter().map(|s| s.as_str().to_string()).collect(),
        app,
        tenant,
    };
    s.store.create_api_key(&record, &hex::encode(token_hash(&key)), now_ms()).await?;
    let tenant = record.tenant.as_ref().map(TenantId::as_str);
    tracing::info!(id = %record.id, name = %record.name, scopes = ?record.scopes, tenant, "API key created");
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": record.id, "key": key, "name": record.name, "scopes": record.scopes,
            "app": record.app.as_ref().map(|a| a.as_str()), "tenant": tenant,
        })),
    ))
}

/// `DELETE /v1/api-keys/{id}`: an operator revokes any key; a tenant's
/// admin key only its tenant's (another tenant's key is 404, as a missing one).
async fn revoke(caller: Caller, named: RequestedTenant, State(s): State<AppState>, Path(id): Path<String>) -> Result<StatusCode> {
    caller.require(Permission::Admin)?;
    let reach = caller.reach(&s, &named).await?;
    if s.store.revoke_api_key(&reach, &id, now_ms()).await? {
        tracing::info!(id = %id, "API key revoked");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("no live API key {id}")))
    }
}

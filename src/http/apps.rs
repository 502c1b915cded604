//! `/v1/apps/{app_id}/…`: provider credentials per application (admin).

use super::auth::{Caller, Scope};
use super::error::{require_json, ApiError, Result};
use super::state::AppState;
use super::time::rfc3339;
use crate::domain::{now_ms, ApnsCredentials, AppId, CredentialKind, FcmCredentials};
use super::LimitedBody;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde_json::{json, Value};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/apps/{app_id}", get(get_app))
        .route("/v1/apps/{app_id}/apns", put(put_apns).delete(delete_apns))
        .route("/v1/apps/{app_id}/fcm", put(put_fcm).delete(delete_fcm))
}

fn app_id(raw: &str) -> Result<AppId> {
    AppId::parse(raw).map_err(|e| ApiError::bad_request("invalid_app_id", e.message))
}

async fn put_apns(caller: Caller, State(s): State<AppState>, Path(app): Path<String>, headers: HeaderMap, LimitedBody(body): LimitedBody) -> Result<Json<Value>> {
    caller.require(Scope::Admin)?;
    let app = app_id(&app)?;
    require_json(&headers)?;
    // Parsing signs a probe JWT / loads the certificate: keep it off the runtime.
    let creds = tokio::task::spawn_blocking(move || ApnsCredentials::parse_admin_json(&body))
        .await
        .map_err(|e| ApiError::Internal(e.into()))??;
    let summary = creds.summary();
    s.store.put_credentials(&app, CredentialKind::Apns, &summary, &creds.to_stored(), Some(creds.bundle_id.as_str()), now_ms()).await?;
    tracing::info!(app = %app, auth = %summary["auth"], "APNs credentials stored");
    app_view(&s, &app).await
}

async fn put_fcm(caller: Caller, State(s): State<AppState>, Path(app): Path<String>, headers: HeaderMap, LimitedBody(body): LimitedBody) -> Result<Json<Value>> {
    caller.require(Scope::Admin)?;
    let app = app_id(&app)?;
    require_json(&headers)?;
    let creds = tokio::task::spawn_blocking(move || FcmCredentials::parse_admin_json(&body))
        .await
        .map_err(|e| ApiError::Internal(e.into()))??;
    let summary = creds.summary();
    s.store.put_credentials(&app, CredentialKind::Fcm, &summary, &creds.to_stored(), Some(&creds.project_id), now_ms()).await?;
    tracing::info!(app = %app, project = %creds.project_id, "FCM credentials stored");
    app_view(&s, &app).await
}

async fn delete_provider(s: &AppState, app: &str, provider: CredentialKind) -> Result<StatusCode> {
    let app = app_id(app)?;
    // Idempotent: deleting what is not there is still 204.
    s.store.delete_credentials(&app, provider).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_apns(caller: Caller, State(s): State<AppState>, Path(app): Path<String>) -> Result<StatusCode> {
    caller.require(Scope::Admin)?;
    delete_provider(&s, &app, CredentialKind::Apns).await
}

async fn delete_fcm(caller: Caller, State(s): State<AppState>, Path(app): Path<String>) -> Result<StatusCode> {
    caller.require(Scope::Admin)?;
    delete_provider(&s, &app, CredentialKind::Fcm).await
}

fn with_time(mut summary: Value, ms: i64) -> Value {
    summary["updated_at"] = json!(rfc3339(ms));
    summary
}

async fn get_app(caller: Caller, State(s): State<AppState>, Path(app): Path<String>) -> Result<Json<Value>> {
    caller.require(Scope::Read)?;
    let app = app_id(&app)?;
    app_view(&s, &app).await
}

/// The app summary (no secrets), as GET and both PUTs answer.
async fn app_view(s: &AppState, app: &AppId) -> Result<Json<Value>> {
    let Some(creds) = s.store.app_summary(app).await? else {
        return Err(ApiError::NotFound(format!("unknown app {app}")));
    };
    let mut out = json!({ "app_id": app.as_str() });
    for (provider, summary, updated) in creds {
        out[provider] = with_time(summary, updated);
    }
    Ok(Json(out))
}

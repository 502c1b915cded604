//! `/v1/apps/{app_id}/…`: provider credentials per application (admin).
//!
//! Apps are shared (made by an operator) or owned by one tenant (made by
//! its admin key, or by an operator with `?tenant=`). A tenant sees the
//! shared apps and its own; to it another tenant's app does not exist
//! (404, as a missing one), and a shared app's credentials are the
//! operator's (409 `app_taken`). Callbacks are per tenant and app.

use super::auth::{Caller, Permission, RequestedTenant};
use super::error::json_body;
use super::error::{require_json, ApiError, Result};
use super::state::AppState;
use super::time::rfc3339;
use super::LimitedBody;
use crate::domain::{now_ms, AppId, Channel, DeviceToken, Provider, Reach};
use crate::payload::TestKind;
use crate::provider::Attempt;
use crate::secret::Secret;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

pub fn router() -> Router<AppState> {
    let mut r = Router::new()
        .route("/v1/apps/{app_id}", get(get_app))
        .route("/v1/apps/{app_id}/test-push", post(test_push))
        .route("/v1/apps/{app_id}/callback", put(put_callback).delete(delete_callback));
    // One pair of routes per provider, from the one list.
    for provider in Provider::ALL {
        r = r.route(
            &credentials_path(provider),
            put(move |caller: Caller, named: RequestedTenant, s: State<AppState>, app: Path<String>, headers: HeaderMap, body: LimitedBody| {
                put_credentials(provider, caller, named, s, app, headers, body)
            })
            .delete(move |caller: Caller, named: RequestedTenant, State(s): State<AppState>, Path(app): Path<String>| async move {
                delete_credentials(provider, caller, named, &s, &app).await
            }),
        );
    }
    r
}

/// `/v1/apps/{app_id}/<provider>`: where a provider's credentials are set.
pub(super) fn credentials_path(provider: Provider) -> String {
    format!("/v1/apps/{{app_id}}/{}", provider.as_str())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallbackBody {
    url: String,
    secret: String,
}

/// `PUT /v1/apps/{app_id}/callback` (admin): final call reports of the
/// caller's tenant's devices of this app are POSTed to `url`, signed with
/// `secret`. Any http(s) URL is accepted (receivers usually live on
/// private networks).
async fn put_callback(
    caller: Caller,
    named: RequestedTenant,
    State(s): State<AppState>,
    Path(app): Path<String>,
    headers: HeaderMap,
    LimitedBody(body): LimitedBody,
) -> Result<Json<Value>> {
    caller.require(Permission::Admin)?;
    let scope = caller.scope(&s, &named).await?;
    let app = app_id(&app)?;
    let b: CallbackBody = json_body(&headers, &body)?;
    let url = reqwest::Url::parse(b.url.trim()).map_err(|_| ApiError::bad_request("invalid_url", "url must be an absolute http(s) URL"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() || b.url.len() > 2048 {
        return Err(ApiError::bad_request("invalid_url", "url must be an http:// or https:// URL (at most 2048 bytes)"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ApiError::bad_request("invalid_url", "url must not carry credentials: the body is signed with secret instead"));
    }
    if b.secret.len() < 16 || b.secret.len() > 1024 {
        return Err(ApiError::bad_request("invalid_field", "secret must be 16 to 1024 bytes"));
    }
    let summary = json!({ "url": url.as_str() });
    s.store.put_callback(&scope, &app, &summary, &Secret::new(b.secret), now_ms()).await?;
    s.dispatcher.forget_callback_apps();
    tracing::info!(tenant = %scope.tenant_id(), app = %app, "delivery callback set");
    app_view(&s, &Reach::of(&scope), &app).await
}

async fn delete_callback(caller: Caller, named: RequestedTenant, State(s): State<AppState>, Path(app): Path<String>) -> Result<StatusCode> {
    caller.require(Permission::Admin)?;
    let scope = caller.scope(&s, &named).await?;
    let app = app_id(&app)?;
    if !s.store.app_exists(&Reach::of(&scope), &app).await? {
        return Err(unknown_app(&app));
    }
    // Idempotent: removing a callback that is not set is still 204.
    s.store.delete_callback(&scope, &app).await?;
    s.dispatcher.forget_callback_apps();
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestPushBody {
    token: String,
    channel: String,
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// `POST /v1/apps/{app_id}/test-push` (admin): one push to a token with the
/// app's credentials, answered with the provider's own verdict. Stores
/// nothing but the credential health the answer shows.
async fn test_push(
    caller: Caller,
    named: RequestedTenant,
    State(s): State<AppState>,
    Path(app): Path<String>,
    headers: HeaderMap,
    LimitedBody(body): LimitedBody,
) -> Result<Json<Value>> {
    caller.require(Permission::Admin)?;
    let reach = caller.reach(&s, &named).await?;
    let app = app_id(&app)?;
    let b: TestPushBody = json_body(&headers, &body)?;
    let channel = Channel::parse_any(&b.channel, "channel")?;
    let token = DeviceToken::for_channel(channel, b.token.trim())
        .map_err(|e| ApiError::bad_request("invalid_token", e.message.replace("pushNotifyToken", "token")))?;
    let kind = match b.kind.as_deref() {
        None | Some("voip") => TestKind::Voip,
        Some("alert") => TestKind::Alert,
        Some(_) => return Err(ApiError::bad_request("invalid_field", "type must be voip or alert")),
    };
    if !s.store.app_exists(&reach, &app).await? {
        return Err(unknown_app(&app));
    }
    if !s.store.has_credentials(&reach, &app, channel.provider().into()).await? {
        return Err(ApiError::bad_request("no_credentials", format!("application {app} has no {} credentials", channel.provider().as_str())));
    }
    let attempt = s.dispatcher.test_push(&reach, &app, channel, &token, kind).await;
    tracing::info!(app = %app, channel = channel.as_str(), token = token.suffix(), outcome = %test_push_answer(&attempt)["outcome"], "test push");
    Ok(Json(test_push_answer(&attempt)))
}

/// The answer of a test push: the relay's verdict and the provider's own
/// status and reason.
pub fn test_push_answer(attempt: &Attempt) -> Value {
    let outcome = match attempt {
        Attempt::Delivered { .. } => "delivered",
        // 410 / BadDeviceToken / UNREGISTERED: reported, nothing removed.
        Attempt::TokenGone { .. } => "token_invalid",
        Attempt::Retry { .. } => "unavailable",
        Attempt::Failed { .. } => "failed",
    };
    let mut v = json!({ "outcome": outcome, "provider_status": attempt.status() });
    if let Some(r) = attempt.reason() {
        v["reason"] = json!(r);
    }
    v
}

fn app_id(raw: &str) -> Result<AppId> {
    AppId::parse(raw).map_err(|e| ApiError::bad_request("invalid_app_id", e.message))
}

/// An app the caller does not see (missing, or another tenant's: the same answer).
fn unknown_app(app: &AppId) -> ApiError {
    ApiError::NotFound(format!("unknown app {app}"))
}

/// `PUT /v1/apps/{app_id}/<provider>`: the provider parses the admin JSON
/// and proves the credentials usable (400 naming the field otherwise),
/// then they replace the app's (creating the app if needed).
async fn put_credentials(
    provider: Provider,
    caller: Caller,
    named: RequestedTenant,
    State(s): State<AppState>,
    Path(app): Path<String>,
    headers: HeaderMap,
    LimitedBody(body): LimitedBody,
) -> Result<Json<Value>> {
    caller.require(Permission::Admin)?;
    let reach = caller.reach(&s, &named).await?;
    let app = app_id(&app)?;
    require_json(&headers)?;
    let client = s.dispatcher.providers().get(provider).cloned().ok_or_else(|| ApiError::NotFound("no such route".into()))?;
    // Parsing signs a probe JWT / loads the certificate: keep it off the runtime.
    let form = tokio::task::spawn_blocking(move || client.credentials_from_admin(&body)).await.map_err(|e| ApiError::Internal(e.into()))??;
    s.store.put_credentials(&reach, &app, provider.into(), &form.summary, &form.secret, form.lookup_key.as_deref(), now_ms()).await?;
    s.dispatcher.forget_credentials(&app);
    tracing::info!(app = %app, provider = provider.as_str(), "credentials stored");
    if let Some(t) = form.not_after {
        metrics::gauge!(crate::telemetry::CREDENTIAL_EXPIRY, "app" => app.as_str().to_string(), "provider" => provider.as_str()).set(t as f64);
    }
    app_view(&s, &reach, &app).await
}

/// `DELETE /v1/apps/{app}/<provider>`: 204 (also when there were none); an
/// app the caller does not see is 404.
async fn delete_credentials(provider: Provider, caller: Caller, named: RequestedTenant, s: &AppState, app: &str) -> Result<StatusCode> {
    caller.require(Permission::Admin)?;
    let reach = caller.reach(s, &named).await?;
    let app = app_id(app)?;
    s.store.delete_credentials(&reach, &app, provider.into()).await?;
    s.dispatcher.forget_credentials(&app);
    Ok(StatusCode::NO_CONTENT)
}

fn with_time(mut summary: Value, ms: i64) -> Value {
    summary["updated_at"] = json!(rfc3339(ms));
    summary
}

async fn get_app(caller: Caller, named: RequestedTenant, State(s): State<AppState>, Path(app): Path<String>) -> Result<Json<Value>> {
    caller.require(Permission::Read)?;
    let reach = caller.reach(&s, &named).await?;
    let app = app_id(&app)?;
    app_view(&s, &reach, &app).await
}

/// The app summary (no secrets), as GET and the PUTs answer: its owner
/// (`"shared"` or the tenant), and per provider the credentials and their
/// health; the callback of the reach's tenant, if set.
async fn app_view(s: &AppState, reach: &Reach, app: &AppId) -> Result<Json<Value>> {
    let (Some(owner), Some(creds)) = (s.store.visible_app(reach, app).await?, s.store.app_summary(reach, app).await?) else {
        return Err(unknown_app(app));
    };
    let mut out = json!({ "app_id": app.as_str(), "owner": owner.as_ref().map_or("shared", |t| t.as_str()) });
    let health = s.store.credential_health(reach, app).await?;
    for (provider, mut summary, updated) in creds {
        if let Ok(p) = Provider::parse(&provider) {
            let h = health.iter().find(|(hp, _)| *hp == p).map(|(_, h)| h.clone()).unwrap_or_default();
            summary["health"] = health_json(&h, summary.get("notAfter").and_then(Value::as_i64));
        }
        out[provider] = with_time(summary, updated);
    }
    let callback_tenant = reach.tenant().cloned().unwrap_or_else(crate::domain::TenantId::default_tenant);
    if let Some(cb) = s.store.callback(&crate::domain::Scope::tenant(callback_tenant), app).await? {
        out["callback"] = with_time(cb.summary, cb.updated_at);
    }
    Ok(Json(out))
}

/// `"health"` of one provider's credentials (interface.md §7).
pub(super) fn health_json(h: &crate::store::CredentialHealth, not_after_s: Option<i64>) -> Value {
    let mut v = json!({ "state": h.state().as_str() });
    if let Some(t) = h.last_success_at {
        v["last_success_at"] = json!(rfc3339(t));
    }
    if let Some(t) = h.last_failure_at {
        v["last_failure_at"] = json!(rfc3339(t));
    }
    if let Some(r) = &h.last_reason {
        v["last_reason"] = json!(r);
    }
    if let Some(t) = not_after_s {
        v["expires_at"] = json!(rfc3339(t * 1000));
    }
    v
}

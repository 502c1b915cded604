//! Spark/Webex dialect (seeds/000): `POST /register`, `DELETE
//! /register/{device_token}`, `POST /webhook`, and the webhook secret
//! `PUT /v1/apps/{app_id}/webex`. Parsing lives in `dialect::spark`.

use super::auth::{Caller, Scope};
use super::error::{json_body, require_json, ApiError, Result};
use super::state::AppState;
use super::LimitedBody;
use crate::dialect::spark::{self, WebhookEvent};
use crate::dispatch::DispatchError;
use crate::domain::{now_ms, AppId, CallEvent, CallId, DevicePkid, Dialect, MessageToken, Provider, PushId, Registration, RingWindow};
use crate::secret::Secret;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{delete, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/register", post(register))
        .route("/register/{device_token}", delete(unregister))
        .route("/webhook", post(webhook))
        .route("/v1/apps/{app_id}/webex", put(put_webex))
}

#[derive(Deserialize)]
pub(super) struct AppQuery {
    app: Option<String>,
}

/// `?app=` names the app whose credentials the device uses.
pub(super) fn app_from_query(q: &AppQuery) -> Result<AppId> {
    let raw = q.app.as_deref().ok_or_else(|| ApiError::bad_request("missing_app", "the app is chosen with ?app=<app_id>"))?;
    AppId::parse(raw).map_err(|e| ApiError::bad_request("invalid_app_id", e.message))
}


async fn register(caller: Caller, State(s): State<AppState>, Query(q): Query<AppQuery>, headers: HeaderMap, LimitedBody(body): LimitedBody) -> Result<Json<Value>> {
    caller.require(Scope::Register)?;
    s.limit_registrations(caller.limit_key())?;
    require_json(&headers)?;
    let app = match (&q.app, &caller.app) {
        (None, Some(app)) => app.clone(),
        _ => app_from_query(&q)?,
    };
    let reg = spark::parse_register(&body)?;
    s.require_credentials(&app, Provider::Apns).await?;
    let channel = reg.channel();
    let device = DevicePkid::parse(reg.voip_token.as_str()).map_err(|e| ApiError::bad_request("invalid_token", e.message))?;
    let registration = Registration {
        user: reg.person.clone(),
        device: device.clone(),
        dialect: Dialect::Spark,
        channel,
        token: reg.voip_token.clone(),
        key: None,
        app: app.clone(),
        payload_version: None,
        msg: reg.msg_token.clone().map(|token| MessageToken { app: app.clone(), channel, token }),
        sip: None,
    };
    let now = now_ms();
    s.store.ensure_user(&reg.person, now).await?;
    s.store.upsert_device(&registration, now).await?;
    metrics::counter!(crate::telemetry::REGISTRATIONS, "dialect" => "spark").increment(1);
    tracing::info!(user = %reg.person, channel = %channel, token = reg.voip_token.suffix(), "Spark device registered");
    Ok(Json(json!({ "user": reg.person.as_str(), "device": device.as_str(), "channel": channel.as_str() })))
}

async fn unregister(caller: Caller, State(s): State<AppState>, Path(token): Path<String>) -> Result<StatusCode> {
    caller.require(Scope::Register)?;
    s.limit_registrations(caller.limit_key())?;
    let token = token.to_ascii_lowercase();
    if token.is_empty() || token.len() > 200 || !token.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(ApiError::bad_request("invalid_token", "device_token must be the APNs token in hex"));
    }
    match s.store.delete_devices_by_token(Dialect::Spark, &token).await? {
        0 => Err(ApiError::NotFound("no Spark device has that token".into())),
        _ => Ok(StatusCode::NO_CONTENT),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct WebexBody {
    webhook_secret: String,
}

async fn put_webex(caller: Caller, State(s): State<AppState>, Path(app): Path<String>, headers: HeaderMap, LimitedBody(body): LimitedBody) -> Result<Json<Value>> {
    caller.require(Scope::Admin)?;
    let app = AppId::parse(&app).map_err(|e| ApiError::bad_request("invalid_app_id", e.message))?;
    let b: WebexBody = json_body(&headers, &body)?;
    if b.webhook_secret.is_empty() || b.webhook_secret.len() > 1024 {
        return Err(ApiError::bad_request("invalid_field", "webhookSecret must be 1 to 1024 bytes"));
    }
    let summary = json!({ "webhookSecret": "set" });
    s.store.put_credentials(&app, "webex", &summary, &Secret::new(b.webhook_secret), None, now_ms()).await?;
    Ok(Json(json!({ "app_id": app.as_str(), "webex": summary })))
}

/// A Webex webhook delivery. Authenticated by `X-Spark-Signature` when the
/// app has a webhook secret (Webex cannot send a bearer token).
async fn webhook(State(s): State<AppState>, Query(q): Query<AppQuery>, headers: HeaderMap, LimitedBody(body): LimitedBody) -> Result<Json<Value>> {
    let app = app_from_query(&q)?;
    if let Some(secret) = s.store.credentials(&app, "webex").await? {
        let sig = headers.get("x-spark-signature").and_then(|v| v.to_str().ok());
        if spark::verify_signature(secret.secret.expose().as_bytes(), &body, sig).is_err() {
            tracing::warn!(app = %app, "webhook with a missing or wrong X-Spark-Signature refused");
            return Err(ApiError::Unauthorized);
        }
    }
    match spark::parse_webhook(&body)? {
        WebhookEvent::Ignored { resource, event } => Ok(Json(json!({ "ignored": true, "resource": resource, "event": event }))),
        WebhookEvent::IncomingCall { person, call_id, actor_id, .. } => {
            let event = CallEvent {
                call_id: CallId::new(),
                user: person,
                device: None,
                push_id: PushId::parse(&call_id)?,
                display_name: String::new(),
                display_number: String::new(),
                hunt_pilot_dn: String::new(),
                actor: actor_id,
                ring: RingWindow::starting_now(now_ms(), s.settings.calls.ring_seconds),
            };
            // Webex wants a quick 2xx (it retries slow webhooks): answer at
            // once; the pushes run on and their report is at GET /v1/calls/{call_id}.
            if s.store.devices_for(&event.user, None).await?.is_empty() {
                return Ok(Json(json!({ "ignored": true, "reason": "the person has no devices" })));
            }
            let call_id = event.call_id.clone();
            let dispatcher = s.dispatcher.clone();
            tokio::spawn(async move {
                match dispatcher.run(&event).await {
                    Ok(_) | Err(DispatchError::NoDevices) => {}
                    Err(DispatchError::Store(e)) => tracing::error!(error = %e, "webhook call could not be stored"),
                }
            });
            Ok(Json(json!({ "call_id": call_id.as_str() })))
        }
    }
}

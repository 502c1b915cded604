//! Spark/Webex dialect (seeds/000): `POST /register`, `DELETE
//! /register/{device_token}`, `POST /webhook`, and the webhook secret
//! `PUT /v1/apps/{app_id}/webex`. Parsing lives in `dialect::spark`.
//!
//! Webhooks are the one route without a bearer: each must carry a valid
//! `X-Spark-Signature` under its app's secret (no secret, no webhook), a
//! replayed or stale envelope rings nothing, and a call event wakes only
//! the person's devices registered through `/register` for that app.

use super::auth::{require_tenant, Caller, Peer, Permission, RequestedTenant};
use super::error::{json_body, require_json, ApiError, Result};
use super::limit::FailureKey;
use super::state::AppState;
use super::time::rfc3339;
use super::LimitedBody;
use crate::dialect::spark::{self, WebhookEvent};
use crate::domain::{now_ms, AppId, CallEvent, CredentialKind, Dialect, Email, MessageNote, Provider, PushId, Reach, RingWindow, Scope};
use crate::secret::Secret;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{delete, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

/// Phone-facing (also served under `/t/{tenant}`): registrations and webhooks.
pub fn phone_router() -> Router<AppState> {
    Router::new()
        .route("/register", post(register).get(lookup))
        .route("/register/{device_token}", delete(unregister))
        .route("/webhook", post(webhook))
}

/// The app's webhook secret (admin).
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/apps/{app_id}/webex", put(put_webex))
}

/// `DELETE /register/{device_token}`'s path (the tenant prefix, if any, is
/// read by `RequestedTenant`).
#[derive(Deserialize)]
struct TokenPath {
    device_token: String,
}

#[derive(Deserialize)]
pub(super) struct AppQuery {
    app: Option<String>,
}

impl AppQuery {
    /// `?app=` as an app id, if given.
    pub(super) fn app(&self) -> Result<Option<AppId>> {
        self.app.as_deref().map(|raw| AppId::parse(raw).map_err(|e| ApiError::bad_request("invalid_app_id", e.message))).transpose()
    }
}

/// `?app=`, required.
fn app_from_query(q: &AppQuery) -> Result<AppId> {
    q.app()?.ok_or_else(|| ApiError::bad_request("missing_app", "the app is chosen with ?app=<app_id>"))
}

async fn register(
    caller: Caller,
    named: RequestedTenant,
    State(s): State<AppState>,
    Query(q): Query<AppQuery>,
    headers: HeaderMap,
    LimitedBody(body): LimitedBody,
) -> Result<Json<Value>> {
    caller.require(Permission::Register)?;
    let scope = caller.scope(&s, &named).await?;
    s.limit_registrations(caller.limit_key())?;
    require_json(&headers)?;
    let app = caller.app_for(q.app()?)?.ok_or_else(|| ApiError::bad_request("missing_app", "the app is chosen with ?app=<app_id>"))?;
    let reg = spark::parse_register(&body)?;
    s.registrar.require_credentials(&scope, &app, Provider::Apns).await?;
    let registration = reg.into_registration(app);
    let (person, device, channel) = (registration.user.clone(), registration.device.clone(), registration.channel);
    s.registrar.store(&scope, &person, std::slice::from_ref(&registration), &Default::default()).await?;
    Ok(Json(json!({ "user": person.as_str(), "device": device.as_str(), "channel": channel.as_str() })))
}

#[derive(Deserialize)]
struct LookupQuery {
    email: Option<String>,
    app: Option<String>,
}

/// Most registrations one lookup returns.
const MAX_LOOKUP: u32 = 100;

/// `GET /register?email=` (seeds/000's lookup): that address's Webex
/// registrations, token suffixes only. A key bound to an app sees only
/// that app's; `?app=` narrows an unbound key's answer.
async fn lookup(caller: Caller, named: RequestedTenant, State(s): State<AppState>, Query(q): Query<LookupQuery>) -> Result<Json<Value>> {
    caller.require(Permission::Read)?;
    let scope = caller.scope(&s, &named).await?;
    let email = q
        .email
        .as_deref()
        .filter(|e| !e.is_empty())
        .ok_or_else(|| ApiError::bad_request("missing_field", "email is required: GET /register?email=<address>"))?;
    let email = Email::parse(email)?;
    let app = AppQuery { app: q.app }.app()?;
    let app = caller.app_for(app)?;
    let devices = s.store.spark_devices_by_email(&scope, &email, app.as_ref(), MAX_LOOKUP).await?;
    let list: Vec<Value> = devices
        .iter()
        .map(|d| {
            let r = &d.registration;
            json!({
                "personId": r.user.as_str(), "device": r.device.as_str(), "channel": r.channel.as_str(),
                "application": r.app.as_str(), "token_suffix": r.token.suffix(), "updated_at": rfc3339(d.updated_at),
            })
        })
        .collect();
    Ok(Json(Value::Array(list)))
}

async fn unregister(caller: Caller, named: RequestedTenant, State(s): State<AppState>, Path(path): Path<TokenPath>) -> Result<StatusCode> {
    caller.require(Permission::Register)?;
    let scope = caller.scope(&s, &named).await?;
    s.limit_registrations(caller.limit_key())?;
    let token = path.device_token.to_ascii_lowercase();
    if token.is_empty() || token.len() > 200 || !token.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(ApiError::bad_request("invalid_token", "device_token must be the APNs token in hex"));
    }
    // Only the scope's registrations: an app-bound key removes only its own app's.
    match s.store.delete_devices_by_token(&scope, Dialect::Spark, &token).await? {
        0 => Err(ApiError::NotFound("no Spark device has that token".into())),
        _ => Ok(StatusCode::NO_CONTENT),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct WebexBody {
    webhook_secret: String,
}

async fn put_webex(
    caller: Caller,
    named: RequestedTenant,
    State(s): State<AppState>,
    Path(app): Path<String>,
    headers: HeaderMap,
    LimitedBody(body): LimitedBody,
) -> Result<Json<Value>> {
    caller.require(Permission::Admin)?;
    let reach = caller.reach(&s, &named).await?;
    let app = AppId::parse(&app).map_err(|e| ApiError::bad_request("invalid_app_id", e.message))?;
    let b: WebexBody = json_body(&headers, &body)?;
    if b.webhook_secret.is_empty() || b.webhook_secret.len() > 1024 {
        return Err(ApiError::bad_request("invalid_field", "webhookSecret must be 1 to 1024 bytes"));
    }
    let summary = json!({ "webhookSecret": "set" });
    s.store.put_credentials(&reach, &app, CredentialKind::Webex, &summary, &Secret::new(b.webhook_secret), None, now_ms()).await?;
    Ok(Json(json!({ "app_id": app.as_str(), "webex": summary })))
}

fn refused(reason: &'static str) {
    metrics::counter!(crate::telemetry::WEBHOOKS_REFUSED, "reason" => reason).increment(1);
}

/// A Webex webhook delivery (Webex cannot send a bearer token): the app
/// must exist (404) and have a webhook secret (401), the signature must
/// match (401, counted as a failed authentication of the source address),
/// then the per-app rate, staleness and replay checks, in that order.
async fn webhook(
    State(s): State<AppState>,
    Peer(peer): Peer,
    named: RequestedTenant,
    Query(q): Query<AppQuery>,
    headers: HeaderMap,
    LimitedBody(body): LimitedBody,
) -> Result<Json<Value>> {
    let app = app_from_query(&q)?;
    let from = FailureKey::address(peer);
    if let Some(wait) = s.limits.auth_failures.locked_for(&from) {
        return Err(ApiError::TooManyFailures(wait));
    }
    // The tenant of the target URL (`/t/{tenant}/webhook`), else `default`;
    // an unknown tenant is answered as an unknown app.
    let scope = match named.0 {
        Some(t) => {
            require_tenant(&s, &t).await.map_err(|_| ApiError::NotFound(format!("application {app} is not known to this relay")))?;
            Scope::tenant(t)
        }
        None => Scope::default_tenant(),
    };
    let reach = Reach::of(&scope);
    let Some(secret) = s.store.credentials(&reach, &app, CredentialKind::Webex).await? else {
        if !s.store.app_exists(&reach, &app).await? {
            return Err(ApiError::NotFound(format!("application {app} is not known to this relay")));
        }
        return Err(ApiError::UnauthorizedBecause(format!(
            "application {app} has no webhook secret, so no webhook can be verified; set one with PUT /v1/apps/{app}/webex"
        )));
    };
    let sig = headers.get("x-spark-signature").and_then(|v| v.to_str().ok());
    if spark::verify_signature(secret.secret.expose().as_bytes(), &body, sig).is_err() {
        s.limits.auth_failures.failed(&from);
        refused("bad_signature");
        tracing::warn!(app = %app, "webhook with a missing or wrong X-Spark-Signature refused");
        return Err(ApiError::UnauthorizedBecause("X-Spark-Signature is missing or does not match the body".into()));
    }
    s.limits.webhooks.check(app.as_str()).map_err(ApiError::RateLimited)?;
    let hook = spark::parse_webhook(&body)?;
    let now = now_ms();
    if hook.is_stale(now) {
        refused("stale");
        return Ok(Json(json!({ "ignored": "stale" })));
    }
    match hook.event {
        WebhookEvent::Ignored { resource, event } => Ok(Json(json!({ "ignored": true, "resource": resource, "event": event }))),
        WebhookEvent::OwnMessage => Ok(Json(json!({ "ignored": true, "reason": "the webhook's owner sent this message" }))),
        WebhookEvent::Message { owner, sender_email, message_id } => {
            if !s.store.remember_webhook(&app, &hook.replay_key, now).await? {
                refused("duplicate");
                return Ok(Json(json!({ "duplicate": true })));
            }
            // Only this app's Webex registrations of the owner, and only
            // those with a message token: a message is never a VoIP push.
            let mut devices = s.store.devices_for(&scope, &owner, None).await?;
            devices.retain(|_, _, dialect, device_app| dialect == Dialect::Spark && *device_app == app);
            let devices: Vec<_> = devices.ready.into_iter().filter(|d| d.registration.msg().is_some()).collect();
            if devices.is_empty() {
                return Ok(Json(json!({ "ignored": true, "reason": "the owner has no message token registered for this app" })));
            }
            let note = MessageNote { id: message_id, from: sender_email };
            let dispatcher = s.dispatcher.clone();
            let count = devices.len();
            s.dispatcher.spawn(async move {
                dispatcher.notify(&scope, &note, &devices).await;
            });
            Ok(Json(json!({ "notified": count })))
        }
        WebhookEvent::IncomingCall { person, call_id, actor_id, .. } => {
            if !s.store.remember_webhook(&app, &hook.replay_key, now).await? {
                refused("duplicate");
                return Ok(Json(json!({ "duplicate": true })));
            }
            // Only this app's Spark registrations of the person.
            let mut devices = s.store.devices_for(&scope, &person, None).await?;
            devices.retain(|_, _, dialect, device_app| dialect == Dialect::Spark && *device_app == app);
            if devices.is_empty() {
                return Ok(Json(json!({ "ignored": true, "reason": "the person has no devices registered for this app" })));
            }
            let mut event = CallEvent::new(person, PushId::parse(&call_id)?, RingWindow::starting_now(now, s.settings.calls.ring_seconds));
            event.actor = actor_id;
            // Webex wants a quick 2xx (it retries slow webhooks): answer at
            // once; the pushes run on (tracked: shutdown waits for them) and
            // their report is at GET /v1/calls/{call_id}.
            let call_id = event.call_id.clone();
            let dispatcher = s.dispatcher.clone();
            s.dispatcher.spawn(async move {
                if let Err(e) = dispatcher.run_on_and_save(&event, &devices).await {
                    tracing::error!(error = %e, "webhook call could not be stored");
                }
            });
            Ok(Json(json!({ "call_id": call_id.as_str() })))
        }
    }
}

//! SIP push data (seeds/001, seeds/004, RFC 8599): `POST /sip/register`
//! takes a raw REGISTER as a proxy forwards it after a successful save;
//! `POST /sip/wake` pushes to an AOR's devices and holds the request until
//! the device re-REGISTERs (Kazoo-style push-and-wait) or the timeout;
//! `POST /sip/cancel` ends a wake whose caller hung up and sends the cancel
//! push. Parsing lives in `dialect::sip`; the wait in `wake`.

use super::auth::{Caller, Permission, RequestedTenant};
use super::error::{json_body, ApiError, Result};
use super::state::AppState;
use super::LimitedBody;
use crate::dialect::sip::{self, PushData};
use crate::domain::{now_ms, AppId, CallEvent, DeviceSet, Dialect, Outcome, Provider, PushId, RingWindow, Scope, TenantId, UserId};
use crate::store::SipRemovals;
use crate::wake::{WakeOutcome, Wakeup};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::Duration;

pub fn router() -> Router<AppState> {
    Router::new().route("/sip/register", post(register)).route("/sip/wake", post(wake)).route("/sip/cancel", post(cancel))
}

/// Longest `/sip/wake` hold.
pub const MAX_WAKE_MS: u64 = 60_000;
pub const DEFAULT_WAKE_MS: u64 = 20_000;

/// The tenant of an AOR's domain: the tenant whose `sip_domains` hold it
/// (any case), else `default`; checked against the caller (a tenant key
/// naming another tenant's AOR → 403 `wrong_tenant`), and narrowed to the
/// key's app.
async fn aor_scope(s: &AppState, caller: &Caller, domain: &str) -> Result<Scope> {
    let tenant: TenantId = s.store.tenant_for_domain(domain).await?;
    caller.scope(s, &RequestedTenant(Some(tenant))).await
}

/// The app a piece of push data is for (resolved by the Registrar among
/// the apps the scope's tenant sees; a key bound to another app → 403).
async fn app_for(s: &AppState, scope: &Scope, data: &PushData) -> Result<AppId> {
    let (provider, hint) = sip::app_hint(data);
    Ok(match (data, hint) {
        // An FCM token in X-MPUSH: the iOS app's Firebase credentials.
        (PushData::Mpush { bundle, .. }, _) if provider != Provider::Apns => {
            s.registrar.app_of_bundle_with(scope, bundle.as_str(), provider).await?.ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_token",
                    format!("X-MPUSH: the token is not an APNs (hex) token, and no app with id or bundle id {bundle} has FCM credentials to send it through Firebase"),
                )
            })?
        }
        // Kazoo names the app itself: the key's binding first, then its credentials.
        (PushData::Kazoo { app, .. }, _) => {
            if scope.app().is_some_and(|bound| bound != app) {
                return Err(ApiError::WrongApp(scope.app().map(|a| a.as_str().to_string()).unwrap_or_default()));
            }
            s.registrar.require_credentials(scope, app, provider).await?;
            app.clone()
        }
        (_, Some(name)) => s.registrar.app_named(scope, provider, name).await?,
        (_, None) => s.registrar.only_app_with(scope, provider).await?,
    })
}

async fn register(caller: Caller, State(s): State<AppState>, headers: HeaderMap, body: Body) -> Result<Json<Value>> {
    caller.require(Permission::Register)?;
    s.limit_registrations(caller.limit_key())?;
    if !super::body::media_type_is(&headers, &["message/sip"]) {
        return Err(ApiError::UnsupportedMediaType("message/sip"));
    }
    let body = super::body::read_body(body, sip::MAX_MESSAGE_BYTES).await.map_err(|e| e.into_api(sip::MAX_MESSAGE_BYTES))?;
    let msg = sip::parse_register(&body)?;
    let aor = msg.aor.aor();
    let scope = aor_scope(&s, &caller, &msg.aor.host).await?;
    // `Contact: *` (with `Expires: 0`) removes every push binding of the AOR
    // (of the scope: another tenant's or another app's bindings stay).
    if msg.wildcard {
        let removed = s.store.delete_devices_for_aor(&scope, &aor).await?;
        return Ok(Json(json!({ "aor": aor, "user": msg.user.as_str(), "removed": removed })));
    }
    let found = sip::bindings(&msg, &s.ua_rules.get())?;
    let mut regs = Vec::new();
    for data in found.live {
        let app = app_for(&s, &scope, &data).await?;
        regs.push(sip::registration(&msg, &aor, data, app));
    }
    // Everything is checked before anything changes; the removals, the
    // device cap and the new bindings are one transaction.
    let removals = SipRemovals { aor: aor.clone(), devices: found.gone.iter().map(sip::gone_id).collect(), contacts: found.gone_contacts };
    let removed = if regs.is_empty() && removals.is_empty() { 0 } else { s.registrar.store(&scope, &msg.user, &regs, &removals).await?.removed };
    let stored: Vec<Value> = regs
        .iter()
        .map(|reg| {
            json!({
                "device": reg.device.as_str(), "channel": reg.channel.as_str(), "application": reg.app.as_str(),
                "format": reg.sip().map(|b| b.format.as_str()), "token_suffix": reg.token.suffix(),
            })
        })
        .collect();
    Ok(Json(json!({ "aor": aor, "user": msg.user.as_str(), "stored": stored, "removed": removed })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WakeBody {
    aor: String,
    call_id: String,
    from_display: Option<String>,
    from_number: Option<String>,
    timeout_ms: Option<u64>,
}

/// The devices a wake (or a cancel) for `uri` is about, and the AOR
/// their REGISTERs are published under. Compared: the AOR's domain picks
/// the tenant (its `sip_domains`, else `default`); in it, the exact AOR
/// (`sip:user@host`, lower-case host, no port or parameters) first, then
/// the AOR's user part, which is the tenant's SIP user: an INVITE whose
/// request-URI names the proxy's address (`sip:1001@10.0.0.5`) finds the
/// phone registered as `sip:1001@pbx.example.com`.
async fn wake_target(s: &AppState, scope: &Scope, uri: &sip::SipUri) -> Result<(DeviceSet, String)> {
    let aor = uri.aor();
    let devices = s.store.devices_for_aor(scope, &aor).await?;
    if !devices.is_empty() {
        return Ok((devices, aor));
    }
    let Some(user) = uri.user.as_deref().and_then(|u| UserId::parse(u).ok()) else {
        return Ok((devices, aor));
    };
    let mut devices = s.store.devices_for(scope, &user, None).await?;
    devices.retain(|_, _, dialect, _| dialect == Dialect::Sip);
    let registered_as = devices.ready.iter().find_map(|d| d.registration.sip().map(|b| b.aor.clone())).unwrap_or(aor);
    Ok((devices, registered_as))
}

async fn wake(caller: Caller, State(s): State<AppState>, headers: HeaderMap, LimitedBody(body): LimitedBody) -> Result<Response> {
    let started = std::time::Instant::now();
    caller.require(Permission::Calls)?;
    s.limit_calls(&caller)?;
    let b: WakeBody = json_body(&headers, &body)?;
    let uri = sip::parse_uri(&b.aor).map_err(|e| ApiError::bad_request("invalid_aor", e.message))?;
    let scope = aor_scope(&s, &caller, &uri.host).await?;
    let timeout_ms = b.timeout_ms.unwrap_or(DEFAULT_WAKE_MS);
    if !(1..=MAX_WAKE_MS).contains(&timeout_ms) {
        return Err(ApiError::bad_request("invalid_timeout", format!("timeout_ms must be between 1 and {MAX_WAKE_MS}")));
    }
    let (display, number) = (CallEvent::text("from_display", b.from_display)?, CallEvent::text("from_number", b.from_number)?);
    let push_id = PushId::parse(&b.call_id).map_err(|e| ApiError::bad_request("invalid_call_id", e.message.replace("pushid", "call_id")))?;
    // The scope's devices only: an app-bound key wakes its own app's.
    let (devices, aor) = wake_target(&s, &scope, &uri).await?;
    let Some(user) = devices.first_user().cloned() else {
        return Err(ApiError::NotFound(format!("no device is registered for {}", uri.aor())));
    };
    // Subscribe before pushing: a fast re-REGISTER cannot slip through.
    let key = crate::wake::wake_key(scope.tenant_id().as_str(), &aor);
    let waiter = s.wake.subscribe(&key, push_id.as_str()).map_err(|e| ApiError::bad_request("too_many_waiters", e.to_string()))?;
    let ring_seconds = timeout_ms.div_ceil(1000).min(u64::from(RingWindow::MAX_SECONDS)) as u32;
    let mut event = CallEvent::new(user, push_id, RingWindow::starting_now(now_ms(), ring_seconds));
    event.display_name = display;
    event.display_number = number;
    let (call, pushid) = (event.call_id.clone(), event.push_id.as_str().to_string());
    let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout_ms);
    let dispatcher = s.dispatcher.clone();
    let wake_devices = devices.ready.clone();
    // Tracked: shutdown waits for the push even when the client is gone.
    let mut push = s.dispatcher.spawn(async move { dispatcher.run_on_and_save(&event, &devices).await });
    let waited = waiter.wait_until(deadline);
    tokio::pin!(waited);
    let stats = s.wake.stats();
    let ended = tokio::select! {
        ended = &mut waited => ended,
        pushed = &mut push => {
            let report = pushed.map_err(|e| ApiError::Internal(e.into()))??;
            let any_delivered = report.deliveries.iter().any(|d| d.outcome == Outcome::Delivered);
            if !any_delivered {
                // The push failed for good: say so at once, with the report.
                stats.record(WakeOutcome::PushFailed, started.elapsed());
                let body = json!({ "registered": false, "report": report });
                return Ok((StatusCode::OK, Json(body)).into_response());
            }
            let ended = waited.await;
            if ended.is_none() {
                stats.record(WakeOutcome::Timeout, started.elapsed());
                return Ok(answer(None, Some(report)));
            }
            ended
        }
    };
    match ended {
        Some(Wakeup::Registered(contact)) => {
            stats.record(WakeOutcome::Registered, started.elapsed());
            Ok(answer(Some(contact), None))
        }
        Some(Wakeup::Cancelled) => {
            // The caller hung up: stop pushing the call (a retry must not
            // ring after the cancel), then tell the woken devices.
            push.abort();
            let cancel = s.dispatcher.cancel_on(&scope, &call, &pushid, &wake_devices).await;
            stats.record(WakeOutcome::Cancelled, started.elapsed());
            Ok((StatusCode::OK, Json(json!({ "registered": false, "cancelled": true, "cancel_report": cancel }))).into_response())
        }
        None => {
            stats.record(WakeOutcome::Timeout, started.elapsed());
            Ok(answer(None, None))
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelBody {
    aor: String,
    call_id: String,
}

/// `POST /sip/cancel {aor, call_id}` (scope `calls`): the caller hung up.
/// The `/sip/wake` of that AOR and call ends at once, on whichever node
/// holds it (`{"registered": false, "cancelled": true}`), after sending
/// the cancel push to the devices it woke. Answers how many waits this
/// node held (other nodes' end through the store's event).
async fn cancel(caller: Caller, State(s): State<AppState>, headers: HeaderMap, LimitedBody(body): LimitedBody) -> Result<Json<Value>> {
    caller.require(Permission::Calls)?;
    s.limit_calls(&caller)?;
    let b: CancelBody = json_body(&headers, &body)?;
    let uri = sip::parse_uri(&b.aor).map_err(|e| ApiError::bad_request("invalid_aor", e.message))?;
    let scope = aor_scope(&s, &caller, &uri.host).await?;
    let call_id = PushId::parse(&b.call_id).map_err(|e| ApiError::bad_request("invalid_call_id", e.message.replace("pushid", "call_id")))?;
    let (devices, aor) = wake_target(&s, &scope, &uri).await?;
    if devices.is_empty() {
        return Err(ApiError::NotFound(format!("no device is registered for {}", uri.aor())));
    }
    let here = s.wake.cancel(&crate::wake::wake_key(scope.tenant_id().as_str(), &aor), call_id.as_str());
    s.store.wake_cancelled(&scope, &aor, call_id.as_str()).await;
    Ok(Json(json!({ "aor": aor, "call_id": call_id.as_str(), "waits_ended_here": here })))
}

/// A wake's answer: registered (200) or not in time (408, with the push report if it ended first).
fn answer(contact: Option<String>, report: Option<crate::domain::CallReport>) -> Response {
    match contact {
        Some(contact) => (StatusCode::OK, Json(json!({ "registered": true, "contact": contact }))).into_response(),
        None => {
            let mut body = json!({ "registered": false });
            if let Some(r) = report {
                body["report"] = serde_json::to_value(r).unwrap_or_default();
            }
            (StatusCode::REQUEST_TIMEOUT, Json(body)).into_response()
        }
    }
}

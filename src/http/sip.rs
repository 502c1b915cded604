//! SIP push data (seeds/001, seeds/004, RFC 8599): `POST /sip/register`
//! takes a raw REGISTER as a proxy forwards it after a successful save;
//! `POST /sip/wake` pushes to an AOR's devices and holds the request until
//! the device re-REGISTERs (Kazoo-style push-and-wait) or the timeout.
//! Parsing lives in `dialect::sip`; the wait in `wake`.

use super::auth::{Caller, Permission, RequestedTenant};
use super::error::{json_body, ApiError, Result};
use super::state::AppState;
use super::LimitedBody;
use crate::dialect::sip::{self, PushData};
use crate::domain::{
    now_ms, AppId, BundleId, CallEvent, Channel, DevicePkid, DialectData, MessageToken, Outcome, Provider, PushId, Reach, Registration, RingWindow, Scope,
    SipBinding, SipFormat, TenantId,
};
use crate::store::SipRemovals;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::time::Duration;

pub fn router() -> Router<AppState> {
    Router::new().route("/sip/register", post(register)).route("/sip/wake", post(wake))
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

/// The app whose credentials serve this push data, among the apps the
/// scope sees (its tenant's and the shared ones). A key bound to an app may
/// only register devices of that app (403).
async fn app_for(s: &AppState, caller: &Caller, scope: &Scope, provider: Provider, lookup: &str) -> Result<AppId> {
    // Looked up among every app the tenant sees; the key's binding is
    // checked below (403, not "unknown").
    let reach = Reach::of(&Scope::tenant(scope.tenant_id().clone()));
    let mut found = s.store.app_for_lookup(&reach, provider, lookup).await?;
    if found.is_none() {
        // An app stored under that very id (bundle or project) works too.
        if let Ok(app) = AppId::parse(lookup) {
            if s.store.has_credentials(&reach, &app, provider.into()).await? {
                found = Some(app);
            }
        }
    }
    let Some(app) = found else {
        return Err(ApiError::bad_request(
            "unknown_application",
            format!("no application has {} credentials for {lookup}", provider.as_str()),
        ));
    };
    Ok(caller.app_for(Some(app))?.expect("an app was named"))
}

/// A stable device id for a SIP binding: its format and a hash of its token.
/// Both RFC 8599 forms (VoIP and alert-only) name a device the same way.
fn device_id(format: SipFormat, token: &str) -> DevicePkid {
    let family = match format {
        SipFormat::Rfc8599Alert => SipFormat::Rfc8599,
        f => f,
    };
    let h = Sha256::digest(token.as_bytes());
    DevicePkid::parse(&format!("{}-{}", family.as_str(), &hex::encode(h)[..16])).expect("hex id is valid")
}

/// The device a piece of push data registers, and how.
async fn registration(s: &AppState, caller: &Caller, scope: &Scope, msg: &sip::SipRegister, aor: &str, data: PushData) -> Result<Registration> {
    let first_contact = msg.contacts.first().map(|c| c.uri.raw.clone());
    let (format, provider, token, app, contact, purr, remote, sandbox) = match data {
        PushData::Mpush { bundle, token } if token.provider() == Provider::Apns => {
            let app = app_for(s, caller, scope, Provider::Apns, bundle.as_str()).await?;
            (SipFormat::Mpush, Provider::Apns, token, app, first_contact, None, None, false)
        }
        PushData::Mpush { bundle, token } => {
            let app = mpush_fcm_app(s, caller, scope, &bundle).await?;
            (SipFormat::Mpush, Provider::Fcm, token, app, first_contact, None, None, false)
        }
        PushData::Rfc8599 { provider, sandbox, prid, remote, calls_as_alert, bundle_or_project, purr, contact, .. } => {
            let app = app_for(s, caller, scope, provider, &bundle_or_project).await?;
            let format = if calls_as_alert { SipFormat::Rfc8599Alert } else { SipFormat::Rfc8599 };
            (format, provider, prid, app, Some(contact), purr, remote, sandbox)
        }
        PushData::Kazoo { app, provider, token, contact, .. } => {
            let app = caller.app_for(Some(app))?.expect("an app was named");
            s.registrar.require_credentials(scope, &app, provider).await?;
            (SipFormat::Kazoo, provider, token, app, Some(contact), None, None, false)
        }
    };
    let channel = if sandbox { Channel::ApnsDev } else { Channel::for_provider(provider) };
    let msg_token = remote.map(|token| MessageToken { app: app.clone(), channel, token });
    Ok(Registration {
        user: msg.user.clone(),
        device: device_id(format, token.as_str()),
        channel,
        token,
        app,
        data: DialectData::Sip { binding: SipBinding { aor: aor.to_string(), contact, format, purr }, msg: msg_token },
    })
}

/// The app of an X-MPUSH FCM token: the app whose id or APNs bundle id is
/// the header's bundle, when it has FCM credentials.
async fn mpush_fcm_app(s: &AppState, caller: &Caller, scope: &Scope, bundle: &BundleId) -> Result<AppId> {
    let reach = Reach::of(&Scope::tenant(scope.tenant_id().clone()));
    let mut candidates = Vec::new();
    if let Some(app) = s.store.app_for_lookup(&reach, Provider::Apns, bundle.as_str()).await? {
        candidates.push(app);
    }
    if let Ok(app) = AppId::parse(bundle.as_str()) {
        candidates.push(app);
    }
    for app in candidates {
        if s.store.has_credentials(&reach, &app, Provider::Fcm.into()).await? {
            return Ok(caller.app_for(Some(app))?.expect("an app was named"));
        }
    }
    Err(ApiError::bad_request(
        "invalid_token",
        format!("X-MPUSH: the token is not an APNs (hex) token, and no app with id or bundle id {bundle} has FCM credentials to send it through Firebase"),
    ))
}

/// The device id a piece of de-registering push data had.
fn gone_id(data: &PushData) -> DevicePkid {
    match data {
        PushData::Mpush { token, .. } => device_id(SipFormat::Mpush, token.as_str()),
        PushData::Rfc8599 { prid, .. } => device_id(SipFormat::Rfc8599, prid.as_str()),
        PushData::Kazoo { token, .. } => device_id(SipFormat::Kazoo, token.as_str()),
    }
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
        regs.push(registration(&s, &caller, &scope, &msg, &aor, data).await?);
    }
    // Everything is checked before anything changes; the removals, the
    // device cap and the new bindings are one transaction.
    let removals = SipRemovals { aor: aor.clone(), devices: found.gone.iter().map(gone_id).collect(), contacts: found.gone_contacts };
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

async fn wake(caller: Caller, State(s): State<AppState>, headers: HeaderMap, LimitedBody(body): LimitedBody) -> Result<Response> {
    caller.require(Permission::Calls)?;
    s.limit_calls(&caller)?;
    let b: WakeBody = json_body(&headers, &body)?;
    let uri = sip::parse_uri(&b.aor).map_err(|e| ApiError::bad_request("invalid_aor", e.message))?;
    let aor = uri.aor();
    let scope = aor_scope(&s, &caller, &uri.host).await?;
    let timeout_ms = b.timeout_ms.unwrap_or(DEFAULT_WAKE_MS);
    if !(1..=MAX_WAKE_MS).contains(&timeout_ms) {
        return Err(ApiError::bad_request("invalid_timeout", format!("timeout_ms must be between 1 and {MAX_WAKE_MS}")));
    }
    let (display, number) = (CallEvent::text("from_display", b.from_display)?, CallEvent::text("from_number", b.from_number)?);
    let push_id = PushId::parse(&b.call_id).map_err(|e| ApiError::bad_request("invalid_call_id", e.message.replace("pushid", "call_id")))?;
    // The scope's devices only: an app-bound key wakes its own app's.
    let devices = s.store.devices_for_aor(&scope, &aor).await?;
    let Some(user) = devices.first_user().cloned() else {
        return Err(ApiError::NotFound(format!("no device is registered for {aor}")));
    };
    // Subscribe before pushing: a fast re-REGISTER cannot slip through.
    let key = crate::wake::wake_key(scope.tenant_id().as_str(), &aor);
    let waiter = s.wake.subscribe(&key).map_err(|e| ApiError::bad_request("too_many_waiters", e.to_string()))?;
    let ring_seconds = timeout_ms.div_ceil(1000).min(u64::from(RingWindow::MAX_SECONDS)) as u32;
    let mut event = CallEvent::new(user, push_id, RingWindow::starting_now(now_ms(), ring_seconds));
    event.display_name = display;
    event.display_number = number;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout_ms);
    let dispatcher = s.dispatcher.clone();
    // Tracked: shutdown waits for the push even when the client is gone.
    let push = s.dispatcher.spawn(async move { dispatcher.run_on_and_save(&event, &devices).await });
    let waited = waiter.wait_until(deadline);
    tokio::pin!(waited);
    tokio::select! {
        contact = &mut waited => Ok(answer(contact, None)),
        pushed = push => {
            let report = pushed.map_err(|e| ApiError::Internal(e.into()))??;
            let any_delivered = report.deliveries.iter().any(|d| d.outcome == Outcome::Delivered);
            if !any_delivered {
                // The push failed for good: say so at once, with the report.
                let body = json!({ "registered": false, "report": report });
                return Ok((StatusCode::OK, Json(body)).into_response());
            }
            Ok(answer(waited.await, Some(report)))
        }
    }
}

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

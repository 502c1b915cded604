//! SIP push data (seeds/001, seeds/004, RFC 8599): `POST /sip/register`
//! takes a raw REGISTER as a proxy forwards it after a successful save;
//! `POST /sip/wake` pushes to an AOR's devices and holds the request until
//! the device re-REGISTERs (Kazoo-style push-and-wait) or the timeout.
//! Parsing lives in `dialect::sip`; the wait in `wake`.

use super::auth::{Caller, Scope};
use super::error::{json_body, ApiError, Result};
use super::state::AppState;
use super::LimitedBody;
use crate::dialect::sip::{self, PushData};
use crate::domain::{
    now_ms, AppId, CallEvent, CallId, Channel, DevicePkid, Dialect, Outcome, Provider, PushId, Registration, RingWindow, SipBinding,
    SipFormat,
};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
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

fn channel_for(provider: Provider) -> Channel {
    match provider {
        Provider::Apns => Channel::Apns,
        Provider::Fcm => Channel::Fcm,
    }
}

/// The app whose credentials serve this push data.
async fn app_for(s: &AppState, provider: Provider, lookup: &str) -> Result<AppId> {
    if let Some(app) = s.store.app_for_lookup(provider, lookup).await? {
        return Ok(app);
    }
    // An app stored under that very id (bundle or project) works too.
    if let Ok(app) = AppId::parse(lookup) {
        if s.store.has_credentials(&app, provider).await? {
            return Ok(app);
        }
    }
    Err(ApiError::bad_request(
        "unknown_application",
        format!("no application has {} credentials for {lookup}", provider.as_str()),
    ))
}

/// A stable device id for a SIP binding: its format and a hash of its token.
fn device_id(format: SipFormat, token: &str) -> DevicePkid {
    let h = Sha256::digest(token.as_bytes());
    DevicePkid::parse(&format!("{}-{}", format.as_str(), &hex::encode(h)[..16])).expect("hex id is valid")
}

async fn register(caller: Caller, State(s): State<AppState>, headers: HeaderMap, body: Body) -> Result<Json<Value>> {
    caller.require(Scope::Register)?;
    s.limit_registrations(caller.limit_key())?;
    let mime = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("message/sip");
    if !mime.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("message/sip") {
        return Err(ApiError::UnsupportedMediaType("message/sip"));
    }
    let body = super::body::read_body(body, sip::MAX_MESSAGE_BYTES).await.map_err(|e| e.into_api(sip::MAX_MESSAGE_BYTES))?;
    let msg = sip::parse_register(&body)?;
    let aor = msg.aor.aor();
    // A de-REGISTER removes the AOR's push bindings.
    if msg.wildcard || msg.expires == Some(0) {
        let removed = s.store.delete_devices_for_aor(&aor).await?;
        return Ok(Json(json!({ "aor": aor, "user": msg.user.as_str(), "removed": removed })));
    }
    let found = sip::push_data(&msg, &s.ua_rules)?;
    let first_contact = msg.contacts.first().map(|c| c.uri.raw.clone());
    let mut regs = Vec::new();
    for data in found {
        let (format, provider, token, app, contact, purr) = match data {
            PushData::Mpush { bundle, token } => {
                let app = app_for(&s, Provider::Apns, bundle.as_str()).await?;
                (SipFormat::Mpush, Provider::Apns, token, app, first_contact.clone(), None)
            }
            PushData::Rfc8599 { provider, prid, topic_or_project, purr, contact, .. } => {
                let lookup = match provider {
                    Provider::Apns => topic_or_project.strip_suffix(".voip").unwrap_or(&topic_or_project).to_string(),
                    Provider::Fcm => topic_or_project.clone(),
                };
                let app = app_for(&s, provider, &lookup).await?;
                (SipFormat::Rfc8599, provider, prid, app, Some(contact), purr)
            }
            PushData::Kazoo { app, provider, token, contact, .. } => {
                s.require_credentials(&app, provider).await?;
                (SipFormat::Kazoo, provider, token, app, Some(contact), None)
            }
        };
        regs.push(Registration {
            user: msg.user.clone(),
            device: device_id(format, token.as_str()),
            dialect: Dialect::Sip,
            channel: channel_for(provider),
            token,
            key: None,
            app,
            payload_version: None,
            msg: None,
            sip: Some(SipBinding { aor: aor.clone(), contact, format, purr }),
        });
    }
    let now = now_ms();
    s.store.ensure_user(&msg.user, now).await?;
    let mut stored = Vec::new();
    for reg in &regs {
        s.store.upsert_device(reg, now).await?;
        metrics::counter!(crate::telemetry::REGISTRATIONS, "dialect" => "sip").increment(1);
        tracing::info!(aor = %aor, device = %reg.device, channel = %reg.channel, token = reg.token.suffix(), "SIP push binding stored");
        stored.push(json!({
            "device": reg.device.as_str(), "channel": reg.channel.as_str(), "application": reg.app.as_str(),
            "format": reg.sip.as_ref().map(|b| b.format.as_str()), "token_suffix": reg.token.suffix(),
        }));
    }
    // Release any /sip/wake held for this AOR (here or, with PostgreSQL, on any node).
    let contact = regs.first().and_then(|r| r.sip.as_ref()).and_then(|b| b.contact.clone()).or(first_contact).unwrap_or_default();
    s.wake.registered(&aor, &contact);
    Ok(Json(json!({ "aor": aor, "user": msg.user.as_str(), "stored": stored })))
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
    caller.require(Scope::Calls)?;
    s.limit_calls(caller.limit_key())?;
    let b: WakeBody = json_body(&headers, &body)?;
    let aor = sip::parse_uri(&b.aor).map_err(|e| ApiError::bad_request("invalid_aor", e.message))?.aor();
    let timeout_ms = b.timeout_ms.unwrap_or(DEFAULT_WAKE_MS);
    if !(1..=MAX_WAKE_MS).contains(&timeout_ms) {
        return Err(ApiError::bad_request("invalid_timeout", format!("timeout_ms must be between 1 and {MAX_WAKE_MS}")));
    }
    let text = |v: Option<String>, name: &str| -> Result<String> {
        let v = v.unwrap_or_default();
        if v.chars().count() > 256 || v.chars().any(char::is_control) {
            return Err(ApiError::bad_request("invalid_field", format!("{name} must be at most 256 printable characters")));
        }
        Ok(v)
    };
    let (display, number) = (text(b.from_display, "from_display")?, text(b.from_number, "from_number")?);
    let push_id = PushId::parse(&b.call_id).map_err(|e| ApiError::bad_request("invalid_call_id", e.message.replace("pushid", "call_id")))?;
    let devices = s.store.devices_for_aor(&aor).await?;
    let Some(first) = devices.first() else {
        return Err(ApiError::NotFound(format!("no device is registered for {aor}")));
    };
    // Subscribe before pushing: a fast re-REGISTER cannot slip through.
    let waiter = s.wake.subscribe(&aor).map_err(|e| ApiError::bad_request("too_many_waiters", e.to_string()))?;
    let ring_seconds = timeout_ms.div_ceil(1000).min(u64::from(RingWindow::MAX_SECONDS)) as u32;
    let event = CallEvent {
        call_id: CallId::new(),
        user: first.registration.user.clone(),
        device: None,
        push_id,
        display_name: display,
        display_number: number,
        hunt_pilot_dn: String::new(),
        actor: None,
        ring: RingWindow::starting_now(now_ms(), ring_seconds),
    };
    let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout_ms);
    let dispatcher = s.dispatcher.clone();
    let push = tokio::spawn(async move { dispatcher.run_on_and_save(&event, &devices).await });
    let waited = waiter.wait_until(deadline);
    tokio::pin!(waited);
    tokio::select! {
        contact = &mut waited => Ok(answer(contact, None)),
        pushed = push => {
            let report = pushed.map_err(|e| ApiError::Internal(e.into()))?.map_err(|e| match e {
                crate::dispatch::DispatchError::Store(e) => ApiError::from(e),
                crate::dispatch::DispatchError::NoDevices => ApiError::NotFound(format!("no device is registered for {aor}")),
            })?;
            let any_delivered = report.deliveries.iter().any(|d| d.outcome == Outcome::Delivered.as_str());
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

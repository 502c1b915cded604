//! `POST /v1/calls`, `GET /v1/calls/{call_id}`: call events and their reports.

use super::auth::{Caller, Permission, RequestedTenant};
use super::error::{json_body, ApiError, Result};
use super::state::AppState;
use super::users::user_id;
use super::LimitedBody;
use crate::dispatch::DispatchError;
use crate::domain::{now_ms, CallEvent, CallId, CallReport, DevicePkid, PushId, RingWindow};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/calls", post(post_call))
        .route("/v1/calls/{call_id}", get(get_call))
        .route("/v1/calls/{call_id}/cancel", post(cancel_call))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallBody {
    user: String,
    device: Option<String>,
    pushid: String,
    displayname: Option<String>,
    displaynumber: Option<String>,
    huntpilotdn: Option<String>,
    ring_seconds: Option<i64>,
    /// The tenant of the user (operator credentials; a tenant key's own).
    tenant: Option<String>,
}

/// The one place a call-event body becomes a `CallEvent`.
fn parse_event(b: CallBody, default_ring: u32) -> Result<CallEvent> {
    let ring_seconds = match b.ring_seconds {
        Some(r) => RingWindow::parse_seconds(r)?,
        None => default_ring,
    };
    let mut event = CallEvent::new(user_id(&b.user)?, PushId::parse(&b.pushid)?, RingWindow::starting_now(now_ms(), ring_seconds));
    event.device = b.device.as_deref().map(DevicePkid::parse).transpose()?;
    event.display_name = CallEvent::text("displayname", b.displayname)?;
    event.display_number = CallEvent::text("displaynumber", b.displaynumber)?;
    event.hunt_pilot_dn = CallEvent::text("huntpilotdn", b.huntpilotdn)?;
    Ok(event)
}

async fn post_call(
    caller: Caller,
    named: RequestedTenant,
    State(s): State<AppState>,
    headers: HeaderMap,
    LimitedBody(body): LimitedBody,
) -> Result<Json<CallReport>> {
    caller.require(Permission::Calls)?;
    s.limit_calls(&caller)?;
    let mut b: CallBody = json_body(&headers, &body)?;
    let scope = caller.scope(&s, &named.with_body(b.tenant.take().as_deref())?).await?;
    let event = parse_event(b, s.settings.calls.ring_seconds)?;
    // The scope's user only; an app-bound key rings its own app's devices only.
    match s.dispatcher.run(&scope, &event).await {
        Ok(report) => Ok(Json(report)),
        Err(DispatchError::NoDevices) => Err(ApiError::NotFound(match &event.device {
            Some(d) => format!("user {} has no device {d}", event.user),
            None => format!("user {} has no devices", event.user),
        })),
        Err(DispatchError::Store(e)) => Err(e.into()),
    }
}

/// A call the scope does not have (missing, another tenant's, or without a
/// device of the key's app: the same answer).
fn unknown_call(call_id: &str) -> ApiError {
    ApiError::NotFound(format!("unknown call {call_id}"))
}

async fn get_call(caller: Caller, named: RequestedTenant, State(s): State<AppState>, Path(call_id): Path<String>) -> Result<Json<CallReport>> {
    caller.require(Permission::Read).or_else(|_| caller.require(Permission::Calls))?;
    let scope = caller.scope(&s, &named).await?;
    let id = CallId::parse(&call_id).map_err(|_| unknown_call(&call_id))?;
    s.store.call_report(&scope, &id).await?.map(Json).ok_or_else(|| unknown_call(&call_id))
}

async fn cancel_call(caller: Caller, named: RequestedTenant, State(s): State<AppState>, Path(call_id): Path<String>) -> Result<Json<CallReport>> {
    caller.require(Permission::Calls)?;
    s.limit_calls(&caller)?;
    let scope = caller.scope(&s, &named).await?;
    let id = CallId::parse(&call_id).map_err(|_| unknown_call(&call_id))?;
    match s.dispatcher.cancel(&scope, &id).await {
        Ok(Some(report)) => Ok(Json(report)),
        Ok(None) => Err(unknown_call(&call_id)),
        Err(DispatchError::NoDevices) => Err(ApiError::NotFound(format!("call {call_id} has no devices left"))),
        Err(DispatchError::Store(e)) => Err(e.into()),
    }
}

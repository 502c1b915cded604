//! `/v1/tenants`: the operator's customers (interface.md §8): their SIP
//! domains and limit overrides. Operator credentials only, but a tenant
//! key may read its own tenant.

use super::auth::{Caller, Permission};
use super::error::{json_body, ApiError, Result};
use super::state::AppState;
use super::time::rfc3339;
use super::LimitedBody;
use crate::domain::{now_ms, TenantId};
use crate::store::{TenantLimits, TenantRecord};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/tenants", get(list)).route("/v1/tenants/{tenant}", get(show).put(put).delete(remove))
}

/// Most SIP domains one tenant may hold.
const MAX_DOMAINS: usize = 100;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantBody {
    sip_domains: Option<Vec<String>>,
    limits: Option<LimitsBody>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsBody {
    devices_per_user: Option<u32>,
    calls_per_second: Option<u32>,
}

fn tenant_id(raw: &str) -> Result<TenantId> {
    TenantId::parse(raw).map_err(|e| ApiError::bad_request("invalid_tenant", e.message))
}

/// A SIP domain as tenants hold it: lower case, a host name, an IPv4
/// address or a bracketed IPv6 reference.
fn sip_domain(raw: &str) -> Result<String> {
    let d = raw.trim().to_ascii_lowercase();
    let ok = !d.is_empty()
        && d.len() <= 253
        && (d.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
            || (d.starts_with('[') && d.ends_with(']') && d[1..d.len() - 1].parse::<std::net::Ipv6Addr>().is_ok()));
    if ok {
        Ok(d)
    } else {
        Err(ApiError::bad_request("invalid_domain", format!("sip_domains: {raw:?} is not a host name or IP address")))
    }
}

fn view(t: &TenantRecord) -> Value {
    json!({
        "tenant": t.tenant.as_str(),
        "sip_domains": t.sip_domains,
        "limits": { "devices_per_user": t.limits.devices_per_user, "calls_per_second": t.limits.calls_per_second },
        "created_at": rfc3339(t.created_at),
        "updated_at": rfc3339(t.updated_at),
    })
}

async fn put(
    caller: Caller,
    State(s): State<AppState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    LimitedBody(body): LimitedBody,
) -> Result<(StatusCode, Json<Value>)> {
    caller.require(Permission::Admin)?;
    caller.require_operator()?;
    let tenant = tenant_id(&tenant)?;
    let b: TenantBody = json_body(&headers, &body)?;
    let mut domains = b.sip_domains.unwrap_or_default().iter().map(|d| sip_domain(d)).collect::<Result<Vec<_>>>()?;
    domains.sort();
    domains.dedup();
    if domains.len() > MAX_DOMAINS {
        return Err(ApiError::bad_request("invalid_domain", format!("sip_domains: at most {MAX_DOMAINS}")));
    }
    let limits =
        b.limits.map_or(TenantLimits::default(), |l| TenantLimits { devices_per_user: l.devices_per_user, calls_per_second: l.calls_per_second });
    if limits.devices_per_user.is_some_and(|n| !(1..=10_000).contains(&n)) {
        return Err(ApiError::bad_request("invalid_limit", "limits.devices_per_user must be between 1 and 10000"));
    }
    if limits.calls_per_second.is_some_and(|n| n > 1_000_000) {
        return Err(ApiError::bad_request("invalid_limit", "limits.calls_per_second must be at most 1000000 (0 = no limit)"));
    }
    let created = s.store.put_tenant(&tenant, &domains, limits, now_ms()).await?;
    tracing::info!(tenant = %tenant, domains = domains.len(), created, "tenant stored");
    let record = s.store.tenant(&tenant).await?.ok_or_else(|| ApiError::NotFound(format!("unknown tenant {tenant}")))?;
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, Json(view(&record))))
}

async fn list(caller: Caller, State(s): State<AppState>) -> Result<Json<Value>> {
    caller.require(Permission::Read)?;
    caller.require_operator()?;
    Ok(Json(Value::Array(s.store.tenants().await?.iter().map(view).collect())))
}

/// An operator sees any tenant; a tenant key its own (another is 404, as a
/// missing one).
async fn show(caller: Caller, State(s): State<AppState>, Path(tenant): Path<String>) -> Result<Json<Value>> {
    caller.require(Permission::Read)?;
    let unknown = || ApiError::NotFound(format!("unknown tenant {tenant}"));
    let id = TenantId::parse(&tenant).map_err(|_| unknown())?;
    if caller.tenant.as_ref().is_some_and(|own| *own != id) {
        return Err(unknown());
    }
    s.store.tenant(&id).await?.map(|t| Json(view(&t))).ok_or_else(unknown)
}

async fn remove(caller: Caller, State(s): State<AppState>, Path(tenant): Path<String>) -> Result<StatusCode> {
    caller.require(Permission::Admin)?;
    caller.require_operator()?;
    let tenant = tenant_id(&tenant)?;
    if s.store.delete_tenant(&tenant).await? {
        tracing::info!(tenant = %tenant, "tenant deleted with everything it owned");
        s.dispatcher.forget_callback_apps();
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("unknown tenant {tenant}")))
    }
}

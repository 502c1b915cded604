//! The operator console (interface.md §7): one server-rendered page at
//! `/console`, no script and no external resource (it works offline):
//! apps and their credential health, the last 100 calls with each device's
//! outcome and latency (filters by outcome and app), provider latency
//! (p50/p99) and error rate over the last hour as small SVG charts,
//! devices per dialect, and stale devices.
//!
//! Sign-in: the admin token or an API key with scope `read`, as a bearer
//! header or through `POST /console/login` (form field `token`), which
//! starts a session kept in the store (so any node knows it) and sets an
//! `HttpOnly; SameSite=Strict` cookie. A wrong token counts toward
//! `limits.auth_failures_per_minute` like any other. The one form that
//! changes state, sign-out, carries the session's CSRF token.

use super::auth::{admin_fingerprint, caller_for_session, caller_for_token, Caller, Peer, Permission};
use super::error::ApiError;
use super::state::AppState;
use super::time::rfc3339;
use crate::domain::{now_ms, AppId, Outcome, Provider, Reach, Scope, TenantId};
use crate::store::{ProviderMinute, RecentCall, SessionSigner};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt::Write;

pub fn router() -> Router<AppState> {
    Router::new().route("/console", get(page)).route("/console/login", get(login_form).post(login)).route("/console/logout", post(logout))
}

const COOKIE: &str = "pushrelay_console";
/// A session lasts 12 hours.
const SESSION_MS: i64 = 12 * 3600 * 1000;
/// Calls listed, and how far back the list looks.
const CALLS_SHOWN: i64 = 100;
const CALLS_WINDOW_MS: i64 = 7 * 86_400_000;
/// Stale devices listed.
const STALE_SHOWN: i64 = 20;

/// No script, no external anything; the page cannot be framed.
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn html(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // `same-origin`, not `no-referrer`: under `no-referrer` browsers send
    // `Origin: null` with the sign-in form, which sign-in must refuse.
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    r
}

fn redirect(to: &'static str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    r.headers_mut().insert(header::LOCATION, HeaderValue::from_static(to));
    r
}

/// HTML-escape text.
fn esc(t: &str) -> String {
    let mut out = String::with_capacity(t.len());
    for c in t.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn session_hash(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))
}

fn cookie_value(headers: &HeaderMap) -> Option<String> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == COOKIE && !v.is_empty() && v.len() <= 128).then(|| v.to_string())
    })
}

/// Who is looking: a live session (with its CSRF token) whose key is still
/// live (or whose admin token is still the relay's), or a bearer with scope
/// `read` (or admin). `None`: show the sign-in form.
async fn viewer(s: &AppState, headers: &HeaderMap, peer: std::net::IpAddr) -> Result<Option<(Caller, Option<String>)>, ApiError> {
    if let Some(id) = cookie_value(headers) {
        let hash = session_hash(&id);
        if let Some((csrf, signer)) = s.store.console_session(&hash, now_ms()).await? {
            match caller_for_session(s, &signer).await? {
                Some(caller) if caller.require(Permission::Read).is_ok() => return Ok(Some((caller, Some(csrf)))),
                _ => {
                    // Revoked key, or another admin token: the session ends now.
                    tracing::info!("console session ended: what signed it in is no longer valid");
                    s.store.console_session_end(&hash, now_ms()).await?;
                }
            }
        }
    }
    if let Some(token) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")) {
        let caller = caller_for_token(s, token.trim(), peer).await?;
        caller.require(Permission::Read)?;
        return Ok(Some((caller, None)));
    }
    Ok(None)
}

/// Who a viewer is, as the page header names them.
fn who(caller: &Caller) -> String {
    let id = caller.key_id.clone().unwrap_or_else(|| "admin".into());
    match &caller.tenant {
        Some(t) => format!("{id} (tenant {t})"),
        None => id,
    }
}

/// Largest sign-in and sign-out form (they carry a token or a CSRF token).
const MAX_FORM_BYTES: usize = 4096;

/// The console's forms: at most `MAX_FORM_BYTES`, within the body deadline.
async fn form_body(body: axum::body::Body) -> Result<axum::body::Bytes, Response> {
    super::body::read_body(body, MAX_FORM_BYTES).await.map_err(|e| e.into_api(MAX_FORM_BYTES).into_response())
}

/// The request's own origin (`scheme://host`), as a browser on this page
/// would send it: `https` when the relay terminates TLS itself.
fn own_origin(s: &AppState, headers: &HeaderMap) -> Option<String> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let scheme = if s.settings.tls.cert_file.is_some() { "https" } else { "http" };
    Some(format!("{scheme}://{}", host.to_ascii_lowercase()))
}

/// Sign-in refuses a cross-site `Origin` (login CSRF): it must be the
/// request's own origin or `public_url`'s. No `Origin` at all is allowed
/// (non-browser clients); `Origin: null` and any other origin are not.
fn origin_allowed(s: &AppState, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else { return true };
    let Ok(origin) = origin.to_str().map(str::to_ascii_lowercase) else { return false };
    Some(&origin) == own_origin(s, headers).as_ref() || Some(&origin) == s.settings.public_url.as_ref()
}

/// The cookie is `Secure` when clients reach the relay over HTTPS: it
/// terminates TLS itself, or `public_url` is `https`.
fn cookie_secure(s: &AppState) -> bool {
    s.settings.tls.cert_file.is_some() || s.settings.public_url.as_deref().is_some_and(|u| u.starts_with("https://"))
}

fn login_page(status: StatusCode, message: Option<&str>) -> Response {
    let note = message.map(|m| format!("<p class=err>{}</p>", esc(m))).unwrap_or_default();
    html(
        status,
        format!(
            "<!doctype html><html lang=en><head><meta charset=utf-8><title>pushrelay console</title>{STYLE}</head><body>\
             <main class=login><h1>pushrelay</h1>{note}<form method=post action=/console/login>\
             <label>Admin token or API key with scope <code>read</code><input type=password name=token autocomplete=off required autofocus></label>\
             <button type=submit>Sign in</button></form></main></body></html>"
        ),
    )
}

async fn login_form() -> Response {
    login_page(StatusCode::OK, None)
}

#[derive(Deserialize)]
struct LoginForm {
    token: Option<String>,
}

async fn login(State(s): State<AppState>, Peer(peer): Peer, headers: HeaderMap, body: axum::body::Body) -> Response {
    if !origin_allowed(&s, &headers) {
        return login_page(StatusCode::FORBIDDEN, Some("sign-in refused: the form was sent from another site (Origin)"));
    }
    let body = match form_body(body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if !super::body::media_type_is(&headers, &["application/x-www-form-urlencoded"]) {
        return login_page(StatusCode::UNSUPPORTED_MEDIA_TYPE, Some("the form must be sent as application/x-www-form-urlencoded"));
    }
    let form: LoginForm = match serde_urlencoded_form(&body) {
        Some(f) => f,
        None => return login_page(StatusCode::BAD_REQUEST, Some("the form is malformed")),
    };
    let token = form.token.unwrap_or_default();
    if token.is_empty() || token.len() > 512 {
        return login_page(StatusCode::BAD_REQUEST, Some("a token is required"));
    }
    let caller = match caller_for_token(&s, &token, peer).await {
        Ok(c) => c,
        Err(ApiError::TooManyFailures(wait)) => {
            let mut r = login_page(StatusCode::TOO_MANY_REQUESTS, Some("too many failed sign-ins from here; try again later"));
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(super::error::retry_after_secs(wait)));
            return r;
        }
        Err(ApiError::Unauthorized) => return login_page(StatusCode::UNAUTHORIZED, Some("that token is not valid")),
        Err(e) => return e.into_response(),
    };
    if caller.require(Permission::Read).is_err() {
        return login_page(StatusCode::FORBIDDEN, Some("that key lacks the scope read"));
    }
    let id = random_token();
    let csrf = random_token();
    let signer = match &caller.key_id {
        Some(key) => SessionSigner::Key(key.clone()),
        None => SessionSigner::AdminToken(admin_fingerprint(&s.admin_token_hash)),
    };
    if let Err(e) = s.store.console_session_start(&session_hash(&id), &csrf, &signer, now_ms() + SESSION_MS).await {
        return ApiError::from(e).into_response();
    }
    tracing::info!(who = %who(&caller), "console sign-in");
    let secure = if cookie_secure(&s) { "; Secure" } else { "" };
    let mut r = redirect("/console");
    let cookie = format!("{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/console; Max-Age={}{secure}", SESSION_MS / 1000);
    r.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).expect("cookie is ASCII"));
    r
}

fn serde_urlencoded_form(body: &[u8]) -> Option<LoginForm> {
    if body.len() > 4096 {
        return None;
    }
    let mut token = None;
    for (k, v) in form_urlencoded::parse(body) {
        if k == "token" {
            if token.is_some() {
                return None;
            }
            token = Some(v.into_owned());
        }
    }
    Some(LoginForm { token })
}

fn random_token() -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

async fn logout(State(s): State<AppState>, headers: HeaderMap, body: axum::body::Body) -> Response {
    let body = match form_body(body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(id) = cookie_value(&headers) else { return redirect("/console/login") };
    let hash = session_hash(&id);
    let Ok(Some((csrf, _))) = s.store.console_session(&hash, now_ms()).await else { return redirect("/console/login") };
    let given = form_urlencoded::parse(&body).find(|(k, _)| k == "csrf").map(|(_, v)| v.into_owned()).unwrap_or_default();
    if !bool::from(subtle::ConstantTimeEq::ct_eq(given.as_bytes(), csrf.as_bytes())) {
        return html(StatusCode::FORBIDDEN, "<!doctype html><p>Refused: the form's CSRF token does not match this session.</p>".into());
    }
    let _ = s.store.console_session_end(&hash, now_ms()).await;
    let mut r = redirect("/console/login");
    r.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_static("pushrelay_console=; HttpOnly; SameSite=Strict; Path=/console; Max-Age=0"));
    r
}

#[derive(Deserialize)]
struct Filters {
    outcome: Option<String>,
    app: Option<String>,
    /// Operators only: one tenant.
    tenant: Option<String>,
}

async fn page(State(s): State<AppState>, Peer(peer): Peer, headers: HeaderMap, Query(f): Query<Filters>) -> Response {
    let (caller, csrf) = match viewer(&s, &headers, peer).await {
        Ok(Some(v)) => v,
        Ok(None) => return redirect("/console/login"),
        Err(e) => return e.into_response(),
    };
    let outcome = f.outcome.filter(|o| Outcome::ALL.iter().any(|x| x.as_str() == o));
    let app = match f.app.as_deref().filter(|a| !a.is_empty()).map(AppId::parse).transpose() {
        Ok(a) => a,
        Err(_) => return html(StatusCode::BAD_REQUEST, "<!doctype html><p>Refused: app is not an app id.</p>".into()),
    };
    let tenant = match f.tenant.as_deref().filter(|t| !t.is_empty()).map(TenantId::parse).transpose() {
        Ok(t) => t,
        Err(_) => return html(StatusCode::BAD_REQUEST, "<!doctype html><p>Refused: tenant is not a tenant id.</p>".into()),
    };
    // A tenant key sees its own tenant (a filter naming another is ignored:
    // it cannot reach past its tenant); an operator every tenant, or one.
    let reach = match &caller.tenant {
        Some(own) => Reach::of(&Scope::tenant(own.clone()).narrowed_to(caller.app.clone())),
        None => Reach::every_tenant().narrowed_to(caller.app.clone()).only_tenant(tenant.clone()),
    };
    let view = View {
        who: who(&caller),
        csrf: csrf.as_deref(),
        operator: caller.is_operator(),
        tenant_filter: tenant.as_ref(),
        outcome: outcome.as_deref(),
        app: app.as_ref(),
    };
    match render(&s, &reach, &view).await {
        Ok(body) => html(StatusCode::OK, body),
        Err(e) => e.into_response(),
    }
}

/// What one page shows, and to whom.
struct View<'a> {
    who: String,
    csrf: Option<&'a str>,
    /// An operator sees every tenant (a tenant column and filter).
    operator: bool,
    tenant_filter: Option<&'a TenantId>,
    outcome: Option<&'a str>,
    app: Option<&'a AppId>,
}

async fn render(s: &AppState, reach: &Reach, v: &View<'_>) -> Result<String, ApiError> {
    let now = now_ms();
    let mut out = String::with_capacity(64 * 1024);
    let _ = write!(
        out,
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>pushrelay console</title>{STYLE}</head><body>\
         <header><h1>pushrelay</h1><span>{} · signed in as {} · {}</span>",
        env!("CARGO_PKG_VERSION"),
        esc(&v.who),
        esc(&rfc3339(now))
    );
    if let Some(csrf) = v.csrf {
        let _ = write!(
            out,
            "<form method=post action=/console/logout><input type=hidden name=csrf value=\"{}\"><button>Sign out</button></form>",
            esc(csrf)
        );
    }
    out.push_str("</header><main>");

    // Apps (the reach's: a tenant sees its own and the shared ones) and
    // their credential health.
    out.push_str("<section><h2>Apps</h2><table><tr><th>app</th><th>owner</th><th>provider</th><th>credentials</th><th>health</th><th>last success</th><th>last failure</th><th>expires</th></tr>");
    let apps = s.store.apps(reach).await?;
    for listing in &apps {
        let a = &listing.app;
        let owner = listing.owner.as_ref().map_or("shared", |t| t.as_str());
        let summary = s.store.app_summary(reach, a).await?.unwrap_or_default();
        let health = s.store.credential_health(reach, a).await?;
        // Push credentials only (not the webhook secret), each described by its provider.
        for (provider, sum, _) in &summary {
            let Some(client) = Provider::parse(provider).ok().and_then(|p| s.dispatcher.providers().get(p)) else { continue };
            let p = client.provider();
            let h = health.iter().find(|(hp, _)| *hp == p).map(|(_, h)| h.clone()).unwrap_or_default();
            let what = client.describe(sum);
            let expires = sum.get("notAfter").and_then(|v| v.as_i64()).map(|t| {
                let days = (t * 1000 - now) / 86_400_000;
                let class = if days < crate::domain::credentials_cert::EXPIRY_WARNING_DAYS { "bad" } else { "ok" };
                format!("<span class={class}>{} ({days} d)</span>", esc(&rfc3339(t * 1000)))
            });
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><span class=\"badge {}\">{}</span></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(a.as_str()),
                esc(owner),
                esc(provider),
                esc(&what),
                h.state().as_str(),
                h.state().as_str(),
                h.last_success_at.map(|t| esc(&rfc3339(t))).unwrap_or_default(),
                h.last_failure_at.map(|t| format!("{} {}", esc(&rfc3339(t)), esc(h.last_reason.as_deref().unwrap_or("")))).unwrap_or_default(),
                expires.unwrap_or_default()
            );
        }
    }
    out.push_str("</table></section>");

    // Providers over the last hour: operator-wide sums of every tenant's
    // pushes, so operators only.
    if v.operator {
        let minutes = s.store.provider_minutes(now / 60_000 - 59).await?;
        out.push_str("<section><h2>Providers, last hour</h2><div class=charts>");
        for provider in Provider::ALL {
            out.push_str(&provider_charts(provider, &minutes, now / 60_000));
        }
        out.push_str("</div></section>");
        // How long /sip/wake took on this node: from the wake request to the
        // phone's REGISTER, the timeout, the caller's hang-up or a failed push.
        out.push_str(
            "<section><h2>SIP wakes on this node</h2><table><tr><th>outcome</th><th>recent wakes</th><th>median</th><th>95th percentile</th></tr>",
        );
        for (outcome, n, median, p95) in s.wake.stats().summary() {
            let (median, p95) = if n == 0 {
                ("–".to_string(), "–".to_string())
            } else {
                (format!("{:.0} ms", median * 1000.0), format!("{:.0} ms", p95 * 1000.0))
            };
            out.push_str(&format!("<tr><td>{outcome}</td><td>{n}</td><td>{median}</td><td>{p95}</td></tr>"));
        }
        out.push_str("</table></section>");
    }

    // Calls.
    let calls = s.store.recent_calls(reach, v.outcome, v.app, now - CALLS_WINDOW_MS, CALLS_SHOWN).await?;
    out.push_str("<section><h2>Recent calls</h2><form method=get action=/console class=filters>");
    if v.operator {
        let tenants = s.store.tenants().await?;
        out.push_str("<label>tenant <select name=tenant><option value=\"\">all</option>");
        for t in &tenants {
            let _ = write!(out, "<option{}>{}</option>", if v.tenant_filter == Some(&t.tenant) { " selected" } else { "" }, esc(t.tenant.as_str()));
        }
        out.push_str("</select></label>");
    }
    out.push_str("<label>outcome <select name=outcome><option value=\"\">any</option>");
    for o in Outcome::ALL.map(Outcome::as_str) {
        let _ = write!(out, "<option{}>{o}</option>", if v.outcome == Some(o) { " selected" } else { "" });
    }
    out.push_str("</select></label><label>app <select name=app><option value=\"\">any</option>");
    for listing in &apps {
        let a = &listing.app;
        let _ = write!(out, "<option{}>{}</option>", if v.app == Some(a) { " selected" } else { "" }, esc(a.as_str()));
    }
    let _ = write!(
        out,
        "</select></label><button>Filter</button></form><p class=muted>{} calls shown (at most {CALLS_SHOWN}, last 7 days)</p>",
        calls.len()
    );
    let tenant_th = if v.operator { "<th>tenant</th>" } else { "" };
    let _ = write!(
        out,
        "<table><tr><th>time</th>{tenant_th}<th>user</th><th>push id</th><th>device</th><th>channel</th><th>outcome</th><th>latency</th><th>attempts</th><th>reason</th></tr>"
    );
    for c in &calls {
        call_rows(&mut out, c, v.operator);
    }
    out.push_str("</table></section>");

    // Devices.
    let dialects = s.store.devices_per_dialect(reach).await?;
    let total: i64 = dialects.iter().map(|(_, n)| n).sum();
    out.push_str("<section class=half><h2>Devices per dialect</h2><table><tr><th>dialect</th><th>devices</th></tr>");
    for (d, n) in &dialects {
        let _ = write!(out, "<tr><td>{}</td><td class=num>{n}</td></tr>", esc(d));
    }
    let _ = write!(out, "<tr><th>all</th><th class=num>{total}</th></tr></table></section>");
    let days = i64::from(s.settings.retention.stale_device_days);
    let stale = s.store.stale_devices(reach, now - days * 86_400_000, STALE_SHOWN).await?;
    let _ = write!(
        out,
        "<section class=half><h2>Stale devices</h2><p class=muted>not registered again for {days} days (oldest first, at most {STALE_SHOWN})</p>\
         <table><tr>{tenant_th}<th>user</th><th>device</th><th>dialect</th><th>app</th><th>token</th><th>last registered</th></tr>"
    );
    for st in &stale {
        let d = &st.device;
        let tenant_td = if v.operator { format!("<td>{}</td>", esc(&st.tenant)) } else { String::new() };
        let _ = write!(
            out,
            "<tr>{tenant_td}<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>…{}</td><td>{}</td></tr>",
            esc(&st.user),
            esc(&d.device),
            esc(&d.dialect),
            esc(&d.application),
            esc(&d.token_suffix),
            esc(&rfc3339(d.updated_at))
        );
    }
    out.push_str("</table></section></main></body></html>");
    Ok(out)
}

fn call_rows(out: &mut String, c: &RecentCall, with_tenant: bool) {
    let n = c.report.deliveries.len().max(1);
    let tenant_td = |rowspan: usize| if with_tenant { format!("<td rowspan={rowspan}>{}</td>", esc(&c.tenant)) } else { String::new() };
    for (i, d) in c.report.deliveries.iter().enumerate() {
        out.push_str("<tr>");
        if i == 0 {
            let _ = write!(
                out,
                "<td rowspan={n}>{}</td>{}<td rowspan={n}>{}</td><td rowspan={n}>{}</td>",
                esc(&rfc3339(c.created_at)),
                tenant_td(n),
                esc(&c.user),
                esc(&c.push_id)
            );
        }
        let _ = write!(
            out,
            "<td>{}</td><td>{}</td><td><span class=\"badge {}\">{}</span></td><td class=num>{}</td><td class=num>{}</td><td>{}</td></tr>",
            esc(d.device.as_str()),
            d.channel.as_str(),
            d.outcome.as_str(),
            d.outcome.as_str(),
            d.latency_ms.map(|ms| format!("{ms} ms")).unwrap_or_default(),
            d.attempts,
            esc(d.reason.as_deref().unwrap_or(""))
        );
    }
    if c.report.deliveries.is_empty() {
        let _ = write!(
            out,
            "<tr><td>{}</td>{}<td>{}</td><td>{}</td><td colspan=6 class=muted>no devices</td></tr>",
            esc(&rfc3339(c.created_at)),
            tenant_td(1),
            esc(&c.user),
            esc(&c.push_id)
        );
    }
}

/// p50/p99 latency and error rate of one provider per 5 minutes over the
/// last hour, as two small inline SVG charts.
fn provider_charts(provider: Provider, minutes: &[(i64, Provider, ProviderMinute)], now_minute: i64) -> String {
    let mut slots: BTreeMap<i64, ProviderMinute> = (0..12).map(|i| (i, ProviderMinute::default())).collect();
    for (m, p, stats) in minutes.iter().filter(|(_, p, _)| *p == provider) {
        let _ = p;
        let slot = 11 - ((now_minute - m) / 5).clamp(0, 11);
        slots.get_mut(&slot).expect("12 slots").add(stats);
    }
    let mut all = ProviderMinute::default();
    for s in slots.values() {
        all.add(s);
    }
    let p50: Vec<Option<f64>> = slots.values().map(|s| s.quantile_ms(0.5)).collect();
    let p99: Vec<Option<f64>> = slots.values().map(|s| s.quantile_ms(0.99)).collect();
    let errors: Vec<Option<f64>> = slots.values().map(|s| (s.requests > 0).then(|| 100.0 * s.errors as f64 / s.requests as f64)).collect();
    let summary = match (all.quantile_ms(0.5), all.quantile_ms(0.99)) {
        (Some(a), Some(b)) => format!(
            "{} requests · p50 ≤ {a} ms · p99 ≤ {b} ms · {:.1} % errors",
            all.requests,
            100.0 * all.errors as f64 / all.requests.max(1) as f64
        ),
        _ => "no requests".to_string(),
    };
    format!(
        "<figure><figcaption>{} — {}</figcaption>{}{}</figure>",
        provider.as_str().to_uppercase(),
        esc(&summary),
        svg_chart("latency (ms, log scale)", &[("p50", &p50, "#2b7bb9"), ("p99", &p99, "#d9822b")], true),
        svg_chart("errors (%)", &[("errors", &errors, "#c23030")], false)
    )
}

/// A 12-point line chart, 240×80, no script.
fn svg_chart(title: &str, series: &[(&str, &[Option<f64>], &str)], log: bool) -> String {
    let (w, h, pad) = (240.0, 80.0, 14.0);
    let scale = |v: f64| if log { (v.max(1.0)).log10() } else { v };
    let max = series.iter().flat_map(|(_, v, _)| v.iter().flatten()).map(|v| scale(*v)).fold(1.0, f64::max);
    let mut svg = format!(
        "<svg viewBox=\"0 0 {w} {h}\" width={w} height={h} role=img aria-label=\"{}\"><text x=2 y=10 class=t>{}</text>",
        esc(title),
        esc(title)
    );
    let _ = write!(svg, "<line x1={pad} y1={} x2={} y2={} class=axis />", h - 4.0, w - 2.0, h - 4.0);
    for (name, values, color) in series {
        let mut path = String::new();
        for (i, v) in values.iter().enumerate() {
            let Some(v) = v else { continue };
            let x = pad + (w - pad - 4.0) * i as f64 / 11.0;
            let y = (h - 4.0) - (h - 20.0) * scale(*v) / max;
            let _ = write!(path, "{}{x:.1},{y:.1} ", if path.is_empty() { "M" } else { "L" });
            let _ = write!(svg, "<circle cx={x:.1} cy={y:.1} r=1.8 fill=\"{color}\"><title>{name}: {v:.1}</title></circle>");
        }
        if !path.is_empty() {
            let _ = write!(svg, "<path d=\"{}\" fill=none stroke=\"{color}\" stroke-width=1.5 />", path.trim_end());
        }
    }
    let legend: Vec<String> = series.iter().map(|(n, _, c)| format!("<tspan fill=\"{c}\">■ {n}</tspan>")).collect();
    let _ = write!(svg, "<text x={} y=10 class=t text-anchor=end>{}</text></svg>", w - 2.0, legend.join(" "));
    svg
}

const STYLE: &str = "<style>\
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1c2127;background:#f6f7f9}\
header{display:flex;gap:16px;align-items:center;padding:10px 20px;background:#1c2127;color:#f6f7f9}\
header h1{font-size:18px;margin:0}header span{opacity:.8;flex:1}header form{margin:0}\
main{padding:12px 20px;display:flex;flex-wrap:wrap;gap:16px}section{background:#fff;border:1px solid #dce0e5;border-radius:6px;padding:10px 14px;flex:1 1 100%;overflow-x:auto}\
section.half{flex:1 1 40%}h2{font-size:15px;margin:4px 0 8px}table{border-collapse:collapse;width:100%}\
th,td{text-align:left;padding:3px 8px;border-bottom:1px solid #eef0f2;vertical-align:top}td.num,th.num{text-align:right}\
.badge{display:inline-block;padding:0 6px;border-radius:8px;font-size:12px;background:#e5e8eb}\
.badge.delivered,.badge.ok{background:#d4f2e0;color:#0d6630}.badge.failed,.badge.failing,.badge.token_removed{background:#fadcdc;color:#8e1b1b}\
.badge.expired{background:#fdebd3;color:#7d4e07}.bad{color:#8e1b1b;font-weight:600}.ok{color:#0d6630}.muted{color:#5f6b7c}\
.charts{display:flex;flex-wrap:wrap;gap:24px}figure{margin:0}figcaption{font-weight:600;margin-bottom:4px}\
svg .t{font-size:9px;fill:#5f6b7c}svg .axis{stroke:#c5cbd3}.filters{display:flex;gap:12px;align-items:center;margin-bottom:6px}\
.login{max-width:360px;margin:12vh auto;background:#fff;border:1px solid #dce0e5;border-radius:6px;padding:20px;display:block}\
.login label{display:block;margin:12px 0}.login input{display:block;width:100%;margin-top:4px;padding:6px;box-sizing:border-box}.err{color:#8e1b1b}\
button{padding:4px 12px}</style>";

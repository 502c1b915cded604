//! Acrobits Push Token Reporter (seeds/002): `GET /acrobits/token` with a
//! query, `POST /acrobits/token` with a form or JSON body. Success is 200
//! with no body (what the app expects). Parsing lives in `dialect::acrobits`.

use super::auth::{basic_user, peer_ip, BasicRefusal, Caller, Permission, RequestedTenant};
use super::error::{ApiError, Result};
use super::state::AppState;
use crate::dialect::acrobits::{self, RawToken};
use crate::domain::{AppId, Provider, Scope, UserId};
use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{request::Parts, HeaderMap, StatusCode};
use axum::routing::get;
use axum::Router;

/// Phone-facing: also served under `/t/{tenant}` (users of that tenant).
pub fn router() -> Router<AppState> {
    Router::new().route("/acrobits/token", get(report_get).post(report_post))
}

/// Who reports, and in which tenant's scope: the end user by HTTP Basic
/// (a user of the tenant the path names), or an API key with scope
/// `register` (whose app, if any, is the default app of the tokens).
enum Reporter {
    User(Scope, UserId),
    /// The key's scope (and bound app), and the name its rate is counted under.
    Key(Scope, String),
}

impl Reporter {
    fn scope(&self) -> &Scope {
        match self {
            Reporter::User(scope, _) | Reporter::Key(scope, _) => scope,
        }
    }
}

impl FromRequestParts<AppState> for Reporter {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let named = RequestedTenant::from_request_parts(parts, state).await?;
        let tenant_scope = named.0.clone().map_or_else(Scope::default_tenant, Scope::tenant);
        match basic_user(state, &parts.headers, peer_ip(&parts.extensions), &tenant_scope, None).await {
            Ok(user) => return Ok(Reporter::User(tenant_scope, user)),
            Err(BasicRefusal::Missing) => {}
            Err(BasicRefusal::Wrong) => return Err(ApiError::Unauthorized),
            Err(BasicRefusal::Locked(wait)) => return Err(ApiError::TooManyFailures(wait)),
            Err(BasicRefusal::Store(e)) => return Err(e.into()),
        }
        let caller = Caller::from_request_parts(parts, state).await?;
        caller.require(Permission::Register)?;
        let scope = caller.scope(state, &named).await?;
        Ok(Reporter::Key(scope, caller.limit_key().to_string()))
    }
}

async fn report_get(reporter: Reporter, State(s): State<AppState>, req: Request) -> Result<StatusCode> {
    let query = req.uri().query().unwrap_or("");
    if query.len() > acrobits::MAX_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge(acrobits::MAX_BODY_BYTES));
    }
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    store_report(&s, reporter, &pairs).await
}

async fn report_post(reporter: Reporter, State(s): State<AppState>, headers: HeaderMap, body: Body) -> Result<StatusCode> {
    let body = super::body::read_body(body, acrobits::MAX_BODY_BYTES).await.map_err(|e| e.into_api(acrobits::MAX_BODY_BYTES))?;
    let mime = super::body::media_type(&headers).unwrap_or_else(|| "application/x-www-form-urlencoded".into());
    let pairs = match mime.as_str() {
        "application/json" => acrobits::pairs_from_json(&body)?,
        "application/x-www-form-urlencoded" | "" => form_urlencoded::parse(&body).into_owned().collect(),
        _ => return Err(ApiError::UnsupportedMediaType("application/x-www-form-urlencoded or application/json")),
    };
    store_report(&s, reporter, &pairs).await
}

/// The app a reported token belongs to, and the provider its credentials
/// are for: the app whose id is the reported app id (a `.pushkit` suffix is
/// dropped when no app has the full id). A key bound to an app may only
/// report tokens of that app (403).
async fn app_of(s: &AppState, scope: &Scope, token: &RawToken, field: &'static str) -> Result<(AppId, Provider)> {
    let key_app = scope.app();
    let reported = token.app_id.as_ref().or(key_app).ok_or_else(|| {
        ApiError::bad_request(
            "missing_field",
            format!("{field}: the token's app id is required (appid_calls / appid_msgs), or an API key bound to an app"),
        )
    })?;
    let mut candidates = vec![reported.clone()];
    let stripped = acrobits::voip_topic_app(reported.as_str());
    if stripped != reported.as_str() {
        candidates.push(AppId::parse(stripped)?);
    }
    if let Some(bound) = key_app {
        if !candidates.contains(bound) {
            return Err(ApiError::WrongApp(bound.as_str().to_string()));
        }
        candidates = vec![bound.clone()];
    }
    Ok(s.registrar.first_with_credentials(scope, &candidates, &[Provider::Apns, Provider::Fcm], "APNs or FCM").await?)
}

async fn store_report(s: &AppState, reporter: Reporter, pairs: &[(String, String)]) -> Result<StatusCode> {
    let report = acrobits::parse_params(pairs)?;
    match &reporter {
        Reporter::Key(_, key) => s.limit_registrations(key)?,
        Reporter::User(scope, user) => {
            s.limit_registrations(&format!("user:{}/{user}", scope.tenant_id()))?;
            if *user != report.username {
                return Err(ApiError::Forbidden("register (the Basic user must be the reported username)"));
            }
        }
    }
    let scope = reporter.scope();
    // Android reports one token for everything: it is the call token too.
    let calls = report.calls.as_ref().or(report.msgs.as_ref()).expect("parser requires one token");
    let (app, provider) = app_of(s, scope, calls, "token_calls").await?;
    let msg = match (&report.msgs, report.calls.is_some()) {
        (Some(m), true) => Some(app_of(s, scope, m, "token_msgs").await?),
        _ => None,
    };
    let user = report.username.clone();
    let registration = report.into_registration(app, provider, msg)?;
    s.registrar.store(scope, &user, std::slice::from_ref(&registration), &Default::default()).await?;
    Ok(StatusCode::OK)
}

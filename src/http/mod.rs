//! The HTTP surface: one `router()` per resource file, merged here, plus the
//! layers every request goes through (request id, trace span, timeout).
//!
//! Architecture invariant: only `http` knows status codes and header names;
//! `http::error` (JSON) and `http::uds::UdsError` (XML) are the only places
//! that turn errors into statuses. Depends on `dialect`, `domain`, `store`,
//! `jwe`/`payload` (through dispatch), `telemetry`.

mod acrobits;
mod api_keys;
mod apps;
pub use apps::test_push_answer;
pub mod auth;
pub mod body;
mod calls;
mod console;
pub mod error;
mod health;
pub mod limit;
mod native;
pub mod serve;
pub mod sip;
mod spark;
pub mod state;
mod tenants;
mod time;
mod uds;
mod users;

pub use body::{LimitedBody, MAX_JSON_BODY};
pub use state::AppState;

use axum::http::{HeaderName, Request};
use axum::Router;
use std::time::Duration;
use tower_http::request_id::PropagateRequestIdLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

/// Every route the relay serves, as (method, path) in OpenAPI notation.
/// `schemas/openapi.yaml` must list each of them (checked by a test), and
/// the router below is built from the same modules. Each provider's
/// credential routes come from `Provider::ALL`.
pub fn routes() -> Vec<(&'static str, String)> {
    let mut out: Vec<(&'static str, String)> = FIXED_ROUTES.iter().map(|(m, p)| (*m, p.to_string())).collect();
    for provider in crate::domain::Provider::ALL {
        out.push(("put", apps::credentials_path(provider)));
        out.push(("delete", apps::credentials_path(provider)));
    }
    out
}

const FIXED_ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/v1/apps/{app_id}"),
    ("post", "/v1/apps/{app_id}/test-push"),
    ("get", "/console"),
    ("get", "/console/login"),
    ("post", "/console/login"),
    ("post", "/console/logout"),
    ("put", "/v1/apps/{app_id}/callback"),
    ("delete", "/v1/apps/{app_id}/callback"),
    ("put", "/v1/users/{userId}"),
    ("delete", "/v1/users/{userId}"),
    ("get", "/v1/users/{userId}/devices"),
    ("put", "/v1/users/{userId}/devices/{deviceId}"),
    ("delete", "/v1/users/{userId}/devices/{deviceId}"),
    ("put", "/cucm-uds/user/{userId}/device/{devicePkid}/devicetoken"),
    ("delete", "/cucm-uds/user/{userId}/device/{devicePkid}/devicetoken"),
    ("post", "/v1/calls"),
    ("get", "/v1/calls/{call_id}"),
    ("post", "/v1/calls/{call_id}/cancel"),
    ("put", "/v1/apps/{app_id}/webex"),
    ("post", "/register"),
    ("get", "/register"),
    ("delete", "/register/{device_token}"),
    ("post", "/webhook"),
    ("get", "/acrobits/token"),
    ("post", "/acrobits/token"),
    ("post", "/sip/register"),
    ("post", "/sip/wake"),
    ("post", "/sip/cancel"),
    ("post", "/v1/api-keys"),
    ("delete", "/v1/api-keys/{id}"),
    ("get", "/v1/devices/stale"),
    ("get", "/v1/tenants"),
    ("get", "/v1/tenants/{tenant}"),
    ("put", "/v1/tenants/{tenant}"),
    ("delete", "/v1/tenants/{tenant}"),
    // Every phone-facing route again under a tenant prefix (`PHONE_ROUTES`).
    ("put", "/t/{tenant}/cucm-uds/user/{userId}/device/{devicePkid}/devicetoken"),
    ("delete", "/t/{tenant}/cucm-uds/user/{userId}/device/{devicePkid}/devicetoken"),
    ("post", "/t/{tenant}/register"),
    ("get", "/t/{tenant}/register"),
    ("delete", "/t/{tenant}/register/{device_token}"),
    ("post", "/t/{tenant}/webhook"),
    ("get", "/t/{tenant}/acrobits/token"),
    ("post", "/t/{tenant}/acrobits/token"),
];

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Time limit for registration and admin requests (call events are bounded
/// by their ring window instead).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// `/metrics` alone, for the `metrics_listen` address.
pub fn metrics_router(handle: metrics_exporter_prometheus::PrometheusHandle) -> Router {
    health::metrics_only(handle).fallback(no_such_route)
}

/// The phone-facing routes, served at `/` and under `/t/{tenant}`.
fn phone_router() -> Router<AppState> {
    Router::new().merge(uds::router()).merge(spark::phone_router()).merge(acrobits::router())
}

pub fn router(state: AppState) -> Router {
    let bounded = Router::new()
        .merge(health::router(state.settings.metrics_listen.is_none()))
        .merge(apps::router())
        .merge(users::router())
        .merge(native::router())
        .merge(spark::router())
        .merge(phone_router())
        .nest("/t/{tenant}", phone_router())
        .merge(api_keys::router())
        .merge(tenants::router())
        .merge(console::router())
        .layer(TimeoutLayer::with_status_code(axum::http::StatusCode::REQUEST_TIMEOUT, REQUEST_TIMEOUT));
    // Call events are bounded by their ring window (≤ 300 s), not the timeout.
    Router::new()
        .merge(bounded)
        .merge(calls::router())
        .merge(sip::router())
        .fallback(no_such_route)
        .with_state(state)
        .layer(axum::middleware::from_fn(error::uniform_errors))
        .layer(PropagateRequestIdLayer::new(X_REQUEST_ID))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
            let id = req.headers().get(&X_REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
            tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
        }))
        .layer(RequestIdLayer)
}

/// Longest client request id kept (interface.md §6).
pub const MAX_REQUEST_ID: usize = 64;

/// Gives every request an `X-Request-Id`: a client's own is kept only when
/// it is one short token (at most `MAX_REQUEST_ID` characters of
/// `[A-Za-z0-9._-]`); anything else — too long, other characters, sent
/// twice — is replaced by a fresh UUID, so no caller can write what it
/// likes into the log. (No boxing per request, unlike a `from_fn` layer.)
#[derive(Clone, Copy)]
struct RequestIdLayer;

impl<S> tower::Layer<S> for RequestIdLayer {
    type Service = RequestId<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequestId(inner)
    }
}

#[derive(Clone)]
struct RequestId<S>(S);

impl<S, B> tower::Service<Request<B>> for RequestId<S>
where
    S: tower::Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let mut given = req.headers().get_all(&X_REQUEST_ID).iter();
        let fit = match (given.next(), given.next()) {
            (Some(v), None) => {
                let b = v.as_bytes();
                !b.is_empty() && b.len() <= MAX_REQUEST_ID && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
            }
            _ => false,
        };
        if !fit {
            let id = axum::http::HeaderValue::from_str(&crate::domain::random_uuid().to_string()).expect("a UUID is a header value");
            req.headers_mut().insert(X_REQUEST_ID, id);
        }
        self.0.call(req)
    }
}

/// Unknown paths answer in the JSON error shape too.
async fn no_such_route() -> error::ApiError {
    error::ApiError::NotFound("no such route".into())
}

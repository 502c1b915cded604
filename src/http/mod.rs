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
pub mod serve;
pub mod state;
pub mod sip;
mod spark;
mod time;
mod uds;
mod users;

pub use body::{LimitedBody, MAX_JSON_BODY};
pub use state::AppState;

use axum::http::{HeaderName, Request};
use axum::Router;
use std::time::Duration;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

/// Every route the relay serves, as (method, path) in OpenAPI notation.
/// `schemas/openapi.yaml` must list each of them (checked by a test), and
/// the router below is built from the same modules.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/v1/apps/{app_id}"),
    ("put", "/v1/apps/{app_id}/apns"),
    ("delete", "/v1/apps/{app_id}/apns"),
    ("put", "/v1/apps/{app_id}/fcm"),
    ("delete", "/v1/apps/{app_id}/fcm"),
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
    ("post", "/v1/api-keys"),
    ("delete", "/v1/api-keys/{id}"),
    ("get", "/v1/devices/stale"),
];

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Time limit for registration and admin requests (call events are bounded
/// by their ring window instead).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// `/metrics` alone, for the `metrics_listen` address.
pub fn metrics_router(handle: metrics_exporter_prometheus::PrometheusHandle) -> Router {
    health::metrics_only(handle).fallback(no_such_route)
}

pub fn router(state: AppState) -> Router {
    let bounded = Router::new()
        .merge(health::router(state.settings.metrics_listen.is_none()))
        .merge(apps::router())
        .merge(users::router())
        .merge(uds::router())
        .merge(spark::router())
        .merge(acrobits::router())
        .merge(api_keys::router())
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
        .layer(SetRequestIdLayer::new(X_REQUEST_ID, MakeRequestUuid))
}

/// Unknown paths answer in the JSON error shape too.
async fn no_such_route() -> error::ApiError {
    error::ApiError::NotFound("no such route".into())
}

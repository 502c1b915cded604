//! `/healthz`, `/readyz`, `/metrics` (unauthenticated).

use super::state::AppState;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

/// `/metrics` is left out when it has its own listener (`metrics_listen`).
pub fn router(with_metrics: bool) -> Router<AppState> {
    let r = Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz));
    if with_metrics {
        r.route("/metrics", get(metrics_text))
    } else {
        r
    }
}

/// The router of the `metrics_listen` address: `/metrics` only.
pub fn metrics_only(handle: metrics_exporter_prometheus::PrometheusHandle) -> Router {
    Router::new().route("/metrics", get(move || async move { render(&handle) }))
}

fn render(handle: &metrics_exporter_prometheus::PrometheusHandle) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render())
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    match s.store.ping().await {
        Ok(()) => (StatusCode::OK, "ok"),
        Err(e) => {
            metrics::counter!(crate::telemetry::STORE_ERRORS).increment(1);
            tracing::warn!(error = %e, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "store unavailable")
        }
    }
}

async fn metrics_text(State(s): State<AppState>) -> impl IntoResponse {
    render(&s.metrics)
}

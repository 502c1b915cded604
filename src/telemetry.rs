//! Logs and metrics set-up, and the metric names (interface.md §2).
//! Depends on nothing else in the crate.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

/// Counter: registrations accepted, label `dialect`.
pub const REGISTRATIONS: &str = "pushrelay_registrations_total";
/// Counter: pushes finished, labels `provider`, `outcome`.
pub const PUSHES: &str = "pushrelay_pushes_total";
/// Histogram (seconds): one provider request, label `provider`.
pub const PROVIDER_LATENCY: &str = "pushrelay_provider_latency_seconds";
/// Counter: retried provider attempts, label `provider`.
pub const RETRIES: &str = "pushrelay_retries_total";
/// Counter: dead tokens removed, label `provider`.
pub const TOKENS_REMOVED: &str = "pushrelay_tokens_removed_total";
/// Counter: store operations that failed.
pub const STORE_ERRORS: &str = "pushrelay_store_errors_total";
/// Counter: keys locked out after too many failed authentications.
pub const AUTH_LOCKOUTS: &str = "pushrelay_auth_lockouts_total";
/// Counter: webhook deliveries refused or skipped, label `reason`
/// (`bad_signature`, `duplicate`, `stale`).
pub const WEBHOOKS_REFUSED: &str = "pushrelay_webhooks_refused_total";

/// Start logging once (`RUST_LOG` filters; `PUSHRELAY_LOG_FORMAT=json` for
/// JSON lines). Safe to call more than once.
pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,hyper=warn,h2=warn"));
        let json = std::env::var("PUSHRELAY_LOG_FORMAT").map(|v| v == "json").unwrap_or(false);
        let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
        let _ = if json { builder.json().try_init() } else { builder.try_init() };
    });
}

/// The process-wide Prometheus recorder (installed on first use, so several
/// test applications in one process share it).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(PROVIDER_LATENCY.to_string()),
                    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0],
                )
                .expect("static buckets")
                .build_recorder();
            let handle = recorder.handle();
            let _ = metrics::set_global_recorder(recorder);
            for (name, help) in [
                (REGISTRATIONS, "Device registrations accepted, by dialect"),
                (PUSHES, "Pushes finished, by provider and outcome"),
                (RETRIES, "Provider attempts retried"),
                (TOKENS_REMOVED, "Dead device tokens removed"),
                (STORE_ERRORS, "Store operations that failed"),
                (AUTH_LOCKOUTS, "Keys locked out after too many failed authentications"),
                (WEBHOOKS_REFUSED, "Webhook deliveries refused or skipped, by reason"),
            ] {
                metrics::describe_counter!(name, help);
            }
            metrics::describe_histogram!(PROVIDER_LATENCY, metrics::Unit::Seconds, "Provider request latency");
            handle
        })
        .clone()
}

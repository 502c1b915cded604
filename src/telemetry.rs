//! Logs and metrics set-up, and the metric names (interface.md §2, §7).
//! Depends on `config` (the log format) and `domain` (label values).

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

/// Gauge: 1, label `version` (the running build).
pub const BUILD_INFO: &str = "pushrelay_build_info";
/// Gauge (epoch seconds): a certificate credential's notAfter, labels `app`, `provider`.
pub const CREDENTIAL_EXPIRY: &str = "pushrelay_credential_expiry_timestamp_seconds";
/// Counter: connections the relay closed on its own, label `reason`
/// (`http::serve::CloseReason`).
pub const CONNECTIONS_CLOSED: &str = "pushrelay_connections_closed_total";
/// Gauge: provider HTTP clients (each its pooled connections; APNs one per
/// app and environment), labels `provider` and `state` (`CONNECTION_STATES`:
/// `new` until the first answer on it, then `up`).
pub const PROVIDER_CONNECTIONS: &str = "pushrelay_provider_connections";
/// Counter: provider connections replaced because a push got no answer in
/// time (`providers.answer_timeout_ms`), label `provider`.
pub const PROVIDER_RECONNECTS: &str = "pushrelay_provider_reconnects_total";
/// Histogram: a `/sip/wake` from the request to its end, label `outcome`
/// (`WAKE_OUTCOMES`).
pub const WAKE_SECONDS: &str = "pushrelay_wake_seconds";
/// Counter: delivery callbacks, label `outcome` (`CALLBACK_OUTCOMES`).
pub const CALLBACKS: &str = "pushrelay_callbacks_total";

/// How log lines are written (never with colour codes unless stderr is a
/// terminal).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Start logging once (`RUST_LOG` filters) as text or JSON lines, with
/// colour codes only when stderr is a terminal (never in log files or
/// journald). Safe to call more than once; the first call wins.
pub fn init_tracing(format: LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,hyper=warn,h2=warn"));
        let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal());
        let _ = match format {
            LogFormat::Json => builder.json().try_init(),
            LogFormat::Text => builder.try_init(),
        };
    });
}

/// The label values each counter is known with, so every series exists at
/// 0 from the start (a restart is not a blank page, and `rate()` works
/// from the first scrape).
fn zero_series() {
    use crate::domain::{Dialect, Outcome, Provider};
    for d in Dialect::ALL {
        metrics::counter!(REGISTRATIONS, "dialect" => d.as_str()).absolute(0);
    }
    for p in Provider::ALL {
        for o in Outcome::ALL {
            metrics::counter!(PUSHES, "provider" => p.as_str(), "outcome" => o.as_str()).absolute(0);
        }
        metrics::counter!(RETRIES, "provider" => p.as_str()).absolute(0);
        metrics::counter!(TOKENS_REMOVED, "provider" => p.as_str()).absolute(0);
        // Registered with no samples: rendered with count 0.
        let _ = metrics::histogram!(PROVIDER_LATENCY, "provider" => p.as_str());
        metrics::counter!(PROVIDER_RECONNECTS, "provider" => p.as_str()).absolute(0);
        for state in CONNECTION_STATES {
            metrics::gauge!(PROVIDER_CONNECTIONS, "provider" => p.as_str(), "state" => *state).increment(0.0);
        }
    }
    for outcome in WAKE_OUTCOMES {
        let _ = metrics::histogram!(WAKE_SECONDS, "outcome" => *outcome);
    }
    metrics::counter!(STORE_ERRORS).absolute(0);
    metrics::counter!(AUTH_LOCKOUTS).absolute(0);
    for reason in WEBHOOK_REFUSAL_REASONS {
        metrics::counter!(WEBHOOKS_REFUSED, "reason" => *reason).absolute(0);
    }
    for outcome in CALLBACK_OUTCOMES {
        metrics::counter!(CALLBACKS, "outcome" => *outcome).absolute(0);
    }
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

/// Every `reason` of `WEBHOOKS_REFUSED`.
pub const WEBHOOK_REFUSAL_REASONS: &[&str] = &["bad_signature", "duplicate", "stale"];
/// Every `state` of `PROVIDER_CONNECTIONS`.
pub const CONNECTION_STATES: &[&str] = &["new", "up"];
/// Every `outcome` of `WAKE_SECONDS`: the phone registered, the wait timed
/// out, the call was cancelled, or the push failed for good.
pub const WAKE_OUTCOMES: &[&str] = &["registered", "timeout", "cancelled", "push_failed"];
/// Every `outcome` of `CALLBACKS`.
pub const CALLBACK_OUTCOMES: &[&str] = &["delivered", "retried", "abandoned"];

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
                .set_buckets_for_metric(Matcher::Full(WAKE_SECONDS.to_string()), &[0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0])
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
                (CONNECTIONS_CLOSED, "Connections the relay closed on its own, by reason"),
                (CALLBACKS, "Delivery callbacks, by outcome"),
                (PROVIDER_RECONNECTS, "Provider connections replaced after a push got no answer in time"),
            ] {
                metrics::describe_counter!(name, help);
            }
            metrics::describe_histogram!(PROVIDER_LATENCY, metrics::Unit::Seconds, "Provider request latency");
            metrics::describe_histogram!(
                WAKE_SECONDS,
                metrics::Unit::Seconds,
                "A /sip/wake from the request to the phone's REGISTER, the timeout, the cancel or a failed push, by outcome"
            );
            metrics::describe_gauge!(PROVIDER_CONNECTIONS, "Provider HTTP clients (pooled connections), by provider and state");
            metrics::describe_gauge!(BUILD_INFO, "The running build (value 1), by version");
            metrics::describe_gauge!(CREDENTIAL_EXPIRY, metrics::Unit::Seconds, "A certificate credential's notAfter, by app and provider");
            zero_series();
            handle
        })
        .clone()
}

use super::{AppId, CallId, Channel, DevicePkid};
use serde::Serialize;

named! {
    /// How delivery to one device ended. Data, not a log line.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum Outcome {
        Delivered => "delivered",
        TokenRemoved => "token_removed",
        Failed => "failed",
        Expired => "expired",
        /// Nothing was sent on purpose (a cancel to a VoIP-only device).
        Skipped => "skipped",
    }
}

impl Outcome {}

/// One device's line in a call report (`POST /v1/calls` answer).
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Delivery {
    pub device: DevicePkid,
    pub channel: Channel,
    /// The app the device is registered with (a key bound to an app sees
    /// only its own app's lines). Absent in reports stored before tenants.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub application: Option<AppId>,
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub provider_status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
    pub attempts: u32,
    /// From the first attempt to the outcome (console, callbacks).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub latency_ms: Option<u64>,
}

impl Delivery {
    pub fn new(device: &DevicePkid, channel: Channel, outcome: Outcome, provider_status: Option<u16>, reason: Option<String>, attempts: u32) -> Self {
        Self { device: device.clone(), channel, application: None, outcome, provider_status, reason, attempts, latency_ms: None }
    }

    /// The line of a device of `app`.
    pub fn of_app(mut self, app: &AppId) -> Self {
        self.application = Some(app.clone());
        self
    }

    pub fn with_latency(mut self, took: std::time::Duration) -> Self {
        self.latency_ms = Some(took.as_millis() as u64);
        self
    }
}

/// The report of one call event: one `Delivery` per device.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct CallReport {
    pub call_id: String,
    pub deliveries: Vec<Delivery>,
    /// `false` when the store could not keep this report (the pushes went
    /// out: the backend must not retry the call). Absent when it was kept.
    #[serde(default = "kept", skip_serializing_if = "is_kept")]
    pub report_saved: bool,
    /// `true` when the devices came from this node's device cache because
    /// the store could not be read (they may be older than its last change).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub devices_from_stale_cache: bool,
}

fn kept() -> bool {
    true
}

fn is_kept(saved: &bool) -> bool {
    *saved
}

/// The `reason` of a push refused because its claim could not be written.
pub const STORE_UNAVAILABLE: &str = "store_unavailable";

impl CallReport {
    pub fn new(call_id: &CallId, deliveries: Vec<Delivery>) -> Self {
        Self { call_id: call_id.as_str().to_string(), deliveries, report_saved: true, devices_from_stale_cache: false }
    }

    /// Whether any push reached a provider (or was held by another call):
    /// false when every line is a push refused for want of the store.
    pub fn pushed_anything(&self) -> bool {
        self.deliveries.iter().any(|d| !(d.outcome == Outcome::Failed && d.reason.as_deref().is_some_and(|r| r.starts_with(STORE_UNAVAILABLE))))
    }

    /// Only the lines of devices of `app` (`None`: every line). A line
    /// without an app (stored before tenants) is kept only unfiltered.
    pub fn only_app(mut self, app: Option<&AppId>) -> Self {
        if let Some(app) = app {
            self.deliveries.retain(|d| d.application.as_ref() == Some(app));
        }
        self
    }
}

//! The hostile-caller suite (issue "Safe on the open Internet"): each test
//! reproduces one finding against the real relay over real sockets and the
//! strict mocks, and asserts what a caller sees now.
//!
//! - `webhooks`    unsigned/unknown-app/replayed/stale webhooks, other dialects
//! - `connections` idle and half-open sockets, the per-address cap, a low file limit
//! - `auth`        password guessing, timing of unknown users, bearer lock-out
//! - `delivery`    retry floor and cap, duplicate calls, token hygiene, drain at shutdown
//! - `limits`      the device cap, app-bound keys, SIP per-contact expiry
//! - `master_key`  missing or wrong key file, unreadable rows, online rotation
//! - `edges`       IPv6 address groups, the header deadline of a `PRI` request,
//!   guesses spread over many names, request ids, console forms, file modes

mod auth;
pub mod connections;
mod delivery;
mod edges;
mod limits;
mod master_key;
mod webhooks;

use crate::helpers::*;
use std::collections::HashMap;

/// A relay against the mocks, with extra `PUSHRELAY_*` settings.
pub async fn spawn_with_env(extra: &[(&str, &str)]) -> (TestApp, Mocks) {
    spawn_app_with_mocks_and_env("", extra).await
}

/// Settings as a map, for `spawn_with`.
pub fn env_of(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

//! pushrelay: wakes phones for incoming calls.
//!
//! Call-control backends register device tokens in the dialects they
//! already speak (CUCM UDS XML, Webex JSON, Acrobits, SIP), pushrelay stores
//! them, and on a call event it builds the payload (for CUCM devices a V2
//! JSON encrypted as a compact JWE with the device's key) and delivers it
//! through APNs (HTTP/2) or FCM HTTP v1.
//!
//! Code map (full version in docs/ARCHITECTURE.md):
//! - `domain`    parsed values (ids, channel, token, key, credentials, outcomes)
//! - `dialect`   wire formats → `domain::Registration`
//! - `register`  the registration steps every dialect shares
//! - `jwe`       compact JWE `dir` + AES-GCM
//! - `payload`   call event + device → bytes to push
//! - `envelope`  the master key and the sealing of secrets at rest
//! - `store`     the only place with SQL
//! - `dispatch`  one call: claim, deliver with retries, report
//! - `provider`  APNs and FCM HTTP v1 clients
//! - `wake`      `/sip/wake` waiters released by registrations
//! - `callbacks` final reports posted to the apps' callback URLs
//! - `http`      routes, auth extractors, the one error → status mapping
//! - `config`, `cli`, `telemetry`, `secret`, `startup`: the process around them
//!
//! Public are the modules the binaries, the integration tests and the
//! benchmark use; `callbacks`, `dispatch`, `register` and `wake` are internal.

mod callbacks;
pub mod cli;
pub mod config;
pub mod dialect;
mod dispatch;
pub mod domain;
pub mod envelope;
pub mod http;
pub mod jwe;
pub mod payload;
pub mod provider;
mod register;
pub mod secret;
pub mod startup;
pub mod store;
pub mod telemetry;
mod wake;

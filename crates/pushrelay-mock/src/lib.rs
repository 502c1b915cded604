//! Mock push services, as strict as the real ones, for integration tests
//! and benchmarks: real TLS sockets on 127.0.0.1 with certificates from a
//! runtime-generated test CA.
//!
//! - `tls`      `TestPki`: CA, `localhost` server cert, client certs (rcgen)
//! - `apns`     `MockApns`: HTTP/2 APNs provider API (token and cert auth)
//! - `fcm`      `MockFcm`: FCM HTTP v1 `messages:send` plus the OAuth token endpoint
//! - `fixtures` valid `.p8` keys and service-account JSON for tests
//!
//! Depends on nothing else in the crate: the mocks speak only the wire
//! formats of protocol.md §4–§5, so they test the clients from outside.
//! Production code never uses this module.

pub mod apns;
pub mod fcm;
pub mod fixtures;
mod server;
pub mod tls;

pub use apns::{MockApns, MockApnsConfig, MockApnsKey, RecordedRequest, ScriptedReply};
pub use fcm::{FcmReply, MockFcm};
pub use server::ConnInfo;
pub use tls::{ClientCert, TestPki};

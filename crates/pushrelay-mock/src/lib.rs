//! Mock push services, as strict as the real ones, for integration tests
//! and benchmarks: real TLS sockets on 127.0.0.1 with certificates from a
//! runtime-generated test CA.
//!
//! - `tls`      `TestPki`: CA, `localhost` server cert, client certs (rcgen)
//! - `apns`     `MockApns`: HTTP/2 APNs provider API (token and cert auth)
//! - `fcm`      `MockFcm`: FCM HTTP v1 `messages:send` plus the OAuth token endpoint
//! - `hms`      `MockHms`: Huawei Push Kit v1 `messages:send` plus the Huawei
//!   OAuth client-credentials token endpoint
//! - `webpush`  `MockWebPush`: a Web Push service (RFC 8030 push resources,
//!   RFC 8291 payload decryption, RFC 8292 VAPID checks) that also plays the
//!   browser by creating subscriptions
//! - `fixtures` valid `.p8` keys and service-account JSON for tests
//!
//! Depends on nothing else in the crate: the mocks speak only the wire
//! formats of protocol.md §4–§5 (and the public Huawei and Web Push
//! specifications), so they test the clients from outside.
//! Production code never uses this module.

pub mod apns;
pub mod fcm;
pub mod fixtures;
pub mod hms;
mod server;
pub mod tls;
pub mod webpush;

pub use apns::{MockApns, MockApnsConfig, MockApnsKey, RecordedRequest, ScriptedReply};
pub use fcm::{FcmReply, MockFcm};
pub use hms::MockHms;
pub use server::ConnInfo;
pub use tls::{ClientCert, TestPki};
pub use webpush::{MockWebPush, PushedMessage, Subscription};

#[cfg(test)]
pub(crate) mod testutil {
    use crate::TestPki;

    /// An HTTPS client (h2 or HTTP/1.1 by ALPN) that trusts only the PKI's CA.
    pub fn client(pki: &TestPki) -> reqwest::Client {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pki.ca_der()).expect("ca root");
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        reqwest::Client::builder().use_preconfigured_tls(cfg).timeout(std::time::Duration::from_secs(10)).build().expect("reqwest client")
    }
}

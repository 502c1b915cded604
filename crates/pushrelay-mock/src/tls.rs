//! Test PKI generated at runtime with rcgen: one CA, a server certificate for
//! `localhost`/`127.0.0.1` signed by it, and client certificates signed by it
//! (APNs certificate auth). Nothing is read from disk.

use rcgen::{BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::sync::Arc;

/// A CA plus a `localhost` server certificate signed by it.
pub struct TestPki {
    ca_cert: Certificate,
    ca_key: KeyPair,
    server_cert: Certificate,
    server_key: KeyPair,
}

/// A client certificate (chain of one) and its PKCS#8 key, both PEM.
#[derive(Clone)]
pub struct ClientCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestPki {
    /// Generate a fresh CA and server certificate (P-256, fast).
    pub fn generate() -> Arc<Self> {
        let ca_key = KeyPair::generate().expect("ca key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca.distinguished_name.push(DnType::CommonName, "pushrelay mock CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let ca_cert = ca.self_signed(&ca_key).expect("ca cert");

        let server_key = KeyPair::generate().expect("server key");
        let mut sp = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).expect("server params");
        sp.distinguished_name.push(DnType::CommonName, "localhost");
        sp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        sp.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let server_cert = sp.signed_by(&server_key, &ca_cert, &ca_key).expect("server cert");
        Arc::new(Self { ca_cert, ca_key, server_cert, server_key })
    }

    /// The CA certificate (PEM): what a client must trust (`tls.extra_ca_file`).
    pub fn ca_pem(&self) -> String {
        self.ca_cert.pem()
    }

    /// The `localhost`/`127.0.0.1` server certificate and the CA (PEM chain),
    /// and its key (PKCS#8 PEM): for serving HTTPS from files.
    pub fn server_pem(&self) -> (String, String) {
        (format!("{}{}", self.server_cert.pem(), self.ca_cert.pem()), self.server_key.serialize_pem())
    }

    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.ca_cert.der().clone()
    }

    /// A new client certificate signed by the CA, subject CN = `common_name`
    /// (Apple puts the bundle id there, e.g. `Apple VoIP Services: com.example.app`).
    pub fn client_cert(&self, common_name: &str) -> ClientCert {
        let key = KeyPair::generate().expect("client key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("client params");
        p.distinguished_name.push(DnType::CommonName, common_name);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = p.signed_by(&key, &self.ca_cert, &self.ca_key).expect("client cert");
        ClientCert { cert_pem: cert.pem(), key_pem: key.serialize_pem() }
    }

    /// A client certificate from a different, untrusted CA (for refusal tests).
    pub fn foreign_client_cert(common_name: &str) -> ClientCert {
        TestPki::generate().client_cert(common_name)
    }

    /// rustls server config: the server certificate, the given ALPN list and,
    /// if `client_auth`, optional client certificates verified against the CA.
    pub fn server_config(&self, alpn: &[&[u8]], client_auth: bool) -> rustls::ServerConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions().expect("protocol versions");
        let builder = if client_auth {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(self.ca_der()).expect("ca root");
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key.serialize_der()));
        let mut cfg = builder.with_single_cert(vec![self.server_cert.der().clone(), self.ca_der()], key).expect("server cert");
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        cfg
    }
}

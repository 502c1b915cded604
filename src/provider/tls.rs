//! rustls client configurations for the providers: ring crypto, webpki
//! roots plus the operator's extra CA PEM (`tls.extra_ca_file`), an optional
//! client certificate (APNs certificate auth) and the ALPN list
//! (`h2` only for APNs; `h2`, `http/1.1` for FCM/OAuth).

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};
use std::sync::Arc;

use crate::domain::credentials_cert::{pem_certs, pem_private_key};

pub const ALPN_H2: &[&[u8]] = &[b"h2"];
pub const ALPN_H2_HTTP1: &[&[u8]] = &[b"h2", b"http/1.1"];

/// webpki roots + every CERTIFICATE in `extra_ca_pem`.
pub fn root_store(extra_ca_pem: Option<&str>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(pem) = extra_ca_pem {
        let certs = pem_certs(pem.as_bytes()).map_err(|e| format!("extra CA PEM is malformed: {e}"))?;
        if certs.is_empty() {
            return Err("extra CA PEM holds no CERTIFICATE".into());
        }
        for c in certs {
            roots.add(c).map_err(|e| format!("extra CA certificate refused: {e}"))?;
        }
    }
    Ok(roots)
}

/// Parse a client certificate chain and its private key (PEM).
pub fn client_identity(cert_pem: &str, key_pem: &str) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let certs = pem_certs(cert_pem.as_bytes()).map_err(|_| "client certificate PEM is malformed".to_string())?;
    if certs.is_empty() {
        return Err("client certificate PEM holds no CERTIFICATE".into());
    }
    let key = pem_private_key(key_pem.as_bytes())
        .map_err(|_| "client key PEM is malformed".to_string())?
        .ok_or_else(|| "client key PEM holds no private key".to_string())?;
    Ok((certs, key))
}

/// A client config for `alpn`, trusting webpki + `extra_ca_pem`, presenting
/// `client_cert` (chain PEM, key PEM) if given.
pub fn client_config(extra_ca_pem: Option<&str>, client_cert: Option<(&str, &str)>, alpn: &[&[u8]]) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(root_store(extra_ca_pem)?);
    let mut cfg = match client_cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let (certs, key) = client_identity(cert, key)?;
            builder.with_client_auth_cert(certs, key).map_err(|e| format!("client certificate refused: {e}"))?
        }
    };
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_ca_is_added_to_webpki_roots() {
        let pki = pushrelay_mock::TestPki::generate();
        let base = root_store(None).unwrap().len();
        assert_eq!(root_store(Some(&pki.ca_pem())).unwrap().len(), base + 1);
        assert!(root_store(Some("not pem")).is_err());
    }

    #[test]
    fn client_config_sets_alpn_and_client_cert() {
        let pki = pushrelay_mock::TestPki::generate();
        let cc = pki.client_cert("Apple VoIP Services: com.example.app");
        let cfg = client_config(Some(&pki.ca_pem()), Some((&cc.cert_pem, &cc.key_pem)), ALPN_H2).unwrap();
        assert_eq!(cfg.alpn_protocols, vec![b"h2".to_vec()]);
        assert!(cfg.client_auth_cert_resolver.has_certs());
        assert!(client_config(None, Some(("x", "y")), ALPN_H2).is_err());
    }
}

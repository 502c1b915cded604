//! APNs certificate-auth material: PEM or PKCS#12 in, a PEM certificate
//! chain and PEM PKCS#8 key out, proven to load into rustls and to match.

/// A certificate credential is warned about (log, console) from this many
/// days before its notAfter.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

use super::FieldError;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

fn bad(code: &'static str, msg: impl Into<String>) -> FieldError {
    FieldError::new("certificate", code, msg)
}

/// Split an uploaded certificate (PEM text, or PKCS#12 DER with `password`)
/// into (certificate chain PEM, private key PEM).
pub(crate) fn split_certificate(raw: &[u8], password: Option<&str>) -> Result<(String, String), FieldError> {
    let looks_pem = std::str::from_utf8(raw).map(|s| s.contains("-----BEGIN")).unwrap_or(false);
    if looks_pem {
        let text = std::str::from_utf8(raw).expect("checked utf8");
        let (certs, key) = parse_pem(text)?;
        let chain: String = certs.iter().map(|c| pem::encode(&pem::Pem::new("CERTIFICATE", c.as_ref().to_vec()))).collect();
        let key_pem = pem::encode(&pem::Pem::new(key_label(&key), key.secret_der().to_vec()));
        return Ok((chain, key_pem));
    }
    let store = p12_keystore::KeyStore::from_pkcs12(raw, password.unwrap_or(""), p12_keystore::Pkcs12ImportPolicy::Relaxed)
        .map_err(|e| bad("invalid_certificate", format!("certificate is neither PEM nor a readable PKCS#12 file (wrong password?): {e}")))?;
    let (_, chain) =
        store.private_key_chain().ok_or_else(|| bad("invalid_certificate", "the PKCS#12 file holds no private key with its certificate"))?;
    if chain.certs().is_empty() {
        return Err(bad("invalid_certificate", "the PKCS#12 file holds a key but no certificate"));
    }
    let certs: String = chain.certs().iter().map(|c| pem::encode(&pem::Pem::new("CERTIFICATE", c.as_der().to_vec()))).collect();
    let key = pem::encode(&pem::Pem::new("PRIVATE KEY", chain.key().as_der().to_vec()));
    Ok((certs, key))
}

fn key_label(key: &PrivateKeyDer<'_>) -> &'static str {
    match key {
        PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
        PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
        _ => "PRIVATE KEY",
    }
}

/// Every CERTIFICATE block of a PEM text (`Err` if one is malformed).
pub fn pem_certs(text: &[u8]) -> Result<Vec<CertificateDer<'static>>, rustls_pki_types::pem::Error> {
    use rustls_pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(text).collect()
}

/// The first private key of a PEM text (PKCS#8, PKCS#1 or SEC1); `Ok(None)` if there is none.
pub fn pem_private_key(text: &[u8]) -> Result<Option<PrivateKeyDer<'static>>, rustls_pki_types::pem::Error> {
    use rustls_pki_types::pem::PemObject;
    match PrivateKeyDer::from_pem_slice(text) {
        Ok(k) => Ok(Some(k)),
        Err(rustls_pki_types::pem::Error::NoItemsFound) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Parse a PEM bundle holding certificates and one private key.
pub fn parse_pem(text: &str) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), FieldError> {
    let certs = pem_certs(text.as_bytes()).map_err(|_| bad("invalid_certificate", "certificate PEM is malformed"))?;
    if certs.is_empty() {
        return Err(bad("invalid_certificate", "certificate PEM holds no CERTIFICATE block"));
    }
    let key = pem_private_key(text.as_bytes())
        .map_err(|_| bad("invalid_certificate", "certificate PEM has a malformed private key"))?
        .ok_or_else(|| bad("invalid_certificate", "certificate PEM holds no PRIVATE KEY block (include the key with the certificate)"))?;
    Ok((certs, key))
}

/// Prove the chain and key load into rustls and belong together.
pub(crate) fn check_pair(cert_pem: &str, key_pem: &str) -> Result<(), FieldError> {
    let both = format!("{cert_pem}\n{key_pem}");
    let (certs, key) = parse_pem(&both)?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|_| bad("invalid_certificate", "the certificate's private key type is not supported"))?;
    rustls::sign::CertifiedKey::new(certs, signer)
        .keys_match()
        .map_err(|_| bad("invalid_certificate", "the private key does not match the certificate"))
}

/// The notAfter of the first certificate in a PEM chain, in epoch seconds
/// (APNs certificate credentials expire yearly: credential health warns).
pub fn not_after(cert_pem: &str) -> Option<i64> {
    use x509_cert::der::Decode;
    let first = pem_certs(cert_pem.as_bytes()).ok()?.into_iter().next()?;
    let cert = x509_cert::Certificate::from_der(first.as_ref()).ok()?;
    let t = cert.tbs_certificate().validity().not_after.to_unix_duration();
    i64::try_from(t.as_secs()).ok()
}

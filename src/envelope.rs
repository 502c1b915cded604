//! Secrets at rest: AES-256-GCM envelopes under the master key.
//!
//! Every device key and provider credential goes through `MasterKey::seal`
//! before the store writes it, so the database file alone reveals nothing.
//! The envelope binds a context string (which row it belongs to) as AAD, so
//! a ciphertext copied into another row does not open.
//! Format: `v1.<base64url(nonce)>.<base64url(ciphertext||tag)>`.
//! Depends on `secret` only.

use crate::secret::Secret;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use rand::RngCore;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("master key file {path}: {message}")]
    KeyFile { path: String, message: String },
    #[error("stored secret cannot be opened (wrong master key or corrupted row)")]
    Open,
}

/// The 32-byte master key. Never printed.
#[derive(Clone)]
pub struct MasterKey {
    key: Secret<Vec<u8>>,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self { key: Secret::new(bytes.to_vec()) }
    }

    pub fn generate() -> Self {
        let mut b = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut b);
        Self::from_bytes(b)
    }

    /// Read the key file (base64 of 32 bytes), or create it with mode 0600.
    /// Returns the key and whether it was created now.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), EnvelopeError> {
        let err = |m: String| EnvelopeError::KeyFile { path: path.display().to_string(), message: m };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let raw = STANDARD.decode(text.trim()).map_err(|_| err("is not base64".into()))?;
                let arr: [u8; 32] = raw.try_into().map_err(|_| err("must hold base64 of exactly 32 bytes".into()))?;
                Ok((Self::from_bytes(arr), false))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate();
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
                }
                let mut opts = std::fs::OpenOptions::new();
                opts.write(true).create_new(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::OpenOptionsExt;
                    opts.mode(0o600);
                }
                use std::io::Write;
                let mut f = opts.open(path).map_err(|e| err(e.to_string()))?;
                writeln!(f, "{}", STANDARD.encode(key.key.expose())).map_err(|e| err(e.to_string()))?;
                f.sync_all().map_err(|e| err(e.to_string()))?;
                Ok((key, true))
            }
            Err(e) => Err(err(e.to_string())),
        }
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new_from_slice(self.key.expose()).expect("32-byte key")
    }

    /// Encrypt `plaintext` for the row named by `context`.
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> String {
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ct = self
            .cipher()
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad: context.as_bytes() })
            .expect("AES-GCM encryption cannot fail for in-memory buffers");
        format!("v1.{}.{}", URL_SAFE_NO_PAD.encode(nonce), URL_SAFE_NO_PAD.encode(ct))
    }

    /// Decrypt an envelope written by `seal` with the same `context`.
    pub fn open(&self, context: &str, sealed: &str) -> Result<Secret<Vec<u8>>, EnvelopeError> {
        let mut parts = sealed.split('.');
        let (Some("v1"), Some(n), Some(c), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(EnvelopeError::Open);
        };
        let nonce = URL_SAFE_NO_PAD.decode(n).map_err(|_| EnvelopeError::Open)?;
        let ct = URL_SAFE_NO_PAD.decode(c).map_err(|_| EnvelopeError::Open)?;
        if nonce.len() != 12 {
            return Err(EnvelopeError::Open);
        }
        self.cipher()
            .decrypt(Nonce::from_slice(&nonce), Payload { msg: &ct, aad: context.as_bytes() })
            .map(Secret::new)
            .map_err(|_| EnvelopeError::Open)
    }

    /// `open` for UTF-8 secrets.
    pub fn open_string(&self, context: &str, sealed: &str) -> Result<Secret<String>, EnvelopeError> {
        let raw = self.open(context, sealed)?;
        String::from_utf8(raw.expose().clone()).map(Secret::new).map_err(|_| EnvelopeError::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secret_opens_only_in_its_own_row() {
        let k = MasterKey::generate();
        let s = k.seal("device:alice/1", b"secret bytes");
        assert!(!s.contains("secret"));
        assert_eq!(k.open("device:alice/1", &s).unwrap().expose(), b"secret bytes");
        assert!(k.open("device:bob/1", &s).is_err());
        assert!(MasterKey::generate().open("device:alice/1", &s).is_err());
    }

    #[test]
    fn key_file_is_created_private_and_reread() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/m.key");
        let (k1, created) = MasterKey::load_or_create(&p).unwrap();
        assert!(created);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let (k2, created) = MasterKey::load_or_create(&p).unwrap();
        assert!(!created);
        let s = k1.seal("x", b"y");
        assert_eq!(k2.open("x", &s).unwrap().expose(), b"y");
    }

    #[test]
    fn a_bad_key_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.key");
        std::fs::write(&p, "c2hvcnQ=\n").unwrap();
        let e = MasterKey::load_or_create(&p).unwrap_err().to_string();
        assert!(e.contains("32 bytes"), "{e}");
    }
}

//! Secrets at rest: AES-256-GCM envelopes under the master key.
//!
//! Every device key and provider credential goes through `Keyring::seal`
//! before the store writes it, so the database file alone reveals nothing.
//! The envelope binds a context string (which row it belongs to) as AAD, so
//! a ciphertext copied into another row does not open.
//!
//! Formats: `v2.<key id>.<base64url(nonce)>.<base64url(ciphertext||tag)>`
//! (written now) and `v1.<nonce>.<ciphertext>` (before key ids; opened with
//! any key of the ring).
//!
//! A `MasterKey` has a key id (8 hex digits) and a key check value, both
//! HMAC-SHA256 of fixed strings under the key: the store keeps the check
//! values, so a node started with a missing or wrong key file is refused at
//! once instead of finding unreadable rows later. A `Keyring` holds the
//! current key (used to seal) and the previous ones still in use (opened),
//! so a rotation works while nodes run.
//!
//! Depends on `secret` only.

use crate::secret::Secret;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use std::path::Path;
use std::sync::{Arc, RwLock};

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("master key file {path}: {message}")]
    KeyFile { path: String, message: String },
    #[error("stored secret cannot be opened (wrong master key or corrupted row)")]
    Open,
    #[error("stored secret is sealed under master key {0}, which this node does not hold")]
    UnknownKey(String),
}

/// The 32-byte master key. Never printed.
#[derive(Clone)]
pub struct MasterKey {
    key: Secret<Vec<u8>>,
    id: String,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({}, <redacted>)", self.id)
    }
}

fn hmac_hex(key: &[u8], label: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(label);
    hex::encode(mac.finalize().into_bytes())
}

impl MasterKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let id = hmac_hex(&bytes, b"pushrelay master key id")[..8].to_string();
        Self { key: Secret::new(bytes.to_vec()), id }
    }

    pub fn generate() -> Self {
        let mut b = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut b);
        Self::from_bytes(b)
    }

    /// The key id: 8 hex digits, stored in each envelope and next to the check value.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The key check value the store keeps (HMAC of a constant: reveals nothing of the key).
    pub fn check_value(&self) -> String {
        hmac_hex(self.key.expose(), b"pushrelay master key check v1")
    }

    /// Read the key file (base64 of 32 bytes); `None` when it does not exist.
    pub fn load(path: &Path) -> Result<Option<Self>, EnvelopeError> {
        let err = |m: String| EnvelopeError::KeyFile { path: path.display().to_string(), message: m };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let raw = STANDARD.decode(text.trim()).map_err(|_| err("is not base64".into()))?;
                let arr: [u8; 32] = raw.try_into().map_err(|_| err("must hold base64 of exactly 32 bytes".into()))?;
                Ok(Some(Self::from_bytes(arr)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(err(e.to_string())),
        }
    }

    /// Write this key to a new file with mode 0600 (never over an existing one).
    pub fn write_new(&self, path: &Path) -> Result<(), EnvelopeError> {
        let err = |m: String| EnvelopeError::KeyFile { path: path.display().to_string(), message: m };
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
        writeln!(f, "{}", STANDARD.encode(self.key.expose())).map_err(|e| err(e.to_string()))?;
        f.sync_all().map_err(|e| err(e.to_string()))?;
        Ok(())
    }

    /// Read the key file, or create it (mode 0600). Returns the key and
    /// whether it was created now.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), EnvelopeError> {
        if let Some(k) = Self::load(path)? {
            return Ok((k, false));
        }
        let key = Self::generate();
        key.write_new(path)?;
        Ok((key, true))
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
        format!("v2.{}.{}.{}", self.id, URL_SAFE_NO_PAD.encode(nonce), URL_SAFE_NO_PAD.encode(ct))
    }

    fn open_parts(&self, context: &str, n: &str, c: &str) -> Result<Secret<Vec<u8>>, EnvelopeError> {
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

    /// Decrypt an envelope written by `seal` with the same `context`.
    pub fn open(&self, context: &str, sealed: &str) -> Result<Secret<Vec<u8>>, EnvelopeError> {
        match Envelope::parse(sealed)? {
            Envelope::V2 { key_id, .. } if key_id != self.id => Err(EnvelopeError::UnknownKey(key_id.to_string())),
            Envelope::V2 { nonce, ciphertext, .. } | Envelope::V1 { nonce, ciphertext } => self.open_parts(context, nonce, ciphertext),
        }
    }

    /// `key` sealed under this key (how the store hands a new master key to
    /// nodes that only hold the old one, and back).
    pub fn wrap(&self, key: &MasterKey) -> String {
        self.seal(&format!("master-key:{}", key.id), key.key.expose())
    }

    /// The key `wrapped` holds, if it is `id`'s and opens under this key.
    pub fn unwrap_key(&self, id: &str, wrapped: &str) -> Result<MasterKey, EnvelopeError> {
        let raw = self.open(&format!("master-key:{id}"), wrapped)?;
        let arr: [u8; 32] = raw.expose().clone().try_into().map_err(|_| EnvelopeError::Open)?;
        let key = MasterKey::from_bytes(arr);
        if key.id != id {
            return Err(EnvelopeError::Open);
        }
        Ok(key)
    }
}

/// The parts of a stored envelope.
enum Envelope<'a> {
    V1 { nonce: &'a str, ciphertext: &'a str },
    V2 { key_id: &'a str, nonce: &'a str, ciphertext: &'a str },
}

impl<'a> Envelope<'a> {
    fn parse(sealed: &'a str) -> Result<Self, EnvelopeError> {
        let parts: Vec<&str> = sealed.split('.').collect();
        match parts.as_slice() {
            ["v1", nonce, ciphertext] => Ok(Envelope::V1 { nonce, ciphertext }),
            ["v2", key_id, nonce, ciphertext] => Ok(Envelope::V2 { key_id, nonce, ciphertext }),
            _ => Err(EnvelopeError::Open),
        }
    }
}

/// The key id an envelope names (`None` for v1 envelopes or garbage).
pub fn key_id_of(sealed: &str) -> Option<&str> {
    match Envelope::parse(sealed) {
        Ok(Envelope::V2 { key_id, .. }) => Some(key_id),
        _ => None,
    }
}

/// The master keys a node holds: the current one seals, every one opens.
/// Shared by every clone of the store; `set` swaps it in place.
#[derive(Clone, Debug)]
pub struct Keyring {
    inner: Arc<RwLock<Ring>>,
}

#[derive(Debug)]
struct Ring {
    current: MasterKey,
    others: Vec<MasterKey>,
}

impl Keyring {
    pub fn new(current: MasterKey) -> Self {
        Self { inner: Arc::new(RwLock::new(Ring { current, others: Vec::new() })) }
    }

    /// Replace the ring's contents (current key plus the others still in use).
    pub fn set(&self, current: MasterKey, others: Vec<MasterKey>) {
        let others = others.into_iter().filter(|k| k.id != current.id).collect();
        *self.inner.write().expect("keyring lock") = Ring { current, others };
    }

    pub fn current(&self) -> MasterKey {
        self.inner.read().expect("keyring lock").current.clone()
    }

    pub fn current_id(&self) -> String {
        self.inner.read().expect("keyring lock").current.id.clone()
    }

    /// Every key held, current first.
    pub fn keys(&self) -> Vec<MasterKey> {
        let ring = self.inner.read().expect("keyring lock");
        std::iter::once(ring.current.clone()).chain(ring.others.iter().cloned()).collect()
    }

    pub fn get(&self, id: &str) -> Option<MasterKey> {
        self.keys().into_iter().find(|k| k.id == id)
    }

    pub fn seal(&self, context: &str, plaintext: &[u8]) -> String {
        self.inner.read().expect("keyring lock").current.seal(context, plaintext)
    }

    pub fn open(&self, context: &str, sealed: &str) -> Result<Secret<Vec<u8>>, EnvelopeError> {
        match Envelope::parse(sealed)? {
            Envelope::V2 { key_id, .. } => match self.get(key_id) {
                Some(k) => k.open(context, sealed),
                None => Err(EnvelopeError::UnknownKey(key_id.to_string())),
            },
            Envelope::V1 { .. } => self.keys().iter().find_map(|k| k.open(context, sealed).ok()).ok_or(EnvelopeError::Open),
        }
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
        assert!(s.starts_with(&format!("v2.{}.", k.id())));
        assert_eq!(k.open("device:alice/1", &s).unwrap().expose(), b"secret bytes");
        assert!(k.open("device:bob/1", &s).is_err());
        assert!(matches!(MasterKey::generate().open("device:alice/1", &s), Err(EnvelopeError::UnknownKey(_))));
    }

    #[test]
    fn a_keyring_seals_with_the_current_key_and_opens_with_any() {
        let (old, new) = (MasterKey::generate(), MasterKey::generate());
        let ring = Keyring::new(old.clone());
        let before = ring.seal("x", b"1");
        ring.set(new.clone(), vec![old.clone()]);
        let after = ring.seal("x", b"2");
        assert_eq!(key_id_of(&after), Some(new.id()));
        assert_eq!(ring.open("x", &before).unwrap().expose(), b"1");
        assert_eq!(ring.open("x", &after).unwrap().expose(), b"2");
        ring.set(new.clone(), vec![]);
        assert!(matches!(ring.open("x", &before), Err(EnvelopeError::UnknownKey(id)) if id == old.id()));
    }

    #[test]
    fn v1_envelopes_still_open() {
        let k = MasterKey::generate();
        let v2 = k.seal("ctx", b"legacy");
        let parts: Vec<&str> = v2.split('.').collect();
        let v1 = format!("v1.{}.{}", parts[2], parts[3]);
        assert_eq!(Keyring::new(k).open("ctx", &v1).unwrap().expose(), b"legacy");
    }

    #[test]
    fn keys_are_wrapped_for_each_other() {
        let (old, new) = (MasterKey::generate(), MasterKey::generate());
        let wrapped = old.wrap(&new);
        let got = old.unwrap_key(new.id(), &wrapped).unwrap();
        assert_eq!(got.check_value(), new.check_value());
        assert!(old.unwrap_key(old.id(), &wrapped).is_err(), "bound to the wrapped key's id");
        assert!(new.unwrap_key(new.id(), &wrapped).is_err());
        assert_ne!(old.check_value(), new.check_value());
        assert_eq!(old.id().len(), 8);
    }

    #[test]
    fn key_file_is_created_private_and_reread() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/m.key");
        assert!(MasterKey::load(&p).unwrap().is_none());
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
        assert!(k1.write_new(&p).is_err(), "never over an existing key file");
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

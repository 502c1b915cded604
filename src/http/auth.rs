//! Auth extractors: admin bearer token, HTTP Basic of end users.
//! Secrets are compared in constant time; rejection reasons are logged at
//! debug only.

use super::error::ApiError;
use super::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::{header, request::Parts, HeaderMap};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// SHA-256 of a bearer token: tokens are high-entropy, so a fast hash is
/// enough and the store never holds the token itself.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// What a bearer may do (interface §5). `admin` implies every other scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Admin,
    Calls,
    Register,
    Read,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Admin, Scope::Calls, Scope::Register, Scope::Read];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::Calls => "calls",
            Scope::Register => "register",
            Scope::Read => "read",
        }
    }

    pub fn parse(raw: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

/// An authenticated bearer: the bootstrap admin token, or an API key.
#[derive(Clone, Debug)]
pub struct Caller {
    /// `None` for the admin token.
    pub key_id: Option<String>,
    scopes: Vec<Scope>,
    /// The app an API key is bound to, if any (Spark/Acrobits default app).
    pub app: Option<crate::domain::AppId>,
}

impl Caller {
    /// 403 unless the caller holds `scope` (or `admin`).
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(scope.as_str()))
        }
    }

    /// The name rate limits are counted under.
    pub fn limit_key(&self) -> &str {
        self.key_id.as_deref().unwrap_or("admin")
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Some(token) = bearer(&parts.headers) else {
            tracing::debug!("no bearer token");
            return Err(ApiError::Unauthorized);
        };
        let hash = token_hash(token);
        if bool::from(hash.ct_eq(&state.admin_token_hash)) {
            return Ok(Caller { key_id: None, scopes: vec![Scope::Admin], app: None });
        }
        // The lookup is by hash: equal hashes mean equal keys, and the
        // database index compares hashes, never the key itself.
        match state.store.api_key_by_hash(&hex::encode(hash)).await? {
            Some(k) => Ok(Caller { key_id: Some(k.id), scopes: k.scopes.iter().filter_map(|s| Scope::parse(s)).collect(), app: k.app }),
            None => {
                tracing::debug!("unknown or revoked bearer token");
                Err(ApiError::Unauthorized)
            }
        }
    }
}

/// `Authorization: Basic` user and password, if well-formed.
pub fn basic_credentials(headers: &HeaderMap) -> Option<(String, crate::secret::Secret<String>)> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = STANDARD.decode(rest.trim()).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_string(), crate::secret::Secret::new(pass.to_string())))
}

/// Argon2id hash of a password (slow on purpose; call off the runtime).
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing failed: {e}"))
}

/// Check a password against a stored Argon2 hash (call off the runtime).
pub fn verify_password(password: &str, hash: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    match PasswordHash::new(hash) {
        Ok(parsed) => argon2::Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

type VerifiedPassword = (String, [u8; 32], std::time::Instant);

/// Remembers successful Argon2 verifications for a short time, so a phone
/// re-registering (or a backend's burst) does not cost tens of milliseconds
/// of CPU per request. A hit needs the same stored hash (a password change,
/// also on another node, invalidates it) and the same password, compared as
/// a SHA-256 under a random per-process key, in constant time. Failures are
/// never cached. Not state a second node needs: a miss only costs time.
pub struct PasswordCache {
    key: [u8; 32],
    ttl: std::time::Duration,
    /// user → (stored hash, keyed digest of the password, verified at)
    entries: std::sync::Mutex<std::collections::HashMap<String, VerifiedPassword>>,
}

impl PasswordCache {
    const MAX_ENTRIES: usize = 100_000;

    pub fn new(ttl: std::time::Duration) -> Self {
        Self { key: rand::random(), ttl, entries: Default::default() }
    }

    fn digest(&self, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.key);
        h.update(password.as_bytes());
        h.finalize().into()
    }

    /// Check `password` of `user` against the stored Argon2 `hash`.
    pub async fn verify(&self, user: &str, password: crate::secret::Secret<String>, hash: String) -> bool {
        let digest = self.digest(password.expose());
        {
            let entries = self.entries.lock().expect("password cache lock");
            if let Some((stored, d, at)) = entries.get(user) {
                if *stored == hash && bool::from(d.ct_eq(&digest)) && at.elapsed() < self.ttl {
                    return true;
                }
            }
        }
        let h = hash.clone();
        let ok = tokio::task::spawn_blocking(move || verify_password(password.expose(), &h)).await.unwrap_or(false);
        if ok {
            let mut entries = self.entries.lock().expect("password cache lock");
            if entries.len() >= Self::MAX_ENTRIES {
                entries.clear();
            }
            entries.insert(user.to_string(), (hash, digest, std::time::Instant::now()));
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_password_cache_needs_the_same_password_and_the_same_stored_hash() {
        let cache = PasswordCache::new(std::time::Duration::from_secs(60));
        let h1 = hash_password("one").unwrap();
        let s = |p: &str| crate::secret::Secret::new(p.to_string());
        assert!(cache.verify("alice", s("one"), h1.clone()).await);
        assert!(cache.verify("alice", s("one"), h1.clone()).await, "cached hit");
        assert!(!cache.verify("alice", s("two"), h1.clone()).await, "other password");
        let h2 = hash_password("two").unwrap();
        assert!(!cache.verify("alice", s("one"), h2.clone()).await, "password changed: the old one fails");
        assert!(cache.verify("alice", s("two"), h2).await);
    }


    #[test]
    fn password_hash_round_trip() {
        let h = hash_password("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("s3cret", &h));
        assert!(!verify_password("s3cret!", &h));
        assert!(!verify_password("s3cret", "not a hash"));
    }

    #[test]
    fn basic_header_is_split_at_the_first_colon() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, format!("Basic {}", STANDARD.encode("alice:pa:ss")).parse().unwrap());
        let (u, p) = basic_credentials(&h).unwrap();
        assert_eq!((u.as_str(), p.expose().as_str()), ("alice", "pa:ss"));
    }
}

//! Authentication: the bearer extractor (`Caller`), HTTP Basic of end users
//! (`basic_user`), and password hashing (`Passwords`).
//!
//! Every failed attempt is counted (`limit::AuthFailures`): Basic failures
//! per user name, unknown names and bad bearer tokens per source address.
//! A key past the limit is answered 429 before any hashing; a valid bearer
//! token is never refused by it. Unknown users cost the same Argon2 verify
//! as known ones (a dummy hash), and hashing runs with bounded concurrency.
//! Secrets are compared in constant time; rejection reasons are logged at
//! debug only.

use super::error::ApiError;
use super::limit::FailureKey;
use super::state::AppState;
use crate::domain::{AppId, Reach, Scope, TenantId, UserId};
use axum::extract::FromRequestParts;
use axum::http::{header, request::Parts, HeaderMap};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha2::{Digest, Sha256};
use std::net::IpAddr;
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

/// What a bearer may do (interface §5: a key's "scopes"). `admin` implies
/// every other permission.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permission {
    Admin,
    Calls,
    Register,
    Read,
}

impl Permission {
    pub const ALL: [Permission; 4] = [Permission::Admin, Permission::Calls, Permission::Register, Permission::Read];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Admin => "admin",
            Permission::Calls => "calls",
            Permission::Register => "register",
            Permission::Read => "read",
        }
    }

    pub fn parse(raw: &str) -> Option<Permission> {
        Permission::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

/// An authenticated bearer: the bootstrap admin token, or an API key.
/// Without a tenant it is an operator credential (any tenant, named with
/// `?tenant=`, a `"tenant"` field or a `/t/{tenant}` prefix; `default`
/// when none is named); with one, a tenant key (that tenant only).
#[derive(Clone, Debug)]
pub struct Caller {
    /// `None` for the admin token.
    pub key_id: Option<String>,
    permissions: Vec<Permission>,
    /// The app an API key is bound to, if any: it narrows every route.
    pub app: Option<AppId>,
    /// `None`: an operator credential.
    pub tenant: Option<TenantId>,
    /// The key's tenant's `calls_per_second` override, if any.
    pub calls_per_second: Option<u32>,
}

impl Caller {
    /// The admin token.
    fn admin() -> Self {
        Self { key_id: None, permissions: vec![Permission::Admin], app: None, tenant: None, calls_per_second: None }
    }

    /// A live API key. An app-bound key never administers (its `admin`
    /// becomes the three other permissions, inside its app): keys made
    /// before that rule keep working, without reaching past their app.
    fn key(k: crate::store::LiveKey) -> Self {
        let mut permissions: Vec<Permission> = k.record.scopes.iter().filter_map(|s| Permission::parse(s)).collect();
        if k.record.app.is_some() && permissions.contains(&Permission::Admin) {
            permissions.retain(|p| *p != Permission::Admin);
            permissions.extend([Permission::Calls, Permission::Register, Permission::Read]);
        }
        Self { key_id: Some(k.record.id), permissions, app: k.record.app, tenant: k.record.tenant, calls_per_second: k.calls_per_second }
    }

    /// 403 unless the caller holds `permission` (or `admin`).
    pub fn require(&self, permission: Permission) -> Result<(), ApiError> {
        if self.permissions.contains(&permission) || self.permissions.contains(&Permission::Admin) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(permission.as_str()))
        }
    }

    /// Whether this is an operator credential (the admin token or a key
    /// without a tenant).
    pub fn is_operator(&self) -> bool {
        self.tenant.is_none()
    }

    /// 403 for a tenant key on an operator-wide route (tenants).
    pub fn require_operator(&self) -> Result<(), ApiError> {
        if self.is_operator() {
            Ok(())
        } else {
            Err(ApiError::Forbidden("admin of the operator (a tenant key administers its own tenant only)"))
        }
    }

    /// The name rate limits are counted under.
    pub fn limit_key(&self) -> &str {
        self.key_id.as_deref().unwrap_or("admin")
    }

    /// The app the caller names (`?app=`, a reported app id …) checked
    /// against the key's app: a key bound to an app may only name that app
    /// (403 otherwise). Without a named app, the key's own app (if any).
    pub fn app_for(&self, named: Option<AppId>) -> Result<Option<AppId>, ApiError> {
        match (named, &self.app) {
            (Some(named), Some(bound)) if named != *bound => Err(ApiError::WrongApp(bound.as_str().to_string())),
            (Some(named), _) => Ok(Some(named)),
            (None, bound) => Ok(bound.clone()),
        }
    }

    /// The one tenant this request acts in: a tenant key's own (naming
    /// another → 403 `wrong_tenant`); for an operator, the tenant named
    /// (404 if it does not exist) or `default`. Narrowed to the key's app.
    pub async fn scope(&self, s: &AppState, named: &RequestedTenant) -> Result<Scope, ApiError> {
        let tenant = match (&self.tenant, named.0.as_ref()) {
            (Some(own), Some(other)) if own != other => return Err(ApiError::WrongTenant),
            (Some(own), _) => own.clone(),
            (None, Some(named)) => {
                require_tenant(s, named).await?;
                named.clone()
            }
            (None, None) => TenantId::default_tenant(),
        };
        Ok(Scope::tenant(tenant).narrowed_to(self.app.clone()))
    }

    /// How far this request reaches where objects are not one tenant's
    /// (apps, keys, the console): a tenant key, its tenant; an operator
    /// naming a tenant, that tenant; an operator naming none, everything.
    pub async fn reach(&self, s: &AppState, named: &RequestedTenant) -> Result<Reach, ApiError> {
        if self.tenant.is_none() && named.0.is_none() {
            return Ok(Reach::every_tenant().narrowed_to(self.app.clone()));
        }
        Ok(Reach::of(&self.scope(s, named).await?))
    }
}

/// 404 unless the tenant exists.
pub async fn require_tenant(s: &AppState, tenant: &TenantId) -> Result<(), ApiError> {
    if tenant.is_default() || s.store.tenant(tenant).await?.is_some() {
        Ok(())
    } else {
        Err(ApiError::NotFound(format!("unknown tenant {tenant}")))
    }
}

/// The tenant a request names: the `/t/{tenant}` prefix of a phone-facing
/// route, or `?tenant=` (both → they must agree). `None`: none named.
#[derive(Clone, Debug, Default)]
pub struct RequestedTenant(pub Option<TenantId>);

impl RequestedTenant {
    /// Also the `"tenant"` field of a JSON body: the three must agree.
    pub fn with_body(self, field: Option<&str>) -> Result<Self, ApiError> {
        let Some(raw) = field else { return Ok(self) };
        let named = TenantId::parse(raw).map_err(|e| ApiError::bad_request("invalid_tenant", e.message))?;
        match self.0 {
            Some(other) if other != named => Err(ApiError::bad_request("invalid_tenant", "the request names two different tenants")),
            _ => Ok(Self(Some(named))),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestedTenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let mut prefix = None;
        if let Ok(params) = axum::extract::RawPathParams::from_request_parts(parts, state).await {
            if let Some((_, raw)) = params.iter().find(|(k, _)| *k == "tenant") {
                prefix = Some(TenantId::parse(raw).map_err(|_| ApiError::NotFound(format!("unknown tenant {raw}")))?);
            }
        }
        let query = parts.uri.query().unwrap_or("");
        let mut named = None;
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            if k == "tenant" {
                if named.is_some() {
                    return Err(ApiError::bad_request("invalid_tenant", "tenant is given twice"));
                }
                named = Some(TenantId::parse(&v).map_err(|e| ApiError::bad_request("invalid_tenant", e.message))?);
            }
        }
        match (prefix, named) {
            (Some(p), Some(q)) if p != q => Err(ApiError::bad_request("invalid_tenant", "the path and ?tenant= name different tenants")),
            (p, q) => Ok(Self(p.or(q))),
        }
    }
}

/// The source address of a request, as an extractor that cannot fail.
pub struct Peer(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Peer(peer_ip(&parts.extensions)))
    }
}

/// The source address of a request (set by `serve`).
pub fn peer_ip(extensions: &axum::http::Extensions) -> IpAddr {
    extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip()).unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Some(token) = bearer(&parts.headers) else {
            tracing::debug!("no bearer token");
            return Err(ApiError::Unauthorized);
        };
        caller_for_token(state, token, peer_ip(&parts.extensions)).await
    }
}

/// The caller an admin token or API key names; an unknown token counts as a
/// failed authentication of `peer`'s address group (and a locked-out
/// address gets 429).
pub async fn caller_for_token(state: &AppState, token: &str, peer: IpAddr) -> Result<Caller, ApiError> {
    let hash = token_hash(token);
    if bool::from(hash.ct_eq(&state.admin_token_hash)) {
        return Ok(Caller::admin());
    }
    // The lookup is by hash: equal hashes mean equal keys, and the
    // database index compares hashes, never the key itself. A valid key
    // is looked up before any lock-out: it is never refused by one.
    if let Some(k) = state.store.api_key_by_hash(&hex::encode(hash)).await? {
        return Ok(Caller::key(k));
    }
    let from = FailureKey::address(peer);
    if let Some(wait) = state.limits.auth_failures.locked_for(&from) {
        return Err(ApiError::TooManyFailures(wait));
    }
    state.limits.auth_failures.failed(&from);
    tracing::debug!("unknown or revoked bearer token");
    Err(ApiError::Unauthorized)
}

/// The caller a console session was signed in by, checked again now: the
/// key must still be live, the admin token the same.
pub async fn caller_for_session(state: &AppState, signer: &crate::store::SessionSigner) -> Result<Option<Caller>, ApiError> {
    use crate::store::SessionSigner;
    Ok(match signer {
        SessionSigner::AdminToken(fp) => (*fp == admin_fingerprint(&state.admin_token_hash)).then(Caller::admin),
        SessionSigner::Key(id) => state.store.api_key_by_id(id).await?.map(Caller::key),
    })
}

/// What a console session remembers of the admin token: a hash of its
/// hash (a session outlives no change of the token).
pub fn admin_fingerprint(admin_token_hash: &[u8; 32]) -> String {
    hex::encode(Sha256::digest(admin_token_hash))
}

/// Why HTTP Basic authentication did not give a user.
#[derive(Debug)]
pub enum BasicRefusal {
    /// No (well-formed) `Authorization: Basic` header.
    Missing,
    /// Wrong user, wrong password, unknown user: one answer for all.
    Wrong,
    /// Too many failures for this name or address: retry after this long.
    Locked(std::time::Duration),
    Store(crate::store::StoreError),
}

/// The end user of an `Authorization: Basic` header in the scope's tenant,
/// checked against the stored Argon2 hash (`expected`: the user the path
/// names, which the Basic user must equal). Counts every failure against
/// the user name (of that tenant) and the source address group, refuses
/// locked names and addresses before hashing, and verifies a dummy hash
/// for unknown users.
pub async fn basic_user(s: &AppState, headers: &HeaderMap, peer: IpAddr, scope: &Scope, expected: Option<&UserId>) -> Result<UserId, BasicRefusal> {
    let Some((name, password)) = basic_credentials(headers) else {
        return Err(BasicRefusal::Missing);
    };
    let failures = &s.limits.auth_failures;
    let by_name = FailureKey::User(format!("{}/{name}", scope.tenant_id()));
    let by_address = FailureKey::address(peer);
    if let Some(wait) = failures.locked_any([&by_name, &by_address]) {
        return Err(BasicRefusal::Locked(wait));
    }
    let user = match UserId::parse(&name) {
        Ok(u) if expected.is_none_or(|e| *e == u) => u,
        _ => {
            tracing::debug!("basic user is malformed or differs from the path user");
            failures.failed(&by_address);
            return Err(BasicRefusal::Wrong);
        }
    };
    let hash = s.store.password_hash(scope, &user).await.map_err(BasicRefusal::Store)?;
    let known = hash.is_some();
    let cache_key = format!("{}/{user}", scope.tenant_id());
    if s.passwords.verify(&cache_key, password, hash).await {
        return Ok(user);
    }
    // Guesses spread over many known names still lock their address out.
    if known {
        failures.failed(&by_name);
    }
    failures.failed(&by_address);
    Err(BasicRefusal::Wrong)
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
    argon2::Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| anyhow::anyhow!("hashing failed: {e}"))
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

/// Password hashing for the whole process:
/// - successful Argon2 verifications are remembered for a short time, so a
///   phone re-registering (or a backend's burst) does not cost tens of
///   milliseconds of CPU per request. A hit needs the same stored hash (a
///   password change, also on another node, invalidates it) and the same
///   password, compared as a SHA-256 under a random per-process key, in
///   constant time. Failures are never cached. Not state a second node
///   needs: a miss only costs time;
/// - an unknown user is verified against a dummy hash, so both cost the same;
/// - at most one Argon2 run per core at a time (each takes ~19 MiB).
pub struct Passwords {
    key: [u8; 32],
    ttl: std::time::Duration,
    /// user → (stored hash, keyed digest of the password, verified at)
    entries: std::sync::Mutex<std::collections::HashMap<String, VerifiedPassword>>,
    hashing: tokio::sync::Semaphore,
}

/// A hash of a random password: what unknown users are verified against.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password(&hex::encode(rand::random::<[u8; 16]>())).expect("hashing a random password"))
}

impl Passwords {
    const MAX_ENTRIES: usize = 100_000;

    pub fn new(ttl: std::time::Duration) -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        Self { key: rand::random(), ttl, entries: Default::default(), hashing: tokio::sync::Semaphore::new(cores) }
    }

    fn digest(&self, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.key);
        h.update(password.as_bytes());
        h.finalize().into()
    }

    /// Run one Argon2 computation off the runtime, one per core at most.
    async fn argon2<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let _turn = self.hashing.acquire().await.ok()?;
        tokio::task::spawn_blocking(work).await.ok()
    }

    /// Check `password` of `user` against the stored Argon2 `hash`; with no
    /// hash (unknown user, or one without a password) a dummy hash is
    /// verified and the answer is false.
    pub async fn verify(&self, user: &str, password: crate::secret::Secret<String>, hash: Option<String>) -> bool {
        let Some(hash) = hash else {
            self.argon2(move || verify_password(password.expose(), dummy_hash())).await;
            return false;
        };
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
        let ok = self.argon2(move || verify_password(password.expose(), &h)).await.unwrap_or(false);
        if ok {
            let mut entries = self.entries.lock().expect("password cache lock");
            if entries.len() >= Self::MAX_ENTRIES {
                entries.clear();
            }
            entries.insert(user.to_string(), (hash, digest, std::time::Instant::now()));
        }
        ok
    }

    /// Argon2id hash of a new password, under the same concurrency bound.
    pub async fn hash(&self, password: String) -> anyhow::Result<String> {
        self.argon2(move || hash_password(&password)).await.ok_or_else(|| anyhow::anyhow!("hashing was cancelled"))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_password_cache_needs_the_same_password_and_the_same_stored_hash() {
        let cache = Passwords::new(std::time::Duration::from_secs(60));
        let h1 = hash_password("one").unwrap();
        let s = |p: &str| crate::secret::Secret::new(p.to_string());
        assert!(cache.verify("alice", s("one"), Some(h1.clone())).await);
        assert!(cache.verify("alice", s("one"), Some(h1.clone())).await, "cached hit");
        assert!(!cache.verify("alice", s("two"), Some(h1.clone())).await, "other password");
        let h2 = hash_password("two").unwrap();
        assert!(!cache.verify("alice", s("one"), Some(h2.clone())).await, "password changed: the old one fails");
        assert!(cache.verify("alice", s("two"), Some(h2)).await);
        assert!(!cache.verify("nobody", s("two"), None).await, "no hash: a dummy verify, then false");
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

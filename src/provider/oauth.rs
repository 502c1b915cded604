//! OAuth 2.0 access tokens as FCM (JWT-bearer grant) and Huawei Push Kit
//! (client-credentials grant) use them: one token per credentials, cached
//! until `REFRESH_MARGIN_S` before it expires, one grant at a time per
//! credentials (concurrent senders wait for it), and renewed at once when
//! the push service refuses the cached one. The grant itself — its form and
//! what a refusal means — is each provider's.

use super::{retry_after, transport_error, Attempt, Clock, FailureKind};
use crate::secret::Secret;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Renew an access token when less than this is left.
pub const REFRESH_MARGIN_S: i64 = 300;

/// An access token and when it expires (epoch seconds).
pub(crate) struct AccessToken {
    token: Secret<String>,
    expires_at: i64,
}

type Slot = Arc<tokio::sync::Mutex<Option<AccessToken>>>;

/// The tokens of one provider, keyed by a digest of the credentials they
/// were granted for (so changed credentials get a new token).
pub(crate) struct AccessTokens {
    slots: Mutex<HashMap<[u8; 32], Slot>>,
    clock: Clock,
    grants: AtomicU64,
}

impl AccessTokens {
    pub(crate) fn new(clock: Clock) -> Self {
        Self { slots: Mutex::new(HashMap::new()), clock, grants: AtomicU64::new(0) }
    }

    /// Grants obtained so far.
    pub(crate) fn grants(&self) -> u64 {
        self.grants.load(Ordering::Relaxed)
    }

    /// A usable token for the credentials `key`; `stale` (a token the push
    /// service just refused) forces a new grant unless another sender
    /// already replaced it. `grant(now)` asks the token endpoint.
    pub(crate) async fn get<F, Fut>(&self, key: [u8; 32], stale: Option<&str>, grant: F) -> Result<String, Attempt>
    where
        F: FnOnce(i64) -> Fut,
        Fut: std::future::Future<Output = Result<AccessToken, Attempt>>,
    {
        let slot = self.slots.lock().unwrap_or_else(|e| e.into_inner()).entry(key).or_default().clone();
        let mut guard = slot.lock().await;
        let now = (self.clock)();
        if let Some(t) = guard.as_ref() {
            let refused = stale.is_some_and(|s| s == t.token.expose());
            if !refused && t.expires_at - now > REFRESH_MARGIN_S {
                return Ok(t.token.expose().clone());
            }
        }
        *guard = None;
        let t = grant(now).await?;
        self.grants.fetch_add(1, Ordering::Relaxed);
        let token = t.token.expose().clone();
        *guard = Some(t);
        Ok(token)
    }
}

/// The cache key of the credentials made of `parts` (length-prefixed, so
/// no two different lists collide).
pub(crate) fn key_of(parts: &[&str]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    h.finalize().into()
}

/// What a token endpoint answered other than a token.
pub(crate) struct Refusal {
    pub status: u16,
    /// The JSON error body (`Null` if there was none).
    pub body: Value,
    pub after: Option<Duration>,
}

impl Refusal {
    /// 429 and 5xx are worth another try (within the ring); anything else
    /// is the app's credentials being refused.
    pub(crate) fn into_attempt(self, reason: String) -> Attempt {
        if self.status == 429 || self.status >= 500 {
            Attempt::Retry { status: Some(self.status), reason, after: self.after }
        } else {
            Attempt::Failed { kind: FailureKind::Auth, status: Some(self.status), reason }
        }
    }
}

/// POST the grant `form` to `url` at `now`: the token of a 200
/// `{access_token, expires_in}`, or the refusal for the provider to name.
pub(crate) async fn post_grant(
    pool: &super::pool::Pool,
    answer_timeout: Duration,
    url: &str,
    form: String,
    now: i64,
) -> Result<Result<AccessToken, Refusal>, Attempt> {
    let resp =
        pool.send(|c| c.post(url).header("content-type", "application/x-www-form-urlencoded").body(form), answer_timeout).await.map_err(prefixed)?;
    let status = resp.status().as_u16();
    let after = retry_after(resp.headers());
    let bytes = resp.bytes().await.map_err(|e| prefixed(transport_error(&e)))?;
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if status != 200 {
        return Ok(Err(Refusal { status, body, after }));
    }
    match (body["access_token"].as_str(), body["expires_in"].as_i64()) {
        (Some(token), Some(expires_in)) => Ok(Ok(AccessToken { token: Secret::new(token.to_string()), expires_at: now + expires_in })),
        _ => Err(Attempt::Retry { status: Some(status), reason: "oauth_bad_response".into(), after: None }),
    }
}

/// A transport failure reaching the token endpoint says so.
fn prefixed(a: Attempt) -> Attempt {
    match a {
        Attempt::Retry { status, reason, after } => Attempt::Retry { status, reason: format!("oauth_{reason}"), after },
        Attempt::Failed { kind, status, reason } => Attempt::Failed { kind, status, reason: format!("oauth_{reason}") },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicI64;

    fn token(t: &str, expires_at: i64) -> AccessToken {
        AccessToken { token: Secret::new(t.to_string()), expires_at }
    }

    #[tokio::test]
    async fn a_token_is_reused_until_near_expiry_and_renewed_when_refused() {
        let now = Arc::new(AtomicI64::new(1_000));
        let n = now.clone();
        let tokens = AccessTokens::new(Arc::new(move || n.load(Ordering::SeqCst)));
        let key = [1; 32];
        let first = tokens.get(key, None, |at| async move { Ok(token("t1", at + 3600)) }).await.unwrap();
        let again = tokens.get(key, None, |_| async { Err(Attempt::retry("must not be asked")) }).await.unwrap();
        assert_eq!((first.as_str(), again.as_str(), tokens.grants()), ("t1", "t1", 1));
        now.store(1_000 + 3600 - REFRESH_MARGIN_S + 1, Ordering::SeqCst);
        let near_expiry = tokens.get(key, None, |at| async move { Ok(token("t2", at + 3600)) }).await.unwrap();
        assert_eq!(near_expiry, "t2");
        let refused = tokens.get(key, Some("t2"), |at| async move { Ok(token("t3", at + 3600)) }).await.unwrap();
        assert_eq!(refused, "t3");
        let someone_else_renewed = tokens.get(key, Some("t2"), |_| async { Err(Attempt::retry("must not be asked")) }).await.unwrap();
        assert_eq!(someone_else_renewed, "t3", "a refusal of an already replaced token changes nothing");
        let other = tokens.get([2; 32], None, |_| async { Err(Attempt::failed(FailureKind::Auth, "refused")) }).await;
        assert!(other.is_err(), "other credentials, their own grant");
        assert_eq!(tokens.grants(), 3);
    }

    #[test]
    fn refusals_are_retried_only_when_the_endpoint_is_overloaded_or_down() {
        let r = |status| Refusal { status, body: Value::Null, after: None }.into_attempt("oauth_x".into());
        assert!(matches!(r(503), Attempt::Retry { .. }) && matches!(r(429), Attempt::Retry { .. }));
        assert!(matches!(r(400), Attempt::Failed { kind: FailureKind::Auth, .. }));
        assert!(matches!(r(401), Attempt::Failed { kind: FailureKind::Auth, .. }));
    }
}

//! Delivery callbacks (interface.md §7): every node posts the queued final
//! reports of its apps to their callback URLs, signed
//! `X-Pushrelay-Signature: sha256=<hex HMAC-SHA256 of the body>`, and
//! retries with backoff for up to `GIVE_UP_AFTER`. The queue is in the
//! store (written with the report), so a restart loses nothing: a report
//! is posted at least once, and a receiver should de-duplicate by
//! `call_id`.
//!
//! Depends on `store`, `domain`, `provider::tls` and `telemetry` (metric names).

use crate::domain::{now_ms, Scope};
use crate::store::{LeasedCallback, Store};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long a report is retried before it is dropped (and logged).
pub const GIVE_UP_AFTER_MS: i64 = 10 * 60 * 1000;
/// How long one node holds a row it is posting.
const LEASE_MS: i64 = 30_000;
/// One POST's time limit.
const POST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the queue is looked at (and at once when a report is queued here).
const POLL: Duration = Duration::from_secs(1);
/// Rows leased per look.
const BATCH: i64 = 32;

use crate::telemetry::CALLBACKS;

/// The signature header value of `body` under `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The wait before attempt `attempts + 1`: 1, 2, 4 … s, at most a minute.
pub fn backoff(attempts: i32) -> Duration {
    Duration::from_secs(1u64 << attempts.clamp(0, 6) as u32).min(Duration::from_secs(60))
}

/// Post queued callbacks until shutdown. `extra_ca_pem`: the operator's
/// CA roots (`tls.extra_ca_file`), trusted besides the webpki roots.
pub fn spawn_sender(store: Store, extra_ca_pem: Option<String>, shutdown: CancellationToken) {
    let client = match reqwest::Client::builder()
        .timeout(POST_TIMEOUT)
        .connect_timeout(POST_TIMEOUT)
        .use_preconfigured_tls(callback_tls(extra_ca_pem.as_deref()))
        // Callback receivers usually live on private networks: never through
        // a proxy from the environment.
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("pushrelay/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => return tracing::error!(error = %e, "callbacks disabled: no HTTP client"),
    };
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(POLL);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let due = match store.lease_callbacks(now_ms(), LEASE_MS, BATCH).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, "could not read the callback queue");
                    continue;
                }
            };
            let posts = due.into_iter().map(|cb| post_one(&store, &client, cb));
            futures::future::join_all(posts).await;
        }
    });
}

/// TLS for callback receivers: the webpki roots plus the operator's CA.
fn callback_tls(extra_ca_pem: Option<&str>) -> rustls::ClientConfig {
    use crate::provider::tls::{client_config, ALPN_H2_HTTP1};
    client_config(extra_ca_pem, None, ALPN_H2_HTTP1).or_else(|_| client_config(None, None, ALPN_H2_HTTP1)).expect("webpki roots load")
}

async fn post_one(store: &Store, client: &reqwest::Client, cb: LeasedCallback) {
    let target = match store.callback(&Scope::tenant(cb.tenant.clone()), &cb.app).await {
        Ok(Some(t)) => t,
        Ok(None) => {
            // The callback was removed since: nothing to deliver to.
            let _ = store.callback_done(&cb.id).await;
            return;
        }
        Err(e) => return tracing::warn!(error = %e, app = %cb.app, "callback target unreadable"),
    };
    let url = target.summary.get("url").and_then(|u| u.as_str()).unwrap_or_default().to_string();
    let sig = signature(target.secret.expose().as_bytes(), cb.body.as_bytes());
    let answer = client
        .post(&url)
        .header("content-type", "application/json")
        .header("x-pushrelay-signature", sig)
        .header("x-pushrelay-call-id", &cb.call_id)
        .body(cb.body.clone())
        .send()
        .await;
    let why = match answer {
        Ok(r) if r.status().is_success() => {
            metrics::counter!(CALLBACKS, "outcome" => "delivered").increment(1);
            tracing::info!(app = %cb.app, call_id = %cb.call_id, attempts = cb.attempts + 1, "callback delivered");
            if let Err(e) = store.callback_done(&cb.id).await {
                tracing::warn!(error = %e, "could not dequeue a delivered callback (it may be posted again)");
            }
            return;
        }
        Ok(r) => format!("HTTP {}", r.status().as_u16()),
        Err(e) if e.is_timeout() => "timeout".to_string(),
        Err(e) if e.is_connect() => "connection refused or unreachable".to_string(),
        Err(_) => "request failed".to_string(),
    };
    let now = now_ms();
    let attempts = cb.attempts + 1;
    let next = now + backoff(attempts).as_millis() as i64;
    if next - cb.created_at > GIVE_UP_AFTER_MS {
        metrics::counter!(CALLBACKS, "outcome" => "abandoned").increment(1);
        tracing::error!(app = %cb.app, call_id = %cb.call_id, attempts, reason = %why, "callback given up after 10 minutes");
        let _ = store.callback_done(&cb.id).await;
        return;
    }
    metrics::counter!(CALLBACKS, "outcome" => "retried").increment(1);
    tracing::warn!(app = %cb.app, call_id = %cb.call_id, attempts, reason = %why, "callback failed; will retry");
    if let Err(e) = store.callback_retry(&cb.id, attempts, next).await {
        tracing::warn!(error = %e, "could not reschedule a callback (its lease will run out and it is tried again)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_the_body_in_hex() {
        // RFC 4231 test case 2.
        assert_eq!(signature(b"Jefe", b"what do ya want for nothing?"), "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[test]
    fn backoff_doubles_up_to_a_minute() {
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(20), Duration::from_secs(60));
    }
}

//! Connection health for every provider.
//!
//! A NAT or load balancer can forget a connection without a FIN or RST:
//! the next push then goes into a hole, and every retry on the same
//! connection follows it. Three things keep a call from being lost that way:
//! - HTTP/2 PINGs on idle connections (`KEEP_ALIVE_INTERVAL`, answered
//!   within `KEEP_ALIVE_TIMEOUT` or the connection is closed): a connection
//!   that died while quiet is gone before the next call needs it;
//! - the answer bound (`providers.answer_timeout_ms`, default 2 s): the
//!   headers of an answer must come that soon, however long the whole
//!   request may take (`request_timeout`). A healthy provider answers in
//!   milliseconds;
//! - eviction: a push that got no answer in time replaces its HTTP client
//!   (and so its connections), so the retry opens a fresh connection.
//!
//! `Pooled` is one HTTP client with its state for the
//! `pushrelay_provider_connections{provider,state}` gauge; `Pool` holds the
//! current one for a provider with a single client (FCM, HMS, Web Push).
//! APNs keeps one `Pooled` per app and environment.

use super::{transport_error, Attempt};
use crate::domain::Provider;
use crate::telemetry;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// PING an HTTP/2 connection after this long without frames.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// Close it when the PING is not answered within this.
pub const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(3);

/// One provider HTTP client and whether it has answered yet.
pub(crate) struct Pooled {
    provider: Provider,
    client: reqwest::Client,
    answered: AtomicBool,
}

/// Why a request has no response.
pub(crate) enum NoResponse {
    /// No answer within the bound: the connection is taken for dead.
    Silent(Attempt),
    /// Anything else the transport said (refused, reset, TLS …).
    Transport(reqwest::Error),
}

impl Pooled {
    pub(crate) fn new(provider: Provider, client: reqwest::Client) -> Arc<Self> {
        gauge(provider, "new").increment(1.0);
        Arc::new(Self { provider, client, answered: AtomicBool::new(false) })
    }

    pub(crate) fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// The answer to `pending` (a request on this client), which must
    /// start within `answer_timeout`.
    pub(crate) async fn answer(
        &self,
        pending: impl std::future::Future<Output = Result<reqwest::Response, reqwest::Error>>,
        answer_timeout: Duration,
    ) -> Result<reqwest::Response, NoResponse> {
        match tokio::time::timeout(answer_timeout, pending).await {
            Ok(Ok(resp)) => {
                if !self.answered.swap(true, Ordering::Relaxed) {
                    gauge(self.provider, "new").decrement(1.0);
                    gauge(self.provider, "up").increment(1.0);
                }
                Ok(resp)
            }
            Ok(Err(e)) => Err(NoResponse::Transport(e)),
            Err(_) => {
                Err(NoResponse::Silent(Attempt::retry(format!("no_answer: nothing within {} ms, connection replaced", answer_timeout.as_millis()))))
            }
        }
    }

    /// Count this client's replacement after a silent connection.
    pub(crate) fn note_evicted(&self) {
        metrics::counter!(telemetry::PROVIDER_RECONNECTS, "provider" => self.provider.as_str()).increment(1);
        tracing::warn!(provider = self.provider.as_str(), "a provider connection gave no answer in time: replaced");
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        gauge(self.provider, if self.answered.load(Ordering::Relaxed) { "up" } else { "new" }).decrement(1.0);
    }
}

fn gauge(provider: Provider, state: &'static str) -> metrics::Gauge {
    metrics::gauge!(telemetry::PROVIDER_CONNECTIONS, "provider" => provider.as_str(), "state" => state)
}

type Build = Box<dyn Fn() -> Result<reqwest::Client, String> + Send + Sync>;

/// The current client of a provider with one client, built on first use
/// and again after an eviction.
pub(crate) struct Pool {
    provider: Provider,
    build: Build,
    current: Mutex<Option<Arc<Pooled>>>,
}

impl Pool {
    pub(crate) fn new(provider: Provider, build: impl Fn() -> Result<reqwest::Client, String> + Send + Sync + 'static) -> Self {
        Self { provider, build: Box::new(build), current: Mutex::new(None) }
    }

    /// The current client (a configuration error if it cannot be built).
    pub(crate) fn get(&self) -> Result<Arc<Pooled>, String> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = current.as_ref() {
            return Ok(p.clone());
        }
        let p = Pooled::new(self.provider, (self.build)()?);
        *current = Some(p.clone());
        Ok(p)
    }

    /// Send on the current client; a silent one is replaced for the next try.
    pub(crate) async fn send(
        &self,
        make: impl FnOnce(&reqwest::Client) -> reqwest::RequestBuilder,
        answer_timeout: Duration,
    ) -> Result<reqwest::Response, Attempt> {
        let pooled = self.get().map_err(|e| Attempt::failed(super::FailureKind::Config, format!("http_client: {e}")))?;
        match pooled.answer(make(pooled.client()).send(), answer_timeout).await {
            Ok(r) => Ok(r),
            Err(NoResponse::Silent(a)) => {
                self.evict(&pooled);
                Err(a)
            }
            Err(NoResponse::Transport(e)) => Err(transport_error(&e)),
        }
    }

    /// Replace `old` (if it is still the current one: concurrent pushes
    /// that met the same silence replace it once).
    pub(crate) fn evict(&self, old: &Arc<Pooled>) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, old)) {
            *current = None;
            old.note_evicted();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_silent_server_costs_the_answer_bound_and_the_client_is_replaced_once() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        // A listener that accepts and never answers: the TCP connection is up, nothing comes back.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let built = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let b = built.clone();
        let pool = Pool::new(Provider::Fcm, move || {
            b.fetch_add(1, Ordering::SeqCst);
            reqwest::Client::builder().build().map_err(|e| e.to_string())
        });
        let url = format!("http://{addr}/x");
        let started = std::time::Instant::now();
        let a = pool.send(|c| c.get(&url), Duration::from_millis(200)).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_millis(1500), "{:?}", started.elapsed());
        assert!(matches!(&a, Attempt::Retry { reason, .. } if reason.starts_with("no_answer")), "{a:?}");
        let first = built.load(Ordering::SeqCst);
        let _ = pool.send(|c| c.get(&url), Duration::from_millis(100)).await;
        assert_eq!(built.load(Ordering::SeqCst), first + 1, "the retry used a new client");
        // That retry met the same silence, so its client is gone too: the next get builds one.
        let old = pool.get().unwrap();
        assert_eq!(built.load(Ordering::SeqCst), first + 2);
        pool.evict(&old);
        pool.evict(&old);
        let _ = pool.get().unwrap();
        let _ = pool.get().unwrap();
        assert_eq!(built.load(Ordering::SeqCst), first + 3, "two evictions of the same client replace it once");
    }
}

//! Build, then run: `Application::build` opens the store, migrates, loads
//! the master key and admin token, binds the listener (port 0 works, see
//! `port()`); `run_until_stopped` serves until the shutdown future resolves,
//! then drains in-flight requests.
//!
//! Only `main` and tests call this module; it may use everything.

use crate::config::Settings;
use crate::dispatch::{Dispatcher, RetryPolicy};
use crate::provider::ProviderSettings;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use crate::envelope::MasterKey;
use crate::http::{self, auth::token_hash, AppState};
use crate::store::Store;
use anyhow::Context;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

const ADMIN_TOKEN_SETTING: &str = "admin_token_sha256";

pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    store: Store,
    addr: SocketAddr,
    /// The admin token generated on this first start (shown once).
    pub generated_admin_token: Option<String>,
    dispatcher: Arc<Dispatcher>,
    /// Cancelled when shutdown starts: retries stop waiting.
    shutdown: CancellationToken,
}

/// How long in-flight requests (and their pushes) may take to finish after
/// a shutdown signal before the process exits anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Open the store the settings name, migrated, with its master key.
pub async fn open_store(settings: &Settings) -> anyhow::Result<(Store, bool)> {
    let key_path = settings.master_key_path();
    let (master, created) = MasterKey::load_or_create(&key_path)?;
    if created {
        tracing::warn!(path = %key_path.display(), "generated a new master key: back it up, secrets in the database cannot be read without it");
    }
    let store = Store::connect(&settings.database_url, master)
        .await
        .with_context(|| format!("cannot open database {}", redact_url(&settings.database_url)))?;
    store.migrate().await.context("cannot migrate the database")?;
    Ok((store, created))
}

/// Hide a password in a database URL for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

/// Make ring the process-wide rustls provider (the one TLS stack; no
/// OpenSSL, no aws-lc). Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        install_crypto_provider();
        let (store, _) = open_store(&settings).await?;
        let mut generated_admin_token = None;
        let admin_token_hash = match &settings.admin_token {
            Some(t) => token_hash(t.expose()),
            None => {
                let mut raw = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut raw);
                let candidate = format!("pra_{}", URL_SAFE_NO_PAD.encode(raw));
                let candidate_hash = hex::encode(token_hash(&candidate));
                let stored = store.setting_insert_if_absent(ADMIN_TOKEN_SETTING, &candidate_hash).await?;
                if stored == candidate_hash {
                    generated_admin_token = Some(candidate);
                }
                let bytes = hex::decode(&stored).context("stored admin token hash is corrupt")?;
                bytes.try_into().map_err(|_| anyhow::anyhow!("stored admin token hash has the wrong length"))?
            }
        };
        let shutdown = CancellationToken::new();
        let providers = ProviderSettings {
            apns_production_url: settings.apns.production_url.clone(),
            apns_sandbox_url: settings.apns.sandbox_url.clone(),
            fcm_base_url: settings.fcm.base_url.clone(),
            extra_ca_pem: settings.extra_ca_pem(),
            request_timeout: Duration::from_secs(10),
        };
        let dispatcher = Arc::new(Dispatcher::new(store.clone(), providers, RetryPolicy::default(), shutdown.clone()));
        spawn_pruner(store.clone(), settings.retention.call_days, shutdown.clone());
        let ua_rules = settings.user_agent_rules();
        let limits = Arc::new(crate::http::limit::Limits {
            calls: crate::http::limit::RateLimiter::new(settings.limits.calls_per_second),
            registrations: crate::http::limit::RateLimiter::new(settings.limits.registrations_per_second),
        });
        let wake = crate::wake::WakeHub::new();
        if store.backend() == crate::store::Backend::Postgres {
            listen_for_wakes(&settings.database_url, store.clone(), wake.clone(), shutdown.clone()).await?;
        }
        let listener = bind(settings.listen).with_context(|| format!("cannot listen on {}", settings.listen))?;
        let addr = listener.local_addr()?;
        let state = AppState {
            store: store.clone(),
            settings: Arc::new(settings),
            admin_token_hash,
            metrics: crate::telemetry::metrics_handle(),
            dispatcher: dispatcher.clone(),
            passwords: Arc::new(crate::http::auth::PasswordCache::new(Duration::from_secs(300))),
            ua_rules: Arc::new(ua_rules),
            wake,
            limits,
        };
        let router = http::router(state);
        Ok(Self { listener, router, store, addr, generated_admin_token, dispatcher, shutdown })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn dispatcher(&self) -> Arc<Dispatcher> {
        self.dispatcher.clone()
    }

    /// Serve until `shutdown` resolves; then stop accepting, let in-flight
    /// requests finish their pushes (at most `SHUTDOWN_GRACE`; pending
    /// retries give up at once), and close the store.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        tracing::info!(addr = %self.addr, "pushrelay listening");
        let token = self.shutdown.clone();
        let mut serve = tokio::spawn(http::serve::serve(self.listener, self.router, token.clone()));
        tokio::select! {
            ended = &mut serve => {
                self.store.close().await;
                return ended.map_err(Into::into);
            }
            _ = shutdown => token.cancel(),
        }
        match tokio::time::timeout(SHUTDOWN_GRACE, serve).await {
            Ok(joined) => joined?,
            Err(_) => tracing::warn!("in-flight requests did not finish within the shutdown grace period"),
        }
        self.store.close().await;
        tracing::info!("pushrelay stopped");
        Ok(())
    }
}

/// Several nodes on one PostgreSQL database: a REGISTER on any node must
/// release `/sip/wake` requests held on every node. Registrations are
/// published with `NOTIFY pushrelay_wake` and every node `LISTEN`s (no
/// polling; sqlx's listener reconnects by itself).
async fn listen_for_wakes(url: &str, store: Store, hub: Arc<crate::wake::WakeHub>, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut listener = sqlx::postgres::PgListener::connect(url).await.context("cannot LISTEN for wake-ups")?;
    listener.listen("pushrelay_wake").await.context("cannot LISTEN for wake-ups")?;
    let local = hub.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                n = listener.recv() => match n {
                    Ok(n) => {
                        let v: serde_json::Value = serde_json::from_str(n.payload()).unwrap_or_default();
                        if let (Some(aor), Some(contact)) = (v["aor"].as_str(), v["contact"].as_str()) {
                            local.notify_since(aor, contact, v["at"].as_i64().unwrap_or(i64::MAX));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "wake listener lost its connection; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                },
            }
        }
    });
    hub.set_remote(Arc::new(move |aor: &str, contact: &str, at: i64| {
        let (store, aor, contact) = (store.clone(), aor.to_string(), contact.to_string());
        tokio::spawn(async move {
            if let Err(e) = store.notify_wake(&aor, &contact, at).await {
                tracing::warn!(error = %e, "could not publish a wake-up to the other nodes");
            }
        });
    }));
    Ok(())
}

/// Listen with a backlog of 4096 (tokio's default is 1024): a burst of
/// connections, e.g. a thousand `/sip/wake` at once, is not dropped.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Retention: every hour, delete call reports older than `call_days` and
/// expired push claims (any node may run it; the deletes are idempotent).
fn spawn_pruner(store: Store, call_days: u32, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {
                    let now = crate::domain::now_ms();
                    match store.prune(now, now - i64::from(call_days) * 86_400_000).await {
                        Ok((claims, calls)) if claims + calls > 0 => tracing::info!(claims, calls, "pruned old records"),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "pruning failed"),
                    }
                }
            }
        }
    });
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutdown signal received");
}

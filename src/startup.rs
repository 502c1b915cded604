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
use crate::store::StoreOptions;
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
    /// `limits.connections_per_address`.
    per_address: u32,
}

/// How long in-flight requests (and their pushes) may take to finish after
/// a shutdown signal before the process exits anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Open the store the settings name, migrated, with its master key
/// checked against the database (interface.md §6): a missing key file is
/// only generated for a database that holds nothing sealed; a key the
/// database does not know is refused, naming `master_key_file`.
pub async fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    let options = StoreOptions { synchronous: settings.sqlite.synchronous };
    let store = Store::connect(&settings.database_url, &options)
        .await
        .with_context(|| format!("cannot open database {}", redact_url(&settings.database_url)))?;
    store.migrate().await.context("cannot migrate the database")?;
    let key_path = settings.master_key_path();
    let key = match MasterKey::load(&key_path).context("config key `master_key_file`")? {
        Some(k) => k,
        None if store.needs_existing_key().await? => anyhow::bail!(
            "config key `master_key_file`: {} does not exist, but this database holds secrets sealed under a master key; \
             restore the key file (a new key would make every stored secret unreadable)",
            key_path.display()
        ),
        None => {
            let key = MasterKey::generate();
            key.write_new(&key_path).context("config key `master_key_file`")?;
            tracing::warn!(path = %key_path.display(), "generated a new master key: back it up, secrets in the database cannot be read without it");
            key
        }
    };
    store
        .open_keyring(key)
        .await
        .map_err(|e| anyhow::anyhow!("config key `master_key_file` ({}): {e}", key_path.display()))?;
    Ok(store)
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
        let store = open_store(&settings).await?;
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
        let ua_rules = settings.user_agent_rules();
        let limits = Arc::new(crate::http::limit::Limits::from_settings(&settings.limits));
        store.listen().await.context("cannot LISTEN for the other nodes' events")?;
        let wake = crate::wake::WakeHub::new();
        wake.follow(&store, shutdown.clone());
        spawn_upkeep(store.clone(), limits.clone(), settings.retention.call_days, shutdown.clone());
        let listener = bind(settings.listen).with_context(|| format!("cannot listen on {}", settings.listen))?;
        let addr = listener.local_addr()?;
        let per_address = settings.limits.connections_per_address;
        let registrar = crate::register::Registrar::new(store.clone(), settings.limits.devices_per_user);
        let state = AppState {
            store: store.clone(),
            settings: Arc::new(settings),
            admin_token_hash,
            metrics: crate::telemetry::metrics_handle(),
            dispatcher: dispatcher.clone(),
            passwords: Arc::new(crate::http::auth::Passwords::new(Duration::from_secs(300))),
            registrar,
            ua_rules: Arc::new(ua_rules),
            wake,
            limits,
        };
        let router = http::router(state);
        Ok(Self { listener, router, store, addr, generated_admin_token, dispatcher, shutdown, per_address })
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
    /// requests and the pushes started outside requests (webhooks,
    /// `/sip/wake`) finish their current provider request (at most
    /// `SHUTDOWN_GRACE` in all; pending retries give up at once), and close
    /// the store.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        tracing::info!(addr = %self.addr, "pushrelay listening");
        let token = self.shutdown.clone();
        let mut serve = tokio::spawn(http::serve::serve(self.listener, self.router, token.clone(), self.per_address));
        tokio::select! {
            ended = &mut serve => {
                token.cancel();
                self.dispatcher.drain(SHUTDOWN_GRACE).await;
                self.store.close().await;
                return ended.map_err(Into::into);
            }
            _ = shutdown => token.cancel(),
        }
        let started = tokio::time::Instant::now();
        match tokio::time::timeout(SHUTDOWN_GRACE, serve).await {
            Ok(joined) => joined?,
            Err(_) => tracing::warn!("in-flight requests did not finish within the shutdown grace period"),
        }
        if !self.dispatcher.drain(SHUTDOWN_GRACE.saturating_sub(started.elapsed())).await {
            tracing::warn!("pushes started by webhooks or /sip/wake did not finish within the shutdown grace period");
        }
        self.store.close().await;
        tracing::info!("pushrelay stopped");
        Ok(())
    }
}

/// Listen with a backlog of 4096 (tokio's default is 1024): a burst of
/// connections, e.g. a thousand `/sip/wake` at once, is not dropped.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Background upkeep, on every node (all of it idempotent):
/// - every 10 s, and at once when another node changes the keys: follow
///   master key rotations, re-seal a batch, retire unused keys;
/// - every minute: forget idle rate-limit and lock-out entries;
/// - every hour: delete call reports older than `call_days`, expired push
///   claims and webhook replay keys older than 24 h.
fn spawn_upkeep(store: Store, limits: Arc<crate::http::limit::Limits>, call_days: u32, shutdown: CancellationToken) {
    let mut events = store.subscribe();
    tokio::spawn(async move {
        let mut keys = tokio::time::interval(Duration::from_secs(10));
        let mut minute = tokio::time::interval(Duration::from_secs(60));
        let mut hour = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = keys.tick() => maintain_keys(&store).await,
                e = events.recv() => if let Ok(crate::store::StoreEvent::KeysChanged) = e { maintain_keys(&store).await },
                _ = minute.tick() => limits.clean_up(),
                _ = hour.tick() => {
                    let now = crate::domain::now_ms();
                    let calls_before = now - i64::from(call_days) * 86_400_000;
                    match store.prune(now, calls_before, now - crate::store::WEBHOOK_REPLAY_WINDOW_MS).await {
                        Ok((claims, calls, hooks)) if claims + calls + hooks > 0 => tracing::info!(claims, calls, hooks, "pruned old records"),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "pruning failed"),
                    }
                }
            }
        }
    });
}

async fn maintain_keys(store: &Store) {
    if let Err(e) = store.maintain_keys(crate::domain::now_ms()).await {
        metrics::counter!(crate::telemetry::STORE_ERRORS).increment(1);
        tracing::warn!(error = %e, "master key upkeep failed");
    }
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

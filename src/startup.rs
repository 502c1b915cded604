//! Build, then run: `Application::build` opens the store, migrates, loads
//! the master key and admin token, binds the listener (port 0 works, see
//! `port()`); `run_until_stopped` serves until the shutdown future resolves,
//! then drains in-flight requests.
//!
//! Only `main` and tests call this module; it may use everything.

use crate::config::Settings;
use crate::dispatch::{Dispatcher, RetryPolicy};
use crate::envelope::MasterKey;
use crate::http::{self, auth::token_hash, AppState};
use crate::provider::{ProviderSettings, Providers};
use crate::store::Store;
use crate::store::StoreOptions;
use anyhow::Context;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

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
    /// HTTPS on `listen`, when `tls.cert_file`/`tls.key_file` are set.
    tls: Option<http::serve::ServerTls>,
    /// `/metrics` on its own listener (`metrics_listen`).
    metrics_listener: Option<(TcpListener, axum::Router)>,
    ua_rules: Arc<http::serve::Live<Vec<crate::dialect::sip::UaRule>>>,
    /// Where SIGHUP re-reads the settings from (set by `serve`).
    config_source: Option<(Option<std::path::PathBuf>, crate::config::CliOverrides)>,
    /// The settings now in force (what SIGHUP compares against).
    settings: Arc<Settings>,
}

/// How long in-flight requests (and their pushes) may take to finish after
/// a shutdown signal before the process exits anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Open the store the settings name, migrated, with its master key
/// checked against the database (interface.md §6): a missing key file is
/// only generated for a database that holds nothing sealed; a key the
/// database does not know is refused, naming `master_key_file`.
pub async fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    let options = StoreOptions { synchronous: settings.sqlite.synchronous, ..StoreOptions::default() };
    let store = Store::connect(&settings.database_url, &options)
        .await
        .with_context(|| format!("cannot open database {}", redact_url(&settings.database_url)))?;
    store.migrate().await.context("cannot migrate the database")?;
    let key_path = settings.master_key_path();
    let bad_key = |m: String| crate::config::invalid("master_key_file", m);
    let key = match MasterKey::load(&key_path).map_err(|e| bad_key(e.to_string()))? {
        Some(k) => k,
        None if store.needs_existing_key().await? => {
            return Err(bad_key(format!(
                "{} does not exist, but this database holds secrets sealed under a master key; \
                 restore the key file (a new key would make every stored secret unreadable)",
                key_path.display()
            ))
            .into())
        }
        None => {
            let key = MasterKey::generate();
            key.write_new(&key_path).map_err(|e| bad_key(e.to_string()))?;
            tracing::warn!(path = %key_path.display(), "generated a new master key: back it up, secrets in the database cannot be read without it");
            key
        }
    };
    store.open_keyring(key).await.map_err(|e| bad_key(format!("{}: {e}", key_path.display())))?;
    Ok(store)
}

/// Hide a password in a database URL for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

/// How the provider clients reach APNs, FCM and OAuth.
pub fn provider_settings(settings: &Settings) -> ProviderSettings {
    ProviderSettings {
        apns_production_url: settings.apns.production_url.clone(),
        apns_sandbox_url: settings.apns.sandbox_url.clone(),
        fcm_base_url: settings.fcm.base_url.clone(),
        hms_token_url: settings.hms.token_url.clone(),
        hms_base_url: settings.hms.base_url.clone(),
        webpush_allowed_hosts: settings.webpush.allowed_hosts.clone(),
        extra_ca_pem: settings.extra_ca_pem(),
        request_timeout: Duration::from_secs(10),
        answer_timeout: Duration::from_millis(settings.providers.answer_timeout_ms.into()),
        proxy: settings.providers.proxy.clone(),
    }
}

/// A test push from the command line (`pushrelay push`), with the
/// configured store's credentials: the provider's answer as JSON.
pub async fn test_push(
    settings: &Settings,
    app: &crate::domain::AppId,
    channel: crate::domain::Channel,
    token: &crate::domain::DeviceToken,
    kind: crate::payload::TestKind,
) -> anyhow::Result<serde_json::Value> {
    install_crypto_provider();
    let store = open_store(settings).await?;
    let dispatcher =
        Dispatcher::new(store.clone(), Arc::new(Providers::new(&provider_settings(settings))), RetryPolicy::default(), CancellationToken::new());
    let attempt = dispatcher.test_push(&crate::domain::Reach::every_tenant(), app, channel, token, kind).await;
    dispatcher.drain(Duration::from_secs(5)).await;
    store.close().await;
    Ok(crate::http::test_push_answer(&attempt))
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
        let dispatcher = Arc::new(
            Dispatcher::new(store.clone(), Arc::new(Providers::new(&provider_settings(&settings))), RetryPolicy::default(), shutdown.clone())
                .push_without_claim(settings.calls.push_without_claim),
        );
        let ua_rules = Arc::new(http::serve::Live::new(settings.user_agent_rules()));
        let tls = server_tls(&settings)?.map(|cfg| Arc::new(http::serve::Live::new(cfg)));
        let metrics_listener = match settings.metrics_listen {
            Some(at) => {
                let l = bind(at).with_context(|| format!("cannot listen on {at} (metrics_listen)"))?;
                Some((l, http::metrics_router(crate::telemetry::metrics_handle())))
            }
            None => None,
        };
        let limits = Arc::new(crate::http::limit::Limits::from_settings(&settings.limits));
        store.listen().await.context("cannot LISTEN for the other nodes' events")?;
        let wake = crate::wake::WakeHub::new();
        wake.follow(&store, shutdown.clone());
        spawn_upkeep(store.clone(), limits.clone(), settings.retention.call_days, shutdown.clone());
        crate::callbacks::spawn_sender(store.clone(), settings.extra_ca_pem(), shutdown.clone());
        spawn_minute_flusher(dispatcher.clone(), shutdown.clone());
        let listener = bind(settings.listen).with_context(|| format!("cannot listen on {}", settings.listen))?;
        let addr = listener.local_addr()?;
        let per_address = settings.limits.connections_per_address;
        let registrar = crate::register::Registrar::new(
            store.clone(),
            settings.limits.devices_per_user,
            crate::domain::AllowedHosts::new(&settings.webpush.allowed_hosts),
        );
        let settings = Arc::new(settings);
        let state = AppState {
            store: store.clone(),
            settings: settings.clone(),
            admin_token_hash,
            metrics: crate::telemetry::metrics_handle(),
            dispatcher: dispatcher.clone(),
            passwords: Arc::new(crate::http::auth::Passwords::new(Duration::from_secs(300))),
            registrar,
            ua_rules: ua_rules.clone(),
            wake,
            limits,
        };
        let router = http::router(state);
        Ok(Self {
            listener,
            router,
            store,
            addr,
            generated_admin_token,
            dispatcher,
            shutdown,
            per_address,
            tls,
            metrics_listener,
            ua_rules,
            config_source: None,
            settings,
        })
    }

    /// Where SIGHUP reloads the settings from: the config file (if any) and
    /// the command-line overrides, with the environment as at start.
    pub fn reload_from(&mut self, config: Option<std::path::PathBuf>, cli: crate::config::CliOverrides) {
        self.config_source = Some((config, cli));
    }

    /// The address `/metrics` is served on, when `metrics_listen` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().and_then(|(l, _)| l.local_addr().ok())
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
        tracing::info!(addr = %self.addr, tls = self.tls.is_some(), "pushrelay listening");
        let token = self.shutdown.clone();
        if let Some((listener, router)) = self.metrics_listener {
            tracing::info!(addr = %listener.local_addr()?, "metrics listening");
            tokio::spawn(http::serve::serve(listener, router, token.clone(), 0, None));
        }
        spawn_reloader(self.config_source, self.settings.clone(), self.tls.clone(), self.ua_rules.clone(), token.clone());
        let mut serve = tokio::spawn(http::serve::serve(self.listener, self.router, token.clone(), self.per_address, self.tls));
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
        self.dispatcher.flush_minutes().await;
        self.store.close().await;
        tracing::info!("pushrelay stopped");
        Ok(())
    }
}

/// Provider minutes go to the store every 5 s (and once more at shutdown).
fn spawn_minute_flusher(dispatcher: Arc<Dispatcher>, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => dispatcher.flush_minutes().await,
            }
        }
    });
}

/// The listener's HTTPS configuration from `tls.cert_file`/`tls.key_file`
/// (read now), `None` for plain HTTP; a pair rustls refuses is a
/// configuration error.
fn server_tls(settings: &Settings) -> Result<Option<rustls::ServerConfig>, crate::config::ConfigError> {
    let Some((chain, key)) = settings.server_identity()? else { return Ok(None) };
    http::serve::server_tls_config(chain, key)
        .map(Some)
        .map_err(|e| crate::config::invalid("tls.cert_file", format!("certificate and key refused: {e}")))
}

/// On SIGHUP, read the settings again (same file, same environment and
/// flags) and apply what can change without dropping connections: the TLS
/// certificate and key, and the User-Agent rules. A bad new configuration
/// is logged and changes nothing; settings that need a restart are named.
fn spawn_reloader(
    source: Option<(Option<std::path::PathBuf>, crate::config::CliOverrides)>,
    mut current: Arc<Settings>,
    tls: Option<http::serve::ServerTls>,
    ua_rules: Arc<http::serve::Live<Vec<crate::dialect::sip::UaRule>>>,
    shutdown: CancellationToken,
) {
    #[cfg(unix)]
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else { return };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                got = hup.recv() => if got.is_none() { return },
            }
            let Some((file, cli)) = &source else {
                tracing::info!("SIGHUP: no configuration source to reload (not started by `pushrelay serve`)");
                continue;
            };
            match reload(file.as_deref(), cli, &current, tls.as_ref(), &ua_rules) {
                Ok(next) => current = Arc::new(next),
                Err(e) => tracing::error!(error = %e, "SIGHUP: the new configuration is refused; nothing changed"),
            }
        }
    });
    #[cfg(not(unix))]
    let _ = (source, current, tls, ua_rules, shutdown);
}

fn reload(
    file: Option<&std::path::Path>,
    cli: &crate::config::CliOverrides,
    current: &Settings,
    tls: Option<&http::serve::ServerTls>,
    ua_rules: &http::serve::Live<Vec<crate::dialect::sip::UaRule>>,
) -> anyhow::Result<Settings> {
    let next = Settings::load(file, cli)?;
    // Build everything first, then swap: all or nothing.
    let new_tls = match (tls, server_tls(&next)?) {
        (Some(_), Some(cfg)) => Some(cfg),
        (None, None) => None,
        _ => anyhow::bail!("turning HTTPS on or off needs a restart (tls.cert_file, tls.key_file)"),
    };
    if let (Some(live), Some(cfg)) = (tls, new_tls) {
        live.set(cfg);
    }
    ua_rules.set(next.user_agent_rules());
    let restart: Vec<&str> = [
        ("listen", current.listen != next.listen),
        ("database_url", current.database_url != next.database_url),
        ("metrics_listen", current.metrics_listen != next.metrics_listen),
        ("master_key_file", current.master_key_file != next.master_key_file),
        ("providers.proxy", current.providers.proxy != next.providers.proxy),
    ]
    .into_iter()
    .filter_map(|(k, changed)| changed.then_some(k))
    .collect();
    if !restart.is_empty() {
        tracing::warn!(keys = ?restart, "SIGHUP: these settings changed and take effect at the next restart");
    }
    tracing::info!(tls = tls.is_some(), ua_rules = next.sip.user_agents.len(), "SIGHUP: configuration reloaded");
    Ok(next)
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
        let mut day = tokio::time::interval(Duration::from_secs(86_400));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = keys.tick() => maintain_keys(&store).await,
                e = events.recv() => if let Ok(crate::store::StoreEvent::KeysChanged) = e { maintain_keys(&store).await },
                _ = minute.tick() => limits.clean_up(),
                _ = day.tick() => check_certificates(&store).await,
                _ = hour.tick() => {
                    let now = crate::domain::now_ms();
                    let calls_before = now - i64::from(call_days) * 86_400_000;
                    if let Err(e) = store.prune_console(now / 60_000 - 24 * 60, now).await {
                        tracing::warn!(error = %e, "pruning console data failed");
                    }
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

/// Export each certificate credential's notAfter and warn (once a day, on
/// every node) from `crate::domain::credentials_cert::EXPIRY_WARNING_DAYS` before it.
async fn check_certificates(store: &Store) {
    let list = match store.certificate_expiries().await {
        Ok(l) => l,
        Err(e) => return tracing::warn!(error = %e, "could not read certificate expiries"),
    };
    let now_s = crate::domain::now_ms() / 1000;
    for (app, provider, not_after) in list {
        metrics::gauge!(crate::telemetry::CREDENTIAL_EXPIRY, "app" => app.as_str().to_string(), "provider" => provider.as_str())
            .set(not_after as f64);
        let days = (not_after - now_s) / 86_400;
        if not_after <= now_s {
            tracing::error!(app = %app, provider = provider.as_str(), "the certificate credential has expired: pushes are refused; upload a new one");
        } else if days < crate::domain::credentials_cert::EXPIRY_WARNING_DAYS {
            tracing::warn!(app = %app, provider = provider.as_str(), days_left = days, "the certificate credential expires soon: upload a new one");
        }
    }
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

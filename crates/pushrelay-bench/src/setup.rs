//! Relay and mock set-up: runtimes, devices, the database (a temporary
//! SQLite file or a fresh PostgreSQL database), one or two relays pointed
//! at the in-process mocks, and the registrations.

use crate::cli::{Args, Scenario};
use crate::cpu::{find_postmaster, POSTMASTER};
use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use pushrelay::config::{CliOverrides, Settings};
use pushrelay::domain::{
    now_ms, AppId, BundleId, CallEvent, CallId, Channel, DevicePkid, DeviceToken, PayloadVersion, PushId, PushKey, Registration, RingWindow, UserId,
};
use pushrelay::provider::apns::{ApnsAuth, ApnsCredentials};
use pushrelay::provider::fcm::FcmCredentials;
use pushrelay::provider::ProviderSettings;
use pushrelay::secret::Secret;
use pushrelay::startup::{open_store, Application};
use pushrelay::store::Store;
use pushrelay_mock::{fixtures, MockApns, MockApnsConfig, MockApnsKey, MockFcm, TestPki};
use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::{Handle, Runtime};

/// The app (bundle id) of the call scenarios' devices.
pub(crate) const APP: &str = "com.example.KitchenSink";
pub(crate) const ADMIN_TOKEN: &str = "bench-admin-token-0123456789abcdef";
pub(crate) const PASSWORD: &str = "bench-password";
pub(crate) const FCM_PROJECT: &str = "pushrelay-bench";

pub(crate) struct Runtimes {
    pub(crate) relay: Runtime,
    pub(crate) mock: Runtime,
    pub(crate) gen: Runtime,
}

pub(crate) fn runtime(name: &str, threads: usize) -> anyhow::Result<Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.worker_threads(threads.max(1)).thread_name(name).enable_all();
    if name.starts_with("relay") {
        b.on_thread_start(crate::alloc::count_this_thread);
    }
    Ok(b.build()?)
}

/// One device: its user, pkid, channel, token and key.
#[derive(Clone)]
pub(crate) struct Dev {
    pub(crate) user: String,
    pub(crate) device: String,
    pub(crate) channel: Channel,
    pub(crate) token: String,
    pub(crate) key: [u8; 32],
}

impl Dev {
    /// A device as a generator process knows it: ids and token only.
    pub(crate) fn for_load(user: &str, device: &str, token: &str) -> Self {
        Self { user: user.into(), device: device.into(), channel: Channel::Apns, token: token.into(), key: [0; 32] }
    }
}

pub(crate) fn make_devices(scenario: Scenario, n: usize) -> Vec<Dev> {
    (0..n)
        .map(|i| {
            let channel = match scenario {
                Scenario::Fcm => Channel::Fcm,
                Scenario::Mixed if i % 2 == 1 => Channel::Fcm,
                _ => Channel::Apns,
            };
            let token = match channel {
                // An FCM registration token is ~163 printable characters.
                Channel::Fcm => format!(
                    "bench{i:06}:APA91b{}{}{}",
                    hex::encode(rand::random::<[u8; 32]>()),
                    hex::encode(rand::random::<[u8; 32]>()),
                    hex::encode(rand::random::<[u8; 32]>())
                )[..163]
                    .to_string(),
                _ => hex::encode(rand::random::<[u8; 32]>()),
            };
            Dev { user: format!("u{i:06}"), device: format!("dev-{i:06}"), channel, token, key: rand::random() }
        })
        .collect()
}

pub(crate) fn uds_xml(d: &Dev) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<token>\n  <pushNotifyToken>{}</pushNotifyToken>\n  <pushChannelType>{}</pushChannelType>\n  <key>{}</key>\n  <algorithm>A256GCM</algorithm>\n  <application>{APP}</application>\n  <payloadVersion>V2</payloadVersion>\n</token>\n",
        d.token,
        d.channel.as_str(),
        STANDARD.encode(d.key)
    )
}

pub(crate) fn registration(d: &Dev) -> anyhow::Result<Registration> {
    Ok(Registration {
        user: UserId::parse(&d.user)?,
        device: DevicePkid::parse(&d.device)?,
        channel: d.channel,
        token: DeviceToken::for_channel(d.channel, &d.token)?,
        subscription_keys: None,
        app: AppId::parse(APP)?,
        data: pushrelay::domain::DialectData::Uds { key: PushKey::from_bytes(d.key), version: PayloadVersion::parse("V2")? },
    })
}

pub(crate) fn call_event(user: &str, device: Option<&str>, n: u64) -> CallEvent {
    CallEvent {
        call_id: CallId::new(),
        user: UserId::parse(user).expect("user"),
        device: device.map(|d| DevicePkid::parse(d).expect("device")),
        push_id: PushId::parse(&format!("bench-{n:012}")).expect("pushid"),
        display_name: "Alice Example".into(),
        display_number: "+15551234567".into(),
        hunt_pilot_dn: "5000".into(),
        actor: None,
        ring: RingWindow::starting_now(now_ms(), 30),
    }
}

/// A temporary directory removed on drop (no tempfile crate in the release deps).
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new() -> anyhow::Result<Self> {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos();
        let p = std::env::temp_dir().join(format!("pushrelay-bench-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p)?;
        Ok(Self(p))
    }
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) struct Env {
    pub(crate) _dir: TempDir,
    pub(crate) apns: MockApns,
    pub(crate) fcm: MockFcm,
    pub(crate) apns_creds: ApnsCredentials,
    pub(crate) fcm_creds: FcmCredentials,
    pub(crate) providers: ProviderSettings,
    pub(crate) settings_env: HashMap<String, String>,
    /// Node 0 (admin calls go there).
    pub(crate) base: String,
    /// Every node's base URL (`--nodes`), for round-robin load.
    pub(crate) bases: Vec<String>,
    pub(crate) client: reqwest::Client,
    pub(crate) stops: Vec<tokio::sync::oneshot::Sender<()>>,
    pub(crate) relay_tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// A PostgreSQL database created for this run: (server URL, name), dropped at the end.
    pub(crate) pg_created: Option<(String, String)>,
    /// For the sip-wake scenario's credentials.
    pub(crate) apns_body: serde_json::Value,
}

/// The bundle (and app id) the SIP fixture's `X-MPUSH` names.
pub(crate) const SIP_APP: &str = "com.mycompany.myapp";

impl Env {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }
    /// Node `n % nodes`.
    pub(crate) fn node(&self, n: u64) -> &str {
        &self.bases[(n % self.bases.len() as u64) as usize]
    }
    pub(crate) fn settings(&self) -> anyhow::Result<Settings> {
        Ok(Settings::load_from(None, &self.settings_env, &CliOverrides::default())?)
    }
    pub(crate) fn backend(&self) -> &'static str {
        if self.settings_env["PUSHRELAY_DATABASE_URL"].starts_with("postgres") {
            "postgresql"
        } else {
            "sqlite"
        }
    }
}

/// `postgres://user@host:port/db?x` → (`postgres://user@host:port`, port).
pub(crate) fn pg_server(url: &str) -> (String, Option<u16>) {
    let scheme_end = url.find("://").map(|i| i + 3).unwrap_or(0);
    let rest = &url[scheme_end..];
    let host_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let server = format!("{}{}", &url[..scheme_end], &rest[..host_end]);
    let hostport = rest[..host_end].rsplit('@').next().unwrap_or("");
    let port = hostport.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).or(Some(5432));
    (server, port)
}

/// The database URL of this run: a temp SQLite file, the given SQLite URL,
/// or a fresh database created on the given PostgreSQL server.
pub(crate) async fn prepare_database(a: &Args, dir: &Path) -> anyhow::Result<(String, Option<(String, String)>)> {
    match a.database_url.as_deref() {
        None => Ok((format!("sqlite://{}", dir.join("relay.db").display()), None)),
        Some(u) if u.starts_with("postgres") => {
            use sqlx::Connection;
            let (server, port) = pg_server(u);
            let name =
                format!("pushrelay_bench_{}_{}", std::process::id(), std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis());
            let mut conn =
                sqlx::PgConnection::connect(&format!("{server}/postgres")).await.with_context(|| format!("connect to {server}/postgres"))?;
            sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await?;
            let _ = conn.close().await;
            if let Some(port) = port {
                let pm = find_postmaster(port);
                let _ = POSTMASTER.set(pm);
                match pm {
                    Some(pid) => println!("database: PostgreSQL on port {port}, postmaster pid {pid} (its CPU is counted as the store, not as others); fresh database {name}"),
                    None => println!("database: PostgreSQL on port {port} (server process not found: its CPU shows up as others); fresh database {name}"),
                }
            }
            Ok((format!("{server}/{name}"), Some((server, name))))
        }
        Some(u) => Ok((u.to_string(), None)),
    }
}

/// Mocks (recording off) on the mock runtime, `--nodes` relays on the relay
/// runtime pointed at them (same database, same master key file), the app's
/// APNs and FCM credentials stored over HTTP.
pub(crate) async fn start_env(a: &Args, rts: &Runtimes, max_conns: usize) -> anyhow::Result<Env> {
    let pki = TestPki::generate();
    let (p8, key_id) = fixtures::apns_p8();
    let team_id = "D7A3215KHV".to_string();
    let cfg = MockApnsConfig {
        sandbox: false,
        bundles: vec![APP.to_string(), SIP_APP.to_string()],
        keys: vec![MockApnsKey { team_id: team_id.clone(), key_id: key_id.clone(), p8_pem: p8.clone() }],
        // The relay and the ceiling client each sign their own provider JWT
        // for the same team: no token-update limit here.
        token_update_limit: None,
        pki: Some(pki.clone()),
    };
    let apns = rts.mock.spawn(MockApns::start(cfg)).await?;
    let fcm = rts.mock.spawn(MockFcm::start_with_pki(pki.clone())).await?;
    apns.set_recording(false);
    fcm.set_recording(false);
    let service_account = fixtures::service_account_json(&fcm.token_uri(), FCM_PROJECT);
    fcm.register_service_account(&service_account);

    let dir = TempDir::new()?;
    let ca = dir.path().join("mock-ca.pem");
    std::fs::write(&ca, pki.ca_pem())?;
    let (db_url, pg_created) = prepare_database(a, dir.path()).await?;
    if a.nodes > 1 && !db_url.starts_with("postgres") {
        bail!("--nodes 2 needs --database-url postgres://… (several nodes share one PostgreSQL database)");
    }
    let mut env = HashMap::new();
    env.insert("PUSHRELAY_LISTEN".to_string(), "127.0.0.1:0".to_string());
    env.insert("PUSHRELAY_DATABASE_URL".to_string(), db_url);
    env.insert("PUSHRELAY_MASTER_KEY_FILE".to_string(), dir.path().join("master.key").display().to_string());
    env.insert("PUSHRELAY_ADMIN_TOKEN".to_string(), ADMIN_TOKEN.to_string());
    if let Some(sync) = &a.sqlite_synchronous {
        env.insert("PUSHRELAY_SQLITE_SYNCHRONOUS".to_string(), sync.clone());
    }
    // The generator is one key: per-key rate limits would measure themselves.
    env.insert("PUSHRELAY_LIMITS_CALLS_PER_SECOND".to_string(), "0".to_string());
    env.insert("PUSHRELAY_LIMITS_REGISTRATIONS_PER_SECOND".to_string(), "0".to_string());
    // …and it is one address: an open-loop point with more calls in flight
    // than the per-address connection cap would measure refused connections.
    env.insert("PUSHRELAY_LIMITS_CONNECTIONS_PER_ADDRESS".to_string(), "0".to_string());
    env.insert("PUSHRELAY_APNS_PRODUCTION_URL".to_string(), apns.url());
    env.insert("PUSHRELAY_APNS_SANDBOX_URL".to_string(), apns.url());
    env.insert("PUSHRELAY_FCM_BASE_URL".to_string(), fcm.base_url());
    env.insert("PUSHRELAY_TLS_EXTRA_CA_FILE".to_string(), ca.display().to_string());

    // The nodes start one after the other: the first creates the master key
    // file and migrates, the next ones find both.
    let mut bases = Vec::new();
    let mut stops = Vec::new();
    let mut relay_tasks = Vec::new();
    for _ in 0..a.nodes {
        let settings = Settings::load_from(None, &env, &CliOverrides::default())?;
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let relay_task = rts.relay.spawn(async move {
            let app = match Application::build(settings).await {
                Ok(a) => a,
                Err(e) => {
                    let _ = addr_tx.send(Err(format!("{e:#}")));
                    return Err(e);
                }
            };
            let _ = addr_tx.send(Ok(app.local_addr()));
            app.run_until_stopped(async move {
                let _ = stop_rx.await;
            })
            .await
        });
        let addr = addr_rx.await?.map_err(|e| anyhow::anyhow!("relay did not start: {e}"))?;
        bases.push(format!("http://{addr}"));
        stops.push(stop_tx);
        relay_tasks.push(relay_task);
    }
    let client = reqwest::Client::builder()
        .http1_only()
        .pool_max_idle_per_host(max_conns.max(16))
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(60))
        .build()?;

    let providers = ProviderSettings {
        apns_production_url: apns.url(),
        apns_sandbox_url: apns.url(),
        fcm_base_url: fcm.base_url(),
        extra_ca_pem: Some(pki.ca_pem()),
        request_timeout: Duration::from_secs(10),
        ..ProviderSettings::default()
    };
    let apns_creds = ApnsCredentials {
        bundle_id: BundleId::parse(APP)?,
        auth: ApnsAuth::Token { key_id: key_id.clone(), team_id: team_id.clone(), p8_pem: Secret::new(p8.clone()) },
    };
    let fcm_creds = FcmCredentials::parse_service_account(service_account.as_bytes()).map_err(|e| anyhow::anyhow!("service account: {e}"))?;

    let apns_body = serde_json::json!({"keyId": key_id, "bundleId": APP, "teamId": team_id, "keyFile": STANDARD.encode(&p8)});
    let e = Env {
        _dir: dir,
        apns,
        fcm,
        apns_creds,
        fcm_creds,
        providers,
        settings_env: env,
        base: bases[0].clone(),
        bases,
        client,
        stops,
        relay_tasks,
        pg_created,
        apns_body: apns_body.clone(),
    };
    println!("relay: {} node(s) on {} ({}), sharing one database and master key file", e.bases.len(), e.backend(), e.bases.join(", "));
    // Provider credentials through the admin API (cheap, once).
    let fcm_body = serde_json::json!({"serviceAccount": STANDARD.encode(&service_account)});
    for (path, body) in [(format!("/v1/apps/{APP}/apns"), apns_body), (format!("/v1/apps/{APP}/fcm"), fcm_body)] {
        e.admin_put(&path, &body).await?;
    }
    Ok(e)
}

impl Env {
    pub(crate) async fn admin_put(&self, path: &str, body: &serde_json::Value) -> anyhow::Result<()> {
        let r = self.client.put(self.url(path)).bearer_auth(ADMIN_TOKEN).json(body).send().await?;
        if !r.status().is_success() {
            bail!("PUT {path}: {} {}", r.status(), r.text().await.unwrap_or_default());
        }
        Ok(())
    }
}

pub(crate) async fn stop_env(mut e: Env) {
    for tx in e.stops.drain(..) {
        let _ = tx.send(());
    }
    for t in e.relay_tasks.drain(..) {
        match tokio::time::timeout(Duration::from_secs(15), t).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(err))) => eprintln!("relay stopped with an error: {err:#}"),
            Ok(Err(err)) => eprintln!("relay task: {err}"),
            Err(_) => eprintln!("relay did not stop within 15 s"),
        }
    }
    if let Some((server, name)) = e.pg_created.take() {
        use sqlx::Connection;
        match sqlx::PgConnection::connect(&format!("{server}/postgres")).await {
            Ok(mut conn) => {
                if let Err(err) = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await {
                    eprintln!("could not drop {name}: {err}");
                }
                let _ = conn.close().await;
            }
            Err(err) => eprintln!("could not drop {name}: {err}"),
        }
    }
    drop(e.apns);
    drop(e.fcm);
}

/// Run `f` with `concurrency` in flight over `items`, failing on the first error.
pub(crate) async fn for_each_concurrent<T, F, Fut>(rt: &Handle, items: Vec<T>, concurrency: usize, f: F) -> anyhow::Result<()>
where
    T: Send + 'static,
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let f = Arc::new(f);
    let queue = Arc::new(std::sync::Mutex::new(items.into_iter()));
    let mut tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>> = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (f, queue) = (f.clone(), queue.clone());
        tasks.push(rt.spawn(async move {
            loop {
                let item = queue.lock().expect("queue").next();
                let Some(item) = item else { return Ok(()) };
                f(item).await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

pub(crate) async fn register_store(rts: &Runtimes, env: &Env, devs: &[Dev]) -> anyhow::Result<()> {
    let settings = env.settings()?;
    let store: Store = rts.relay.spawn(async move { open_store(&settings).await }).await??;
    let hash = pushrelay::http::auth::hash_password(PASSWORD)?;
    let now = now_ms();
    let regs: Vec<Registration> = devs.iter().map(registration).collect::<anyhow::Result<_>>()?;
    // Users one at a time: `Store::upsert_user` is a deferred SELECT-then-INSERT
    // transaction, and concurrent ones fail on SQLite WAL with
    // SQLITE_BUSY_SNAPSHOT (517, "database is locked"), which busy_timeout
    // does not retry (see docs/BENCHMARKS.md). Devices are single statements.
    let users: Vec<UserId> = regs.iter().map(|r| r.user.clone()).collect();
    let (st, h) = (store.clone(), hash.clone());
    rts.relay
        .spawn(async move {
            for u in users {
                st.upsert_user(&pushrelay::domain::Scope::default_tenant(), &u, Some(&h), now).await?;
            }
            anyhow::Ok(())
        })
        .await??;
    let st = store.clone();
    for_each_concurrent(rts.relay.handle(), regs, 8, move |reg: Registration| {
        let st = st.clone();
        async move {
            st.register(&pushrelay::domain::Scope::default_tenant(), &reg.user, std::slice::from_ref(&reg), &Default::default(), now, u32::MAX)
                .await?;
            Ok(())
        }
    })
    .await?;
    store.close().await;
    Ok(())
}

pub(crate) async fn register_http(rts: &Runtimes, env: &Env, devs: &[Dev], concurrency: usize) -> anyhow::Result<()> {
    let (client, base) = (env.client.clone(), env.base.clone());
    for_each_concurrent(rts.gen.handle(), devs.to_vec(), concurrency, move |d: Dev| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let r = client
                .put(format!("{base}/v1/users/{}", d.user))
                .bearer_auth(ADMIN_TOKEN)
                .json(&serde_json::json!({ "password": PASSWORD }))
                .send()
                .await?;
            if !r.status().is_success() {
                bail!("PUT user {}: {}", d.user, r.status());
            }
            let r = client
                .put(format!("{base}/cucm-uds/user/{}/device/{}/devicetoken", d.user, d.device))
                .basic_auth(&d.user, Some(PASSWORD))
                .header("content-type", "application/xml")
                .body(uds_xml(&d))
                .send()
                .await?;
            if r.status() != 200 {
                bail!("UDS PUT {}: {} {}", d.device, r.status(), r.text().await.unwrap_or_default());
            }
            Ok(())
        }
    })
    .await
}

//! `pushrelay-bench`: load generator and micro-benchmarks for pushrelay
//! (docs/BENCHMARKS.md).
//!
//! Everything runs in this one process, on 127.0.0.1 only: the strict mock
//! APNs/FCM servers (recording off), a real relay (`Application::build` on a
//! temporary SQLite file) pointed at them, and a closed-loop HTTP/1.1
//! generator driving `POST /v1/calls`. Each of the three lives on its own
//! tokio runtime with named threads (`relay-rt`, `mock-rt`, `gen-rt`) so the
//! CPU time of each can be read from `/proc/self/task/*/stat`.
//!
//! Next to every relay measurement the mock's own ceiling is measured in the
//! same run: the provider client (`ApnsClient` / `FcmClient`) drives the mock
//! directly at the same concurrency with a payload of the same size, so a
//! result is also a machine-independent ratio (relay calls/s ÷ ceiling).
//!
//! Every run is bounded (warm-up + duration per point, and `--calls`).

use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use pushrelay::config::{CliOverrides, Settings};
use pushrelay::domain::{
    now_ms, ApnsAuth, ApnsCredentials, AppId, BundleId, CallEvent, CallId, Channel, DevicePkid,
    DeviceToken, Dialect, FcmCredentials, PayloadVersion, PushId, PushKey, Registration,
    RingWindow, UserId,
};
use pushrelay::mock::{fixtures, MockApns, MockApnsConfig, MockApnsKey, MockFcm, TestPki};
use pushrelay::payload::{self, Content};
use pushrelay::provider::{ApnsClient, ApnsPush, FcmClient, ProviderSettings};
use pushrelay::secret::Secret;
use pushrelay::startup::{install_crypto_provider, open_store, Application};
use pushrelay::store::Store;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::future::Future;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::{Handle, Runtime};

const APP: &str = "com.example.KitchenSink";
const ADMIN_TOKEN: &str = "bench-admin-token-0123456789abcdef";
const PASSWORD: &str = "bench-password";
const FCM_PROJECT: &str = "pushrelay-bench";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// POST /v1/calls, every device on APNs (production channel).
    Apns,
    /// POST /v1/calls, every device on FCM.
    Fcm,
    /// POST /v1/calls, devices alternate APNs / FCM.
    Mixed,
    /// Registrations/s: UDS PUT (Argon2 default and cheap hash) and the store alone.
    UdsRegister,
    /// ns/op of the V2 payload, JWE encrypt/decrypt, envelope open, Argon2 verify.
    Jwe,
    /// Diagnostic: the store statements of one call, alone, at each concurrency.
    StoreOps,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Apns => "apns",
            Scenario::Fcm => "fcm",
            Scenario::Mixed => "mixed",
            Scenario::UdsRegister => "uds-register",
            Scenario::Jwe => "jwe",
            Scenario::StoreOps => "store-ops",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Register {
    /// Users and devices written straight into the store (second pool on the same file).
    Store,
    /// PUT /v1/users + UDS PUT over HTTP (Argon2 hash + verify per device: slow).
    Http,
}

#[derive(Parser, Debug)]
#[command(
    name = "pushrelay-bench",
    about = "Benchmarks pushrelay against in-process mock APNs/FCM (127.0.0.1 only)"
)]
struct Args {
    scenario: Scenario,
    /// Devices registered (one user per device; calls go round-robin over them).
    #[arg(long, default_value_t = 2000)]
    devices: usize,
    /// Upper bound on measured operations per point (calls, pushes, registrations).
    #[arg(long, default_value_t = 2_000_000)]
    calls: u64,
    /// Concurrency levels (closed loop: this many requests in flight).
    #[arg(long, value_delimiter = ',', default_value = "16")]
    concurrency: Vec<usize>,
    /// Measured seconds per point (after the warm-up).
    #[arg(long, default_value_t = 5.0)]
    duration_secs: f64,
    /// Unmeasured warm-up seconds per point.
    #[arg(long, default_value_t = 1.0)]
    warmup_secs: f64,
    /// Where the CSV and SVG go.
    #[arg(long, default_value = "docs/bench")]
    out: PathBuf,
    /// How the devices of the call scenarios are registered.
    #[arg(long, value_enum, default_value_t = Register::Store)]
    register: Register,
    /// Worker threads of the relay runtime (also drives the ceiling clients).
    #[arg(long, default_value_t = 2)]
    relay_threads: usize,
    /// Worker threads of the mock servers' runtime.
    #[arg(long, default_value_t = 1)]
    mock_threads: usize,
    /// Worker threads of the load generator's runtime.
    #[arg(long, default_value_t = 1)]
    gen_threads: usize,
    /// Skip the mock-ceiling measurement.
    #[arg(long)]
    no_ceiling: bool,
    /// Turn the relay's logging on (info, to stderr: redirect it) to see its cost.
    #[arg(long)]
    with_logs: bool,
    /// Iterations of the fast `jwe` micro-benchmarks.
    #[arg(long, default_value_t = 200_000)]
    iterations: u64,
    /// Suffix for the output file names (e.g. `-logs`).
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    tag: String,
}

// ---------------------------------------------------------------- CPU time

/// CPU seconds of the whole process and per thread group.
#[derive(Clone, Copy, Default, Debug)]
struct Cpu {
    total: f64,
    relay_rt: f64,
    sqlite: f64,
    mock: f64,
    gen: f64,
    /// Busy CPU seconds of the whole machine (/proc/stat), all processes.
    machine: f64,
}

impl std::ops::Sub for Cpu {
    type Output = Cpu;
    fn sub(self, o: Cpu) -> Cpu {
        Cpu {
            total: self.total - o.total,
            relay_rt: self.relay_rt - o.relay_rt,
            sqlite: self.sqlite - o.sqlite,
            mock: self.mock - o.mock,
            gen: self.gen - o.gen,
            machine: self.machine - o.machine,
        }
    }
}

impl Cpu {
    /// Everything that is not the mock or the generator: relay runtime, SQLite
    /// worker threads, exited blocking threads, main thread.
    fn relay(&self) -> f64 {
        self.total - self.mock - self.gen
    }
    /// CPU seconds other processes on the machine used meanwhile.
    fn others(&self) -> f64 {
        (self.machine - self.total).max(0.0)
    }
}

/// Busy seconds of all CPUs: user+nice+system+irq+softirq+steal from /proc/stat.
fn machine_busy() -> f64 {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = s.lines().next() else {
        return 0.0;
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let get = |i: usize| v.get(i).copied().unwrap_or(0);
    (get(0) + get(1) + get(2) + get(5) + get(6) + get(7)) as f64 / clk_tck()
}

fn clk_tck() -> f64 {
    static TCK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// utime + stime (ticks) from a `stat` file.
fn stat_ticks(path: &Path) -> Option<u64> {
    let s = std::fs::read_to_string(path).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn cpu_now() -> Cpu {
    let tck = clk_tck();
    let mut c = Cpu {
        total: stat_ticks(Path::new("/proc/self/stat")).unwrap_or(0) as f64 / tck,
        machine: machine_busy(),
        ..Default::default()
    };
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for e in dir.flatten() {
            let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            let t = stat_ticks(&e.path().join("stat")).unwrap_or(0) as f64 / tck;
            let comm = comm.trim();
            if comm.starts_with("gen-rt") {
                c.gen += t;
            } else if comm.starts_with("mock-rt") {
                c.mock += t;
            } else if comm.starts_with("sqlx-sqlite") {
                c.sqlite += t;
            } else if comm.starts_with("relay-rt") {
                c.relay_rt += t;
            }
        }
    }
    c
}

// ---------------------------------------------------------- closed loop

type OpFuture = Pin<Box<dyn Future<Output = Result<u64, String>> + Send>>;
/// One operation number `n` → how many pushes it delivered (or an error).
type Op = Arc<dyn Fn(u64) -> OpFuture + Send + Sync>;

#[derive(Clone, Debug)]
struct Point {
    concurrency: usize,
    ops: u64,
    errors: u64,
    pushes: u64,
    secs: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    cpu: Cpu,
    first_error: Option<String>,
}

impl Point {
    fn ops_per_s(&self) -> f64 {
        self.ops as f64 / self.secs
    }
    fn pushes_per_s(&self) -> f64 {
        self.pushes as f64 / self.secs
    }
    /// CPU seconds per 1000 successful operations.
    fn per_k(&self, cpu_s: f64) -> f64 {
        if self.ops == 0 {
            0.0
        } else {
            cpu_s * 1000.0 / self.ops as f64
        }
    }
}

struct Bounds {
    warmup: Duration,
    duration: Duration,
    max_ops: u64,
}

/// Run `op` with `concurrency` tasks on `rt` in a closed loop: warm-up, then
/// a measured window (latency histogram, counts, process CPU).
async fn closed_loop(rt: &Handle, concurrency: usize, b: &Bounds, op: Op) -> Point {
    let start = Instant::now();
    let measure_from = start + b.warmup;
    let end = measure_from + b.duration;
    let next = Arc::new(AtomicU64::new(0));
    let measured = Arc::new(AtomicU64::new(0));
    let max_ops = b.max_ops;
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (op, next, measured) = (op.clone(), next.clone(), measured.clone());
        tasks.push(rt.spawn(async move {
            let mut h = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("histogram");
            let (mut ok, mut errors, mut pushes, mut first_error) = (0u64, 0u64, 0u64, None);
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let in_window = t0 >= measure_from;
                if in_window && measured.fetch_add(1, Ordering::Relaxed) >= max_ops {
                    break;
                }
                let n = next.fetch_add(1, Ordering::Relaxed);
                let r = op(n).await;
                if in_window {
                    let us = t0.elapsed().as_micros().max(1) as u64;
                    match r {
                        Ok(p) => {
                            ok += 1;
                            pushes += p;
                            h.saturating_record(us);
                        }
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert(e);
                        }
                    }
                }
            }
            (h, ok, errors, pushes, first_error, Instant::now())
        }));
    }
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu0 = cpu_now();
    let t_measure = Instant::now();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("histogram");
    let mut p = Point {
        concurrency,
        ops: 0,
        errors: 0,
        pushes: 0,
        secs: 0.0,
        p50_ms: 0.0,
        p90_ms: 0.0,
        p99_ms: 0.0,
        max_ms: 0.0,
        cpu: Cpu::default(),
        first_error: None,
    };
    let mut last = t_measure;
    for t in tasks {
        let (h, ok, errors, pushes, first_error, finished) = t.await.expect("load task");
        hist.add(&h).expect("merge histograms");
        p.ops += ok;
        p.errors += errors;
        p.pushes += pushes;
        if p.first_error.is_none() {
            p.first_error = first_error;
        }
        last = last.max(finished);
    }
    p.cpu = cpu_now() - cpu0;
    p.secs = (last - t_measure).as_secs_f64().max(1e-9);
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    p.p50_ms = ms(0.50);
    p.p90_ms = ms(0.90);
    p.p99_ms = ms(0.99);
    p.max_ms = hist.max() as f64 / 1000.0;
    p
}

// ------------------------------------------------------------ the setup

struct Runtimes {
    relay: Runtime,
    mock: Runtime,
    gen: Runtime,
}

fn runtime(name: &str, threads: usize) -> anyhow::Result<Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name(name)
        .enable_all()
        .build()?)
}

/// One device: its user, pkid, channel, token and key.
#[derive(Clone)]
struct Dev {
    user: String,
    device: String,
    channel: Channel,
    token: String,
    key: [u8; 32],
}

fn make_devices(scenario: Scenario, n: usize) -> Vec<Dev> {
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
            Dev {
                user: format!("u{i:06}"),
                device: format!("dev-{i:06}"),
                channel,
                token,
                key: rand::random(),
            }
        })
        .collect()
}

fn uds_xml(d: &Dev) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<token>\n  <pushNotifyToken>{}</pushNotifyToken>\n  <pushChannelType>{}</pushChannelType>\n  <key>{}</key>\n  <algorithm>A256GCM</algorithm>\n  <application>{APP}</application>\n  <payloadVersion>V2</payloadVersion>\n</token>\n",
        d.token,
        d.channel.as_str(),
        STANDARD.encode(d.key)
    )
}

fn registration(d: &Dev) -> anyhow::Result<Registration> {
    Ok(Registration {
        user: UserId::parse(&d.user)?,
        device: DevicePkid::parse(&d.device)?,
        dialect: Dialect::Uds,
        channel: d.channel,
        token: DeviceToken::for_channel(d.channel, &d.token)?,
        key: Some(PushKey::from_bytes(d.key)),
        app: AppId::parse(APP)?,
        payload_version: Some(PayloadVersion::parse("V2")?),
        msg: None,
        sip: None,
    })
}

fn call_event(user: &str, device: Option<&str>, n: u64) -> CallEvent {
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
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> anyhow::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos();
        let p =
            std::env::temp_dir().join(format!("pushrelay-bench-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p)?;
        Ok(Self(p))
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Env {
    _dir: TempDir,
    apns: MockApns,
    fcm: MockFcm,
    apns_creds: ApnsCredentials,
    fcm_creds: FcmCredentials,
    providers: ProviderSettings,
    settings_env: HashMap<String, String>,
    base: String,
    client: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    relay_task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Env {
    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }
    fn settings(&self) -> anyhow::Result<Settings> {
        Ok(Settings::load_from(
            None,
            &self.settings_env,
            &CliOverrides::default(),
        )?)
    }
}

/// Mocks (recording off) on the mock runtime, a relay on the relay runtime
/// pointed at them, the app's APNs and FCM credentials stored over HTTP.
async fn start_env(rts: &Runtimes, max_conns: usize) -> anyhow::Result<Env> {
    let pki = TestPki::generate();
    let (p8, key_id) = fixtures::apns_p8();
    let team_id = "D7A3215KHV".to_string();
    let cfg = MockApnsConfig {
        sandbox: false,
        bundles: vec![APP.to_string()],
        keys: vec![MockApnsKey {
            team_id: team_id.clone(),
            key_id: key_id.clone(),
            p8_pem: p8.clone(),
        }],
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
    let mut env = HashMap::new();
    env.insert("PUSHRELAY_LISTEN".to_string(), "127.0.0.1:0".to_string());
    env.insert(
        "PUSHRELAY_DATABASE_URL".to_string(),
        format!("sqlite://{}", dir.path().join("relay.db").display()),
    );
    env.insert("PUSHRELAY_ADMIN_TOKEN".to_string(), ADMIN_TOKEN.to_string());
    env.insert("PUSHRELAY_APNS_PRODUCTION_URL".to_string(), apns.url());
    env.insert("PUSHRELAY_APNS_SANDBOX_URL".to_string(), apns.url());
    env.insert("PUSHRELAY_FCM_BASE_URL".to_string(), fcm.base_url());
    env.insert(
        "PUSHRELAY_TLS_EXTRA_CA_FILE".to_string(),
        ca.display().to_string(),
    );
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
    let addr = addr_rx
        .await?
        .map_err(|e| anyhow::anyhow!("relay did not start: {e}"))?;
    let client = reqwest::Client::builder()
        .http1_only()
        .pool_max_idle_per_host(max_conns.max(16))
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(60))
        .build()?;
    let base = format!("http://{addr}");

    let providers = ProviderSettings {
        apns_production_url: apns.url(),
        apns_sandbox_url: apns.url(),
        fcm_base_url: fcm.base_url(),
        extra_ca_pem: Some(pki.ca_pem()),
        request_timeout: Duration::from_secs(10),
    };
    let apns_creds = ApnsCredentials {
        bundle_id: BundleId::parse(APP)?,
        auth: ApnsAuth::Token {
            key_id: key_id.clone(),
            team_id: team_id.clone(),
            p8_pem: Secret::new(p8.clone()),
        },
    };
    let fcm_creds = FcmCredentials::parse_service_account(service_account.as_bytes())
        .map_err(|e| anyhow::anyhow!("service account: {e}"))?;

    let e = Env {
        _dir: dir,
        apns,
        fcm,
        apns_creds,
        fcm_creds,
        providers,
        settings_env: env,
        base,
        client,
        stop: Some(stop_tx),
        relay_task: Some(relay_task),
    };
    // Provider credentials through the admin API (cheap, once).
    let apns_body = serde_json::json!({"keyId": key_id, "bundleId": APP, "teamId": team_id, "keyFile": STANDARD.encode(&p8)});
    let fcm_body = serde_json::json!({"serviceAccount": STANDARD.encode(&service_account)});
    for (path, body) in [
        (format!("/v1/apps/{APP}/apns"), apns_body),
        (format!("/v1/apps/{APP}/fcm"), fcm_body),
    ] {
        let r = e
            .client
            .put(e.url(&path))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!(
                "PUT {path}: {} {}",
                r.status(),
                r.text().await.unwrap_or_default()
            );
        }
    }
    Ok(e)
}

async fn stop_env(mut e: Env) {
    if let Some(tx) = e.stop.take() {
        let _ = tx.send(());
    }
    if let Some(t) = e.relay_task.take() {
        match tokio::time::timeout(Duration::from_secs(15), t).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(err))) => eprintln!("relay stopped with an error: {err:#}"),
            Ok(Err(err)) => eprintln!("relay task: {err}"),
            Err(_) => eprintln!("relay did not stop within 15 s"),
        }
    }
    drop(e.apns);
    drop(e.fcm);
}

/// Run `f` with `concurrency` in flight over `items`, failing on the first error.
async fn for_each_concurrent<T, F, Fut>(
    rt: &Handle,
    items: Vec<T>,
    concurrency: usize,
    f: F,
) -> anyhow::Result<()>
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

async fn register_store(rts: &Runtimes, env: &Env, devs: &[Dev]) -> anyhow::Result<()> {
    let settings = env.settings()?;
    let store: Store = rts
        .relay
        .spawn(async move { open_store(&settings).await.map(|(s, _)| s) })
        .await??;
    let hash = pushrelay::http::auth::hash_password(PASSWORD)?;
    let now = now_ms();
    let regs: Vec<Registration> = devs
        .iter()
        .map(registration)
        .collect::<anyhow::Result<_>>()?;
    // Users one at a time: `Store::upsert_user` is a deferred SELECT-then-INSERT
    // transaction, and concurrent ones fail on SQLite WAL with
    // SQLITE_BUSY_SNAPSHOT (517, "database is locked"), which busy_timeout
    // does not retry (see docs/BENCHMARKS.md). Devices are single statements.
    let users: Vec<UserId> = regs.iter().map(|r| r.user.clone()).collect();
    let (st, h) = (store.clone(), hash.clone());
    rts.relay
        .spawn(async move {
            for u in users {
                st.upsert_user(&u, Some(&h), now).await?;
            }
            anyhow::Ok(())
        })
        .await??;
    let st = store.clone();
    for_each_concurrent(rts.relay.handle(), regs, 8, move |reg: Registration| {
        let st = st.clone();
        async move {
            st.upsert_device(&reg, now).await?;
            Ok(())
        }
    })
    .await?;
    store.close().await;
    Ok(())
}

async fn register_http(
    rts: &Runtimes,
    env: &Env,
    devs: &[Dev],
    concurrency: usize,
) -> anyhow::Result<()> {
    let (client, base) = (env.client.clone(), env.base.clone());
    for_each_concurrent(
        rts.gen.handle(),
        devs.to_vec(),
        concurrency,
        move |d: Dev| {
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
                    .put(format!(
                        "{base}/cucm-uds/user/{}/device/{}/devicetoken",
                        d.user, d.device
                    ))
                    .basic_auth(&d.user, Some(PASSWORD))
                    .header("content-type", "application/xml")
                    .body(uds_xml(&d))
                    .send()
                    .await?;
                if r.status() != 200 {
                    bail!(
                        "UDS PUT {}: {} {}",
                        d.device,
                        r.status(),
                        r.text().await.unwrap_or_default()
                    );
                }
                Ok(())
            }
        },
    )
    .await
}

#[derive(serde::Deserialize)]
struct ReportBody {
    deliveries: Vec<DeliveryBody>,
}

#[derive(serde::Deserialize)]
struct DeliveryBody {
    outcome: String,
    reason: Option<String>,
}

/// `POST /v1/calls` for device `n % len`, counting delivered pushes.
fn call_op(env: &Env, devs: Arc<Vec<Dev>>) -> Op {
    let (client, url) = (env.client.clone(), env.url("/v1/calls"));
    Arc::new(move |n: u64| -> OpFuture {
        let d = &devs[(n % devs.len() as u64) as usize];
        let body = serde_json::json!({
            "user": d.user, "device": d.device, "pushid": format!("bench-{n:012}"),
            "displayname": "Alice Example", "displaynumber": "+15551234567", "huntpilotdn": "5000",
        })
        .to_string();
        let req = client
            .post(&url)
            .bearer_auth(ADMIN_TOKEN)
            .header("content-type", "application/json")
            .body(body);
        Box::pin(async move {
            let r = req.send().await.map_err(|e| format!("send: {e}"))?;
            let status = r.status();
            let bytes = r.bytes().await.map_err(|e| format!("body: {e}"))?;
            if status != 200 {
                return Err(format!("{status}: {}", String::from_utf8_lossy(&bytes)));
            }
            let rep: ReportBody =
                serde_json::from_slice(&bytes).map_err(|e| format!("report: {e}"))?;
            let mut delivered = 0;
            for d in &rep.deliveries {
                if d.outcome == "delivered" {
                    delivered += 1;
                } else {
                    return Err(format!(
                        "outcome {} ({})",
                        d.outcome,
                        d.reason.as_deref().unwrap_or("")
                    ));
                }
            }
            Ok(delivered)
        })
    })
}

/// The mock's ceiling: the provider clients straight at the mocks (no HTTP
/// server, no store, no encryption), same devices and payload size.
fn ceiling_op(env: &Env, devs: Arc<Vec<Dev>>) -> anyhow::Result<Op> {
    let apns = Arc::new(ApnsClient::new(env.providers.clone()));
    let fcm = Arc::new(FcmClient::new(env.providers.clone()));
    let apns_creds = Arc::new(env.apns_creds.clone());
    let fcm_creds = Arc::new(env.fcm_creds.clone());
    let bundle = BundleId::parse(APP)?;
    // One real payload per device (what the relay would send), built now.
    let mut contents = Vec::with_capacity(devs.len());
    for d in devs.iter() {
        let reg = registration(d)?;
        let c = payload::for_call(&call_event(&d.user, Some(&d.device), 0), &reg)?;
        contents.push((reg.token, c));
    }
    let contents = Arc::new(contents);
    Ok(Arc::new(move |n: u64| -> OpFuture {
        let i = (n % devs.len() as u64) as usize;
        let channel = devs[i].channel;
        let (apns, fcm, apns_creds, fcm_creds, contents, bundle) = (
            apns.clone(),
            fcm.clone(),
            apns_creds.clone(),
            fcm_creds.clone(),
            contents.clone(),
            bundle.clone(),
        );
        Box::pin(async move {
            let (token, content) = &contents[i];
            let attempt = match content {
                Content::ApnsVoip { body } => {
                    let exp = now_ms() / 1000 + 30;
                    let push = ApnsPush::voip(token, &bundle, exp, body.clone());
                    apns.send(APP, &apns_creds, channel, &push).await
                }
                Content::FcmData { data } => fcm.send(&fcm_creds, token.as_str(), data, 30).await,
                Content::ApnsAlert { .. } => return Err("call payloads are never alerts".to_string()),
            };
            if attempt.is_delivered() {
                Ok(1)
            } else {
                Err(format!("{attempt:?}"))
            }
        })
    }))
}

// ------------------------------------------------------------ scenarios

fn bounds(a: &Args) -> Bounds {
    Bounds {
        warmup: Duration::from_secs_f64(a.warmup_secs.max(0.0)),
        duration: Duration::from_secs_f64(a.duration_secs.max(0.1)),
        max_ops: a.calls.max(1),
    }
}

struct Row {
    relay: Point,
    ceiling: Option<Point>,
}

fn print_call_header() {
    println!(
        "{:>5} {:>9} {:>9} {:>9} {:>7} {:>7} {:>7} {:>7} {:>6} | {:>8} {:>7} {:>7} {:>7} {:>7} | {:>10} {:>7} {:>6}",
        "conc", "calls", "calls/s", "pushes/s", "p50ms", "p90ms", "p99ms", "maxms", "errs",
        "cpu/1k", "relay", "sqlite", "mock", "gen", "ceil/s", "c.p99", "ratio"
    );
    println!("      (others = cores used by other processes on the machine during the point: noise if > 0.1)");
}

fn print_call_row(r: &Row) {
    let p = &r.relay;
    let (cs, cp99, ratio) = match &r.ceiling {
        Some(c) => (
            format!("{:.0}", c.pushes_per_s()),
            format!("{:.2}", c.p99_ms),
            format!("{:.3}", p.ops_per_s() / c.pushes_per_s().max(1e-9)),
        ),
        None => ("-".into(), "-".into(), "-".into()),
    };
    println!(
        "{:>5} {:>9} {:>9.0} {:>9.0} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>6} | {:>8.3} {:>7.3} {:>7.3} {:>7.3} {:>7.3} | {:>10} {:>7} {:>6}",
        p.concurrency,
        p.ops,
        p.ops_per_s(),
        p.pushes_per_s(),
        p.p50_ms,
        p.p90_ms,
        p.p99_ms,
        p.max_ms,
        p.errors,
        p.per_k(p.cpu.total),
        p.per_k(p.cpu.relay()),
        p.per_k(p.cpu.sqlite),
        p.per_k(p.cpu.mock),
        p.per_k(p.cpu.gen),
        cs,
        cp99,
        ratio
    );
    let others = |q: &Point| q.cpu.others() / q.secs;
    println!(
        "      process used {:.2} cores; others {:.2} cores (relay point), {} (ceiling point)",
        p.cpu.total / p.secs,
        others(p),
        r.ceiling
            .as_ref()
            .map(|c| format!("{:.2}", others(c)))
            .unwrap_or("-".into())
    );
    if let Some(e) = &p.first_error {
        println!("      first relay error: {e}");
    }
    if let Some(e) = r.ceiling.as_ref().and_then(|c| c.first_error.as_ref()) {
        println!("      first ceiling error: {e}");
    }
}

const CALL_CSV_HEADER: &str = "scenario,concurrency,calls,errors,seconds,calls_per_s,pushes_per_s,p50_ms,p90_ms,p99_ms,max_ms,cpu_s_per_1k_total,cpu_s_per_1k_relay,cpu_s_per_1k_sqlite_threads,cpu_s_per_1k_mock,cpu_s_per_1k_generator,ceiling_pushes_per_s,ceiling_p50_ms,ceiling_p99_ms,ceiling_cpu_s_per_1k_total,ratio_to_ceiling,process_cores,other_processes_cores,ceiling_other_processes_cores";

fn call_csv_row(scenario: &str, r: &Row) -> String {
    let p = &r.relay;
    let (cs, c50, c99, ccpu, ratio, coth) = match &r.ceiling {
        Some(c) => (
            format!("{:.1}", c.pushes_per_s()),
            format!("{:.3}", c.p50_ms),
            format!("{:.3}", c.p99_ms),
            format!("{:.4}", c.per_k(c.cpu.total)),
            format!("{:.4}", p.ops_per_s() / c.pushes_per_s().max(1e-9)),
            format!("{:.2}", c.cpu.others() / c.secs),
        ),
        None => Default::default(),
    };
    format!(
        "{scenario},{},{},{},{:.3},{:.1},{:.1},{:.3},{:.3},{:.3},{:.3},{:.4},{:.4},{:.4},{:.4},{:.4},{cs},{c50},{c99},{ccpu},{ratio},{:.2},{:.2},{coth}",
        p.concurrency,
        p.ops,
        p.errors,
        p.secs,
        p.ops_per_s(),
        p.pushes_per_s(),
        p.p50_ms,
        p.p90_ms,
        p.p99_ms,
        p.max_ms,
        p.per_k(p.cpu.total),
        p.per_k(p.cpu.relay()),
        p.per_k(p.cpu.sqlite),
        p.per_k(p.cpu.mock),
        p.per_k(p.cpu.gen),
        p.cpu.total / p.secs,
        p.cpu.others() / p.secs,
    )
}

async fn run_calls(a: &Args, rts: &Runtimes) -> anyhow::Result<()> {
    let max_c = a.concurrency.iter().copied().max().unwrap_or(16);
    let env = start_env(rts, max_c).await?;
    let devs = make_devices(a.scenario, a.devices.max(1));
    let t = Instant::now();
    match a.register {
        Register::Store => register_store(rts, &env, &devs).await?,
        Register::Http => register_http(rts, &env, &devs, 16).await?,
    }
    let reg_s = t.elapsed().as_secs_f64();
    println!(
        "registration: {} devices ({} users, 1 device each) via {} in {:.2} s",
        devs.len(),
        devs.len(),
        match a.register {
            Register::Store =>
                "the store fast path (Store::upsert_user/upsert_device on a second pool, same file)",
            Register::Http => "HTTP (PUT /v1/users + UDS PUT, Argon2 hash + verify each)",
        },
        reg_s
    );
    let devs = Arc::new(devs);
    let b = bounds(a);
    let ceiling = if a.no_ceiling {
        None
    } else {
        Some(ceiling_op(&env, devs.clone())?)
    };
    let relay_op = call_op(&env, devs.clone());
    println!(
        "scenario {}: closed loop POST /v1/calls, {:.1} s warm-up + {:.1} s per point, at most {} calls per point; ceiling = provider client straight at the mock",
        a.scenario.name(),
        a.warmup_secs,
        a.duration_secs,
        a.calls
    );
    println!("cpu columns: process CPU seconds per 1000 calls (total, relay = total - mock - gen, of which sqlite worker threads, mock, generator)");
    print_call_header();
    let mut rows = Vec::new();
    for &c in &a.concurrency {
        let ceiling_point = match &ceiling {
            Some(op) => Some(closed_loop(rts.relay.handle(), c, &b, op.clone()).await),
            None => None,
        };
        let relay_point = closed_loop(rts.gen.handle(), c, &b, relay_op.clone()).await;
        let row = Row {
            relay: relay_point,
            ceiling: ceiling_point,
        };
        print_call_row(&row);
        rows.push(row);
    }
    stop_env(env).await;

    std::fs::create_dir_all(&a.out)?;
    let stem = format!("{}{}", a.scenario.name(), a.tag);
    let mut csv = String::from(CALL_CSV_HEADER);
    csv.push('\n');
    for r in &rows {
        csv.push_str(&call_csv_row(a.scenario.name(), r));
        csv.push('\n');
    }
    let csv_path = a.out.join(format!("{stem}.csv"));
    std::fs::write(&csv_path, csv)?;
    let svg_path = a.out.join(format!("{stem}.svg"));
    std::fs::write(&svg_path, chart(&format!("pushrelay-bench {stem}"), &rows))?;
    println!("wrote {} and {}", csv_path.display(), svg_path.display());
    Ok(())
}

/// Registrations/s at each concurrency: UDS PUT with the default Argon2
/// hash, UDS PUT with a minimal-cost hash (the rest of the path), and
/// `Store::upsert_device` alone (no HTTP).
async fn run_uds(a: &Args, rts: &Runtimes) -> anyhow::Result<()> {
    let max_c = a.concurrency.iter().copied().max().unwrap_or(16);
    let env = start_env(rts, max_c).await?;
    let settings = env.settings()?;
    let store: Store = rts
        .relay
        .spawn(async move { open_store(&settings).await.map(|(s, _)| s) })
        .await??;
    let users = 64usize;
    let default_hash = pushrelay::http::auth::hash_password(PASSWORD)?;
    let cheap_hash = {
        use argon2::password_hash::{PasswordHasher, SaltString};
        let params = argon2::Params::new(8, 1, 1, None).map_err(|e| anyhow::anyhow!("{e}"))?;
        let a2 = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        a2.hash_password(
            PASSWORD.as_bytes(),
            &SaltString::generate(&mut rand::rngs::OsRng),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .to_string()
    };
    let now = now_ms();
    for i in 0..users {
        store
            .upsert_user(
                &UserId::parse(&format!("argon{i:03}"))?,
                Some(&default_hash),
                now,
            )
            .await?;
        store
            .upsert_user(
                &UserId::parse(&format!("cheap{i:03}"))?,
                Some(&cheap_hash),
                now,
            )
            .await?;
        store
            .upsert_user(&UserId::parse(&format!("direct{i:03}"))?, None, now)
            .await?;
    }
    println!("uds-register: {users} users per variant; every operation registers a new device (user n % {users}, device d<n>), APNs channel");
    let params: Vec<&str> = default_hash.split('$').take(4).collect();
    println!(
        "  argon2-default: UDS PUT, stored hash {} (what PUT /v1/users stores)",
        params.join("$")
    );
    println!("  argon2-cheap:   UDS PUT, stored hash with m=8 KiB, t=1, p=1 (the path without the password cost)");
    println!("  store-direct:   Store::upsert_device only (envelope seal + one INSERT ... ON CONFLICT), no HTTP");
    let b = bounds(a);
    let token_key = |n: u64| {
        let token = hex::encode(rand::random::<[u8; 32]>());
        let key: [u8; 32] = rand::random();
        let _ = n;
        (token, key)
    };
    let put_op = |prefix: &'static str| -> Op {
        let (client, base) = (env.client.clone(), env.base.clone());
        Arc::new(move |n: u64| -> OpFuture {
            let (token, key) = token_key(n);
            let d = Dev {
                user: format!("{prefix}{:03}", n % users as u64),
                device: format!("d{n:09}"),
                channel: Channel::Apns,
                token,
                key,
            };
            let req = client
                .put(format!(
                    "{base}/cucm-uds/user/{}/device/{}/devicetoken",
                    d.user, d.device
                ))
                .basic_auth(&d.user, Some(PASSWORD))
                .header("content-type", "application/xml")
                .body(uds_xml(&d));
            Box::pin(async move {
                let r = req.send().await.map_err(|e| format!("send: {e}"))?;
                let status = r.status();
                let body = r.bytes().await.map_err(|e| format!("body: {e}"))?;
                if status != 200 {
                    return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
                }
                Ok(0)
            })
        })
    };
    let direct_op: Op = {
        let store = store.clone();
        Arc::new(move |n: u64| -> OpFuture {
            let (token, key) = token_key(n);
            let d = Dev {
                user: format!("direct{:03}", n % users as u64),
                device: format!("d{n:09}"),
                channel: Channel::Apns,
                token,
                key,
            };
            let store = store.clone();
            Box::pin(async move {
                let reg = registration(&d).map_err(|e| e.to_string())?;
                store
                    .upsert_device(&reg, now_ms())
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(0)
            })
        })
    };
    println!(
        "{:>16} {:>5} {:>8} {:>9} {:>7} {:>7} {:>7} {:>7} {:>6} | {:>8} {:>7} {:>7} {:>7} {:>6}",
        "variant",
        "conc",
        "regs",
        "regs/s",
        "p50ms",
        "p90ms",
        "p99ms",
        "maxms",
        "errs",
        "cpu/1k",
        "relay",
        "sqlite",
        "gen",
        "others"
    );
    let mut csv = String::from("variant,concurrency,registrations,errors,seconds,registrations_per_s,p50_ms,p90_ms,p99_ms,max_ms,cpu_s_per_1k_total,cpu_s_per_1k_relay,cpu_s_per_1k_sqlite_threads,cpu_s_per_1k_generator,other_processes_cores\n");
    for &c in &a.concurrency {
        for (variant, op, rt) in [
            ("argon2-default", put_op("argon"), rts.gen.handle()),
            ("argon2-cheap", put_op("cheap"), rts.gen.handle()),
            ("store-direct", direct_op.clone(), rts.relay.handle()),
        ] {
            let p = closed_loop(rt, c, &b, op).await;
            println!(
                "{:>16} {:>5} {:>8} {:>9.0} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>6} | {:>8.3} {:>7.3} {:>7.3} {:>7.3} {:>6.2}",
                variant,
                c,
                p.ops,
                p.ops_per_s(),
                p.p50_ms,
                p.p90_ms,
                p.p99_ms,
                p.max_ms,
                p.errors,
                p.per_k(p.cpu.total),
                p.per_k(p.cpu.relay()),
                p.per_k(p.cpu.sqlite),
                p.per_k(p.cpu.gen),
                p.cpu.others() / p.secs
            );
            if let Some(e) = &p.first_error {
                println!("      first error: {e}");
            }
            let _ = writeln!(
                csv,
                "{variant},{c},{},{},{:.3},{:.1},{:.3},{:.3},{:.3},{:.3},{:.4},{:.4},{:.4},{:.4},{:.2}",
                p.ops,
                p.errors,
                p.secs,
                p.ops_per_s(),
                p.p50_ms,
                p.p90_ms,
                p.p99_ms,
                p.max_ms,
                p.per_k(p.cpu.total),
                p.per_k(p.cpu.relay()),
                p.per_k(p.cpu.sqlite),
                p.per_k(p.cpu.gen),
                p.cpu.others() / p.secs
            );
        }
    }
    store.close().await;
    stop_env(env).await;
    std::fs::create_dir_all(&a.out)?;
    let path = a.out.join(format!("uds-register{}.csv", a.tag));
    std::fs::write(&path, csv)?;
    println!("wrote {}", path.display());
    Ok(())
}

/// The three statements `POST /v1/calls` runs per call (device read with the
/// key opened, credentials read, report write), each alone and all three in
/// sequence, on the relay runtime with the relay's own store settings.
async fn run_store_ops(a: &Args, rts: &Runtimes) -> anyhow::Result<()> {
    use pushrelay::domain::{CallReport, Delivery, Outcome};
    let env = start_env(rts, 16).await?;
    let devs = Arc::new(make_devices(Scenario::Apns, a.devices.max(1)));
    register_store(rts, &env, &devs).await?;
    let settings = env.settings()?;
    let store: Store = rts
        .relay
        .spawn(async move { open_store(&settings).await.map(|(s, _)| s) })
        .await??;
    let app = AppId::parse(APP)?;
    let b = bounds(a);
    let op = |kind: u8| -> Op {
        let (store, devs, app) = (store.clone(), devs.clone(), app.clone());
        Arc::new(move |n: u64| -> OpFuture {
            let (store, app) = (store.clone(), app.clone());
            let d = devs[(n % devs.len() as u64) as usize].clone();
            Box::pin(async move {
                let user = UserId::parse(&d.user).map_err(|e| e.to_string())?;
                let device = DevicePkid::parse(&d.device).map_err(|e| e.to_string())?;
                if kind == 0 || kind == 3 {
                    let v = store
                        .devices_for(&user, Some(&device))
                        .await
                        .map_err(|e| e.to_string())?;
                    if v.len() != 1 {
                        return Err("device missing".into());
                    }
                }
                if kind == 1 || kind == 3 {
                    store
                        .credentials(&app, "apns")
                        .await
                        .map_err(|e| e.to_string())?
                        .ok_or("no credentials")?;
                }
                if kind == 2 || kind == 3 {
                    let call = CallId::new();
                    let rep = CallReport::new(
                        &call,
                        vec![Delivery::new(
                            &device,
                            Channel::Apns,
                            Outcome::Delivered,
                            Some(200),
                            None,
                            1,
                        )],
                    );
                    let now = now_ms();
                    store
                        .save_call(&pushrelay::store::CallRecord {
                            call: call.clone(),
                            user: user.clone(),
                            push_id: format!("bench-{n:012}"),
                            created_ms: now,
                            ring_ends_ms: now + 30_000,
                            report: rep,
                        })
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok(0)
            })
        })
    };
    println!(
        "store-ops: {} devices; each operation alone on the relay runtime (no HTTP, no push)",
        devs.len()
    );
    println!(
        "{:>34} {:>5} {:>8} {:>9} {:>7} {:>7} {:>7} | {:>8} {:>7}",
        "operation", "conc", "ops", "ops/s", "p50ms", "p99ms", "maxms", "cpu/1k", "sqlite"
    );
    println!("(last column: cores used by other processes meanwhile)");
    let mut csv = String::from("operation,concurrency,ops,errors,seconds,ops_per_s,p50_ms,p99_ms,max_ms,cpu_s_per_1k_total,cpu_s_per_1k_sqlite_threads,other_processes_cores\n");
    for &c in &a.concurrency {
        for (name, kind) in [
            ("devices_for (SELECT + key open)", 0u8),
            ("credentials (SELECT + envelope)", 1),
            ("save_call (INSERT report)", 2),
            ("all three (store part of a call)", 3),
        ] {
            let p = closed_loop(rts.relay.handle(), c, &b, op(kind)).await;
            println!(
                "{name:>34} {c:>5} {:>8} {:>9.0} {:>7.2} {:>7.2} {:>7.2} | {:>8.3} {:>7.3} {:>6.2}",
                p.ops,
                p.ops_per_s(),
                p.p50_ms,
                p.p99_ms,
                p.max_ms,
                p.per_k(p.cpu.total),
                p.per_k(p.cpu.sqlite),
                p.cpu.others() / p.secs
            );
            if let Some(e) = &p.first_error {
                println!("      first error: {e}");
            }
            let _ = writeln!(
                csv,
                "\"{name}\",{c},{},{},{:.3},{:.1},{:.3},{:.3},{:.3},{:.4},{:.4},{:.2}",
                p.ops,
                p.errors,
                p.secs,
                p.ops_per_s(),
                p.p50_ms,
                p.p99_ms,
                p.max_ms,
                p.per_k(p.cpu.total),
                p.per_k(p.cpu.sqlite),
                p.cpu.others() / p.secs
            );
        }
    }
    store.close().await;
    stop_env(env).await;
    std::fs::create_dir_all(&a.out)?;
    let path = a.out.join(format!("store-ops{}.csv", a.tag));
    std::fs::write(&path, csv)?;
    println!("wrote {}", path.display());
    Ok(())
}

/// ns per call of `f`, over `iters` iterations (after iters/10 warm-up).
fn time_ns<T>(iters: u64, mut f: impl FnMut(u64) -> T) -> f64 {
    for i in 0..(iters / 10).max(1) {
        black_box(f(black_box(i)));
    }
    let t = Instant::now();
    for i in 0..iters {
        black_box(f(black_box(i)));
    }
    t.elapsed().as_nanos() as f64 / iters as f64
}

fn run_jwe(a: &Args) -> anyhow::Result<()> {
    use pushrelay::envelope::MasterKey;
    use pushrelay::jwe;
    use pushrelay::payload::v2;
    let iters = a.iterations.max(10);
    let key_bytes: [u8; 32] = rand::random();
    let key = PushKey::from_bytes(key_bytes);
    let event = call_event("u000001", Some("dev-000001"), 1);
    let plaintext = v2::build(&event);
    let compact = jwe::encrypt(&key, &plaintext);
    let reg = registration(&make_devices(Scenario::Apns, 1)[0])?;
    let master = MasterKey::generate();
    let sealed = master.seal("device:u000001/dev-000001", key.to_b64().as_bytes());
    let hash = pushrelay::http::auth::hash_password(PASSWORD)?;
    println!(
        "jwe: V2 payload {} bytes plaintext, compact JWE {} bytes, APNs body {} bytes; {iters} iterations per round, 3 rounds (Argon2: 30 per round)",
        plaintext.len(),
        compact.len(),
        v2::apns_body(&compact).len()
    );
    let argon_iters = 30u64;
    // Each row: three rounds; the best (least disturbed) and the median are reported.
    let rounds = |mut f: Box<dyn FnMut() -> f64 + '_>| -> [f64; 3] {
        let mut r = [f(), f(), f()];
        r.sort_by(|x, y| x.total_cmp(y));
        r
    };
    let rows: Vec<(&str, u64, [f64; 3])> = vec![
        (
            "v2::build (V2 JSON)",
            iters,
            rounds(Box::new(|| time_ns(iters, |_| v2::build(&event)))),
        ),
        (
            "jwe::encrypt (random IV)",
            iters,
            rounds(Box::new(|| {
                time_ns(iters, |_| jwe::encrypt(&key, &plaintext))
            })),
        ),
        (
            "jwe::encrypt_with_iv (no RNG)",
            iters,
            rounds(Box::new(|| {
                time_ns(iters, |i| {
                    let mut iv = [0u8; 12];
                    iv[..8].copy_from_slice(&i.to_le_bytes());
                    jwe::encrypt_with_iv(&key, iv, &plaintext)
                })
            })),
        ),
        (
            "jwe::decrypt",
            iters,
            rounds(Box::new(|| {
                time_ns(iters, |_| {
                    jwe::decrypt(&compact, &key_bytes).expect("decrypt")
                })
            })),
        ),
        (
            "payload::for_call (build+encrypt+wrap)",
            iters,
            rounds(Box::new(|| {
                time_ns(iters, |_| payload::for_call(&event, &reg).expect("payload"))
            })),
        ),
        (
            "envelope open (device key, per call)",
            iters,
            rounds(Box::new(|| {
                time_ns(iters, |_| {
                    master
                        .open_string("device:u000001/dev-000001", &sealed)
                        .expect("open")
                })
            })),
        ),
        (
            "argon2 verify (default params, per UDS PUT)",
            argon_iters,
            rounds(Box::new(|| {
                time_ns(argon_iters, |_| {
                    pushrelay::http::auth::verify_password(PASSWORD, &hash)
                })
            })),
        ),
    ];
    println!(
        "{:<46} {:>10} {:>12} {:>12} {:>14}",
        "operation", "iters", "best ns/op", "median ns", "ops/s (best)"
    );
    let mut csv = String::from("operation,iterations,best_ns_per_op,median_ns_per_op,worst_ns_per_op,ops_per_s_one_core_best\n");
    for (name, n, r) in rows {
        println!(
            "{name:<46} {n:>10} {:>12.0} {:>12.0} {:>14.0}",
            r[0],
            r[1],
            1e9 / r[0]
        );
        let _ = writeln!(
            csv,
            "\"{name}\",{n},{:.1},{:.1},{:.1},{:.1}",
            r[0],
            r[1],
            r[2],
            1e9 / r[0]
        );
    }
    std::fs::create_dir_all(&a.out)?;
    let path = a.out.join(format!("jwe{}.csv", a.tag));
    std::fs::write(&path, csv)?;
    println!("wrote {}", path.display());
    Ok(())
}

// ------------------------------------------------------------ SVG chart

/// Two panels, hand-made SVG (no font dependencies): throughput vs
/// concurrency (relay calls/s, relay pushes/s, mock ceiling pushes/s) and
/// p99 latency vs concurrency (relay, ceiling). Log-2 x axis.
fn chart(title: &str, rows: &[Row]) -> String {
    let (w, h) = (960.0, 420.0);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        w / 2.0,
        esc(title)
    );
    let xs: Vec<f64> = rows.iter().map(|r| r.relay.concurrency as f64).collect();
    let thr: Vec<(&str, &str, Vec<f64>)> = {
        let mut v = vec![
            (
                "relay calls/s",
                "#1f77b4",
                rows.iter().map(|r| r.relay.ops_per_s()).collect(),
            ),
            (
                "relay pushes/s",
                "#2ca02c",
                rows.iter().map(|r| r.relay.pushes_per_s()).collect(),
            ),
        ];
        if rows.iter().all(|r| r.ceiling.is_some()) {
            v.push((
                "mock ceiling pushes/s",
                "#d62728",
                rows.iter()
                    .map(|r| r.ceiling.as_ref().map(|c| c.pushes_per_s()).unwrap_or(0.0))
                    .collect(),
            ));
        }
        v
    };
    let lat: Vec<(&str, &str, Vec<f64>)> = {
        let mut v = vec![
            (
                "relay p99 ms",
                "#1f77b4",
                rows.iter().map(|r| r.relay.p99_ms).collect(),
            ),
            (
                "relay p50 ms",
                "#9467bd",
                rows.iter().map(|r| r.relay.p50_ms).collect(),
            ),
        ];
        if rows.iter().all(|r| r.ceiling.is_some()) {
            v.push((
                "mock ceiling p99 ms",
                "#d62728",
                rows.iter()
                    .map(|r| r.ceiling.as_ref().map(|c| c.p99_ms).unwrap_or(0.0))
                    .collect(),
            ));
        }
        v
    };
    panel(
        &mut s,
        70.0,
        50.0,
        380.0,
        300.0,
        "throughput (per second) vs concurrency",
        &xs,
        &thr,
    );
    panel(
        &mut s,
        560.0,
        50.0,
        380.0,
        300.0,
        "latency (ms) vs concurrency",
        &xs,
        &lat,
    );
    let _ = writeln!(s, "</svg>");
    s
}

fn esc(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn nice_max(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let e = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if v <= m * e {
            return m * e;
        }
    }
    10.0 * e
}

#[allow(clippy::too_many_arguments)]
fn panel(
    s: &mut String,
    x0: f64,
    y0: f64,
    pw: f64,
    ph: f64,
    title: &str,
    xs: &[f64],
    series: &[(&str, &str, Vec<f64>)],
) {
    let ymax = nice_max(
        series
            .iter()
            .flat_map(|(_, _, v)| v.iter().copied())
            .fold(0.0, f64::max)
            * 1.05,
    );
    let lx: Vec<f64> = xs.iter().map(|x| x.max(1.0).log2()).collect();
    let (xmin, xmax) = (
        lx.iter().copied().fold(f64::INFINITY, f64::min),
        lx.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    );
    let span = if (xmax - xmin).abs() < 1e-9 {
        1.0
    } else {
        xmax - xmin
    };
    let px = |lx: f64| {
        if (xmax - xmin).abs() < 1e-9 {
            x0 + pw / 2.0
        } else {
            x0 + (lx - xmin) / span * pw
        }
    };
    let py = |y: f64| y0 + ph - y / ymax * ph;
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle" font-size="13">{}</text>"#,
        x0 + pw / 2.0,
        y0 - 10.0,
        esc(title)
    );
    let _ = writeln!(
        s,
        r##"<rect x="{x0}" y="{y0}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>"##
    );
    for i in 0..=5 {
        let y = ymax * i as f64 / 5.0;
        let yy = py(y);
        let _ = writeln!(
            s,
            r##"<line x1="{x0}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/>"##,
            x0 + pw
        );
        let label = if ymax >= 100.0 {
            format!("{y:.0}")
        } else {
            format!("{y:.2}")
        };
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{label}</text>"#,
            x0 - 5.0,
            yy + 4.0
        );
    }
    for (x, l) in xs.iter().zip(&lx) {
        let xx = px(*l);
        let _ = writeln!(
            s,
            r##"<line x1="{xx:.1}" y1="{y0}" x2="{xx:.1}" y2="{:.1}" stroke="#eee"/>"##,
            y0 + ph
        );
        let _ = writeln!(
            s,
            r#"<text x="{xx:.1}" y="{:.1}" text-anchor="middle">{x}</text>"#,
            y0 + ph + 16.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">concurrency (requests in flight)</text>"#,
        x0 + pw / 2.0,
        y0 + ph + 34.0
    );
    for (k, (name, color, v)) in series.iter().enumerate() {
        let pts: Vec<String> = lx
            .iter()
            .zip(v)
            .map(|(l, y)| format!("{:.1},{:.1}", px(*l), py(*y)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            pts.join(" ")
        );
        for p in &pts {
            let (cx, cy) = p.split_once(',').unwrap_or(("0", "0"));
            let _ = writeln!(s, r#"<circle cx="{cx}" cy="{cy}" r="3" fill="{color}"/>"#);
        }
        let ly = y0 + ph + 52.0 + 16.0 * k as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{x0}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{color}" stroke-width="2"/>"#,
            ly - 4.0,
            x0 + 24.0,
            ly - 4.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{ly:.1}">{}</text>"#,
            x0 + 30.0,
            esc(name)
        );
    }
}

// ------------------------------------------------------------ main

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    install_crypto_provider();
    if a.with_logs {
        pushrelay::telemetry::init_tracing();
    }
    println!(
        "pushrelay-bench {} | {} | nproc {} | loadavg {} | runtimes: relay {} / mock {} / generator {} worker threads",
        a.scenario.name(),
        cpu_model(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        loadavg(),
        a.relay_threads,
        a.mock_threads,
        a.gen_threads
    );
    if a.scenario == Scenario::Jwe {
        return run_jwe(&a);
    }
    let rts = Runtimes {
        relay: runtime("relay-rt", a.relay_threads)?,
        mock: runtime("mock-rt", a.mock_threads)?,
        gen: runtime("gen-rt", a.gen_threads)?,
    };
    // The orchestration itself runs on the main thread (block_on), idle
    // while the loads run on the runtimes' workers.
    let orchestrator = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let r = orchestrator.block_on(async {
        match a.scenario {
            Scenario::Apns | Scenario::Fcm | Scenario::Mixed => run_calls(&a, &rts).await,
            Scenario::UdsRegister => run_uds(&a, &rts).await,
            Scenario::StoreOps => run_store_ops(&a, &rts).await,
            Scenario::Jwe => unreachable!(),
        }
    });
    // Let the runtimes drop without waiting on idle connections.
    rts.relay.shutdown_timeout(Duration::from_secs(2));
    rts.mock.shutdown_timeout(Duration::from_secs(1));
    rts.gen.shutdown_timeout(Duration::from_secs(1));
    r.context("benchmark failed")
}

/// The 1-minute load average before the run: other processes on the machine skew results.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_default()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

//! `pushrelay-bench`: load generator and micro-benchmarks for pushrelay
//! (docs/BENCHMARKS.md).
//!
//! Everything runs in this one process, on 127.0.0.1 only: the strict mock
//! APNs/FCM servers (recording off), one or two real relays
//! (`Application::build` on a temporary SQLite file, or on a fresh database
//! created on `--database-url postgres://…`) pointed at them, and a
//! closed-loop HTTP/1.1 generator driving `POST /v1/calls` (round-robin over
//! the nodes), UDS PUTs or SIP REGISTER / `/sip/wake`. Each of the three lives on its own
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
    DeviceToken, FcmCredentials, PayloadVersion, PushId, PushKey, Registration,
    RingWindow, UserId,
};
use pushrelay_mock::{fixtures, MockApns, MockApnsConfig, MockApnsKey, MockFcm, TestPki};
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
    /// SIP: REGISTER ingestion (registrations/s), then W held `/sip/wake`
    /// requests, then the re-REGISTERs that release them (wake latency, RSS per waiter).
    SipWake,
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
            Scenario::SipWake => "sip-wake",
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
    /// Suffix for the output file names (e.g. `-logs`). `-pg` and `-2nodes`
    /// are added by themselves for PostgreSQL and two nodes.
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    tag: String,
    /// The database: a `postgres://user@host:port` server (a fresh database
    /// `pushrelay_bench_*` is created on it for the run and dropped after),
    /// or a `sqlite://` URL. Default: a temporary SQLite file.
    #[arg(long)]
    database_url: Option<String>,
    /// Relay nodes (1 or 2). With 2, two relays (two `Application`s on port 0)
    /// share the database and the master key file, and the generator spreads
    /// requests round-robin over them. Needs PostgreSQL.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    nodes: u8,
    /// SQLite `PRAGMA synchronous` of the relay (`sqlite.synchronous`):
    /// full (the relay's default), normal or extra. Not `full` adds
    /// `-sync-<value>` to the output names.
    #[arg(long, value_parser = ["full", "normal", "extra"])]
    sqlite_synchronous: Option<String>,
    /// sip-wake: AORs registered in the measured REGISTER-ingestion phase.
    #[arg(long, default_value_t = 2000)]
    aors: usize,
    /// sip-wake: `/sip/wake` requests held at once.
    #[arg(long, default_value_t = 1000)]
    waiters: usize,
    /// sip-wake: `timeout_ms` of each `/sip/wake`.
    #[arg(long, default_value_t = 20_000)]
    wake_timeout_ms: u64,
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
    /// The PostgreSQL server's processes (postmaster, its live children and
    /// the children it already reaped), when the database is a local server.
    db: f64,
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
            db: self.db - o.db,
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
    /// The relay without its store: `relay()` minus the SQLite worker threads.
    /// total = relay_code + store + mock + gen on both backends.
    fn relay_code(&self) -> f64 {
        self.relay() - self.sqlite
    }
    /// CPU seconds other processes on the machine used meanwhile (not this
    /// process, not the benchmark's PostgreSQL server).
    fn others(&self) -> f64 {
        (self.machine - self.total - self.db).max(0.0)
    }
    /// Everything the benchmark used: this process and its database server.
    fn all(&self) -> f64 {
        self.total + self.db
    }
    /// The store's CPU: SQLite worker threads (in process) or the PostgreSQL server.
    fn store(&self) -> f64 {
        self.sqlite + self.db
    }
}

/// The pid of the PostgreSQL postmaster serving the benchmark (found once
/// by the port in its command line), so its CPU is not counted as "others".
static POSTMASTER: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();

fn find_postmaster(port: u16) -> Option<u32> {
    let want = port.to_string();
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        let is_pg = args
            .first()
            .map(|a| a.ends_with(b"/postgres") || *a == b"postgres")
            .unwrap_or(false);
        let has_port = args
            .windows(2)
            .any(|w| w[0] == b"-p" && w[1] == want.as_bytes());
        if is_pg && has_port {
            return Some(pid);
        }
    }
    None
}

/// utime+stime of the postmaster's live children, plus the postmaster's own
/// utime+stime+cutime+cstime (backends that already exited), in ticks.
fn postmaster_ticks(pm: u32) -> u64 {
    let fields = |path: &Path| -> Option<Vec<u64>> {
        let s = std::fs::read_to_string(path).ok()?;
        let rest = &s[s.rfind(')')? + 2..];
        Some(
            rest.split_whitespace()
                .map(|x| x.parse::<u64>().unwrap_or(0))
                .collect(),
        )
    };
    let mut t = 0;
    if let Some(f) = fields(&PathBuf::from(format!("/proc/{pm}/stat"))) {
        // after the comm: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
        t += f.get(11).copied().unwrap_or(0)
            + f.get(12).copied().unwrap_or(0)
            + f.get(13).copied().unwrap_or(0)
            + f.get(14).copied().unwrap_or(0);
    }
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            if e.file_name().to_string_lossy().parse::<u32>().is_err() {
                continue;
            }
            let Some(f) = fields(&e.path().join("stat")) else {
                continue;
            };
            if f.get(1).copied() == Some(pm as u64) {
                t += f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
            }
        }
    }
    t
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
        db: POSTMASTER
            .get()
            .copied()
            .flatten()
            .map(|pm| postmaster_ticks(pm) as f64 / tck)
            .unwrap_or(0.0),
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
        channel: d.channel,
        token: DeviceToken::for_channel(d.channel, &d.token)?,
        app: AppId::parse(APP)?,
        data: pushrelay::domain::DialectData::Uds { key: PushKey::from_bytes(d.key), version: PayloadVersion::parse("V2")? },
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
    /// Node 0 (admin calls go there).
    base: String,
    /// Every node's base URL (`--nodes`), for round-robin load.
    bases: Vec<String>,
    client: reqwest::Client,
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
    relay_tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// A PostgreSQL database created for this run: (server URL, name), dropped at the end.
    pg_created: Option<(String, String)>,
    /// For the sip-wake scenario's credentials.
    apns_body: serde_json::Value,
}

/// The bundle (and app id) the SIP fixture's `X-MPUSH` names.
const SIP_APP: &str = "com.mycompany.myapp";

impl Env {
    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }
    /// Node `n % nodes`.
    fn node(&self, n: u64) -> &str {
        &self.bases[(n % self.bases.len() as u64) as usize]
    }
    fn settings(&self) -> anyhow::Result<Settings> {
        Ok(Settings::load_from(
            None,
            &self.settings_env,
            &CliOverrides::default(),
        )?)
    }
    fn backend(&self) -> &'static str {
        if self.settings_env["PUSHRELAY_DATABASE_URL"].starts_with("postgres") {
            "postgresql"
        } else {
            "sqlite"
        }
    }
}

/// `postgres://user@host:port/db?x` → (`postgres://user@host:port`, port).
fn pg_server(url: &str) -> (String, Option<u16>) {
    let scheme_end = url.find("://").map(|i| i + 3).unwrap_or(0);
    let rest = &url[scheme_end..];
    let host_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let server = format!("{}{}", &url[..scheme_end], &rest[..host_end]);
    let hostport = rest[..host_end].rsplit('@').next().unwrap_or("");
    let port = hostport
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .or(Some(5432));
    (server, port)
}

/// The database URL of this run: a temp SQLite file, the given SQLite URL,
/// or a fresh database created on the given PostgreSQL server.
async fn prepare_database(
    a: &Args,
    dir: &Path,
) -> anyhow::Result<(String, Option<(String, String)>)> {
    match a.database_url.as_deref() {
        None => Ok((
            format!("sqlite://{}", dir.join("relay.db").display()),
            None,
        )),
        Some(u) if u.starts_with("postgres") => {
            use sqlx::Connection;
            let (server, port) = pg_server(u);
            let name = format!(
                "pushrelay_bench_{}_{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_millis()
            );
            let mut conn = sqlx::PgConnection::connect(&format!("{server}/postgres"))
                .await
                .with_context(|| format!("connect to {server}/postgres"))?;
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut conn)
                .await?;
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
async fn start_env(a: &Args, rts: &Runtimes, max_conns: usize) -> anyhow::Result<Env> {
    let pki = TestPki::generate();
    let (p8, key_id) = fixtures::apns_p8();
    let team_id = "D7A3215KHV".to_string();
    let cfg = MockApnsConfig {
        sandbox: false,
        bundles: vec![APP.to_string(), SIP_APP.to_string()],
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
    let (db_url, pg_created) = prepare_database(a, dir.path()).await?;
    if a.nodes > 1 && !db_url.starts_with("postgres") {
        bail!("--nodes 2 needs --database-url postgres://… (several nodes share one PostgreSQL database)");
    }
    let mut env = HashMap::new();
    env.insert("PUSHRELAY_LISTEN".to_string(), "127.0.0.1:0".to_string());
    env.insert("PUSHRELAY_DATABASE_URL".to_string(), db_url);
    env.insert(
        "PUSHRELAY_MASTER_KEY_FILE".to_string(),
        dir.path().join("master.key").display().to_string(),
    );
    env.insert("PUSHRELAY_ADMIN_TOKEN".to_string(), ADMIN_TOKEN.to_string());
    if let Some(sync) = &a.sqlite_synchronous {
        env.insert("PUSHRELAY_SQLITE_SYNCHRONOUS".to_string(), sync.clone());
    }
    // The generator is one key: per-key rate limits would measure themselves.
    env.insert("PUSHRELAY_LIMITS_CALLS_PER_SECOND".to_string(), "0".to_string());
    env.insert("PUSHRELAY_LIMITS_REGISTRATIONS_PER_SECOND".to_string(), "0".to_string());
    env.insert("PUSHRELAY_APNS_PRODUCTION_URL".to_string(), apns.url());
    env.insert("PUSHRELAY_APNS_SANDBOX_URL".to_string(), apns.url());
    env.insert("PUSHRELAY_FCM_BASE_URL".to_string(), fcm.base_url());
    env.insert(
        "PUSHRELAY_TLS_EXTRA_CA_FILE".to_string(),
        ca.display().to_string(),
    );

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
        let addr = addr_rx
            .await?
            .map_err(|e| anyhow::anyhow!("relay did not start: {e}"))?;
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
        proxy: None,
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
    println!(
        "relay: {} node(s) on {} ({}), sharing one database and master key file",
        e.bases.len(),
        e.backend(),
        e.bases.join(", ")
    );
    // Provider credentials through the admin API (cheap, once).
    let fcm_body = serde_json::json!({"serviceAccount": STANDARD.encode(&service_account)});
    for (path, body) in [
        (format!("/v1/apps/{APP}/apns"), apns_body),
        (format!("/v1/apps/{APP}/fcm"), fcm_body),
    ] {
        e.admin_put(&path, &body).await?;
    }
    Ok(e)
}

impl Env {
    async fn admin_put(&self, path: &str, body: &serde_json::Value) -> anyhow::Result<()> {
        let r = self
            .client
            .put(self.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .json(body)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!(
                "PUT {path}: {} {}",
                r.status(),
                r.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }
}

async fn stop_env(mut e: Env) {
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
                if let Err(err) = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await
                {
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
        .spawn(async move { open_store(&settings).await })
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
            st.register(&reg.user, std::slice::from_ref(&reg), now, u32::MAX).await?;
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

/// `POST /v1/calls` for device `n % len` on node `n % nodes`, counting delivered pushes.
fn call_op(env: &Env, devs: Arc<Vec<Dev>>) -> Op {
    let client = env.client.clone();
    let urls: Vec<String> = env.bases.iter().map(|b| format!("{b}/v1/calls")).collect();
    Arc::new(move |n: u64| -> OpFuture {
        let url = &urls[(n % urls.len() as u64) as usize];
        let d = &devs[(n % devs.len() as u64) as usize];
        let body = serde_json::json!({
            "user": d.user, "device": d.device, "pushid": format!("bench-{n:012}"),
            "displayname": "Alice Example", "displaynumber": "+15551234567", "huntpilotdn": "5000",
        })
        .to_string();
        let req = client
            .post(url)
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
        let c = payload::for_call(&call_event(&d.user, Some(&d.device), 0), &reg);
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

/// Output file stem: scenario, `-pg` on PostgreSQL, `-2nodes`, then `--tag`.
fn stem(a: &Args, name: &str) -> String {
    let pg = a
        .database_url
        .as_deref()
        .is_some_and(|u| u.starts_with("postgres"));
    let sync = match a.sqlite_synchronous.as_deref() {
        Some(s) if s != "full" => format!("-sync-{s}"),
        _ => String::new(),
    };
    format!(
        "{name}{}{}{sync}{}",
        if pg { "-pg" } else { "" },
        if a.nodes > 1 { format!("-{}nodes", a.nodes) } else { String::new() },
        a.tag
    )
}

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
        "cpu/1k", "relay", "store", "mock", "gen", "ceil/s", "c.p99", "ratio"
    );
    println!("      cpu/1k = CPU-s per 1000 calls of this process + its PostgreSQL server = relay (without store) + store (SQLite worker threads or PostgreSQL server) + mock + gen");
    println!("      (others = cores used by other processes on the machine during the point: noise if > 0.1, disturbed if > 0.3)");
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
        p.per_k(p.cpu.all()),
        p.per_k(p.cpu.relay_code()),
        p.per_k(p.cpu.store()),
        p.per_k(p.cpu.mock),
        p.per_k(p.cpu.gen),
        cs,
        cp99,
        ratio
    );
    let others = |q: &Point| q.cpu.others() / q.secs;
    println!(
        "      process{} used {:.2} cores; others {:.2} cores (relay point), {} (ceiling point)",
        if p.cpu.db > 0.0 { " + PostgreSQL server" } else { "" },
        p.cpu.all() / p.secs,
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

const CALL_CSV_HEADER: &str = "scenario,backend,nodes,concurrency,calls,errors,seconds,calls_per_s,pushes_per_s,p50_ms,p90_ms,p99_ms,max_ms,cpu_s_per_1k_total,cpu_s_per_1k_relay_without_store,cpu_s_per_1k_store,cpu_s_per_1k_mock,cpu_s_per_1k_generator,ceiling_pushes_per_s,ceiling_p50_ms,ceiling_p99_ms,ceiling_cpu_s_per_1k_total,ratio_to_ceiling,bench_cores,other_processes_cores,ceiling_other_processes_cores";

fn call_csv_row(scenario: &str, backend: &str, nodes: usize, r: &Row) -> String {
    let p = &r.relay;
    let (cs, c50, c99, ccpu, ratio, coth) = match &r.ceiling {
        Some(c) => (
            format!("{:.1}", c.pushes_per_s()),
            format!("{:.3}", c.p50_ms),
            format!("{:.3}", c.p99_ms),
            format!("{:.4}", c.per_k(c.cpu.all())),
            format!("{:.4}", p.ops_per_s() / c.pushes_per_s().max(1e-9)),
            format!("{:.2}", c.cpu.others() / c.secs),
        ),
        None => Default::default(),
    };
    format!(
        "{scenario},{backend},{nodes},{},{},{},{:.3},{:.1},{:.1},{:.3},{:.3},{:.3},{:.3},{:.4},{:.4},{:.4},{:.4},{:.4},{cs},{c50},{c99},{ccpu},{ratio},{:.2},{:.2},{coth}",
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
        p.per_k(p.cpu.all()),
        p.per_k(p.cpu.relay_code()),
        p.per_k(p.cpu.store()),
        p.per_k(p.cpu.mock),
        p.per_k(p.cpu.gen),
        p.cpu.all() / p.secs,
        p.cpu.others() / p.secs,
    )
}

async fn run_calls(a: &Args, rts: &Runtimes) -> anyhow::Result<()> {
    let max_c = a.concurrency.iter().copied().max().unwrap_or(16);
    let env = start_env(a, rts, max_c).await?;
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
                "the store fast path (Store::upsert_user/upsert_device on a second pool, same database)",
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
    let backend = env.backend();
    stop_env(env).await;

    std::fs::create_dir_all(&a.out)?;
    let stem = stem(a, a.scenario.name());
    let mut csv = String::from(CALL_CSV_HEADER);
    csv.push('\n');
    for r in &rows {
        csv.push_str(&call_csv_row(a.scenario.name(), backend, a.nodes as usize, r));
        csv.push('\n');
    }
    let csv_path = a.out.join(format!("{stem}.csv"));
    std::fs::write(&csv_path, csv)?;
    let svg_path = a.out.join(format!("{stem}.svg"));
    std::fs::write(&svg_path, chart(&format!("pushrelay-bench {stem}"), &rows))?;
    println!("wrote {} and {}", csv_path.display(), svg_path.display());
    Ok(())
}

/// Registrations/s at each concurrency, through `PUT /cucm-uds/…/devicetoken`
/// with the default Argon2 hash: a user's first registration (no cached
/// verification: one full Argon2 verify), a re-registration (the relay's
/// password cache hits: no Argon2), and `Store::upsert_device` alone.
async fn run_uds(a: &Args, rts: &Runtimes) -> anyhow::Result<()> {
    let max_c = a.concurrency.iter().copied().max().unwrap_or(16);
    let env = start_env(a, rts, max_c).await?;
    let settings = env.settings()?;
    let store: Store = rts
        .relay
        .spawn(async move { open_store(&settings).await })
        .await??;
    let users = 64usize;
    // Fresh users for "first registration": each is used once. At ~100-150
    // Argon2 verifies/s on 2 cores a 6 s point needs < 1000.
    let fresh = 1500usize * a.concurrency.len();
    let default_hash = pushrelay::http::auth::hash_password(PASSWORD)?;
    let now = now_ms();
    let t = Instant::now();
    for i in 0..users {
        store
            .upsert_user(
                &UserId::parse(&format!("again{i:03}"))?,
                Some(&default_hash),
                now,
            )
            .await?;
        store
            .upsert_user(&UserId::parse(&format!("direct{i:03}"))?, None, now)
            .await?;
    }
    // One Argon2 hash (14 ms) shared by every fresh user: each user's first
    // verification still runs Argon2, since the cache is per user.
    for i in 0..fresh {
        store
            .upsert_user(
                &UserId::parse(&format!("first{i:05}"))?,
                Some(&default_hash),
                now,
            )
            .await?;
    }
    println!(
        "uds-register: {} users created in {:.2} s; APNs channel; {} node(s) on {}",
        2 * users + fresh,
        t.elapsed().as_secs_f64(),
        env.bases.len(),
        env.backend()
    );
    let params: Vec<&str> = default_hash.split('$').take(4).collect();
    println!(
        "  stored hash {} (what PUT /v1/users stores)",
        params.join("$")
    );
    println!("  first-registration: UDS PUT by a user never seen before (fresh user per operation): one full Argon2 verify each");
    println!("  re-registration:    UDS PUT by one of {users} users who registered before (same device, new token and key): the verification cache hits, no Argon2");
    println!("  store-direct:       Store::upsert_device only (envelope seal + one INSERT ... ON CONFLICT), no HTTP");
    let b = bounds(a);
    let token_key = |n: u64| {
        let token = hex::encode(rand::random::<[u8; 32]>());
        let key: [u8; 32] = rand::random();
        let _ = n;
        (token, key)
    };
    let put = {
        let client = env.client.clone();
        let bases = env.bases.clone();
        move |n: u64, d: Dev| -> OpFuture {
            let base = &bases[(n % bases.len() as u64) as usize];
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
        }
    };
    let next_fresh = Arc::new(AtomicU64::new(0));
    let first_op: Op = {
        let put = put.clone();
        Arc::new(move |n: u64| -> OpFuture {
            let i = next_fresh.fetch_add(1, Ordering::Relaxed);
            if i >= fresh as u64 {
                return Box::pin(async move {
                    Err(format!("ran out of fresh users ({fresh}): raise the count"))
                });
            }
            let (token, key) = token_key(n);
            put(
                n,
                Dev {
                    user: format!("first{i:05}"),
                    device: "phone".to_string(),
                    channel: Channel::Apns,
                    token,
                    key,
                },
            )
        })
    };
    let again_op: Op = {
        let put = put.clone();
        Arc::new(move |n: u64| -> OpFuture {
            let (token, key) = token_key(n);
            put(
                n,
                Dev {
                    user: format!("again{:03}", n % users as u64),
                    device: "phone".to_string(),
                    channel: Channel::Apns,
                    token,
                    key,
                },
            )
        })
    };
    // Every re-registration user registers once first (Argon2, then cached
    // on each node), so the measured points only see re-registrations.
    for k in 0..(users * env.bases.len()) as u64 {
        again_op(k).await.map_err(|e| anyhow::anyhow!("priming re-registration users: {e}"))?;
    }
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
                    .register(&reg.user, std::slice::from_ref(&reg), now_ms(), u32::MAX)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(0)
            })
        })
    };
    println!(
        "{:>18} {:>5} {:>8} {:>9} {:>7} {:>7} {:>7} {:>7} {:>6} | {:>8} {:>7} {:>7} {:>7} {:>6}",
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
        "store",
        "gen",
        "others"
    );
    println!("  (cpu/1k = CPU-s per 1000 registrations, this process + PostgreSQL server = relay without store + store + mock + gen)");
    let backend = env.backend();
    let mut csv = String::from("variant,backend,nodes,concurrency,registrations,errors,seconds,registrations_per_s,p50_ms,p90_ms,p99_ms,max_ms,cpu_s_per_1k_total,cpu_s_per_1k_relay_without_store,cpu_s_per_1k_store,cpu_s_per_1k_generator,other_processes_cores\n");
    for &c in &a.concurrency {
        for (variant, op, rt) in [
            ("first-registration", first_op.clone(), rts.gen.handle()),
            ("re-registration", again_op.clone(), rts.gen.handle()),
            ("store-direct", direct_op.clone(), rts.relay.handle()),
        ] {
            let p = closed_loop(rt, c, &b, op).await;
            println!(
                "{:>18} {:>5} {:>8} {:>9.0} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>6} | {:>8.3} {:>7.3} {:>7.3} {:>7.3} {:>6.2}",
                variant,
                c,
                p.ops,
                p.ops_per_s(),
                p.p50_ms,
                p.p90_ms,
                p.p99_ms,
                p.max_ms,
                p.errors,
                p.per_k(p.cpu.all()),
                p.per_k(p.cpu.relay_code()),
                p.per_k(p.cpu.store()),
                p.per_k(p.cpu.gen),
                p.cpu.others() / p.secs
            );
            if let Some(e) = &p.first_error {
                println!("      first error: {e}");
            }
            let _ = writeln!(
                csv,
                "{variant},{backend},{},{c},{},{},{:.3},{:.1},{:.3},{:.3},{:.3},{:.3},{:.4},{:.4},{:.4},{:.4},{:.2}",
                a.nodes,
                p.ops,
                p.errors,
                p.secs,
                p.ops_per_s(),
                p.p50_ms,
                p.p90_ms,
                p.p99_ms,
                p.max_ms,
                p.per_k(p.cpu.all()),
                p.per_k(p.cpu.relay_code()),
                p.per_k(p.cpu.store()),
                p.per_k(p.cpu.gen),
                p.cpu.others() / p.secs
            );
        }
    }
    store.close().await;
    stop_env(env).await;
    std::fs::create_dir_all(&a.out)?;
    let path = a.out.join(format!("{}.csv", stem(a, "uds-register")));
    std::fs::write(&path, csv)?;
    println!("wrote {}", path.display());
    Ok(())
}

/// The three statements `POST /v1/calls` runs per call (device read with the
/// key opened, credentials read, report write), each alone and all three in
/// sequence, on the relay runtime with the relay's own store settings.
async fn run_store_ops(a: &Args, rts: &Runtimes) -> anyhow::Result<()> {
    use pushrelay::domain::{CallReport, Delivery, Outcome};
    let env = start_env(a, rts, 16).await?;
    let devs = Arc::new(make_devices(Scenario::Apns, a.devices.max(1)));
    register_store(rts, &env, &devs).await?;
    let settings = env.settings()?;
    let store: Store = rts
        .relay
        .spawn(async move { open_store(&settings).await })
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
                        .credentials(&app, pushrelay::domain::CredentialKind::Apns)
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
                            callbacks: vec![],
                            apps: vec![],
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
        "operation", "conc", "ops", "ops/s", "p50ms", "p99ms", "maxms", "cpu/1k", "store"
    );
    println!("(last column: cores used by other processes meanwhile)");
    let mut csv = String::from("operation,concurrency,ops,errors,seconds,ops_per_s,p50_ms,p99_ms,max_ms,cpu_s_per_1k_total,cpu_s_per_1k_store,other_processes_cores\n");
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
                p.per_k(p.cpu.all()),
                p.per_k(p.cpu.store()),
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
                p.per_k(p.cpu.all()),
                p.per_k(p.cpu.store()),
                p.cpu.others() / p.secs
            );
        }
    }
    store.close().await;
    stop_env(env).await;
    std::fs::create_dir_all(&a.out)?;
    let path = a.out.join(format!("{}.csv", stem(a, "store-ops")));
    std::fs::write(&path, csv)?;
    println!("wrote {}", path.display());
    Ok(())
}

// ------------------------------------------------------------ sip-wake

/// The SIP fixture (a valid MizuTech REGISTER with an `X-MPUSH` APNs token).
const SIP_REGISTER: &str = include_str!("../../../fixtures/sip/mizu-register-hex.txt");
const SIP_FIXTURE_TOKEN: &str = "5c0a2f1e9b7d4c3a8e6f1d2b3c4a5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d";

/// User part of AOR number `i` (digits, like the fixture's `1111`).
fn sip_user(i: u64) -> String {
    format!("{}", 7_000_000 + i)
}

fn sip_aor(i: u64) -> String {
    format!("sip:{}@sip.mydomain.com", sip_user(i))
}

/// The fixture with AOR `i`: its own user, APNs token (stable per AOR, so a
/// re-REGISTER updates the same binding) and Call-ID.
fn sip_register(i: u64, cseq: u32) -> String {
    use sha2::{Digest, Sha256};
    let token = hex::encode(Sha256::digest(format!("bench-sip-{i}").as_bytes()));
    SIP_REGISTER
        .replace("1111", &sip_user(i))
        .replace(SIP_FIXTURE_TOKEN, &token)
        .replace("enutmuwaynqib", &format!("bench-{i}"))
        .replace("CSeq: 2 REGISTER", &format!("CSeq: {cseq} REGISTER"))
}

/// `POST /sip/register` of AOR `i` on node `node`.
fn sip_register_req(env: &Env, node: u64, i: u64, cseq: u32) -> reqwest::RequestBuilder {
    env.client
        .post(format!("{}/sip/register", env.node(node)))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "message/sip")
        .body(sip_register(i, cseq))
}

/// Resident set size of this process (kB), from /proc/self/status.
fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// `pushrelay_pushes_total{…,outcome="delivered"}`, summed over every node
/// of this process (the Prometheus recorder is process-wide).
fn pushes_delivered() -> f64 {
    pushrelay::telemetry::metrics_handle()
        .render()
        .lines()
        .filter(|l| l.starts_with("pushrelay_pushes_total{") && l.contains("outcome=\"delivered\""))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

/// (p50, p99, max) of `v` (sorted in place); zeros when empty.
fn quantiles(v: &mut [f64]) -> (f64, f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    v.sort_by(|x, y| x.total_cmp(y));
    let q = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    (q(0.50), q(0.99), v[v.len() - 1])
}

/// Give freed heap pages back to the OS (glibc), so RSS deltas measure
/// what is held, not what an earlier phase left in the allocator.
fn trim_heap() {
    extern "C" {
        fn malloc_trim(pad: usize) -> i32;
    }
    // SAFETY: glibc's malloc_trim has no preconditions.
    unsafe {
        malloc_trim(0);
    }
}

/// A client for held `/sip/wake` requests: one connection per request.
fn wake_client(n: usize) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .http1_only()
        .pool_max_idle_per_host(n)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(120))
        .build()?)
}

type WakeAnswer = (u16, bool, Instant);

/// `n` concurrent `/sip/wake` for AORs `first..first+n`, AOR i on node i % nodes.
/// Opened 100 per 10 ms: a burst of ~1000 simultaneous connects overflows
/// the listen queue (backlog 1024) and some SYNs wait a 1 s retransmit.
async fn hold_waiters(
    env: &Env,
    client: &reqwest::Client,
    rt: &Handle,
    first: u64,
    n: usize,
    timeout_ms: u64,
) -> Vec<tokio::task::JoinHandle<WakeAnswer>> {
    let mut out = Vec::with_capacity(n);
    for i in first..first + n as u64 {
        if i > first && (i - first) % 100 == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        out.push({
            let req = client
                .post(format!("{}/sip/wake", env.node(i)))
                .bearer_auth(ADMIN_TOKEN)
                .json(&serde_json::json!({
                    "aor": sip_aor(i), "call_id": format!("bench-wake-{i:06}"),
                    "from_display": "John Smith", "from_number": "1234", "timeout_ms": timeout_ms,
                }));
            rt.spawn(async move {
                let r = req.send().await;
                let at = Instant::now();
                match r {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let v: serde_json::Value = r.json().await.unwrap_or_default();
                        (status, v["registered"].as_bool().unwrap_or(false), at)
                    }
                    Err(_) => (0, false, at),
                }
            })
        });
    }
    out
}

/// TcpExt ListenOverflows (SYNs dropped because a listen queue was full),
/// machine-wide, from /proc/net/netstat.
fn listen_overflows() -> u64 {
    let s = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let mut lines = s.lines();
    while let (Some(h), Some(v)) = (lines.next(), lines.next()) {
        if h.starts_with("TcpExt:") {
            let i = h.split_whitespace().position(|k| k == "ListenOverflows");
            return i
                .and_then(|i| v.split_whitespace().nth(i))
                .and_then(|x| x.parse().ok())
                .unwrap_or(0);
        }
    }
    0
}

/// Wait until `n` more pushes than `base` were delivered (or `limit`):
/// (how many, seconds until the first).
async fn wait_delivered(base: f64, n: usize, limit: Duration) -> (u64, f64) {
    let t = Instant::now();
    let mut first = None;
    loop {
        let d = pushes_delivered() - base;
        if d >= 1.0 && first.is_none() {
            first = Some(t.elapsed().as_secs_f64());
        }
        if d >= n as f64 || t.elapsed() >= limit {
            return (d as u64, first.unwrap_or(f64::NAN));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// SIP: REGISTER ingestion (closed loop, `--aors` measured registrations),
/// then `--waiters` held `/sip/wake` requests (RSS before/after), then the
/// re-REGISTERs that release them (wake latency). With two nodes the wake
/// is held on one node and the re-REGISTER goes to the other.
async fn run_sip_wake(a: &Args, rts: &Runtimes) -> anyhow::Result<()> {
    let c = a.concurrency.first().copied().unwrap_or(16).max(1);
    let w = a.waiters.max(1);
    if w > a.aors {
        bail!("--waiters ({w}) must not exceed --aors ({})", a.aors);
    }
    let env = start_env(a, rts, c.max(w)).await?;
    let mut body = env.apns_body.clone();
    body["bundleId"] = serde_json::json!(SIP_APP);
    env.admin_put(&format!("/v1/apps/{SIP_APP}/apns"), &body).await?;
    let env = Arc::new(env);

    // 1. REGISTER ingestion.
    let highest = Arc::new(AtomicU64::new(0));
    let reg_op: Op = {
        let (env, highest) = (env.clone(), highest.clone());
        Arc::new(move |n: u64| -> OpFuture {
            highest.fetch_max(n + 1, Ordering::Relaxed);
            let req = sip_register_req(&env, n, n, 2);
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
    let b = Bounds {
        warmup: Duration::from_secs_f64(a.warmup_secs.max(0.0)),
        duration: Duration::from_secs(120),
        max_ops: a.aors as u64,
    };
    println!(
        "sip-wake: {} node(s) on {}; POST /sip/register of {} new AORs (MizuTech X-MPUSH, fixtures/sip/mizu-register-hex.txt with its own user/token/Call-ID each) at concurrency {c}, after {:.1} s warm-up on other AORs",
        env.bases.len(),
        env.backend(),
        a.aors,
        a.warmup_secs
    );
    let reg = closed_loop(rts.gen.handle(), c, &b, reg_op).await;
    let registered = highest.load(Ordering::Relaxed);
    println!(
        "  REGISTER ingestion: {} registrations in {:.2} s = {:.0} registrations/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, errors {}, {:.3} CPU-s/1000 (store {:.3}), others {:.2} cores",
        reg.ops,
        reg.secs,
        reg.ops_per_s(),
        reg.p50_ms,
        reg.p99_ms,
        reg.max_ms,
        reg.errors,
        reg.per_k(reg.cpu.all()),
        reg.per_k(reg.cpu.store()),
        reg.cpu.others() / reg.secs
    );
    if let Some(e) = &reg.first_error {
        bail!("REGISTER failed: {e}");
    }

    // 2. Warm-up wake round on AORs past the measured ones (first push to
    //    the SIP app: credentials, provider connection, JWT), on its own
    //    client whose connections are closed before the RSS baseline.
    let warm = 100.min(registered.saturating_sub(w as u64)) as usize;
    if warm > 0 {
        let client = wake_client(warm)?;
        let first = registered - warm as u64;
        let held = hold_waiters(&env, &client, rts.gen.handle(), first, warm, a.wake_timeout_ms).await;
        wait_delivered(pushes_delivered(), warm, Duration::from_secs(30)).await;
        for i in first..registered {
            sip_register_req(&env, i, i, 3).send().await?.bytes().await?;
        }
        for t in held {
            t.await?;
        }
        drop(client);
    }

    // 3a. Control for the memory figure: the generator's side alone. The same
    //     W requests held by a server that reads them and never answers.
    let (gen_kb, _) = {
        let listener = rts
            .mock
            .spawn(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .await??;
        let addr = listener.local_addr()?;
        let got = Arc::new(AtomicU64::new(0));
        let got2 = got.clone();
        let accept = rts.mock.spawn(async move {
            use tokio::io::AsyncReadExt;
            while let Ok((mut sock, _)) = listener.accept().await {
                let got = got2.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let mut counted = false;
                    while let Ok(n) = sock.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        if !counted {
                            counted = true;
                            got.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        trim_heap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let client = wake_client(w)?;
        let r0 = rss_kb();
        let held: Vec<_> = (0..w)
            .map(|i| {
                let req = client
                    .post(format!("http://{addr}/sip/wake"))
                    .bearer_auth(ADMIN_TOKEN)
                    .json(&serde_json::json!({
                        "aor": sip_aor(i as u64), "call_id": format!("bench-wake-{i:06}"),
                        "from_display": "John Smith", "from_number": "1234", "timeout_ms": a.wake_timeout_ms,
                    }));
                rts.gen.spawn(async move {
                    let _ = req.send().await;
                })
            })
            .collect();
        let t = Instant::now();
        while got.load(Ordering::Relaxed) < w as u64 && t.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let r1 = rss_kb();
        for h in &held {
            h.abort();
        }
        for h in held {
            let _ = h.await;
        }
        drop(client);
        accept.abort();
        tokio::time::sleep(Duration::from_millis(300)).await;
        ((r1 as f64 - r0 as f64) / w as f64, ())
    };

    // 3. Hold W waiters: AORs 0..W (all registered above), node i % nodes,
    //    one fresh HTTP/1.1 connection each.
    trim_heap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let client = wake_client(w)?;
    let delivered0 = pushes_delivered();
    let rss0 = rss_kb();
    let cpu0 = cpu_now();
    let t_hold = Instant::now();
    let overflows0 = listen_overflows();
    let waiters = hold_waiters(&env, &client, rts.gen.handle(), 0, w, a.wake_timeout_ms).await;
    // A waiter is held once its push was delivered (it subscribes before pushing).
    let (held, first_secs) = wait_delivered(delivered0, w, Duration::from_secs(30)).await;
    let held_secs = t_hold.elapsed().as_secs_f64();
    let cpu_hold = cpu_now() - cpu0;
    let overflows = listen_overflows() - overflows0;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss1 = rss_kb();
    let per_waiter_kb = (rss1 as f64 - rss0 as f64) / w as f64;
    println!(
        "  held {held} of {w} /sip/wake (push delivered, now waiting) {held_secs:.2} s after the first was sent, opened 100 per 10 ms (first push delivered after {:.3} s; {:.0} wakes/s pushed, {:.3} CPU-s/1000, others {:.2} cores; listen-queue overflows meanwhile: {overflows})",
        first_secs,
        held as f64 / held_secs.max(1e-9),
        cpu_hold.all() * 1000.0 / held.max(1) as f64,
        cpu_hold.others() / held_secs.max(1e-9)
    );
    let relay_kb = per_waiter_kb - gen_kb;
    println!(
        "  RSS {rss0} kB before → {rss1} kB holding: {per_waiter_kb:+.1} kB per waiter, both ends of each held HTTP/1.1 connection (relay and generator are one process);"
    );
    println!(
        "  the generator's end alone (the same requests held by a server that never answers): {gen_kb:+.1} kB per waiter → the relay's share ≈ {relay_kb:+.1} kB per waiter"
    );

    // 4. The re-REGISTERs, concurrency c; AOR i goes to the other node when there are two.
    // Per AOR: when its re-REGISTER was sent and answered.
    type Marks = std::sync::Mutex<Vec<Option<(Instant, Instant)>>>;
    let marks: Arc<Marks> = Arc::new(std::sync::Mutex::new(vec![None; w]));
    let cpu0 = cpu_now();
    let t_rereg = Instant::now();
    {
        let (env2, marks2) = (env.clone(), marks.clone());
        for_each_concurrent(rts.gen.handle(), (0..w as u64).collect(), c, move |i: u64| {
            let req = sip_register_req(&env2, i + 1, i, 3);
            let marks = marks2.clone();
            async move {
                let sent = Instant::now();
                let r = req.send().await?;
                let status = r.status();
                let _ = r.bytes().await?;
                let answered = Instant::now();
                if status != 200 {
                    bail!("re-REGISTER {i}: {status}");
                }
                marks.lock().expect("marks")[i as usize] = Some((sent, answered));
                Ok(())
            }
        })
        .await?;
    }
    let rereg_secs = t_rereg.elapsed().as_secs_f64();
    let mut woke = 0u64;
    let mut timed_out = 0u64;
    let mut other = 0u64;
    let mut after_answer = Vec::with_capacity(w);
    let mut after_sent = Vec::with_capacity(w);
    let waiters: Vec<tokio::task::JoinHandle<WakeAnswer>> = waiters;
    let mut last_answer = t_rereg;
    for (i, t) in waiters.into_iter().enumerate() {
        let (status, registered, at) = t.await?;
        last_answer = last_answer.max(at);
        match (status, registered) {
            (200, true) => woke += 1,
            (408, _) => timed_out += 1,
            _ => other += 1,
        }
        if let (200, true, Some((sent, answered))) =
            (status, registered, marks.lock().expect("marks")[i])
        {
            let signed = |from: Instant| {
                if at >= from {
                    (at - from).as_secs_f64() * 1000.0
                } else {
                    -((from - at).as_secs_f64() * 1000.0)
                }
            };
            after_answer.push(signed(answered));
            after_sent.push(signed(sent));
        }
    }
    let cpu_wake = cpu_now() - cpu0;
    let wake_secs = (last_answer - t_rereg).as_secs_f64().max(1e-9);
    let before_answer = after_answer.iter().filter(|x| **x < 0.0).count();
    let (a50, a99, amax) = quantiles(&mut after_answer);
    let (s50, s99, smax) = quantiles(&mut after_sent);
    println!(
        "  re-REGISTER of the {w} AORs at concurrency {c}{}: {:.2} s ({:.0} registrations/s); {woke} waiters woke (200 registered:true), {timed_out} timed out (408), {other} other; {:.3} CPU-s/1000 wakes, others {:.2} cores",
        if env.bases.len() > 1 { ", each on the node not holding its wake (LISTEN/NOTIFY)" } else { "" },
        rereg_secs,
        w as f64 / rereg_secs.max(1e-9),
        cpu_wake.all() * 1000.0 / woke.max(1) as f64,
        cpu_wake.others() / wake_secs
    );
    println!(
        "  wake latency, REGISTER answer → wake answer: p50 {a50:.2} ms, p99 {a99:.2} ms, max {amax:.2} ms ({before_answer} of {} wake answers arrived before their REGISTER answer: negative)",
        after_answer.len()
    );
    println!(
        "  wake latency, REGISTER sent → wake answer:   p50 {s50:.2} ms, p99 {s99:.2} ms, max {smax:.2} ms"
    );
    let backend = env.backend();
    let nodes = env.bases.len();
    drop(client);
    let env = Arc::try_unwrap(env).map_err(|_| anyhow::anyhow!("env still shared"))?;
    stop_env(env).await;

    std::fs::create_dir_all(&a.out)?;
    let mut csv = String::from("backend,nodes,concurrency,aors_registered,register_ops,register_errors,register_per_s,register_p50_ms,register_p99_ms,register_max_ms,register_cpu_s_per_1k,register_other_cores,waiters,held,hold_seconds,rss_before_kb,rss_held_kb,rss_kb_per_waiter,rss_kb_per_waiter_generator_control,rss_kb_per_waiter_relay,rereg_seconds,woke,timed_out,other,wake_after_register_answer_p50_ms,wake_after_register_answer_p99_ms,wake_after_register_answer_max_ms,wake_answers_before_register_answer,wake_after_register_sent_p50_ms,wake_after_register_sent_p99_ms,wake_after_register_sent_max_ms,wake_cpu_s_per_1k,wake_other_cores\n");
    let _ = writeln!(
        csv,
        "{backend},{nodes},{c},{registered},{},{},{:.1},{:.3},{:.3},{:.3},{:.4},{:.2},{w},{held},{held_secs:.3},{rss0},{rss1},{per_waiter_kb:.2},{gen_kb:.2},{relay_kb:.2},{rereg_secs:.3},{woke},{timed_out},{other},{a50:.3},{a99:.3},{amax:.3},{before_answer},{s50:.3},{s99:.3},{smax:.3},{:.4},{:.2}",
        reg.ops,
        reg.errors,
        reg.ops_per_s(),
        reg.p50_ms,
        reg.p99_ms,
        reg.max_ms,
        reg.per_k(reg.cpu.all()),
        reg.cpu.others() / reg.secs,
        cpu_wake.all() * 1000.0 / woke.max(1) as f64,
        cpu_wake.others() / wake_secs
    );
    let path = a.out.join(format!("{}.csv", stem(a, "sip-wake")));
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
    let master = pushrelay::envelope::Keyring::new(MasterKey::generate());
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
                time_ns(iters, |_| payload::for_call(&event, &reg))
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
        pushrelay::telemetry::init_tracing(Default::default());
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
            Scenario::SipWake => run_sip_wake(&a, &rts).await,
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

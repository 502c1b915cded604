//! The command line: scenarios, how devices are registered, every flag.

use clap::{Parser, ValueEnum};
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Scenario {
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
    /// pushrelay and Sygnal (the Matrix push gateway) side by side against
    /// the same mock APNs: pushes/s, p99 and server CPU per push.
    Sygnal,
    /// Calls at a fixed rate for minutes: errors, p99 and the process's
    /// resident memory over time, with its slope (a leak shows as one).
    Soak,
    /// Internal: the generator process of `--layout split` (`--gen-spec`).
    #[value(hide = true)]
    Gen,
}

impl Scenario {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Scenario::Apns => "apns",
            Scenario::Fcm => "fcm",
            Scenario::Mixed => "mixed",
            Scenario::UdsRegister => "uds-register",
            Scenario::Jwe => "jwe",
            Scenario::StoreOps => "store-ops",
            Scenario::SipWake => "sip-wake",
            Scenario::Sygnal => "sygnal",
            Scenario::Soak => "soak",
            Scenario::Gen => "gen",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Register {
    /// Users and devices written straight into the store (second pool on the same file).
    Store,
    /// PUT /v1/users + UDS PUT over HTTP (Argon2 hash + verify per device: slow).
    Http,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Layout {
    /// Generator, relay and mock in this process, on any core.
    Shared,
    /// The generator in a process of its own pinned to core 0 (`taskset`),
    /// the mock's threads pinned to core 1, the relay (and Sygnal) unpinned.
    Split,
}

#[derive(Parser, Debug)]
#[command(name = "pushrelay-bench", about = "Benchmarks pushrelay against in-process mock APNs/FCM (127.0.0.1 only)")]
pub(crate) struct Args {
    pub(crate) scenario: Scenario,
    /// Devices registered (one user per device; calls go round-robin over them).
    #[arg(long, default_value_t = 2000)]
    pub(crate) devices: usize,
    /// Upper bound on measured operations per point (calls, pushes, registrations).
    #[arg(long, default_value_t = 2_000_000)]
    pub(crate) calls: u64,
    /// Concurrency levels (closed loop: this many requests in flight).
    #[arg(long, value_delimiter = ',', default_value = "16")]
    pub(crate) concurrency: Vec<usize>,
    /// Measured seconds per point (after the warm-up).
    #[arg(long, default_value_t = 5.0)]
    pub(crate) duration_secs: f64,
    /// Unmeasured warm-up seconds per point.
    #[arg(long, default_value_t = 1.0)]
    pub(crate) warmup_secs: f64,
    /// Where the CSV and SVG go.
    #[arg(long, default_value = "docs/bench")]
    pub(crate) out: PathBuf,
    /// How the devices of the call scenarios are registered.
    #[arg(long, value_enum, default_value_t = Register::Store)]
    pub(crate) register: Register,
    /// Worker threads of the relay runtime (also drives the ceiling clients).
    #[arg(long, default_value_t = 2)]
    pub(crate) relay_threads: usize,
    /// Worker threads of the mock servers' runtime.
    #[arg(long, default_value_t = 1)]
    pub(crate) mock_threads: usize,
    /// Worker threads of the load generator's runtime.
    #[arg(long, default_value_t = 1)]
    pub(crate) gen_threads: usize,
    /// Skip the mock-ceiling measurement.
    #[arg(long)]
    pub(crate) no_ceiling: bool,
    /// Turn the relay's logging on (info, to stderr: redirect it) to see its cost.
    #[arg(long)]
    pub(crate) with_logs: bool,
    /// Iterations of the fast `jwe` micro-benchmarks.
    #[arg(long, default_value_t = 200_000)]
    pub(crate) iterations: u64,
    /// Suffix for the output file names (e.g. `-logs`). `-pg` and `-2nodes`
    /// are added by themselves for PostgreSQL and two nodes.
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    pub(crate) tag: String,
    /// The database: a `postgres://user@host:port` server (a fresh database
    /// `pushrelay_bench_*` is created on it for the run and dropped after),
    /// or a `sqlite://` URL. Default: a temporary SQLite file.
    #[arg(long)]
    pub(crate) database_url: Option<String>,
    /// Relay nodes (1 or 2). With 2, two relays (two `Application`s on port 0)
    /// share the database and the master key file, and the generator spreads
    /// requests round-robin over them. Needs PostgreSQL.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    pub(crate) nodes: u8,
    /// SQLite `PRAGMA synchronous` of the relay (`sqlite.synchronous`):
    /// full (the relay's default), normal or extra. Not `full` adds
    /// `-sync-<value>` to the output names.
    #[arg(long, value_parser = ["full", "normal", "extra"])]
    pub(crate) sqlite_synchronous: Option<String>,
    /// Call scenarios: after the closed-loop points, also arrive at a fixed
    /// rate (open loop) at these fractions of the best closed-loop rate,
    /// and report p50/p99/p99.9 from the scheduled start (no coordinated
    /// omission). E.g. `--open-loop 0.25,0.5,0.75`.
    #[arg(long, value_delimiter = ',')]
    pub(crate) open_loop: Vec<f64>,
    /// sygnal: the Python of a venv with Sygnal installed (docs/bench/sygnal.sh makes one).
    #[arg(long, default_value = "docs/bench/.venv-sygnal/bin/python")]
    pub(crate) sygnal_python: PathBuf,
    /// soak: calls per second (open loop).
    #[arg(long, default_value_t = 300.0)]
    pub(crate) rate: f64,
    /// soak: how long, in minutes.
    #[arg(long, default_value_t = 3.0)]
    pub(crate) soak_minutes: f64,
    /// sip-wake: AORs registered in the measured REGISTER-ingestion phase.
    #[arg(long, default_value_t = 2000)]
    pub(crate) aors: usize,
    /// sip-wake: `/sip/wake` requests held at once.
    #[arg(long, default_value_t = 1000)]
    pub(crate) waiters: usize,
    /// sip-wake: `timeout_ms` of each `/sip/wake`.
    #[arg(long, default_value_t = 20_000)]
    pub(crate) wake_timeout_ms: u64,
    /// Where the generator runs (apns, fcm, mixed, sygnal).
    #[arg(long, value_enum, default_value_t = Layout::Shared)]
    pub(crate) layout: Layout,
    /// Internal: the point a `gen` process runs (written by `--layout split`).
    #[arg(long, hide = true)]
    pub(crate) gen_spec: Option<PathBuf>,
}

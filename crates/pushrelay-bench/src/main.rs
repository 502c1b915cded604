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

mod cli;
mod cpu;
mod load;
mod report;
mod scenarios;
mod setup;

use cli::*;
use cpu::*;
use load::*;
use report::*;
use scenarios::{calls::*, jwe::*, sip_wake::*, store_ops::*, sygnal::*, uds::*};
use setup::*;

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
            Scenario::Sygnal => run_sygnal(&a, &rts).await,
            Scenario::Jwe => unreachable!(),
        }
    });
    // Let the runtimes drop without waiting on idle connections.
    rts.relay.shutdown_timeout(Duration::from_secs(2));
    rts.mock.shutdown_timeout(Duration::from_secs(1));
    rts.gen.shutdown_timeout(Duration::from_secs(1));
    r.context("benchmark failed")
}

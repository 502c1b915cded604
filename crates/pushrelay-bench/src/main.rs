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
//! With `--layout split` the generator is a process of its own instead
//! (`split`), pinned to one core, and the mock to the other.
//!
//! Every run is bounded (warm-up + duration per point, and `--calls`).

mod alloc;
mod cli;
mod cpu;
mod load;
mod report;
mod scenarios;
mod setup;
mod split;

use anyhow::Context;
use clap::Parser;
use cli::{Args, Scenario};
use cpu::{cpu_model, loadavg};
use pushrelay::startup::install_crypto_provider;
use scenarios::{calls, jwe, sip_wake, soak, store_ops, sygnal, uds};
use setup::{runtime, Runtimes};
use std::time::Duration;

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    install_crypto_provider();
    if a.scenario == Scenario::Gen {
        return split::run_gen_child(&a);
    }
    if a.with_logs {
        pushrelay::telemetry::init_tracing(Default::default());
    }
    println!(
        "pushrelay-bench {} | {} | nproc {} | loadavg {} | runtimes: relay {} / mock {} / generator {} worker threads | sqlite.synchronous {} | layout {:?}",
        a.scenario.name(),
        cpu_model(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        loadavg(),
        a.relay_threads,
        a.mock_threads,
        a.gen_threads,
        a.sqlite_synchronous.as_deref().unwrap_or("full (default)"),
        a.layout
    );
    if a.scenario == Scenario::Jwe {
        return jwe::run_jwe(&a);
    }
    let rts =
        Runtimes { relay: runtime("relay-rt", a.relay_threads)?, mock: runtime("mock-rt", a.mock_threads)?, gen: runtime("gen-rt", a.gen_threads)? };
    // The orchestration itself runs on the main thread (block_on), idle
    // while the loads run on the runtimes' workers.
    let orchestrator = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let r = orchestrator.block_on(async {
        match a.scenario {
            Scenario::Apns | Scenario::Fcm | Scenario::Mixed => calls::run_calls(&a, &rts).await,
            Scenario::UdsRegister => uds::run_uds(&a, &rts).await,
            Scenario::StoreOps => store_ops::run_store_ops(&a, &rts).await,
            Scenario::SipWake => sip_wake::run_sip_wake(&a, &rts).await,
            Scenario::Sygnal => sygnal::run_sygnal(&a, &rts).await,
            Scenario::Soak => soak::run_soak(&a, &rts).await,
            Scenario::Jwe | Scenario::Gen => unreachable!(),
        }
    });
    // Let the runtimes drop without waiting on idle connections.
    rts.relay.shutdown_timeout(Duration::from_secs(2));
    rts.mock.shutdown_timeout(Duration::from_secs(1));
    rts.gen.shutdown_timeout(Duration::from_secs(1));
    r.context("benchmark failed")
}

//! `--layout split`: the load generator in a process of its own, pinned to
//! core 0 with `taskset`, and the mock's threads pinned to core 1. The relay
//! (or Sygnal) runs unpinned. CPU per push is then measured without the
//! generator competing with the server on the same threads' cores, and the
//! generator's CPU is read from its own process.
//!
//! The bench starts itself as `pushrelay-bench gen --gen-spec FILE` for each
//! point. The child prints `measuring` when its measured window starts and
//! one JSON line (`GenResult`) at the end; the parent reads its own
//! threads' CPU between the two lines.

use crate::cli::Args;
use crate::cpu::{cpu_now, Cpu};
use crate::load::{closed_loop, open_loop, Bounds, OpenPoint, Point};
use crate::setup::Dev;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::io::AsyncBufReadExt;

/// The core the generator gets; the mock gets the other one.
const GEN_CORE: &str = "0";
const MOCK_CORE: &str = "1";

/// What a generator child runs.
#[derive(Serialize, Deserialize)]
pub(crate) struct GenSpec {
    /// `calls` (pushrelay `POST /v1/calls`) or `sygnal` (its notify route).
    pub(crate) target: String,
    pub(crate) urls: Vec<String>,
    /// (user, device, token) of each device, in order.
    pub(crate) devices: Vec<(String, String, String)>,
    /// Makes every pushid of this child unique in the run.
    pub(crate) pushid_prefix: String,
    pub(crate) concurrency: usize,
    pub(crate) warmup_secs: f64,
    pub(crate) duration_secs: f64,
    pub(crate) max_ops: u64,
    /// An open-loop point at this rate instead of a closed loop.
    pub(crate) open_rate: Option<f64>,
}

/// What a generator child measured.
#[derive(Serialize, Deserialize, Default)]
struct GenResult {
    ops: u64,
    errors: u64,
    pushes: u64,
    dropped: u64,
    secs: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
    target_per_s: f64,
    achieved_per_s: f64,
    cpu_s: f64,
    first_error: Option<String>,
}

pub(crate) fn spec_devices(devs: &[Dev]) -> Vec<(String, String, String)> {
    devs.iter().map(|d| (d.user.clone(), d.device.clone(), d.token.clone())).collect()
}

/// Pin every thread of this process whose name starts with `prefix` to `core`.
fn pin_threads(prefix: &str, core: &str) -> anyhow::Result<()> {
    for e in std::fs::read_dir("/proc/self/task")?.flatten() {
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if comm.trim().starts_with(prefix) {
            let tid = e.file_name().to_string_lossy().to_string();
            let ok = std::process::Command::new("taskset").args(["-p", "-c", core, &tid]).stdout(std::process::Stdio::null()).status()?;
            anyhow::ensure!(ok.success(), "taskset -p -c {core} {tid} failed");
        }
    }
    Ok(())
}

/// Run one point in a generator child; (the child's answer, this process's
/// CPU over the child's measured window, with the child's CPU as `gen`).
async fn run_child(spec: &GenSpec) -> anyhow::Result<(GenResult, Cpu)> {
    pin_threads("mock-rt", MOCK_CORE)?;
    let file = tempfile_path()?;
    std::fs::write(&file, serde_json::to_vec(spec)?)?;
    let exe = std::env::current_exe()?;
    let mut child = tokio::process::Command::new("taskset")
        .args(["-c", GEN_CORE])
        .arg(exe)
        .args(["gen", "--gen-spec"])
        .arg(&file)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the generator process (taskset)")?;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().context("child stdout")?).lines();
    let mut cpu0 = None;
    let limit = Duration::from_secs_f64(spec.warmup_secs + spec.duration_secs + 120.0);
    let result = tokio::time::timeout(limit, async {
        while let Some(line) = lines.next_line().await? {
            if line == "measuring" {
                cpu0 = Some(cpu_now());
            } else if let Ok(r) = serde_json::from_str::<GenResult>(&line) {
                return anyhow::Ok(r);
            }
        }
        anyhow::bail!("the generator process ended without a result")
    })
    .await
    .context("the generator process did not finish in time")??;
    let mut cpu = cpu_now() - cpu0.unwrap_or_else(cpu_now);
    cpu.gen = result.cpu_s;
    cpu.total += result.cpu_s;
    let _ = child.wait().await;
    let _ = std::fs::remove_file(&file);
    Ok((result, cpu))
}

fn tempfile_path() -> anyhow::Result<std::path::PathBuf> {
    Ok(std::env::temp_dir().join(format!("pushrelay-bench-gen-{}-{}.json", std::process::id(), rand::random::<u64>())))
}

/// A closed-loop point driven by a generator child.
pub(crate) async fn closed_loop_split(spec: &GenSpec) -> anyhow::Result<Point> {
    let (r, cpu) = run_child(spec).await?;
    Ok(Point {
        concurrency: spec.concurrency,
        ops: r.ops,
        errors: r.errors,
        pushes: r.pushes,
        secs: r.secs,
        p50_ms: r.p50_ms,
        p90_ms: r.p90_ms,
        p99_ms: r.p99_ms,
        max_ms: r.max_ms,
        cpu,
        first_error: r.first_error,
    })
}

/// An open-loop point driven by a generator child.
pub(crate) async fn open_loop_split(spec: &GenSpec) -> anyhow::Result<OpenPoint> {
    let (r, cpu) = run_child(spec).await?;
    Ok(OpenPoint {
        target_per_s: r.target_per_s,
        achieved_per_s: r.achieved_per_s,
        ops: r.ops,
        errors: r.errors,
        p50_ms: r.p50_ms,
        p99_ms: r.p99_ms,
        p999_ms: r.p999_ms,
        max_ms: r.max_ms,
        dropped: r.dropped,
        cpu,
        first_error: r.first_error,
    })
}

/// The child: `pushrelay-bench gen --gen-spec FILE`.
pub(crate) fn run_gen_child(a: &Args) -> anyhow::Result<()> {
    let path = a.gen_spec.as_ref().context("gen needs --gen-spec")?;
    let spec: GenSpec = serde_json::from_slice(&std::fs::read(path)?)?;
    let rt = crate::setup::runtime("gen-rt", a.gen_threads)?;
    let devs: Vec<Dev> = spec.devices.iter().map(|(u, d, t)| Dev::for_load(u, d, t)).collect();
    let devs = std::sync::Arc::new(devs);
    let client = reqwest::Client::builder()
        .http1_only()
        .pool_max_idle_per_host(spec.concurrency.max(16))
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(60))
        .build()?;
    let op = match spec.target.as_str() {
        "calls" => crate::scenarios::calls::call_op_on(client, spec.urls.clone(), devs, spec.pushid_prefix.clone()),
        "sygnal" => crate::scenarios::sygnal::sygnal_op(client, spec.urls[0].clone(), devs),
        other => anyhow::bail!("unknown generator target {other}"),
    };
    let warmup = Duration::from_secs_f64(spec.warmup_secs);
    let duration = Duration::from_secs_f64(spec.duration_secs);
    let orchestrator = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let result = orchestrator.block_on(async {
        let start = tokio::time::Instant::now();
        tokio::spawn(async move {
            tokio::time::sleep_until(start + warmup).await;
            println!("measuring");
        });
        match spec.open_rate {
            Some(rate) => {
                let p = open_loop(rt.handle(), rate, warmup, duration, op).await;
                GenResult {
                    ops: p.ops,
                    errors: p.errors,
                    dropped: p.dropped,
                    secs: duration.as_secs_f64(),
                    p50_ms: p.p50_ms,
                    p99_ms: p.p99_ms,
                    p999_ms: p.p999_ms,
                    max_ms: p.max_ms,
                    target_per_s: p.target_per_s,
                    achieved_per_s: p.achieved_per_s,
                    cpu_s: p.cpu.total,
                    first_error: p.first_error,
                    ..Default::default()
                }
            }
            None => {
                let b = Bounds { warmup, duration, max_ops: spec.max_ops };
                let p = closed_loop(rt.handle(), spec.concurrency, &b, op).await;
                GenResult {
                    ops: p.ops,
                    errors: p.errors,
                    pushes: p.pushes,
                    secs: p.secs,
                    p50_ms: p.p50_ms,
                    p90_ms: p.p90_ms,
                    p99_ms: p.p99_ms,
                    max_ms: p.max_ms,
                    cpu_s: p.cpu.total,
                    first_error: p.first_error,
                    ..Default::default()
                }
            }
        }
    });
    println!("{}", serde_json::to_string(&result)?);
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

//! `sygnal`: pushrelay and Sygnal (element-hq/sygnal, the Matrix push
//! gateway, the peer pushrelay replaces) side by side, in one run, against
//! the same in-process mock APNs, at the same concurrency and with one
//! device per request: pushrelay gets `POST /v1/calls` (a VoIP push of the
//! V2 JWE), Sygnal `POST /_matrix/push/v1/notify` (a VoIP push of its own
//! payload). Sygnal runs unchanged in its own process
//! (docs/bench/sygnal_launcher.py points aioapns at the mock); its CPU is
//! read from /proc/<pid>/stat, pushrelay's from its runtime's threads plus
//! the SQLite threads.

use crate::cli::Layout;
use crate::cli::{Args, Scenario};
use crate::cpu::{clk_tck, stat_ticks};
use crate::load::{bounds, closed_loop, Bounds, Op, OpFuture};
use crate::report::stem;
use crate::scenarios::calls::{call_op, call_urls};
use crate::setup::{make_devices, register_store, start_env, stop_env, Dev, Env, Runtimes, APP};
use crate::split::{closed_loop_split, spec_devices, GenSpec};
use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use pushrelay::provider::apns::ApnsAuth;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Sygnal's process, stopped on drop.
struct SygnalProcess(std::process::Child);

impl Drop for SygnalProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl SygnalProcess {
    fn cpu_s(&self) -> f64 {
        stat_ticks(Path::new(&format!("/proc/{}/stat", self.0.id()))).unwrap_or(0) as f64 / clk_tck()
    }
}

fn free_tcp_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Start Sygnal with one APNs app (token auth with the mock's key, VoIP).
async fn start_sygnal(a: &Args, env: &Env) -> anyhow::Result<(SygnalProcess, String)> {
    let ApnsAuth::Token { key_id, team_id, p8_pem } = &env.apns_creds.auth else { bail!("the bench's APNs credentials use token auth") };
    let dir = env._dir.path();
    let p8 = dir.join("sygnal-key.p8");
    std::fs::write(&p8, p8_pem.expose())?;
    let port = free_tcp_port()?;
    let config = format!(
        "http:\n  bind_addresses: ['127.0.0.1']\n  port: {port}\nlog:\n  setup:\n    version: 1\n    root:\n      level: WARNING\n  access:\n    x_forwarded_for: false\napps:\n  {APP}:\n    type: apns\n    keyfile: {}\n    key_id: {key_id}\n    team_id: {team_id}\n    topic: {APP}.voip\n    push_type: voip\n    platform: production\n",
        p8.display()
    );
    let conf = dir.join("sygnal.yaml");
    std::fs::write(&conf, config)?;
    let mock = env.apns.url();
    let hostport = mock.trim_start_matches("https://").trim_end_matches('/').to_string();
    let (host, mock_port) = hostport.rsplit_once(':').context("mock APNs URL has a port")?;
    let launcher = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/bench/sygnal_launcher.py");
    let log = std::fs::File::create(dir.join("sygnal.log"))?;
    let child = std::process::Command::new(&a.sygnal_python)
        .arg(&launcher)
        .args([host, mock_port])
        .env("SYGNAL_CONF", &conf)
        .env("SSL_CERT_FILE", &env.settings_env["PUSHRELAY_TLS_EXTRA_CA_FILE"])
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start Sygnal with {} (run docs/bench/sygnal.sh)", a.sygnal_python.display()))?;
    let proc = SygnalProcess(child);
    let url = format!("http://127.0.0.1:{port}/_matrix/push/v1/notify");
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if started.elapsed() > Duration::from_secs(30) {
            bail!("Sygnal did not listen within 30 s; see {}", dir.join("sygnal.log").display());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok((proc, url))
}

/// One Sygnal notification to one device (pushkey: the base64 APNs token).
pub(crate) fn sygnal_op(client: reqwest::Client, url: String, devs: Arc<Vec<Dev>>) -> Op {
    Arc::new(move |n: u64| -> OpFuture {
        let d = &devs[(n % devs.len() as u64) as usize];
        let pushkey = STANDARD.encode(hex::decode(&d.token).unwrap_or_default());
        let body = serde_json::json!({"notification": {
            "event_id": format!("$bench-{n:012}"), "room_id": "!room:example.org", "type": "m.call.invite",
            "sender": "@alice:example.org", "sender_display_name": "Alice Example", "prio": "high",
            "counts": {"unread": 1},
            "devices": [{"app_id": APP, "pushkey": pushkey, "pushkey_ts": 1_700_000_000, "data": {}}]
        }})
        .to_string();
        let req = client.post(&url).header("content-type", "application/json").body(body);
        Box::pin(async move {
            let r = req.send().await.map_err(|e| format!("send: {e}"))?;
            let status = r.status();
            let bytes = r.bytes().await.map_err(|e| format!("body: {e}"))?;
            let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| format!("{status}: {}", String::from_utf8_lossy(&bytes)))?;
            // Sygnal lists the pushkeys it gave up on; none means delivered.
            match v["rejected"].as_array() {
                Some(r) if r.is_empty() && status == 200 => Ok(1),
                _ => Err(format!("{status}: {v}")),
            }
        })
    })
}

/// A closed-loop point of `target` for the generator process of `--layout split` (no warm-up).
fn split_spec(a: &Args, target: &str, urls: Vec<String>, devs: &[Dev], c: usize) -> GenSpec {
    GenSpec {
        target: target.into(),
        urls,
        devices: spec_devices(devs),
        pushid_prefix: format!("split{:08x}", rand::random::<u32>()),
        concurrency: c,
        warmup_secs: 0.0,
        duration_secs: a.duration_secs,
        max_ops: a.calls,
        open_rate: None,
    }
}

pub(crate) async fn run_sygnal(a: &Args, rts: &Runtimes) -> anyhow::Result<()> {
    let max_c = a.concurrency.iter().copied().max().unwrap_or(32);
    let env = start_env(a, rts, max_c).await?;
    let devs = make_devices(Scenario::Apns, a.devices.max(1));
    register_store(rts, &env, &devs).await?;
    let devs = Arc::new(devs);
    let (sygnal, url) = start_sygnal(a, &env).await?;
    let relay_op = call_op(&env, devs.clone());
    let syg_op = sygnal_op(env.client.clone(), url.clone(), devs.clone());
    let b = bounds(a);
    let warm = Bounds { warmup: Duration::ZERO, duration: b.warmup.max(Duration::from_millis(500)), max_ops: b.max_ops };
    let measure = Bounds { warmup: Duration::ZERO, duration: b.duration, max_ops: b.max_ops };
    println!(
        "pushrelay POST /v1/calls vs Sygnal POST /_matrix/push/v1/notify, one APNs VoIP push each, same mock APNs, closed loop, {:.1} s per point",
        a.duration_secs
    );
    println!(
        "{:>6} {:>10} | {:>9} {:>8} {:>8} {:>10} | {:>9} {:>8} {:>8} {:>10} | {:>7} {:>7}",
        "conc", "", "relay/s", "p50 ms", "p99 ms", "CPU ms/1k", "sygnal/s", "p50 ms", "p99 ms", "CPU ms/1k", "rate x", "CPU x"
    );
    let mut csv = String::from("concurrency,relay_pushes_per_s,relay_p50_ms,relay_p99_ms,relay_cpu_ms_per_1k,sygnal_pushes_per_s,sygnal_p50_ms,sygnal_p99_ms,sygnal_cpu_ms_per_1k,throughput_ratio,cpu_efficiency_ratio,relay_errors,sygnal_errors\n");
    for &c in &a.concurrency {
        // pushrelay: its runtime's threads and the SQLite threads are the server.
        let relay = match a.layout {
            Layout::Shared => {
                closed_loop(rts.gen.handle(), c, &warm, relay_op.clone()).await;
                closed_loop(rts.gen.handle(), c, &measure, relay_op.clone()).await
            }
            Layout::Split => {
                let mut spec = split_spec(a, "calls", call_urls(&env), &devs, c);
                spec.warmup_secs = warm.duration.as_secs_f64();
                closed_loop_split(&spec).await?
            }
        };
        let relay_cpu_ms = relay.per_k(relay.cpu.relay_rt + relay.cpu.sqlite) * 1000.0;
        // Sygnal: its whole process.
        let (before, syg) = match a.layout {
            Layout::Shared => {
                closed_loop(rts.gen.handle(), c, &warm, syg_op.clone()).await;
                (sygnal.cpu_s(), closed_loop(rts.gen.handle(), c, &measure, syg_op.clone()).await)
            }
            Layout::Split => {
                let spec = split_spec(a, "sygnal", vec![url.clone()], &devs, c);
                let mut warm_spec = split_spec(a, "sygnal", vec![url.clone()], &devs, c);
                warm_spec.duration_secs = warm.duration.as_secs_f64();
                warm_spec.warmup_secs = 0.0;
                closed_loop_split(&warm_spec).await?;
                (sygnal.cpu_s(), closed_loop_split(&spec).await?)
            }
        };
        let syg_cpu_ms = syg.per_k(sygnal.cpu_s() - before) * 1000.0;
        let rate = relay.pushes_per_s() / syg.pushes_per_s().max(1e-9);
        let eff = syg_cpu_ms / relay_cpu_ms.max(1e-9);
        println!(
            "{c:>6} {:>10} | {:>9.0} {:>8.2} {:>8.2} {:>10.0} | {:>9.0} {:>8.2} {:>8.2} {:>10.0} | {:>7.2} {:>7.2}",
            "",
            relay.pushes_per_s(),
            relay.p50_ms,
            relay.p99_ms,
            relay_cpu_ms,
            syg.pushes_per_s(),
            syg.p50_ms,
            syg.p99_ms,
            syg_cpu_ms,
            rate,
            eff
        );
        for (name, p) in [("relay", &relay), ("sygnal", &syg)] {
            if let Some(e) = &p.first_error {
                println!("       {name}: {} errors, first: {e}", p.errors);
            }
        }
        let _ = writeln!(
            csv,
            "{c},{:.1},{:.3},{:.3},{:.1},{:.1},{:.3},{:.3},{:.1},{:.3},{:.3},{},{}",
            relay.pushes_per_s(),
            relay.p50_ms,
            relay.p99_ms,
            relay_cpu_ms,
            syg.pushes_per_s(),
            syg.p50_ms,
            syg.p99_ms,
            syg_cpu_ms,
            rate,
            eff,
            relay.errors,
            syg.errors
        );
    }
    println!("(rate x = pushrelay pushes/s ÷ Sygnal's; CPU x = Sygnal's CPU per push ÷ pushrelay's: how many times more pushes pushrelay gets per CPU-second)");
    drop(sygnal);
    stop_env(env).await;
    std::fs::create_dir_all(&a.out)?;
    let path = a.out.join(format!("{}.csv", stem(a, "sygnal")));
    std::fs::write(&path, csv)?;
    println!("wrote {}", path.display());
    Ok(())
}

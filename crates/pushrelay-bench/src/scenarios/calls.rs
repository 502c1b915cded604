//! `apns`, `fcm`, `mixed`: call events through the relay next to the
//! mock's own ceiling; the call operation (also used by `sygnal`) and the
//! ceiling operation.

use crate::cli::{Args, Layout, Register};
use crate::load::{bounds, closed_loop, expect_200, open_loop, Op, OpFuture};
use crate::report::{call_csv_row, chart, print_call_header, print_call_row, stem, Row, CALL_CSV_HEADER};
use crate::setup::{
    call_event, make_devices, register_http, register_store, registration, start_env, stop_env, Dev, Env, Runtimes, ADMIN_TOKEN, APP,
};
use crate::split::{closed_loop_split, open_loop_split, spec_devices, GenSpec};
use pushrelay::domain::{now_ms, BundleId};
use pushrelay::payload::{self, Content};
use pushrelay::provider::{ApnsClient, ApnsPush, FcmClient};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) async fn run_calls(a: &Args, rts: &Runtimes) -> anyhow::Result<()> {
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
            Register::Store => "the store fast path (Store::upsert_user/upsert_device on a second pool, same database)",
            Register::Http => "HTTP (PUT /v1/users + UDS PUT, Argon2 hash + verify each)",
        },
        reg_s
    );
    let devs = Arc::new(devs);
    let b = bounds(a);
    let ceiling = if a.no_ceiling { None } else { Some(ceiling_op(&env, devs.clone())?) };
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
        let relay_point = match a.layout {
            Layout::Shared => closed_loop(rts.gen.handle(), c, &b, relay_op.clone()).await,
            Layout::Split => closed_loop_split(&split_spec(a, &env, &devs, c, None)).await?,
        };
        let row = Row { relay: relay_point, ceiling: ceiling_point };
        print_call_row(&row);
        rows.push(row);
    }
    let best = rows.iter().map(|r| r.relay.ops_per_s()).fold(0.0, f64::max);
    let mut open = Vec::new();
    if !a.open_loop.is_empty() && best > 0.0 {
        println!("open loop: arrivals at a fixed rate; latency from the scheduled start (p50 / p99 / p99.9 ms), best closed-loop rate {best:.0}/s");
        println!(
            "{:>9} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>10} {:>8}",
            "fraction", "target/s", "done/s", "p50", "p99", "p99.9", "max", "errors", "dropped", "relay µs", "wakes"
        );
        for &f in &a.open_loop {
            let p = match a.layout {
                Layout::Shared => {
                    open_loop(
                        rts.gen.handle(),
                        best * f,
                        Duration::from_secs_f64(a.warmup_secs),
                        Duration::from_secs_f64(a.duration_secs),
                        relay_op.clone(),
                    )
                    .await
                }
                Layout::Split => open_loop_split(&split_spec(a, &env, &devs, 0, Some(best * f))).await?,
            };
            let relay_us = if p.ops == 0 { 0.0 } else { (p.cpu.relay_rt + p.cpu.sqlite) * 1e6 / p.ops as f64 };
            let wakes = p.cpu.relay_wakeups / p.ops.max(1) as f64;
            println!(
                "{f:>9.2} {:>10.0} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>7} {:>7} {:>10.0} {wakes:>8.2}",
                p.target_per_s, p.achieved_per_s, p.p50_ms, p.p99_ms, p.p999_ms, p.max_ms, p.errors, p.dropped, relay_us
            );
            if let Some(e) = &p.first_error {
                println!("          first error: {e}");
            }
            open.push((f, p, relay_us, wakes));
        }
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
    if !open.is_empty() {
        let mut csv = String::from(
            "fraction_of_closed_loop_max,target_per_s,achieved_per_s,ops,errors,dropped,p50_ms,p99_ms,p999_ms,max_ms,relay_cpu_us_per_call,relay_wakeups_per_call\n",
        );
        for (f, p, us, wakes) in &open {
            let _ = writeln!(
                csv,
                "{f},{:.1},{:.1},{},{},{},{:.3},{:.3},{:.3},{:.3},{:.1},{wakes:.2}",
                p.target_per_s, p.achieved_per_s, p.ops, p.errors, p.dropped, p.p50_ms, p.p99_ms, p.p999_ms, p.max_ms, us
            );
        }
        let path = a.out.join(format!("{stem}-open.csv"));
        std::fs::write(&path, csv)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// A point for the generator process of `--layout split`: calls at
/// concurrency `c`, or arrivals at `open_rate`.
fn split_spec(a: &Args, env: &Env, devs: &[Dev], c: usize, open_rate: Option<f64>) -> GenSpec {
    GenSpec {
        target: "calls".into(),
        urls: call_urls(env),
        devices: spec_devices(devs),
        pushid_prefix: format!("split{:08x}", rand::random::<u32>()),
        concurrency: c,
        warmup_secs: a.warmup_secs,
        duration_secs: a.duration_secs,
        max_ops: a.calls,
        open_rate,
    }
}

/// The relay's answer to `POST /v1/calls`: one delivery per device.
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
pub(crate) fn call_op(env: &Env, devs: Arc<Vec<Dev>>) -> Op {
    call_op_on(env.client.clone(), call_urls(env), devs, "bench".into())
}

/// Every node's `POST /v1/calls` URL.
pub(crate) fn call_urls(env: &Env) -> Vec<String> {
    env.bases.iter().map(|b| format!("{b}/v1/calls")).collect()
}

/// `call_op` with its own client, URLs and pushid prefix (a generator process).
pub(crate) fn call_op_on(client: reqwest::Client, urls: Vec<String>, devs: Arc<Vec<Dev>>, prefix: String) -> Op {
    // Every call of the run gets its own pushid (the points of a run each
    // count `n` from 0: reusing `n` would make later points duplicates of
    // earlier calls, answered from the push claim without a push).
    let seq = Arc::new(std::sync::atomic::AtomicU64::new(0));
    Arc::new(move |n: u64| -> OpFuture {
        let call = seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let url = &urls[(n % urls.len() as u64) as usize];
        let d = &devs[(n % devs.len() as u64) as usize];
        let body = serde_json::json!({
            "user": d.user, "device": d.device, "pushid": format!("{prefix}-{call:012}"),
            "displayname": "Alice Example", "displaynumber": "+15551234567", "huntpilotdn": "5000",
        })
        .to_string();
        let req = client.post(url).bearer_auth(ADMIN_TOKEN).header("content-type", "application/json").body(body);
        Box::pin(async move {
            let bytes = expect_200(req).await?;
            let rep: ReportBody = serde_json::from_slice(bytes.as_ref()).map_err(|e| format!("report: {e}"))?;
            let mut delivered = 0;
            for d in &rep.deliveries {
                if d.outcome == "delivered" {
                    delivered += 1;
                } else {
                    return Err(format!("outcome {} ({})", d.outcome, d.reason.as_deref().unwrap_or("")));
                }
            }
            Ok(delivered)
        })
    })
}

/// The mock's ceiling: the provider clients straight at the mocks (no HTTP
/// server, no store, no encryption), same devices and payload size.
/// The payload shape of a channel's provider (the ceiling sends what the relay would).
fn shape_of(channel: pushrelay::domain::Channel) -> pushrelay::domain::Shape {
    match channel.provider() {
        pushrelay::domain::Provider::Apns => pushrelay::domain::Shape::Apns,
        _ => pushrelay::domain::Shape::Data,
    }
}

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
        let c = payload::for_call(&call_event(&d.user, Some(&d.device), 0), &reg, shape_of(d.channel));
        contents.push((reg.token, c));
    }
    let contents = Arc::new(contents);
    Ok(Arc::new(move |n: u64| -> OpFuture {
        let i = (n % devs.len() as u64) as usize;
        let channel = devs[i].channel;
        let (apns, fcm, apns_creds, fcm_creds, contents, bundle) =
            (apns.clone(), fcm.clone(), apns_creds.clone(), fcm_creds.clone(), contents.clone(), bundle.clone());
        Box::pin(async move {
            let (token, content) = &contents[i];
            let attempt = match content {
                Content::ApnsVoip { body } => {
                    let exp = now_ms() / 1000 + 30;
                    let push = ApnsPush::voip(token, &bundle, exp, body.clone());
                    apns.send(APP, &apns_creds, channel, &push).await
                }
                Content::Data { data } => fcm.send(&fcm_creds, token.as_str(), data, 30).await,
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

//! `sip-wake`: REGISTER ingestion and push-and-wait with many held
//! `/sip/wake` requests.

use crate::cli::Args;
use crate::cpu::{cpu_now, listen_overflows, rss_kb};
use crate::load::{closed_loop, expect_200, Bounds, Op, OpFuture};
use crate::report::{quantiles, stem};
use crate::setup::{for_each_concurrent, start_env, stop_env, Env, Runtimes, ADMIN_TOKEN, SIP_APP};
use anyhow::bail;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::Handle;

/// The SIP fixture (a valid MizuTech REGISTER with an `X-MPUSH` APNs token).
pub(crate) const SIP_REGISTER: &str = include_str!("../../../../fixtures/sip/mizu-register-hex.txt");
pub(crate) const SIP_FIXTURE_TOKEN: &str = "5c0a2f1e9b7d4c3a8e6f1d2b3c4a5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d";

/// User part of AOR number `i` (digits, like the fixture's `1111`).
pub(crate) fn sip_user(i: u64) -> String {
    format!("{}", 7_000_000 + i)
}

pub(crate) fn sip_aor(i: u64) -> String {
    format!("sip:{}@sip.mydomain.com", sip_user(i))
}

/// The fixture with AOR `i`: its own user, APNs token (stable per AOR, so a
/// re-REGISTER updates the same binding) and Call-ID.
pub(crate) fn sip_register(i: u64, cseq: u32) -> String {
    use sha2::{Digest, Sha256};
    let token = hex::encode(Sha256::digest(format!("bench-sip-{i}").as_bytes()));
    SIP_REGISTER
        .replace("1111", &sip_user(i))
        .replace(SIP_FIXTURE_TOKEN, &token)
        .replace("enutmuwaynqib", &format!("bench-{i}"))
        .replace("CSeq: 2 REGISTER", &format!("CSeq: {cseq} REGISTER"))
}

/// `POST /sip/register` of AOR `i` on node `node`.
pub(crate) fn sip_register_req(env: &Env, node: u64, i: u64, cseq: u32) -> reqwest::RequestBuilder {
    env.client
        .post(format!("{}/sip/register", env.node(node)))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "message/sip")
        .body(sip_register(i, cseq))
}

/// `pushrelay_pushes_total{…,outcome="delivered"}`, summed over every node
/// of this process (the Prometheus recorder is process-wide).
pub(crate) fn pushes_delivered() -> f64 {
    pushrelay::telemetry::metrics_handle()
        .render()
        .lines()
        .filter(|l| l.starts_with("pushrelay_pushes_total{") && l.contains("outcome=\"delivered\""))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

/// Give freed heap pages back to the OS (glibc), so RSS deltas measure
/// what is held, not what an earlier phase left in the allocator.
pub(crate) fn trim_heap() {
    extern "C" {
        fn malloc_trim(pad: usize) -> i32;
    }
    // SAFETY: glibc's malloc_trim has no preconditions.
    unsafe {
        malloc_trim(0);
    }
}

/// A client for held `/sip/wake` requests: one connection per request.
pub(crate) fn wake_client(n: usize) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder().http1_only().pool_max_idle_per_host(n).tcp_nodelay(true).timeout(Duration::from_secs(120)).build()?)
}

pub(crate) type WakeAnswer = (u16, bool, Instant);

/// `n` concurrent `/sip/wake` for AORs `first..first+n`, AOR i on node i % nodes.
/// Opened 100 per 10 ms: a burst of ~1000 simultaneous connects overflows
/// the listen queue (backlog 1024) and some SYNs wait a 1 s retransmit.
pub(crate) async fn hold_waiters(
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
            let req = client.post(format!("{}/sip/wake", env.node(i))).bearer_auth(ADMIN_TOKEN).json(&serde_json::json!({
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

/// Wait until `n` more pushes than `base` were delivered (or `limit`):
/// (how many, seconds until the first).
pub(crate) async fn wait_delivered(base: f64, n: usize, limit: Duration) -> (u64, f64) {
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
pub(crate) async fn run_sip_wake(a: &Args, rts: &Runtimes) -> anyhow::Result<()> {
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
                expect_200(req).await?;
                Ok(0)
            })
        })
    };
    let b = Bounds { warmup: Duration::from_secs_f64(a.warmup_secs.max(0.0)), duration: Duration::from_secs(120), max_ops: a.aors as u64 };
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
        let listener = rts.mock.spawn(tokio::net::TcpListener::bind("127.0.0.1:0")).await??;
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
                let req = client.post(format!("http://{addr}/sip/wake")).bearer_auth(ADMIN_TOKEN).json(&serde_json::json!({
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
        if let (200, true, Some((sent, answered))) = (status, registered, marks.lock().expect("marks")[i]) {
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
    println!("  wake latency, REGISTER sent → wake answer:   p50 {s50:.2} ms, p99 {s99:.2} ms, max {smax:.2} ms");
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

//! `store-ops`: the store's hot-path operations alone.

use crate::cli::{Args, Scenario};
use crate::load::{bounds, closed_loop, Op, OpFuture};
use crate::report::stem;
use crate::setup::{make_devices, register_store, start_env, stop_env, Runtimes, APP};
use pushrelay::domain::{now_ms, AppId, CallId, Channel, DevicePkid, UserId};
use pushrelay::startup::open_store;
use pushrelay::store::Store;
use std::fmt::Write as _;
use std::sync::Arc;

/// The three statements `POST /v1/calls` runs per call (device read with the
/// key opened, credentials read, report write), each alone and all three in
/// sequence, on the relay runtime with the relay's own store settings.
pub(crate) async fn run_store_ops(a: &Args, rts: &Runtimes) -> anyhow::Result<()> {
    use pushrelay::domain::{CallReport, Delivery, Outcome};
    let env = start_env(a, rts, 16).await?;
    let devs = Arc::new(make_devices(Scenario::Apns, a.devices.max(1)));
    register_store(rts, &env, &devs).await?;
    let settings = env.settings()?;
    let store: Store = rts.relay.spawn(async move { open_store(&settings).await }).await??;
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
                    let v = store.devices_for(&pushrelay::domain::Scope::default_tenant(), &user, Some(&device)).await.map_err(|e| e.to_string())?;
                    if v.len() != 1 {
                        return Err("device missing".into());
                    }
                }
                if kind == 1 || kind == 3 {
                    store
                        .credentials(
                            &pushrelay::domain::Reach::every_tenant(),
                            &app,
                            pushrelay::domain::CredentialKind::Push(pushrelay::domain::Provider::Apns),
                        )
                        .await
                        .map_err(|e| e.to_string())?
                        .ok_or("no credentials")?;
                }
                if kind == 2 || kind == 3 {
                    let call = CallId::new();
                    let rep = CallReport::new(&call, vec![Delivery::new(&device, Channel::Apns, Outcome::Delivered, Some(200), None, 1)]);
                    let now = now_ms();
                    store
                        .save_call(&pushrelay::store::CallRecord {
                            tenant: pushrelay::domain::TenantId::default_tenant(),
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
    println!("store-ops: {} devices; each operation alone on the relay runtime (no HTTP, no push)", devs.len());
    println!(
        "{:>34} {:>5} {:>8} {:>9} {:>7} {:>7} {:>7} | {:>8} {:>7}",
        "operation", "conc", "ops", "ops/s", "p50ms", "p99ms", "maxms", "cpu/1k", "store"
    );
    println!("(last column: cores used by other processes meanwhile)");
    let mut csv = String::from(
        "operation,concurrency,ops,errors,seconds,ops_per_s,p50_ms,p99_ms,max_ms,cpu_s_per_1k_total,cpu_s_per_1k_store,other_processes_cores\n",
    );
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

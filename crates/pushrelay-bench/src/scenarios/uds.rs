//! `uds-register`: CUCM UDS registrations (first, re-registration,
//! store-direct).

use crate::cli::Args;
use crate::load::{bounds, closed_loop, expect_200, Op, OpFuture};
use crate::report::stem;
use crate::setup::{registration, start_env, stop_env, uds_xml, Dev, Runtimes, PASSWORD};
use pushrelay::domain::{now_ms, Channel, UserId};
use pushrelay::startup::open_store;
use pushrelay::store::Store;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Registrations/s at each concurrency, through `PUT /cucm-uds/…/devicetoken`
/// with the default Argon2 hash: a user's first registration (no cached
/// verification: one full Argon2 verify), a re-registration (the relay's
/// password cache hits: no Argon2), and `Store::upsert_device` alone.
pub(crate) async fn run_uds(a: &Args, rts: &Runtimes) -> anyhow::Result<()> {
    let max_c = a.concurrency.iter().copied().max().unwrap_or(16);
    let env = start_env(a, rts, max_c).await?;
    let settings = env.settings()?;
    let store: Store = rts.relay.spawn(async move { open_store(&settings).await }).await??;
    let users = 64usize;
    // Fresh users for "first registration": each is used once. At ~100-150
    // Argon2 verifies/s on 2 cores a 6 s point needs < 1000.
    let fresh = 1500usize * a.concurrency.len();
    let default_hash = pushrelay::http::auth::hash_password(PASSWORD)?;
    let now = now_ms();
    let t = Instant::now();
    for i in 0..users {
        store.upsert_user(&pushrelay::domain::Scope::default_tenant(), &UserId::parse(&format!("again{i:03}"))?, Some(&default_hash), now).await?;
        store.upsert_user(&pushrelay::domain::Scope::default_tenant(), &UserId::parse(&format!("direct{i:03}"))?, None, now).await?;
    }
    // One Argon2 hash (14 ms) shared by every fresh user: each user's first
    // verification still runs Argon2, since the cache is per user.
    for i in 0..fresh {
        store.upsert_user(&pushrelay::domain::Scope::default_tenant(), &UserId::parse(&format!("first{i:05}"))?, Some(&default_hash), now).await?;
    }
    println!(
        "uds-register: {} users created in {:.2} s; APNs channel; {} node(s) on {}",
        2 * users + fresh,
        t.elapsed().as_secs_f64(),
        env.bases.len(),
        env.backend()
    );
    let params: Vec<&str> = default_hash.split('$').take(4).collect();
    println!("  stored hash {} (what PUT /v1/users stores)", params.join("$"));
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
                .put(format!("{base}/cucm-uds/user/{}/device/{}/devicetoken", d.user, d.device))
                .basic_auth(&d.user, Some(PASSWORD))
                .header("content-type", "application/xml")
                .body(uds_xml(&d));
            Box::pin(async move {
                expect_200(req).await?;
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
                return Box::pin(async move { Err(format!("ran out of fresh users ({fresh}): raise the count")) });
            }
            let (token, key) = token_key(n);
            put(n, Dev { user: format!("first{i:05}"), device: "phone".to_string(), channel: Channel::Apns, token, key })
        })
    };
    let again_op: Op = {
        let put = put.clone();
        Arc::new(move |n: u64| -> OpFuture {
            let (token, key) = token_key(n);
            put(n, Dev { user: format!("again{:03}", n % users as u64), device: "phone".to_string(), channel: Channel::Apns, token, key })
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
            let d = Dev { user: format!("direct{:03}", n % users as u64), device: format!("d{n:09}"), channel: Channel::Apns, token, key };
            let store = store.clone();
            Box::pin(async move {
                let reg = registration(&d).map_err(|e| e.to_string())?;
                store
                    .register(
                        &pushrelay::domain::Scope::default_tenant(),
                        &reg.user,
                        std::slice::from_ref(&reg),
                        &Default::default(),
                        now_ms(),
                        u32::MAX,
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(0)
            })
        })
    };
    println!(
        "{:>18} {:>5} {:>8} {:>9} {:>7} {:>7} {:>7} {:>7} {:>6} | {:>8} {:>7} {:>7} {:>7} {:>6}",
        "variant", "conc", "regs", "regs/s", "p50ms", "p90ms", "p99ms", "maxms", "errs", "cpu/1k", "relay", "store", "gen", "others"
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

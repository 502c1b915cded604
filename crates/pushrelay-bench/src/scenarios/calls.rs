//! `apns`, `fcm`, `mixed`: call events through the relay next to the
//! mock's own ceiling.

#[allow(unused_imports)]
use crate::*;

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

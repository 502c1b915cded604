//! `soak`: POST /v1/calls at a fixed rate for minutes, in 10 s slices:
//! calls done, errors, p99 and the process's resident memory after each
//! slice. The RSS slope over the second half (least squares) is the figure
//! a leak would move; the first half is the warm-up (caches, pools, the
//! allocator's arenas).

use crate::cli::{Args, Scenario};
use crate::cpu::rss_kb;
use crate::load::open_loop;
use crate::scenarios::calls::call_op;
use crate::setup::{make_devices, register_store, start_env, stop_env, Runtimes};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

const SLICE: Duration = Duration::from_secs(10);

pub(crate) async fn run_soak(a: &Args, rts: &Runtimes) -> anyhow::Result<()> {
    let env = start_env(a, rts, 256).await?;
    let devs = make_devices(Scenario::Apns, a.devices.max(1));
    register_store(rts, &env, &devs).await?;
    let op = call_op(&env, Arc::new(devs));
    let slices = ((a.soak_minutes * 60.0) / SLICE.as_secs_f64()).ceil().max(2.0) as usize;
    println!("soak: {} calls/s for {:.1} min ({slices} slices of {} s), APNs, {} devices", a.rate, a.soak_minutes, SLICE.as_secs(), a.devices);
    println!("{:>6} {:>10} {:>8} {:>8} {:>8} {:>10}", "t_s", "calls/s", "errors", "p99 ms", "max ms", "rss kB");
    let mut rows = Vec::with_capacity(slices);
    let rss0 = rss_kb();
    for i in 0..slices {
        let p = open_loop(rts.gen.handle(), a.rate, Duration::ZERO, SLICE, op.clone()).await;
        let t = (i + 1) as f64 * SLICE.as_secs_f64();
        let rss = rss_kb();
        println!("{t:>6.0} {:>10.0} {:>8} {:>8.2} {:>8.2} {rss:>10}", p.achieved_per_s, p.errors + p.dropped, p.p99_ms, p.max_ms);
        rows.push((t, p.achieved_per_s, p.ops, p.errors + p.dropped, p.p99_ms, rss));
    }
    stop_env(env).await;
    let calls: u64 = rows.iter().map(|r| r.2).sum();
    let errors: u64 = rows.iter().map(|r| r.3).sum();
    let worst_p99 = rows.iter().map(|r| r.4).fold(0.0, f64::max);
    let half = &rows[rows.len() / 2..];
    let slope = least_squares_slope(&half.iter().map(|r| (r.0, r.5 as f64)).collect::<Vec<_>>());
    let last = rows.last().map(|r| r.5).unwrap_or(0);
    println!(
        "soak: {calls} calls, {errors} errors, worst slice p99 {worst_p99:.2} ms; RSS {:.1} → {:.1} MB, slope over the second half {:.2} kB/s ({:.1} MB/hour)",
        rss0 as f64 / 1024.0,
        last as f64 / 1024.0,
        slope,
        slope * 3600.0 / 1024.0
    );
    std::fs::create_dir_all(&a.out)?;
    let mut csv = String::from("t_s,calls_per_s,calls,errors,p99_ms,rss_kb\n");
    for (t, per_s, n, e, p99, rss) in &rows {
        let _ = writeln!(csv, "{t},{per_s:.1},{n},{e},{p99:.3},{rss}");
    }
    let path = a.out.join(format!("soak{}.csv", a.tag));
    std::fs::write(&path, csv)?;
    println!("wrote {}", path.display());
    Ok(())
}

/// The slope of y over x (least squares), in y units per x unit.
fn least_squares_slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (mx, my) = (points.iter().map(|p| p.0).sum::<f64>() / n, points.iter().map(|p| p.1).sum::<f64>() / n);
    let (num, den) = points.iter().fold((0.0, 0.0), |(num, den), (x, y)| (num + (x - mx) * (y - my), den + (x - mx) * (x - mx)));
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_slope_of_a_line_is_its_slope() {
        let pts: Vec<(f64, f64)> = (0..10).map(|i| (i as f64 * 10.0, 1000.0 + 2.5 * i as f64 * 10.0)).collect();
        assert!((super::least_squares_slope(&pts) - 2.5).abs() < 1e-9);
        assert_eq!(super::least_squares_slope(&[(1.0, 5.0)]), 0.0);
    }
}

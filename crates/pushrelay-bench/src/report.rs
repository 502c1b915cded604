//! Reporting: output file names, the call table on stdout, CSV rows,
//! quantiles, and the SVG charts.

use crate::cli::Args;
use crate::load::Point;
use std::fmt::Write as _;

/// Output file stem: scenario, `-pg` on PostgreSQL, `-2nodes`, `-split`, then `--tag`.
pub(crate) fn stem(a: &Args, name: &str) -> String {
    let pg = a.database_url.as_deref().is_some_and(|u| u.starts_with("postgres"));
    let sync = match a.sqlite_synchronous.as_deref() {
        Some(s) if s != "full" => format!("-sync-{s}"),
        _ => String::new(),
    };
    let split = if a.layout == crate::cli::Layout::Split { "-split" } else { "" };
    format!("{name}{}{}{sync}{split}{}", if pg { "-pg" } else { "" }, if a.nodes > 1 { format!("-{}nodes", a.nodes) } else { String::new() }, a.tag)
}

pub(crate) struct Row {
    pub(crate) relay: Point,
    pub(crate) ceiling: Option<Point>,
}

pub(crate) fn print_call_header() {
    println!(
        "{:>5} {:>9} {:>9} {:>9} {:>7} {:>7} {:>7} {:>7} {:>6} | {:>8} {:>7} {:>7} {:>7} {:>7} | {:>10} {:>7} {:>6}",
        "conc",
        "calls",
        "calls/s",
        "pushes/s",
        "p50ms",
        "p90ms",
        "p99ms",
        "maxms",
        "errs",
        "cpu/1k",
        "relay",
        "store",
        "mock",
        "gen",
        "ceil/s",
        "c.p99",
        "ratio"
    );
    println!("      cpu/1k = CPU-s per 1000 calls of this process + its PostgreSQL server = relay (without store) + store (SQLite worker threads or PostgreSQL server) + mock + gen");
    println!("      (others = cores used by other processes on the machine during the point: noise if > 0.1, disturbed if > 0.3)");
}

pub(crate) fn print_call_row(r: &Row) {
    let p = &r.relay;
    let (cs, cp99, ratio) = match &r.ceiling {
        Some(c) => (format!("{:.0}", c.pushes_per_s()), format!("{:.2}", c.p99_ms), format!("{:.3}", p.ops_per_s() / c.pushes_per_s().max(1e-9))),
        None => ("-".into(), "-".into(), "-".into()),
    };
    println!(
        "{:>5} {:>9} {:>9.0} {:>9.0} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>6} | {:>8.3} {:>7.3} {:>7.3} {:>7.3} {:>7.3} | {:>10} {:>7} {:>6}",
        p.concurrency,
        p.ops,
        p.ops_per_s(),
        p.pushes_per_s(),
        p.p50_ms,
        p.p90_ms,
        p.p99_ms,
        p.max_ms,
        p.errors,
        p.per_k(p.cpu.all()),
        p.per_k(p.cpu.relay_code()),
        p.per_k(p.cpu.store()),
        p.per_k(p.cpu.mock),
        p.per_k(p.cpu.gen),
        cs,
        cp99,
        ratio
    );
    let others = |q: &Point| q.cpu.others() / q.secs;
    println!(
        "      process{} used {:.2} cores; others {:.2} cores (relay point), {} (ceiling point)",
        if p.cpu.db > 0.0 { " + PostgreSQL server" } else { "" },
        p.cpu.all() / p.secs,
        others(p),
        r.ceiling.as_ref().map(|c| format!("{:.2}", others(c))).unwrap_or("-".into())
    );
    if p.ops > 0 {
        println!(
            "      relay runtime heap: {:.0} allocations, {:.1} kB per call; relay threads woken {:.2} times per call; relay + store CPU {:.0} µs per call",
            p.cpu.relay_allocs / p.ops as f64,
            p.cpu.relay_alloc_bytes / 1024.0 / p.ops as f64,
            p.cpu.relay_wakeups / p.ops as f64,
            p.cpu.relay() * 1e6 / p.ops as f64 + p.cpu.db * 1e6 / p.ops as f64,
        );
    }
    if let Some(e) = &p.first_error {
        println!("      first relay error: {e}");
    }
    if let Some(e) = r.ceiling.as_ref().and_then(|c| c.first_error.as_ref()) {
        println!("      first ceiling error: {e}");
    }
}

pub(crate) const CALL_CSV_HEADER: &str = "scenario,backend,nodes,concurrency,calls,errors,seconds,calls_per_s,pushes_per_s,p50_ms,p90_ms,p99_ms,max_ms,cpu_s_per_1k_total,cpu_s_per_1k_relay_without_store,cpu_s_per_1k_store,cpu_s_per_1k_mock,cpu_s_per_1k_generator,ceiling_pushes_per_s,ceiling_p50_ms,ceiling_p99_ms,ceiling_cpu_s_per_1k_total,ratio_to_ceiling,bench_cores,other_processes_cores,ceiling_other_processes_cores,relay_allocs_per_call,relay_alloc_bytes_per_call,relay_wakeups_per_call";

pub(crate) fn call_csv_row(scenario: &str, backend: &str, nodes: usize, r: &Row) -> String {
    let p = &r.relay;
    let (cs, c50, c99, ccpu, ratio, coth) = match &r.ceiling {
        Some(c) => (
            format!("{:.1}", c.pushes_per_s()),
            format!("{:.3}", c.p50_ms),
            format!("{:.3}", c.p99_ms),
            format!("{:.4}", c.per_k(c.cpu.all())),
            format!("{:.4}", p.ops_per_s() / c.pushes_per_s().max(1e-9)),
            format!("{:.2}", c.cpu.others() / c.secs),
        ),
        None => Default::default(),
    };
    format!(
        "{scenario},{backend},{nodes},{},{},{},{:.3},{:.1},{:.1},{:.3},{:.3},{:.3},{:.3},{:.4},{:.4},{:.4},{:.4},{:.4},{cs},{c50},{c99},{ccpu},{ratio},{:.2},{:.2},{coth},{:.1},{:.0},{:.2}",
        p.concurrency,
        p.ops,
        p.errors,
        p.secs,
        p.ops_per_s(),
        p.pushes_per_s(),
        p.p50_ms,
        p.p90_ms,
        p.p99_ms,
        p.max_ms,
        p.per_k(p.cpu.all()),
        p.per_k(p.cpu.relay_code()),
        p.per_k(p.cpu.store()),
        p.per_k(p.cpu.mock),
        p.per_k(p.cpu.gen),
        p.cpu.all() / p.secs,
        p.cpu.others() / p.secs,
        p.cpu.relay_allocs / p.ops.max(1) as f64,
        p.cpu.relay_alloc_bytes / p.ops.max(1) as f64,
        p.cpu.relay_wakeups / p.ops.max(1) as f64,
    )
}

/// (p50, p99, max) of `v` (sorted in place); zeros when empty.
pub(crate) fn quantiles(v: &mut [f64]) -> (f64, f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    v.sort_by(|x, y| x.total_cmp(y));
    let q = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    (q(0.50), q(0.99), v[v.len() - 1])
}

/// Two panels, hand-made SVG (no font dependencies): throughput vs
/// concurrency (relay calls/s, relay pushes/s, mock ceiling pushes/s) and
/// p99 latency vs concurrency (relay, ceiling). Log-2 x axis.
pub(crate) fn chart(title: &str, rows: &[Row]) -> String {
    let (w, h) = (960.0, 420.0);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(s, r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#, w / 2.0, esc(title));
    let xs: Vec<f64> = rows.iter().map(|r| r.relay.concurrency as f64).collect();
    let thr: Vec<(&str, &str, Vec<f64>)> = {
        let mut v = vec![
            ("relay calls/s", "#1f77b4", rows.iter().map(|r| r.relay.ops_per_s()).collect()),
            ("relay pushes/s", "#2ca02c", rows.iter().map(|r| r.relay.pushes_per_s()).collect()),
        ];
        if rows.iter().all(|r| r.ceiling.is_some()) {
            v.push(("mock ceiling pushes/s", "#d62728", rows.iter().map(|r| r.ceiling.as_ref().map(|c| c.pushes_per_s()).unwrap_or(0.0)).collect()));
        }
        v
    };
    let lat: Vec<(&str, &str, Vec<f64>)> = {
        let mut v = vec![
            ("relay p99 ms", "#1f77b4", rows.iter().map(|r| r.relay.p99_ms).collect()),
            ("relay p50 ms", "#9467bd", rows.iter().map(|r| r.relay.p50_ms).collect()),
        ];
        if rows.iter().all(|r| r.ceiling.is_some()) {
            v.push(("mock ceiling p99 ms", "#d62728", rows.iter().map(|r| r.ceiling.as_ref().map(|c| c.p99_ms).unwrap_or(0.0)).collect()));
        }
        v
    };
    panel(&mut s, 70.0, 50.0, 380.0, 300.0, "throughput (per second) vs concurrency", &xs, &thr);
    panel(&mut s, 560.0, 50.0, 380.0, 300.0, "latency (ms) vs concurrency", &xs, &lat);
    let _ = writeln!(s, "</svg>");
    s
}

pub(crate) fn esc(t: &str) -> String {
    t.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

pub(crate) fn nice_max(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let e = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if v <= m * e {
            return m * e;
        }
    }
    10.0 * e
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn panel(s: &mut String, x0: f64, y0: f64, pw: f64, ph: f64, title: &str, xs: &[f64], series: &[(&str, &str, Vec<f64>)]) {
    let ymax = nice_max(series.iter().flat_map(|(_, _, v)| v.iter().copied()).fold(0.0, f64::max) * 1.05);
    let lx: Vec<f64> = xs.iter().map(|x| x.max(1.0).log2()).collect();
    let (xmin, xmax) = (lx.iter().copied().fold(f64::INFINITY, f64::min), lx.iter().copied().fold(f64::NEG_INFINITY, f64::max));
    let span = if (xmax - xmin).abs() < 1e-9 { 1.0 } else { xmax - xmin };
    let px = |lx: f64| {
        if (xmax - xmin).abs() < 1e-9 {
            x0 + pw / 2.0
        } else {
            x0 + (lx - xmin) / span * pw
        }
    };
    let py = |y: f64| y0 + ph - y / ymax * ph;
    let _ = writeln!(s, r#"<text x="{}" y="{}" text-anchor="middle" font-size="13">{}</text>"#, x0 + pw / 2.0, y0 - 10.0, esc(title));
    let _ = writeln!(s, r##"<rect x="{x0}" y="{y0}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>"##);
    for i in 0..=5 {
        let y = ymax * i as f64 / 5.0;
        let yy = py(y);
        let _ = writeln!(s, r##"<line x1="{x0}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/>"##, x0 + pw);
        let label = if ymax >= 100.0 { format!("{y:.0}") } else { format!("{y:.2}") };
        let _ = writeln!(s, r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{label}</text>"#, x0 - 5.0, yy + 4.0);
    }
    for (x, l) in xs.iter().zip(&lx) {
        let xx = px(*l);
        let _ = writeln!(s, r##"<line x1="{xx:.1}" y1="{y0}" x2="{xx:.1}" y2="{:.1}" stroke="#eee"/>"##, y0 + ph);
        let _ = writeln!(s, r#"<text x="{xx:.1}" y="{:.1}" text-anchor="middle">{x}</text>"#, y0 + ph + 16.0);
    }
    let _ = writeln!(s, r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">concurrency (requests in flight)</text>"#, x0 + pw / 2.0, y0 + ph + 34.0);
    for (k, (name, color, v)) in series.iter().enumerate() {
        let pts: Vec<String> = lx.iter().zip(v).map(|(l, y)| format!("{:.1},{:.1}", px(*l), py(*y))).collect();
        let _ = writeln!(s, r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#, pts.join(" "));
        for p in &pts {
            let (cx, cy) = p.split_once(',').unwrap_or(("0", "0"));
            let _ = writeln!(s, r#"<circle cx="{cx}" cy="{cy}" r="3" fill="{color}"/>"#);
        }
        let ly = y0 + ph + 52.0 + 16.0 * k as f64;
        let _ = writeln!(s, r#"<line x1="{x0}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{color}" stroke-width="2"/>"#, ly - 4.0, x0 + 24.0, ly - 4.0);
        let _ = writeln!(s, r#"<text x="{:.1}" y="{ly:.1}">{}</text>"#, x0 + 30.0, esc(name));
    }
}

// ------------------------------------------------------------ main

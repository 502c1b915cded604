//! The closed-loop load driver: `concurrency` operations in flight,
//! warm-up then a measured window, latencies in an HDR histogram.

use crate::cli::Args;
use crate::cpu::{cpu_now, Cpu};
use hdrhistogram::Histogram;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::Handle;

pub(crate) type OpFuture = Pin<Box<dyn Future<Output = Result<u64, String>> + Send>>;

/// Send `req` and read the answer; anything but a 200 is an operation
/// error naming the status and the body.
pub(crate) async fn expect_200(req: reqwest::RequestBuilder) -> Result<impl AsRef<[u8]>, String> {
    let r = req.send().await.map_err(|e| format!("send: {e}"))?;
    let status = r.status();
    let body = r.bytes().await.map_err(|e| format!("body: {e}"))?;
    if status != 200 {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
    }
    Ok(body)
}
/// One operation number `n` → how many pushes it delivered (or an error).
pub(crate) type Op = Arc<dyn Fn(u64) -> OpFuture + Send + Sync>;

#[derive(Clone, Debug)]
pub(crate) struct Point {
    pub(crate) concurrency: usize,
    pub(crate) ops: u64,
    pub(crate) errors: u64,
    pub(crate) pushes: u64,
    pub(crate) secs: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p90_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
    pub(crate) cpu: Cpu,
    pub(crate) first_error: Option<String>,
}

impl Point {
    pub(crate) fn ops_per_s(&self) -> f64 {
        self.ops as f64 / self.secs
    }
    pub(crate) fn pushes_per_s(&self) -> f64 {
        self.pushes as f64 / self.secs
    }
    /// CPU seconds per 1000 successful operations.
    pub(crate) fn per_k(&self, cpu_s: f64) -> f64 {
        if self.ops == 0 {
            0.0
        } else {
            cpu_s * 1000.0 / self.ops as f64
        }
    }
}

pub(crate) struct Bounds {
    pub(crate) warmup: Duration,
    pub(crate) duration: Duration,
    pub(crate) max_ops: u64,
}

/// Run `op` with `concurrency` tasks on `rt` in a closed loop: warm-up, then
/// a measured window (latency histogram, counts, process CPU).
pub(crate) async fn closed_loop(rt: &Handle, concurrency: usize, b: &Bounds, op: Op) -> Point {
    let start = Instant::now();
    let measure_from = start + b.warmup;
    let end = measure_from + b.duration;
    let next = Arc::new(AtomicU64::new(0));
    let measured = Arc::new(AtomicU64::new(0));
    let max_ops = b.max_ops;
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (op, next, measured) = (op.clone(), next.clone(), measured.clone());
        tasks.push(rt.spawn(async move {
            let mut h = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("histogram");
            let (mut ok, mut errors, mut pushes, mut first_error) = (0u64, 0u64, 0u64, None);
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let in_window = t0 >= measure_from;
                if in_window && measured.fetch_add(1, Ordering::Relaxed) >= max_ops {
                    break;
                }
                let n = next.fetch_add(1, Ordering::Relaxed);
                let r = op(n).await;
                if in_window {
                    let us = t0.elapsed().as_micros().max(1) as u64;
                    match r {
                        Ok(p) => {
                            ok += 1;
                            pushes += p;
                            h.saturating_record(us);
                        }
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert(e);
                        }
                    }
                }
            }
            (h, ok, errors, pushes, first_error, Instant::now())
        }));
    }
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu0 = cpu_now();
    let t_measure = Instant::now();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("histogram");
    let mut p = Point {
        concurrency,
        ops: 0,
        errors: 0,
        pushes: 0,
        secs: 0.0,
        p50_ms: 0.0,
        p90_ms: 0.0,
        p99_ms: 0.0,
        max_ms: 0.0,
        cpu: Cpu::default(),
        first_error: None,
    };
    let mut last = t_measure;
    for t in tasks {
        let (h, ok, errors, pushes, first_error, finished) = t.await.expect("load task");
        hist.add(&h).expect("merge histograms");
        p.ops += ok;
        p.errors += errors;
        p.pushes += pushes;
        if p.first_error.is_none() {
            p.first_error = first_error;
        }
        last = last.max(finished);
    }
    p.cpu = cpu_now() - cpu0;
    p.secs = (last - t_measure).as_secs_f64().max(1e-9);
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    p.p50_ms = ms(0.50);
    p.p90_ms = ms(0.90);
    p.p99_ms = ms(0.99);
    p.max_ms = hist.max() as f64 / 1000.0;
    p
}

pub(crate) fn bounds(a: &Args) -> Bounds {
    Bounds {
        warmup: Duration::from_secs_f64(a.warmup_secs.max(0.0)),
        duration: Duration::from_secs_f64(a.duration_secs.max(0.1)),
        max_ops: a.calls.max(1),
    }
}

/// An open-loop point: what arriving at a fixed rate costs.
#[derive(Clone, Debug)]
pub(crate) struct OpenPoint {
    pub(crate) target_per_s: f64,
    pub(crate) achieved_per_s: f64,
    pub(crate) ops: u64,
    pub(crate) errors: u64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) p999_ms: f64,
    pub(crate) max_ms: f64,
    /// Arrivals not started because `MAX_IN_FLIGHT` were outstanding.
    pub(crate) dropped: u64,
    pub(crate) cpu: Cpu,
    /// The first error, as the operation reported it.
    pub(crate) first_error: Option<String>,
}

/// Outstanding operations an open-loop point allows before it counts
/// arrivals as dropped (so an overloaded relay cannot exhaust memory).
const MAX_IN_FLIGHT: u64 = 20_000;

/// Run `op` at `rate` arrivals per second for `duration` (after a warm-up of
/// `warmup` at the same rate), whatever the relay answers: each
/// operation's latency runs from its *scheduled* start, so queueing in the
/// relay shows up instead of slowing the generator down (no coordinated
/// omission).
pub(crate) async fn open_loop(rt: &Handle, rate: f64, warmup: Duration, duration: Duration, op: Op) -> OpenPoint {
    let interval = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let hist = Arc::new(std::sync::Mutex::new(Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("histogram")));
    let (ok, errors, in_flight) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let mut dropped = 0u64;
    let mut n = 0u64;
    let mut tasks = Vec::new();
    let mut cpu0 = None;
    loop {
        let scheduled = start + interval.mul_f64(n as f64);
        if scheduled >= end {
            break;
        }
        if scheduled > Instant::now() {
            tokio::time::sleep_until(scheduled.into()).await;
        }
        if cpu0.is_none() && scheduled >= measure_from {
            cpu0 = Some(cpu_now());
        }
        n += 1;
        if in_flight.load(Ordering::Relaxed) >= MAX_IN_FLIGHT {
            dropped += u64::from(scheduled >= measure_from);
            continue;
        }
        in_flight.fetch_add(1, Ordering::Relaxed);
        let (op, hist, ok, errors, in_flight, first_error) =
            (op.clone(), hist.clone(), ok.clone(), errors.clone(), in_flight.clone(), first_error.clone());
        let measured = scheduled >= measure_from;
        tasks.push(rt.spawn(async move {
            let r = op(n).await;
            in_flight.fetch_sub(1, Ordering::Relaxed);
            if measured {
                match r {
                    Ok(_) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        let us = scheduled.elapsed().as_micros().max(1) as u64;
                        hist.lock().expect("histogram lock").saturating_record(us);
                    }
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        first_error.lock().expect("error lock").get_or_insert(e);
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let cpu = cpu_now() - cpu0.unwrap_or_else(cpu_now);
    let h = hist.lock().expect("histogram lock");
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let ops = ok.load(Ordering::Relaxed);
    let first_error = first_error.lock().expect("error lock").take();
    OpenPoint {
        target_per_s: rate,
        achieved_per_s: ops as f64 / duration.as_secs_f64(),
        ops,
        errors: errors.load(Ordering::Relaxed),
        p50_ms: ms(0.50),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: h.max() as f64 / 1000.0,
        dropped,
        cpu,
        first_error,
    }
}

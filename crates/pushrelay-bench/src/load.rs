//! The closed-loop load driver: `concurrency` operations in flight,
//! warm-up then a measured window, latencies in an HDR histogram.

#[allow(unused_imports)]
use crate::*;

pub(crate) type OpFuture = Pin<Box<dyn Future<Output = Result<u64, String>> + Send>>;
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

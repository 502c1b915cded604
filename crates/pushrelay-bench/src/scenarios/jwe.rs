//! `jwe`: micro-benchmarks of the codec and the payload.

use crate::cli::{Args, Scenario};
use crate::setup::{call_event, make_devices, registration, PASSWORD};
use pushrelay::domain::PushKey;
use pushrelay::payload::{self};
use std::fmt::Write as _;
use std::hint::black_box;
use std::time::Instant;

/// ns per call of `f`, over `iters` iterations (after iters/10 warm-up).
pub(crate) fn time_ns<T>(iters: u64, mut f: impl FnMut(u64) -> T) -> f64 {
    for i in 0..(iters / 10).max(1) {
        black_box(f(black_box(i)));
    }
    let t = Instant::now();
    for i in 0..iters {
        black_box(f(black_box(i)));
    }
    t.elapsed().as_nanos() as f64 / iters as f64
}

pub(crate) fn run_jwe(a: &Args) -> anyhow::Result<()> {
    use pushrelay::envelope::MasterKey;
    use pushrelay::jwe;
    use pushrelay::payload::v2;
    let iters = a.iterations.max(10);
    let key_bytes: [u8; 32] = rand::random();
    let key = PushKey::from_bytes(key_bytes);
    let event = call_event("u000001", Some("dev-000001"), 1);
    let plaintext = v2::build(&event);
    let compact = jwe::encrypt(&key, &plaintext);
    let reg = registration(&make_devices(Scenario::Apns, 1)[0])?;
    let master = pushrelay::envelope::Keyring::new(MasterKey::generate());
    let sealed = master.seal("device:u000001/dev-000001", key.to_b64().as_bytes());
    let hash = pushrelay::http::auth::hash_password(PASSWORD)?;
    println!(
        "jwe: V2 payload {} bytes plaintext, compact JWE {} bytes, APNs body {} bytes; {iters} iterations per round, 3 rounds (Argon2: 30 per round)",
        plaintext.len(),
        compact.len(),
        v2::apns_body(&compact).len()
    );
    let argon_iters = 30u64;
    // Each row: three rounds; the best (least disturbed) and the median are reported.
    let rounds = |mut f: Box<dyn FnMut() -> f64 + '_>| -> [f64; 3] {
        let mut r = [f(), f(), f()];
        r.sort_by(|x, y| x.total_cmp(y));
        r
    };
    let rows: Vec<(&str, u64, [f64; 3])> = vec![
        ("v2::build (V2 JSON)", iters, rounds(Box::new(|| time_ns(iters, |_| v2::build(&event))))),
        ("jwe::encrypt (random IV)", iters, rounds(Box::new(|| time_ns(iters, |_| jwe::encrypt(&key, &plaintext))))),
        (
            "jwe::encrypt_with_iv (no RNG)",
            iters,
            rounds(Box::new(|| {
                time_ns(iters, |i| {
                    let mut iv = [0u8; 12];
                    iv[..8].copy_from_slice(&i.to_le_bytes());
                    jwe::encrypt_with_iv(&key, iv, &plaintext)
                })
            })),
        ),
        ("jwe::decrypt", iters, rounds(Box::new(|| time_ns(iters, |_| jwe::decrypt(&compact, &key_bytes).expect("decrypt"))))),
        (
            "payload::for_call (build+encrypt+wrap)",
            iters,
            rounds(Box::new(|| time_ns(iters, |_| payload::for_call(&event, &reg, pushrelay::domain::Shape::Apns)))),
        ),
        (
            "envelope open (device key, per call)",
            iters,
            rounds(Box::new(|| time_ns(iters, |_| master.open_string("device:u000001/dev-000001", &sealed).expect("open")))),
        ),
        (
            "argon2 verify (default params, per UDS PUT)",
            argon_iters,
            rounds(Box::new(|| time_ns(argon_iters, |_| pushrelay::http::auth::verify_password(PASSWORD, &hash)))),
        ),
    ];
    println!("{:<46} {:>10} {:>12} {:>12} {:>14}", "operation", "iters", "best ns/op", "median ns", "ops/s (best)");
    let mut csv = String::from("operation,iterations,best_ns_per_op,median_ns_per_op,worst_ns_per_op,ops_per_s_one_core_best\n");
    for (name, n, r) in rows {
        println!("{name:<46} {n:>10} {:>12.0} {:>12.0} {:>14.0}", r[0], r[1], 1e9 / r[0]);
        let _ = writeln!(csv, "\"{name}\",{n},{:.1},{:.1},{:.1},{:.1}", r[0], r[1], r[2], 1e9 / r[0]);
    }
    std::fs::create_dir_all(&a.out)?;
    let path = a.out.join(format!("jwe{}.csv", a.tag));
    std::fs::write(&path, csv)?;
    println!("wrote {}", path.display());
    Ok(())
}

// ------------------------------------------------------------ SVG chart

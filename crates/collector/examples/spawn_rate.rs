//! The machine's raw fork+exec rate: `concurrency` threads each running `/bin/true` (or the
//! given program) and waiting for it, as fast as they can, for `seconds`. Prints one JSON line
//! `{"runs", "seconds", "rate"}`. The baseline of `tests/bench/collector.py`.
//!
//! `cargo run --release -p collector --example spawn_rate -- 4 5 [/bin/true]`

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let mut args = std::env::args().skip(1);
    let concurrency: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(4);
    let seconds: f64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(5.0);
    let program = args.next().unwrap_or_else(|| "/bin/true".to_string());
    let runs = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let threads: Vec<_> = (0..concurrency)
        .map(|_| {
            let (runs, program) = (runs.clone(), program.clone());
            std::thread::spawn(move || {
                while Instant::now() < deadline {
                    let ok = Command::new(&program)
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .is_ok_and(|s| s.success());
                    if ok {
                        runs.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let n = runs.load(Ordering::Relaxed);
    println!(
        "{{\"runs\": {n}, \"seconds\": {elapsed:.3}, \"rate\": {:.1}}}",
        n as f64 / elapsed
    );
}

//! Data points per second through the reflection tree against the linear scan it replaces,
//! over the same rules, in the same run. Prints a markdown table.
//!
//! `cargo bench -p reflector --bench tree` (`IRONWORK_BENCH_RULES`, default 10000;
//! `IRONWORK_BENCH_POINTS`, default 200000).
//!
//! The rules look like an operator's: 200 plugins × collections × items, mostly exact names,
//! one in ten with a glob on the item, one in twenty with a regex on the target, a third with a
//! value threshold, a few with tag conditions. The points are drawn from the same names.

use std::collections::BTreeMap;
use std::time::Instant;

use reflector::tree::{Compare, Condition, Matcher, Subject, Tree};

/// A small deterministic generator (xorshift), so every run measures the same rules and points.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let rules = env("IRONWORK_BENCH_RULES", 10_000);
    let points = env("IRONWORK_BENCH_POINTS", 200_000);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let m = |s: String| Matcher::parse(&s).unwrap_or(Matcher::Any);
    let mut defs = Vec::with_capacity(rules);
    for _ in 0..rules {
        let plugin = format!("p{}", rng.below(200));
        let collection = format!("c{}", rng.below(5));
        let item = if rng.below(10) == 0 {
            format!("m{}.*", rng.below(20))
        } else {
            format!("m{}.v{}", rng.below(20), rng.below(10))
        };
        let target = if rng.below(20) == 0 {
            "~^host-1".to_string()
        } else {
            "*".to_string()
        };
        let value = if rng.below(3) == 0 {
            vec![Compare::Gt(rng.below(100) as f64)]
        } else {
            Vec::new()
        };
        let tags = if rng.below(10) == 0 {
            vec![("dc".to_string(), m(format!("dc{}", rng.below(3))))]
        } else {
            Vec::new()
        };
        let c = Condition {
            route: [m(plugin), m(collection), m(item), m(target)],
            tags,
            present: Vec::new(),
            value,
        };
        defs.push((c, false));
    }
    let built = Instant::now();
    let tree = Tree::build(defs);
    let build_ms = built.elapsed().as_secs_f64() * 1000.0;
    let subjects: Vec<([String; 4], BTreeMap<String, String>, f64)> = (0..points)
        .map(|_| {
            (
                [
                    format!("p{}", rng.below(200)),
                    format!("c{}", rng.below(5)),
                    format!("m{}.v{}", rng.below(20), rng.below(10)),
                    format!("host-{}", rng.below(50)),
                ],
                BTreeMap::from([("dc".to_string(), format!("dc{}", rng.below(3)))]),
                rng.below(100) as f64,
            )
        })
        .collect();
    let subject = |i: usize| {
        let (f, tags, v) = &subjects[i % subjects.len()];
        Subject {
            plugin: &f[0],
            collection: &f[1],
            item: &f[2],
            target: &f[3],
            tags,
            value: Some(*v),
        }
    };
    let mut matched = 0usize;
    let t = Instant::now();
    for i in 0..points {
        matched += tree.lookup(&subject(i)).len();
    }
    let tree_rate = points as f64 / t.elapsed().as_secs_f64();
    // The scan is slow: a tenth of the points is plenty for a rate.
    let scan_points = (points / 10).max(1);
    let mut scanned = 0usize;
    let t = Instant::now();
    for i in 0..scan_points {
        scanned += tree.scan(&subject(i)).len();
    }
    let scan_rate = scan_points as f64 / t.elapsed().as_secs_f64();
    // Both found the same matches on the points both saw.
    let check: usize = (0..scan_points).map(|i| tree.lookup(&subject(i)).len()).sum();
    assert_eq!(check, scanned, "tree and scan disagree");
    println!("| {rules} reflections (tree built in {build_ms:.1} ms) | points/s |");
    println!("|---|---:|");
    println!("| linear scan | {scan_rate:.0} |");
    println!("| reflection tree | {tree_rate:.0} |");
    println!("| **tree / scan** | **{:.0}×** |", tree_rate / scan_rate);
    println!("\n(matches per point: {:.2})", matched as f64 / points as f64);
}

//! Queue throughput against a private redis-server, side by side with `redis-benchmark -t
//! lpush,rpop -P 100` on the same server in the same run. Prints a markdown table.
//!
//! `cargo bench -p ironwork-core --bench queue` (set `IRONWORK_BENCH_N` to change the message count).

use std::process::Command;
use std::time::{Duration, Instant};

use ironwork_core::{BoundedProducer, Queue, Redis, ReliableConsumer};
use ironwork_test_support::RedisServer;

/// redis-benchmark's default payload is 3 bytes; ours matches so the ratio compares like with like.
const PAYLOAD: &[u8] = b"xxx";

fn redis_benchmark(server: &RedisServer, n: usize, clients: usize) -> Vec<(String, f64)> {
    let out = Command::new("redis-benchmark")
        .arg("-s")
        .arg(server.socket_path())
        .args([
            "-t",
            "lpush,rpop",
            "-P",
            "100",
            "-n",
            &n.to_string(),
            "-c",
            &clients.to_string(),
            "--csv",
        ])
        .output()
        .expect("redis-benchmark runs (apt-get install -y redis-tools)");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split(',').map(|c| c.trim_matches('"')).collect();
            Some((cols.first()?.to_string(), cols.get(1)?.parse().ok()?))
        })
        .collect()
}

async fn timed<F, Fut>(n: usize, f: F) -> f64
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let start = Instant::now();
    f().await;
    n as f64 / start.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n: usize = std::env::var("IRONWORK_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let single_n = n / 10;
    let server = RedisServer::start();
    let redis = Redis::open(&server.url()).expect("open");
    let q = Queue::new(&redis, "bench");
    let batch: Vec<&[u8]> = vec![PAYLOAD; 100];

    // redis-benchmark's default 50 clients (the baseline), and one client for context.
    let peer = redis_benchmark(&server, n, 50);
    let peer_one = redis_benchmark(&server, n, 1);
    let rate = |table: &[(String, f64)], name: &str| {
        table
            .iter()
            .find(|(t, _)| t == name)
            .map(|(_, r)| *r)
            .unwrap_or(f64::NAN)
    };
    let peer_rate = |name: &str| rate(&peer, name);
    server.cli(&["DEL", "mylist"]);

    let push_single = timed(single_n, || async {
        for _ in 0..single_n {
            q.push(PAYLOAD).await.expect("push");
        }
    })
    .await;
    let pop_single = timed(single_n, || async {
        for _ in 0..single_n {
            q.pop_batch(1, Duration::ZERO).await.expect("pop");
        }
    })
    .await;
    let push_batched = timed(n, || async {
        for _ in 0..n / 100 {
            q.push_batch(&batch).await.expect("push");
        }
    })
    .await;
    let pop_batched = timed(n, || async {
        for _ in 0..n / 100 {
            q.pop_batch(100, Duration::ZERO).await.expect("pop");
        }
    })
    .await;
    let producer = BoundedProducer::new(q.clone(), (n as u64) * 2);
    let bounded_batched = timed(n, || async {
        for _ in 0..n / 100 {
            producer.push_batch(&batch).await.expect("push");
        }
    })
    .await;
    let consumer = ReliableConsumer::new(q.clone(), "bench").expect("consumer");
    let reliable_batched = timed(n, || async {
        for _ in 0..n / 100 {
            let got = consumer.pop_batch(100, Duration::ZERO).await.expect("pop");
            consumer.ack(&got).await.expect("ack");
        }
    })
    .await;
    assert!(q.is_empty().await.expect("len"), "every message popped");

    // The same batched paths from several tasks sharing the daemon's one multiplexed connection,
    // as a daemon's workers do; redis-benchmark above runs 50 clients.
    let tasks = 8;
    let per_task = n / 100 / tasks;
    let push_concurrent = timed(n, || async {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..tasks {
            let (q, batch) = (q.clone(), batch.clone());
            set.spawn(async move {
                for _ in 0..per_task {
                    q.push_batch(&batch).await.expect("push");
                }
            });
        }
        set.join_all().await;
    })
    .await;
    let pop_concurrent = timed(n, || async {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..tasks {
            let q = q.clone();
            set.spawn(async move {
                for _ in 0..per_task {
                    q.pop_batch(100, Duration::ZERO).await.expect("pop");
                }
            });
        }
        set.join_all().await;
    })
    .await;
    assert!(q.is_empty().await.expect("len"), "every message popped");

    let (lpush, rpop) = (peer_rate("LPUSH"), peer_rate("RPOP"));
    println!("| path | messages/s | vs redis-benchmark -P 100 |");
    println!("|---|---:|---:|");
    println!("| redis-benchmark LPUSH -P 100 (50 clients) | {lpush:.0} | 1.00 |");
    println!("| redis-benchmark RPOP -P 100 (50 clients) | {rpop:.0} | 1.00 |");
    for name in ["LPUSH", "RPOP"] {
        let r = rate(&peer_one, name);
        let base = if name == "LPUSH" { lpush } else { rpop };
        println!(
            "| redis-benchmark {name} -P 100 (1 client) | {r:.0} | {:.2} |",
            r / base
        );
    }
    for (name, rate, base) in [
        ("Queue::push (single, 1 task)", push_single, lpush),
        ("Queue::pop_batch(1) (1 task)", pop_single, rpop),
        ("Queue::push_batch(100) (1 task)", push_batched, lpush),
        ("Queue::pop_batch(100) (1 task)", pop_batched, rpop),
        ("BoundedProducer::push_batch(100) (1 task)", bounded_batched, lpush),
        (
            "ReliableConsumer::pop_batch(100) + ack (1 task)",
            reliable_batched,
            rpop,
        ),
        ("Queue::push_batch(100) (8 tasks)", push_concurrent, lpush),
        ("Queue::pop_batch(100) (8 tasks)", pop_concurrent, rpop),
    ] {
        println!("| {name} | {rate:.0} | {:.2} |", rate / base);
    }
}

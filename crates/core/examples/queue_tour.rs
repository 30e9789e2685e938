//! A tour of the queue library on a private Redis (unix socket in a temp dir):
//! a Metwork step event goes through a reliable consumer, a malformed one is dead-lettered,
//! and a consumer "killed" mid-batch has its messages recovered.
//!
//! `cargo run -p ironwork-core --example queue_tour`

use std::time::Duration;

use ironwork_core::messages::{epoch_seconds, names, FileEvent, StepEvent};
use ironwork_core::{Queue, Redis, ReliableConsumer};
use ironwork_test_support::RedisServer;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    ironwork_core::telemetry::init("queue_tour", ironwork_core::telemetry::LogFormat::Human)?;
    let server = RedisServer::start();
    println!("redis-server on {}", server.socket_path().display());
    let redis = Redis::open(&server.url())?;
    let queue = Queue::new(&redis, names::step_queue("demo", "main"));

    let event = StepEvent {
        directory: "/tmp/var/in/step.demo.main".into(),
        filename: "report.csv".into(),
        event: FileEvent::Created,
        event_timestamp: epoch_seconds(),
    };
    let wire = event.to_metwork_json();
    println!("LPUSH {} {}", queue.name(), String::from_utf8_lossy(&wire));
    queue.push_batch(&[wire, b"{garbage".to_vec()]).await?;

    let worker = ReliableConsumer::new(queue.clone(), "host.0")?;
    let batch = worker.pop_batch(10, Duration::from_secs(1)).await?;
    println!("popped {} message(s) into {}", batch.len(), worker.processing_name());
    for (delivery, ev) in worker.decode::<StepEvent>(batch, 1000).await? {
        println!("processing {}/{} ({:?})", ev.directory, ev.filename, ev.event);
        worker.ack(&[delivery]).await?;
    }
    println!(
        "dead letters: {}",
        server.cli(&["LRANGE", queue.dead_name(), "0", "-1"]).trim()
    );

    queue
        .push(b"{\"directory\": \"/d\", \"filename\": \"f\", \"event\": \"exists\", \"event_timestamp\": 1.0}")
        .await?;
    let lost = worker.pop_batch(1, Duration::from_secs(1)).await?;
    println!("popped {} and crashed before acking", lost.len());
    drop(worker);
    let restarted = ReliableConsumer::new(queue.clone(), "host.0")?;
    println!(
        "restarted worker recovered {} in-flight message(s)",
        restarted.recover().await?
    );
    let again = restarted.pop_batch(10, Duration::ZERO).await?;
    restarted.ack(&again).await?;
    println!(
        "processed {} again; queue {} / in flight {} / dead {}",
        again.len(),
        queue.len().await?,
        restarted.in_flight().await?,
        queue.dead_len().await?
    );
    Ok(())
}

//! The baseline of the end-to-end bench (`tests/bench/reflector.py`): the same points written
//! to InfluxDB by a plain batched HTTP client, no Redis, no reflector. It reads
//! `collector.data.queue` messages (one JSON per line), maps every point as the bench's
//! `push_metrics` reflection does, then (timed) encodes and POSTs them in batches, one after
//! the other, through the same HTTP write code the sender uses.
//!
//! Usage: `plain_writer <messages.jsonl> <host> <port> <database> <batch size>`; prints
//! `{"points": N, "seconds": S}`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use reflector::influx::{body, Api, Endpoint};
use reflector::point::DataRef;
use reflector::reflection::{metric, MetricMap};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let [_, path, host, port, db, batch] = &args[..] else {
        return Err("usage: plain_writer <messages.jsonl> <host> <port> <database> <batch size>".into());
    };
    let port: u16 = port.parse().map_err(|e| format!("port: {e}"))?;
    let batch: usize = batch.parse().map_err(|e| format!("batch: {e}"))?;
    let map = MetricMap {
        name: "{name}".into(),
        host: "{target}".into(),
        field: "value".into(),
        database: None,
        tags: BTreeMap::new(),
    };
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let mut points = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let data: DataRef<'_> = serde_json::from_str(line).map_err(|e| e.to_string())?;
        points.extend(
            data.points
                .iter()
                .filter_map(|p| metric(&data, p, &map).map(|m| m.to_owned_point())),
        );
    }
    let endpoint = Endpoint {
        host: host.clone(),
        port,
        api: Api::V1 {
            db: db.clone(),
            rp: None,
            auth: None,
        },
        timeout: Duration::from_secs(30),
    };
    let start = Instant::now();
    for chunk in points.chunks(batch) {
        endpoint.write(body(chunk).0).await.map_err(|e| e.to_string())?;
    }
    let seconds = start.elapsed().as_secs_f64();
    println!("{{\"points\": {}, \"seconds\": {seconds}}}", points.len());
    Ok(())
}

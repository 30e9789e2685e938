//! One metric server as the sender sees it: what it accepts, one send, and whether it is down.
//!
//! Every configured endpoint receives every point. An endpoint whose send failed through all
//! its retries is *down*: batches for it go straight to the unsent backup, and at most one
//! single-attempt probe per `metrics_send_retry_interval` (a new batch, or the leader resending
//! the backlog) checks whether it is back.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hyper::body::Bytes;
use ironwork_core::messages::FieldValue;

use crate::config::{ServerType, Settings};
use crate::influx::{Api, Endpoint, WriteError};
use crate::line_protocol::encode;
use crate::point::Point;
use crate::zabbix::{self, Item};

/// Why a send did not land.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The server could not be reached or was busy: keep the batch for a resend.
    Unreachable(String),
    /// The server refused the data itself: a resend would be refused too.
    Refused(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreachable(e) => write!(f, "unreachable: {e}"),
            Self::Refused(e) => write!(f, "refused: {e}"),
        }
    }
}

/// What a delivered send reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Delivered {
    /// Values the server said it could not store (Zabbix: unknown host or key; the protocol
    /// does not say which).
    pub failed_items: u64,
}

#[derive(Debug)]
enum Kind {
    Influx(Endpoint),
    Zabbix { host: String, port: u16, timeout: Duration },
}

#[derive(Debug, Default)]
struct Health {
    down_since: Option<Instant>,
    last_probe: Option<Instant>,
}

/// One metric server.
#[derive(Debug)]
pub struct Destination {
    /// `host:port`, the name unsent batches carry.
    pub name: String,
    kind: Kind,
    health: Mutex<Health>,
}

impl Destination {
    /// Every endpoint of `settings`.
    pub fn all(settings: &Settings) -> Vec<Destination> {
        settings
            .endpoints
            .iter()
            .map(|(host, port)| {
                let kind = match &settings.server_type {
                    ServerType::InfluxDb(api) => Kind::Influx(Endpoint {
                        host: host.clone(),
                        port: *port,
                        api: api.clone(),
                        timeout: settings.connect_timeout,
                    }),
                    ServerType::Zabbix => Kind::Zabbix {
                        host: host.clone(),
                        port: *port,
                        timeout: settings.connect_timeout,
                    },
                };
                Destination {
                    name: format!("{host}:{port}"),
                    kind,
                    health: Mutex::default(),
                }
            })
            .collect()
    }

    /// Whether it is down and not due for a probe: a send now would be a waste.
    pub fn resting(&self, retry_interval: Duration) -> bool {
        let h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        h.down_since.is_some() && h.last_probe.is_some_and(|t| t.elapsed() < retry_interval)
    }

    /// Whether the last send failed through its retries.
    pub fn is_down(&self) -> bool {
        self.health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .down_since
            .is_some()
    }

    /// Record the outcome of a send.
    pub fn record(&self, ok: bool) {
        let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        h.last_probe = Some(Instant::now());
        match (ok, h.down_since) {
            (true, Some(since)) => {
                tracing::info!(endpoint = %self.name, down_for = ?since.elapsed(), "metric server answers again");
                h.down_since = None;
            }
            (false, None) => {
                tracing::warn!(endpoint = %self.name, "metric server down: batches go to the unsent backup until it answers");
                h.down_since = Some(Instant::now());
            }
            _ => {}
        }
    }

    /// Send a prepared batch once.
    pub async fn send(&self, batch: &Prepared) -> Result<Delivered, Failure> {
        match (&self.kind, &batch.payload) {
            (Kind::Influx(endpoint), Payload::Influx(bodies)) => {
                // One write per database; every database is tried. A server that is away wins
                // over a refusal: the whole batch is then kept and resent (writes are idempotent).
                let mut worst: Option<Failure> = None;
                for (db, body) in bodies {
                    let result = match db {
                        None => endpoint.write(body.clone()).await,
                        Some(db) => {
                            let mut e = endpoint.clone();
                            e.api = match e.api {
                                Api::V1 { rp, auth, .. } => Api::V1 {
                                    db: db.clone(),
                                    rp,
                                    auth,
                                },
                                Api::V2 { org, token, .. } => Api::V2 {
                                    org,
                                    bucket: db.clone(),
                                    token,
                                },
                            };
                            e.write(body.clone()).await
                        }
                    };
                    match result {
                        Ok(()) => {}
                        Err(WriteError::Retry(e)) => {
                            if !matches!(worst, Some(Failure::Unreachable(_))) {
                                worst = Some(Failure::Unreachable(e));
                            }
                        }
                        Err(WriteError::Refused(e)) => {
                            if worst.is_none() {
                                worst = Some(Failure::Refused(e));
                            }
                        }
                    }
                }
                worst.map_or(Ok(Delivered::default()), Err)
            }
            (Kind::Zabbix { host, port, timeout }, Payload::Zabbix(items)) => {
                let now = ironwork_core::messages::epoch_seconds();
                let sent_at = Some((now as i64, (now.fract() * 1e9) as u32));
                match zabbix::send(host, *port, items, sent_at, *timeout).await {
                    Ok(outcome) => Ok(Delivered {
                        failed_items: outcome.failed,
                    }),
                    Err(zabbix::SendError::Unreachable(e)) => Err(Failure::Unreachable(e)),
                    Err(zabbix::SendError::Answer(e)) => Err(Failure::Refused(e.to_string())),
                }
            }
            _ => Err(Failure::Refused("batch prepared for another server type".into())),
        }
    }
}

/// What a batch becomes on the wire, computed once for every endpoint.
#[derive(Debug)]
enum Payload {
    /// Line protocol per database (`None`: the endpoint's own).
    Influx(Vec<(Option<String>, Bytes)>),
    /// Trapper items.
    Zabbix(Vec<Item>),
}

/// A batch encoded once for every endpoint.
#[derive(Debug)]
pub struct Prepared {
    payload: Payload,
}

impl Prepared {
    /// Encode `points` for servers of `server_type`. Returns the batch and the points that
    /// cannot be sent (by index) with the reason; those are left out.
    pub fn new<P: Point>(server_type: &ServerType, points: &[P]) -> (Self, Vec<(usize, String)>) {
        let mut bad = Vec::new();
        let payload = match server_type {
            ServerType::InfluxDb(_) => {
                let mut bodies: BTreeMap<Option<&str>, String> = BTreeMap::new();
                let mut line = String::with_capacity(128);
                let size = points.len() * 100;
                for (i, p) in points.iter().enumerate() {
                    line.clear();
                    match encode(p, &mut line) {
                        Ok(()) => bodies
                            .entry(p.database())
                            .or_insert_with(|| String::with_capacity(size))
                            .push_str(&line),
                        Err(e) => bad.push((i, e.to_string())),
                    }
                }
                Payload::Influx(
                    bodies
                        .into_iter()
                        .map(|(db, b)| (db.map(str::to_string), Bytes::from(b)))
                        .collect(),
                )
            }
            ServerType::Zabbix => {
                let mut items = Vec::with_capacity(points.len());
                for (i, p) in points.iter().enumerate() {
                    match zabbix_item(p) {
                        Ok(item) => items.push(item),
                        Err(e) => bad.push((i, e)),
                    }
                }
                Payload::Zabbix(items)
            }
        };
        (Self { payload }, bad)
    }

    /// Whether nothing is left to send.
    pub fn is_empty(&self) -> bool {
        match &self.payload {
            Payload::Influx(bodies) => bodies.is_empty(),
            Payload::Zabbix(items) => items.is_empty(),
        }
    }
}

/// The Zabbix item of a point: host from the `host` tag, key from the name, the `value` field
/// (or the only field) as text, clock and ns from the timestamp.
pub fn zabbix_item(p: &impl Point) -> Result<Item, String> {
    let host = p.tag("host").ok_or("no host tag (the Zabbix host)")?;
    let value = match p.fields().find(|(k, _)| *k == "value") {
        Some((_, v)) => v,
        None if p.field_count() == 1 => p.fields().next().map(|(_, v)| v).ok_or("no field")?,
        None => return Err("no value field (and more than one field)".into()),
    };
    let value = match value {
        FieldValue::Int(i) => i.to_string(),
        FieldValue::Float(f) => f.to_string(),
        FieldValue::Bool(b) => u8::from(*b).to_string(),
        FieldValue::Str(s) => s.clone(),
    };
    if p.name().is_empty() || host.is_empty() {
        return Err("empty item key or host".into());
    }
    let ts = p.timestamp_ns();
    Ok(Item {
        host: host.to_string(),
        key: p.name().to_string(),
        value,
        clock: Some(ts.div_euclid(1_000_000_000)),
        ns: Some(ts.rem_euclid(1_000_000_000) as u32),
    })
}

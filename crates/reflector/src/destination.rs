//! One metric server as the sender sees it: what it accepts, one send, and whether it is down.
//!
//! Every configured endpoint receives every point. An endpoint whose send failed through all
//! its retries is *down*: batches for it go straight to the unsent backup, and at most one
//! single-attempt probe per `metrics_send_retry_interval` (a new batch, or the leader resending
//! the backlog) checks whether it is back.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ironwork_core::messages::{FieldValue, MetricPoint};

use crate::config::{ServerType, Settings};
use crate::influx::{Api, Endpoint, WriteError};
use crate::line_protocol::encode;
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

    /// Send `points` once.
    pub async fn send(&self, points: &[MetricPoint]) -> Result<Delivered, Failure> {
        match &self.kind {
            Kind::Influx(endpoint) => {
                // One write per database (points may name their own).
                let mut by_db: BTreeMap<Option<&str>, Vec<&MetricPoint>> = BTreeMap::new();
                for p in points {
                    by_db.entry(p.database.as_deref()).or_default().push(p);
                }
                for (db, points) in by_db {
                    let mut body = String::with_capacity(points.len() * 80);
                    for p in points {
                        // Points were checked on the way in; one that still cannot be written is skipped.
                        let _ = encode(p, &mut body);
                    }
                    let result = match db {
                        None => endpoint.write(body).await,
                        Some(db) => {
                            let mut e = endpoint.clone();
                            e.api = match e.api {
                                Api::V1 { rp, auth, .. } => Api::V1 {
                                    db: db.to_string(),
                                    rp,
                                    auth,
                                },
                                Api::V2 { org, token, .. } => Api::V2 {
                                    org,
                                    bucket: db.to_string(),
                                    token,
                                },
                            };
                            e.write(body).await
                        }
                    };
                    result.map_err(|e| match e {
                        WriteError::Retry(e) => Failure::Unreachable(e),
                        WriteError::Refused(e) => Failure::Refused(e),
                    })?;
                }
                Ok(Delivered::default())
            }
            Kind::Zabbix { host, port, timeout } => {
                let items: Vec<Item> = points.iter().filter_map(|p| zabbix_item(p).ok()).collect();
                let now = ironwork_core::messages::epoch_seconds();
                let sent_at = Some((now as i64, ((now.fract()) * 1e9) as u32));
                match zabbix::send(host, *port, &items, sent_at, *timeout).await {
                    Ok(outcome) => Ok(Delivered {
                        failed_items: outcome.failed,
                    }),
                    Err(zabbix::SendError::Unreachable(e)) => Err(Failure::Unreachable(e)),
                    Err(zabbix::SendError::Answer(e)) => Err(Failure::Refused(e.to_string())),
                }
            }
        }
    }
}

/// Whether `point` can be sent to servers of `server_type`; the reason when it cannot.
pub fn check(server_type: &ServerType, point: &MetricPoint, scratch: &mut String) -> Result<(), String> {
    match server_type {
        ServerType::InfluxDb(_) => {
            scratch.clear();
            encode(point, scratch).map_err(|e| e.to_string())
        }
        ServerType::Zabbix => zabbix_item(point).map(drop),
    }
}

/// The Zabbix item of a point: host from the `host` tag, key from the name, the `value` field
/// (or the only field) as text, clock and ns from the timestamp.
pub fn zabbix_item(p: &MetricPoint) -> Result<Item, String> {
    let host = p.tags.get("host").ok_or("no host tag (the Zabbix host)")?;
    let value = match (p.fields.get("value"), p.fields.len()) {
        (Some(v), _) => v,
        (None, 1) => p.fields.values().next().ok_or("no field")?,
        _ => return Err("no value field (and more than one field)".into()),
    };
    let value = match value {
        FieldValue::Int(i) => i.to_string(),
        FieldValue::Float(f) => f.to_string(),
        FieldValue::Bool(b) => u8::from(*b).to_string(),
        FieldValue::Str(s) => s.clone(),
    };
    if p.name.is_empty() || host.is_empty() {
        return Err("empty item key or host".into());
    }
    Ok(Item {
        host: host.clone(),
        key: p.name.clone(),
        value,
        clock: Some(p.timestamp_ns.div_euclid(1_000_000_000)),
        ns: Some(p.timestamp_ns.rem_euclid(1_000_000_000) as u32),
    })
}

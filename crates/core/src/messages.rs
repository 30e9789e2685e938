//! The payload of every queue in the architecture, defined once for producer and consumer.
//!
//! Step events are byte-compatible with Metwork's directory_observer: the same keys in the same
//! order, written the way Python's `json.dumps` writes them (`", "` and `": "` separators, non-ASCII
//! escaped as `\uXXXX`), so Python consumers and tools that compare bytes see no difference.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Queue and channel names, and the rules that derive related key names.
pub mod names {
    /// Prefix of the step queues: `step.<plugin>.<step>`.
    pub const STEP_PREFIX: &str = "step";
    /// Commands for the supervisor.
    pub const RINGMASTER_CONTROL: &str = "ringmaster.control";
    /// Pub/sub channel of supervisor lifecycle events.
    pub const RINGMASTER_EVENTS: &str = "ringmaster.events";
    /// Due collection jobs.
    pub const COLLECTOR_JOB: &str = "collector.job.queue";
    /// Collected data on its way to the reflector.
    pub const COLLECTOR_DATA: &str = "collector.data.queue";
    /// Capped copy of collected data for operators.
    pub const COLLECTOR_DATA_SNIFFER: &str = "collector.data.sniffer.queue";
    /// Metric points waiting for the sender.
    pub const METRICS_SEND: &str = "metrics.send.queue";
    /// Batches the sender delivered.
    pub const METRICS_SENT_QUEUE: &str = "metrics.sent.queue";
    /// Batches the sender could not deliver.
    pub const METRICS_UNSENT_QUEUE: &str = "metrics.unsent.queue";
    /// Sorted set (score = epoch seconds) of delivered batches.
    pub const METRICS_SENT: &str = "metrics.sent";
    /// Sorted set (score = epoch seconds) of undelivered batches.
    pub const METRICS_UNSENT: &str = "metrics.unsent";
    /// Hash: collections disabled through the agent API, `<plugin>.<collection>` → epoch seconds
    /// at which they enable themselves again.
    pub const COLLECTOR_DISABLED: &str = "collector.disabled";
    /// The collection manager's leader lease.
    pub const COLLECTOR_LEASE: &str = "collector.manager.lease";
    /// The reflector's leader lease (resend of the unsent backlog, expiry jobs).
    pub const REFLECTOR_LEASE: &str = "reflector.leader.lease";
    /// Prefix of the reflector's cache keys:
    /// `reflector.cache.<plugin>.<collection>.<target>.<name>[,<tag>=<value>…]`.
    pub const REFLECTOR_CACHE_PREFIX: &str = "reflector.cache.";

    /// `collector.running.<plugin>.<collection>.<target>`: present (with a TTL) while a run of
    /// that collection against that target is in progress anywhere, so overlapping runs are skipped.
    pub fn collector_running(plugin: &str, collection: &str, target: &str) -> String {
        format!("collector.running.{plugin}.{collection}.{target}")
    }

    /// Counter: jobs the collection managers enqueued, in total (`INCRBY`).
    pub const COLLECTOR_JOBS_ENQUEUED: &str = "collector.jobs.enqueued";
    /// Counter: points the reflectors' senders delivered, in total.
    pub const METRICS_POINTS_SENT: &str = "metrics.points.sent";
    /// Counter: points they could not deliver (kept in `metrics.unsent`), in total.
    pub const METRICS_POINTS_UNSENT: &str = "metrics.points.unsent";

    /// String key: conf_monitor's last verdict, `{"ok", "time", "errors", "changed"}` (JSON).
    pub const CONF_MONITOR_STATUS: &str = "conf_monitor.status";

    /// `counter.<plugin>.<step>`: how many files entered that step (an integer, `INCR`).
    pub fn step_files(plugin: &str, step: &str) -> String {
        format!("counter.{plugin}.{step}")
    }

    /// `step.<plugin>.<step>`, the queue (and directory suffix) of one plugin step.
    pub fn step_queue(plugin: &str, step: &str) -> String {
        format!("{STEP_PREFIX}.{plugin}.{step}")
    }

    /// The name of a key that goes with `queue`: `{<queue>}.<suffix>`, the queue's name as the
    /// hash tag, so on a Redis Cluster it lives in the queue's own slot and one script or
    /// transaction can move messages between them. A queue name that already carries a hash tag
    /// keeps it (`{a}.b` → `{a}.b.<suffix>`). The queue itself keeps its plain name: the slot of
    /// `step.a.b` is the slot of `{step.a.b}`.
    pub fn derived(queue: &str, suffix: &str) -> String {
        if crate::connection::hash_tag(queue.as_bytes()).is_some() {
            format!("{queue}.{suffix}")
        } else {
            format!("{{{queue}}}.{suffix}")
        }
    }

    /// `{<queue>}.processing.<consumer>`: a reliable consumer's in-flight list.
    pub fn processing(queue: &str, consumer: &str) -> String {
        derived(queue, &format!("processing.{consumer}"))
    }

    /// `{<queue>}.consumer.<consumer>`: present (with a TTL) while that reliable consumer lives.
    pub fn consumer_alive(queue: &str, consumer: &str) -> String {
        derived(queue, &format!("consumer.{consumer}"))
    }

    /// `{<queue>}.consumers`: set of the reliable consumers that heartbeat on that queue.
    pub fn consumers(queue: &str) -> String {
        derived(queue, "consumers")
    }

    /// `{<queue>}.delayed`: sorted set (score = due epoch seconds) of messages waiting to
    /// re-enter the queue, for retries with backoff.
    pub fn delayed(queue: &str) -> String {
        derived(queue, "delayed")
    }

    /// `{<queue>}.dead`: messages a consumer could not use, with the reason.
    pub fn dead(queue: &str) -> String {
        derived(queue, "dead")
    }

    /// The queue a derived key belongs to (`{q}.dead` → `q`), or `None` for other keys.
    pub fn queue_of(key: &str) -> Option<&str> {
        let rest = key.strip_prefix('{')?;
        let (queue, suffix) = rest.split_once("}.")?;
        let known = ["processing.", "consumer.", "consumers", "delayed", "dead"];
        known.iter().any(|k| suffix.starts_with(k)).then_some(queue)
    }
}

/// What a directory_observer saw happen to a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileEvent {
    /// Completed in place or moved into the directory.
    Created,
    /// Found by a scan.
    Exists,
}

/// `step.<plugin>.<step>`: a file waiting in a step directory (Metwork's message, key for key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepEvent {
    /// The watched directory, as configured.
    pub directory: String,
    /// The file's base name.
    pub filename: String,
    /// How the file was noticed.
    pub event: FileEvent,
    /// When it was noticed, float epoch seconds.
    pub event_timestamp: f64,
}

impl StepEvent {
    /// Encode exactly as Metwork's Python observer does.
    pub fn to_metwork_json(&self) -> Vec<u8> {
        to_python_json(self)
    }
}

/// `ringmaster.control` and the control socket: a circusctl-shaped command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlCommand {
    /// Correlates the reply with the command.
    pub id: String,
    /// `list`, `status`, `start`, `reloadconfig`, … (circus command names).
    pub command: String,
    /// Command arguments, e.g. `{"name": "redis"}`.
    #[serde(default)]
    pub properties: serde_json::Map<String, serde_json::Value>,
}

/// Reply to a [`ControlCommand`]: `{"status","time","id", ...}` as circusd answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlReply {
    /// The command's id.
    pub id: String,
    /// `ok` or `error`.
    pub status: String,
    /// When the reply was made, float epoch seconds.
    pub time: f64,
    /// Why it failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Command-specific results (`watchers`, `statuses`, `info`, …).
    #[serde(flatten)]
    pub body: serde_json::Map<String, serde_json::Value>,
}

/// `ringmaster.events`: one supervisor lifecycle event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RingmasterEvent {
    /// `watcher.<name>.<event>`.
    pub topic: String,
    /// The watcher concerned.
    pub watcher: String,
    /// spawn, reap, kill (a stop signal), timeout_kill (SIGKILL after the graceful timeout), stop,
    /// start, reload, memory_limit, flapping.
    pub event: String,
    /// The process concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Event-specific details (exit status, rss, …).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub details: serde_json::Map<String, serde_json::Value>,
    /// Float epoch seconds.
    pub time: f64,
}

impl RingmasterEvent {
    /// An event for `watcher` with the topic derived from its parts.
    pub fn new(watcher: &str, event: &str, pid: Option<u32>, time: f64) -> Self {
        Self {
            topic: format!("watcher.{watcher}.{event}"),
            watcher: watcher.to_string(),
            event: event.to_string(),
            pid,
            details: serde_json::Map::new(),
            time,
        }
    }
}

/// `collector.job.queue`: one collection due now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectionJob {
    /// The plugin that defines the collection.
    pub plugin: String,
    /// The collection's name, unique within its plugin.
    pub collection: String,
    /// The target being collected (host, URL, …).
    #[serde(default)]
    pub target: String,
    /// When the schedule said it was due, float epoch seconds.
    pub scheduled_at: f64,
    /// Carried with the data through the whole pipeline, and usable as `{var}` placeholders.
    #[serde(default)]
    pub correlation_info: BTreeMap<String, String>,
}

/// One measured value, as plugin scripts print them: `{"name","timestamp","tags","value"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataPoint {
    /// Measurement name.
    pub name: String,
    /// Epoch seconds.
    pub timestamp: f64,
    /// Dimensions.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// A number, a string or a boolean.
    pub value: serde_json::Value,
}

/// `collector.data.queue` (and the sniffer copy): the result of one collection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectedData {
    /// The plugin that defines the collection.
    pub plugin: String,
    /// The collection's name.
    pub collection: String,
    /// The target collected.
    #[serde(default)]
    pub target: String,
    /// When the collection ran, float epoch seconds.
    pub collected_at: f64,
    /// Copied from the job.
    #[serde(default)]
    pub correlation_info: BTreeMap<String, String>,
    /// What was measured.
    pub points: Vec<DataPoint>,
    /// Why the collection failed, when it did (points may then be empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The schedule slot the run belongs to, float epoch seconds (none for on-demand runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_at: Option<f64>,
}

/// A metric field value. In JSON: an integer, a float, a boolean or a string (read with one
/// visitor, not serde's `untagged` trial and error, which costs an error per float).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum FieldValue {
    /// Signed integer (`1i` in line protocol).
    Int(i64),
    /// Float.
    Float(f64),
    /// Boolean.
    Bool(bool),
    /// String.
    Str(String),
}

impl<'de> Deserialize<'de> for FieldValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = FieldValue;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number, a boolean or a string")
            }
            fn visit_i64<E>(self, v: i64) -> Result<FieldValue, E> {
                Ok(FieldValue::Int(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<FieldValue, E> {
                i64::try_from(v)
                    .map(FieldValue::Int)
                    .or(Ok(FieldValue::Float(v as f64)))
            }
            fn visit_f64<E>(self, v: f64) -> Result<FieldValue, E> {
                Ok(FieldValue::Float(v))
            }
            fn visit_bool<E>(self, v: bool) -> Result<FieldValue, E> {
                Ok(FieldValue::Bool(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<FieldValue, E> {
                Ok(FieldValue::Str(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<FieldValue, E> {
                Ok(FieldValue::Str(v))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// One point for Zabbix (host tag + key + value) or InfluxDB. A `metrics.send.queue` message is
/// one such object (as the agent API pushes them) or a JSON array of them (as a reflection
/// pushes the points of one collection result: one message instead of one per point).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricPoint {
    /// InfluxDB measurement, or Zabbix item key.
    pub name: String,
    /// InfluxDB tags; `host` is the Zabbix host.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// InfluxDB fields; Zabbix sends `value`.
    pub fields: BTreeMap<String, FieldValue>,
    /// Nanoseconds since the epoch. With the series, the point's identity: resending is harmless.
    pub timestamp_ns: i64,
    /// InfluxDB database (v2: bucket) the point belongs to; `None`: the sender's default. The
    /// agent API's `POST /post?ns=` sets it to the namespace, as the plugin agents do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
}

/// `metrics.sent.queue` / `metrics.unsent.queue` and the `metrics.sent|unsent` sorted sets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricBatch {
    /// Unique id of the batch (stable across resends).
    pub batch_id: String,
    /// The endpoint it was (or was to be) sent to.
    pub endpoint: String,
    /// Float epoch seconds of the last send attempt.
    pub attempted_at: f64,
    /// Send attempts so far.
    pub attempts: u32,
    /// Why the last attempt failed, for unsent batches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The points.
    pub points: Vec<MetricPoint>,
}

/// `<queue>.dead`: a message a consumer could not use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Where it was popped from.
    pub queue: String,
    /// Who gave up on it.
    pub consumer: String,
    /// Why.
    pub reason: String,
    /// The original payload (lossily decoded if it was not UTF-8).
    pub payload: String,
    /// Float epoch seconds.
    pub dead_at: f64,
}

/// Seconds since the epoch as a float, the timestamp type of every payload.
pub fn epoch_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Serialize as Python's `json.dumps(obj)` would with its defaults.
pub fn to_python_json<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
    // Serializing plain data structs into a Vec cannot fail.
    if value.serialize(&mut ser).is_err() {
        out.clear();
    }
    out
}

/// `json.dumps` defaults: `", "` / `": "` separators and `ensure_ascii=True`.
struct PythonFormatter;

impl serde_json::ser::Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }

    fn write_string_fragment<W: ?Sized + std::io::Write>(&mut self, w: &mut W, fragment: &str) -> std::io::Result<()> {
        if fragment.is_ascii() {
            return w.write_all(fragment.as_bytes());
        }
        let mut buf = [0u16; 2];
        for c in fragment.chars() {
            if c.is_ascii() {
                w.write_all(&[c as u8])?;
            } else {
                for unit in c.encode_utf16(&mut buf) {
                    write!(w, "\\u{unit:04x}")?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Literal bytes produced by Metwork's directory_observer (Python 3 `json.dumps` of a dict).
    const METWORK_CREATED: &str = r#"{"directory": "/home/mfdata/var/in/step.ungzip.main", "filename": "foo.gz", "event": "created", "event_timestamp": 1700000000.123456}"#;
    const METWORK_EXISTS_UNICODE: &str = r#"{"directory": "/data/in/incoming", "filename": "caf\u00e9 \ud83d\ude00.txt", "event": "exists", "event_timestamp": 1548663400.0}"#;

    #[test]
    fn metwork_message_decodes() {
        let ev: StepEvent = serde_json::from_str(METWORK_CREATED).expect("metwork json");
        assert_eq!(ev.directory, "/home/mfdata/var/in/step.ungzip.main");
        assert_eq!(ev.filename, "foo.gz");
        assert_eq!(ev.event, FileEvent::Created);
        assert_eq!(ev.event_timestamp, 1700000000.123456);
    }

    #[test]
    fn step_event_encodes_byte_for_byte_like_metwork() {
        for literal in [METWORK_CREATED, METWORK_EXISTS_UNICODE] {
            let ev: StepEvent = serde_json::from_str(literal).expect("metwork json");
            assert_eq!(String::from_utf8(ev.to_metwork_json()).expect("utf8"), literal);
        }
    }

    #[test]
    fn non_ascii_filename_round_trips() {
        let ev: StepEvent = serde_json::from_str(METWORK_EXISTS_UNICODE).expect("metwork json");
        assert_eq!(ev.filename, "café 😀.txt");
        assert_eq!(ev.event, FileEvent::Exists);
    }

    #[test]
    fn integer_timestamp_and_extra_keys_are_accepted() {
        let ev: StepEvent = serde_json::from_str(
            r#"{"directory": "/d", "filename": "f", "event": "created", "event_timestamp": 12, "counter": 3}"#,
        )
        .expect("tolerant decode");
        assert_eq!(ev.event_timestamp, 12.0);
    }

    #[test]
    fn unknown_event_kind_is_an_error() {
        let r: Result<StepEvent, _> =
            serde_json::from_str(r#"{"directory": "/d", "filename": "f", "event": "deleted", "event_timestamp": 1.0}"#);
        assert!(r.is_err());
    }

    #[test]
    fn control_reply_flattens_body_like_circusd() {
        let mut body = serde_json::Map::new();
        body.insert("watchers".into(), serde_json::json!(["redis"]));
        let reply = ControlReply {
            id: "1".into(),
            status: "ok".into(),
            time: 1.5,
            reason: None,
            body,
        };
        let v = serde_json::to_value(&reply).expect("json");
        assert_eq!(
            v,
            serde_json::json!({"id": "1", "status": "ok", "time": 1.5, "watchers": ["redis"]})
        );
    }

    #[test]
    fn field_values_keep_their_json_types() {
        let p: MetricPoint = serde_json::from_str(
            r#"{"name":"cpu","tags":{"host":"a"},"fields":{"i":3,"f":0.5,"b":true,"s":"x"},"timestamp_ns":1}"#,
        )
        .expect("point");
        assert_eq!(p.fields["i"], FieldValue::Int(3));
        assert_eq!(p.fields["f"], FieldValue::Float(0.5));
        assert_eq!(p.fields["b"], FieldValue::Bool(true));
        assert_eq!(p.fields["s"], FieldValue::Str("x".into()));
    }

    #[test]
    fn every_payload_round_trips() {
        let job = CollectionJob {
            plugin: "p".into(),
            collection: "c".into(),
            target: "t".into(),
            scheduled_at: 2.0,
            correlation_info: [("k".to_string(), "v".to_string())].into(),
        };
        let back: CollectionJob = serde_json::from_slice(&serde_json::to_vec(&job).expect("ser")).expect("de");
        assert_eq!(back, job);
        let ev = RingmasterEvent::new("redis", "spawn", Some(42), 3.0);
        assert_eq!(ev.topic, "watcher.redis.spawn");
        let back: RingmasterEvent = serde_json::from_slice(&serde_json::to_vec(&ev).expect("ser")).expect("de");
        assert_eq!(back, ev);
        let dl = DeadLetter {
            queue: "q".into(),
            consumer: "c".into(),
            reason: "r".into(),
            payload: "x".into(),
            dead_at: 1.0,
        };
        let back: DeadLetter = serde_json::from_slice(&serde_json::to_vec(&dl).expect("ser")).expect("de");
        assert_eq!(back, dl);
    }

    #[test]
    fn derived_key_names() {
        assert_eq!(names::step_queue("ungzip", "main"), "step.ungzip.main");
        assert_eq!(
            names::processing("step.a.b", "host1.0"),
            "{step.a.b}.processing.host1.0"
        );
        assert_eq!(names::dead("{q}"), "{q}.dead");
        assert_eq!(names::dead("{q}.x"), "{q}.x.dead");
        assert_eq!(names::delayed("q"), "{q}.delayed");
        assert_eq!(names::queue_of("{step.a.b}.processing.h.1"), Some("step.a.b"));
        assert_eq!(names::queue_of("{q}.dead"), Some("q"));
        assert_eq!(names::queue_of("step.a.b"), None);
    }

    #[test]
    fn derived_keys_share_their_queue_slot() {
        use crate::connection::key_slot;
        for q in ["step.a.b", "collector.job.queue", "metrics.send.queue", "{t}.x"] {
            let slot = key_slot(q.as_bytes());
            for k in [
                names::processing(q, "c1"),
                names::consumer_alive(q, "c1"),
                names::consumers(q),
                names::delayed(q),
                names::dead(q),
            ] {
                assert_eq!(key_slot(k.as_bytes()), slot, "{k} is not in {q}'s slot");
            }
        }
        // Redis's own examples (CLUSTER KEYSLOT).
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
    }
}

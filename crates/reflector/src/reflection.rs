//! Reflections and what they do to collected data.
//!
//! A [`Reflection`] is a condition (matched through the [`Tree`]) and actions run in order for
//! each point that satisfies it. [`Reflections::reflect`] takes one `collector.data.queue`
//! message and adds what its points cause to [`Effects`], which the consumer then applies in
//! one Redis round trip:
//!
//! - `cache`: the point, as the last value of its series, under
//!   `reflector.cache.<plugin>.<collection>.<target>.<name>[,<tag>=<value>…]` with a TTL;
//! - `push_metrics`: a [`MetricPoint`] on `metrics.send.queue` (measurement or Zabbix key from
//!   `metric_name`, the `host` tag from `metric_host`, the value in field `metric_field`);
//! - `forward`: the points, as a `CollectedData` with the original's identity, on a named queue;
//! - `sniff`: the same on `collector.data.sniffer.queue`, whose length is capped;
//! - `drop`: nothing more happens to the point (later actions and reflections are skipped).
//!
//! Every reflection that matches fires, in definition order, unless one says `stop`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use ironwork_core::messages::names::REFLECTOR_CACHE_PREFIX as CACHE_PREFIX;
use ironwork_core::messages::FieldValue;
use ironwork_core::template::render_with;
use serde::Serialize;

use crate::point::{DataPointRef, DataRef, PointRef, Text};
use crate::tree::{Condition, Subject, Tree};

/// `push_metrics`: how a data point becomes a metric point. Templates take `{name}`,
/// `{plugin}`, `{collection}`, `{target}`, the point's tags and the correlation info by key.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricMap {
    /// Measurement (InfluxDB) or item key (Zabbix).
    pub name: String,
    /// The `host` tag (the Zabbix host), unless the point has one.
    pub host: String,
    /// The field holding the value.
    pub field: String,
    /// InfluxDB database or bucket (`None`: the sender's).
    pub database: Option<String>,
    /// Tags added to the point's own.
    pub tags: BTreeMap<String, String>,
}

/// One action of a reflection.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Keep the last value of the series for this long.
    Cache(Duration),
    /// Turn the point into a metric for the sender.
    PushMetrics(MetricMap),
    /// Copy to this queue.
    Forward(String),
    /// Copy to the capped sniffer queue.
    Sniff,
    /// Nothing more happens to the point.
    Drop,
}

/// A compiled reflection.
#[derive(Debug, Clone)]
pub struct Reflection {
    /// `<plugin>.<name>`.
    pub id: String,
    /// When it fires.
    pub condition: Condition,
    /// What it does, in order.
    pub actions: Vec<Action>,
    /// A match stops the later reflections.
    pub stop: bool,
}

/// A cached last value, as `reflector cache` prints it.
#[derive(Debug, Serialize)]
struct Cached<'a> {
    plugin: &'a str,
    collection: &'a str,
    target: &'a str,
    name: &'a str,
    tags: &'a BTreeMap<Text<'a>, Text<'a>>,
    value: &'a serde_json::Value,
    timestamp: f64,
    reflection: &'a str,
}

/// What a set of messages causes, ready to be written.
#[derive(Debug, Default)]
pub struct Effects {
    /// `(key, value, ttl)` cache writes.
    pub cache: Vec<(String, Vec<u8>, Duration)>,
    /// `metrics.send.queue` messages: per input message, its metric points as one JSON array.
    pub metrics: Vec<Vec<u8>>,
    /// Metric points in [`Effects::metrics`].
    pub metric_points: u64,
    /// Serialized `CollectedData` per destination queue.
    pub forward: BTreeMap<String, Vec<Vec<u8>>>,
    /// Serialized `CollectedData` for the sniffer queue.
    pub sniff: Vec<Vec<u8>>,
    /// Points no reflection matched.
    pub unmatched: u64,
    /// Points a `drop` action ended.
    pub dropped: u64,
    /// Points that matched at least one reflection.
    pub matched: u64,
    /// Points `push_metrics` could not use (a value that is neither number, string nor bool).
    pub unusable: u64,
}

impl Effects {
    /// Whether nothing is to be written.
    pub fn is_empty(&self) -> bool {
        self.cache.is_empty() && self.metrics.is_empty() && self.forward.is_empty() && self.sniff.is_empty()
    }
}

/// The reflection set in force: the definitions and their tree.
#[derive(Debug, Default)]
pub struct Reflections {
    list: Vec<Reflection>,
    tree: Tree,
}

impl Reflections {
    /// Compile `list` (definition order = firing order).
    pub fn new(list: Vec<Reflection>) -> Self {
        let tree = Tree::build(list.iter().map(|r| (r.condition.clone(), r.stop)).collect());
        Self { list, tree }
    }

    /// Number of reflections.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// True without reflections.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Run the reflections over every point of `data`, adding what they cause to `out`.
    pub fn reflect(&self, data: &DataRef<'_>, out: &mut Effects) {
        let mut forwarded: BTreeMap<&str, Vec<&DataPointRef<'_>>> = BTreeMap::new();
        let mut sniffed: Vec<&DataPointRef<'_>> = Vec::new();
        let mut metrics: Vec<PointRef<'_>> = Vec::new();
        for point in &data.points {
            let subject = Subject {
                plugin: &data.plugin,
                collection: &data.collection,
                item: &point.name,
                target: &data.target,
                tags: &point.tags,
                value: number(&point.value),
            };
            let hits = self.tree.lookup(&subject);
            if hits.is_empty() {
                out.unmatched += 1;
                continue;
            }
            out.matched += 1;
            'reflections: for i in hits {
                let reflection = &self.list[i];
                for action in &reflection.actions {
                    match action {
                        Action::Drop => {
                            out.dropped += 1;
                            break 'reflections;
                        }
                        Action::Cache(ttl) => out.cache.push(cache_entry(data, point, &reflection.id, *ttl)),
                        Action::PushMetrics(map) => match metric(data, point, map) {
                            Some(m) => metrics.push(m),
                            None => out.unusable += 1,
                        },
                        Action::Forward(queue) => forwarded.entry(queue).or_default().push(point),
                        Action::Sniff => sniffed.push(point),
                    }
                }
            }
        }
        if !metrics.is_empty() {
            out.metric_points += metrics.len() as u64;
            let mut json = Vec::with_capacity(metrics.len() * 128);
            if serde_json::to_writer(&mut json, &metrics).is_ok() {
                out.metrics.push(json);
            }
        }
        for (queue, points) in forwarded {
            out.forward
                .entry(queue.to_string())
                .or_default()
                .push(subset(data, &points));
        }
        if !sniffed.is_empty() {
            out.sniff.push(subset(data, &sniffed));
        }
    }
}

/// The value as a number, for comparisons: numbers, and booleans as 1 / 0.
fn number(v: &serde_json::Value) -> Option<f64> {
    match v {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::Bool(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    }
}

/// `data` with only `points` (and no error), as `CollectedData` JSON: what forward and sniff copy.
fn subset(data: &DataRef<'_>, points: &[&DataPointRef<'_>]) -> Vec<u8> {
    #[derive(Serialize)]
    struct Subset<'a> {
        plugin: &'a str,
        collection: &'a str,
        target: &'a str,
        collected_at: f64,
        correlation_info: &'a BTreeMap<Text<'a>, Text<'a>>,
        points: &'a [&'a DataPointRef<'a>],
        #[serde(skip_serializing_if = "Option::is_none")]
        scheduled_at: Option<f64>,
    }
    serde_json::to_vec(&Subset {
        plugin: &data.plugin,
        collection: &data.collection,
        target: &data.target,
        collected_at: data.collected_at,
        correlation_info: &data.correlation_info,
        points,
        scheduled_at: data.scheduled_at,
    })
    .unwrap_or_default()
}

/// The point's time: its own, or the collection's when it has none.
fn timestamp(data: &DataRef<'_>, point: &DataPointRef<'_>) -> f64 {
    if point.timestamp > 0.0 && point.timestamp.is_finite() {
        point.timestamp
    } else {
        data.collected_at
    }
}

/// Float epoch seconds to nanoseconds, to the microsecond: an `f64` near 1.7e9 s holds about
/// 0.24 µs of fraction, so finer digits would be noise (`1700000000.25` → `…250000000`, not
/// `…249999872`). `None` past what nanoseconds in an `i64` can hold (year 2262), e.g. a
/// timestamp in milliseconds.
pub fn to_ns(seconds: f64) -> Option<i64> {
    let whole = seconds.floor();
    if !whole.is_finite() || whole.abs() >= 9.2e9 {
        return None;
    }
    let micros = ((seconds - whole) * 1e6).round() as i64;
    (whole as i64).checked_mul(1_000_000_000)?.checked_add(micros * 1_000)
}

/// The cache key of a point's series.
pub fn series_key(
    plugin: &str,
    collection: &str,
    target: &str,
    name: &str,
    tags: &BTreeMap<Text<'_>, Text<'_>>,
) -> String {
    let mut key = format!("{CACHE_PREFIX}{plugin}.{collection}.{target}.{name}");
    for (k, v) in tags {
        let _ = write!(key, ",{}={}", &**k, &**v);
    }
    key
}

fn cache_entry(
    data: &DataRef<'_>,
    point: &DataPointRef<'_>,
    reflection: &str,
    ttl: Duration,
) -> (String, Vec<u8>, Duration) {
    let key = series_key(&data.plugin, &data.collection, &data.target, &point.name, &point.tags);
    let value = Cached {
        plugin: &data.plugin,
        collection: &data.collection,
        target: &data.target,
        name: &point.name,
        tags: &point.tags,
        value: &point.value,
        timestamp: timestamp(data, point),
        reflection,
    };
    (key, serde_json::to_vec(&value).unwrap_or_default(), ttl)
}

/// The metric point `map` makes of `point`, borrowing from both; `None` when its value cannot
/// be a field.
pub fn metric<'a>(data: &'a DataRef<'_>, point: &'a DataPointRef<'_>, map: &'a MetricMap) -> Option<PointRef<'a>> {
    // Numbers are always floats: a series whose values are sometimes 1 and sometimes 1.5
    // would otherwise hit InfluxDB's field type conflict.
    let value = match &point.value {
        serde_json::Value::Number(n) => FieldValue::Float(n.as_f64().filter(|f| f.is_finite())?),
        serde_json::Value::Bool(b) => FieldValue::Bool(*b),
        serde_json::Value::String(s) => FieldValue::Str(s.clone()),
        _ => return None,
    };
    let timestamp_ns = to_ns(timestamp(data, point))?;
    let lookup = |k: &str| -> Option<&'a str> {
        match k {
            "name" => Some(&point.name),
            "plugin" => Some(&data.plugin),
            "collection" => Some(&data.collection),
            "target" => Some(&data.target),
            _ => point.tags.get(k).or_else(|| data.correlation_info.get(k)).map(|v| &**v),
        }
    };
    // `{name}` alone (the usual template) borrows; anything else is rendered.
    let render = |template: &'a str| -> Text<'a> {
        match template
            .strip_prefix('{')
            .and_then(|t| t.strip_suffix('}'))
            .and_then(lookup)
        {
            Some(v) if !template[1..template.len() - 1].contains(['{', '}']) => Text::from(v),
            _ => Text::from(render_with(template, lookup)),
        }
    };
    let mut tags: BTreeMap<Text<'a>, Text<'a>> = point
        .tags
        .iter()
        .map(|(k, v)| (Text::from(&**k), Text::from(&**v)))
        .collect();
    for (k, template) in &map.tags {
        tags.insert(Text::from(k.as_str()), render(template));
    }
    if !tags.contains_key("host") {
        let host = render(&map.host);
        if !host.is_empty() {
            tags.insert(Text::from("host"), host);
        }
    }
    tags.retain(|_, v| !v.is_empty());
    Some(PointRef {
        name: render(&map.name),
        tags,
        fields: BTreeMap::from([(Text::from(map.field.as_str()), value)]),
        timestamp_ns,
        database: map.database.as_deref().map(render),
    })
}

#[cfg(test)]
mod tests {
    use ironwork_core::messages::{CollectedData, DataPoint};

    use super::*;
    use crate::tree::Matcher;

    fn reflection(id: &str, item: &str, actions: Vec<Action>, stop: bool) -> Reflection {
        Reflection {
            id: id.into(),
            condition: Condition {
                route: [Matcher::Any, Matcher::Any, Matcher::parse(item).unwrap(), Matcher::Any],
                tags: Vec::new(),
                present: Vec::new(),
                value: Vec::new(),
            },
            actions,
            stop,
        }
    }

    fn map() -> MetricMap {
        MetricMap {
            name: "{plugin}_{name}".into(),
            host: "{target}".into(),
            field: "value".into(),
            database: None,
            tags: BTreeMap::from([("site".to_string(), "{site}".to_string())]),
        }
    }

    fn data() -> CollectedData {
        let point = |name: &str, value: serde_json::Value| DataPoint {
            name: name.into(),
            timestamp: 100.5,
            tags: BTreeMap::from([("cpu".to_string(), "0".to_string())]),
            value,
        };
        CollectedData {
            plugin: "p".into(),
            collection: "c".into(),
            target: "web1".into(),
            collected_at: 101.0,
            correlation_info: BTreeMap::from([("site".to_string(), "paris".to_string())]),
            points: vec![
                point("load", serde_json::json!(3)),
                point("state", serde_json::json!("up")),
                point("odd", serde_json::json!([1])),
            ],
            error: None,
            scheduled_at: Some(100.0),
        }
    }

    #[test]
    fn seconds_become_nanoseconds_to_the_microsecond() {
        assert_eq!(to_ns(1_700_000_000.25), Some(1_700_000_000_250_000_000));
        assert_eq!(to_ns(1_700_000_000.123_456), Some(1_700_000_000_123_456_000));
        assert_eq!(to_ns(1.5), Some(1_500_000_000));
        assert_eq!(to_ns(1.7e12), None, "milliseconds are not seconds");
        assert_eq!(to_ns(f64::NAN), None);
    }

    #[test]
    fn actions_run_in_order_and_drop_ends_the_point() {
        let r = Reflections::new(vec![
            reflection(
                "p.a",
                "load",
                vec![Action::Cache(Duration::from_secs(5)), Action::PushMetrics(map())],
                false,
            ),
            reflection(
                "p.b",
                "*",
                vec![Action::Sniff, Action::Drop, Action::Forward("never".into())],
                false,
            ),
            reflection("p.c", "*", vec![Action::Forward("late".into())], false),
        ]);
        let mut fx = Effects::default();
        let json = serde_json::to_string(&data()).unwrap();
        r.reflect(&serde_json::from_str(&json).unwrap(), &mut fx);
        assert_eq!((fx.matched, fx.dropped, fx.unmatched), (3, 3, 0));
        assert!(fx.forward.is_empty(), "drop skips later actions and reflections");
        assert_eq!(fx.cache.len(), 1);
        assert_eq!(fx.cache[0].0, "reflector.cache.p.c.web1.load,cpu=0");
        let m: Vec<ironwork_core::messages::MetricPoint> = serde_json::from_slice(&fx.metrics[0]).unwrap();
        let m = &m[0];
        assert_eq!(m.name, "p_load");
        assert_eq!(m.tags["host"], "web1");
        assert_eq!(m.tags["site"], "paris");
        assert_eq!(m.fields["value"], FieldValue::Float(3.0));
        assert_eq!(m.timestamp_ns, 100_500_000_000);
        let sniffed: CollectedData = serde_json::from_slice(&fx.sniff[0]).unwrap();
        assert_eq!(sniffed.points.len(), 3);
        assert_eq!(sniffed.correlation_info["site"], "paris");
    }

    #[test]
    fn stop_ends_the_reflections_but_not_the_own_actions() {
        let r = Reflections::new(vec![
            reflection(
                "p.a",
                "*",
                vec![Action::PushMetrics(map()), Action::Forward("q".into())],
                true,
            ),
            reflection("p.b", "*", vec![Action::Sniff], false),
        ]);
        let mut fx = Effects::default();
        let json = serde_json::to_string(&data()).unwrap();
        r.reflect(&serde_json::from_str(&json).unwrap(), &mut fx);
        assert_eq!(fx.metrics.len(), 1, "one message per input message");
        assert_eq!(fx.metric_points, 2, "the list value is not a field");
        assert_eq!(fx.unusable, 1);
        assert_eq!(fx.forward["q"].len(), 1, "one message per queue per input");
        assert!(fx.sniff.is_empty());
    }
}

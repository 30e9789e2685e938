//! A metric point as the encoders see it: core's owned [`MetricPoint`] (what the resend reads
//! back from the unsent table) or a [`PointRef`] borrowed from a `metrics.send.queue` message,
//! which the sender decodes without copying its strings.

use std::borrow::Cow;
use std::collections::BTreeMap;

use ironwork_core::messages::{FieldValue, MetricPoint};
use serde::{Deserialize, Serialize};

/// What the encoders need of a point.
pub trait Point {
    /// Measurement or item key.
    fn name(&self) -> &str;
    /// Tags, sorted by key.
    fn tags(&self) -> impl Iterator<Item = (&str, &str)>;
    /// A tag's value.
    fn tag(&self, key: &str) -> Option<&str>;
    /// Fields, sorted by key.
    fn fields(&self) -> impl Iterator<Item = (&str, &FieldValue)>;
    /// Number of fields.
    fn field_count(&self) -> usize;
    /// Nanoseconds since the epoch.
    fn timestamp_ns(&self) -> i64;
    /// The database it names, if any.
    fn database(&self) -> Option<&str>;
}

impl Point for MetricPoint {
    fn name(&self) -> &str {
        &self.name
    }
    fn tags(&self) -> impl Iterator<Item = (&str, &str)> {
        self.tags.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
    fn tag(&self, key: &str) -> Option<&str> {
        self.tags.get(key).map(String::as_str)
    }
    fn fields(&self) -> impl Iterator<Item = (&str, &FieldValue)> {
        self.fields.iter().map(|(k, v)| (k.as_str(), v))
    }
    fn field_count(&self) -> usize {
        self.fields.len()
    }
    fn timestamp_ns(&self) -> i64 {
        self.timestamp_ns
    }
    fn database(&self) -> Option<&str> {
        self.database.as_deref()
    }
}

/// A [`MetricPoint`] read in place: the same JSON, strings borrowed unless they hold escapes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointRef<'a> {
    /// Measurement or item key.
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    /// Tags.
    #[serde(borrow, default)]
    pub tags: BTreeMap<Cow<'a, str>, Cow<'a, str>>,
    /// Fields.
    #[serde(borrow)]
    pub fields: BTreeMap<Cow<'a, str>, FieldValue>,
    /// Nanoseconds since the epoch.
    pub timestamp_ns: i64,
    /// Database or bucket.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub database: Option<Cow<'a, str>>,
}

impl PointRef<'_> {
    /// The owned point.
    pub fn to_owned_point(&self) -> MetricPoint {
        MetricPoint {
            name: self.name.to_string(),
            tags: self.tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            fields: self.fields.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
            timestamp_ns: self.timestamp_ns,
            database: self.database.as_ref().map(|d| d.to_string()),
        }
    }
}

impl Point for PointRef<'_> {
    fn name(&self) -> &str {
        &self.name
    }
    fn tags(&self) -> impl Iterator<Item = (&str, &str)> {
        self.tags.iter().map(|(k, v)| (k.as_ref(), v.as_ref()))
    }
    fn tag(&self, key: &str) -> Option<&str> {
        self.tags.get(key).map(AsRef::as_ref)
    }
    fn fields(&self) -> impl Iterator<Item = (&str, &FieldValue)> {
        self.fields.iter().map(|(k, v)| (k.as_ref(), v))
    }
    fn field_count(&self) -> usize {
        self.fields.len()
    }
    fn timestamp_ns(&self) -> i64 {
        self.timestamp_ns
    }
    fn database(&self) -> Option<&str> {
        self.database.as_deref()
    }
}

/// A `metrics.send.queue` message read in place: one point object or an array of them.
pub fn parse_message(payload: &[u8]) -> Result<Vec<PointRef<'_>>, serde_json::Error> {
    match payload.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => serde_json::from_slice(payload),
        _ => serde_json::from_slice(payload).map(|p| vec![p]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_borrowed_point_reads_like_the_owned_one() {
        let json =
            br#"[{"name":"cpu","tags":{"host":"a\"b"},"fields":{"value":1.5,"n":2},"timestamp_ns":7,"database":"d"}]"#;
        let refs = parse_message(json).unwrap();
        let owned: Vec<MetricPoint> = serde_json::from_slice(json).unwrap();
        assert_eq!(refs[0].to_owned_point(), owned[0]);
        assert_eq!(refs[0].tag("host"), Some("a\"b"));
        let one = parse_message(br#" {"name":"x","fields":{"v":true},"timestamp_ns":1}"#).unwrap();
        assert_eq!(one.len(), 1);
        assert!(parse_message(b"[1]").is_err());
    }
}

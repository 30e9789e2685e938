//! Messages read in place. The reflection consumers read `collector.data.queue` messages as
//! [`DataRef`] and the senders read `metrics.send.queue` messages as [`PointRef`]: the same JSON
//! as core's `CollectedData` and `MetricPoint`, with every string that holds no escape borrowed
//! from the message ([`Text`]) instead of copied. [`Point`] is what the encoders need of a
//! point, owned (what the resend reads back from the unsent table) or borrowed.

use std::borrow::Cow;
use std::collections::BTreeMap;

use ironwork_core::messages::{FieldValue, MetricPoint};
use serde::{Deserialize, Serialize};

/// A string borrowed from the message when it can be (no escape in it), owned otherwise; in
/// maps too, where serde's own `Cow<str>` always copies.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Text<'a>(pub Cow<'a, str>);

impl std::ops::Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for Text<'_> {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Text<'_> {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<'a> From<&'a str> for Text<'a> {
    fn from(s: &'a str) -> Self {
        Text(Cow::Borrowed(s))
    }
}

impl From<String> for Text<'_> {
    fn from(s: String) -> Self {
        Text(Cow::Owned(s))
    }
}

impl Serialize for Text<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(Visitor)
    }
}

/// A `collector.data.queue` message read in place (core's `CollectedData`, same JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DataRef<'a> {
    /// The plugin that defines the collection.
    #[serde(borrow)]
    pub plugin: Text<'a>,
    /// The collection's name.
    #[serde(borrow)]
    pub collection: Text<'a>,
    /// The target collected.
    #[serde(borrow, default)]
    pub target: Text<'a>,
    /// When the collection ran, float epoch seconds.
    pub collected_at: f64,
    /// Carried with the data.
    #[serde(borrow, default)]
    pub correlation_info: BTreeMap<Text<'a>, Text<'a>>,
    /// What was measured.
    #[serde(borrow)]
    pub points: Vec<DataPointRef<'a>>,
    /// Why the collection failed, when it did.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Text<'a>>,
    /// The schedule slot the run belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_at: Option<f64>,
}

/// One point of a [`DataRef`] (core's `DataPoint`, same JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DataPointRef<'a> {
    /// Measurement name.
    #[serde(borrow)]
    pub name: Text<'a>,
    /// Epoch seconds.
    pub timestamp: f64,
    /// Dimensions.
    #[serde(borrow, default)]
    pub tags: BTreeMap<Text<'a>, Text<'a>>,
    /// A number, a string or a boolean.
    pub value: serde_json::Value,
}

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
    pub name: Text<'a>,
    /// Tags.
    #[serde(borrow, default)]
    pub tags: BTreeMap<Text<'a>, Text<'a>>,
    /// Fields.
    #[serde(borrow)]
    pub fields: BTreeMap<Text<'a>, FieldValue>,
    /// Nanoseconds since the epoch.
    pub timestamp_ns: i64,
    /// Database or bucket.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub database: Option<Text<'a>>,
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
        self.tags.iter().map(|(k, v)| (&**k, &**v))
    }
    fn tag(&self, key: &str) -> Option<&str> {
        self.tags.get(key).map(|v| &**v)
    }
    fn fields(&self) -> impl Iterator<Item = (&str, &FieldValue)> {
        self.fields.iter().map(|(k, v)| (&**k, v))
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
        assert!(matches!(refs[0].name.0, Cow::Borrowed("cpu")), "no escape: borrowed");
        assert!(matches!(
            refs[0].tags.keys().next().map(|k| &k.0),
            Some(Cow::Borrowed("host"))
        ));
        assert!(
            matches!(refs[0].tags.values().next().map(|k| &k.0), Some(Cow::Owned(_))),
            "escaped: owned"
        );
        let one = parse_message(br#" {"name":"x","fields":{"v":true},"timestamp_ns":1}"#).unwrap();
        assert_eq!(one.len(), 1);
        assert!(parse_message(b"[1]").is_err());
    }
}

//! One line in, one `_bulk` action + document out: parse, drop/rename/add, pick the index from
//! the event time, and write `{"create":{"_index":…,"_id":…}}` with the line's deterministic id.
//!
//! The common case (a JSON object, no rename, no clashing added field) never builds a tree: one
//! pass validates the line and picks out the timestamp and the drop fields, then the original
//! bytes are copied with the added fields spliced in before the closing brace.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::{Map, Value};

use crate::config::{Input, Invalid, Transform};
use crate::index::{civil_from_hours, epoch_number_hours, parse_timestamp_hours, IndexPattern};

/// What became of one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A document was appended; `invalid` says why it was wrapped, if it was.
    Shipped {
        /// The parse error of a line shipped as `{"message", "parse_error"}`.
        invalid: Option<String>,
    },
    /// A drop rule matched.
    Dropped,
    /// The line does not parse and the input dead-letters such lines; nothing was appended.
    Rejected(String),
}

/// The transform with `%{hostname}` expanded and added fields pre-rendered as JSON.
#[derive(Debug, Clone)]
pub struct CompiledTransform {
    drop: Vec<(String, Vec<String>)>,
    rename: Vec<(String, String)>,
    add: Vec<(String, Value)>,
    /// `"k":"v","k2":"v2"`, ready to splice.
    add_json: String,
}

impl CompiledTransform {
    /// Expand and pre-render `t`.
    pub fn new(t: &Transform, hostname: &str) -> Self {
        let add: Vec<(String, Value)> = t
            .add
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.replace("%{hostname}", hostname))))
            .collect();
        let add_json = add
            .iter()
            .map(|(k, v)| format!("{}:{}", Value::from(k.as_str()), v))
            .collect::<Vec<_>>()
            .join(",");
        Self {
            drop: t.drop.clone(),
            rename: t.rename.clone(),
            add,
            add_json,
        }
    }
}

/// Per-input encoder; keeps the last index name it rendered.
#[derive(Debug)]
pub struct Encoder {
    index: IndexPattern,
    timestamp_field: String,
    invalid: Invalid,
    transform: Arc<CompiledTransform>,
    last: Option<(i64, String)>,
}

/// What the one-pass probe learns about a line.
#[derive(Default)]
struct Probe {
    keys: usize,
    hours: Option<i64>,
    dropped: bool,
    slow: bool,
}

impl Encoder {
    /// An encoder for `input`.
    pub fn new(input: &Input, transform: Arc<CompiledTransform>) -> Self {
        Self {
            index: input.index.clone(),
            timestamp_field: input.timestamp_field.clone(),
            invalid: input.invalid,
            transform,
            last: None,
        }
    }

    /// Append the action and document for `line` (no trailing newline) to `out`; `id` is the
    /// document id, `now_hours` the read time used when the line has no usable timestamp.
    pub fn encode(&mut self, line: &[u8], id: &str, now_hours: i64, out: &mut Vec<u8>) -> Outcome {
        let line = trim_end(line);
        let text = match std::str::from_utf8(line) {
            Ok(t) => t,
            Err(e) => return self.invalid(line, format!("invalid UTF-8: {e}"), id, now_hours, out),
        };
        let probe = match self.probe(text) {
            Ok(p) => p,
            Err(e) => return self.invalid(line, e, id, now_hours, out),
        };
        if probe.dropped {
            return Outcome::Dropped;
        }
        if probe.slow {
            return self.encode_tree(text, id, now_hours, out);
        }
        let hours = probe.hours.unwrap_or(now_hours);
        self.action(hours, id, out);
        let t = &self.transform;
        if t.add.is_empty() {
            out.extend_from_slice(line);
        } else {
            // The probe proved an object, so the last byte is its closing brace.
            out.extend_from_slice(&line[..line.len() - 1]);
            if probe.keys > 0 {
                out.push(b',');
            }
            out.extend_from_slice(t.add_json.as_bytes());
            out.push(b'}');
        }
        out.push(b'\n');
        Outcome::Shipped { invalid: None }
    }

    fn probe(&self, text: &str) -> Result<Probe, String> {
        if !text.trim_start().starts_with('{') {
            return Err("not a JSON object".into());
        }
        let mut de = serde_json::Deserializer::from_str(text);
        let probe = ProbeSeed {
            timestamp_field: &self.timestamp_field,
            transform: &self.transform,
        }
        .deserialize(&mut de)
        .map_err(|e| e.to_string())?;
        de.end().map_err(|e| e.to_string())?;
        Ok(probe)
    }

    /// The slow path: a full tree, for renames and added fields that replace existing ones.
    fn encode_tree(&mut self, text: &str, id: &str, now_hours: i64, out: &mut Vec<u8>) -> Outcome {
        let mut map: Map<String, Value> = match serde_json::from_str(text) {
            Ok(m) => m,
            Err(e) => return self.invalid(text.as_bytes(), e.to_string(), id, now_hours, out),
        };
        let t = self.transform.clone();
        for (from, to) in &t.rename {
            if let Some(v) = map.remove(from) {
                map.insert(to.clone(), v);
            }
        }
        for (k, v) in &t.add {
            map.insert(k.clone(), v.clone());
        }
        let hours = match map.get(&self.timestamp_field) {
            Some(Value::String(s)) => parse_timestamp_hours(s),
            Some(Value::Number(n)) => n.as_f64().and_then(epoch_number_hours),
            _ => None,
        }
        .unwrap_or(now_hours);
        self.action(hours, id, out);
        serde_json::to_writer(&mut *out, &map).expect("writing to a Vec cannot fail");
        out.push(b'\n');
        Outcome::Shipped { invalid: None }
    }

    fn invalid(&mut self, line: &[u8], reason: String, id: &str, now_hours: i64, out: &mut Vec<u8>) -> Outcome {
        if self.invalid == Invalid::DeadLetter {
            return Outcome::Rejected(reason);
        }
        let mut map = Map::new();
        map.insert("message".into(), Value::from(String::from_utf8_lossy(line)));
        map.insert("parse_error".into(), Value::from(reason.clone()));
        for (k, v) in &self.transform.add {
            map.insert(k.clone(), v.clone());
        }
        self.action(now_hours, id, out);
        serde_json::to_writer(&mut *out, &map).expect("writing to a Vec cannot fail");
        out.push(b'\n');
        Outcome::Shipped { invalid: Some(reason) }
    }

    fn action(&mut self, hours: i64, id: &str, out: &mut Vec<u8>) {
        let index = match &self.last {
            Some((h, name)) if *h == hours || self.index.is_constant() => name,
            _ => {
                let name = self.index.render(civil_from_hours(hours));
                &self.last.insert((hours, name)).1
            }
        };
        out.extend_from_slice(b"{\"create\":{\"_index\":\"");
        out.extend_from_slice(index.as_bytes());
        out.extend_from_slice(b"\",\"_id\":\"");
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(b"\"}}\n");
    }
}

fn trim_end(line: &[u8]) -> &[u8] {
    let end = line.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(0, |i| i + 1);
    &line[..end]
}

struct ProbeSeed<'a> {
    timestamp_field: &'a str,
    transform: &'a CompiledTransform,
}

impl<'de> DeserializeSeed<'de> for ProbeSeed<'_> {
    type Value = Probe;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Probe, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ProbeSeed<'_> {
    type Value = Probe;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Probe, A::Error> {
        let mut probe = Probe::default();
        let t = self.transform;
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            probe.keys += 1;
            if t.rename.iter().any(|(from, _)| *from == key) || t.add.iter().any(|(k, _)| *k == key) {
                probe.slow = true;
            }
            let drop_values = t.drop.iter().find(|(f, _)| *f == key).map(|(_, v)| v);
            if key == self.timestamp_field {
                match map.next_value::<Scalar<'de>>()? {
                    Scalar::Str(s) => {
                        probe.hours = parse_timestamp_hours(&s);
                        if drop_values.is_some_and(|v| v.iter().any(|d| *d == s)) {
                            probe.dropped = true;
                        }
                    }
                    Scalar::Num(n) => probe.hours = epoch_number_hours(n),
                    Scalar::Other => {}
                }
            } else if let Some(values) = drop_values {
                if let Scalar::Str(s) = map.next_value::<Scalar<'de>>()? {
                    if values.iter().any(|d| *d == s) {
                        probe.dropped = true;
                    }
                }
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(probe)
    }
}

/// A map key, borrowed from the line unless it holds escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

/// The value of a watched field: a string or a number matter, anything else is skipped.
enum Scalar<'de> {
    Str(Cow<'de, str>),
    Num(f64),
    Other,
}

impl<'de> serde::Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Str(Cow::Owned(v.to_string())))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Num(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Num(v as f64))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Num(v as f64))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Other)
            }
            fn visit_unit<E>(self) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Other)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar<'de>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar<'de>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LongLines, ReadFrom};

    fn input(invalid: Invalid, ts: &str) -> Input {
        Input {
            name: "t".into(),
            paths: vec![],
            exclude: vec![],
            recursive: false,
            read_from: ReadFrom::Beginning,
            max_line_bytes: 1 << 20,
            long_lines: LongLines::Truncate,
            invalid,
            index: IndexPattern::parse("mflog-%Y.%m.%d").expect("valid"),
            timestamp_field: ts.into(),
        }
    }

    fn encoder(t: Transform, invalid: Invalid) -> Encoder {
        Encoder::new(
            &input(invalid, "timestamp"),
            Arc::new(CompiledTransform::new(&t, "box1")),
        )
    }

    fn lines(out: &[u8]) -> Vec<Value> {
        out.split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).expect("each line is JSON"))
            .collect()
    }

    const NOW: i64 = 500_000; // 2027-01-15T08:00Z

    #[test]
    fn copies_the_line_and_names_the_index_from_its_timestamp() {
        let mut e = encoder(Transform::default(), Invalid::Ship);
        let mut out = Vec::new();
        let line = br#"{"timestamp":"2019-01-28T08:16:40.047710Z","name":"x","event":"a\nb"}  "#;
        assert_eq!(
            e.encode(line, "ab-12", NOW, &mut out),
            Outcome::Shipped { invalid: None }
        );
        let v = lines(&out);
        assert_eq!(v[0]["create"]["_index"], "mflog-2019.01.28");
        assert_eq!(v[0]["create"]["_id"], "ab-12");
        assert_eq!(v[1]["event"], "a\nb");
        assert!(out.ends_with(b"}\n"));
    }

    #[test]
    fn adds_drops_and_renames() {
        let t = Transform {
            drop: vec![("name".into(), vec!["elasticsearch".into(), "self".into()])],
            rename: vec![("msg".into(), "message".into())],
            add: vec![
                ("hostname".into(), "%{hostname}".into()),
                ("module".into(), "ironwork".into()),
            ],
        };
        let mut e = encoder(t, Invalid::Ship);
        let mut out = Vec::new();
        assert_eq!(
            e.encode(br#"{"name":"self","x":1}"#, "i", NOW, &mut out),
            Outcome::Dropped
        );
        assert!(out.is_empty());
        e.encode(br#"{"name":"step","x":1}"#, "i", NOW, &mut out);
        e.encode(br#"{}"#, "j", NOW, &mut out);
        e.encode(br#"{"msg":"hi","hostname":"old"}"#, "k", NOW, &mut out);
        let v = lines(&out);
        assert_eq!(
            v[1],
            serde_json::json!({"name":"step","x":1,"hostname":"box1","module":"ironwork"})
        );
        assert_eq!(v[3], serde_json::json!({"hostname":"box1","module":"ironwork"}));
        assert_eq!(
            v[5],
            serde_json::json!({"message":"hi","hostname":"box1","module":"ironwork"})
        );
        assert_eq!(v[0]["create"]["_index"], "mflog-2027.01.15", "no timestamp: read time");
    }

    #[test]
    fn invalid_lines_are_wrapped_or_rejected() {
        let mut e = encoder(Transform::default(), Invalid::Ship);
        let mut out = Vec::new();
        for bad in [
            &b"not json"[..],
            b"[1,2]",
            b"{\"a\":1} trailing",
            b"{\"a\":\"\xff\xfe\"}",
            b"{\"a\":",
        ] {
            out.clear();
            match e.encode(bad, "i", NOW, &mut out) {
                Outcome::Shipped { invalid: Some(_) } => {}
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bad)),
            }
            let v = lines(&out);
            assert_eq!(v[1]["message"], String::from_utf8_lossy(bad).as_ref());
            assert!(v[1]["parse_error"].is_string());
        }
        let mut e = encoder(Transform::default(), Invalid::DeadLetter);
        out.clear();
        assert!(matches!(e.encode(b"oops", "i", NOW, &mut out), Outcome::Rejected(_)));
        assert!(out.is_empty());
    }

    #[test]
    fn numeric_timestamps_and_escaped_keys() {
        let mut e = Encoder::new(
            &input(Invalid::Ship, "@timestamp"),
            Arc::new(CompiledTransform::new(&Transform::default(), "h")),
        );
        let mut out = Vec::new();
        e.encode(br#"{"\u0040timestamp":1700000000}"#, "i", NOW, &mut out);
        assert_eq!(lines(&out)[0]["create"]["_index"], "mflog-2023.11.14");
    }
}

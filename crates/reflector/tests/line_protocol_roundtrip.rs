//! Property: every point the encoder accepts reads back, element for element, through an
//! independent parser (InfluxDB IOx's `influxdb-line-protocol` crate), whatever the names, tags
//! and strings hold; and what it refuses is only what the protocol cannot carry.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use influxdb_line_protocol::{parse_lines, FieldValue as Parsed};
use ironwork_core::messages::{FieldValue, MetricPoint};
use proptest::prelude::*;
use reflector::line_protocol::encode;

/// Text with the characters that need escaping overrepresented.
fn text() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            4 => prop::sample::select(vec![',', ' ', '=', '"', '\\', 'a', 'z', '_', '.', 'é', '💡', '\t', '#']),
            1 => any::<char>(),
        ],
        1..12,
    )
    .prop_map(|v| v.into_iter().collect())
}

fn field_value() -> impl Strategy<Value = FieldValue> {
    prop_oneof![
        any::<i64>().prop_map(FieldValue::Int),
        (-1e300f64..1e300).prop_map(FieldValue::Float),
        any::<bool>().prop_map(FieldValue::Bool),
        text().prop_map(FieldValue::Str),
    ]
}

fn point() -> impl Strategy<Value = MetricPoint> {
    (
        text(),
        proptest::collection::btree_map(text(), text(), 0..4),
        proptest::collection::btree_map(text(), field_value(), 1..4),
        any::<i64>(),
    )
        .prop_map(|(name, tags, fields, ts)| MetricPoint {
            name,
            tags,
            fields,
            timestamp_ns: ts,
            database: None,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn accepted_points_read_back_exactly(p in point()) {
        let mut line = String::new();
        let Ok(()) = encode(&p, &mut line) else {
            // Refusals are only for what the protocol cannot carry.
            let unquoted: Vec<&str> = std::iter::once(p.name.as_str())
                .chain(p.tags.iter().filter(|(k, v)| !k.is_empty() && !v.is_empty()).flat_map(|(k, v)| [k.as_str(), v.as_str()]))
                .chain(p.fields.keys().map(String::as_str))
                .collect();
            let strings: Vec<&str> = p.fields.values().filter_map(|v| match v { FieldValue::Str(s) => Some(s.as_str()), _ => None }).collect();
            prop_assert!(
                p.name.starts_with('#') || unquoted.iter().any(|s| s.chars().any(char::is_control) || s.ends_with('\\')) || strings.iter().any(|s| s.contains(['\n', '\r'])),
                "refused without a line break or tab: {p:?}"
            );
            return Ok(());
        };
        let parsed: Vec<_> = parse_lines(&line).collect();
        prop_assert_eq!(parsed.len(), 1, "{}", line);
        let parsed = match &parsed[0] {
            Ok(l) => l,
            Err(e) => return Err(TestCaseError::fail(format!("{e}: {line}"))),
        };
        prop_assert_eq!(parsed.series.measurement.to_string(), p.name.clone(), "{}", line);
        let tags: BTreeMap<String, String> = parsed
            .series
            .tag_set
            .iter()
            .flatten()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        prop_assert_eq!(tags, p.tags.clone(), "{}", line);
        let fields: BTreeMap<String, String> = parsed
            .field_set
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Parsed::I64(i) => format!("i{i}"),
                    Parsed::U64(u) => format!("u{u}"),
                    Parsed::F64(f) => format!("f{f:?}"),
                    Parsed::String(s) => format!("s{s}"),
                    Parsed::Boolean(b) => format!("b{b}"),
                };
                (k.to_string(), v)
            })
            .collect();
        let want: BTreeMap<String, String> = p
            .fields
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    FieldValue::Int(i) => format!("i{i}"),
                    FieldValue::Float(f) => format!("f{f:?}"),
                    FieldValue::Str(s) => format!("s{s}"),
                    FieldValue::Bool(b) => format!("b{b}"),
                };
                (k.clone(), v)
            })
            .collect();
        prop_assert_eq!(fields, want, "{}", line);
        prop_assert_eq!(parsed.timestamp, Some(p.timestamp_ns), "{}", line);
    }
}

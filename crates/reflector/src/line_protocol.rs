//! InfluxDB line protocol: `<measurement>[,<tag>=<value>...] <field>=<value>[,...] <timestamp>`.
//!
//! Escaping differs per element (InfluxDB's line-protocol reference): the measurement escapes
//! comma and space; tag keys, tag values and field keys escape comma, `=` and space; string field
//! values are double-quoted and escape `"` and `\`. A backslash in the unquoted elements is
//! written doubled (`\\` reads back as one), so a name ending in `\` cannot swallow the separator
//! after it. Tags are written sorted by key (byte order, as InfluxDB prefers), tags with an empty
//! value are left out (the protocol has no empty tag value), and the timestamp is in nanoseconds.
//!
//! What the protocol cannot carry is refused with the reason rather than written wrong: an empty
//! measurement or field key, a measurement starting with `#` (the line would be a comment), a line break in a string field, a control character or a trailing backslash in a
//! name, tag or field key, a point whose every field is NaN or
//! infinite (such fields are left out), a point without fields.

use std::fmt::Write as _;

use ironwork_core::messages::FieldValue;

use crate::point::Point;

/// Why a point cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unwritable {
    /// The measurement name is empty.
    #[error("empty measurement name")]
    EmptyMeasurement,
    /// A string field holds a line break, or a name, tag or field key a control character or a
    /// trailing backslash: the protocol cannot carry them.
    #[error("{0}: the protocol cannot carry it")]
    Newline(String),
    /// The measurement starts with `#`: the line would read as a comment.
    #[error("measurement starts with #, which makes the line a comment")]
    Comment,
    /// No field (or only NaN/infinite floats).
    #[error("no field with a finite value")]
    NoField,
    /// An empty field key.
    #[error("empty field key")]
    EmptyFieldKey,
}

fn escape(out: &mut String, s: &str, special: &[char]) {
    for c in s.chars() {
        if c == '\\' || special.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
}

fn no_newline(what: &str, s: &str) -> Result<(), Unwritable> {
    if s.contains(['\n', '\r']) {
        return Err(Unwritable::Newline(format!("{what} {s:?}")));
    }
    Ok(())
}

/// Unquoted elements refuse every control character (parsers disagree on tabs and NUL; IOx's
/// takes a tab for a separator) and a trailing backslash (it would escape the separator).
fn unquoted(what: &str, s: &str) -> Result<(), Unwritable> {
    if s.chars().any(char::is_control) {
        return Err(Unwritable::Newline(format!("{what} {s:?} (a control character)")));
    }
    if s.ends_with('\\') {
        return Err(Unwritable::Newline(format!("{what} {s:?} (ends with a backslash)")));
    }
    Ok(())
}

/// Append `point` as one line (with its `\n`) to `out`; on error `out` is unchanged.
pub fn encode(point: &impl Point, out: &mut String) -> Result<(), Unwritable> {
    let name = point.name();
    if name.is_empty() {
        return Err(Unwritable::EmptyMeasurement);
    }
    unquoted("measurement", name)?;
    if name.starts_with('#') {
        // A line starting with # is a comment: the point would vanish.
        return Err(Unwritable::Comment);
    }
    let start = out.len();
    let result = write_line(point, out);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn write_line(point: &impl Point, out: &mut String) -> Result<(), Unwritable> {
    escape(out, point.name(), &[',', ' ']);
    for (k, v) in point.tags() {
        if k.is_empty() || v.is_empty() {
            continue;
        }
        unquoted("tag", k)?;
        unquoted("tag value", v)?;
        out.push(',');
        escape(out, k, &[',', '=', ' ']);
        out.push('=');
        escape(out, v, &[',', '=', ' ']);
    }
    let mut first = true;
    for (k, v) in point.fields() {
        if k.is_empty() {
            return Err(Unwritable::EmptyFieldKey);
        }
        unquoted("field", k)?;
        if matches!(v, FieldValue::Float(f) if !f.is_finite()) {
            continue;
        }
        out.push(if first { ' ' } else { ',' });
        first = false;
        escape(out, k, &[',', '=', ' ']);
        out.push('=');
        match v {
            FieldValue::Int(i) => {
                let _ = write!(out, "{i}i");
            }
            // `{:?}` keeps a fraction or exponent (`1.0`, `1e300`): a float stays a float.
            FieldValue::Float(f) => {
                let _ = write!(out, "{f:?}");
            }
            FieldValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            FieldValue::Str(s) => {
                no_newline("string field", s)?;
                out.push('"');
                for c in s.chars() {
                    if c == '"' || c == '\\' {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out.push('"');
            }
        }
    }
    if first {
        return Err(Unwritable::NoField);
    }
    let _ = writeln!(out, " {}", point.timestamp_ns());
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ironwork_core::messages::MetricPoint;

    use super::*;

    fn point(name: &str, tags: &[(&str, &str)], fields: Vec<(&str, FieldValue)>) -> MetricPoint {
        MetricPoint {
            name: name.into(),
            tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            fields: fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect::<BTreeMap<_, _>>(),
            timestamp_ns: 1_700_000_000_000_000_000,
            database: None,
        }
    }

    fn line(p: &MetricPoint) -> Result<String, Unwritable> {
        let mut s = String::new();
        encode(p, &mut s).map(|_| s)
    }

    #[test]
    fn every_element_is_escaped_its_own_way() {
        let p = point(
            "cpu load,x",
            &[("host name", "a=b,c"), ("empty", ""), ("dc", "par")],
            vec![
                ("value", FieldValue::Float(0.5)),
                ("n", FieldValue::Int(-3)),
                ("ok", FieldValue::Bool(true)),
                ("msg", FieldValue::Str(r#"say "hi" \o/"#.into())),
                ("whole", FieldValue::Float(2.0)),
            ],
        );
        assert_eq!(
            line(&p).unwrap(),
            "cpu\\ load\\,x,dc=par,host\\ name=a\\=b\\,c msg=\"say \\\"hi\\\" \\\\o/\",n=-3i,ok=true,value=0.5,whole=2.0 1700000000000000000\n"
        );
    }

    #[test]
    fn what_the_protocol_cannot_carry_is_refused() {
        assert_eq!(
            line(&point("", &[], vec![("v", FieldValue::Int(1))])),
            Err(Unwritable::EmptyMeasurement)
        );
        assert_eq!(line(&point("m", &[], vec![])), Err(Unwritable::NoField));
        assert_eq!(
            line(&point("m", &[], vec![("v", FieldValue::Float(f64::NAN))])),
            Err(Unwritable::NoField)
        );
        assert!(matches!(
            line(&point("m", &[("t", "a\nb")], vec![("v", FieldValue::Int(1))])),
            Err(Unwritable::Newline(_))
        ));
        let mut out = String::from("kept\n");
        assert!(encode(&point("m", &[("t", "a\nb")], vec![("v", FieldValue::Int(1))]), &mut out).is_err());
        assert_eq!(out, "kept\n", "a refused point leaves nothing behind");
    }
}

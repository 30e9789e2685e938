//! The plugin agents' point format, `[{"name","timestamp","tags","value"}, …]`, as plugin scripts
//! print it and `POST /post` receives it: parsed strictly enough that a bad point never reaches
//! the queues, leniently enough that one bad point does not lose the others.

use std::collections::BTreeMap;

use ironwork_core::messages::DataPoint;
use serde::Deserialize;

/// Timestamps outside `[1e9, 1e10]` seconds (0, or milliseconds) are replaced by the current time,
/// as the plugin agents do.
pub fn normalize_timestamp(ts: Option<f64>, now: f64) -> f64 {
    match ts {
        Some(t) if (1e9..=1e10).contains(&t) => t,
        _ => now,
    }
}

/// True for names made of `[0-9A-Za-z._-]` (what the agents accept), not empty.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

#[derive(Debug, Deserialize)]
struct RawPoint {
    name: serde_json::Value,
    #[serde(default)]
    timestamp: Option<serde_json::Value>,
    #[serde(default)]
    tags: Option<serde_json::Map<String, serde_json::Value>>,
    value: Option<serde_json::Value>,
}

/// What [`parse`] made of a payload.
#[derive(Debug, Default, PartialEq)]
pub struct Parsed {
    /// The valid points.
    pub points: Vec<DataPoint>,
    /// One line per point refused, saying which and why.
    pub rejected: Vec<String>,
}

/// Parse `bytes` as a JSON list of points. `Ok` with no points for empty (or blank) input:
/// "no data" is not an error. `Err` says why the payload as a whole is unusable, quoting its
/// first bytes.
pub fn parse(bytes: &[u8], now: f64) -> Result<Parsed, String> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Parsed::default());
    }
    let list: Vec<serde_json::Value> = serde_json::from_slice(bytes)
        .map_err(|e| format!("not a JSON list of points ({e}); it starts with {:?}", head(bytes)))?;
    let mut parsed = Parsed::default();
    for (i, item) in list.into_iter().enumerate() {
        match point(item, now) {
            Ok(p) => parsed.points.push(p),
            Err(why) => parsed.rejected.push(format!("point {i}: {why}")),
        }
    }
    Ok(parsed)
}

fn point(item: serde_json::Value, now: f64) -> Result<DataPoint, String> {
    let raw: RawPoint = serde_json::from_value(item).map_err(|e| e.to_string())?;
    let name = match raw.name {
        serde_json::Value::String(s) if valid_name(&s) => s,
        other => return Err(format!("name {other} is not made of [0-9A-Za-z._-]")),
    };
    let value = match raw.value {
        Some(v @ (serde_json::Value::Number(_) | serde_json::Value::String(_) | serde_json::Value::Bool(_))) => v,
        Some(other) => return Err(format!("{name}: value {other} is not a number, string or boolean")),
        None => return Err(format!("{name}: no value")),
    };
    let ts = match raw.timestamp {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Number(n)) => n.as_f64(),
        Some(serde_json::Value::String(s)) => s.trim().parse::<f64>().ok(),
        Some(other) => return Err(format!("{name}: timestamp {other} is not a number")),
    };
    let mut tags = BTreeMap::new();
    for (k, v) in raw.tags.unwrap_or_default() {
        let v = match v {
            serde_json::Value::String(s) => s,
            serde_json::Value::Null => continue,
            other @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_)) => other.to_string(),
            other => return Err(format!("{name}: tag {k} = {other} is not a scalar")),
        };
        tags.insert(k, v);
    }
    Ok(DataPoint {
        name,
        timestamp: normalize_timestamp(ts, now),
        tags,
        value,
    })
}

/// The first bytes of `bytes`, for messages about output that is not what it should be.
pub fn head(bytes: &[u8]) -> String {
    let end = bytes.len().min(64);
    let mut s = String::from_utf8_lossy(&bytes[..end]).into_owned();
    if bytes.len() > end {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: f64 = 1_700_000_000.5;

    #[test]
    fn parses_the_agent_format_and_keeps_good_points_next_to_bad_ones() {
        let out = br#"[{"name":"cpu.idle","timestamp":1600000000,"tags":{"core":0,"x":"y"},"value":97.5},
                       {"name":"bad name","value":1},
                       {"name":"up","value":true,"timestamp":0},
                       {"name":"ms","value":"ok","timestamp":1600000000000},
                       {"name":"obj","value":{"a":1}}]"#;
        let p = parse(out, NOW).unwrap();
        assert_eq!(p.points.len(), 3);
        assert_eq!(p.points[0].timestamp, 1_600_000_000.0);
        assert_eq!(p.points[0].tags["core"], "0");
        assert_eq!(p.points[1].timestamp, NOW, "0 means now");
        assert_eq!(p.points[2].timestamp, NOW, "milliseconds are not seconds");
        assert_eq!(p.rejected.len(), 2, "{:?}", p.rejected);
    }

    #[test]
    fn empty_output_is_no_data_and_garbage_is_quoted() {
        assert_eq!(parse(b"", NOW).unwrap(), Parsed::default());
        assert_eq!(parse(b"  \n", NOW).unwrap(), Parsed::default());
        let e = parse(b"Traceback (most recent call last):\n  File", NOW).unwrap_err();
        assert!(e.contains("Traceback (most recent"), "{e}");
        assert!(
            parse(br#"{"name":"a","value":1}"#, NOW).is_err(),
            "an object is not a list"
        );
    }
}

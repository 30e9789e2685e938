//! Index names from the event's own time: a strftime pattern (`mflog-%Y.%m.%d`) applied, in UTC,
//! to the timestamp field. Using the event time (not the clock) keeps a replayed line in the
//! index that already holds its `_id`, so `create` answers 409 instead of duplicating it.

use ironwork_core::calendar::{civil_from_days, days_from_civil};

/// A validated index pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexPattern {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Year,
    ShortYear,
    Month,
    Day,
    Hour,
    DayOfYear,
}

/// A UTC calendar hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    /// Year.
    pub year: i64,
    /// 1..=12.
    pub month: u32,
    /// 1..=31.
    pub day: u32,
    /// 0..=23.
    pub hour: u32,
}

impl IndexPattern {
    /// Parse a pattern; `%Y %y %m %d %H %j %%` are understood, and index names must be lowercase
    /// without `"`, `\`, `/`, `*`, `?`, `<`, `>`, `|`, `,`, `#`, spaces or a leading `_`/`-`/`+`.
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let pattern = pattern.trim();
        if pattern.is_empty() {
            return Err("an index pattern is needed".into());
        }
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut chars = pattern.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                if c.is_ascii_uppercase() || "\"\\/*?<>|,# ".contains(c) {
                    return Err(format!("{c:?} is not allowed in an index name"));
                }
                text.push(c);
                continue;
            }
            let part = match chars.next() {
                Some('Y') => Part::Year,
                Some('y') => Part::ShortYear,
                Some('m') => Part::Month,
                Some('d') => Part::Day,
                Some('H') => Part::Hour,
                Some('j') => Part::DayOfYear,
                Some('%') => {
                    return Err("'%' is not allowed in an index name".into());
                }
                other => {
                    return Err(format!(
                        "%{} is not supported (use %Y %y %m %d %H %j)",
                        other.unwrap_or(' ')
                    ))
                }
            };
            if !text.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut text)));
            }
            parts.push(part);
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        if matches!(parts.first(), Some(Part::Text(t)) if t.starts_with(['_', '-', '+'])) {
            return Err("an index name cannot start with _, - or +".into());
        }
        Ok(Self { parts })
    }

    /// True when the name does not depend on time.
    pub fn is_constant(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Text(_)))
    }

    /// The index for a UTC hour.
    pub fn render(&self, t: Civil) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        for p in &self.parts {
            let _ = match p {
                Part::Text(s) => write!(out, "{s}"),
                Part::Year => write!(out, "{:04}", t.year),
                Part::ShortYear => write!(out, "{:02}", t.year.rem_euclid(100)),
                Part::Month => write!(out, "{:02}", t.month),
                Part::Day => write!(out, "{:02}", t.day),
                Part::Hour => write!(out, "{:02}", t.hour),
                Part::DayOfYear => write!(out, "{:03}", day_of_year(t)),
            };
        }
        out
    }
}

fn day_of_year(t: Civil) -> i64 {
    days_from_civil(t.year, t.month, t.day) - days_from_civil(t.year, 1, 1) + 1
}

/// The UTC hour containing `hours` hours since the epoch.
pub fn civil_from_hours(hours: i64) -> Civil {
    let (year, month, day) = civil_from_days(hours.div_euclid(24));
    Civil {
        year,
        month,
        day,
        hour: hours.rem_euclid(24) as u32,
    }
}

/// Hours since the epoch of an RFC 3339 / ISO 8601 timestamp (`2026-11-23T13:12:59.12Z`,
/// `2026-11-23 13:12:59+02:00`, `2026-11-23T13:12:59`, taken as UTC without an offset).
pub fn parse_timestamp_hours(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let digits = b.get(r)?;
        digits.iter().try_fold(0i64, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
        })
    };
    if b.len() < 13 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (year, month, day, hour) = (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 {
        return None;
    }
    let mut minutes = 0i64;
    if b.len() >= 16 && b[13] == b':' {
        minutes = num(14..16)?;
    }
    // Offset: the last 'Z' or '+hh:mm' / '-hh:mm' after the time.
    let tail = &s[13..];
    let offset_minutes = if tail.ends_with(['Z', 'z']) {
        0
    } else if let Some(pos) = tail.rfind(['+', '-']) {
        let o = &tail.as_bytes()[pos..];
        let sign = if o[0] == b'-' { -1 } else { 1 };
        let digits: Vec<u8> = o[1..].iter().copied().filter(u8::is_ascii_digit).collect();
        if digits.len() != 4 && digits.len() != 2 {
            return None;
        }
        let h = i64::from(digits[0] - b'0') * 10 + i64::from(digits[1] - b'0');
        let m = if digits.len() == 4 {
            i64::from(digits[2] - b'0') * 10 + i64::from(digits[3] - b'0')
        } else {
            0
        };
        sign * (h * 60 + m)
    } else {
        0
    };
    let days = days_from_civil(year, month as u32, day as u32);
    let total_minutes = (days * 24 + hour) * 60 + minutes - offset_minutes;
    Some(total_minutes.div_euclid(60))
}

/// Hours since the epoch of a numeric timestamp: seconds, or milliseconds when it is too large
/// to be seconds.
pub fn epoch_number_hours(v: f64) -> Option<i64> {
    if !v.is_finite() || v < 0.0 {
        return None;
    }
    let secs = if v > 1e11 { v / 1000.0 } else { v };
    Some((secs / 3600.0).floor() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_in_utc_from_the_event_time() {
        let p = IndexPattern::parse("mflog-%Y.%m.%d").expect("valid");
        let h = parse_timestamp_hours("2019-01-28T08:16:40.047710Z").expect("parses");
        assert_eq!(p.render(civil_from_hours(h)), "mflog-2019.01.28");
        // 01:30 at +02:00 is the previous day in UTC.
        let h = parse_timestamp_hours("2026-03-01T01:30:00+02:00").expect("parses");
        assert_eq!(p.render(civil_from_hours(h)), "mflog-2026.02.28");
        let h = parse_timestamp_hours("2026-12-31 23:59:59-01:00").expect("parses");
        assert_eq!(p.render(civil_from_hours(h)), "mflog-2027.01.01");
        let hourly = IndexPattern::parse("x-%y%j-%H").expect("valid");
        assert_eq!(
            hourly.render(civil_from_hours(
                parse_timestamp_hours("2024-12-31T05:00:00Z").expect("p")
            )),
            "x-24366-05"
        );
    }

    #[test]
    fn epoch_numbers_in_seconds_or_milliseconds() {
        let p = IndexPattern::parse("l-%Y.%m.%d").expect("valid");
        assert_eq!(
            p.render(civil_from_hours(epoch_number_hours(1_700_000_000.5).expect("n"))),
            "l-2023.11.14"
        );
        assert_eq!(
            p.render(civil_from_hours(epoch_number_hours(1_700_000_000_000.0).expect("n"))),
            "l-2023.11.14"
        );
    }

    #[test]
    fn refuses_what_elasticsearch_would() {
        for bad in ["Logs-%Y", "a b", "_x", "x-%Q", "a,b", ""] {
            assert!(IndexPattern::parse(bad).is_err(), "{bad}");
        }
        assert!(parse_timestamp_hours("yesterday").is_none());
        assert!(parse_timestamp_hours("2026-13-01T00:00:00Z").is_none());
    }

    #[test]
    fn civil_round_trip() {
        for days in [-1000i64, 0, 59, 60, 365, 11_000, 20_000, 50_000] {
            let c = civil_from_hours(days * 24 + 7);
            assert_eq!(days_from_civil(c.year, c.month, c.day), days);
            assert_eq!(c.hour, 7);
        }
    }
}

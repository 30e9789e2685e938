//! `ironwork apps stats --plugin P`: one plugin's per-app request figures since its previous
//! run, read from nginx's access log, printed as the JSON list of points a collector SCRIPT
//! collection prints. The module generates a `[collection:<plugin>.apps]` running it for every
//! plugin with workers, so the figures reach the reflector like any collected data.
//!
//! Where the previous run stopped is kept per reader, in
//! `var/state/apps_stats/<plugin>.<consumer>.offset` (inode and byte offset): the collector's
//! runs (`--consumer collector`) are not disturbed by an operator's. A log rotated since
//! (ringmaster renames it to `.1`) is read to its end first.
//! The first run starts at the end of the log: it reports no traffic rather than the whole
//! history as one interval.

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::home::Home;
use crate::nginx;
use crate::plugin::{AppConfig, Plugin};

/// Most bytes read from the log in one run; the rest waits for the next run.
const MAX_READ: u64 = 256 << 20;

/// How long a worker's health check may take.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// One app's figures over the interval.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Figures {
    /// Requests answered.
    pub requests: u64,
    /// Answers by status class: 1xx, 2xx, 3xx, 4xx, 5xx.
    pub classes: [u64; 5],
    /// Request durations (seconds).
    pub durations: Vec<f64>,
}

impl Figures {
    /// The duration at quantile `q` (0..=1), in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.durations.is_empty() {
            return None;
        }
        let mut d = self.durations.clone();
        d.sort_by(f64::total_cmp);
        let idx = ((d.len() - 1) as f64 * q).round() as usize;
        Some(d[idx.min(d.len() - 1)] * 1000.0)
    }
}

#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    plugin: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    app: std::borrow::Cow<'a, str>,
    status: u16,
    duration: f64,
}

/// Add the access-log lines in `text` that belong to `plugin` to `figures` (app name → figures).
fn tally(text: &[u8], plugin: &str, figures: &mut std::collections::BTreeMap<String, Figures>) {
    for line in text.split(|b| *b == b'\n') {
        let Ok(l) = serde_json::from_slice::<Line<'_>>(line) else {
            continue;
        };
        if l.plugin != plugin {
            continue;
        }
        let Some(f) = figures.get_mut(l.app.as_ref()) else {
            continue;
        };
        f.requests += 1;
        if (100..600).contains(&l.status) {
            f.classes[usize::from(l.status / 100 - 1)] += 1;
        }
        f.durations.push(l.duration);
    }
}

/// Where the previous run stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Offset {
    ino: u64,
    pos: u64,
}

fn read_offset(path: &Path) -> Option<Offset> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut words = text.split_whitespace();
    Some(Offset {
        ino: words.next()?.parse().ok()?,
        pos: words.next()?.parse().ok()?,
    })
}

fn write_offset(path: &Path, o: Offset) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let part = path.with_extension("part");
    let mut f = std::fs::File::create(&part)?;
    writeln!(f, "{} {}", o.ino, o.pos)?;
    drop(f);
    std::fs::rename(part, path)
}

/// Complete lines of `f` from `from`, at most [`MAX_READ`] bytes; returns them and the offset
/// after the last complete line.
fn read_lines(mut f: &std::fs::File, from: u64) -> std::io::Result<(Vec<u8>, u64)> {
    f.seek(SeekFrom::Start(from))?;
    let mut buf = Vec::new();
    f.take(MAX_READ).read_to_end(&mut buf)?;
    let end = buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    buf.truncate(end);
    Ok((buf, from + end as u64))
}

/// The new access-log text since the previous run for the state file `state`, and advance it.
fn new_text(log: &Path, state: &Path) -> std::io::Result<Vec<u8>> {
    // One open file for the whole run: a rotation in between cannot mix two files up.
    let file = match std::fs::File::open(log) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    let mut text = Vec::new();
    let start = match read_offset(state) {
        None => meta.len(),
        Some(o) if o.ino == meta.ino() && o.pos <= meta.len() => o.pos,
        Some(o) => {
            // Rotated since: finish the old file if it is still there.
            if let Ok(old) = std::fs::File::open(rotated(log)) {
                if old.metadata()?.ino() == o.ino {
                    text = read_lines(&old, o.pos)?.0;
                }
            }
            0
        }
    };
    let (more, pos) = read_lines(&file, start)?;
    text.extend_from_slice(&more);
    write_offset(state, Offset { ino: meta.ino(), pos })?;
    Ok(text)
}

fn rotated(log: &Path) -> PathBuf {
    let mut name = log.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// Whether the worker on `socket` answers `health` with 2xx (or, without a health path, accepts
/// a connection).
fn worker_up(socket: &Path, health: Option<&str>) -> bool {
    let Ok(mut c) = std::os::unix::net::UnixStream::connect(socket) else {
        return false;
    };
    let Some(path) = health else {
        return true;
    };
    let _ = c.set_read_timeout(Some(HEALTH_TIMEOUT));
    let _ = c.set_write_timeout(Some(HEALTH_TIMEOUT));
    let request = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n");
    if c.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    c.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") && head[9] == b'2'
}

/// The points for `plugin`'s apps from `figures`, named as the collector's SCRIPT method wants
/// them (it prefixes `<plugin>.`).
pub fn points(home: &Home, plugin: &Plugin, figures: &std::collections::BTreeMap<String, Figures>) -> Vec<Value> {
    let mut out = Vec::new();
    for app in plugin.apps.iter().filter(|a| a.has_workers()) {
        let f = figures.get(&app.name).cloned().unwrap_or_default();
        let mut point = |name: &str, value: f64| {
            out.push(json!({"name": format!("app.{name}"), "tags": {"app": app.name}, "value": value}));
        };
        point("requests", f.requests as f64);
        for (i, n) in f.classes.iter().enumerate() {
            point(&format!("status_{}xx", i + 1), *n as f64);
        }
        for (name, q) in [
            ("latency_ms.p50", 0.5),
            ("latency_ms.p99", 0.99),
            ("latency_ms.max", 1.0),
        ] {
            if let Some(v) = f.quantile_ms(q) {
                point(name, v);
            }
        }
        point("workers", f64::from(app.numprocesses));
        point("workers_up", workers_up(home, plugin, app) as f64);
    }
    out
}

fn workers_up(home: &Home, plugin: &Plugin, app: &AppConfig) -> usize {
    (1..=app.numprocesses)
        .filter(|wid| {
            let socket = nginx::socket_path(home, &plugin.name, &app.name, &wid.to_string());
            worker_up(&socket, app.health.as_deref())
        })
        .count()
}

/// Where `consumer`'s previous run over `plugin`'s figures stopped.
fn state_file(home: &Home, plugin: &str, consumer: &str) -> PathBuf {
    home.state_dir()
        .join("apps_stats")
        .join(format!("{plugin}.{consumer}.offset"))
}

/// `plugin`'s figures by app since `consumer`'s previous read (which this one advances).
pub fn read(
    home: &Home,
    plugin: &Plugin,
    consumer: &str,
) -> std::io::Result<std::collections::BTreeMap<String, Figures>> {
    let text = new_text(&nginx::access_log(home), &state_file(home, &plugin.name, consumer))?;
    let mut figures = plugin
        .apps
        .iter()
        .map(|a| (a.name.clone(), Figures::default()))
        .collect();
    tally(&text, &plugin.name, &mut figures);
    Ok(figures)
}

/// `ironwork apps stats --plugin P [--consumer C]`: print the points.
pub fn run(home: &Home, plugin: &Plugin, consumer: &str) -> anyhow::Result<()> {
    let figures = read(home, plugin, consumer)?;
    println!("{}", Value::Array(points(home, plugin, &figures)));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(plugin: &str, app: &str, status: u16, duration: f64) -> String {
        format!(
            "{{\"timestamp\":\"2026-12-02T04:00:00+00:00\",\"level\":\"info\",\"name\":\"nginx\",\"plugin\":\"{plugin}\",\
             \"app\":\"{app}\",\"status\":{status},\"duration\":{duration}}}\n"
        )
    }

    #[test]
    fn only_the_plugins_apps_are_counted_by_status_class() {
        let mut f: std::collections::BTreeMap<String, Figures> = [("api".to_string(), Figures::default())].into();
        let text = [
            line("shop", "api", 200, 0.010),
            line("shop", "api", 503, 0.030),
            line("shop", "api", 404, 0.020),
            line("shop", "other", 200, 1.0),
            line("blog", "api", 200, 1.0),
            line("#core#", "", 404, 0.0),
            "not json\n".to_string(),
        ]
        .concat();
        tally(text.as_bytes(), "shop", &mut f);
        let api = &f["api"];
        assert_eq!(api.requests, 3);
        assert_eq!(api.classes, [0, 1, 0, 1, 1]);
        assert_eq!(api.quantile_ms(0.5), Some(20.0));
        assert_eq!(api.quantile_ms(1.0), Some(30.0));
    }

    #[test]
    fn each_run_reads_what_came_since_the_previous_one_across_a_rotation() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let log = tmp.path().join("access.log");
        let state = tmp.path().join("state/x.offset");
        std::fs::write(&log, line("p", "a", 200, 0.1)).expect("write");
        assert!(
            new_text(&log, &state).expect("first").is_empty(),
            "the first run starts at the end"
        );

        let mut f = std::fs::OpenOptions::new().append(true).open(&log).expect("open");
        write!(f, "{}{{\"partial", line("p", "a", 201, 0.1)).expect("append");
        let text = new_text(&log, &state).expect("second");
        assert_eq!(String::from_utf8_lossy(&text), line("p", "a", 201, 0.1));

        // The partial line is finished, then the log is rotated and a new one started.
        writeln!(f, "\":1}}").expect("finish the line");
        drop(f);
        std::fs::rename(&log, rotated(&log)).expect("rotate");
        std::fs::write(&log, line("p", "a", 202, 0.1)).expect("new log");
        let text = String::from_utf8(new_text(&log, &state).expect("third")).expect("utf8");
        assert_eq!(text, format!("{{\"partial\":1}}\n{}", line("p", "a", 202, 0.1)));
        assert!(new_text(&log, &state).expect("fourth").is_empty());
    }
}

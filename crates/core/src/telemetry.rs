//! Logging for every daemon: mflog-shaped JSON lines (what Metwork's tools and `mflog2mfadmin`
//! read) or mflog's human line, to stderr or any writer, with the level from `IRONWORK_LOG`.
//!
//! JSON: `{"timestamp":"2026-11-23T13:12:59.123456Z","level":"info","name":"ringmaster","pid":42,
//! "event":"watcher started","watcher":"redis",...}`: the event's fields follow, then the fields
//! of the spans it happened in (innermost wins).
//! Human: `2026-11-23T13:12:59.123456Z  [INFO] (ringmaster#42) watcher started {watcher=redis}`.

use std::fmt::Write as _;
use std::io::IsTerminal;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

/// Environment variable holding the level filter (`info`, `debug`, `ironwork_core=trace,info`, …:
/// a default level and per-target levels, without tracing's span and field filters).
pub const LEVEL_ENV: &str = "IRONWORK_LOG";
/// Metwork's level variable, honoured when [`LEVEL_ENV`] is unset.
pub const MFLOG_LEVEL_ENV: &str = "MFLOG_MINIMAL_LEVEL";

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// mflog JSON lines.
    Json,
    /// mflog's human-readable line.
    Human,
}

impl LogFormat {
    /// Human on a terminal, JSON otherwise (files, pipes, supervisors).
    pub fn auto() -> Self {
        if std::io::stderr().is_terminal() {
            Self::Human
        } else {
            Self::Json
        }
    }
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "json" => Ok(Self::Json),
            "human" | "text" => Ok(Self::Human),
            "auto" => Ok(Self::auto()),
            other => Err(format!("unknown log format {other:?}: expected json, human or auto")),
        }
    }
}

/// Errors from setting up logging.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The level filter in the environment does not parse.
    #[error("invalid {var}={value:?}: {reason}")]
    BadFilter {
        /// Which variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// Why it was refused.
        reason: String,
    },
}

/// The level filter from `IRONWORK_LOG`, else `MFLOG_MINIMAL_LEVEL`, else `info`.
pub fn filter_from_env() -> Result<Targets, TelemetryError> {
    filter_from(|var| std::env::var(var).ok())
}

fn filter_from(get: impl Fn(&str) -> Option<String>) -> Result<Targets, TelemetryError> {
    let (var, value, directive) = if let Some(v) = get(LEVEL_ENV) {
        (LEVEL_ENV, v.clone(), v)
    } else if let Some(v) = get(MFLOG_LEVEL_ENV) {
        // Metwork spells levels the Python way.
        let directive = match v.to_ascii_lowercase().as_str() {
            "warning" => "warn".to_string(),
            "critical" => "error".to_string(),
            other => other.to_string(),
        };
        (MFLOG_LEVEL_ENV, v, directive)
    } else {
        return Ok(Targets::new().with_default(tracing::Level::INFO));
    };
    directive.parse::<Targets>().map_err(|e| TelemetryError::BadFilter {
        var,
        value,
        reason: e.to_string(),
    })
}

/// Install the global subscriber writing to stderr. Safe to call more than once (later calls do
/// nothing), so tests may call it freely.
pub fn init(name: &str, format: LogFormat) -> Result<(), TelemetryError> {
    init_with_writer(name, format, std::io::stderr)
}

/// Install the global subscriber writing to `writer`.
pub fn init_with_writer<W>(name: &str, format: LogFormat, writer: W) -> Result<(), TelemetryError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let filter = filter_from_env()?;
    let layer = tracing_subscriber::fmt::layer().with_writer(writer);
    let mflog = Mflog::new(name, format);
    // An already-installed subscriber (a second call, a test harness) is not an error.
    let _ = match format {
        LogFormat::Json => tracing_subscriber::registry()
            .with(
                layer
                    .fmt_fields(JsonFields::new())
                    .event_format(mflog)
                    .with_filter(filter),
            )
            .try_init(),
        LogFormat::Human => tracing_subscriber::registry()
            .with(layer.event_format(mflog).with_filter(filter))
            .try_init(),
    };
    Ok(())
}

/// The mflog event formatter; see the module docs for the two shapes.
#[derive(Debug, Clone)]
pub struct Mflog {
    name: String,
    pid: u32,
    format: LogFormat,
}

impl Mflog {
    /// A formatter for the daemon `name`.
    pub fn new(name: &str, format: LogFormat) -> Self {
        Self {
            name: name.to_string(),
            pid: std::process::id(),
            format,
        }
    }
}

fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "error",
        Level::WARN => "warning",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

/// Collects an event's fields; `message` becomes mflog's `event`.
#[derive(Default)]
struct JsonVisitor {
    fields: Map<String, Value>,
}

impl JsonVisitor {
    fn put(&mut self, field: &Field, value: Value) {
        let key = if field.name() == "message" {
            "event"
        } else {
            field.name()
        };
        self.fields.insert(key.to_string(), value);
    }
}

impl Visit for JsonVisitor {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, serde_json::json!(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::from(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::from(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, Value::from(format!("{value:?}")));
    }
}

impl<S, N> FormatEvent<S, N> for Mflog
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> std::fmt::Result {
        let timestamp = humantime::format_rfc3339_micros(std::time::SystemTime::now());
        let meta = event.metadata();
        let mut visitor = JsonVisitor::default();
        event.record(&mut visitor);
        let message = visitor.fields.remove("event").unwrap_or(Value::from(""));

        // Span fields, outermost first so inner spans override.
        let mut span_fields = Map::new();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let ext = span.extensions();
                if let Some(f) = ext.get::<FormattedFields<N>>() {
                    match self.format {
                        LogFormat::Json => {
                            if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(f) {
                                span_fields.extend(m);
                            }
                        }
                        LogFormat::Human => {
                            if !f.is_empty() {
                                span_fields.insert(span.name().to_string(), Value::from(f.to_string()));
                            }
                        }
                    }
                }
            }
        }

        match self.format {
            LogFormat::Json => {
                let mut line = Map::with_capacity(6 + visitor.fields.len() + span_fields.len());
                line.insert("timestamp".into(), Value::from(timestamp.to_string()));
                line.insert("level".into(), Value::from(level_name(meta.level())));
                line.insert("name".into(), Value::from(self.name.as_str()));
                line.insert("pid".into(), Value::from(self.pid));
                line.insert("event".into(), message);
                for (k, v) in span_fields.into_iter().chain(visitor.fields) {
                    if !matches!(k.as_str(), "timestamp" | "level" | "name" | "pid" | "event") {
                        line.insert(k, v);
                    }
                }
                if *meta.level() <= Level::WARN || *meta.level() == Level::TRACE {
                    line.entry("target").or_insert_with(|| Value::from(meta.target()));
                }
                let text = serde_json::to_string(&Value::Object(line)).map_err(|_| std::fmt::Error)?;
                writeln!(writer, "{text}")
            }
            LogFormat::Human => {
                let level = level_name(meta.level()).to_ascii_uppercase();
                let message = match message {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                write!(writer, "{timestamp}  [{level}] ({}#{}) {message}", self.name, self.pid)?;
                let mut kv = String::new();
                for (k, v) in span_fields.into_iter().chain(visitor.fields) {
                    if !kv.is_empty() {
                        kv.push(' ');
                    }
                    match v {
                        Value::String(s) => write!(kv, "{k}={s}")?,
                        other => write!(kv, "{k}={other}")?,
                    }
                }
                if kv.is_empty() {
                    writeln!(writer)
                } else {
                    writeln!(writer, " {{{kv}}}")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Captures everything written, for assertions.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Capture {
        type Writer = Capture;
        fn make_writer(&'a self) -> Capture {
            self.clone()
        }
    }

    impl Capture {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().expect("lock").clone()).expect("utf8")
        }
    }

    fn capture(format: LogFormat, f: impl FnOnce()) -> String {
        let out = Capture::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(out.clone())
            .with_max_level(Level::DEBUG);
        let mflog = Mflog::new("testd", format);
        match format {
            LogFormat::Json => tracing::subscriber::with_default(
                subscriber.fmt_fields(JsonFields::new()).event_format(mflog).finish(),
                f,
            ),
            LogFormat::Human => tracing::subscriber::with_default(subscriber.event_format(mflog).finish(), f),
        }
        out.text()
    }

    fn is_mflog_timestamp(s: &str) -> bool {
        // 2019-01-28T08:16:40.047710Z
        s.len() == 27
            && s.ends_with('Z')
            && s.as_bytes()[10] == b'T'
            && s.as_bytes()[19] == b'.'
            && s[20..26].bytes().all(|b| b.is_ascii_digit())
    }

    #[test]
    fn json_lines_have_the_mflog_shape() {
        let text = capture(LogFormat::Json, || {
            let span = tracing::info_span!("batch", queue = "step.a.b");
            let _g = span.enter();
            tracing::warn!(bytes = 12u64, ok = true, path = %"/x y", "shipped batch");
        });
        let v: Value = serde_json::from_str(text.trim()).expect("one json line");
        let ts = v["timestamp"].as_str().expect("timestamp");
        assert!(is_mflog_timestamp(ts), "{ts}");
        assert_eq!(v["level"], "warning");
        assert_eq!(v["name"], "testd");
        assert_eq!(v["pid"], std::process::id());
        assert_eq!(v["event"], "shipped batch");
        assert_eq!(v["bytes"], 12);
        assert_eq!(v["ok"], true);
        assert_eq!(v["path"], "/x y");
        assert_eq!(v["queue"], "step.a.b");
        let keys: Vec<_> = v.as_object().expect("object").keys().take(5).cloned().collect();
        assert_eq!(keys, ["timestamp", "level", "name", "pid", "event"]);
    }

    #[test]
    fn human_line_is_mflogs() {
        let text = capture(LogFormat::Human, || tracing::info!(watcher = "redis", "started"));
        let line = text.trim_end();
        let (ts, rest) = line.split_once("  ").expect("two spaces after timestamp");
        assert!(is_mflog_timestamp(ts), "{ts}");
        assert_eq!(
            rest,
            format!("[INFO] (testd#{}) started {{watcher=redis}}", std::process::id())
        );
    }

    #[test]
    fn level_filter_comes_from_the_environment() {
        use tracing_subscriber::filter::LevelFilter;
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        let hint = |f: Targets| f.default_level();
        assert_eq!(hint(filter_from(env(&[])).expect("default")), Some(LevelFilter::INFO));
        assert_eq!(
            hint(filter_from(env(&[(LEVEL_ENV, "debug")])).expect("ok")),
            Some(LevelFilter::DEBUG)
        );
        assert_eq!(
            hint(filter_from(env(&[(MFLOG_LEVEL_ENV, "WARNING")])).expect("metwork spelling")),
            Some(LevelFilter::WARN)
        );
        assert_eq!(
            hint(filter_from(env(&[(LEVEL_ENV, "error"), (MFLOG_LEVEL_ENV, "DEBUG")])).expect("ours wins")),
            Some(LevelFilter::ERROR)
        );
        let err = filter_from(env(&[(LEVEL_ENV, "ironwork=loud")])).expect_err("bad filter");
        assert!(err.to_string().contains("IRONWORK_LOG"), "{err}");
    }
}
